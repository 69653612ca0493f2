"""The package's layering: notebooks -> animegen_utils -> diffusers, no cycles, no upward imports.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy import
that breaks the layering fails here as well as one at the top of a module.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "animegen_utils"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The kit's modules that module ``name`` imports (a package's ``__init__`` for ``from pkg import x``
    unless ``x`` is a module of its own)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names)
    return {t for t in found if t.split(".")[0] == "animegen_utils" and t != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_graph_sees_imports():
    # The reader of this file must find real edges, or every test below passes vacuously.
    assert "animegen_utils.adapters" in GRAPH["animegen_utils.generation"]
    assert "animegen_utils.adapters.fusing" in GRAPH["animegen_utils.adapters.state"]


def test_no_import_cycles():
    # A package's __init__ re-exporting its own modules is not a cycle; anything else is.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def reaches(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("lower, upper", [
    ("animegen_utils.adapters", "animegen_utils.pipelines"),
    ("animegen_utils.adapters", "animegen_utils.generation"),
    ("animegen_utils.adapters", "animegen_utils.lora"),
    ("animegen_utils.adapters", "animegen_utils.serve"),
    ("animegen_utils.pipelines", "animegen_utils.generation"),
    ("animegen_utils.pipelines", "animegen_utils.lora"),
    ("animegen_utils.generation", "animegen_utils.lora"),
    ("animegen_utils.generation", "animegen_utils.serve"),
    # reference-image adapters sit beside adapters: below pipelines, generation and the tools above
    ("animegen_utils.reference", "animegen_utils.pipelines"),
    ("animegen_utils.reference", "animegen_utils.generation"),
    ("animegen_utils.reference", "animegen_utils.lora"),
    ("animegen_utils.reference", "animegen_utils.serve"),
    ("animegen_utils.reference", "animegen_utils.evaluate"),
    ("animegen_utils.adapters", "animegen_utils.reference"),
])
def test_no_upward_imports(lower, upper):
    below = [m for m in MODULES if m == lower or m.startswith(lower + ".")]
    bad = sorted(f"{m} -> {t}" for m in below for t in reaches(m) if t == upper or t.startswith(upper + "."))
    assert not bad, f"{lower} must not import {upper} (directly or through another module): {bad}"
