"""Why a pinned model left /api/ps, and how soon it is put back.

Only declared models pushing each other out is a capacity conflict: putting the loser back
evicts the winner again, so capacity.py's reload-storm guard may make one give way. Everything
else is repaired every time: a client's unload (`ollama stop`, keep_alive 0), a runner crash, a
serve restart, a client's keep_alive or options, and a model nobody declared taking the slot
(that one is named in a warning: the cure is to stop it, declare it or make room). A repair is
immediate for the first REPAIR_BURST in REPAIR_WINDOW; more often than that, each waits the
normal retry backoff after the one before, so a client fighting the supervisor cannot make it
spin.
"""

from __future__ import annotations

from collections.abc import Sequence

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.settings import Settings
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.capacity import THRASH_WINDOW
from ollama_preloader.reconcile.plan import find_loaded
from ollama_preloader.state.backoff import backoff_seconds
from ollama_preloader.state.board import ModelStatus

log = get_logger()

REPAIR_BURST = 5  # repairs of one model within ...
REPAIR_WINDOW = 60.0  # ... this many seconds go ahead at once; more wait the retry backoff
REPAIRS = frozenset({"evicted", "unpinned", "runner exited"})  # load reasons that put back


def declared_keys(models: Sequence[ModelStatus], loaded: Sequence[LoadedModel]) -> set[str]:
    """Keys of the /api/ps entries that serve a declared model (its own, or a shared runner)."""
    keys = set()
    for status in models:
        entry = find_loaded(status, loaded)
        if entry is not None:
            keys.add(entry.key)
    return keys


def undeclared(models: Sequence[ModelStatus], loaded: Sequence[LoadedModel]) -> list[str]:
    """Names of the loaded models no declared model is served by."""
    keys = declared_keys(models, loaded)
    return [m.name for m in loaded if m.key not in keys]


def newcomers(
    status: ModelStatus,
    models: Sequence[ModelStatus],
    loaded: Sequence[LoadedModel],
    before: set[str],
) -> tuple[list[str], list[str]]:
    """(declared, undeclared) models listed now that were not at the look `before` (keys):
    what may have pushed `status` out. Neither: nothing took its place (a client's unload,
    keep_alive 0, a serve restart)."""
    keys = {s.key: s.spec.display for s in models if s is not status}
    served = declared_keys([s for s in models if s is not status], loaded)
    declared, other = [], []
    for entry in loaded:
        if entry.key in before:
            continue
        if entry.key in served:
            declared.append(keys.get(entry.key, entry.name))
        else:
            other.append(entry.name)
    return declared, other


def repair_wait(status: ModelStatus, now: float, settings: Settings) -> float:
    """Seconds before the next repair of `status` may start (0.0: at once)."""
    recent = [t for t in status.repair_times if now - t < REPAIR_WINDOW]
    if len(recent) < REPAIR_BURST:
        return 0.0
    delay = min(settings.retry_max, backoff_seconds(settings, len(recent) - REPAIR_BURST + 1))
    return max(0.0, recent[-1] + delay - now)


def log_repair_wait(status: ModelStatus, wait: float, reason: str) -> None:
    recent = len(status.repair_times)
    log.warning(
        "model.repair_delayed",
        msg=f"{status.spec.display} needs putting back again ({reason}), after {recent} "
        f"repairs in the last {format_seconds(REPAIR_WINDOW)}; loading it in "
        f"{format_seconds(round(wait, 1))}",
        model=status.spec.display,
        reason=reason,
        wait=round(wait, 2),
    )


def warn_undeclared(status: ModelStatus, names: Sequence[str], now: float) -> None:
    """An undeclared model took `status`'s place: named once per THRASH_WINDOW per model,
    with how often it happened, since it is put back every time."""
    for name in names:
        times = status.undeclared_evictions.setdefault(name, [])
        times[:] = [t for t in times if now - t < THRASH_WINDOW] + [now]
        warned = status.undeclared_warned.get(name)
        if warned is not None and now - warned < THRASH_WINDOW:
            continue
        status.undeclared_warned[name] = now
        log.warning(
            "capacity.undeclared",
            msg=f"{name} is loaded but not declared, and loading it pushed {status.spec.display} "
            f"out ({len(times)} times in {THRASH_WINDOW / 60:.0f} minutes); "
            f"{status.spec.display} is loaded back each time. Fix: stop loading {name} here, "
            "declare it, or raise OLLAMA_MAX_LOADED_MODELS",
            model=status.spec.display,
            undeclared=name,
            times=len(times),
        )
