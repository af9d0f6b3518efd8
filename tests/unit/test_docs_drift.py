"""The reference in docs/ cannot drift from the code.

Four kinds of name a user types, greps or alerts on are read from the code and from docs/, and
each side must name the other's: the variables (PRELOADER_* from the settings model and the
code that reads them, OLLAMA_* wherever the package names one), the exit codes (errors.py and
the other EXIT_* constants), the log events (the first argument of every log call, found with
ast) and the metrics (observe/metrics.py, guard/metrics.py). A name in the code but not in the
docs is an undocumented knob or event; a name in the docs but not in the code is a promise the
code no longer keeps."""

from __future__ import annotations

import ast
import re
import signal
from collections.abc import Iterator
from pathlib import Path

from ollama_preloader.config.settings import Settings, variable_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ollama_preloader"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
EXIT_PAGE = DOCS / "faults.md"
LOG_PAGE = DOCS / "observability.md"

VARIABLE = re.compile(r"(?<![A-Za-z0-9_])(?:PRELOADER|OLLAMA)_[A-Z0-9_]*[A-Z0-9]")
METRIC = re.compile(r"(?<![A-Za-z0-9_./])ollama_preloader_[a-z0-9_]*[a-z0-9]")
EVENT = re.compile(r"[a-z]+(?:\.[a-z_]+)+")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# Backticked dotted names that are files, not events (`update.py`, `models.txt`).
FILE_SUFFIXES = {"py", "md", "txt", "yml", "yaml", "json", "sh", "service", "env", "png", "toml"}


def _modules(root: Path = PACKAGE) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes: a name in a docstring is prose, not something the code reads."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(tree: ast.Module) -> Iterator[str]:
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def _docs_text() -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(DOCS.glob("*.md"))}


def _section(text: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    level = heading.split(" ", 1)[0]
    start = lines.index(heading) + 1
    end = len(lines)
    for i in range(start, len(lines)):
        hashes = lines[i].split(" ", 1)[0]
        if set(hashes) == {"#"} and len(hashes) <= len(level):
            end = i
            break
    return "\n".join(lines[start:end])


def _table_rows(text: str) -> Iterator[list[str]]:
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s|:-]+\|", line):
            yield [cell.strip() for cell in line.strip().strip("|").split("|")]


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _report(kind: str, missing_in_docs: set[str], missing_in_code: set[str], where: str) -> str:
    parts = []
    if missing_in_docs:
        parts.append(f"{kind} in the code but not in {where}: {', '.join(sorted(missing_in_docs))}")
    if missing_in_code:
        parts.append(f"{kind} in docs/ but not in the code: {', '.join(sorted(missing_in_code))}")
    return "; ".join(parts)


# --- variables ---------------------------------------------------------------------------


def _environ_reads(tree: ast.Module) -> Iterator[str]:
    """Names read with os.environ.get / os.getenv / os.environ[...] / `in os.environ`."""
    for node in ast.walk(tree):
        arg: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"get", "getenv"} and node.args:
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
            arg = node.slice
        elif isinstance(node, ast.Compare) and "environ" in ast.unparse(node.comparators[0]):
            arg = node.left
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value


def code_variables() -> set[str]:
    """PRELOADER_* and OLLAMA_* the product reads, sets or names in its messages, and the
    PRELOADER_* the test and build tooling reads (scripts/, .ci/, the Dockerfile, tests/)."""
    names = {
        variable_name(field)
        for field, info in Settings.model_fields.items()
        if not info.exclude  # parse results, not variables
    }
    for _, tree in _modules():
        for text in _strings(tree):
            names.update(VARIABLE.findall(text))
    for path in [*sorted((ROOT / "scripts").iterdir()), ROOT / ".ci" / "run", ROOT / "Dockerfile"]:
        names.update(VARIABLE.findall(path.read_text()))
    for _, tree in _modules(ROOT / "tests"):
        names.update(n for n in _environ_reads(tree) if VARIABLE.fullmatch(n))
        # A module-level NAME = "PRELOADER_X" that is read through the constant.
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                if isinstance(value, str) and VARIABLE.fullmatch(value):
                    names.add(value)
    return names


def passed_through() -> dict[str, str]:
    """configuration.md's table of Ollama's own variables: name -> what the supervisor does."""
    table = _section(CONFIGURATION.read_text(), "## Ollama's own variables")
    rows = {}
    for cells in _table_rows(table):
        ticks = _backticked(cells[0])
        if ticks and VARIABLE.fullmatch(ticks[0]):
            rows[ticks[0]] = cells[1]
    return rows


def test_every_variable_is_in_the_configuration_page() -> None:
    code = code_variables()
    page = set(VARIABLE.findall(CONFIGURATION.read_text()))
    documented = set().union(*(VARIABLE.findall(t) for t in _docs_text().values()))
    ollama_only = {name for name, role in passed_through().items() if role.startswith("passed")}
    problem = _report(
        "variables", code - page, documented - code - ollama_only, "docs/configuration.md"
    )
    assert not problem, problem


def test_ollama_variables_say_truly_whether_the_supervisor_reads_them() -> None:
    """A row "passed on" is one the code never names; any other row is one it does."""
    code = code_variables()
    wrong = [
        f"{name} ({role.split(';')[0]})"
        for name, role in passed_through().items()
        if role.startswith("passed") == (name in code)
    ]
    assert not wrong, f"docs/configuration.md, Ollama's own variables, wrong role: {wrong}"


# --- exit codes --------------------------------------------------------------------------


def code_exit_codes() -> set[int]:
    """EXIT_* integer constants, literal exit codes, and 128+N for a named signal N."""
    codes: set[int] = set()
    for _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(t.startswith("EXIT_") for t in targets) and type(value) is int:
                    codes.add(value)
            if isinstance(node, ast.Call) and node.args:
                func = ast.unparse(node.func)
                first = node.args[0]
                literal = first.value if isinstance(first, ast.Constant) else None
                if func.endswith(("Exit", "sys.exit", "os._exit")) and type(literal) is int:
                    codes.add(literal)
                named = isinstance(first, ast.Attribute) and ast.unparse(first.value) == "signal"
                if func == "exit_code_for_signal" and named:
                    codes.add(128 + int(getattr(signal, first.attr)))  # type: ignore[attr-defined]
    return codes


def test_every_exit_code_is_in_the_exit_table() -> None:
    table = _section(EXIT_PAGE.read_text(), "## Exit codes")
    first = [cells[0] for cells in _table_rows(table)]
    documented = {int(cell) for cell in first if cell.isdigit()}
    code = code_exit_codes()
    problem = _report(
        "exit codes",
        {str(c) for c in code - documented},
        {str(c) for c in documented - code},
        "docs/faults.md",
    )
    assert not problem, problem
    # The two rows that are not one number: a forced stop and ServerExited's child code.
    assert "128+N" in first, first
    assert "the child's code" in first, first


# --- log events --------------------------------------------------------------------------


def _is_logger(expr: ast.expr) -> bool:
    receiver = ast.unparse(expr)
    return receiver.endswith("log") or receiver.endswith("logger") or "get_logger(" in receiver


def _is_level(expr: ast.expr | None) -> bool:
    """A log method: `log.info`, `getattr(log, level)`, or `log.info if c else log.warning`."""
    if isinstance(expr, ast.Attribute):
        return expr.attr in LEVELS and _is_logger(expr.value)
    if isinstance(expr, ast.IfExp):
        return _is_level(expr.body) and _is_level(expr.orelse)
    return (
        isinstance(expr, ast.Call)
        and ast.unparse(expr.func) == "getattr"
        and bool(expr.args)
        and _is_logger(expr.args[0])
    )


def _level_names(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    """Names bound to a log method (`level = log.info if ok else log.warning`) -> the bindings."""
    found: dict[str, list[ast.stmt]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_level(node.value):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and _is_level(node.value):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(node)
    return found


def _is_log_call(tree: ast.Module, node: ast.Call, levels: dict[str, list[ast.stmt]]) -> bool:
    """`log.info(...)`, `get_logger().info(...)`, `getattr(log, level)(...)`, or a call of a
    name bound to a log method in the same function or at module level."""
    if _is_level(node.func):
        return True
    if not (isinstance(node.func, ast.Name) and node.func.id in levels):
        return False
    fn = _enclosing(tree, node)
    scope = set() if fn is None else {id(n) for n in ast.walk(fn)}
    return any(id(b) in scope or b in tree.body for b in levels[node.func.id])


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _enclosing(tree: ast.Module, target: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    best = None
    for fn in _functions(tree).values():
        inside = any(node is target for node in ast.walk(fn))
        if inside and (best is None or fn.lineno > best.lineno):
            best = fn
    return best


def _event_names(tree: ast.Module, expr: ast.expr, where: ast.AST, path: Path) -> set[str]:
    """The event names an expression can be: a string, either branch of `a if c else b`, or a
    parameter of the enclosing function, resolved through every call of it in the module."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _event_names(tree, expr.body, where, path) | _event_names(
            tree, expr.orelse, where, path
        )
    fn = _enclosing(tree, where)
    if isinstance(expr, ast.Name) and fn is not None:
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        if expr.id in params:
            index = params.index(expr.id) - (1 if params[0] in {"self", "cls"} else 0)
            found: set[str] = set()
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                name = call.func.attr if isinstance(call.func, ast.Attribute) else None
                name = name or (call.func.id if isinstance(call.func, ast.Name) else None)
                if name != fn.name:
                    continue
                given = [k.value for k in call.keywords if k.arg == expr.id]
                if not given and len(call.args) > index:
                    given = [call.args[index]]
                for value in given:
                    found |= _event_names(tree, value, call, path)
            if found:
                return found
    raise AssertionError(
        f"{path.relative_to(ROOT)}:{getattr(where, 'lineno', '?')}: cannot read the event name "
        f"{ast.unparse(expr)!r}; pass a string literal (or a parameter given literals) to log"
    )


def _is_module(name: str) -> bool:
    """`server.process`, `config.reload`: a module of the package, not an event."""
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def code_events() -> set[str]:
    events: set[str] = set()
    for path, tree in _modules():
        events |= _events_in(tree, path)
    return events


def _events_in(tree: ast.Module, path: Path) -> set[str]:
    events: set[str] = set()
    levels = _level_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and _is_log_call(tree, node, levels):
            events |= _event_names(tree, node.args[0], node, path)
    return events


def test_every_log_event_is_in_the_event_table() -> None:
    code = code_events()
    table = _section(LOG_PAGE.read_text(), "## Logs")
    in_table = {
        name
        for cells in _table_rows(table)
        for name in _backticked(cells[0])
        if EVENT.fullmatch(name)
    }
    families = {name.split(".", 1)[0] for name in code}
    mentioned = {
        name
        for path, text in _docs_text().items()
        if path.name != "architecture.md"  # names code (`server.process`), not events
        for name in re.findall(r"`([a-z][a-z_.]*)`", text)
        if EVENT.fullmatch(name)
        and name.split(".", 1)[0] in families
        and name.rsplit(".", 1)[1] not in FILE_SUFFIXES
        and not _is_module(name)
    }
    problem = _report(
        "log events", code - in_table, (in_table | mentioned) - code, "docs/observability.md"
    )
    assert not problem, problem


def test_the_event_reader_knows_each_form_of_log_call() -> None:
    """Each way the code calls a logger is read, so no event hides behind a form it skips."""
    source = """
log.info("form.plain")
get_logger().warning("form.fresh")
getattr(log, "warning")("form.getattr")

def chosen(ok):
    level = log.info if ok else log.warning
    level("form.alias", msg="x")

def elsewhere(level):
    level("form.not_a_log_call")  # another function's `level`: not a log method here
"""
    found = _events_in(ast.parse(source), PACKAGE / "example.py")
    assert found == {"form.plain", "form.fresh", "form.getattr", "form.alias"}, found


# --- metrics -----------------------------------------------------------------------------

METRIC_MODULES = [PACKAGE / "observe" / "metrics.py", PACKAGE / "guard" / "metrics.py"]
SUFFIX = {"Counter": "_total", "Info": "_info"}
SERIES = ("_bucket", "_count", "_sum", "_created")


def _expr(part: ast.expr) -> str:
    """The name inside an f-string's `{...}`."""
    assert isinstance(part, ast.FormattedValue), ast.unparse(part)
    return ast.unparse(part.value)


def code_metrics() -> dict[str, str]:
    """Exposed metric name -> its kind (Counter, Gauge, Histogram, Info)."""
    metrics: dict[str, str] = {}
    for path in METRIC_MODULES:
        tree = ast.parse(path.read_text())
        constants = {
            t.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets
            if isinstance(t, ast.Name) and isinstance(node.value.value, str)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = ast.unparse(node.func).rsplit(".", 1)[-1]
            kind = func.removesuffix("MetricFamily")
            if kind not in {"Counter", "Gauge", "Histogram", "Summary", "Info"}:
                continue
            name = node.args[0]
            if isinstance(name, ast.JoinedStr):
                text = "".join(
                    str(v.value) if isinstance(v, ast.Constant) else constants[_expr(v)]
                    for v in name.values
                )
            elif isinstance(name, ast.Constant):
                text = str(name.value)
            else:
                text = constants[ast.unparse(name)]
            metrics[text + SUFFIX.get(kind, "")] = kind
    return metrics


def test_every_metric_is_in_the_metrics_page() -> None:
    code = code_metrics()
    page = set(METRIC.findall(_section(LOG_PAGE.read_text(), "## Metrics")))
    documented: set[str] = set()
    for text in _docs_text().values():
        for name in METRIC.findall(text):
            base = next((name.removesuffix(s) for s in SERIES if name.endswith(s)), name)
            documented.add(base if base in code else name)
    problem = _report(
        "metrics", set(code) - page, documented - set(code), "docs/observability.md, Metrics"
    )
    assert not problem, problem


def test_the_readers_find_something() -> None:
    """Each reader finds what it must, so a broken reader cannot pass by finding nothing."""
    assert {"PRELOADER_WATCH_INTERVAL", "OLLAMA_HOST", "PRELOADER_ENV_FILE"} <= code_variables()
    assert {0, 1, 2, 3, 4, 100, 129} <= code_exit_codes()
    assert {"model.pinned", "model.loaded", "guard.rewrote", "model.shared_runner"} <= (
        code_events()
    )
    metrics = code_metrics()
    assert metrics["ollama_preloader_model_loads_total"] == "Counter"
    assert metrics["ollama_preloader_guard_request_seconds"] == "Histogram"
    assert "ollama_preloader_info" in metrics
