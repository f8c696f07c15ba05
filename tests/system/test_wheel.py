"""The wheel a user installs: built with ``python -m build``, it holds the package and its
sample data; installed into a fresh venv, its ``roformer-sim-ft`` command runs ``init`` and
``similarity``. The venv sees this environment's packages through a .pth file (TensorFlow is not
installed again) and gets the wheel with ``--no-deps``, so what is tested is the wheel itself. Its version is
the one ``roformer_sim_ft/__init__.py`` states."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "roformer_sim_ft"


def _run(cmd, cwd, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_holds_the_sample_data_and_its_command_runs(tmp_path):
    # build from a copy of the sources, so nothing is written into the repository
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "demo_out", "runs", "checkpoints"))
    built = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", source],
                 cwd=tmp_path)
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("roformer_sim_ft-*.whl")
    version = re.search(r'^__version__ = "([^"]+)"$', (PACKAGE / "__init__.py").read_text(encoding="utf-8"), re.M)[1]
    assert wheel.name.startswith(f"roformer_sim_ft-{version}-"), wheel.name  # setup.py reads the package's version
    names = set(zipfile.ZipFile(wheel).namelist())
    samples = {p.relative_to(REPO).as_posix() for p in (PACKAGE / "data" / "sample_data").rglob("*") if p.is_file()}
    assert len(samples) > 10 and samples <= names, samples - names
    modules = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")}
    assert modules <= names and not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip())
    (site / "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "ROFORMER_SIM_FT_VERBOSE")}
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=tmp_path, env=env)

    where = _run([python, "-c", "import roformer_sim_ft.data.readers as r; print(r.__file__); print(r.sample_data_dir())"],
                 cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's copy, not the repository's
    command = venv / "bin" / "roformer-sim-ft"
    init = _run([command, "init", "--config", "tiny", "--out", tmp_path / "ck", "--seed", "3"], cwd=tmp_path, env=env)
    assert init.stdout == f"wrote {tmp_path / 'ck'}\n" and init.stderr == ""
    sim = _run([command, "similarity", "--checkpoint", tmp_path / "ck", "今天天气不错", "今天天气很好"], cwd=tmp_path, env=env)
    assert -1 <= float(sim.stdout) <= 1 and sim.stderr == ""
