"""The package's shape: modules of a readable size, no import circles (imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "roformer_sim_ft"


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, wherever the import statement stands."""
    found = set()
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # never executed: annotations only
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("roformer_sim_ft."):
            found.add(node.module.split(".")[1])
    return found - {"__init__"}


def test_no_import_circles():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    # __init__ may import what it exports; nothing imports __init__'s names back but errors.
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_modules_stay_readable():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {name: n for name, n in sizes.items() if n > 600}, sizes
