"""A small Dockerfile reader: instructions per stage, JSON (exec) forms decoded, flags split."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined, in the stage it belongs to."""

    stage: str
    keyword: str
    args: str

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form RUN/CMD/ENTRYPOINT, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]

    def flags(self) -> dict[str, str]:
        """`--name=value` flags at the start of the arguments (HEALTHCHECK, COPY, ...)."""
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args.split(" CMD ")[0]))


def parse(path: Path) -> list[Instruction]:
    """Every instruction of the Dockerfile, with the name (or index) of its stage."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out: list[Instruction] = []
    stage = "(global)"
    for index, line in enumerate(logical):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match.group(1) if match else str(index)
        out.append(Instruction(stage, keyword, " ".join(args.split())))
    return out


def stage(instructions: list[Instruction], name: str) -> list[Instruction]:
    """The instructions of one stage, its FROM first."""
    return [i for i in instructions if i.stage == name]
