"""The benchmarks' modules import each other in one direction: no circle.

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy import
still ties the two modules together (bench → figure → bench was one)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def graph(root: Path) -> dict[str, set[str]]:
    """Module name (below the package) -> the package's modules it imports."""
    own = {path.stem for path in root.glob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in own}
    package = root.name
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    module = f"{package}.{module}" if module else package
                names = [module, *(f"{module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 2 and parts[0] == package and parts[1] in own - {path.stem}:
                    edges[path.stem].add(parts[1])
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(edges[node]):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])
    return found


def test_benchmark_modules_import_in_one_direction() -> None:
    found = cycles(graph(BENCHMARKS))
    assert not found, "import circles in benchmarks/:\n" + "\n".join(" → ".join(c) for c in found)


def test_the_check_sees_a_lazy_circle(tmp_path: Path) -> None:
    """A circle closed by an import inside a function is reported with both modules."""
    root = tmp_path / "benchmarks"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "bench.py").write_text("from benchmarks.figure import draw\n")
    (root / "figure.py").write_text("def draw() -> None:\n    from benchmarks.bench import ROOT\n")
    (root / "analysis.py").write_text("import math\n")
    assert cycles(graph(root)) == [["bench", "figure", "bench"]]
