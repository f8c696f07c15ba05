"""The package's shape: at most 12 top-level modules, modules of a readable size, no import circles
(between modules, imports inside functions count; between subpackages too), keras3/ and data/readers free of
TensorFlow, the public import paths working; and the tests' own layout (tests/<subpackage>/test_<module>.py)."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
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


def test_public_paths():
    code = textwrap.dedent("""
        import importlib, sys
        from roformer_sim_ft import keras3
        assert "keras" not in sys.modules  # the package is lazy: Keras 3 loads with its first public name
        for name in ("SimEncoder", "load_checkpoint", "weight_names", "ARCHIVE_NAME", "keras", "ops"):
            assert name in keras3.__all__
        from roformer_sim_ft import SimModel
        from roformer_sim_ft.model import SimModel as same, make_tokenizer, pad
        assert SimModel is same
        from roformer_sim_ft import export as ex
        for name in ("export", "export_model", "Exported", "FORMATS", "TOLERANCE", "VERIFY_TEXTS", "KERAS_ARCHIVE",
                     "HF_WEIGHTS", "HF_POOLER", "hf_weights", "hf_config", "read_safetensors", "write_safetensors"):
            getattr(ex, name)
        assert callable(ex.export) and ex.export.__module__ == "roformer_sim_ft.export.core"
        from roformer_sim_ft import training
        from roformer_sim_ft.settings import TrainConfig
        assert training.TrainConfig is TrainConfig and callable(training.train)
        for name in ("STATE_DIR", "TrainResult", "check_out_dir", "load_state_model", "make_optimizer", "make_strategy"):
            getattr(training, name)
        from roformer_sim_ft.cli import main, build_parser
        from roformer_sim_ft.pipeline import supervised, distill, pretrain, run_pipeline, SupervisedSettings
        from roformer_sim_ft.evaluation import PROBES
        importlib.import_module("roformer_sim_ft.demo")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_tests_mirror_the_package():
    """tests/<subpackage>/ exists only for a subpackage (or system/), and test file names are unique: the
    folders have no __init__.py, so pytest imports each test file under its bare name."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders <= subpackages | {"system"}, folders - subpackages
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_lint_is_clean():
    """ruff with the rules and width of pyproject.toml finds nothing in the package, tests, benchmarks, examples, tools."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=PACKAGE.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
