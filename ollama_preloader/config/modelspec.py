"""OLLAMA_PRELOAD_MODELS entries: `name?key=value&key=value`, the syntax of Ollama PR #13342."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ollama_preloader.config.durations import parse_seconds_or_duration
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.ollama.names import InvalidName, ModelName

ENV_MODELS = "OLLAMA_PRELOAD_MODELS"
ENV_MODELS_FILE = "PRELOADER_MODELS_FILE"


# Runner options: the ones Ollama compares to decide a reload (api.Runner), so sending them is a
# promise that clients send the same values (see README, "per-model options").
_INT_OPTIONS = {"num_ctx": 1, "num_batch": 1, "num_gpu": -1, "num_thread": 0, "main_gpu": 0}
_BOOL_OPTIONS = {"use_mmap"}
_SAMPLING = {"temperature", "top_k", "top_p", "min_p", "seed", "num_predict", "repeat_penalty"}
ALLOWED_KEYS = ("keep_alive", "kind", "insecure", *_INT_OPTIONS, *_BOOL_OPTIONS)


class SpecError(ValueError):
    """A bad entry; the message names the entry and what to do.

    `problem` is the message without the `OLLAMA_PRELOAD_MODELS entry '...': ` prefix, for
    sources that name the entry their own way (a models file names its line).
    """

    def __init__(self, entry: str, problem: str) -> None:
        super().__init__(f"{ENV_MODELS} entry {entry!r}: {problem}")
        self.entry = entry
        self.problem = problem


@dataclass(frozen=True)
class ModelSpec:
    """One declared model, in priority order (0 is the most important)."""

    name: str
    ref: ModelName
    priority: int = 0
    keep_alive: float = -1.0
    options: tuple[tuple[str, int | bool], ...] = ()
    kind: ModelKind | None = None
    # Ollama's pull flag: talk to this entry's registry over plain HTTP. A pull setting, never
    # a load option.
    insecure: bool = False
    entry: str = field(default="", compare=False)
    # Where the entry was written: a models file and its line, or None for the variable. Only
    # for messages, so that a fix names the place the user edits.
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def source(self) -> str:
        """Where this entry is: `OLLAMA_PRELOAD_MODELS` or `PRELOADER_MODELS_FILE=path (line N)`."""
        if self.file is None:
            return ENV_MODELS
        return f"{ENV_MODELS_FILE}={self.file} (line {self.line})"

    @property
    def list_source(self) -> str:
        """Where the whole list is: `OLLAMA_PRELOAD_MODELS` or `PRELOADER_MODELS_FILE=path`."""
        return ENV_MODELS if self.file is None else f"{ENV_MODELS_FILE}={self.file}"

    @property
    def display(self) -> str:
        return self.ref.display()

    @property
    def key(self) -> str:
        return self.ref.key()

    @property
    def pinned(self) -> bool:
        """Negative keep_alive: keep it loaded forever and put it back when it goes."""
        return self.keep_alive < 0

    @property
    def keep_alive_value(self) -> int | float:
        """What to send as `keep_alive`: the number -1 for forever (the string "-1" is a 400)."""
        if self.keep_alive < 0:
            return -1
        return int(self.keep_alive) if self.keep_alive.is_integer() else self.keep_alive

    def options_dict(self) -> dict[str, int | bool]:
        return dict(self.options)


def _split_list(raw: str) -> list[str]:
    text = raw.strip().strip("\"'").strip()
    return [item.strip().strip("\"'").strip() for item in text.split(",")] if text else []


def _parse_int(entry: str, key: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SpecError(entry, f"{key}={value!r} is not a whole number") from None
    if number < minimum:
        raise SpecError(entry, f"{key} must be at least {minimum}")
    return number


def _parse_bool(entry: str, key: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise SpecError(entry, f"{key} must be true or false")
    return value.lower() in ("true", "1")


@dataclass
class _Params:
    keep_alive: float = -1.0
    options: dict[str, int | bool] = field(default_factory=dict)
    kind: ModelKind | None = None
    insecure: bool = False


def _parse_params(entry: str, query: str) -> _Params:
    params = _Params()
    seen: set[str] = set()
    for pair in query.split("&"):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if key == "keepalive":  # PR #13342 spells it without the underscore
            key = "keep_alive"
        if not eq or not value:
            raise SpecError(entry, f"{key!r} needs a value (key=value)")
        if key in seen:
            raise SpecError(entry, f"{key} is given twice")
        seen.add(key)
        if key == "keep_alive":
            try:
                params.keep_alive = parse_seconds_or_duration(value)
            except ValueError:
                raise SpecError(
                    entry,
                    f"keep_alive={value!r} is not a duration (use -1 for forever, seconds like "
                    "3600, or 30m, 24h)",
                ) from None
            if params.keep_alive == 0:
                raise SpecError(
                    entry,
                    "keep_alive=0 would unload the model at once; use -1 to keep it loaded or "
                    "remove the entry",
                )
        elif key == "kind":
            try:
                params.kind = ModelKind(value.lower())
            except ValueError:
                raise SpecError(entry, f"kind={value!r} must be completion or embedding") from None
        elif key == "insecure":
            params.insecure = _parse_bool(entry, key, value)
        elif key in _INT_OPTIONS:
            params.options[key] = _parse_int(entry, key, value, _INT_OPTIONS[key])
        elif key in _BOOL_OPTIONS:
            params.options[key] = _parse_bool(entry, key, value)
        elif key in _SAMPLING:
            raise SpecError(
                entry,
                f"{key} is a sampling option and has no effect on loading; set it in your "
                "client or a Modelfile",
            )
        else:
            raise SpecError(
                entry, f"unknown parameter {key!r} (allowed: {', '.join(ALLOWED_KEYS)})"
            )
    return params


def parse_entry(entry: str, priority: int) -> ModelSpec:
    """One list entry to a ModelSpec; SpecError names the entry when it is wrong."""
    name, _, query = entry.partition("?")
    name = name.strip()
    if not name:
        raise SpecError(entry, "the model name is missing")
    try:
        ref = ModelName.parse(name)
    except InvalidName as exc:
        raise SpecError(entry, str(exc)) from None
    if ref.is_cloud:
        raise SpecError(
            entry,
            "cloud models run on ollama.com and cannot be preloaded; remove it from the list",
        )
    params = _parse_params(entry, query)
    return ModelSpec(
        name=name,
        ref=ref,
        priority=priority,
        keep_alive=params.keep_alive,
        options=tuple(sorted(params.options.items())),
        kind=params.kind,
        insecure=params.insecure,
        entry=entry,
    )


@dataclass(frozen=True)
class ParsedList:
    specs: tuple[ModelSpec, ...]
    warnings: tuple[str, ...]


def parse_model_list(raw: str | None) -> ParsedList:
    """The whole list, in priority order; duplicates collapse to the first, with a warning."""
    specs: list[ModelSpec] = []
    warnings: list[str] = []
    by_key: Mapping[str, ModelSpec] = {}
    for entry in _split_list(raw or ""):
        if not entry:
            warnings.append(f"{ENV_MODELS} has an empty entry (two commas in a row); ignored")
            continue
        spec = parse_entry(entry, priority=len(specs))
        first = by_key.get(spec.key)
        if first is not None:
            warnings.append(
                f"{ENV_MODELS}: {entry!r} is the same model as {first.entry!r}; "
                f"keeping the first ({first.display})"
            )
            continue
        by_key = {**by_key, spec.key: spec}
        specs.append(spec)
    return ParsedList(tuple(specs), tuple(warnings))
