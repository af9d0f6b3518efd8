"""The probe's escalations on the real Ollama (docs/faults.md, "Probe (pinned is not serving)"):
wedged again soon after a runner kill, `run` restarts `ollama serve`; in `watch` a runner the
supervisor may not signal is repaired by unloading and pinning again through the API.

Each runner is wedged for certain by stopping it (real_harness.freeze): dropped streams, the way
users wedge a model (ollama-behaviour.md §9.5a), do it only sometimes; test_real_probe.py has them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from preloader_harness import Run, preloader_command
from real_harness import (
    RealLauncher,
    answers,
    freeze,
    processes_with_home,
    ps_rows,
    wedge_logged,
)

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
# The supervisor stays root but without CAP_KILL: it sees nobody's runner in /proc and reads
# its CPU time, yet may not signal it (as a sidecar beside a system `ollama` user's server).
NO_KILL = ("setpriv", "--bounding-set=-kill", "--inh-caps=-kill", "--")


def wedges(run: Run, listed: str) -> list[dict[str, Any]]:
    return [e for e in run.events("model.wedged") if e.get("model") == listed]


def forever(run: Run) -> dict[str, str]:
    """`ollama ps` rows as {name: UNTIL}."""
    return {row[0]: row[-1] for row in ps_rows(run)}


def status_state(run: Run) -> str:
    (model,) = json.loads(run.cli("status", "--json").stdout)["models"]
    return str(model["state"])


def repinned(run: Run, listed: str, more_than: int) -> None:
    """Wait for more than `more_than` model.pinned events with reason wedged."""
    run.wait_for(
        lambda: run.count_events("model.pinned", model=listed, reason="wedged") > more_than,
        "pinned again after the repair",
    )


def serving(run: Run, chat: str, listed: str) -> None:
    """Pinned Forever, answering a client, `status` pinned and /readyz 200 (waited for)."""
    run.wait_for(lambda: forever(run) == {listed: "Forever"}, "pinned Forever again")
    assert answers(run, chat, timeout=30.0)
    run.wait_for(lambda: status_state(run) == "pinned", "status pinned")
    run.wait_for(lambda: run.health_get("/readyz")[0] == 200, "/readyz 200")
    assert forever(run) == {listed: "Forever"}


def test_wedged_again_after_a_runner_kill_restarts_ollama_serve(real: RealLauncher) -> None:
    """First wedge: the runner is killed and the model pinned again (reason wedged). Wedged
    again within 5 minutes: `ollama serve` is restarted (a new pid) and the model is pinned
    Forever and serving, /readyz 200, and the supervisor stops cleanly."""
    chat = real.name("tiny-chat")
    listed = f"{chat}:latest"
    real.seed_store("tiny-chat")
    run = real.start(
        OLLAMA_PRELOAD_MODELS=chat,
        PRELOADER_PROBE_INTERVAL="2s",
        PRELOADER_PROBE_TIMEOUT="1s",
    )
    run.wait_all_pinned()
    (serve,) = [e["pid"] for e in run.events("server.started")]
    (runner,) = real.runners()
    freeze(runner)
    first = run.wait_event("model.wedged", timeout=60, model=listed)
    assert (first["repair"], first["again"], first["pid"]) == ("kill-runner", False, runner)
    run.wait_event("model.pinned", timeout=30, model=listed, reason="wedged")
    assert answers(run, chat, timeout=30.0)
    (second,) = run.wait_for(
        lambda: [pid for pid in real.runners() if pid != runner], "the model's new runner"
    )

    # Wedged again seconds later, well within the 5-minute window: an escalation.
    freeze(second)
    run.wait_for(lambda: len(wedges(run, listed)) == 2, "the second model.wedged")
    again = wedges(run, listed)[1]
    assert (again["again"], again["pid"]) == (True, second)
    assert again["repair"] == "restart-serve"
    run.wait_for(lambda: len(run.events("server.started")) == 2, "ollama serve started again")
    restarted = run.events("server.started")[1]["pid"]
    assert restarted != serve
    # A new serve runs short-lived `ollama` children of its own at start (device discovery).
    run.wait_for(lambda: real.servers() == [restarted], "only the new ollama serve running")
    # Spawned is not answering: an `ollama ps` before that is refused (failed a loaded CI run).
    run.wait_event("server.ready", restart=True)
    serving(run, chat, listed)
    # The stopped runner went with the old serve: nothing of it is left behind.
    (third,) = real.runners()
    assert third not in (runner, second)
    assert run.stop() == 0


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A folder `nobody` owns, outside pytest's own (root's 0700 tmp): its serve's HOME and
    store. Whatever ran with that HOME is stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="preloader-nobody-"))
    path.chmod(0o755)
    yield path
    deadline = time.monotonic() + 10
    while (left := processes_with_home(path / "home")) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    shutil.rmtree(path, ignore_errors=True)


def own_copy(real: RealLauncher, store: Path, model: str, name: str) -> str:
    """`model` under a new `name` in `store` with a model file of its own (the GGUF with 32 random
    bytes of padding added), so its runner is the only process on this host running that file:
    other tests (and other supervisors) running the kit's models then never make it ambiguous,
    and the supervisor in `watch` sees it."""
    assert real.registry is not None
    real.seed_store(model, store=store)
    manifests = store / "manifests" / f"127.0.0.1:{real.registry.port}" / "library"
    doc = json.loads((manifests / model / "latest").read_text())
    (layer,) = [x for x in doc["layers"] if x["mediaType"] == "application/vnd.ollama.image.model"]
    old = store / "blobs" / ("sha256-" + layer["digest"].split(":", 1)[1])
    data = old.read_bytes() + os.urandom(32)  # its own file, even beside another copy
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs" / f"sha256-{digest}").write_bytes(data)
    old.unlink()
    layer.update(digest=f"sha256:{digest}", size=len(data))
    (manifests / name).mkdir()
    (manifests / name / "latest").write_text(json.dumps(doc))
    shutil.rmtree(manifests / model)
    return real.name(name)


def chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, uid)


def test_watch_unloads_and_repins_a_runner_it_may_not_signal(
    real: RealLauncher, nobody_dir: Path
) -> None:
    """`watch` beside an `ollama serve` of another user: the wedged model's runner is visible
    on this host but not the supervisor's to signal, so the repair is an unload and a re-pin
    through the API, no kill tried. Then either the model serves again (pinned Forever, /readyz
    200) or, when the unload did not free the held slot, it is wedged again and reported
    (`repair: none`, status wedged, /readyz 503): both happen on the real server."""
    home, store = nobody_dir / "home", nobody_dir / "models"
    home.mkdir()
    chat = own_copy(real, store, "tiny-chat", "tiny-chat-nobody")
    listed = f"{chat}:latest"
    chown_tree(nobody_dir, NOBODY)
    server = real.serve(
        prefix=AS_NOBODY, unset=("SSL_CERT_FILE",), HOME=str(home), OLLAMA_MODELS=str(store)
    )
    env = real.env(
        OLLAMA_HOST=server.env["OLLAMA_HOST"],
        OLLAMA_PRELOAD_MODELS=chat,
        PRELOADER_PROBE_INTERVAL="2s",
        PRELOADER_PROBE_TIMEOUT="1s",
    )
    run = real.start(("watch",), env=env, command=[*NO_KILL, *preloader_command()])
    run.wait_all_pinned()
    (runner,) = processes_with_home(home, real.kit.llama_server if real.kit else None)
    assert os.stat(f"/proc/{runner}").st_uid == NOBODY
    freeze(runner)
    wedged = run.wait_event("model.wedged", timeout=60, model=listed)
    assert wedged["pid"] == runner  # seen, and judged by its CPU time
    assert wedged["repair"] == "unload-repin"
    run.wait_event("model.pinned", timeout=60, model=listed, reason="wedged")
    assert run.events("model.wedge_repair") == []  # no kill was tried
    # The unload may not free the slot a dropped stream still holds inside `ollama serve`
    # (§9.5a), and then the model is wedged again: reported, nothing more to try in `watch`.
    if answers(run, chat, timeout=30.0) or not wedge_logged(run, listed, 60.0, more_than=1):
        serving(run, chat, listed)
        # Ollama's unload ended the stopped runner; the model has a new one.
        assert runner not in processes_with_home(home)
    else:
        again = wedges(run, listed)[1]
        assert (again["repair"], again["again"]) == ("none", True)
        run.wait_for(lambda: status_state(run) == "wedged", "status wedged")
        assert run.health_get("/readyz")[0] == 503
    assert run.proc.poll() is None
    assert run.stop() == 0
    assert server.proc is not None
    assert server.proc.poll() is None  # the sidecar never stops the server it watches
