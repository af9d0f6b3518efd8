"""The fit estimate and the parsers of the memory figures it is built from."""

from pathlib import Path

import pytest

from ollama_preloader.observe.resources import (
    NVIDIA_SMI_QUERY,
    GpuMemory,
    MemoryFigures,
    ModelSize,
    SystemMemory,
    assess,
    cuda_hidden,
    gather_figures,
    held_by_runners,
    parse_inference_compute,
    parse_meminfo,
    parse_nvidia_smi,
    read_system_memory,
)

GB = 1_000_000_000
MIB = 1024 * 1024


def ram(available: float, total: float = 64) -> SystemMemory:
    return SystemMemory(total=int(total * GB), available=int(available * GB), source="test")


def gpu(free: float, total: float = 24) -> GpuMemory:
    return GpuMemory(name="GPU0", total=int(total * GB), free=int(free * GB))


MODELS = [
    ModelSize("qwen3-coder:30b", int(18.6 * GB), "a"),
    ModelSize("devstral:latest", int(14.3 * GB), "b"),
    ModelSize("nomic-embed-text:latest", int(0.27 * GB), "c"),
]


def test_a_set_that_fits_gives_no_warning() -> None:
    """33 GB of models in 40 GB of free RAM: nothing to say."""
    assert assess(MODELS, MemoryFigures(system=ram(40))) == []


def test_oversized_set_names_models_and_figures() -> None:
    """33 GB of models in 16 GB RAM + 8 GB VRAM: one total warning naming models and figures."""
    figures = MemoryFigures(system=ram(16, 32), gpus=(gpu(8, 12),), gpu_source="nvidia-smi")
    [finding] = assess(MODELS, figures)
    assert finding.scope == "total"
    assert finding.needed == sum(m.size or 0 for m in MODELS)
    assert finding.available == 24 * GB
    # In priority order, qwen3-coder fits; devstral is the first that does not.
    assert finding.over == ("devstral:latest", "nomic-embed-text:latest")
    text = finding.message
    assert text.startswith("Estimate:")
    for fragment in (
        "qwen3-coder:30b 18.6 GB",
        "devstral:latest 14.3 GB",
        "at least 33.2 GB",
        "about 24.0 GB",
        "system memory 16.0 GB available of 32.0 GB",
        "GPU 8.0 GB free of 12.0 GB, from nvidia-smi",
    ):
        assert fragment in text


def test_fits_in_ram_but_not_in_vram() -> None:
    """With enough RAM but too little VRAM the warning says part runs on the CPU."""
    figures = MemoryFigures(system=ram(60), gpus=(gpu(20),), gpu_source="nvidia-smi")
    [finding] = assess(MODELS, figures)
    assert finding.scope == "gpu"
    assert finding.over == ("devstral:latest", "nomic-embed-text:latest")
    assert "CPU" in finding.message


def test_memory_held_by_runners_counts_as_available() -> None:
    """Our own loaded models hold memory the estimate must not count against them."""
    figures = MemoryFigures(system=ram(5))
    assert assess(MODELS, figures)
    held, _ = held_by_runners([(int(19 * GB), 0), (int(15 * GB), 0)], has_gpus=False)
    assert assess(MODELS, figures, held_system=held) == []
    [partly] = assess(MODELS, figures, held_system=10 * GB)
    assert partly.available == 15 * GB
    assert "plus 10.0 GB that loaded models hold" in partly.message


def test_unpulled_models_are_listed_not_counted() -> None:
    """A model without a size yet is named as not counted; with no sizes at all, no verdict."""
    models = [*MODELS, ModelSize("llama3.2:latest", None)]
    [finding] = assess(models, MemoryFigures(system=ram(10)))
    assert finding.unknown == ("llama3.2:latest",)
    assert "not counted until pulled: llama3.2:latest" in finding.message
    assert assess([ModelSize("x", None)], MemoryFigures(system=ram(0))) == []


def test_aliases_of_one_model_count_once() -> None:
    """Two names with one manifest digest share one runner (an `ollama cp`)."""
    models = [ModelSize("a", 10 * GB, "d1"), ModelSize("b", 10 * GB, "d1")]
    assert assess(models, MemoryFigures(system=ram(15))) == []


def test_no_figures_no_warning() -> None:
    """Without any memory figure there is nothing to compare against."""
    assert assess(MODELS, MemoryFigures()) == []


def test_held_by_runners_splits_gpu_and_system() -> None:
    """size_vram is GPU memory; the rest is RAM; without GPUs everything is RAM."""
    loaded = [(10 * GB, 6 * GB), (2 * GB, 2 * GB)]
    assert held_by_runners(loaded, has_gpus=True) == (4 * GB, 8 * GB)
    assert held_by_runners(loaded, has_gpus=False) == (12 * GB, 0)


def test_parse_meminfo() -> None:
    """kB values to bytes; MemAvailable preferred, Free+Buffers+Cached on old kernels."""
    text = "MemTotal:       32000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n"
    assert parse_meminfo(text) == (32000000 * 1024, 20000000 * 1024)
    old = "MemTotal: 4000 kB\nMemFree: 1000 kB\nBuffers: 100 kB\nCached: 900 kB\n"
    assert parse_meminfo(old) == (4000 * 1024, 2000 * 1024)
    assert parse_meminfo("garbage") is None


def test_cgroup_limit_lowers_system_memory(tmp_path: Path) -> None:
    """A container's memory.max below the host's RAM is what Ollama can use."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 64000000 kB\nMemAvailable: 60000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    host = read_system_memory(meminfo, cgroup)
    assert host is not None
    assert (host.total, host.source) == (64000000 * 1024, str(meminfo))
    (cgroup / "memory.max").write_text("8000000000\n")
    (cgroup / "memory.current").write_text("3000000000\n")
    limited = read_system_memory(meminfo, cgroup)
    assert limited == SystemMemory(8 * GB, 5 * GB, "cgroup")
    (cgroup / "memory.max").write_text("max\n")
    assert read_system_memory(meminfo, cgroup) == host
    assert read_system_memory(tmp_path / "missing", cgroup) is None


def test_parse_nvidia_smi() -> None:
    """`total, used` MiB per GPU; [N/A] lines are skipped."""
    gpus = parse_nvidia_smi("24564, 1000\n81920, 80000\n[N/A], [N/A]\n\n")
    assert [(g.total, g.free) for g in gpus] == [
        (24564 * MIB, 23564 * MIB),
        (81920 * MIB, 1920 * MIB),
    ]


@pytest.mark.parametrize(
    ("value", "hidden"),
    [(None, False), ("0", False), ("GPU-abc,1", False), ("-1", True), ("", True), (" -1,0", True)],
)
def test_cuda_hidden(value: str | None, hidden: bool) -> None:
    """CUDA shows devices up to the first invalid id: a leading -1 or empty value hides all."""
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert cuda_hidden(env) is hidden


CPU_LINE = (
    'time=2026-08-21T10:00:01.000Z level=INFO source=types.go:60 msg="inference compute" '
    'id=cpu library=cpu compute="" name=cpu description=cpu libdirs=ollama driver="" '
    'pci_id="" type="" total="31.2 GiB" available="28.9 GiB"'
)
GPU_LINE = (
    'time=2026-08-21T10:00:01.000Z level=INFO source=types.go:42 msg="inference compute" '
    "id=GPU-5c2e8f5e library=CUDA compute=8.9 name=CUDA0 "
    'description="NVIDIA GeForce RTX 4090" libdirs=ollama,cuda_v12 driver=12.4 '
    'pci_id=0000:01:00.0 type=discrete total="23.6 GiB" available="22.9 GiB"'
)
IGPU_LINE = GPU_LINE.replace("type=discrete", "type=iGPU")


def test_parse_inference_compute() -> None:
    """Ollama's device lines: CPU-only, a discrete GPU with its memory, iGPUs left out."""
    cpu = parse_inference_compute(["other line", CPU_LINE])
    assert cpu is not None
    assert cpu.cpu_only
    report = parse_inference_compute([GPU_LINE, IGPU_LINE])
    assert report is not None
    assert not report.cpu_only
    [card] = report.gpus
    assert card.name == "NVIDIA GeForce RTX 4090"
    assert card.total == int(23.6 * 1024**3)
    assert card.free == int(22.9 * 1024**3)
    assert parse_inference_compute(['msg="Listening on 127.0.0.1:11434"']) is None
    decimal = parse_inference_compute([GPU_LINE.replace("GiB", "GB")])
    assert decimal is not None
    assert decimal.gpus[0].total == int(23.6 * GB)


def fake_nvidia_smi(directory: Path, body: str) -> str:
    """An `nvidia-smi` script in `directory`; returns a PATH holding only it."""
    exe = directory / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return str(directory)


async def test_gather_uses_nvidia_smi_when_present(tmp_path: Path) -> None:
    """nvidia-smi is asked the documented query; its figures become the GPU memory."""
    expected = " ".join(NVIDIA_SMI_QUERY)
    path = fake_nvidia_smi(
        tmp_path,
        f'[ "$*" = "{expected}" ] || exit 9\necho "24576, 2048"\n',
    )
    figures = await gather_figures({"PATH": path}, [])
    assert figures.gpu_source == "nvidia-smi"
    assert [(g.total, g.free) for g in figures.gpus] == [(24576 * MIB, 22528 * MIB)]


async def test_gather_without_gpus(tmp_path: Path) -> None:
    """A failing or absent nvidia-smi, hidden GPUs, or Ollama saying CPU: no GPU figure."""
    failing = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert (await gather_figures({"PATH": failing}, [])).gpus == ()
    assert (await gather_figures({"PATH": str(tmp_path / "empty")}, [])).gpus == ()
    working = fake_nvidia_smi(tmp_path, 'echo "24576, 2048"\n')
    hidden = {"PATH": working, "CUDA_VISIBLE_DEVICES": "-1"}
    assert (await gather_figures(hidden, [])).gpus == ()
    assert (await gather_figures({"PATH": working}, [CPU_LINE])).gpus == ()
    # Without nvidia-smi, Ollama's own report of its GPUs is used.
    report = await gather_figures({"PATH": str(tmp_path / "empty")}, [GPU_LINE])
    assert report.gpu_source == "ollama"
    assert len(report.gpus) == 1
