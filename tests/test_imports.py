"""Import rules of the package, checked on the source (ast), not by importing it.

* no import cycle among hessnorm modules (function-level imports included);
* ``estimators/`` imports nothing of hessnorm but operator, partition, rotation,
  estimate, errors and itself;
* ``report/`` never imports analyze, the operator or the trainer;
* nothing in the library imports ``experiments/`` (only the CLI dispatches to it);
* no library module calls ``matplotlib.use``;
* ``hessnorm --help`` and ``--version`` import neither torch nor pandas.
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
