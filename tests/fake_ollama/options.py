"""Request options as the scheduler reads them: type-checked like api.Options.FromMap, and the
runner options that decide a reload (§7.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_INT_OPTS = {
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "mirostat",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "draft_num_predict",
}
_FLOAT_OPTS = {
    "min_p",
    "typical_p",
    "repeat_penalty",
    "temperature",
    "presence_penalty",
    "frequency_penalty",
    "top_p",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
}
_BOOL_OPTS = {
    "numa",
    "use_mmap",
    "use_mlock",
    "low_vram",
    "f16_kv",
    "vocab_only",
    "penalize_newline",
}
RUNNER_FIELDS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")


class SchedError(Exception):
    """An error that becomes an HTTP response: status and `error` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _check_option(key: str, val: object) -> Any:
    if key in _INT_OPTS:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise SchedError(500, f'option "{key}" must be of type integer')
        return int(val)
    if key in _FLOAT_OPTS:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise SchedError(500, f'option "{key}" must be of type float')
        return float(val)
    if key in _BOOL_OPTS:
        if not isinstance(val, bool):
            raise SchedError(500, f'option "{key}" must be of type boolean')
        return val
    if key == "stop":
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise SchedError(500, f'option "{key}" must be of type array of strings')
        return val
    return val


def merge_options(model_params: dict[str, Any], request: dict[str, Any] | None) -> dict[str, Any]:
    """Modelfile PARAMETERs then request options, type-checked like api.Options.FromMap."""
    merged: dict[str, Any] = {}
    for src in (model_params, request or {}):
        for k, v in src.items():
            if v is None:
                continue
            merged[k] = _check_option(k, v)
    return merged


@dataclass(frozen=True)
class RunnerOptions:
    """api.Runner options compared by needsReload (None = automatic/default)."""

    num_ctx: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    use_mmap: bool | None = None
    num_thread: int | None = None

    @classmethod
    def from_options(cls, opts: dict[str, Any], training_ctx: int) -> RunnerOptions:
        """Extract and normalise (num_ctx clamped to the training context)."""
        num_ctx = opts.get("num_ctx")
        if num_ctx is not None:
            num_ctx = min(int(num_ctx), training_ctx) if int(num_ctx) > 0 else None
        num_batch = opts.get("num_batch")
        if num_batch is not None and int(num_batch) <= 0:
            num_batch = None
        return cls(
            num_ctx=num_ctx,
            num_batch=num_batch,
            num_gpu=opts.get("num_gpu"),
            main_gpu=opts.get("main_gpu"),
            use_mmap=opts.get("use_mmap"),
            num_thread=opts.get("num_thread"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {f: getattr(self, f) for f in RUNNER_FIELDS}
