"""The import graph of a package, read from its sources with ``ast`` (nothing is imported), and its cycles.

Every ``import``/``from ... import`` statement counts wherever it stands: at module level, inside a
function (a lazy import hides a cycle from the interpreter, not from the layering) or under
``if TYPE_CHECKING:``. An import of ``a.b.c`` is an edge to ``a.b.c`` and to each package above it
that the importer is not itself inside (``import a.b.c`` runs ``a/b/__init__.py`` too); ``from a.b
import c`` names the module ``a.b.c`` when there is one, else ``a.b``. Imports of anything outside
the package are left out. Dynamic imports (``importlib``, Hydra ``_target_`` strings) are not seen.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` imports ``target`` at ``path:line``."""

    importer: str
    target: str
    path: Path
    line: int
    lazy: bool  # inside a function, class or ``if`` (TYPE_CHECKING included) rather than at module level

    def __str__(self) -> str:
        return f"{self.importer} -> {self.target} ({self.path}:{self.line}{', lazy' if self.lazy else ''})"


def package_modules(package_dir: str | Path) -> dict[str, Path]:
    """Every module of the package at ``package_dir`` (its dotted name -> its file); a sub-folder counts
    when it has an ``__init__.py``."""
    root = Path(package_dir)
    if not (root / "__init__.py").is_file():
        raise ValueError(f"{root}: not a package (no __init__.py)")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        parts = list(rel.with_suffix("").parts)
        if any(not (root.parent.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            continue  # a folder without __init__.py (scripts, build output) is no part of the package
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None outside it)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def _lazy_nodes(tree: ast.Module) -> set[int]:
    """ids of the import statements that are not at the module's top level."""
    top = {id(node) for node in tree.body}
    return {id(node) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top}


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The edges of module ``name`` (file ``path``) to other modules of the package."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise SyntaxError(f"{path}: {e}") from e
    lazy = _lazy_nodes(tree)
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(tree):
        named: list[str] = []
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            named = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        for full in named:
            target = _resolve(full, modules)
            if target is None:
                continue
            for t in [*_ancestors(target), target]:
                if t != name and not name.startswith(t + "."):  # a module's own packages run before it
                    out.append(Import(name, t, path, node.lineno, id(node) in lazy))
    return out


def import_graph(package_dir: str | Path) -> dict[str, dict[str, Import]]:
    """``graph[a][b]``: the first statement by which module ``a`` imports module ``b`` of the package."""
    modules = package_modules(package_dir)
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for name, path in modules.items():
        for imp in module_imports(name, path, modules):
            graph[name].setdefault(imp.target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), those of more than one module or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in graph.get(v, {}):
                        out.append(sorted(comp))
    return out


def _shortest_cycle(graph: dict[str, dict[str, Import]], component: list[str]) -> list[Import]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    members = set(component)
    start = component[0]
    parent: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    cycle = [graph[v][w]]
                    while v != start:
                        cycle.append(parent[v])
                        v = parent[v].importer
                    return cycle[::-1]
                if w not in parent:
                    parent[w] = graph[v][w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")  # a component always has one


def import_cycles(package_dir: str | Path) -> list[list[Import]]:
    """One shortest cycle (its edges, in order) per knot of mutually importing modules; empty when the
    package is layered (every module imports only modules below it)."""
    graph = import_graph(package_dir)
    return [_shortest_cycle(graph, comp) for comp in _strongly_connected(graph)]


def describe(cycle: list[Import]) -> str:
    """``a -> b -> a`` followed by the statement of each edge."""
    names = " -> ".join([cycle[0].importer, *(imp.target for imp in cycle)])
    return names + "".join(f"\n    {imp}" for imp in cycle)
