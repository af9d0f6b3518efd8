"""Applying an update without a gap: the hold-name swap of ollama-behaviour.md §9.4.

A plain re-pull of a pinned model leaves its old runner loaded under a name that no longer
reaches it, and the next request loads a second copy. The swap instead: copy the manifest to a
hold name (the pull then cannot prune the old blobs, and the hold still resolves to the old
runner), pull, pin the new copy with the model's own load request (the name stays listed),
unload the old runner through the hold, remove the hold (which deletes the old blobs). One swap
at a time per Ollama, across processes: a lock file (the supervisor and `update` may both run).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ollama_preloader.errors import OllamaAPIError, PreloaderError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.resources import gather_figures
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI, PullProgress
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.ollama.names import DEFAULT_HOST, InvalidName, ModelName
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.state.board import ModelStatus, State

log = get_logger()

HOLD_NAMESPACE = "preloader-hold"
UNLOAD_WAIT = 30.0  # seconds for Ollama to take a runner out of /api/ps after keep_alive 0


class SwapFailed(PreloaderError):
    """The update was not applied; the old copy is still what serves. The message says why."""


def hold_name(status: ModelStatus) -> str:
    """`preloader-hold/<model>:<12 hex of the full name>`: recognisable, one per model."""
    tag = hashlib.sha256(status.key.encode()).hexdigest()[:12]
    return f"{HOLD_NAMESPACE}/{status.spec.ref.model}:{tag}"


def is_hold(name: str) -> bool:
    """A name made by a swap: never a model of anyone's, never counted, pinned or warned of."""
    try:
        ref = ModelName.parse(name)
    except InvalidName:
        return False
    return ref.host.lower() == DEFAULT_HOST and ref.namespace.lower() == HOLD_NAMESPACE


@dataclass(frozen=True)
class SwapResult:
    old_digest: str
    new_digest: str
    unloaded_first: bool  # the two copies did not fit: the old one went before the load
    was_loaded: bool  # False: only pulled (nothing of it was in memory)
    seconds: float


class SwapLock:
    """An flock on a file per Ollama server, in PRELOADER_STATE_DIR: one swap at a time."""

    def __init__(self, state_dir: Path | None, base_url: str) -> None:
        directory = state_dir or Path(tempfile.gettempdir()) / f"ollama-preloader-{os.getuid()}"
        tag = hashlib.sha256(base_url.encode()).hexdigest()[:12]
        self.path = directory / f"swap-{tag}.lock"

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """True when this process holds the lock for the block; False when another does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "?"
        return "?"


def free_bytes(directory: Path | None) -> int | None:
    if directory is None:
        return None
    with contextlib.suppress(OSError):
        return shutil.disk_usage(directory).free
    return None


async def remove_leftover_holds(api: OllamaAPI, lock: SwapLock) -> list[str]:
    """Holds a swap that was killed left in the store, removed (the caller holds nothing).

    A hold whose digest differs from its model's means the pull had finished: its old runner
    may still be loaded and only the hold reaches it, so it is unloaded through the hold
    first. A hold with the model's own digest shares the model's runner: not unloaded.
    """
    with lock.held() as mine:
        if not mine:
            return []  # a swap is running right now (the `update` command): its hold is live
        tags = await api.tags()
        current = {m.key: m.digest for m in tags if not is_hold(m.name)}
        removed = []
        for hold in [m for m in tags if is_hold(m.name)]:
            if hold.digest not in current.values():
                with contextlib.suppress(OllamaAPIError):
                    await api.unload(hold.name)
            with contextlib.suppress(OllamaAPIError):
                await api.delete(hold.name)
                removed.append(hold.name)
        return removed


async def fits_beside(
    env: Mapping[str, str], compute_lines: Sequence[str], size: int, *, loaded_vram: int = 0
) -> bool | None:
    """Does a second copy of `size` bytes fit beside what is loaded? An estimate from this
    machine's free memory (GPU first when there is one); None when nothing can be told.

    `loaded_vram`: GPU memory the loaded runners hold (/api/ps `size_vram`). Ollama's own
    figure is what was free when it started, before any load, so that is taken off it;
    nvidia-smi's figure is free memory now and already excludes them.
    """
    figures = await gather_figures(env, compute_lines)
    if figures.gpus:
        free = sum(g.free for g in figures.gpus)
        if figures.gpu_source == "ollama":
            free -= loaded_vram
        return free >= size
    if figures.system is not None:
        return figures.system.available >= size
    return None


async def _wait_gone(api: OllamaAPI, key: str, digest: str) -> bool:
    deadline = time.monotonic() + UNLOAD_WAIT
    while time.monotonic() < deadline:
        if not any(m.key == key and m.digest == digest for m in await api.ps()):
            return True
        await asyncio.sleep(0.1)
    return False


async def _load(api: OllamaAPI, status: ModelStatus, kind: ModelKind) -> None:
    spec = status.spec
    options = spec.options_dict()
    if kind == ModelKind.EMBEDDING:
        await api.load_embedding(spec.name, spec.keep_alive_value, options)
    else:
        await api.load_completion(spec.name, spec.keep_alive_value, options)


async def swap(
    api: OllamaAPI,
    status: ModelStatus,
    *,
    download_bytes: int,
    store: Path | None,
    fits_beside: Callable[[int], Awaitable[bool | None]],
    on_progress: Callable[[PullProgress], None] | None = None,
    insecure: bool = False,
) -> SwapResult:
    """Update one model on the server without a moment it is not listed; SwapFailed if not.

    `fits_beside(size)`: does a second copy of that size fit beside the loaded ones (None:
    cannot tell, which counts as yes: Ollama itself evicts when it must). `on_progress` gets
    each line of the pull's progress (the guard streams them to the client that asked);
    `insecure`: plain HTTP to the registry although the entry does not say so (a client's
    `ollama pull --insecure`).
    """
    started = time.monotonic()
    spec, hold = status.spec, hold_name(status)
    room = free_bytes(store)
    if room is not None and download_bytes > room:
        raise SwapFailed(
            f"not enough disk space for the update: {human_bytes(download_bytes)} to download, "
            f"{human_bytes(room)} free in {store}; nothing was pulled"
        )
    tags = {m.key: m for m in await api.tags()}
    local = tags.get(status.key)
    if local is None:
        raise SwapFailed("not on disk: nothing to update (it is pulled as usual)")
    old_digest = local.digest
    runners = [m for m in await api.ps() if m.key == status.key]
    old: LoadedModel | None = next((m for m in runners if m.digest == old_digest), None)
    await api.copy(spec.name, hold)
    try:
        try:
            async for progress in api.pull(spec.name, insecure=spec.insecure or insecure):
                if on_progress is not None:
                    on_progress(progress)
        except OllamaAPIError as exc:
            raise SwapFailed(f"the pull failed, the old copy still serves: {exc}") from None
        new = {m.key: m for m in await api.tags()}.get(status.key)
        new_digest = new.digest if new else old_digest
        status.digest = new_digest
        unloaded_first = False
        if new_digest != old_digest:
            with contextlib.suppress(OllamaAPIError):
                status.blob = (await api.show(spec.name)).blob  # the new copy's model file
        if old is not None and new_digest != old_digest:
            kind = status.kind or (await api.show(spec.name)).kind
            if await fits_beside(old.size) is False:
                unloaded_first = True
                log.warning(
                    "update.unload_first",
                    msg=f"{spec.display}: the old and the new copy do not both fit in memory; "
                    "unloading the old one first (the model is not ready until the new one "
                    "is loaded)",
                    model=spec.display,
                    size=old.size,
                )
                # Not ready until the new copy is loaded, as at start: `status` says so.
                before = (status.state, status.reason)
                status.state = State.LOADING
                status.reason = "updating: the old copy was unloaded first (both do not fit)"
                await api.unload(hold)
                await _wait_gone(api, status.key, old_digest)
                try:
                    await _load(api, status, kind)
                except OllamaAPIError as exc:
                    # Nothing loaded now: the loop loads it again like any evicted model.
                    status.state, status.reason = State.EVICTED, "evicted"
                    raise SwapFailed(
                        f"the new copy is on disk but did not load (the old one was unloaded "
                        f"first): {exc}"
                    ) from None
                status.state, status.reason = before
            else:
                await _load(api, status, kind)
            if not unloaded_first:
                await api.unload(hold)  # resolves to the old file: the old runner
                if not await _wait_gone(api, status.key, old_digest):
                    log.warning(
                        "update.old_runner_left",
                        msg=f"{spec.display}: the old runner ({old_digest[:12]}) was still "
                        f"listed {UNLOAD_WAIT:g}s after its unload",
                        model=spec.display,
                    )
    finally:
        with contextlib.suppress(OllamaAPIError):
            await api.delete(hold)  # the old blobs go with it (those the new copy lacks)
    return SwapResult(
        old_digest=old_digest,
        new_digest=new_digest,
        unloaded_first=unloaded_first,
        was_loaded=old is not None,
        seconds=time.monotonic() - started,
    )
