"""deferred.py: a module bound by `import` runs only at its first use, once, in one object."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_preloader import deferred

PACKAGE = "deferred_probe_pkg"


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A package whose body counts its runs in a file (so a run is seen from outside it)."""
    root = tmp_path / PACKAGE
    root.mkdir()
    runs = tmp_path / "runs"
    runs.write_text("")
    (root / "__init__.py").write_text(
        f"with open({str(runs)!r}, 'a') as f:\n    f.write('x')\nVALUE = 42\nfrom . import sub\n"
    )
    (root / "sub.py").write_text("NAME = 'sub'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield runs
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_an_import_binds_it_without_running_it_and_a_use_runs_it_once(package: Path) -> None:
    deferred.defer(PACKAGE)
    bound = importlib.import_module(PACKAGE)
    assert package.read_text() == ""  # `import` alone ran nothing
    assert bound.VALUE == 42
    assert package.read_text() == "x"
    assert bound.sub.NAME == "sub"  # its own relative imports work
    assert importlib.import_module(PACKAGE) is bound  # one module object, never a second run
    assert deferred.load(PACKAGE) is bound
    assert package.read_text() == "x"


def test_load_runs_it_and_a_submodule_import_needs_no_earlier_use(package: Path) -> None:
    deferred.defer(PACKAGE)
    parent = importlib.import_module(PACKAGE)
    sub = importlib.import_module(f"{PACKAGE}.sub")
    assert sub.NAME == "sub"
    assert package.read_text() == "x"  # the package ran first, as a normal import does
    assert deferred.load(PACKAGE) is parent
    assert parent.__file__ is not None
    assert parent.__file__.endswith("__init__.py")


def test_a_module_that_fails_is_not_left_half_made(package: Path, tmp_path: Path) -> None:
    (tmp_path / PACKAGE / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    deferred.defer(PACKAGE)
    bound = importlib.import_module(PACKAGE)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        _ = bound.VALUE
    assert PACKAGE not in sys.modules


def test_a_module_imported_already_or_unknown_is_left_alone() -> None:
    import json

    deferred.defer("json")
    assert sys.modules["json"] is json
    deferred.defer("no_such_module_anywhere")
    assert "no_such_module_anywhere" not in sys.modules
