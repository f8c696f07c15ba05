"""The package's shape: at most 12 top-level modules, modules of a readable size, no import circles
(between modules, imports inside functions count; between subpackages too), keras3/ and data/readers free of TensorFlow."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "roformer_sim_ft"
NAME = PACKAGE.name


def _modules() -> dict[str, Path]:
    """Dotted name below the package ('' for its __init__, 'model' for model/__init__) -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports, wherever the statement stands (``if TYPE_CHECKING:`` excepted)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            base = ".".join(base + ([node.module] if node.module else []))
        elif (node.module or "").startswith(NAME + ".") or node.module == NAME:
            base = node.module[len(NAME) + 1:]
        else:
            continue
        for alias in node.names:
            child = f"{base}.{alias.name}" if base else alias.name
            found.add(child if child in modules else base)
    return {m for m in found if m in modules and m != name} - {""}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
    return cycles


def test_no_import_circles_between_modules_or_subpackages():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items() if name}
    assert not _cycles(graph), " ; ".join(" -> ".join(c) for c in _cycles(graph))
    wings = {}
    for name, targets in graph.items():
        for target in targets:
            a, b = name.split(".")[0], target.split(".")[0]
            if a != b:
                wings.setdefault(a, set()).add(b)
    assert not _cycles(wings), " ; ".join(" -> ".join(c) for c in _cycles(wings))


def test_modules_stay_readable():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {name: n for name, n in sizes.items() if n > 600}, sizes  # step 1; 500 once the splits are in
    assert len(list(PACKAGE.glob("*.py"))) <= 12, sorted(p.name for p in PACKAGE.glob("*.py"))


def test_keras3_and_the_readers_import_no_tensorflow():
    code = ("import sys; import roformer_sim_ft.keras3.wordpiece, roformer_sim_ft.keras3.tensor_bundle, "
            "roformer_sim_ft.data.readers, roformer_sim_ft.settings, roformer_sim_ft.checkpoints; "
            "print(sorted(m for m in ('tensorflow', 'bert4keras', 'tf_keras', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
