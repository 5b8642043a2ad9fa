"""The layering of docs/architecture.md, checked against the code's imports (function-level ones included).

Imports only point down the list of layers; within a layer they must not form a cycle.
``largemeta/__init__.py`` (the package's face, which re-exports lazily) is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import largemeta

SRC = Path(largemeta.__file__).parent
# top to bottom: a module may import its own layer or a lower one
LAYERS = [
    ["cli", "__main__"],
    ["report"],
    ["experiments"],
    ["train"],
    ["metatest", "testing", "api", "phi"],
    ["execution"],
    ["runs"],
    ["models", "synthetic"],
    ["data"],
    ["core"],
    ["checkpoint", "registry", "trackers"],
    ["files", "signals", "stats", "argtypes", "console", "devices", "provenance"],
    ["errors"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
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
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != "largemeta":
                found.add(target)
    return found


def layer_of(module: str) -> int:
    return LAYER[module.split(".")[1]]


def test_every_module_has_a_layer_and_imports_point_down():
    known = modules()
    wrong = []
    for name, path in known.items():
        if name == "largemeta":
            continue
        for target in imports(name, path, known):
            if layer_of(target) < layer_of(name):
                wrong.append(f"{name} -> {target}")
    assert not wrong, f"imports that point up the layers of docs/architecture.md: {wrong}"


def test_no_import_cycles():
    known = modules()
    graph = {n: imports(n, p, known) for n, p in known.items() if n != "largemeta"}
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
    assert not cycles, f"import cycles: {cycles}"
