"""Generation: the cached fast path against the original full-recompute decoder and keras,
top-p/top-k filtering against numpy, seeding, gen_synonyms, input errors."""
from __future__ import annotations

import numpy as np
import pytest

import roformer_sim_ft  # noqa: F401  (before tensorflow)
import tensorflow as tf

from roformer_sim_ft import checkpoints
from roformer_sim_ft.model import generation, sampling
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel

TEXTS = ["今天天气不错", "给我推荐一款红色的车，谢谢"]
SEP = 102


def reference_filter(logits: np.ndarray, top_p=None, top_k=None) -> np.ndarray:
    """bert4keras ``AutoRegressiveDecoder.random_sample`` filtering, in numpy, as a distribution over V."""
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ids = np.tile(np.arange(probs.shape[1]), (len(probs), 1))
    if top_k is not None:
        ids = probs.argpartition(-top_k, axis=1)[:, -top_k:]
        probs = np.take_along_axis(probs, ids, 1)
        probs /= probs.sum(1, keepdims=True)
    if top_p is not None:
        order = probs.argsort(1)[:, ::-1]
        ids, probs = np.take_along_axis(ids, order, 1), np.take_along_axis(probs, order, 1)
        drop = np.roll(np.cumsum(probs, 1) >= top_p, 1, axis=1)
        drop[:, 0] = False
        probs[drop] = 0
        probs /= probs.sum(1, keepdims=True)
    out = np.zeros_like(logits)
    np.put_along_axis(out, ids, probs, 1)
    return out


def filtered_probs(logits: np.ndarray, top_p=None, top_k=None) -> np.ndarray:
    """The distribution ``sampling.sample_next`` draws from, over the vocabulary ([b, V] numpy)."""
    values, indices = sampling.filter_logits(tf.constant(logits, tf.float32), top_p, top_k)
    probs = tf.nn.softmax(values, axis=-1)
    if indices is None:
        return probs.numpy()
    rows = tf.repeat(tf.range(tf.shape(indices)[0])[:, None], tf.shape(indices)[1], axis=1)
    return tf.scatter_nd(tf.stack([rows, indices], axis=-1), probs, tf.shape(logits)).numpy()


def step_logits(model, text: str, steps: int, n: int = 1):
    """Greedy decoding of ``text`` by both paths: (cached tokens, uncached tokens,
    cached per-step logits, uncached per-step logits), logits shaped [steps, n, V]."""
    fast_tokens, fast_logits = generation.generate_ids(model, text, n, max_len=steps, seed=0, greedy=True,
                                                       record_logits=True)
    ref_tokens, ref_logits = generation.generate_ids(model, text, n, max_len=steps, seed=0, use_cache=False,
                                                     greedy=True, record_logits=True)
    return fast_tokens, ref_tokens, fast_logits, ref_logits


@pytest.fixture(scope="module")
def sep_model(tiny_checkpoint):
    """The tiny model with the [SEP] output bias raised so that samples end at varied steps."""
    config, vocab, weights = checkpoints.load_checkpoint(tiny_checkpoint)
    weights = dict(weights)
    weights["cls/predictions/output_bias"] = weights["cls/predictions/output_bias"].copy()
    weights["cls/predictions/output_bias"][SEP] += 8.0  # p([SEP]) ≈ 0.2 per step
    return SimModel(config, vocab, weights)


def test_fast_forward_matches_keras(tiny_model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 12000, size=(3, 20)).astype(np.int32)
    tokens[:, 0] = 101
    segments = np.zeros_like(tokens)
    segments[:, 12:] = 1
    tokens[1, 15] = 0  # a [PAD] inside the target: keras masks it as a key
    tokens[2, 17:] = 0  # right padding
    pooled, logits = tiny_model.fast_forward.forward(tokens, segments)
    ref_pooled, ref_logits = tiny_model.model.predict([tokens, segments], verbose=0)
    np.testing.assert_allclose(pooled.numpy(), ref_pooled, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-5)
    source = [tokens[:1, :12], segments[:1, :12]]  # the decoder's first step: last position of the source
    last = tiny_model.seq2seq.predict(source, verbose=0)[:, -1]
    np.testing.assert_allclose(tiny_model.fast_forward.forward(*source)[1][:, -1], last, atol=1e-5)


@pytest.mark.parametrize("text", TEXTS)
def test_greedy_cached_equals_uncached(tiny_model, text):
    fast_tokens, ref_tokens, fast_logits, ref_logits = step_logits(tiny_model, text, steps=24, n=2)
    assert fast_tokens.shape == ref_tokens.shape == (2, 24)
    np.testing.assert_array_equal(fast_tokens, ref_tokens)
    assert fast_logits.shape == ref_logits.shape == (24, 2, 12000)
    assert np.abs(fast_logits - ref_logits).max() < 1e-4


def test_sampled_cached_equals_uncached_with_ends(sep_model):
    """Same seed, same logits → same samples; finished samples pad with 0 after [SEP]."""
    kwargs = dict(n=8, max_len=12, seed=5, record_logits=True)
    fast, fast_logits = generation.generate_ids(sep_model, TEXTS[0], **kwargs)
    ref, ref_logits = generation.generate_ids(sep_model, TEXTS[0], use_cache=False, **kwargs)
    np.testing.assert_array_equal(fast, ref)
    ended = (fast == SEP).any(1)
    stops = [int(np.flatnonzero(row == SEP)[0]) if done else kwargs["max_len"] for row, done in zip(fast, ended)]
    assert ended.any() and len(set(stops)) > 1, stops  # samples end at different steps (or not at all)
    for row in fast[ended]:
        stop = np.flatnonzero(row == SEP)[0]
        assert (row[stop + 1 :] == 0).all()
    live = ~np.isnan(ref_logits)
    assert np.abs(fast_logits[live] - ref_logits[live]).max() < 1e-4
    texts = generation.decode_ids(sep_model, fast)  # cut before [SEP], special tokens dropped
    row = fast[np.argmax(ended)]
    assert texts[np.argmax(ended)] == sep_model.tokenizer.decode(row[: np.flatnonzero(row == SEP)[0]])


def test_fast_path_reads_live_weights(sep_model, tiny_checkpoint):
    tokens = np.array([[101, 791, 1921, 102, 1921, 3300]], np.int32)
    segments = np.array([[0, 0, 0, 0, 1, 1]], np.int32)
    fast = sep_model.fast_forward
    before = fast.forward(tokens, segments)[1].numpy()
    saved = sep_model.get_weights()
    try:
        sep_model.set_weights(checkpoints.init_weights(sep_model.config, seed=11))
        after = fast.forward(tokens, segments)[1].numpy()
        assert np.abs(after - before).max() > 1e-3
        np.testing.assert_allclose(after, sep_model.seq2seq.predict([tokens, segments], verbose=0), atol=1e-5)
    finally:
        sep_model.set_weights(saved)


@pytest.mark.parametrize(
    "probs, top_p, top_k",
    [
        ([0.04, 0.5, 0.1, 0.3, 0.06], 0.75, None),  # the token crossing p is kept
        ([0.04, 0.5, 0.1, 0.3, 0.06], 0.5, None),  # the first token alone reaches p
        ([0.04, 0.5, 0.1, 0.3, 0.06], 0.93, None),
        ([0.04, 0.5, 0.1, 0.3, 0.06], None, 2),
        ([0.04, 0.5, 0.1, 0.3, 0.06], 0.7, 3),  # top-p on the renormalised top-k
        ([0.04, 0.5, 0.1, 0.3, 0.06], 0.97, 4),
        ([0.97, 0.01, 0.012, 0.003, 0.005], 0.95, None),
    ],
)
def test_filter_matches_numpy_reference(probs, top_p, top_k):
    logits = np.log(np.array([probs, probs[::-1]], np.float64)).astype(np.float32)
    ours = filtered_probs(logits, top_p, top_k)
    ref = reference_filter(logits, top_p, top_k)
    np.testing.assert_array_equal(ours > 0, ref > 0)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_filter_keeps_all_ties_at_the_threshold():
    """bert4keras breaks exact ties by sort order; we keep the whole tied group."""
    logits = np.zeros((1, 5), np.float32)
    np.testing.assert_allclose(filtered_probs(logits, 0.3), 0.2)
    assert (reference_filter(logits, 0.3) > 0).sum() == 2


def test_filter_on_wide_distributions():
    rng = np.random.default_rng(1)
    for scale in (0.1, 2.0, 8.0):
        logits = (rng.standard_normal((8, 12000)) * scale).astype(np.float32)
        ours, ref = filtered_probs(logits, 0.95), reference_filter(logits, 0.95)
        # float32 cumulative sums in another order may move the boundary by a token or two
        assert ((ours > 0) != (ref > 0)).sum() <= 8
        assert np.abs(ours - ref).max() < 1e-4


def test_samples_follow_filtered_distribution():
    logits = np.log(np.array([[0.05, 0.5, 0.1, 0.3, 0.05]], np.float32))
    seed = tf.constant([3, 4], tf.int64)
    draws = sampling.sample_next(tf.constant(np.repeat(logits, 4000, 0)), seed, 0.75).numpy()
    assert set(draws) == {1, 3}
    assert abs((draws == 1).mean() - 0.5 / 0.8) < 0.03


def test_seeded_generate_repeats(tiny_model):
    a = tiny_model.generate(TEXTS[0], n=3, max_len=10, seed=1)
    assert tiny_model.generate(TEXTS[0], n=3, max_len=10, seed=1) == a
    assert tiny_model.generate(TEXTS[0], n=3, max_len=10, seed=2) != a
    assert len(set(a)) == 3  # the n samples are independent


def test_gen_synonyms_sorted_distinct(tiny_model):
    text = TEXTS[1]
    out = tiny_model.gen_synonyms(text, n=12, k=5, seed=0)
    assert 0 < len(out) <= 5 and len(set(out)) == len(out) and text not in out
    sims = [tiny_model.similarity(text, t) for t in out]
    assert all(a >= b - 1e-5 for a, b in zip(sims, sims[1:]))
    pool = set(tiny_model.generate(text, n=12, seed=0))
    rest = [t for t in pool - set(out) if t.strip() and t != text]
    assert all(tiny_model.similarity(text, t) <= sims[-1] + 1e-5 for t in rest)


def test_input_errors_and_truncation(tiny_model):
    for bad in ("", "   "):
        with pytest.raises(RoformerSimError, match="text is empty"):
            tiny_model.generate(bad)
        with pytest.raises(RoformerSimError, match="text is empty"):
            tiny_model.gen_synonyms(bad)
    for kwargs in (dict(n=0), dict(top_p=0.0), dict(top_k=0), dict(max_len=0), dict(seed=-1)):
        with pytest.raises(RoformerSimError):
            tiny_model.generate("你好", **kwargs)
    long = "天" * 300  # truncated to the encoder's maxlen like encode()
    assert len(tiny_model.generate(long, n=2, max_len=3, seed=0)) == 2
