"""The one training loop, driven by both stages on tiny models and the bundled sample data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_sim_ft import checkpoints, data, training
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.objectives import DistillObjective, SupervisedObjective

import tensorflow as tf  # noqa: E402  (after roformer_sim_ft)


@pytest.fixture(scope="module")
def sample_supervised():
    return data.load_supervised_data(data.sample_data_dir())


@pytest.fixture(scope="module")
def sample_pairs():
    return data.load_distill_pairs([data.sample_data_dir() / "synonyms" / "sample.jsonl"])


def _supervised_run(ckpt, sample, tokenizer, out, steps, on_step=None, resume=False, **kw):
    batches = data.SupervisedBatches.from_data(sample, tokenizer, batch_size=16, seed=3)
    config = training.TrainConfig(
        out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=kw.pop("save_every", 100),
        log_every=1, show_progress=False, resume=resume, seed=11, **kw,
    )
    return training.train(SupervisedObjective(ckpt, dropout_rate=0.2), batches, config, on_step=on_step)


def test_supervised_loss_falls(tiny_checkpoint, tiny_model, sample_supervised, tmp_path):
    # 8 binary + 8 NLI pairs seen over and over: a working loop must fit them.
    few = data.SupervisedData(sample_supervised.binary[:8], sample_supervised.nli[:8], [], [])
    batches = data.SupervisedBatches.from_data(few, tiny_model.tokenizer, batch_size=16, seed=3)
    config = training.TrainConfig(out_dir=str(tmp_path / "out"), steps=40, learning_rate=3e-3, log_every=1, show_progress=False)
    objective = SupervisedObjective(tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
    result = training.train(objective, batches, config)
    losses = [r["loss"] for r in json.loads((tmp_path / "out/run.json").read_text())["losses"]]
    assert len(losses) == 40 and not result.interrupted
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    # the output is a released-layout checkpoint whose MLM weights are carried over unchanged
    _, _, before = checkpoints.load_checkpoint(tiny_checkpoint)
    _, _, after = checkpoints.load_checkpoint(tmp_path / "out")
    assert np.array_equal(before["cls/predictions/output_bias"], after["cls/predictions/output_bias"])
    assert not np.array_equal(before["bert/pooler/dense/kernel"], after["bert/pooler/dense/kernel"])


def test_interrupted_then_resumed_equals_uninterrupted(tiny_checkpoint, tiny_model, sample_supervised, tmp_path):
    _supervised_run(tiny_checkpoint, sample_supervised, tiny_model.tokenizer, tmp_path / "full", steps=6)

    def interrupt(step, losses):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = _supervised_run(tiny_checkpoint, sample_supervised, tiny_model.tokenizer, tmp_path / "cut", steps=6, on_step=interrupt)
    assert first.interrupted and first.step == 3
    assert not (tmp_path / "cut/bert_model.ckpt.index").exists()
    second = _supervised_run(tiny_checkpoint, sample_supervised, tiny_model.tokenizer, tmp_path / "cut", steps=6, resume=True)
    assert second.step == 6 and not second.interrupted
    _, _, full = checkpoints.load_checkpoint(tmp_path / "full")
    _, _, resumed = checkpoints.load_checkpoint(tmp_path / "cut")
    # Same seed, same batches, same dropout masks, restored optimizer slots: equal to float32 round-off.
    for name in full:
        np.testing.assert_allclose(resumed[name], full[name], rtol=0, atol=1e-6, err_msg=name)
    # a training state exports to the released layout (here: the last state equals the final model)
    from roformer_sim_ft.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "full/training_state/step-6"), "--out", str(tmp_path / "x")]) == 0
    _, _, exported = checkpoints.load_checkpoint(tmp_path / "x")
    assert all(np.array_equal(exported[k], full[k]) for k in full)


def test_resume_without_state_is_a_clear_error(tiny_checkpoint, tiny_model, sample_supervised, tmp_path):
    with pytest.raises(RoformerSimError, match="--resume: no training state"):
        _supervised_run(tiny_checkpoint, sample_supervised, tiny_model.tokenizer, tmp_path / "none", steps=2, resume=True)


def test_periodic_state_is_kept_and_pruned(tiny_checkpoint, tiny_model, sample_supervised, tmp_path):
    _supervised_run(tiny_checkpoint, sample_supervised, tiny_model.tokenizer, tmp_path / "o", steps=7, save_every=2)
    states = sorted(p.name for p in (tmp_path / "o/training_state").iterdir())
    assert states == ["step-6", "step-7"]
    saved = json.loads((tmp_path / "o/training_state/step-7/state.json").read_text())
    assert saved["step"] == 7 and saved["sampler"]["batches"] == 7


@pytest.mark.parametrize("objective", ["cos-mse", "cos-mse-pm1", "cos-hinge"])
def test_cosine_objectives_train(tiny_checkpoint, tiny_model, sample_supervised, tmp_path, objective):
    batches = data.SupervisedBatches.from_data(sample_supervised, tiny_model.tokenizer, batch_size=16)
    config = training.TrainConfig(out_dir=str(tmp_path), steps=2, learning_rate=1e-3, show_progress=False)
    result = training.train(SupervisedObjective(tiny_checkpoint, objective=objective), batches, config)
    assert np.isfinite(result.losses["loss"])


def test_evaluator_keeps_best(tiny_checkpoint, tiny_model, sample_supervised, tmp_path):
    scores = iter([1.0, 3.0, 2.0])

    class Result:
        def __init__(self, value):
            self.primary_metric = value

        def as_dict(self):
            return {"average": self.primary_metric}

    batches = data.SupervisedBatches.from_data(sample_supervised, tiny_model.tokenizer, batch_size=16)
    config = training.TrainConfig(out_dir=str(tmp_path), steps=6, eval_every=2, learning_rate=1e-3, show_progress=False)
    saved = {}

    def evaluator(model):
        result = Result(next(scores))
        saved[len(saved)] = model.get_weights()["bert/pooler/dense/kernel"].copy()
        return result

    result = training.train(SupervisedObjective(tiny_checkpoint), batches, config, evaluator=evaluator)
    assert result.best == {"step": 4, "metric": 3.0}
    assert [e["step"] for e in result.evaluations] == [2, 4, 6]
    _, _, out = checkpoints.load_checkpoint(tmp_path)
    np.testing.assert_array_equal(out["bert/pooler/dense/kernel"], saved[1])


def test_distillation_lowers_both_terms(tiny_checkpoint, tiny_model, sample_pairs, tmp_path):
    # A random tiny model at init std 0.02 maps every text to nearly the same vector; a
    # teacher drawn at std 1.0 has a spread similarity matrix, so the similarity term starts high.
    teacher = tmp_path / "teacher"
    config, vocab, _ = checkpoints.load_checkpoint(tiny_checkpoint)
    spread = checkpoints.init_weights({**config, "initializer_range": 1.0}, seed=123)
    checkpoints.write_checkpoint(teacher, config, vocab, spread)
    batches = data.DistillBatches.from_data(sample_pairs, tiny_model.tokenizer, batch_size=8, seed=0)
    # Both terms on the same fixed batches (the whole sample set), before and after: a training
    # batch of 8 rows is too noisy a measure of the similarity term.
    held = [batches.batch_at(i) for i in range(8)]

    def terms(student) -> np.ndarray:
        objective = DistillObjective(teacher, student, dropout_rate=0.0)
        objective.build()
        parts = [objective.loss(b, training=False)[1] for b in held]
        return np.array([[float(p[t]) for t in ("seq2seq", "similarity")] for p in parts]).mean(axis=0)

    before = terms(tiny_checkpoint)
    run = training.TrainConfig(out_dir=str(tmp_path / "student"), steps=30, learning_rate=2e-3, log_every=1, show_progress=False)
    training.train(DistillObjective(teacher, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0), batches, run)
    after = terms(tmp_path / "student")
    assert after[0] < before[0] and after[1] < before[1], (before, after)
    student = SimModel.load(tmp_path / "student")
    assert student.config == config


def test_target_only_logits_give_the_reference_loss_and_gradients(tiny_checkpoint, sample_pairs, tiny_model):
    """The MLM head on the scored positions only == the reference's head on every position."""
    batch = data.DistillBatches.from_data(sample_pairs, tiny_model.tokenizer, batch_size=8, seed=5).batch_at(0)
    assert 0 < batch["student_segment_ids"].sum() < batch["student_segment_ids"].size  # padding and both segments
    results = []
    for target_only in (True, False):
        objective = DistillObjective(tiny_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0,
                                     target_logits_only=target_only)
        objective.build()
        assert (objective._trunk is not None) == target_only
        with tf.GradientTape() as tape:
            loss, parts = objective.loss({k: tf.constant(v) for k, v in batch.items()}, training=True)
        grads = tape.gradient(loss, objective.trainable_variables)
        results.append((float(parts["seq2seq"]), float(parts["similarity"]), grads))
    (s1, m1, g1), (s2, m2, g2) = results
    assert s1 > 1.0 and np.isclose(s1, s2, rtol=1e-6, atol=0), (s1, s2)
    assert np.isclose(m1, m2, rtol=1e-6), (m1, m2)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        np.testing.assert_allclose(a, b, atol=1e-6 + 1e-4 * np.abs(b).max())


@pytest.mark.parametrize("stage", ["supervised", "distill"])
def test_xla_step_trains_like_the_plain_step(stage, tiny_checkpoint, tiny_model, sample_supervised, sample_pairs, tmp_path):
    """--xla (dense embedding gradient, all-position MLM head) == the plain step (sparse, scored positions only)."""
    _, _, start = checkpoints.load_checkpoint(tiny_checkpoint)
    trained = []
    for jit in (False, True):
        if stage == "supervised":
            batches = data.SupervisedBatches.from_data(sample_supervised, tiny_model.tokenizer, batch_size=8, seed=3, pad_to=16)
            objective = SupervisedObjective(tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
        else:
            batches = data.DistillBatches.from_data(sample_pairs, tiny_model.tokenizer, batch_size=8, seed=3, pad_to=16)
            # XLA: all positions
            objective = DistillObjective(tiny_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
        out = tmp_path / f"jit{jit}"
        config = training.TrainConfig(out_dir=str(out), steps=3, learning_rate=1e-3, save_every=0,
                                      show_progress=False, jit_compile=jit)
        training.train(objective, batches, config)
        if stage == "distill":
            assert objective.target_logits_only is not jit and (objective._trunk is None) is jit
        trained.append(checkpoints.load_checkpoint(out)[2])
    plain, xla = trained
    assert max(np.abs(plain[k] - start[k]).max() for k in start) > 1e-3  # the steps moved the weights
    for name in plain:
        np.testing.assert_allclose(xla[name], plain[name], atol=5e-5, err_msg=name)


def test_student_pooled_vector_from_unilm_pass_is_the_source_encoding(tiny_model):
    """Under the UniLM mask [CLS] sees only segment 0: the joint pass encodes the source alone."""
    source = tiny_model.tokenizer.encode("今天天气不错")[0]
    target = tiny_model.tokenizer.encode("今天天气很好")[0][1:]
    tokens = np.array([source + target])
    segments = np.array([[0] * len(source) + [1] * len(target)])
    pooled, _ = tiny_model.model.predict([tokens, segments], verbose=0)
    np.testing.assert_allclose(pooled[0], tiny_model.encode("今天天气不错", normalize=False), atol=1e-5)


def test_mirrored_strategy_on_two_logical_cpus(tiny_checkpoint, tmp_path):
    script = textwrap.dedent(
        f"""
        import roformer_sim_ft, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from roformer_sim_ft import data, training
        from roformer_sim_ft.model import SimModel
        from roformer_sim_ft.objectives import SupervisedObjective
        ck = {str(tiny_checkpoint)!r}
        sample = data.load_supervised_data(data.sample_data_dir())
        batches = data.SupervisedBatches.from_data(sample, SimModel.load(ck).tokenizer, batch_size=16)
        config = training.TrainConfig(out_dir={str(tmp_path / "m")!r}, steps=3, learning_rate=1e-3, devices=2, show_progress=False)
        result = training.train(SupervisedObjective(ck), batches, config)
        print("REPLICAS", training.make_strategy(2).num_replicas_in_sync, "LOSS", result.losses["loss"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()
    assert words[words.index("REPLICAS") + 1] == "2"
    assert np.isfinite(float(words[words.index("LOSS") + 1]))
    assert (tmp_path / "m/bert_model.ckpt.index").exists()


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_fp32_loss(tiny_checkpoint, tiny_model, sample_pairs, tmp_path, policy):
    batches = data.DistillBatches.from_data(sample_pairs, tiny_model.tokenizer, batch_size=8)
    config = training.TrainConfig(out_dir=str(tmp_path), steps=2, learning_rate=1e-4, mixed_precision=policy, show_progress=False)
    result = training.train(DistillObjective(tiny_checkpoint, tiny_checkpoint), batches, config)
    assert all(np.isfinite(v) for v in result.losses.values())
    from bert4keras.backend import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    _, _, weights = checkpoints.load_checkpoint(tmp_path)
    assert all(w.dtype == np.float32 for w in weights.values())
