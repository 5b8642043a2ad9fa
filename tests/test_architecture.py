"""The layering of docs/architecture.md, checked against the code's imports (function-level ones included).

Imports only point down the list of layers; within a layer they must not form a cycle.
``largemeta/__init__.py`` (the package's face, which re-exports lazily) is the top layer like any other
module: ``from largemeta import X`` counts as an import of the face unless ``X`` is a submodule
(``from largemeta import console`` imports ``largemeta.console``), so no module below the face may take a
name from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import largemeta

SRC = Path(largemeta.__file__).parent
# top to bottom: a module may import its own layer or a lower one
LAYERS = [
    ["__init__"],  # the package face: lazily imports api and phi; nothing imports it
    ["cli", "__main__"],
    ["report"],
    ["experiments"],
    ["train"],
    ["metatest", "testing", "api", "phi"],
    ["execution"],
    ["runs"],
    ["models", "synthetic"],
    ["data"],  # the data layer's face: re-exports its three rooms
    ["data.tasks"],  # suites, TaskImages, sampling, streaming, the loader
    ["data.sources"],  # fetching, parsing, the built-in and bring-your-own datasets, the registry
    ["data.store"],  # the cache folder, ArrayDataset, the cache format, folder listings
    ["core"],
    ["checkpoint", "registry", "trackers"],
    ["files", "signals", "stats", "argtypes", "console", "devices", "provenance"],
    ["errors", "_version"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in src.rglob("*.py"):
        rel = path.relative_to(src.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            # ``from P import X`` imports the submodule P.X when there is one, else takes X from P itself
            targets = [base if a.name == "*" else f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str) -> int:
    """The layer of ``module``: its room's (``data.store``) where that has a layer of its own, else its
    top-level name's; the package face is ``__init__``."""
    parts = module.split(".")[1:]
    if len(parts) > 1 and ".".join(parts[:2]) in LAYER:
        return LAYER[".".join(parts[:2])]
    return LAYER[parts[0] if parts else "__init__"]


def upward_imports(known: dict[str, Path]) -> list[str]:
    return [
        f"{name} -> {target}"
        for name, path in known.items()
        for target in sorted(imports(name, path, known))
        if layer_of(target) < layer_of(name)
    ]


def import_cycles(known: dict[str, Path]) -> list[list[str]]:
    graph = {n: imports(n, p, known) for n, p in known.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_module_has_a_layer_and_imports_point_down():
    wrong = upward_imports(modules())
    assert not wrong, f"imports that point up the layers of docs/architecture.md: {wrong}"


def test_no_import_cycles():
    cycles = import_cycles(modules())
    assert not cycles, f"import cycles: {cycles}"


def test_an_import_of_the_package_face_from_below_is_caught(tmp_path):
    # a synthetic package: the face, a low module taking a name from it, one importing a submodule through it
    pkg = tmp_path / "largemeta"
    (pkg / "runs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from largemeta._version import __version__\n")
    (pkg / "_version.py").write_text('__version__ = "0"\n')
    (pkg / "console.py").write_text("")
    (pkg / "runs" / "__init__.py").write_text("")
    (pkg / "runs" / "folder.py").write_text("from largemeta import __version__, console\n")
    (pkg / "provenance.py").write_text("def environment():\n    import largemeta\n")
    (pkg / "files.py").write_text("from largemeta import console\n")
    known = modules(pkg)
    assert upward_imports(known) == [
        "largemeta.provenance -> largemeta",
        "largemeta.runs.folder -> largemeta",
    ]
    (pkg / "__init__.py").write_text("def f():\n    from largemeta.runs import folder\n")
    assert import_cycles(modules(pkg)) == [["largemeta", "largemeta.runs.folder", "largemeta"]]


def test_no_two_modules_share_a_base_name():
    """A module's file name names one file of the package (package faces and ``__main__`` aside), so a name
    in a traceback or an import never needs its folder to tell two rooms apart (docs/architecture.md)."""
    by_name: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            by_name.setdefault(path.stem, []).append(str(path.relative_to(SRC)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"modules that share a base name across rooms: {shared}"
