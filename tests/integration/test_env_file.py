""".env files that cannot be read as text: a one-line error at start, the old settings on
SIGHUP (never a traceback), through the real CLI against the fake."""

from __future__ import annotations

import signal
from pathlib import Path

from dotenv_harness import dotenv_file, start_from_dotenv
from preloader_harness import Launcher

CHAT, EMBED = "llama3.2:latest", "nomic-embed-text:latest"
# A Latin-1 editor's 'café' on line 2: 0xe9 starts no UTF-8 sequence.
LATIN1 = b"OLLAMA_PRELOAD_MODELS=llama3.2\n# caf\xe9\n"


def test_a_dotenv_that_is_not_utf8_stops_the_start_with_exit_2(launcher: Launcher) -> None:
    """`run` and `health` exit 2 with one line naming the file, its line and what to do;
    `ollama serve` is never started."""
    dotenv_file(launcher).write_bytes(LATIN1)
    env = launcher.env()
    # `health` reads `.env` only for what the environment leaves unset.
    health_env = {k: v for k, v in env.items() if k != "PRELOADER_HEALTH_HOST"}
    for args, with_env in ((("run",), env), (("health",), health_env)):
        done = launcher.run_once(args, env=with_env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("ollama-preloader: error: .env, line 2: not UTF-8"), lines
        assert "save the file as UTF-8" in lines[0]
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()  # no `ollama serve` ever ran


def test_sighup_with_a_dotenv_that_is_not_utf8_keeps_the_settings(launcher: Launcher) -> None:
    """The list comes from `.env`; an edit saved as Latin-1 and a SIGHUP: config.reload_failed
    naming the file and line, /status config_error, every model kept and still pinned, the
    supervisor running; saved as UTF-8 again, the next SIGHUP applies it."""
    run = start_from_dotenv(launcher, f"OLLAMA_PRELOAD_MODELS={CHAT},{EMBED}\n")
    dotenv = dotenv_file(launcher)

    dotenv.write_bytes(f"OLLAMA_PRELOAD_MODELS={CHAT}\n".encode() + b"# caf\xe9\n")
    run.proc.send_signal(signal.SIGHUP)
    failed = run.wait_event("config.reload_failed")
    assert failed["trigger"] == "signal"
    assert failed["error"].startswith(".env, line 2: not UTF-8"), failed
    code, document = run.health_json("/status")
    assert code == 200
    assert document["config_error"] == failed["error"]
    assert [m["name"] for m in document["models"]] == [CHAT, EMBED]
    assert {m["name"] for m in run.ps()} == {CHAT, EMBED}
    assert run.count_events("config.reloaded") == 0
    assert run.count_events("supervisor.crashed") == 0
    assert run.proc.poll() is None

    dotenv.write_text(f"OLLAMA_PRELOAD_MODELS={CHAT}\n# café\n")
    run.proc.send_signal(signal.SIGHUP)
    reloaded = run.wait_event("config.reloaded")
    assert reloaded["removed"] == [EMBED]
    assert run.stop() == 0
