"""The image's install step run here: scripts/install-venv into a fresh venv, then run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from fake_catalogs import write_catalog
from preloader_harness import FAKE_BIN, Launcher
from shipping import dockerfile

REPO = Path(__file__).resolve().parents[2]
SRC, VENV = "/src", "/opt/ollama-preloader"  # where the Dockerfile's build stage puts them


def install_like_the_dockerfile(tmp: Path) -> Path:
    """Copy what the build stage COPYs, run the RUN it runs (paths moved under tmp)."""
    build = dockerfile.stage(dockerfile.parse(REPO / "Dockerfile"), "build")
    workdir = next(i.args for i in build if i.keyword == "WORKDIR")
    assert workdir == SRC
    src, venv = tmp / "src", tmp / "venv"
    for copy in (i for i in build if i.keyword == "COPY"):
        *sources, dest = copy.args.split()
        target = src / dest if not dest.startswith("/") else tmp / dest.lstrip("/")
        for source in sources:
            origin = REPO / source
            into = target / origin.name if dest.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, into)
    (run,) = [i.exec_form for i in build if i.keyword == "RUN"]
    assert run is not None
    argv = [a.replace(VENV, str(venv)).replace(SRC, str(src)) for a in run]
    # The distribution's python3, as in the image: not this test's virtual environment.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(
        argv, env={**env, "PATH": path}, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ollama-preloader 0.1.0"
    return venv


def test_installed_entrypoint_pins_a_model_and_stops_cleanly(launcher: Launcher) -> None:
    """The venv the image would get runs `run` against the fake: a model pinned, SIGTERM -> 0."""
    venv = install_like_the_dockerfile(launcher.tmp)
    assert (venv / "bin" / "ollama-preloader").is_file()
    assert not (venv / "bin" / "pip").exists(), "pip is left in the image's venv"

    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="llama3.2",
    )
    # Only the fake `ollama` and the system: nothing from the developer's venv.
    env["PATH"] = os.pathsep.join(
        [str(FAKE_BIN)]
        + [p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent]
    )
    run = launcher.start(env=env, command=[str(venv / "bin" / "ollama-preloader")])
    pinned = run.wait_event("model.pinned")
    assert pinned["model"] == "llama3.2:latest"
    assert [m["name"] for m in run.ps()] == ["llama3.2:latest"]
    assert run.stop(signal.SIGTERM) == 0
    run.wait_event("supervisor.stopped")
