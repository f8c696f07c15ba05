"""The fast encoding path (``SimModel.encode``, ``fast=True``) gives the original's vectors in input order.

The original (test/retrieval.py) is ``encoder.predict`` on batches in input
order, each padded to its own longest row. Ours sorts by length, batches,
runs ``FastRoFormer.pooled_of`` (de-interleaved rotary, [CLS]-only last layer) and
restores the order. Tolerance: 1e-5 of the largest vector component (fp32;
measured ~1e-6 on the real L-6/L-12 shapes, see docs/PERFORMANCE.md).
"""
from __future__ import annotations

import numpy as np
import pytest
from bert4keras.snippets import sequence_padding

from roformer_sim_ft import checkpoints
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import forward
from roformer_sim_ft.model import SimModel

TEXTS = [
    "今天天气不错",
    "好",
    "给我推荐一款红色的车",
    "A mixed 中英文 sentence with some English words!",
    "我喜欢北京",
    "花呗的额度怎么提升，我已经用了很久了但是一直没有变化，请问有什么办法吗？还有借呗的利息是多少" * 2,  # > 64 tokens
    "电影不错",
    "为什么我的支付宝账户被冻结了",
    "红色的苹果",
]


def original_vectors(model: SimModel, texts, batch_size: int = 4) -> np.ndarray:
    """test/retrieval.py's way: input order, batches padded to their own max, predict."""
    out = []
    for start in range(0, len(texts), batch_size):
        ids = [model.tokenizer.encode(t, maxlen=model.maxlen)[0] for t in texts[start : start + batch_size]]
        x = sequence_padding(ids)
        out.append(model.encoder.predict([x, np.zeros_like(x)], verbose=0))
    return np.concatenate(out)


def close(a, b, reference):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(reference).max()))


@pytest.fixture(scope="module")
def spread_model(spread_checkpoint):
    """Large random weights (init std 1.0): vectors differ a lot between texts."""
    return SimModel.load(spread_checkpoint)


@pytest.fixture(scope="module")
def four_heads(tiny_vocab):
    """Four heads of size 16 (L-2), so the per-head rotary de-interleaving is exercised across heads."""
    config = {**checkpoints.preset_config("tiny"), "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
    return SimModel(config, tiny_vocab, checkpoints.init_weights({**config, "initializer_range": 0.5}, seed=3))


@pytest.mark.parametrize("which", ["tiny_model", "spread_model", "four_heads"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_fast_encode_equals_original_predict_in_input_order(request, which, batch_size):
    model = request.getfixturevalue(which)
    reference = original_vectors(model, TEXTS)
    fast = model.encode(TEXTS, batch_size=batch_size, normalize=False)
    plain = model.encode(TEXTS, batch_size=batch_size, normalize=False, fast=False)
    assert model.fast_forward is not None  # the fast path really ran
    close(fast, reference, reference)
    close(plain, reference, reference)
    # the rows are distinct, so equality above also proves the order
    distances = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    assert distances[~np.eye(len(TEXTS), dtype=bool)].min() > 1e-3 * np.abs(reference).max()


def test_fast_encode_order_follows_any_permutation(spread_model):
    vectors = spread_model.encode(TEXTS, batch_size=2)
    permutation = np.random.default_rng(0).permutation(len(TEXTS))
    again = spread_model.encode([TEXTS[i] for i in permutation], batch_size=2)
    close(again, vectors[permutation], vectors)
    close(spread_model.encode(TEXTS[3]), vectors[3], vectors)


def test_padding_does_not_change_a_vector(spread_model):
    """The same text alone and padded beside a 64-token one (the [PAD] keys are masked)."""
    fast = spread_model.fast_forward
    ids = [spread_model.tokenizer.encode(t, maxlen=64)[0] for t in (TEXTS[1], TEXTS[5])]
    alone = fast.pooled_of(np.array(ids[:1], np.int32)).numpy()
    padded = fast.pooled_of(sequence_padding(ids).astype(np.int32)).numpy()
    close(padded[:1], alone, alone)


def test_fast_encode_reads_the_live_weights(four_heads, spread_checkpoint):
    before = four_heads.encode(TEXTS, normalize=False)
    weights = four_heads.get_weights()
    try:
        changed = {k: v * 1.5 if k.endswith("kernel") else v for k, v in weights.items()}
        four_heads.set_weights(changed)
        after = four_heads.encode(TEXTS, normalize=False)
        reference = original_vectors(four_heads, TEXTS)
        close(after, reference, reference)
        assert np.abs(after - before).max() > 1e-2 * np.abs(before).max()
    finally:
        four_heads.set_weights(weights)


def test_unsupported_layout_falls_back_to_the_keras_encoder(tiny_checkpoint, monkeypatch):
    def refuse(self, model):
        raise RoformerSimError("not this layout")

    monkeypatch.setattr(forward.FastRoFormer, "__init__", refuse)
    model = SimModel.load(tiny_checkpoint)
    reference = original_vectors(model, TEXTS)
    close(model.encode(TEXTS, normalize=False), reference, reference)
    assert model.fast_forward is None
