"""The models file (PRELOADER_MODELS_FILE): one OLLAMA_PRELOAD_MODELS entry per line.

Format: one entry per line in the `name?key=value&...` syntax; order is priority (the first line
is the most important); blank lines are ignored; `#` starts a comment, either a whole line or
after an entry (`llama3.2   # chat`), when it is at the start of the line or after whitespace.
No valid entry contains a `#`, so a trailing comment can never cut one short; a `#` glued to an
entry (`llama3.2#chat`) stays part of it and is refused as a bad name instead of dropped. No
quotes and no commas: a line with a comma is refused, so a pasted comma-separated list is not
read as one bad name. Duplicates collapse to the first, with a warning, as in the variable.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ollama_preloader.config.modelspec import (
    ENV_MODELS_FILE,
    ModelSpec,
    ParsedList,
    SpecError,
    parse_entry,
)
from ollama_preloader.errors import ConfigError

__all__ = [
    "ENV_MODELS_FILE",
    "ModelsFileError",
    "empty_list",
    "entry_of",
    "load_models_file",
    "parse_models_file",
    "read_models_file",
]

# The file is re-read every half second: a path pointing at something huge by mistake (a
# model blob) must not be read whole each time. A real list is a few hundred bytes.
MAX_BYTES = 1024 * 1024

_COMMENT = re.compile(r"(?:^|\s)#.*$")


def empty_list(models_file: Path | None) -> str:
    """How to say that no model is declared, naming where the list was looked for."""
    if models_file is None:
        return "OLLAMA_PRELOAD_MODELS is empty"
    return f"{ENV_MODELS_FILE}={models_file} lists no model"


class ModelsFileError(ConfigError):
    """The models file cannot be read or has a bad line; the message names the file and line.

    A ConfigError, so at start it exits 2 like any bad configuration; after a live edit the
    supervisor reports it and keeps the set in force.
    """

    def __init__(self, path: Path, problem: str, line: int | None = None) -> None:
        where = f"{ENV_MODELS_FILE}={path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


def read_models_file(path: Path) -> bytes:
    """The file's bytes (following symlinks, as a ConfigMap's `..data` link needs)."""
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ModelsFileError(
            path,
            "no such file; create it with one model per line, or set "
            f"{ENV_MODELS_FILE} to the file that holds the list",
        ) from None
    except IsADirectoryError:
        raise ModelsFileError(
            path,
            f"is a directory; set {ENV_MODELS_FILE} to the file inside it (a mounted "
            "ConfigMap holds one file per key, e.g. models.txt)",
        ) from None
    except PermissionError:
        raise ModelsFileError(
            path, "permission denied; make it readable by the user the supervisor runs as"
        ) from None
    except OSError as exc:
        raise ModelsFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(content) > MAX_BYTES:
        raise ModelsFileError(
            path,
            f"is larger than {MAX_BYTES // 1024} KiB, so it is not a model list; set "
            f"{ENV_MODELS_FILE} to the file with one model per line",
        )
    return content


def _text(content: bytes, path: Path) -> str:
    try:
        # utf-8-sig: an editor's byte-order mark is not part of the first model's name.
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ModelsFileError(path, "is not UTF-8 text", line) from None


def entry_of(line: str) -> str:
    """The entry a line holds, without its comment and surrounding whitespace ('' if none)."""
    return _COMMENT.sub("", line).strip()


def parse_models_file(content: bytes, path: Path) -> ParsedList:
    """The file's entries in priority order; ModelsFileError names the first bad line."""
    specs: list[ModelSpec] = []
    declared: dict[str, tuple[ModelSpec, int]] = {}  # model key -> first entry and its line
    warnings: list[str] = []
    for number, raw in enumerate(_text(content, path).splitlines(), start=1):
        entry = entry_of(raw)
        if not entry:
            continue
        if "," in entry:
            raise ModelsFileError(
                path,
                f"{entry!r}: one entry per line; put each model of this comma-separated list "
                "on a line of its own",
                number,
            )
        try:
            spec = parse_entry(entry, priority=len(specs))
        except SpecError as exc:
            raise ModelsFileError(path, f"entry {exc.entry!r}: {exc.problem}", number) from None
        if spec.key in declared:
            kept, line = declared[spec.key]
            warnings.append(
                f"{ENV_MODELS_FILE}={path}, line {number}: {entry!r} is the same model as "
                f"{kept.entry!r} (line {line}); keeping the first ({kept.display})"
            )
            continue
        spec = dataclasses.replace(spec, file=str(path), line=number)  # for the messages
        declared[spec.key] = (spec, number)
        specs.append(spec)
    return ParsedList(tuple(specs), tuple(warnings))


def load_models_file(path: Path) -> ParsedList:
    """Read and parse: ModelsFileError when the file is missing, unreadable or has a bad line."""
    return parse_models_file(read_models_file(path), path)
