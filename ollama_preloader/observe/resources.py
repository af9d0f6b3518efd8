"""Memory figures (system, GPU, Ollama's own report) and the estimate of whether the models fit.

`assess` is pure; the readers around it only gather figures and never fail the supervisor: a
figure that cannot be read is left out of the estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MIB = 1024 * 1024
NVIDIA_SMI_QUERY = (
    "--query-gpu=memory.total,memory.used",
    "--format=csv,noheader,nounits",
)
NVIDIA_SMI_TIMEOUT = 10.0  # a wedged driver can hang nvidia-smi; the estimate is not worth more

Scope = Literal["total", "gpu"]


@dataclass(frozen=True)
class SystemMemory:
    total: int
    available: int
    source: str  # "/proc/meminfo", or "cgroup" when a container limit is lower


@dataclass(frozen=True)
class GpuMemory:
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class MemoryFigures:
    """What the machine offers Ollama, as far as we can tell."""

    system: SystemMemory | None = None
    gpus: tuple[GpuMemory, ...] = ()
    gpu_source: str | None = None  # "nvidia-smi" or "ollama" (its `inference compute` lines)


@dataclass(frozen=True)
class ModelSize:
    """A declared model and its size on disk from /api/tags (None until it is pulled)."""

    name: str
    size: int | None
    digest: str = ""


@dataclass(frozen=True)
class Finding:
    """One warning: the declared set does not fit in `scope`."""

    scope: Scope
    models: tuple[str, ...]  # every model counted, in priority order
    sizes: tuple[int, ...]  # their sizes on disk
    over: tuple[str, ...]  # in priority order, the first that no longer fit and those after
    unknown: tuple[str, ...]  # not counted: not pulled yet
    needed: int
    available: int
    figures: MemoryFigures = field(compare=False)
    held: int = 0  # part of `available` that loaded models hold now

    @property
    def message(self) -> str:
        sizes = ", ".join(f"{n} {gb(s)}" for n, s in zip(self.models, self.sizes, strict=True))
        need = f"at least {gb(self.needed)} ({sizes}; file sizes, the KV cache comes on top)"
        where = describe_figures(self.figures)
        if self.held:
            where += f"; plus {gb(self.held)} that loaded models hold"
        if self.scope == "total":
            text = (
                f"Estimate: the declared models cannot all stay loaded: they need {need}, and "
                f"Ollama can use about {gb(self.available)} ({where}). "
                f"{self._who_does_not_fit()}; expect evictions and reloads. Declare fewer or "
                "smaller models"
            )
        else:
            text = (
                f"Estimate: the declared models do not all fit in GPU memory: they need {need}, "
                f"and the GPUs have about {gb(self.available)} ({where}). "
                f"{self._who_does_not_fit()} there: Ollama will run part of the models on the "
                "CPU, which is much slower"
            )
        if self.unknown:
            text += f" (not counted until pulled: {', '.join(self.unknown)})"
        return text

    def _who_does_not_fit(self) -> str:
        fitting = self.models[: len(self.models) - len(self.over)]
        if not fitting:
            return f"Even {self.over[0]} alone does not fit"
        return f"{_join(self.over)} will not fit next to {_join(fitting)}"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def gb(n: int) -> str:
    """Decimal gigabytes with one decimal, as `ollama ps` and `ollama list` print sizes."""
    return f"{n / 1e9:.1f} GB"


def describe_figures(figures: MemoryFigures) -> str:
    parts = []
    if figures.system is not None:
        sys_mem = figures.system
        parts.append(
            f"system memory {gb(sys_mem.available)} available of {gb(sys_mem.total)}, "
            f"from {sys_mem.source}"
        )
    if figures.gpus:
        free = sum(g.free for g in figures.gpus)
        total = sum(g.total for g in figures.gpus)
        count = f"{len(figures.gpus)} GPUs" if len(figures.gpus) > 1 else "GPU"
        parts.append(f"{count} {gb(free)} free of {gb(total)}, from {figures.gpu_source}")
    return "; ".join(parts) or "no memory figures"


def assess(
    models: Sequence[ModelSize],
    figures: MemoryFigures,
    *,
    held_system: int = 0,
    held_gpu: int = 0,
) -> list[Finding]:
    """Do the declared models (in priority order) fit in the memory Ollama can use?

    Memory Ollama's runners already hold (`held_*`, from /api/ps) counts as available: the
    scheduler can reuse it, and our own loaded models are in it. A model's file size is a lower
    bound of what its runner needs, so a set that does not fit by file size clearly cannot fit.
    """
    counted: list[ModelSize] = []
    digests: set[str] = set()
    unknown: list[str] = []
    for model in models:
        if model.size is None:
            unknown.append(model.name)
        elif not model.digest or model.digest not in digests:
            # Two names for one blob share one runner (ollama-behaviour.md §9.3): count it once.
            digests.add(model.digest)
            counted.append(model)
    needed = sum(m.size or 0 for m in counted)
    if not counted:
        return []
    names = tuple(m.name for m in counted)
    sizes = tuple(m.size or 0 for m in counted)
    gpu_free = sum(g.free for g in figures.gpus) + held_gpu if figures.gpus else None
    if figures.system is not None:
        capacity = figures.system.available + held_system + (gpu_free or 0)
        if needed > capacity:
            return [
                Finding(
                    "total",
                    names,
                    sizes,
                    _over(counted, capacity),
                    tuple(unknown),
                    needed,
                    capacity,
                    figures,
                    held_system + held_gpu,
                )
            ]
    if gpu_free is not None and needed > gpu_free:
        return [
            Finding(
                "gpu",
                names,
                sizes,
                _over(counted, gpu_free),
                tuple(unknown),
                needed,
                gpu_free,
                figures,
                held_gpu,
            )
        ]
    return []


def _over(models: Sequence[ModelSize], capacity: int) -> tuple[str, ...]:
    """The models, in priority order, from the first whose cumulative size exceeds capacity."""
    total = 0
    for i, model in enumerate(models):
        total += model.size or 0
        if total > capacity:
            return tuple(m.name for m in models[i:])
    return ()


def held_by_runners(loaded: Sequence[tuple[int, int]], *, has_gpus: bool) -> tuple[int, int]:
    """(system, gpu) bytes held by loaded runners, from /api/ps `(size, size_vram)` pairs."""
    if not has_gpus:
        # Without a GPU `size_vram` is meaningless (it can even equal `size`): all is RAM.
        return sum(size for size, _ in loaded), 0
    gpu = sum(min(vram, size) for size, vram in loaded)
    return sum(size for size, _ in loaded) - gpu, gpu


# ----- readers ------------------------------------------------------------------------------


def parse_meminfo(text: str) -> tuple[int, int] | None:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo, or None if they are missing."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached") and fields:
            with contextlib.suppress(ValueError):
                values[key] = int(fields[0]) * 1024
    if "MemTotal" not in values:
        return None
    available = values.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = sum(values.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    return values["MemTotal"], available


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # absent, or "max" (no limit)


def read_system_memory(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> SystemMemory | None:
    """System memory, lowered to the container's cgroup v2 limit as Ollama does."""
    try:
        parsed = parse_meminfo(meminfo.read_text())
    except OSError:
        return None
    if parsed is None:
        return None
    total, available = parsed
    source = str(meminfo)
    limit = _read_int(cgroup / "memory.max")
    if limit is not None and limit < total:
        current = _read_int(cgroup / "memory.current") or 0
        total, available, source = limit, max(0, min(available, limit - current)), "cgroup"
    return SystemMemory(total=total, available=available, source=source)


def parse_nvidia_smi(text: str) -> tuple[GpuMemory, ...]:
    """`total, used` per line in MiB (`--format=csv,noheader,nounits`); odd lines are skipped."""
    gpus: list[GpuMemory] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            total, used = (int(float(p)) * MIB for p in parts)
        except ValueError:
            continue  # "[N/A]" (MIG, some virtual GPUs)
        gpus.append(GpuMemory(name=f"GPU{len(gpus)}", total=total, free=max(0, total - used)))
    return tuple(gpus)


async def query_nvidia_smi(search_path: str | None) -> tuple[GpuMemory, ...] | None:
    """GPU memory from `nvidia-smi`, or None when it is absent or fails (it is never required)."""
    exe = shutil.which("nvidia-smi", path=search_path)
    if exe is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            *NVIDIA_SMI_QUERY,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(NVIDIA_SMI_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    if proc.returncode != 0:
        return None
    return parse_nvidia_smi(out.decode(errors="replace")) or None


def cuda_hidden(env: Mapping[str, str]) -> bool:
    """CUDA_VISIBLE_DEVICES hides every NVIDIA GPU (empty, or starting with an invalid id)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return False
    first = value.split(",")[0].strip()
    return first == "" or first.startswith("-")


# slog's text handler: key=value, or key="value with \"escapes\"".
_SLOG_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
# Ollama prints these with format.HumanBytes2 (GiB); accept decimal units (GB) as well.
_HUMAN_BYTES = re.compile(r"^([\d.]+)\s*([KMGT]i?B|B)$")
_UNITS = {"B": 1} | {
    f"{p}{i}B": (1024 if i else 1000) ** (n + 1) for n, p in enumerate("KMGT") for i in ("", "i")
}


def _human_bytes(text: str) -> int | None:
    match = _HUMAN_BYTES.match(text.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class ComputeReport:
    """What Ollama's `inference compute` lines say it will run on."""

    cpu_only: bool
    gpus: tuple[GpuMemory, ...]


def parse_inference_compute(lines: Sequence[str]) -> ComputeReport | None:
    """Ollama logs one `inference compute` line per device at start (`id=cpu` when none)."""
    devices: list[dict[str, str]] = []
    for line in lines:
        if 'msg="inference compute"' not in line:
            continue
        pairs = {k: v.strip('"').replace('\\"', '"') for k, v in _SLOG_PAIR.findall(line)}
        devices.append(pairs)
    if not devices:
        return None
    if all(d.get("library", "").lower() == "cpu" or d.get("id") == "cpu" for d in devices):
        return ComputeReport(cpu_only=True, gpus=())
    gpus: list[GpuMemory] = []
    for d in devices:
        if d.get("type") == "iGPU":
            continue  # its memory is system memory, already counted
        total, free = _human_bytes(d.get("total", "")), _human_bytes(d.get("available", ""))
        if total is None or free is None:
            continue
        name = d.get("description") or d.get("name") or d.get("id") or f"GPU{len(gpus)}"
        gpus.append(GpuMemory(name=name, total=total, free=free))
    return ComputeReport(cpu_only=False, gpus=tuple(gpus))


async def gather_figures(env: Mapping[str, str], compute_lines: Sequence[str]) -> MemoryFigures:
    """System memory, plus GPU memory from nvidia-smi or else from Ollama's own report.

    No GPU figure when Ollama reported CPU-only inference; nvidia-smi is not asked when the
    child's environment hides the NVIDIA GPUs (the cpu profile does): they are not Ollama's.
    """
    system = read_system_memory()
    report = parse_inference_compute(compute_lines)
    if report is not None and report.cpu_only:
        return MemoryFigures(system=system)
    if not cuda_hidden(env):
        smi = await query_nvidia_smi(env.get("PATH"))
        if smi:
            return MemoryFigures(system=system, gpus=smi, gpu_source="nvidia-smi")
    if report is not None and report.gpus:
        return MemoryFigures(system=system, gpus=report.gpus, gpu_source="ollama")
    return MemoryFigures(system=system)
