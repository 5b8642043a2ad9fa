"""The data layer's modules import each other in one direction only (no cycles, no hidden ones).

Each module may import only modules listed before it. ``datasets`` sits above the dataset definitions
(``packaged``, ``vision``) and the bring-your-own readers, so registering happens there, explicitly, and
never as a side effect of importing a lower module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import largemeta.data

LAYERS = (
    "formats",
    "cache",
    "sources",
    "arrays",
    "store",
    "augment",
    "sampler",
    "tasks",
    "index",
    "byo",
    "hub",
    "packaged",
    "vision",
    "datasets",
    "images",
    "stream",
    "loader",
)
DATA_DIR = Path(largemeta.data.__file__).parent


def data_imports(module: str) -> set[str]:
    """The ``largemeta.data.*`` modules that ``module`` imports anywhere (function bodies included)."""
    tree = ast.parse((DATA_DIR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n.split(".")[2] for n in names if n.startswith("largemeta.data.") and n.count(".") >= 2}
    return found & set(LAYERS)


def test_every_data_module_has_a_layer():
    modules = {p.stem for p in DATA_DIR.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS)


@pytest.mark.parametrize("module", LAYERS)
def test_imports_point_down(module):
    below = set(LAYERS[: LAYERS.index(module)])
    assert data_imports(module) <= below, f"{module} imports {sorted(data_imports(module) - below)}"
