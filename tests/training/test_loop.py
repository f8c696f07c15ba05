"""The one training loop, driven by both stages on tiny models and the bundled sample data."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from roformer_sim_ft.data import batches as B, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.training import loop
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.training.objectives import DistillObjective, SupervisedObjective

import tensorflow as tf  # noqa: E402  (after roformer_sim_ft)


COSINE = {  # the post's cosine objectives, written out independently of losses.py
    "cos-mse": lambda c, t: t * (c - 1) ** 2 + (1 - t) * c ** 2,
    "cos-mse-pm1": lambda c, t: t * (c - 1) ** 2 + (1 - t) * (c + 1) ** 2,
    "cos-hinge": lambda c, t: t * np.maximum(0.9 - c, 0) + (1 - t) * np.maximum(c - 0.1, 0),
}


def _tensors(batch):
    return {k: tf.constant(v) for k, v in batch.items()}


def _fit(objective, batch, steps, learning_rate):
    """``steps`` plain Adam steps of ``objective`` on one batch (dropout off): the losses before and after."""
    batch = _tensors(batch)
    optimizer = tf.keras.optimizers.Adam(learning_rate)

    def parts():
        loss, named = objective.loss(batch, training=False)
        return {"loss": float(loss), **{k: float(v) for k, v in named.items()}}

    before = parts()
    variables = objective.trainable_variables
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss, _ = objective.loss(batch, training=True)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
    return before, parts()


def _supervised_run(ckpt, sample, tokenizer, out, steps, on_step=None, resume=False, **kw):
    batches = B.SupervisedBatches.from_data(sample, tokenizer, batch_size=16, seed=3)
    config = training.TrainConfig(
        out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=kw.pop("save_every", 100),
        log_every=1, show_progress=False, resume=resume, seed=11, **kw,
    )
    return training.train(SupervisedObjective(ckpt, dropout_rate=0.2), batches, config, on_step=on_step)


def test_supervised_loss_falls(tiny_checkpoint, tiny_model, sample_data, tmp_path):
    # 8 binary + 8 NLI pairs seen over and over: a working loop must fit them.
    few = readers.SupervisedData(sample_data.binary[:8], sample_data.nli[:8], [], [])
    batches = B.SupervisedBatches.from_data(few, tiny_model.tokenizer, batch_size=16, seed=3)
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


def test_batches_of_other_lengths_reuse_the_one_compiled_step(tiny_checkpoint, tiny_model, sample_data, tmp_path,
                                                              monkeypatch):
    """Bucketed batches differ in length; the step's signature leaves lengths open, so it is traced once."""
    batches = B.SupervisedBatches.from_data(sample_data, tiny_model.tokenizer, batch_size=8, seed=3)
    lengths = {batches.batch_at(i)["token_ids"].shape[1] for i in range(4)}
    assert len(lengths) > 1, lengths
    compiled = []
    build = loop._build

    def spying_build(*args, **kwargs):
        run = build(*args, **kwargs)
        compile_step = run.compile_step
        run.compile_step = lambda spec: compiled.append(compile_step(spec)) or compiled[-1]
        return run

    monkeypatch.setattr(loop, "_build", spying_build)
    config = training.TrainConfig(out_dir=str(tmp_path / "out"), steps=4, learning_rate=1e-3, show_progress=False)
    training.train(SupervisedObjective(tiny_checkpoint), batches, config)
    assert len(compiled) == 1 and compiled[0].experimental_get_tracing_count() == 1


def test_interrupted_then_resumed_equals_uninterrupted(tiny_checkpoint, tiny_model, sample_data, tmp_path):
    _supervised_run(tiny_checkpoint, sample_data, tiny_model.tokenizer, tmp_path / "full", steps=6)

    def interrupt(step, losses):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = _supervised_run(tiny_checkpoint, sample_data, tiny_model.tokenizer, tmp_path / "cut", steps=6, on_step=interrupt)
    assert first.interrupted and first.step == 3
    assert not (tmp_path / "cut/bert_model.ckpt.index").exists()
    second = _supervised_run(tiny_checkpoint, sample_data, tiny_model.tokenizer, tmp_path / "cut", steps=6, resume=True)
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


def test_resume_without_state_is_a_clear_error(tiny_checkpoint, tiny_model, sample_data, tmp_path):
    with pytest.raises(RoformerSimError, match="--resume: no training state"):
        _supervised_run(tiny_checkpoint, sample_data, tiny_model.tokenizer, tmp_path / "none", steps=2, resume=True)


def test_periodic_state_is_kept_and_pruned(tiny_checkpoint, tiny_model, sample_data, tmp_path):
    _supervised_run(tiny_checkpoint, sample_data, tiny_model.tokenizer, tmp_path / "o", steps=7, save_every=2)
    states = sorted(p.name for p in (tmp_path / "o/training_state").iterdir())
    assert states == ["step-6", "step-7"]
    saved = json.loads((tmp_path / "o/training_state/step-7/state.json").read_text())
    assert saved["step"] == 7 and saved["sampler"]["batches"] == 7


@pytest.mark.parametrize("objective", sorted(COSINE))
def test_cosine_objective_is_its_formula_and_falls(objective, tiny_checkpoint, tokenizer, sample_data):
    """The objective's loss of one batch is the post's formula over the encoder's pair cosines
    (NLI: entailment 1, contradiction 0, neutral left out); training on the batch lowers it."""
    batch = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=16, seed=3).batch_at(0)
    stage = SupervisedObjective(tiny_checkpoint, objective=objective, dropout_rate=0.0, attention_dropout_rate=0.0)
    stage.build()
    vectors = stage.model.encoder.predict([batch["token_ids"], batch["segment_ids"]], verbose=0).astype(np.float64)
    u, v = vectors[0::2], vectors[1::2]
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    labels = batch["labels"][0::2]
    target, keep = np.isin(labels, [1, 3]).astype(float), labels != 4
    assert 0 < keep.sum() < len(labels) and 0 < target[keep].sum() < keep.sum()  # both targets and a neutral
    expected = COSINE[objective](cos, target)[keep].mean()
    before, after = _fit(stage, batch, steps=8, learning_rate=1e-2)
    assert before["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert after["loss"] < 0.5 * before["loss"], (before, after)


def test_evaluator_keeps_best(tiny_checkpoint, tiny_model, sample_data, tmp_path):
    scores = iter([1.0, 3.0, 2.0])

    class Result:
        def __init__(self, value):
            self.primary_metric = value

        def as_dict(self):
            return {"average": self.primary_metric}

    batches = B.SupervisedBatches.from_data(sample_data, tiny_model.tokenizer, batch_size=16)
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


def test_distillation_lowers_both_terms(spread_checkpoint, tiny_checkpoint, tokenizer, sample_groups):
    # A random tiny model at init std 0.02 maps every text to nearly the same vector; a teacher
    # drawn at std 1.0 has a spread similarity matrix, so the similarity term starts high.
    batch = B.DistillBatches(sample_groups, tokenizer, batch_size=8, seed=0).batch_at(0)
    stage = DistillObjective(spread_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
    stage.build()
    before, after = _fit(stage, batch, steps=10, learning_rate=5e-3)
    assert before["similarity"] > 1.0, before
    for term in ("seq2seq", "similarity"):
        assert after[term] < 0.9 * before[term], (term, before, after)
    assert after["loss"] == pytest.approx(after["seq2seq"] + after["similarity"], rel=1e-6)


def test_target_only_logits_give_the_reference_loss_and_gradients(tiny_checkpoint, sample_groups, tiny_model):
    """The MLM head on the scored positions only == the reference's head on every position."""
    batch = B.DistillBatches(sample_groups, tiny_model.tokenizer, batch_size=8, seed=5).batch_at(0)
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


def test_xla_step_trains_like_the_plain_step(tiny_checkpoint, tiny_model, sample_groups, tmp_path):
    """--xla (dense embedding gradient, all-position MLM head) == the plain step (sparse, scored positions only).

    Distillation: it takes both of XLA's departures (the supervised stage only the first)."""
    _, _, start = checkpoints.load_checkpoint(tiny_checkpoint)
    trained = []
    for jit in (False, True):
        batches = B.DistillBatches(sample_groups, tiny_model.tokenizer, batch_size=8, seed=3, pad_to=64)
        objective = DistillObjective(tiny_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
        out = tmp_path / f"jit{jit}"
        config = training.TrainConfig(out_dir=str(out), steps=3, learning_rate=1e-3, save_every=0,
                                      show_progress=False, jit_compile=jit)
        training.train(objective, batches, config)
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


# Relative tolerance of a mixed-precision loss against fp32 on the same batch and weights:
# fp16 keeps 11 significant bits (~5e-4 per rounding), bf16 8 (~4e-3); through two layers
# and a 12000-way softmax the measured gaps are a fraction of these bounds.
@pytest.mark.parametrize("policy, tolerance", [("mixed_float16", 0.02), ("mixed_bfloat16", 0.04)])
def test_mixed_precision_matches_fp32_and_trains(policy, tolerance, spread_checkpoint, tiny_checkpoint, tokenizer,
                                                 sample_groups, tmp_path):
    """Step 1's loss under a mixed policy is the fp32 loss of the same batch and weights within
    ``tolerance`` (relative; measured here: fp16 0.7%, bf16 1.1%: the similarity term is 100 x an
    MSE of cosines computed in 16 bits), and the run lowers it."""
    pairs = [g for g in sample_groups if len(g.texts) == 2][:4]
    # 4 two-text groups, no masking, batch 8 (each pair both ways): every batch holds the same rows
    batches = B.DistillBatches(pairs, tokenizer, batch_size=8, seed=0, source_mask_prob=0.0)
    reference = DistillObjective(spread_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
    reference.build()
    fp32 = float(reference.loss(_tensors(batches.batch_at(0)), training=False)[0])
    stage = DistillObjective(spread_checkpoint, tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0)
    config = training.TrainConfig(out_dir=str(tmp_path), steps=6, learning_rate=1e-2, mixed_precision=policy,
                                  log_every=1, show_progress=False)
    losses = []
    training.train(stage, batches, config, on_step=lambda step, values: losses.append(values["loss"]))
    assert policy.split("_")[1] in {layer.compute_dtype for layer in stage.model.model.layers}  # the policy took effect
    assert losses[0] == pytest.approx(fp32, rel=tolerance)  # step 1: the first batch before any update
    assert losses[-1] < 0.9 * losses[0], losses
    from bert4keras.backend import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    _, _, weights = checkpoints.load_checkpoint(tmp_path)
    assert all(w.dtype == np.float32 for w in weights.values())
