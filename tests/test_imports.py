"""Import rules of the package, checked on the source (ast), not by importing it.

* no import cycle among hessnorm modules (function-level imports included);
* ``estimators/`` imports nothing of hessnorm but operator, partition, rotation,
  estimate, errors and itself;
* ``report/`` never imports analyze, the operator or the trainer;
* nothing in the library imports ``experiments/`` (only the CLI dispatches to it);
* no library module calls ``matplotlib.use``;
* ``hessnorm --help`` and ``--version`` import neither torch nor pandas;
* no module of the library, the benchmarks or the examples imports a private (``_``)
  name from another module (a private *module* such as ``estimators._common`` is a
  shared home; its public names are the interface);
* a result row's ``details`` is JSON-parsed only in :mod:`hessnorm.results`, the I/O
  module (everywhere else it is a dict).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "hessnorm"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The hessnorm module an imported name refers to (a package or a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """Every hessnorm module ``module`` imports, at any nesting level."""
    tree = ast.parse(MODULES[module].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n == "hessnorm" or n.startswith("hessnorm."):
                target = _resolve(n)
                if target and target != module:
                    out.add(target)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_graph_is_real():
    assert "hessnorm.operator" in GRAPH["hessnorm.estimators.exact"]
    assert "hessnorm.train.runs" in GRAPH["hessnorm.checkpoint"]


def test_no_import_cycle():
    graph = GRAPH
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _library() -> list[str]:
    return [m for m in MODULES if not m.startswith("hessnorm.experiments") and m != "hessnorm.cli"]


def test_estimators_import_only_the_core():
    allowed = {
        "hessnorm.operator",
        "hessnorm.partition",
        "hessnorm.rotation",
        "hessnorm.estimate",
        "hessnorm.errors",
        "hessnorm.registry",  # the registration decorator (imports no estimator back)
        "hessnorm.cliutil",
    }
    for m in MODULES:
        if m.startswith("hessnorm.estimators"):
            bad = {
                n for n in GRAPH[m] if n not in allowed and not n.startswith("hessnorm.estimators")
            }
            assert not bad, f"{m} imports {sorted(bad)}"


def test_report_never_imports_analyze_operator_or_trainer():
    for m in MODULES:
        if m.startswith("hessnorm.report"):
            bad = {
                n
                for n in GRAPH[m]
                if n in ("hessnorm.analyze", "hessnorm.operator", "hessnorm.checkpoint")
                or n.startswith("hessnorm.train")
                or n.startswith("hessnorm.estimators")
            }
            assert not bad, f"{m} imports {sorted(bad)}"


def test_the_library_never_imports_experiments():
    for m in _library():
        bad = {n for n in GRAPH[m] if n.startswith("hessnorm.experiments")}
        assert not bad, f"{m} imports {sorted(bad)}"


def test_no_library_module_calls_matplotlib_use():
    for m in _library():
        tree = ast.parse(MODULES[m].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr == "use" and isinstance(f.value, ast.Name) and f.value.id == "matplotlib":
                    raise AssertionError(f"{m} calls matplotlib.use (line {node.lineno})")


def test_help_and_version_import_nothing_heavy():
    code = (
        "import sys, contextlib, io\n"
        "from hessnorm.cli import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'pandas', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert proc.stdout.strip() == "", f"hessnorm --help imported {proc.stdout.strip()}"


def _is_module(name: str) -> bool:
    path = ROOT / pathlib.Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _sources():
    for base in ("hessnorm", "benchmarks", "examples"):
        yield from sorted((ROOT / base).rglob("*.py"))


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if not node.module.startswith("hessnorm"):
                continue
            for a in node.names:
                private = a.name.startswith("_") and not a.name.startswith("__")
                if private and not _is_module(f"{node.module}.{a.name}"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_private_import_rule_is_real():
    tree = ast.parse(
        "from hessnorm.operator import _x, as_operator\nfrom hessnorm.estimators import _common"
    )
    names = [(n.module, a.name) for n in tree.body for a in n.names]
    flagged = [m + "." + a for m, a in names if a.startswith("_") and not _is_module(f"{m}.{a}")]
    assert flagged == ["hessnorm.operator._x"]


def _json_parse_of_details(tree: ast.AST) -> list[int]:
    """Lines that call json.loads / json.load on an expression naming ``details``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (
                f.attr in ("loads", "load")
                and isinstance(f.value, ast.Name)
                and f.value.id == "json"
            ):
                if any("details" in ast.unparse(a) for a in node.args):
                    out.append(node.lineno)
    return out


def test_details_are_parsed_only_in_the_io_module():
    assert _json_parse_of_details(ast.parse("import json\njson.loads(row['details'])")) == [2]
    bad = []
    for path in _sources():
        if path == PKG / "results.py":
            continue
        for line in _json_parse_of_details(ast.parse(path.read_text())):
            bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bad, "details JSON-parsed outside hessnorm/results.py: " + ", ".join(bad)
