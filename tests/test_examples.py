"""Every script in examples/ runs on a tiny checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roformer_sim_ft import data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_similarity_and_retrieval(tiny_checkpoint):
    assert _run("similarity.py", tiny_checkpoint).count("published base -ft") == 10
    out = _run("retrieval.py", tiny_checkpoint).splitlines()
    assert len(out) == 3 and out[0].startswith("微信和支付宝，哪个好? -> [(")


def test_generate(tiny_checkpoint):
    lines = _run("generate.py", tiny_checkpoint, "微信和支付宝哪个好？", 8, 3).splitlines()
    assert 1 <= len(lines) <= 3 and "微信和支付宝哪个好？" not in lines


def test_supervised_then_distill(tiny_checkpoint, tmp_path):
    sample = data.sample_data_dir()
    assert "the -ft encoder is in" in _run("supervised.py", tiny_checkpoint, sample, tmp_path / "ft", 2)
    assert (tmp_path / "ft/bert_model.ckpt.index").exists()
    out = _run("distill.py", tmp_path / "ft", tiny_checkpoint, sample / "synonyms/sample.jsonl", tmp_path / "student", 2)
    assert "seq2seq" in out and (tmp_path / "student/bert_model.ckpt.index").exists()


def test_pretrain(tiny_checkpoint, tmp_path):
    s = data.sample_data_dir() / "synonyms"
    out = _run("pretrain.py", tiny_checkpoint, tmp_path / "sim", s / "sample.jsonl", s / "pairs.jsonl",
               "--steps", 2, "--weights", "2,1")
    assert "seq2seq" in out and "similarity" in out and (tmp_path / "sim/bert_model.ckpt.index").exists()
