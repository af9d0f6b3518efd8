"""Real clients through the guard on the real Ollama: `ollama pull`, `create`, `run`, `stop` and
the official Python client work as they do against `ollama serve` directly (the upstream
port): the same streams, progress, results and errors."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

from preloader_harness import WAIT, Run, free_port
from prometheus_client.parser import text_string_to_metric_families
from real_harness import RealLauncher

from ollama_preloader.ollama.library import ollama

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DETERMINISTIC = {"seed": 7, "num_predict": 24}  # the same seed: the same tokens


def guarded(real: RealLauncher) -> tuple[Run, str, str]:
    """`run` with the guard; (the run, the guard's address, the upstream's address)."""
    real.seed_store("tiny-chat")
    upstream = f"127.0.0.1:{free_port()}"
    run = real.start(
        env=real.env(
            OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"),
            PRELOADER_GUARD="on",
            PRELOADER_GUARD_UPSTREAM=upstream,
        )
    )
    run.wait_all_pinned()
    return run, run.env["OLLAMA_HOST"], upstream


def cli(
    run: Run, host: str, *args: str, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `ollama` CLI against `host` (the guard or the upstream)."""
    return subprocess.run(
        [str(run.ollama_bin), *args],
        env={**run.env, "OLLAMA_HOST": host},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def last_line(text: str) -> str:
    """The CLI's last line, without the escape codes its progress bars redraw with."""
    plain = ANSI.sub("", text).replace("\r", "\n")
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def statuses(progress: list[Any]) -> list[str]:
    """A pull's progress statuses, digests elided and repeats folded, as a sequence."""
    out: list[str] = []
    for p in progress:
        status = str(p.status)
        status = (
            "pulling <layer>"
            if status.startswith("pulling ") and status != "pulling manifest"
            else status
        )
        if not out or out[-1] != status:
            out.append(status)
    return out


def tags(client: Any) -> dict[str, str]:
    return {m.model: m.digest for m in client.list().models}


def test_ollama_pull_create_run_and_stop_through_the_guard(real: RealLauncher) -> None:
    run, guard, upstream = guarded(real)
    chat = real.name("tiny-chat")
    direct = ollama.Client(host=f"http://{upstream}")

    pulled = cli(run, guard, "pull", real.name("tiny-chat2"))
    assert pulled.returncode == 0, pulled.stderr
    assert last_line(pulled.stderr + pulled.stdout) == "success"
    assert f"{real.name('tiny-chat2')}:latest" in tags(direct)

    missing = f"{real.name('tiny-chat')}-nope"
    through, plain = cli(run, guard, "pull", missing), cli(run, upstream, "pull", missing)
    assert through.returncode == plain.returncode != 0
    assert last_line(through.stderr) == last_line(plain.stderr)
    assert "Error" in last_line(through.stderr)

    # `create` uploads the weights through /api/blobs/:digest, then creates from them.
    models = str(real.kit.root / "models") if real.kit else ""
    made = cli(run, guard, "create", "via-guard", "-f", "Modelfile.tiny-chat2", cwd=models)
    assert made.returncode == 0, made.stderr
    made = cli(run, upstream, "create", "direct", "-f", "Modelfile.tiny-chat2", cwd=models)
    assert made.returncode == 0, made.stderr
    listed = tags(direct)
    assert listed["via-guard:latest"] == listed["direct:latest"]  # the same bytes arrived
    _, text, _ = run.health_get("/metrics")
    blobs = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "ollama_preloader_guard_requests_total"
        and s.labels["endpoint"] == "/api/blobs"
    ]
    assert {s.labels["status"] for s in blobs} >= {"201"}, blobs  # the upload went through us

    answered = cli(run, guard, "run", chat, "say hi")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip()
    (runner,) = real.runners()
    stopped = cli(run, guard, "stop", chat)
    assert stopped.returncode == 0, stopped.stderr
    assert real.runners() == [runner]  # a pinned model is not unloaded by `ollama stop`
    assert run.stop() == 0


def test_the_official_python_client_through_the_guard(real: RealLauncher) -> None:
    """Streams, pull progress and errors are what the same client gets from Ollama directly."""
    run, guard, upstream = guarded(real)
    chat = real.name("tiny-chat")
    through = ollama.Client(host=f"http://{guard}")
    direct = ollama.Client(host=f"http://{upstream}")

    def generated(client: Any) -> tuple[int, str]:
        chunks = list(client.generate(chat, "count to twenty", stream=True, options=DETERMINISTIC))
        assert chunks[-1].done is True
        return len(chunks), "".join(c.response for c in chunks)

    assert generated(through) == generated(direct)
    assert generated(through)[0] > 3  # a stream, not one answer

    messages = [{"role": "user", "content": "hi"}]
    parts = list(through.chat(chat, messages=messages, stream=True, options=DETERMINISTIC))
    reply = direct.chat(chat, messages=messages, options=DETERMINISTIC)
    assert "".join(p.message.content or "" for p in parts) == reply.message.content

    second = real.name("tiny-chat2")
    progress_guard = statuses(list(through.pull(second, stream=True)))
    direct.delete(second)
    progress_direct = statuses(list(direct.pull(second, stream=True)))
    assert progress_guard == progress_direct
    assert progress_guard[0] == "pulling manifest"
    assert progress_guard[-1] == "success"

    calls: list[Callable[[Any], Any]] = [
        lambda c: c.show("no-such-model"),
        lambda c: c.generate("no-such-model", "hi"),
        lambda c: c.pull(f"{chat}-nope"),
    ]
    for call in calls:
        errors = []
        for client in (through, direct):
            try:
                call(client)
            except ollama.ResponseError as exc:
                errors.append((exc.status_code, exc.error))
        assert len(errors) == 2
        assert errors[0] == errors[1]
    assert os.environ.get("OLLAMA_HOST") != guard  # the library never read the variable
    assert run.stop() == 0
