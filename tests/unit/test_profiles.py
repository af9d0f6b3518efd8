"""Profiles: the documented server variables, never over a variable the user set."""

from pathlib import Path

import pytest

from ollama_preloader.config.profiles import Profile, apply_profile, profile_variables
from ollama_preloader.config.settings import load_settings
from ollama_preloader.errors import ConfigError

BASE = {"PATH": "/usr/bin", "OLLAMA_HOST": "127.0.0.1:11434"}

CPU_ONLY = {
    "CUDA_VISIBLE_DEVICES": "-1",
    "HIP_VISIBLE_DEVICES": "-1",
    "ROCR_VISIBLE_DEVICES": "-1",
    "OLLAMA_VULKAN": "0",
}


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("auto", {}),
        ("cpu", CPU_ONLY),
        ("vm", {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"}),
        ("gpu", {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "f16"}),
    ],
)
def test_profile_table(profile: Profile, expected: dict[str, str]) -> None:
    """Each profile adds exactly the variables docs/configuration.md documents, keeps the rest."""
    result = apply_profile(BASE, profile)
    assert result.env == {**BASE, **expected}
    assert result.effective == expected
    assert result.kept == ()


def test_user_variables_win() -> None:
    """A variable the user set, even to an empty value, is passed through unchanged."""
    env = {**BASE, "OLLAMA_KV_CACHE_TYPE": "q4_0", "CUDA_VISIBLE_DEVICES": ""}
    vm = apply_profile(env, "vm")
    assert vm.env["OLLAMA_KV_CACHE_TYPE"] == "q4_0"
    assert vm.env["OLLAMA_FLASH_ATTENTION"] == "1"
    assert vm.kept == ("OLLAMA_KV_CACHE_TYPE",)
    cpu = apply_profile(env, "cpu")
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu.env["HIP_VISIBLE_DEVICES"] == "-1"
    assert cpu.kept == ("CUDA_VISIBLE_DEVICES",)
    assert "kept your CUDA_VISIBLE_DEVICES" in cpu.describe()


def test_input_environment_is_not_mutated() -> None:
    """apply_profile returns a new mapping; the caller's environment stays as it was."""
    env = dict(BASE)
    apply_profile(env, "gpu", "q8_0")
    assert env == BASE


@pytest.mark.parametrize(
    ("profile", "quantization", "kv", "flash"),
    [
        ("auto", "none", "f16", None),
        ("auto", "q8_0", "q8_0", "1"),
        ("auto", "q4_0", "q4_0", "1"),
        ("vm", "q4_0", "q4_0", "1"),
        ("gpu", "q8_0", "q8_0", "1"),
        ("cpu", "q8_0", "q8_0", "1"),
        ("vm", "none", "f16", "1"),
    ],
)
def test_quantization_sets_the_kv_cache_type(
    profile: Profile, quantization: str, kv: str, flash: str | None
) -> None:
    """PRELOADER_QUANTIZATION picks the KV-cache type; a quantized cache needs flash attention."""
    wanted = profile_variables(profile, quantization)  # type: ignore[arg-type]
    assert wanted["OLLAMA_KV_CACHE_TYPE"] == kv
    assert wanted.get("OLLAMA_FLASH_ATTENTION") == flash


def test_describe_names_the_effective_values() -> None:
    """The startup message lists what the child gets; auto says nothing changed."""
    assert "no server variable changed" in apply_profile(BASE, "auto").describe()
    text = apply_profile(BASE, "vm").describe()
    assert "OLLAMA_FLASH_ATTENTION=1" in text
    assert "OLLAMA_KV_CACHE_TYPE=q8_0" in text


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("PRELOADER_PROFILE", "PRELOADER_QUANTIZATION", "PRELOADER_WARMUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_accept_profiles(clean_env: pytest.MonkeyPatch) -> None:
    """Profile and quantization are case-insensitive; empty quantization means unset."""
    assert (load_settings(None).profile, load_settings(None).quantization) == ("auto", None)
    clean_env.setenv("PRELOADER_PROFILE", " VM ")
    clean_env.setenv("PRELOADER_QUANTIZATION", "")
    clean_env.setenv("PRELOADER_WARMUP", "true")
    s = load_settings(None)
    assert (s.profile, s.quantization, s.warmup) == ("vm", None, True)
    clean_env.setenv("PRELOADER_QUANTIZATION", "Q4_0")
    assert load_settings(None).quantization == "q4_0"
    # The other guide's PERFORMANCE_PROFILE spellings work too.
    clean_env.setenv("PRELOADER_PROFILE", "gpu_accelerated")
    assert load_settings(None).profile == "gpu"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRELOADER_PROFILE", "fast"),
        ("PRELOADER_QUANTIZATION", "int8"),
        ("PRELOADER_WARMUP", "maybe"),
    ],
)
def test_bad_profile_values(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    """A bad value is one line naming the variable and the value."""
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert f"{name}={value!r}" in str(info.value)
    assert "\n" not in str(info.value)
