"""Every script in examples/ runs on a tiny checkpoint, called in-process through its ``main(argv)``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from roformer_sim_ft.data import readers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(capsys, script: str, *args) -> str:
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    assert module.main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["distill.py", "generate.py", "pretrain.py",
                                                             "retrieval.py", "similarity.py", "supervised.py"]


def test_similarity_and_retrieval(tiny_checkpoint, capsys):
    assert _run(capsys, "similarity.py", tiny_checkpoint).count("published base -ft") == 10
    out = _run(capsys, "retrieval.py", tiny_checkpoint).splitlines()
    assert len(out) == 3 and out[0].startswith("微信和支付宝，哪个好? -> [(")


def test_retrieval_reads_a_corpus_file(spread_checkpoint, tmp_path, capsys):
    corpus = ["给我推荐一款红色的车", "今天天气很好", "花呗如何开通"]  # each query itself ranks first
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n\n", encoding="utf-8")
    out = _run(capsys, "retrieval.py", spread_checkpoint, tmp_path / "corpus.txt").splitlines()
    assert out[1].startswith("给我推荐一款红色的车 -> [('给我推荐一款红色的车', 1.0)")
    assert out[2].startswith("花呗如何开通 -> [('花呗如何开通', 1.0)")


def test_generate(tiny_checkpoint, capsys):
    lines = _run(capsys, "generate.py", tiny_checkpoint, "微信和支付宝哪个好？", 8, 3).splitlines()
    assert 1 <= len(lines) <= 3 and "微信和支付宝哪个好？" not in lines


def test_supervised_then_distill(tiny_checkpoint, tmp_path, capsys):
    sample = readers.sample_data_dir()
    assert "the -ft encoder is in" in _run(capsys, "supervised.py", tiny_checkpoint, sample, tmp_path / "ft", 2)
    assert (tmp_path / "ft/bert_model.ckpt.index").exists()
    out = _run(capsys, "distill.py", tmp_path / "ft", tiny_checkpoint, sample / "synonyms/sample.jsonl",
               tmp_path / "student", 2)
    assert "seq2seq" in out and (tmp_path / "student/bert_model.ckpt.index").exists()


def test_pretrain(tiny_checkpoint, tmp_path, capsys):
    s = readers.sample_data_dir() / "synonyms"
    out = _run(capsys, "pretrain.py", tiny_checkpoint, tmp_path / "sim", s / "sample.jsonl", s / "pairs.jsonl",
               "--steps", 2, "--weights", "2,1")
    assert "seq2seq" in out and "similarity" in out and (tmp_path / "sim/bert_model.ckpt.index").exists()


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        _run(capsys, "generate.py")
    assert e.value.code == 2
