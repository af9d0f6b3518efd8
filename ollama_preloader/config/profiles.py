"""Performance profiles: defaults for `ollama serve`'s own variables, never the user's.

A profile acts only on the child's environment. Runner options (`num_thread`, `num_gpu`,
`num_ctx`, ...) sent with a load would make every client request without them reload the model
(ollama-behaviour.md §7.4), so no profile ever adds one to a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Profile = Literal["auto", "cpu", "vm", "gpu"]
Quantization = Literal["none", "q8_0", "q4_0"]

# Ollama's documented way to force CPU is an invalid device id ("-1") in the vendor's visibility
# variable (docs/gpu.mdx). Vulkan is switched off with Ollama's own OLLAMA_VULKAN instead: ggml
# parses GGML_VK_VISIBLE_DEVICES as unsigned indices and rejects an out-of-range one.
_CPU_ONLY = {
    "CUDA_VISIBLE_DEVICES": "-1",
    "HIP_VISIBLE_DEVICES": "-1",
    "ROCR_VISIBLE_DEVICES": "-1",
    "OLLAMA_VULKAN": "0",
}

PROFILES: Mapping[Profile, Mapping[str, str]] = {
    "auto": {},
    "cpu": _CPU_ONLY,
    # "INT8, balanced": a q8_0 KV cache takes half the memory of f16; llama.cpp needs flash
    # attention to quantize the V cache.
    "vm": {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"},
    "gpu": {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "f16"},
}

# The other preloading guide's PERFORMANCE_PROFILE values, accepted so its users can keep them.
PROFILE_ALIASES: Mapping[str, Profile] = {
    "cpu_optimized": "cpu",
    "vm_optimized": "vm",
    "gpu_accelerated": "gpu",
}

# PRELOADER_QUANTIZATION -> OLLAMA_KV_CACHE_TYPE ("none" is full precision, Ollama's f16).
KV_CACHE_TYPES: Mapping[Quantization, str] = {"none": "f16", "q8_0": "q8_0", "q4_0": "q4_0"}


@dataclass(frozen=True)
class ProfileResult:
    """The child's environment after the profile, and what the profile did to it."""

    profile: Profile
    quantization: Quantization | None
    env: dict[str, str]
    # The profile's variables with the value the child gets (ours or the user's).
    effective: dict[str, str] = field(default_factory=dict)
    # Variables the profile would have set but the user already had; their value was kept.
    kept: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.effective:
            return f"Profile {self.profile}: Ollama's own defaults (no server variable changed)"
        values = " ".join(f"{k}={v}" for k, v in self.effective.items())
        text = f"Profile {self.profile}"
        if self.quantization is not None:
            text += f", quantization {self.quantization}"
        text += f": ollama serve runs with {values}"
        if self.kept:
            text += f" (kept your {', '.join(self.kept)})"
        return text


def profile_variables(profile: Profile, quantization: Quantization | None) -> dict[str, str]:
    """The server variables a profile (and an optional KV-cache quantization) asks for."""
    wanted = dict(PROFILES[profile])
    if quantization is not None:
        wanted["OLLAMA_KV_CACHE_TYPE"] = KV_CACHE_TYPES[quantization]
        if quantization != "none":
            wanted.setdefault("OLLAMA_FLASH_ATTENTION", "1")
    return wanted


def apply_profile(
    env: Mapping[str, str], profile: Profile, quantization: Quantization | None = None
) -> ProfileResult:
    """Add the profile's variables to `env` wherever the user has not set them.

    A variable counts as set when it is present at all: an empty CUDA_VISIBLE_DEVICES already
    means "no GPU" to the CUDA runtime, so even an empty value is the user's choice.
    """
    out = dict(env)
    effective: dict[str, str] = {}
    kept: list[str] = []
    for name, value in profile_variables(profile, quantization).items():
        if name in env:
            kept.append(name)
        else:
            out[name] = value
        effective[name] = out[name]
    return ProfileResult(
        profile=profile,
        quantization=quantization,
        env=out,
        effective=effective,
        kept=tuple(kept),
    )
