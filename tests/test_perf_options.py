"""Speed options beyond the 1e-5-equivalent defaults: ``SimModel.encode(precision="bf16")`` and the
distillation teacher's plain-TF forward pass."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from roformer_sim_ft.data import batches, readers
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.training.objectives import DistillObjective

TEXTS = ["今天天气不错", "好", "给我推荐一款红色的车", "我喜欢北京", "为什么我的支付宝账户被冻结了", "花呗的额度怎么提升" * 8]


@pytest.fixture(scope="module")
def spread_model(spread_checkpoint):
    return SimModel.load(spread_checkpoint)


def test_bf16_encode_is_close_to_fp32_and_not_equal(spread_model):
    fp32 = spread_model.encode(TEXTS, batch_size=4)
    bf16 = spread_model.encode(TEXTS, batch_size=4, precision="bf16")
    cosine = np.sum(fp32 * bf16, axis=1)  # both unit vectors
    assert cosine.min() >= 0.999, cosine
    assert np.abs(fp32 - bf16).max() > 1e-6  # bf16 really ran
    np.testing.assert_array_equal(spread_model.encode(TEXTS, batch_size=4, precision="fp32"), fp32)  # the default


def test_precision_is_checked(spread_model):
    with pytest.raises(RoformerSimError, match="precision must be one of fp32, bf16, got 'fp16'"):
        spread_model.encode(TEXTS, precision="fp16")
    with pytest.raises(RoformerSimError, match="needs the fast path"):
        spread_model.encode(TEXTS, precision="bf16", fast=False)


def test_encode_reads_the_weights_at_each_call(spread_model):
    before = spread_model.encode(TEXTS[:2])
    variable = spread_model.fast_forward.blocks[0]["v"].kernel
    old = variable.numpy()
    try:
        variable.assign(old * 2.0)
        after = spread_model.encode(TEXTS[:2])
    finally:
        variable.assign(old)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(spread_model.encode(TEXTS[:2]), before, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_distill_teacher_vectors_equal_the_keras_encoder(tiny_checkpoint, tiny_model, jit_compile):
    pairs = readers.load_distill_pairs([readers.sample_data_dir() / "synonyms" / "sample.jsonl"])
    batch = batches.DistillBatches.from_data(pairs, tiny_model.tokenizer, batch_size=8, seed=1).batch_at(0)
    tokens, segments = tf.constant(batch["teacher_token_ids"]), tf.constant(batch["teacher_segment_ids"])
    assert (tokens.numpy() == 0).any()  # padded rows are exercised
    objective = DistillObjective(tiny_checkpoint, tiny_checkpoint)
    objective.prepare(jit_compile=jit_compile)
    objective.build()
    assert objective.teacher.fast_forward is not None
    reference = objective.teacher.encoder([tokens, segments], training=False).numpy()
    vectors = objective._teacher_vectors(tokens, segments).numpy()
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
