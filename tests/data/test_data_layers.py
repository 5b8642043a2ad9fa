"""The data layer's modules import each other in one direction only (no cycles, no hidden ones).

Each module may import only modules listed before it. The rooms are contiguous in that order — storage
(``store``), then acquisition (``sources``), then the task side (``tasks``) — which is what
``tests/test_architecture.py`` enforces between rooms; this test adds the order within each. ``datasets``
sits above the dataset definitions (``packaged``, ``vision``) and the bring-your-own readers, so registering
happens there, explicitly, and never as a side effect of importing a lower module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import largemeta.data

LAYERS = (
    "store.cache",
    "store.arrays",
    "store.index",
    "store.cached",
    "sources.formats",
    "sources.fetch",
    "sources.byo",
    "sources.verified",
    "sources.archives",
    "sources.hub",
    "sources.packaged",
    "sources.vision",
    "sources.quickdraw_full",
    "sources.datasets",
    "sources.identity",
    "tasks.augment",
    "tasks.sampler",
    "tasks.suite",
    "tasks.images",
    "tasks.stream",
    "tasks.loader",
)
DATA_DIR = Path(largemeta.data.__file__).parent


def data_imports(module: str) -> set[str]:
    """The ``largemeta.data.<room>.<module>`` modules that ``module`` (``<room>.<module>``) imports anywhere
    (function bodies included)."""
    tree = ast.parse((DATA_DIR / f"{module.replace('.', '/')}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {
            ".".join(n.split(".")[2:4])
            for n in names
            if n.startswith("largemeta.data.") and n.count(".") >= 3
        }
    return found & set(LAYERS)


def test_every_data_module_has_a_layer():
    modules = {f"{p.parent.name}.{p.stem}" for p in DATA_DIR.glob("*/*.py") if p.stem != "__init__"}
    assert {p.name for p in DATA_DIR.glob("*.py")} == {"__init__.py"}  # every module is in a room
    assert modules == set(LAYERS)


@pytest.mark.parametrize("module", LAYERS)
def test_imports_point_down(module):
    below = set(LAYERS[: LAYERS.index(module)])
    assert data_imports(module) <= below, f"{module} imports {sorted(data_imports(module) - below)}"
