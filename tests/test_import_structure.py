"""The import graph: no cycle through search/ or report/, the report never imports the search, and every
module imports in a fresh process whatever the order.

The graph is read from the source with ``ast``: every import, function-level ones included (they
run later, but they still make a module depend on another). An edge goes to the module whose
contents are used: ``from a.b import c`` to ``a.b.c`` when that is a module, to ``a.b`` (its
``__init__``) when ``c`` is a name defined or re-exported there. A package's ``__init__`` that
re-exports its submodules (``autocompress.search`` exports ``run_search``) is thus a facade: a
cycle appears only when a module imports a name back through it. Import-time problems of any
other kind show in the fresh-process test at the end.
"""

import ast
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Package name -> source folder (the built-in plugins and spaces are installed inside autocompress).
SOURCES = {"autocompress": ROOT / "autocompress", "autocompress.plugins": ROOT / "plugins",
           "autocompress.search_spaces": ROOT / "search_spaces"}
LAYERED = ("autocompress.search", "autocompress.report", "autocompress.study")


def module_files(sources: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every module under ``sources`` (packages as their ``__init__``)."""
    modules = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules.setdefault(name, path)
    return modules


def _known(name: str, known: set[str]) -> set[str]:
    """``name`` if it is a known module, else its longest known prefix (the package defining it)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return {".".join(parts[:end])}
    return set()


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the known modules its source imports (anywhere in the file)."""
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges |= _known(alias.name, known)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package upwards
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                for alias in node.names:  # a submodule, or a name of the module/package ``source``
                    edges |= _known(f"{source}.{alias.name}", known)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


MODULES = module_files(SOURCES)
GRAPH = import_graph(MODULES)


def _in(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_graph_is_read_from_the_real_sources():
    assert {"autocompress.search.run", "autocompress.report.facts", "autocompress.study.record",
            "autocompress.plugins.trial_log"} <= set(MODULES)
    assert "autocompress.report" in GRAPH["autocompress.search.outputs"]  # a top-level import
    assert "autocompress.report.plots" in GRAPH["autocompress.report"]  # a function-level import


def test_no_module_of_search_report_or_study_is_in_an_import_cycle():
    tangled = [component for component in cycles(GRAPH) if any(_in(m, LAYERED) for m in component)]
    assert tangled == [], f"import cycles through search/report/study: {tangled}"


def test_the_report_reads_the_stored_study_and_never_imports_the_search():
    """search -> report -> study, never back: what the report needs of a search is in study/."""
    for name, edges in GRAPH.items():
        if _in(name, ("autocompress.report", "autocompress.study")):
            assert not {e for e in edges if _in(e, ("autocompress.search",))}, name
        if _in(name, ("autocompress.study",)):
            assert not {e for e in edges if _in(e, ("autocompress.report",))}, name


def test_the_cycle_check_rejects_a_cycle_made_by_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    for folder in ("search", "report"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "search" / "outputs.py").write_text("def write():\n    from pkg.report import render\n")
    (package / "report" / "render.py").write_text("from ..search import outputs\n")
    graph = import_graph(module_files({"pkg": package}))
    assert graph["pkg.search.outputs"] == {"pkg.report.render"}
    assert cycles(graph) == [["pkg.report.render", "pkg.search.outputs"]]
    # A name imported back through a package's facade (its __init__ re-exporting a submodule) counts too.
    (package / "search" / "__init__.py").write_text("from pkg.search.outputs import write\n")
    (package / "report" / "render.py").write_text("from pkg.search import write\n")
    (package / "search" / "outputs.py").write_text("def write():\n    import pkg.report.render\n")
    assert cycles(import_graph(module_files({"pkg": package}))) == [
        ["pkg.report.render", "pkg.search", "pkg.search.outputs"]]


IMPORT_ALL = textwrap.dedent("""
    import importlib, json, sys
    for name in json.loads(sys.argv[1]):
        importlib.import_module(name)
""")


def test_every_module_imports_in_a_fresh_process_in_any_order():
    names = sorted(MODULES)
    orders = [names, names[::-1]]
    for seed in (1, 2, 3):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        orders.append(shuffled)
    # Each layered module first, then the rest: an import cycle shows when a member of it is imported first.
    layered_first = [m for m in names if _in(m, LAYERED)]
    orders.append(layered_first[::-1] + [m for m in names if m not in layered_first])
    processes = [subprocess.Popen([sys.executable, "-c", IMPORT_ALL, json.dumps(order)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for order in orders]
    for order, process in zip(orders, processes, strict=True):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"importing in the order starting {order[:3]} failed:\n{err[-3000:]}"
