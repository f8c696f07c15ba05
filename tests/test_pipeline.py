"""Stage functions and their CLI commands: train, distill, evaluate (checked by hand with scipy)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from roformer_sim_ft import pipeline
from roformer_sim_ft.data import readers
from roformer_sim_ft.cli import main
from roformer_sim_ft.evaluation import PROBES


def _hand_spearman(model, path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t")]
    # Each distinct text gets one vector, so a pair listed in both orders scores the same: the same text
    # encoded in batches of other shapes differs in the last bits on some CPUs, and breaks that tie.
    # Cosines in float64: float32 dot products round pairs whose cosines differ in the 8th digit to one
    # value, and those made-up ties move Spearman by more than the tolerance on some CPUs.
    texts = sorted({r[i].strip() for r in rows for i in (0, 1)})
    vector = dict(zip(texts, np.asarray(model.encode(texts), np.float64)))
    a, b = (np.stack([vector[r[i].strip()] for r in rows]) for i in (0, 1))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 100 * stats.spearmanr(cos, [float(r[2]) for r in rows]).correlation, len(rows)


def test_evaluate_equals_hand_computed_spearman(spread_checkpoint, tmp_path):
    from roformer_sim_ft.model import SimModel

    model = SimModel.load(spread_checkpoint)
    sample = readers.sample_data_dir()
    out = pipeline.evaluate(spread_checkpoint, sample, split="valid", json_out=tmp_path / "e.json", probes=True)
    for task in ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B"):
        expected, rows = _hand_spearman(model, sample / f"senteval_cn/{task}/{task}.valid.data")
        assert out.result.scores[task].rows == rows
        assert out.result.scores[task].spearman == pytest.approx(expected, abs=1e-3)
    doc = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    assert doc["checkpoint_fingerprint"] and doc["data_fingerprint"] and len(doc["probes"]) == len(PROBES)
    # the JSON keeps 4 decimals
    assert doc["average"] == pytest.approx(np.mean([out.result.scores[t].spearman for t in out.result.scores]), abs=5e-5)


def test_evaluate_cli_reports_missing_task_and_bad_split(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "d/senteval_cn/BQ"
    folder.mkdir(parents=True)
    (folder / "BQ.valid.data").write_text("我喜欢北京\t我很喜欢北京\t1\n今天天气不错\t电影不好\t0\n好的\t好的呀\t1\n", encoding="utf-8")
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "d"), "--split", "valid"]) == 0
    printed = capsys.readouterr().out
    assert "BQ" in printed and "missing (skipped): ATEC, LCQMC, PAWSX, STS-B" in printed
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "d")]) == 2
    assert "no test file for any of" in capsys.readouterr().err


def test_train_cli_bad_line_names_file_and_line(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "BQ.train.data"
    bad.write_text("我喜欢北京\t我很喜欢北京\t1\n只有两列\t0\n", encoding="utf-8")
    args = ["train", "--checkpoint", str(tiny_checkpoint), "--pairs-file", str(bad), "--out", str(tmp_path / "o"),
            "--steps", "1", "--batch-size", "4", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2:" in err
    assert main(args + ["--skip-bad-lines"]) == 0
    assert "1 bad line" in capsys.readouterr().out
    assert (tmp_path / "o/bert_model.ckpt.index").exists()


def test_distill_cli_writes_student(tiny_checkpoint, tmp_path, capsys):
    pairs = readers.sample_data_dir() / "synonyms/pairs.jsonl"
    assert main(["distill", "--teacher", str(tiny_checkpoint), "--student", str(tiny_checkpoint), "--pairs", str(pairs),
                 "--out", str(tmp_path / "s"), "--steps", "2", "--batch-size", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "seq2seq" in out and "similarity" in out
    run = json.loads((tmp_path / "s/run.json").read_text(encoding="utf-8"))
    assert run["settings"]["stage"] == "distill" and run["result"]["step"] == 2


def test_train_cli_buckets_by_default_and_resume_keeps_the_setting(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(readers.sample_data_dir()), "--out", str(out),
            "--batch-size", "8", "--no-progress", "--save-every", "1"]
    assert main(base + ["--steps", "2"]) == 0
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["settings"]["bucket"] == 16 and run["settings"]["pad_to"] == 1
    capsys.readouterr()
    assert main(base + ["--steps", "3", "--resume", "--bucket", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bucket 16, not 1" in err and "--bucket 16" in err
    assert main(base + ["--steps", "3", "--resume"]) == 0
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["result"]["step"] == 3


def test_stage_flags_default_to_the_stage_settings():
    from dataclasses import asdict

    from roformer_sim_ft.cli import _loop_config, _stage_args, build_parser
    from roformer_sim_ft.settings import DistillSettings, SupervisedSettings, TrainConfig

    common = ["--out", "o"]
    train = build_parser().parse_args(["train", "--checkpoint", "c", *common])
    distill = build_parser().parse_args(["distill", "--teacher", "t", "--student", "s", *common])
    for args, stage in ((train, SupervisedSettings()), (distill, DistillSettings())):
        for name, value in _stage_args(args).items():
            assert value == asdict(stage)[name], name
        loop = _loop_config(args)
        assert (loop.steps, loop.seed, loop.save_every) == (TrainConfig.steps, TrainConfig.seed, TrainConfig.save_every)
    assert _stage_args(train)["learning_rate"] == 2e-5 and _stage_args(distill)["learning_rate"] == 1e-5
    assert _stage_args(train)["bucket"] == 16 and _stage_args(distill)["bucket"] == 1
    xla = build_parser().parse_args(["train", "--checkpoint", "c", *common, "--xla", "--bucket", "4"])
    assert (_stage_args(xla)["bucket"], _stage_args(xla)["pad_to"]) == (4, 16)
    assert _stage_args(build_parser().parse_args(["train", "--checkpoint", "c", *common, "--xla", "--pad-to", "8"]))["pad_to"] == 8


def test_pipeline_runs_stage1_first(tiny_checkpoint, tmp_path, capsys):
    from roformer_sim_ft import checkpoints
    from roformer_sim_ft.data import readers

    config, vocab, weights = checkpoints.load_checkpoint(tiny_checkpoint)  # a plain RoFormer: no pooler
    (tmp_path / "roformer").mkdir()
    checkpoints._save_tensors(tmp_path / "roformer" / checkpoints.CKPT_NAME,
                              {k: v for k, v in weights.items() if not k.startswith("bert/pooler/")})
    checkpoints.write_config_vocab(tmp_path / "roformer", config, vocab)
    synonyms = readers.sample_data_dir() / "synonyms"
    out = tmp_path / "all"
    assert main(["pipeline", "--checkpoint", str(tmp_path / "roformer"), "--data", str(readers.sample_data_dir()),
                 "--out", str(out), "--pretrain-data", str(synonyms / "sample.jsonl"), "--pretrain-steps", "1",
                 "--supervised-steps", "1", "--distill-steps", "1", "--pretrain-batch-size", "8",
                 "--supervised-batch-size", "8", "--distill-batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "== 1/5 stage 1" in printed and "== 5/5 evaluation" in printed
    summary = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert set(summary["outputs"]) == {"pretrained", "supervised", "distilled", "export"}
    assert json.loads((out / "pretrained/run.json").read_text())["settings"]["stage"] == "pretrain"
    # the later stages start from stage 1's output
    assert json.loads((out / "supervised/run.json").read_text())["settings"]["checkpoint"] == str(out / "pretrained")
    assert json.loads((out / "distilled/run.json").read_text())["settings"]["student"] == str(out / "pretrained")
