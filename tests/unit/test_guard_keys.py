"""guard/keys.py: which Authorization headers pass, and what a changed keys file does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_preloader.errors import ConfigError
from ollama_preloader.guard.keys import CHECK_INTERVAL, ApiKeys, parse_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_keys_skips_comments_and_blank_lines() -> None:
    text = "# header\n  key-one  \n\nkey-two # trailing\n#key-three\n"
    assert parse_keys(text) == {"key-one", "key-two"}


def test_only_a_bearer_with_a_key_in_force_passes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alpha\nbeta\n")
    keys = ApiKeys(path)
    keys.load()
    assert keys.allows("Bearer alpha")
    assert keys.allows("bearer  beta ")
    for header in (
        None,
        "",
        "alpha",
        "Bearer",
        "Bearer ",
        "Basic alpha",
        "Bearer alph",
        "Bearer alphaX",
    ):
        assert not keys.allows(header), header


def test_a_changed_file_applies_at_the_next_look_and_a_vanished_one_keeps_the_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    path.write_text("old\n")
    clock = Clock()
    keys = ApiKeys(path, clock=clock)
    keys.load()
    path.write_text("new-and-longer\n")
    assert keys.allows("Bearer old")  # not looked at again within CHECK_INTERVAL
    clock.now += CHECK_INTERVAL
    assert keys.allows("Bearer new-and-longer")
    assert not keys.allows("Bearer old")
    path.unlink()
    clock.now += CHECK_INTERVAL
    assert keys.allows("Bearer new-and-longer")
    path.write_text("# emptied on purpose\n")
    clock.now += CHECK_INTERVAL
    assert not keys.allows("Bearer new-and-longer")  # no key: nobody


def test_load_refuses_a_missing_or_empty_file_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PRELOADER_GUARD_API_KEYS_FILE=.*cannot read"):
        ApiKeys(tmp_path / "missing").load()
    empty = tmp_path / "empty"
    empty.write_text("\n# none\n")
    with pytest.raises(ConfigError, match=r"PRELOADER_GUARD_API_KEYS_FILE=.*no keys"):
        ApiKeys(empty).load()
