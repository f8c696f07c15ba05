"""The packed UniLM student (packed_unilm.PackedUniLM) against the keras model it replaces in training."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from roformer_sim_ft.data import batches as B
from roformer_sim_ft import checkpoints, compat, training
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective

import tensorflow as tf  # noqa: E402  (after roformer_sim_ft)


def _objective(stage, student, teacher, **kw):
    if stage == "distill":
        return DistillObjective(teacher, student, **kw)
    return Stage1Objective(student, **kw)


def _batch(stage, groups, tokenizer):
    cls = B.DistillBatches if stage == "distill" else B.Stage1Batches
    batch = cls(groups, tokenizer, batch_size=8, seed=5).batch_at(0)
    segments = batch["student_segment_ids" if stage == "distill" else "segment_ids"]
    tokens = batch["student_token_ids" if stage == "distill" else "token_ids"]
    assert 0 < segments.sum() < segments.size and (tokens == 0).any()  # both segments and padding
    return {k: tf.constant(v) for k, v in batch.items()}


def _loss_and_grads(objective, batch, training_flag=True):
    with tf.GradientTape() as tape:
        loss, parts = objective.loss(batch, training=training_flag)
    grads = tape.gradient(loss, objective.trainable_variables)
    return float(loss), {k: float(v) for k, v in parts.items()}, grads


@pytest.mark.parametrize("stage", ["distill", "pretrain"])
@pytest.mark.parametrize("student", ["tiny", "spread"])
def test_packed_student_gives_the_keras_loss_and_gradients(stage, student, tiny_checkpoint, spread_checkpoint,
                                                           sample_groups, tiny_model):
    # the teacher is the other checkpoint: a student equal to its teacher has S_s - S_t ~ round-off,
    # whose gradient is round-off too
    ckpt, teacher = (tiny_checkpoint, spread_checkpoint) if student == "tiny" else (spread_checkpoint, tiny_checkpoint)
    batch = _batch(stage, sample_groups, tiny_model.tokenizer)
    results = {}
    for packed in (True, False):
        objective = _objective(stage, ckpt, teacher, dropout_rate=0.0, attention_dropout_rate=0.0, packed=packed)
        objective.build()
        assert objective._packed is not None  # the layout allows it; packed=False must still use keras
        results[packed] = (_loss_and_grads(objective, batch), objective.trainable_variables)
    ((l1, p1, g1), variables), ((l2, p2, g2), _) = results[True], results[False]
    assert l1 == pytest.approx(l2, rel=1e-5) and l1 > 0.1
    for name in p2:
        assert p1[name] == pytest.approx(p2[name], rel=1e-5, abs=1e-7), (name, p1[name], p2[name])
    assert [g is None for g in g1] == [g is None for g in g2]
    assert all(g is not None for g in g1)  # every student weight is trained
    for v, a, b in zip(variables, g1, g2):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        assert np.abs(b).max() > 0, v.name
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max(), err_msg=v.name)


def test_packed_dropout_is_step_seeded_and_placed_like_keras(tiny_checkpoint, spread_checkpoint, sample_groups,
                                                              tiny_model):
    batch = _batch("distill", sample_groups, tiny_model.tokenizer)
    objective = _objective("distill", tiny_checkpoint, spread_checkpoint, dropout_rate=0.3, attention_dropout_rate=0.2)
    objective.build()
    assert (objective._packed.dropout_rate, objective._packed.attention_dropout_rate) == (0.3, 0.2)
    quiet = _objective("distill", tiny_checkpoint, spread_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
    quiet.build()
    reference = float(quiet.loss(batch, training=True)[0])
    assert float(objective.loss(batch, training=False)[0]) == pytest.approx(reference, rel=1e-6)

    def seeded(step, seed=11):
        with compat.seeded_dropout(seed, tf.constant(step, tf.int64)):
            return float(objective.loss(batch, training=True)[0])

    first = seeded(3)
    assert abs(first - reference) > 1e-4  # dropout is applied
    assert seeded(3) == first  # a pure function of (seed, step)
    assert seeded(4) != first and seeded(3, seed=12) != first
    # 1 embedding dropout + per layer: attention probabilities, attention output, feed-forward output
    with compat.seeded_dropout(11, tf.constant(0, tf.int64)):
        objective.loss(batch, training=True)
        assert compat._DROPOUT_SEEDS.counter == 1 + 3 * len(objective._packed.fast.blocks)


def _distill_run(teacher, student, groups, tokenizer, out, steps, on_step=None, resume=False):
    batches = B.DistillBatches(groups, tokenizer, batch_size=8, seed=3)
    config = training.TrainConfig(out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=100, log_every=1,
                                  show_progress=False, resume=resume, seed=11)
    objective = DistillObjective(teacher, student, dropout_rate=0.2)
    result = training.train(objective, batches, config, on_step=on_step)
    assert objective._packed is not None and objective.packed
    return result


def test_distillation_interrupted_then_resumed_equals_uninterrupted(tiny_checkpoint, spread_checkpoint,
                                                                    sample_groups, tiny_model, tmp_path):
    args = (spread_checkpoint, tiny_checkpoint, sample_groups, tiny_model.tokenizer)
    _distill_run(*args, tmp_path / "full", steps=3)

    def interrupt(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = _distill_run(*args, tmp_path / "cut", steps=3, on_step=interrupt)
    assert first.interrupted and first.step == 2
    second = _distill_run(*args, tmp_path / "cut", steps=3, resume=True)
    assert second.step == 3 and not second.interrupted
    _, _, start = checkpoints.load_checkpoint(tiny_checkpoint)
    _, _, full = checkpoints.load_checkpoint(tmp_path / "full")
    _, _, resumed = checkpoints.load_checkpoint(tmp_path / "cut")
    assert max(np.abs(full[k] - start[k]).max() for k in start) > 1e-3
    for name in full:  # same seed, batches and dropout masks, restored optimizer slots
        np.testing.assert_allclose(resumed[name], full[name], rtol=0, atol=1e-6, err_msg=name)
