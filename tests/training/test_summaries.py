"""TensorBoard: the training loop's event files, read back with TensorFlow alone."""
from __future__ import annotations

import pytest

from roformer_sim_ft.data import batches as B
from roformer_sim_ft.fs import folders as outputs
from roformer_sim_ft.training import summaries
from roformer_sim_ft import training
from roformer_sim_ft.cli import build_parser, _loop_config
from roformer_sim_ft.training.objectives import SupervisedObjective


class _Result:
    """An evaluation result of two tasks, as SimilarityEvaluator's."""

    def __init__(self, a: float, b: float) -> None:
        self.primary_metric = (a + b) / 2
        self._tasks = {"ATEC": a, "LCQMC": b}

    def as_dict(self) -> dict:
        return {"model": "m", "tasks": {t: {"spearman_x100": v, "rows": 4} for t, v in self._tasks.items()},
                "average": self.primary_metric, "missing": []}


def test_training_writes_loss_learning_rate_speed_and_evaluations(tiny_checkpoint, tokenizer, sample_data, tmp_path):
    scores = iter([(10.0, 20.0), (30.0, 50.0)])
    batches = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8)
    config = training.TrainConfig(out_dir=str(tmp_path / "run"), steps=4, learning_rate=1e-3, warmup_steps=2,
                                  log_every=1, eval_every=2, save_every=0, show_progress=False)
    losses = {}
    training.train(SupervisedObjective(tiny_checkpoint), batches, config,
                   evaluator=lambda model: _Result(*next(scores)), on_step=lambda s, v: losses.setdefault(s, v["loss"]))
    logs = tmp_path / "run" / "logs"
    assert "logs" in outputs.read_manifest(tmp_path / "run")["files"]  # ours: cleared by --overwrite
    found = summaries.read_scalars(logs)
    assert [s for s, _ in found["train/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in found["train/loss"]] == pytest.approx([losses[s] for s in (1, 2, 3, 4)])
    # warmup over 2 steps: 0.5e-3 at step 1, then 1e-3
    assert [v for _, v in found["train/learning_rate"]] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])
    assert all(v > 0 for _, v in found["train/steps_per_second"])
    assert found["eval/ATEC"] == [(2, 10.0), (4, 30.0)]
    assert found["eval/LCQMC"] == [(2, 20.0), (4, 50.0)]
    assert found["eval/average"] == [(2, 15.0), (4, 40.0)]


def test_tensorboard_dir_and_off(tiny_checkpoint, tokenizer, sample_data, tmp_path):
    batches = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8)
    config = training.TrainConfig(out_dir=str(tmp_path / "a"), steps=1, learning_rate=1e-3, save_every=0,
                                  show_progress=False, tensorboard_dir=str(tmp_path / "board"))
    training.train(SupervisedObjective(tiny_checkpoint), batches, config)
    assert "train/loss" in summaries.read_scalars(tmp_path / "board")
    assert not (tmp_path / "a" / "logs").exists()
    config = training.TrainConfig(out_dir=str(tmp_path / "b"), steps=1, learning_rate=1e-3, save_every=0,
                                  show_progress=False, tensorboard=False)
    training.train(SupervisedObjective(tiny_checkpoint), B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8),
                   config)
    assert not (tmp_path / "b" / "logs").exists()


def test_cli_flags():
    parse = lambda *extra: _loop_config(build_parser().parse_args(  # noqa: E731
        ["train", "--checkpoint", "c", "--data", "d", "--out", "o", *extra]))
    assert parse().log_dir().endswith("o/logs")
    assert parse("--tensorboard", "tb").log_dir() == "tb"
    assert parse("--no-tensorboard").log_dir() is None
    assert parse("--collective-timeout", "30").collective_timeout == 30.0
