"""What a user sees: commands print only our own lines (TensorFlow's start-up noise is
silenced unless --verbose), warnings that matter are ours, and a missing bert4keras is one
line with the install command."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from roformer_sim_ft import compat
from roformer_sim_ft.cli import main
from roformer_sim_ft.data.readers import sample_data_dir
from roformer_sim_ft.settings import VERBOSE_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    base["PYTHONPATH"] = os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**base, **(env or {})}, cwd=REPO)


CLI = "import sys; from roformer_sim_ft.cli import main; sys.exit(main(sys.argv[1:]))"


def test_a_command_prints_only_its_own_lines_unless_verbose(tiny_checkpoint):
    args = ["similarity", "--checkpoint", tiny_checkpoint, "今天天气不错", "今天天气很好"]
    quiet = _python(CLI, *args)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert float(quiet.stdout) <= 1.0 and quiet.stdout.count("\n") == 1
    loud = _python(CLI, "--verbose", *args)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert any(compat._ABSL_LINE.match(line.encode()) for line in loud.stderr.splitlines()), loud.stderr


def test_tensorflow_log_lines_are_filtered_by_the_level_in_force():
    lines = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             b"I0000 00:00:1796081071.746412    9366 port.cc:153] oneDNN custom operations are on.",
             b"W0000 00:00:1796081071.746412    9366 x.cc:1] a warning",
             b"E0000 00:00:1796081076.427297    9366 cuda_platform.cc:52] failed call to cuInit",
             b"Traceback (most recent call last):"]
    kept = {level: [i for i, line in enumerate(lines) if compat._wanted(line, level)] for level in range(4)}
    assert kept == {0: [0, 1, 2, 3, 4], 1: [2, 3, 4], 2: [3, 4], 3: [4]}


def test_missing_bert4keras_is_one_line_with_the_install_command(tiny_checkpoint):
    blocked = "import sys; sys.modules['bert4keras'] = None; "  # as if not installed
    imported = _python(blocked + "import roformer_sim_ft.compat")
    assert imported.returncode == 1
    assert imported.stderr.strip().splitlines()[-1] == (
        "ImportError: roformer_sim_ft needs bert4keras 0.11.5, which is not installed: "
        "pip install --no-deps bert4keras==0.11.5 (--no-deps: its keras<=2.3.1 pin is obsolete)")
    assert "tensorflow" not in imported.stderr.lower()  # reported before TensorFlow loads
    cli = _python(blocked + CLI, "similarity", "--checkpoint", tiny_checkpoint, "a", "b")
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1
    assert cli.stderr.startswith("roformer-sim-ft: error: ") and compat.BERT4KERAS_INSTALL in cli.stderr


def test_devices_without_a_gpu_is_said_in_our_words(tiny_checkpoint, tmp_path, capsys):
    if compat.tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: the no-GPU warning does not apply")
    args = ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(sample_data_dir()), "--out", str(tmp_path / "o"),
            "--steps", "1", "--batch-size", "4", "--no-progress", "--devices", "4", "--mixed-precision", "fp16"]
    assert main(args) == 2  # fewer than 4 logical CPUs here
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("roformer-sim-ft: warning: --devices 4: TensorFlow finds no GPU (no CUDA driver or device), "
                      "so the 4 devices must be logical CPUs")
    assert err[1] == "roformer-sim-ft: warning: --mixed-precision fp16 without a GPU: a CPU computes float16 slower than float32"
    assert err[2].startswith("roformer-sim-ft: error: devices=4 but only") and len(err) == 3
