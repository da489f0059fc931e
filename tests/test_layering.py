"""The library is layered: every module imports only modules below it, with no import cycle anywhere in
``detector/`` (or ``data_tools/``), lazy (function-level) and ``TYPE_CHECKING`` imports included; and the
checker finds a cycle when one is added."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.helpers.imports import describe, import_cycles, import_graph, package_modules
from tests.helpers.paths import REPO_ROOT

#: (lower module, upper module): the lower one must not reach the upper one through any chain of imports.
LAYERS = [
    ("detector.config", "detector.models"),
    ("detector.config", "detector.checkpoints"),
    ("detector.models", "detector.checkpoints"),
    ("detector.data.batch", "detector.data.clips"),
    ("detector.data.collate", "detector.data.clips"),
    ("detector.data.frame", "detector.data.clips"),
]


def _reachable(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root / "pkg"


@pytest.mark.parametrize("package", ["detector", "data_tools"])
def test_no_import_cycle(package):
    cycles = import_cycles(Path(REPO_ROOT) / package)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def test_the_graph_covers_the_library():
    graph = import_graph(Path(REPO_ROOT) / "detector")
    assert len(graph) >= 50 and "detector.data.clips" in graph and "detector.ops.cpu_kernels" in graph
    assert "detector.data.collate" in graph["detector.data.clips"]
    assert graph["detector.checkpoints"]["detector.models"].lazy  # load_detector's function-level import


@pytest.mark.parametrize("lower,upper", LAYERS)
def test_layers(lower, upper):
    graph = import_graph(Path(REPO_ROOT) / "detector")
    assert upper not in _reachable(graph, lower), f"{lower} imports {upper} (directly or through others)"


def test_checker_finds_cycles_of_every_kind(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        # a module-level edge one way, a function-level (lazy) edge back
        "pkg/a.py": "from pkg.b import g\n",
        "pkg/b.py": """
            def g():
                from pkg import a
                return a
            """,
        # relative imports, one of them only for type checking
        "pkg/c.py": "from .d import D\n",
        "pkg/d.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from . import c
            class D: ...
            """,
        # importing a submodule runs its package's __init__, which imports back
        "pkg/sub/__init__.py": "import pkg.e\n",
        "pkg/sub/leaf.py": "X = 1\n",
        "pkg/e.py": "from pkg.sub.leaf import X\n",
        # a three-module ring, found as one cycle with the statements that make it
        "pkg/r1.py": "import pkg.r2\n",
        "pkg/r2.py": "import pkg.r3\n",
        "pkg/r3.py": "\n\nimport pkg.r1\n",
    })
    cycles = import_cycles(pkg)
    rings = sorted(sorted(imp.importer for imp in c) for c in cycles)
    assert rings == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"], ["pkg.e", "pkg.sub"], ["pkg.r1", "pkg.r2", "pkg.r3"]]
    ab = next(c for c in cycles if c[0].importer in ("pkg.a", "pkg.b"))
    assert [imp.lazy for imp in sorted(ab, key=lambda i: i.importer)] == [False, True]
    ring = describe(next(c for c in cycles if len(c) == 3))
    assert ring.splitlines()[0] == "pkg.r1 -> pkg.r2 -> pkg.r3 -> pkg.r1", ring
    assert f"pkg.r3 -> pkg.r1 ({pkg / 'r3.py'}:3)" in ring


def test_checker_passes_a_layered_package(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.top import run\n",  # a package re-exporting its submodules
        "pkg/top.py": "from . import low\nfrom pkg.mid import helper\nimport os\n",
        "pkg/mid/__init__.py": "from .helper import helper\n",
        "pkg/mid/helper.py": "from pkg.low import x\nfrom .. import low\n\ndef helper():\n    from pkg import low\n",
        "pkg/low.py": "import numpy\nx = 1\n",
        "pkg/scripts/tool.py": "import pkg.top\n",  # no __init__.py: not part of the package
    })
    assert import_cycles(pkg) == []
    assert set(package_modules(pkg)) == {"pkg", "pkg.top", "pkg.mid", "pkg.mid.helper", "pkg.low"}
    graph = import_graph(pkg)
    assert set(graph["pkg.top"]) == {"pkg.low", "pkg.mid", "pkg.mid.helper"}
    assert set(graph["pkg.mid.helper"]) == {"pkg.low"}


def test_a_cycle_added_to_the_library_is_found(tmp_path):
    """The real tree with one lazy import added where the layering forbids it: config -> checkpoints."""
    copy = tmp_path / "detector"
    shutil.copytree(Path(REPO_ROOT) / "detector", copy, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    config = copy / "config.py"
    config.write_text(config.read_text() + "\n\ndef _late():\n    from detector.checkpoints import load_checkpoint\n")
    cycles = import_cycles(copy)
    assert len(cycles) == 1, [describe(c) for c in cycles]
    text = describe(cycles[0])
    assert "detector.config -> detector.checkpoints" in text and "lazy" in text, text
