"""The models file: one entry per line, comments, priority order; errors name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_preloader.config.models_file import (
    MAX_BYTES,
    ModelsFileError,
    entry_of,
    load_models_file,
    parse_models_file,
)
from ollama_preloader.errors import EXIT_CONFIG
from ollama_preloader.ollama.kinds import ModelKind

PATH = Path("/etc/ollama-preloader/models.txt")


def parse(text: str) -> list[str]:
    return [s.display for s in parse_models_file(text.encode(), PATH).specs]


def test_one_entry_per_line_in_priority_order() -> None:
    """Lines are entries in the variable's syntax; the first line is priority 0."""
    parsed = parse_models_file(
        b"qwen3-coder:30b?num_ctx=32768\ndevstral\nnomic-embed-text?kind=embedding\n", PATH
    )
    assert [(s.display, s.priority) for s in parsed.specs] == [
        ("qwen3-coder:30b", 0),
        ("devstral:latest", 1),
        ("nomic-embed-text:latest", 2),
    ]
    assert parsed.specs[0].options_dict() == {"num_ctx": 32768}
    assert parsed.specs[2].kind == ModelKind.EMBEDDING
    assert parsed.warnings == ()


def test_blank_lines_comments_and_whitespace() -> None:
    """Whole-line and trailing comments, blank lines, indentation and CRLF are ignored."""
    text = (
        "# chat first\r\n"
        "\r\n"
        "   llama3.2?keep_alive=1h   # finite: may expire\r\n"
        "\t# indented comment\r\n"
        "devstral\t#tab before the comment\n"
        "\n"
    )
    parsed = parse_models_file(text.encode(), PATH)
    assert [s.display for s in parsed.specs] == ["llama3.2:latest", "devstral:latest"]
    assert parsed.specs[0].keep_alive == 3600.0


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        ("# only a comment", ""),
        ("llama3.2 # note", "llama3.2"),
        ("llama3.2?num_ctx=4096\t#note", "llama3.2?num_ctx=4096"),
        ("llama3.2#note", "llama3.2#note"),  # glued: kept, and refused by the parser
        ("  ", ""),
    ],
)
def test_where_a_comment_starts(line: str, entry: str) -> None:
    """`#` starts a comment at the line's start or after whitespace, not inside a word."""
    assert entry_of(line) == entry


def test_a_glued_hash_is_refused_not_dropped() -> None:
    """`llama3.2#chat` is not silently read as llama3.2: the error names its line."""
    with pytest.raises(ModelsFileError) as info:
        parse("devstral\nllama3.2#chat\n")
    assert info.value.line == 2
    assert "'llama3.2#chat'" in str(info.value)


def test_empty_file_declares_no_models() -> None:
    """An empty file (or only comments) is an empty set, like an empty variable."""
    assert parse("") == []
    assert parse("# nothing yet\n\n") == []


def test_byte_order_mark_is_not_part_of_the_first_name() -> None:
    """Editors on Windows may save a BOM; the first model still parses."""
    parsed = parse_models_file("\ufeffllama3.2\n".encode(), PATH)
    assert [s.display for s in parsed.specs] == ["llama3.2:latest"]


def test_duplicates_keep_the_first_and_warn_with_both_lines() -> None:
    """Same model twice after normalisation: the first wins; the warning names both lines."""
    parsed = parse_models_file(b"devstral\nllama3.2\nlibrary/devstral:latest?num_ctx=8192\n", PATH)
    assert [(s.display, s.priority) for s in parsed.specs] == [
        ("devstral:latest", 0),
        ("llama3.2:latest", 1),
    ]
    assert parsed.specs[0].options == ()
    (warning,) = parsed.warnings
    assert "line 3" in warning
    assert "(line 1)" in warning
    assert str(PATH) in warning
    assert "keeping the first (devstral:latest)" in warning


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("devstral\nllama3.2?bogus=1\n", 2, "entry 'llama3.2?bogus=1': unknown parameter 'bogus'"),
        ("# c\n\nllama3.2?num_ctx=big\n", 3, "num_ctx='big' is not a whole number"),
        ("llama3.2?keep_alive=0\n", 1, "keep_alive=0 would unload"),
        ("bad name\n", 1, "invalid model"),
        ("x:cloud\n", 1, "cloud models"),
        ("llama3.2,devstral\n", 1, "one entry per line"),
        ('"llama3.2"\n', 1, "invalid model"),
    ],
)
def test_bad_lines_name_the_file_the_line_and_the_problem(
    text: str, line: int, fragment: str
) -> None:
    """One line: PRELOADER_MODELS_FILE=<path>, line N: <the entry's problem>."""
    with pytest.raises(ModelsFileError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"PRELOADER_MODELS_FILE={PATH}, line {line}: ")
    assert fragment in message
    assert "OLLAMA_PRELOAD_MODELS" not in message  # the variable is not where the entry is
    assert "\n" not in message
    assert (info.value.line, info.value.exit_code) == (line, EXIT_CONFIG)


def test_not_utf8_names_the_line() -> None:
    """Bytes that are not UTF-8 are refused with the line they are on."""
    with pytest.raises(ModelsFileError) as info:
        parse_models_file(b"llama3.2\ndevstral\n\xff\xfe\n", PATH)
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A missing file: exit-2 error naming the variable and the path."""
    path = tmp_path / "models.txt"
    with pytest.raises(ModelsFileError) as info:
        load_models_file(path)
    assert str(info.value).startswith(f"PRELOADER_MODELS_FILE={path}: no such file")
    assert info.value.exit_code == EXIT_CONFIG


def test_a_directory_is_not_the_file(tmp_path: Path) -> None:
    """Pointing at the ConfigMap's mount directory says to name the file inside it."""
    with pytest.raises(ModelsFileError, match="is a directory"):
        load_models_file(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission denied is said as such, with the path (raised by hand: tests may run as root,
    who can read any file)."""
    path = tmp_path / "models.txt"
    path.write_text("llama3.2\n")

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(ModelsFileError, match="permission denied") as info:
        load_models_file(path)
    assert str(path) in str(info.value)


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    """A path to something that is clearly not a list (a model blob) is refused, not parsed."""
    path = tmp_path / "blob"
    path.write_bytes(b"a\n" * (MAX_BYTES // 2 + 1))
    with pytest.raises(ModelsFileError, match="not a model list"):
        load_models_file(path)


def test_reads_through_a_configmap_style_symlink(tmp_path: Path) -> None:
    """models.txt -> ..data/models.txt -> ..2026_01/models.txt, as a mounted ConfigMap is."""
    version = tmp_path / "..2026_01_01"
    version.mkdir()
    (version / "models.txt").write_text("llama3.2\n")
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "models.txt").symlink_to("..data/models.txt")
    parsed = load_models_file(tmp_path / "models.txt")
    assert [s.display for s in parsed.specs] == ["llama3.2:latest"]
