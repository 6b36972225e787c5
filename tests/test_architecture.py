"""The import graph of normgate, read from the source with ``ast``.

Two rules hold the op seam in place (DESIGN.md: the core knows nothing about norms):
- nothing under ``harness/`` (the ``normgate`` core) imports from ``properties/`` or ``kernels/``:
  ops and their candidates reach the core through entry points, never the other way;
- there is no import cycle among normgate's modules: a cycle is a pair of files that can only be
  understood, tested and loaded together, held up by function-local imports.

Every import counts, function-local ones included (they are how cycles hide); only the ones under
``if TYPE_CHECKING:`` are left out, because they never run. Modules map to folders through
pyproject's ``package-dir``, so the test follows the layout the wheel installs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 fallback
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """normgate's packages and the folder each lives in, from pyproject's ``package-dir``."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: root / folder for pkg, folder in cfg["package-dir"].items() if pkg.split(".")[0] == "normgate"}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every normgate module and its file. A folder below a mapped package is its subpackage
    (``harness/zoo`` is ``normgate.zoo``) unless package-dir maps it itself."""
    dirs = package_dirs(root)
    mapped = {d.resolve() for d in dirs.values()}
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            # a nested folder that package-dir maps to a package of its own is read from there
            if any(p.resolve() in mapped for p in path.parents if folder in p.parents):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([pkg, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Import statements that run, and ``importlib.import_module("literal")`` calls: every place,
    function bodies included, except the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The normgate modules ``name`` imports (``from pkg import mod`` counts as importing pkg.mod)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.Call):
            targets = [node.args[0].value]
        else:
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for t in targets:
            # the deepest normgate module the dotted name reaches
            parts = t.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle
    through it, so a failure names a path to break rather than a bag of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in comps]


def tangles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle as a line: one path through it, and how many modules are caught in it."""
    out = []
    for c in cycles(graph):
        members = _component(graph, c[0])
        out.append(" -> ".join(c) + (f"  ({len(members)} modules: {', '.join(sorted(members))})"
                                     if len(members) > len(c) - 1 else ""))
    return out


def _component(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules that both reach ``start`` and are reached from it."""
    def reach(src: str, edges) -> set[str]:
        seen, todo = {src}, [src]
        while todo:
            for w in edges(todo.pop()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    rev: dict[str, set[str]] = {}
    for a, deps in graph.items():
        for b in deps:
            rev.setdefault(b, set()).add(a)
    return reach(start, lambda v: graph.get(v, ())) & reach(start, lambda v: rev.get(v, ()))


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside it)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def _folder(mod: str, mods: dict[str, Path], root: Path) -> str:
    return mods[mod].relative_to(root).parts[0]


def layer_violations(graph: dict[str, set[str]], root: Path = ROOT) -> list[str]:
    mods = modules(root)
    return sorted(f"{a} ({mods[a].relative_to(root)}) imports {b}" for a, deps in graph.items()
                  if _folder(a, mods, root) == "harness"
                  for b in deps if _folder(b, mods, root) in ("properties", "kernels"))


def test_the_core_imports_no_op_and_no_kernel():
    bad = layer_violations(import_graph())
    assert not bad, "harness/ must not import properties/ or kernels/:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
    found = tangles(import_graph())
    assert not found, "import cycles among normgate modules:\n  " + "\n  ".join(found)


# ---- the scanner itself: each rule fails on a tree that breaks it --------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "normgate" = "harness", "normgate.kernels" = "kernels", '
        '"normgate.properties" = "properties" }\n')
    for rel, text in {"harness/__init__.py": "", "kernels/__init__.py": "", "properties/__init__.py": "",
                      **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_scanner_finds_a_function_local_cycle_and_a_core_import(tmp_path):
    root = _tree(tmp_path, {
        "harness/a.py": "def f():\n    from .b import g\n",
        "harness/b.py": "from normgate import a\n",
        "harness/c.py": "import importlib\nimportlib.import_module('normgate.kernels.k')\n",
        "harness/sub/__init__.py": "from ..a import f\n",
        "kernels/k.py": "from normgate.properties import p\n",
        "properties/p.py": "",
    })
    graph = import_graph(root)
    assert graph["normgate.a"] == {"normgate.b"}
    assert graph["normgate.sub"] == {"normgate.a"}
    assert cycles(graph) == [["normgate.a", "normgate.b", "normgate.a"]]
    assert layer_violations(graph, root) == ["normgate.c (harness/c.py) imports normgate.kernels.k"]


def test_scanner_leaves_type_checking_imports_out(tmp_path):
    root = _tree(tmp_path, {
        "harness/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from normgate.kernels import k\n"
                        "    from . import b\n",
        "harness/b.py": "from . import a\n",
        "kernels/k.py": "",
    })
    graph = import_graph(root)
    assert graph["normgate.a"] == set() and cycles(graph) == [] and layer_violations(graph, root) == []
