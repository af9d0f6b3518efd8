"""`ollama-preloader update`: check the declared models against their registries, and apply the
updates to the server at OLLAMA_HOST one model at a time, each with the gap-free swap.

Exit codes as `dnf check-update`: 0 every model current, 100 an update is available (with
`--check`), 1 a check or an update failed, 2 a bad configuration (cli.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ollama_preloader.config.modelspec import ModelSpec, SpecError, parse_entry
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import ConfigError, OllamaAPIError
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.ollama.registry import RegistryClient, blob_checker, short, store_dir
from ollama_preloader.reconcile.update_check import check_model
from ollama_preloader.reconcile.updating import (
    SwapFailed,
    SwapLock,
    fits_beside,
    remove_leftover_holds,
    swap,
)
from ollama_preloader.state.board import Board, ModelStatus
from ollama_preloader.state.updates import UpdateState

EXIT_UPDATE_AVAILABLE = 100
LOCK_WAIT = 600.0  # seconds to wait for a swap of the running supervisor to end


def select(settings: Settings, names: Sequence[str]) -> list[ModelSpec]:
    """The declared models, or the ones named (declared or not); ConfigError for a bad name."""
    if not names:
        if not settings.models:
            raise ConfigError(
                "no models to update: declare them in OLLAMA_PRELOAD_MODELS (or "
                "PRELOADER_MODELS_FILE), or name them: `ollama-preloader update MODEL`"
            )
        return list(settings.models)
    declared = {spec.key: spec for spec in settings.models}
    out = []
    for index, name in enumerate(names):
        try:
            spec = parse_entry(name, index)
        except SpecError as exc:
            raise ConfigError(f"model {name!r}: {exc.problem}") from None
        out.append(declared.get(spec.key, spec))
    return out


def _row(status: ModelStatus) -> dict[str, Any]:
    return {"model": status.spec.display, "local_digest": status.digest, **status.update.as_dict()}


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = ("MODEL", "LOCAL", "REGISTRY", "DOWNLOAD", "STATE")
    lines = [header]
    for row in rows:
        size = row["download_bytes"]
        state = row["state"] + (f": {row['reason']}" if row["reason"] else "")
        lines.append(
            (
                row["model"],
                short(row["local_digest"]),
                short(row["registry_digest"]),
                "-" if size is None else human_bytes(size),
                state,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True)]
        print("  ".join([*cells, line[4]]).rstrip(), flush=True)


async def run_update(
    settings: Settings, names: Sequence[str], *, check_only: bool, as_json: bool
) -> int:
    board = Board.for_specs(select(settings, names))
    api = OllamaAPI(settings.ollama_host.base_url, call_timeout=settings.api_timeout)
    registry = RegistryClient()
    try:
        try:
            tags = {m.key: m for m in await api.tags()}
        except OllamaAPIError as exc:
            print(f"ollama-preloader: error: cannot read the models of Ollama: {exc}", flush=True)
            return 1
        for status in board.models:
            local = tags.get(status.key)
            status.present, status.digest = local is not None, local.digest if local else None
        store = store_dir(os.environ)
        have = blob_checker(store)
        for status in board.models:
            if await check_model(registry, status, have) is None and not status.present:
                status.update.reason = "not on disk"
        if not check_only:
            await _apply(settings, api, board, store)
        rows = [_row(s) for s in board.models]
        if as_json:
            print(json.dumps({"models": rows}, indent=2), flush=True)
        else:
            _print_table(rows)
        states = {s.update.state for s in board.models}
        if UpdateState.FAILED in states:
            return 1
        if UpdateState.AVAILABLE in states:
            return EXIT_UPDATE_AVAILABLE
        return 0
    finally:
        await registry.aclose()
        await api.aclose()


async def _apply(settings: Settings, api: OllamaAPI, board: Board, store: Path | None) -> None:
    """Each available update in turn, under the swap lock the supervisor takes too."""
    lock = SwapLock(settings.state_dir, settings.ollama_host.base_url)
    await remove_leftover_holds(api, lock)
    for status in board.models:
        if status.update.state != UpdateState.AVAILABLE:
            continue
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            with lock.held() as mine:
                if mine:
                    await _apply_one(api, status, store)
                    break
            if time.monotonic() > deadline:
                status.update.state = UpdateState.FAILED
                status.update.reason = f"another swap (pid {lock.holder()}) did not end"
                break
            await asyncio.sleep(0.5)


async def _apply_one(api: OllamaAPI, status: ModelStatus, store: Path | None) -> None:
    loopback = api.base_url.split("//", 1)[-1].startswith(("127.", "localhost", "[::1]"))

    async def fits(size: int) -> bool | None:
        return await fits_beside(os.environ, [], size) if loopback else None

    try:
        result = await swap(
            api,
            status,
            download_bytes=status.update.download_bytes or 0,
            store=store,
            fits_beside=fits,
        )
    except (SwapFailed, OllamaAPIError) as exc:
        status.update.state, status.update.reason = UpdateState.FAILED, str(exc)
        return
    status.update.state = UpdateState.CURRENT
    status.update.reason = "updated" + (
        " (old copy unloaded first)" if result.unloaded_first else ""
    )
    status.update.download_bytes = 0
