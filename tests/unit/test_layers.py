"""The layer rule: a module imports only from its own layer or the layers below it.

Every import counts, including those under TYPE_CHECKING and inside functions: a type-only
import still ties the lower room to the higher one. The order is docs/architecture.md's."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ollama_preloader"

# Bottom first. Three modules of observe/ sit at the bottom with errors: logs is everyone's
# (design.md: "logs, used by everyone") and writes through terminal; healthcheck is the
# standard-library-only client of the health port, whose address parsing config/settings.py
# shares so that `ollama-preloader health` and the supervisor read the variables alike. All
# three import nothing of the package but errors and each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "observe.logs", "observe.output", "observe.terminal", "observe.healthcheck"),
    ("ollama",),
    ("config",),
    ("state",),
    ("server",),
    ("observe",),
    ("guard",),
    ("reconcile",),
    ("bake", "update", "deferred", "launch", "cli", "entry", "__main__", "__init__"),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of a dotted module path below the package (longest prefix wins)."""
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"ollama_preloader.{module} is in no layer: add it to LAYERS")
    return best


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module below the package) of every import of ollama_preloader in a file;
    `from pkg import mod` names the module pkg.mod when mod is a module of pkg."""
    package_parts = path.relative_to(root.parent).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package_parts[: len(package_parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                sub = root.parent.joinpath(*f"{module}.{alias.name}".split("."))
                is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                found.append((node.lineno, f"{module}.{alias.name}" if is_module else module))
    return [
        (line, m.removeprefix("ollama_preloader."))
        for line, m in found
        if m.startswith("ollama_preloader.")
    ]


def upward_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        own = ".".join(path.relative_to(root).with_suffix("").parts)
        own_layer = layer_of(own)
        for line, target in imports_of(path, root):
            target_layer = layer_of(target)
            if target_layer > own_layer:
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: {own} (layer "
                    f"{'/'.join(LAYERS[own_layer])}) imports {target} (layer "
                    f"{'/'.join(LAYERS[target_layer])}), which is above it"
                )
    return problems


def test_no_module_imports_from_a_layer_above_it() -> None:
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: a server/ module importing reconcile/ is reported with its line."""
    root = tmp_path / "ollama_preloader"
    (root / "server").mkdir(parents=True)
    (root / "server" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from ollama_preloader.reconcile.plan import Action\n"
    )
    (root / "server" / "good.py").write_text("from ollama_preloader.state.board import Board\n")
    problems = upward_imports(root)
    assert len(problems) == 1
    assert "server/bad.py:3" in problems[0]
    assert "reconcile.plan" in problems[0]
