"""Update logic without a server: the window, hold names, the plan after a hand pull, one
event per change of state, the short-interval warning, and the check against a registry
(httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from ollama_preloader.config.modelspec import parse_entry
from ollama_preloader.config.settings import load_settings
from ollama_preloader.errors import ConfigError
from ollama_preloader.guard.pulls import PullHook, progress_line
from ollama_preloader.ollama.api import LoadedModel, PullProgress
from ollama_preloader.ollama.names import ModelName
from ollama_preloader.ollama.registry import RegistryClient
from ollama_preloader.reconcile.plan import ActionKind, find_loaded, plan
from ollama_preloader.reconcile.update_check import announce, check_model
from ollama_preloader.reconcile.update_notice import DigestRecheck, ManifestStamps, manifest_path
from ollama_preloader.reconcile.update_schedule import UpdateScheduler, in_window
from ollama_preloader.reconcile.updating import hold_name, is_hold
from ollama_preloader.state.board import Board, ModelStatus, State
from ollama_preloader.state.updates import UpdateState

FOREVER = datetime.now(UTC) + timedelta(days=365 * 200)


def status_of(entry: str = "llama3.2") -> ModelStatus:
    return ModelStatus(spec=parse_entry(entry, 0))


@pytest.mark.parametrize(
    ("window", "hour", "minute", "inside"),
    [
        (None, 12, 0, True),
        ((120, 300), 2, 0, True),
        ((120, 300), 4, 59, True),
        ((120, 300), 5, 0, False),
        ((23 * 60, 60), 23, 30, True),  # past midnight
        ((23 * 60, 60), 0, 30, True),
        ((23 * 60, 60), 12, 0, False),
    ],
)
def test_window(window: tuple[int, int] | None, hour: int, minute: int, inside: bool) -> None:
    assert in_window(window, datetime(2026, 1, 1, hour, minute)) is inside


def test_hold_names_are_recognisable_valid_and_one_per_model() -> None:
    a, b = status_of("llama3.2"), status_of("me/llama3.2")
    assert hold_name(a).startswith("preloader-hold/llama3.2:")
    assert hold_name(a) != hold_name(b)
    assert is_hold(hold_name(a))
    assert is_hold(f"{hold_name(a).split(':')[0]}:anything")
    assert not is_hold("llama3.2:latest")
    assert not is_hold("example.com/preloader-hold/x:y")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRELOADER_UPDATE", "sometimes"),
        ("PRELOADER_UPDATE_INTERVAL", "daily"),
        ("PRELOADER_UPDATE_INTERVAL", "-1h"),
        ("PRELOADER_UPDATE_WINDOW", "2-5"),
        ("PRELOADER_UPDATE_WINDOW", "24:00-01:00"),
        ("PRELOADER_UPDATE_WINDOW", "03:00-03:00"),
    ],
)
def test_bad_update_settings_name_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert str(info.value).startswith(f"{variable}=")
    assert "\n" not in str(info.value)


def test_update_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(None)
    assert (settings.update, settings.update_interval, settings.update_window) == (
        "off",
        86400.0,
        None,
    )
    monkeypatch.setenv("PRELOADER_UPDATE", "Apply")
    monkeypatch.setenv("PRELOADER_UPDATE_INTERVAL", "1h30m")
    monkeypatch.setenv("PRELOADER_UPDATE_WINDOW", "02:00-05:30")
    settings = load_settings(None)
    assert (settings.update, settings.update_interval, settings.update_window) == (
        "apply",
        5400.0,
        (120, 330),
    )


def _loaded(digest: str) -> LoadedModel:
    return LoadedModel(
        name="llama3.2:latest",
        digest=digest,
        size=100,
        size_vram=0,
        expires_at=FOREVER,
        context_length=4096,
    )


def test_a_hand_pull_plans_a_load_of_the_new_copy_then_prefers_it() -> None:
    """Only the old download loaded: load again (the name resolves to the new file). Both
    loaded: the new one is the model's runner, nothing more to do."""
    status = status_of()
    status.state, status.digest, status.present = State.PINNED, "new", True
    kwargs = {"pull_policy": "if-missing", "now": datetime.now(UTC), "monotonic_now": 0.0}
    actions = plan([status], [_loaded("old")], **kwargs)  # type: ignore[arg-type]
    assert [(a.kind, a.reason) for a in actions] == [(ActionKind.LOAD, "new download")]
    both = [_loaded("old"), _loaded("new")]
    assert find_loaded(status, both) == both[1]
    assert plan([status], both, **kwargs) == []  # type: ignore[arg-type]
    status.held = True  # another process is swapping it: its swap loads the new copy
    assert plan([status], [_loaded("old")], **kwargs) == []  # type: ignore[arg-type]


def test_one_event_per_change_of_state() -> None:
    status = status_of()
    status.digest = "a" * 64
    with capture_logs() as logs:
        for _ in range(3):
            status.update.state, status.update.reason = UpdateState.FAILED, "down"
            announce(status)
        status.update.state = UpdateState.AVAILABLE
        announce(status)
        announce(status)
    assert [e["event"] for e in logs] == ["update.failed", "update.available"]


def test_a_short_interval_against_a_public_registry_warns_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "llama3.2,hf.co/u/r:q4,127.0.0.1:5000/l/m")
    monkeypatch.setenv("PRELOADER_UPDATE_INTERVAL", "10m")
    settings = load_settings(None)
    scheduler = UpdateScheduler.__new__(UpdateScheduler)
    scheduler.settings = settings
    with capture_logs() as logs:
        scheduler._warn_short_interval()
    assert [e["event"] for e in logs] == ["update.short_interval"]
    assert logs[0]["registries"] == ["hf.co", "registry.ollama.ai"]


def _check(status: ModelStatus, handler: httpx.MockTransport) -> UpdateState | None:
    async def go() -> UpdateState | None:
        client = RegistryClient(transport=handler)
        try:
            return await check_model(client, status, lambda digest: False)
        finally:
            await client.aclose()

    return asyncio.run(go())


BODY = json.dumps({"layers": [{"digest": "sha256:" + "b" * 64, "size": 5}]}).encode()


def test_check_model_states(tmp_path: Path) -> None:
    """current, available with the bytes to fetch, local once, failed with a reason."""
    status = status_of()
    status.present, status.digest = True, "f" * 64
    header = {"Docker-Content-Digest": "sha256:" + "f" * 64}
    same = httpx.MockTransport(lambda r: httpx.Response(200, content=BODY, headers=header))
    assert _check(status, same) == UpdateState.CURRENT
    other = httpx.MockTransport(lambda r: httpx.Response(200, content=BODY))
    assert _check(status, other) == UpdateState.AVAILABLE
    assert status.update.download_bytes == 5
    missing = httpx.MockTransport(lambda r: httpx.Response(404))
    assert _check(status, missing) == UpdateState.LOCAL
    assert _check(status, missing) is None  # checked once
    down = httpx.MockTransport(lambda r: httpx.Response(503, text="maintenance"))
    status.digest = "e" * 64  # the copy on disk changed: checked again
    assert _check(status, down) == UpdateState.FAILED
    assert status.update.reason == "the registry registry.ollama.ai answered 503: maintenance"
    absent = status_of()
    assert _check(absent, same) is None  # not on disk: nothing to compare


def test_manifest_stamps_see_a_rewrite_and_a_new_manifest(tmp_path: Path) -> None:
    ref, other = ModelName.parse("llama3.2"), ModelName.parse("me/tiny:q4")
    path = manifest_path(tmp_path, ref)
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    stamps = ManifestStamps(tmp_path)
    assert not stamps.changed([ref, other])  # the first look only records
    assert not stamps.changed([ref, other])
    path.write_text('{"layers": []}')
    assert stamps.changed([ref, other])
    assert not stamps.changed([ref, other])
    manifest_path(tmp_path, other).parent.mkdir(parents=True)
    manifest_path(tmp_path, other).write_text("{}")
    assert stamps.changed([ref, other])
    assert not ManifestStamps(None).changed([ref])


def test_digest_recheck_asks_once_per_new_runner_digest() -> None:
    recheck = DigestRecheck()
    assert not recheck.unknown("m", "a", ["a"])
    assert recheck.unknown("m", "a", ["a", "b"])
    assert recheck.unknown("m", "a", ["a", "b"])  # not read yet: still unknown
    recheck.tags_read()
    assert not recheck.unknown("m", "a", ["a", "b"])
    assert not recheck.unknown("m", "b", ["b"])


def test_a_pull_line_is_in_ollamas_shape() -> None:
    assert progress_line(PullProgress("pulling manifest", None, 0, 0)) == {
        "status": "pulling manifest"
    }
    assert progress_line(PullProgress("pulling 1a2b", "sha256:1a2b", 100, 40)) == {
        "status": "pulling 1a2b",
        "digest": "sha256:1a2b",
        "total": 100,
        "completed": 40,
    }


@pytest.mark.parametrize(
    ("raw", "claimed"),
    [
        (b'{"model":"llama3.2"}', (True, False)),
        (b'{"name":"llama3.2:latest","stream":false,"insecure":true}', (False, True)),
        (b'{"Model":"nomic","model":"llama3.2"}', (True, False)),  # Go: the last key wins
        (b'{"model":"devstral"}', None),  # not declared
        (b'{"model":"me/tiny"}', None),  # declared, not on disk: the ordinary pull
        (b"not json", None),
        (b'["llama3.2"]', None),
    ],
)
def test_the_guard_claims_pulls_of_declared_models_on_disk(
    raw: bytes, claimed: tuple[bool, bool] | None
) -> None:
    board = Board.for_specs([parse_entry("llama3.2", 0), parse_entry("me/tiny", 1)])
    board.models[0].present = True

    async def swap(*_: object) -> str | None:
        return None

    got = PullHook(board, swap)._claim(raw)
    if claimed is None:
        assert got is None
    else:
        assert got is not None
        assert got[0] is board.models[0]
        assert got[1:] == claimed
