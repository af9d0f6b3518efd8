"""Benchmark: from an edit of the models file to the new model pinned, on the real Ollama.

    PRELOADER_REAL_OLLAMA=../shared/realollama/bin/ollama .venv/bin/python benchmarks/reload.py

Uses the real-server tier's harness (tests/real_harness.py): the kit, its TLS registry and a
store with the three tiny models. `run` keeps tiny-chat pinned; each try adds tiny-embed to the
file (saved in place) and times, on this process's clock, until the supervisor logs
`config.reloaded` and until /api/ps lists tiny-embed pinned; then removes it again
(PRELOADER_ON_REMOVE=unload) and waits until it is gone, so every try loads it cold. Prints
medians and the range. Benchmarks are not tests: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))  # run as a script: the harness lives in tests/

from real_harness import RealLauncher, find_kit, kit_launcher  # noqa: E402

from benchmarks.analysis import median  # noqa: E402

CENTURY = timedelta(days=365 * 100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=9)
    args = parser.parse_args()
    ollama, why = find_kit()
    if ollama is None:
        print(f"reload benchmark: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="reload-bench-") as tmp:
        work = Path(tmp)
        with kit_launcher(ollama, work) as real:
            noticed, pinned = measure(real, args.tries)
    print(f"| Edit of the models file to … ({args.tries} tries) | median | range |")
    print("|---|---|---|")
    for label, values in (("`config.reloaded`", noticed), ("new model pinned", pinned)):
        print(f"| {label} | {median(values):.2f} s | {min(values):.2f}–{max(values):.2f} s |")
    return 0


def measure(real: RealLauncher, tries: int) -> tuple[list[float], list[float]]:
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    path = real.tmp / "models.txt"
    path.write_text(f"{chat}\n")
    run = real.start(
        PRELOADER_MODELS_FILE=str(path), PRELOADER_ON_REMOVE="unload", PRELOADER_LOG_LEVEL="info"
    )
    run.wait_all_pinned()
    noticed: list[float] = []
    pinned: list[float] = []

    def embed_expiry() -> timedelta | None:
        now = datetime.now(UTC)
        for m in run.ps():
            if m["name"] == f"{embed}:latest":
                return datetime.fromisoformat(m["expires_at"]) - now
        return None

    for _ in range(tries):
        reloads = run.count_events("config.reloaded")
        started = time.monotonic()
        path.write_text(f"{chat}\n{embed}\n")
        seen: float | None = None
        while True:
            now = time.monotonic()
            if seen is None and run.count_events("config.reloaded") > reloads:
                seen = now - started
            left = embed_expiry()
            if left is not None and left > CENTURY:
                pinned.append(now - started)
                break
            if now - started > 60:
                raise SystemExit("tiny-embed was not pinned within 60 s:\n" + run.output())
            time.sleep(0.01)
        noticed.append(seen if seen is not None else pinned[-1])
        path.write_text(f"{chat}\n")
        run.wait_for(lambda: embed_expiry() is None, "tiny-embed unloaded")
    run.stop()
    return noticed, pinned


if __name__ == "__main__":
    raise SystemExit(main())
