"""Profiles, warm-up and the memory check, end to end against the fake `ollama` on PATH."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_catalogs import GB, model, write_catalog
from preloader_harness import Launcher, Run

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
PROFILE_VARIABLES = (
    *GPU_VARIABLES,
    "OLLAMA_VULKAN",
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KV_CACHE_TYPE",
)
CPU_ONLY = {
    "CUDA_VISIBLE_DEVICES": "-1",
    "HIP_VISIBLE_DEVICES": "-1",
    "ROCR_VISIBLE_DEVICES": "-1",
    "OLLAMA_VULKAN": "0",
}


def perf_env(
    launcher: Launcher, catalog: dict[str, Any] | None = None, **env: str
) -> dict[str, str]:
    """The launcher's environment without the host's own GPU variables, with a catalog."""
    base = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog), **env
    )
    for name in (*GPU_VARIABLES, "GGML_VK_VISIBLE_DEVICES"):
        if name not in env:
            base.pop(name, None)
    return base


def child_env(run: Run) -> dict[str, str]:
    """The environment the fake `ollama serve` actually started with."""
    run.wait_for(lambda: run.fake_events("serve_start"), "serve_start")
    env: dict[str, str] = run.fake_events("serve_start")[-1]["env"]
    return env


def settle(run: Run, cycles: int = 2) -> None:
    """Wait for a few more watch cycles: the fake logs a request after answering it, so this
    makes sure earlier requests are in its log, and gives later ones the chance to appear."""
    seen = len(run.requests("/api/ps"))
    run.wait_for(lambda: len(run.requests("/api/ps")) >= seen + cycles, "more watch cycles")


def generate_bodies(run: Run, name: str) -> list[dict[str, Any]]:
    return [r["body"] for r in run.requests("/api/generate") if r["body"]["model"] == name]


def embed_bodies(run: Run, name: str) -> list[dict[str, Any]]:
    return [r["body"] for r in run.requests("/api/embed") if r["body"]["model"] == name]


# ----- profiles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("auto", {}),
        ("cpu", CPU_ONLY),
        ("vm", {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"}),
        ("gpu", {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "f16"}),
    ],
)
def test_profile_reaches_ollama_serve_and_not_requests(
    launcher: Launcher, profile: str, expected: dict[str, str]
) -> None:
    """Each profile gives the child its documented variables and adds no runner option."""
    env = perf_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,all-minilm",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm",
        PRELOADER_PROFILE=profile,
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    got = child_env(run)
    assert {k: got[k] for k in PROFILE_VARIABLES if k in got} == expected
    event = run.wait_event("server.profile")
    assert (event["profile"], event["env"], event["kept"]) == (profile, expected, [])
    settle(run)
    # The preloads carry no options at all: a profile acts through the server only.
    loads = [*generate_bodies(run, "llama3.2"), *embed_bodies(run, "all-minilm")]
    assert len(loads) == 2
    assert all(not body.get("options") for body in loads), loads
    assert run.stop() == 0


def test_profile_never_overrides_the_user(launcher: Launcher) -> None:
    """Variables set in the environment or `.env`, even empty, reach the child unchanged."""
    env = perf_env(
        launcher,
        PRELOADER_PROFILE="cpu",
        PRELOADER_QUANTIZATION="q4_0",
        CUDA_VISIBLE_DEVICES="",
        OLLAMA_KV_CACHE_TYPE="q8_0",
    )
    workdir = launcher.tmp / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / ".env").write_text("OLLAMA_FLASH_ATTENTION=0\n")
    run = launcher.start(env=env)
    got = child_env(run)
    assert got["CUDA_VISIBLE_DEVICES"] == ""
    assert got["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert got["OLLAMA_FLASH_ATTENTION"] == "0"
    # What the user did not set, the profile did.
    assert got["HIP_VISIBLE_DEVICES"] == "-1"
    assert got["OLLAMA_VULKAN"] == "0"
    event = run.wait_event("server.profile")
    assert sorted(event["kept"]) == [
        "CUDA_VISIBLE_DEVICES",
        "OLLAMA_FLASH_ATTENTION",
        "OLLAMA_KV_CACHE_TYPE",
    ]
    assert event["env"]["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert run.stop() == 0


def test_quantization_picks_the_kv_cache_type(launcher: Launcher) -> None:
    """PRELOADER_QUANTIZATION=q4_0 over the gpu profile: q4_0 cache, flash attention on."""
    env = perf_env(launcher, PRELOADER_PROFILE="gpu", PRELOADER_QUANTIZATION="q4_0")
    run = launcher.start(env=env)
    got = child_env(run)
    assert (got["OLLAMA_KV_CACHE_TYPE"], got["OLLAMA_FLASH_ATTENTION"]) == ("q4_0", "1")
    assert run.stop() == 0


def test_bad_profile_is_a_configuration_error(launcher: Launcher) -> None:
    """An unknown profile exits 2 with one line naming the variable; nothing is started."""
    result = launcher.run_once(env=perf_env(launcher, PRELOADER_PROFILE="turbo"))
    assert result.returncode == 2
    assert "PRELOADER_PROFILE='turbo'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (launcher.tmp / "fake-requests.jsonl").exists()


# ----- warm-up ----------------------------------------------------------------------------


def test_warmup_sends_one_small_request_per_model(launcher: Launcher) -> None:
    """After each pin: one 1-token generate or one short embed, with the load's options."""
    env = perf_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2?num_ctx=8192,nomic-embed-text",
        FAKE_OLLAMA_PRESENT="llama3.2,nomic-embed-text",
        PRELOADER_WARMUP="true",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    run.wait_for(lambda: run.count_events("model.warmup") >= 2, "two warm-ups")
    settle(run)

    load, warm = generate_bodies(run, "llama3.2")
    assert not load.get("prompt")
    assert warm["prompt"]
    assert warm["options"] == {"num_ctx": 8192, "num_predict": 1}
    assert warm["keep_alive"] == load["keep_alive"] == -1
    eload, ewarm = embed_bodies(run, "nomic-embed-text")
    assert eload["input"] == []
    assert ewarm["input"]
    assert ewarm["keep_alive"] == -1
    assert not ewarm.get("options")

    # Each warm-up follows its model's pin, and none reloaded a model.
    lines = [e["event"] for e in run.events() if e["event"] in ("model.pinned", "model.warmup")]
    assert lines == ["model.pinned", "model.warmup", "model.pinned", "model.warmup"]
    assert run.fake_events("reload") == []
    assert all(e["seconds"] >= 0 for e in run.events("model.warmup"))
    rows = [line for line in run.ollama("ps").stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2
    assert all(row.rstrip().endswith("Forever") for row in rows)

    # A model loaded again after an eviction is cold again: it is warmed again.
    run.http("POST", "/_fake/evict", {"model": "llama3.2"})
    run.wait_for(
        lambda: run.count_events("model.warmup", model="llama3.2:latest") >= 2, "warm-up again"
    )
    settle(run)
    assert len(generate_bodies(run, "llama3.2")) == 4
    assert run.stop() == 0


def test_failed_warmup_leaves_the_model_pinned(launcher: Launcher) -> None:
    """A warm-up that fails is a warning; the model is not failed, reloaded or un-pinned."""
    env = perf_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text",
        FAKE_OLLAMA_PRESENT="llama3.2,nomic-embed-text",
        PRELOADER_WARMUP="1",
    )
    fault = {"times": 1, "message": "error creating completion request: EOF"}
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(
        json.dumps({"inference_fail": {"llama3.2": fault, "nomic-embed-text": fault}})
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    failed = run.wait_event("model.warmup_failed", model="llama3.2:latest")
    assert "error creating completion request: EOF" in failed["error"]
    run.wait_event("model.warmup_failed", model="nomic-embed-text:latest")
    # Let the watch loop look a few more times before judging that nothing changed.
    settle(run, cycles=3)
    assert run.count_events("model.warmup") == 0
    for event in ("model.failed", "model.evicted", "model.unpinned"):
        assert run.count_events(event) == 0, run.output()
    assert len(generate_bodies(run, "llama3.2")) == 2
    assert len(embed_bodies(run, "nomic-embed-text")) == 2
    assert run.count_events("model.pinned") == 2
    rows = [line for line in run.ollama("ps").stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2
    assert all(row.rstrip().endswith("Forever") for row in rows)
    assert run.stop() == 0


def test_no_warmup_by_default(launcher: Launcher) -> None:
    """Without PRELOADER_WARMUP only the loads are sent."""
    env = perf_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text",
        FAKE_OLLAMA_PRESENT="llama3.2,nomic-embed-text",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    run.wait_for(lambda: run.count_events("model.pinned") >= 2, "both pinned")
    settle(run)
    assert len(generate_bodies(run, "llama3.2")) == 1
    assert len(embed_bodies(run, "nomic-embed-text")) == 1
    assert run.count_events("model.warmup") == 0
    assert run.stop() == 0


# ----- memory check -----------------------------------------------------------------------


def fake_nvidia_smi(launcher: Launcher, total_mib: int, used_mib: int) -> tuple[str, Path]:
    """A fake `nvidia-smi` answering the documented query; returns (its dir, its call log)."""
    directory = launcher.tmp / "nvidia-bin"
    directory.mkdir(exist_ok=True)
    calls = launcher.tmp / "nvidia-smi.calls"
    exe = directory / "nvidia-smi"
    exe.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        '[ "$*" = "--query-gpu=memory.total,memory.used --format=csv,noheader,nounits" ]'
        " || exit 6\n"
        f'echo "{total_mib}, {used_mib}"\n'
    )
    exe.chmod(0o755)
    return str(directory), calls


def with_path(env: dict[str, str], directory: str) -> dict[str, str]:
    return {**env, "PATH": f"{directory}:{env['PATH']}"}


HUGE = {
    "giant-a:latest": model(size=60_000),  # 60 TB: more than any test machine has
    "giant-b:latest": model(size=50_000),
}


def test_oversized_set_is_warned_before_loading_and_still_runs(launcher: Launcher) -> None:
    """Models larger than memory: a warning naming them and the figures; they still load."""
    env = perf_env(
        launcher,
        HUGE,
        OLLAMA_PRELOAD_MODELS="giant-a,giant-b",
        FAKE_OLLAMA_PRESENT="giant-a",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    warnings = run.events("resources.warning")
    assert warnings, run.output()
    first, last = warnings[0], warnings[-1]
    # Before giant-b is pulled its size is unknown: named, not counted; then checked again.
    assert first["models"] == ["giant-a:latest"]
    assert first["unknown"] == ["giant-b:latest"]
    assert last["models"] == ["giant-a:latest", "giant-b:latest"]
    assert last["unknown"] == []
    for warning in warnings:
        assert warning["estimate"] is True
        assert warning["scope"] == "total"
        assert warning["msg"].startswith("Estimate:")
        assert "giant-a:latest 60000.0 GB" in warning["msg"]
        assert warning["system_total"] > 0
        assert warning["gpu_source"] is None
    assert last["needed"] == 110_000 * GB
    # The first warning came before the first load; the set is loaded all the same.
    events = [e["event"] for e in run.events()]
    assert events.index("resources.warning") < events.index("model.loading")
    assert run.count_events("model.pinned") >= 2
    assert run.stop() == 0


def test_set_beyond_gpu_memory_is_warned_with_nvidia_smi_figures(launcher: Launcher) -> None:
    """A fake nvidia-smi reports 2 GiB free: 3 GB of models will partly run on the CPU."""
    directory, calls = fake_nvidia_smi(launcher, total_mib=24576, used_mib=22528)
    catalog = {"small-a:latest": model(size=1.5), "small-b:latest": model(size=1.5)}
    env = perf_env(
        launcher,
        catalog,
        OLLAMA_PRELOAD_MODELS="small-a,small-b",
        FAKE_OLLAMA_PRESENT="small-a,small-b",
        FAKE_OLLAMA_VRAM=str(24 * GB),
    )
    run = launcher.start(env=with_path(env, directory))
    run.wait_all_pinned()
    warning = run.wait_event("resources.warning")
    assert warning["scope"] == "gpu"
    assert warning["gpu_source"] == "nvidia-smi"
    assert warning["gpu_total"] == 24576 * 1024 * 1024
    assert warning["gpu_free"] == 2048 * 1024 * 1024
    assert warning["over"] == ["small-b:latest"]
    assert "small-a:latest 1.5 GB" in warning["msg"]
    assert calls.read_text().strip()
    assert run.stop() == 0


def test_set_that_fits_gives_no_warning(launcher: Launcher) -> None:
    """Small models and a roomy fake GPU: the check runs and says nothing."""
    directory, calls = fake_nvidia_smi(launcher, total_mib=24576, used_mib=0)
    env = perf_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="all-minilm,nomic-embed-text",
        FAKE_OLLAMA_PRESENT="all-minilm,nomic-embed-text",
        FAKE_OLLAMA_VRAM=str(24 * GB),
    )
    run = launcher.start(env=with_path(env, directory))
    run.wait_all_pinned()
    checked = run.wait_event("resources.checked")
    assert checked["fits"] is True
    assert checked["models"] == 2
    assert calls.read_text().strip()
    assert run.count_events("resources.warning") == 0
    assert run.stop() == 0


def test_inference_compute_figures_when_nvidia_smi_fails(launcher: Launcher) -> None:
    """When nvidia-smi fails, the GPU memory Ollama logged at start (4 GB) is used."""
    directory = launcher.tmp / "broken-nvidia"
    directory.mkdir()
    exe = directory / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    exe.chmod(0o755)
    catalog = {"mid-a:latest": model(size=2.5), "mid-b:latest": model(size=2.5)}
    env = perf_env(
        launcher,
        catalog,
        OLLAMA_PRELOAD_MODELS="mid-a,mid-b",
        FAKE_OLLAMA_PRESENT="mid-a,mid-b",
        FAKE_OLLAMA_VRAM=str(4 * GB),
    )
    # Both do not fit in the fake GPU, so they would evict each other: only the warning matters.
    run = launcher.start(env=with_path(env, str(directory)))
    warning = run.wait_event("resources.warning")
    assert (warning["scope"], warning["gpu_source"]) == ("gpu", "ollama")
    assert warning["gpu_total"] == 4 * GB
    assert warning["over"] == ["mid-b:latest"]
    assert run.stop() == 0
