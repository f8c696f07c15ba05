"""Sampling primitives of the decoder: top-k/top-p filtering and seeded draws.

Top-k then top-p as bert4keras's ``AutoRegressiveDecoder.random_sample`` (keep
the most probable tokens until their mass reaches p, the crossing token
included; renormalise), drawn from a stateless seed folded with the step
number, so a seeded run repeats exactly. Top-p without top-k finds its
threshold by a radix select instead of sorting the vocabulary at every step.
Nothing here knows about models.
"""
from __future__ import annotations

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from ..settings import check_seed

NEG_INF = float("-inf")


def sample_next(
    logits: tf.Tensor,
    seed: tf.Tensor,
    top_p: float | tf.Tensor | None = None,
    top_k: int | tf.Tensor | None = None,
    greedy: bool = False,
) -> tf.Tensor:
    """One token id per row of ``logits`` [b, V] (int32 [b]).

    ``greedy`` takes the argmax. Otherwise the ``top_k`` best tokens are kept
    (all when None), then the smallest set of most probable tokens whose
    (renormalised) probability reaches ``top_p`` — the token that crosses p is
    kept, as in bert4keras — and one is drawn with the stateless ``seed`` [2].
    """
    if greedy:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return _draw(*filter_logits(logits, top_p, top_k), seed)


def _draw(values, indices, seed):
    choice = tf.random.stateless_categorical(values, 1, seed, dtype=tf.int32)
    return choice[:, 0] if indices is None else tf.gather(indices, choice, batch_dims=1)[:, 0]


def filter_logits(logits, top_p, top_k):
    """(logits with the filtered-out tokens at -inf, their token ids or None for the identity).

    With ``top_k`` the k best are taken sorted and top-p is a cumulative sum;
    without it top-p is found by :func:`_nucleus_mask` over the whole
    vocabulary, which avoids sorting it at every step.
    """
    if top_k is not None:
        values, indices = tf.math.top_k(logits, k=tf.minimum(tf.cast(top_k, tf.int32), tf.shape(logits)[-1]))
        if top_p is not None:
            before = tf.math.cumsum(tf.nn.softmax(values, axis=-1), axis=-1, exclusive=True)
            values = tf.where(before < tf.cast(top_p, values.dtype), values, NEG_INF)
        return values, indices
    if top_p is None:
        return logits, None
    return tf.where(_nucleus_mask(logits, top_p), logits, NEG_INF), None


def _nucleus_mask(logits, top_p, widths=(11, 11, 10)):
    """Top-p keep mask [b, V] without a sort: radix select of the threshold logit.

    Logits are mapped to order-preserving int32 keys; each pass histograms
    (by probability mass, ``bincount``) the next digit of the keys that share
    the prefix chosen so far and picks the digit where the mass from the top
    reaches p. A token is kept iff the mass of tokens with larger logits is
    below p — bert4keras's rule, except that exact ties at the threshold are
    all kept rather than broken by sort order.
    """
    probs = tf.nn.softmax(logits, axis=-1)
    bits = tf.bitcast(logits, tf.int32)
    keys = tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 0x7FFFFFFF))
    rows = tf.shape(logits)[0]
    top_p = tf.cast(top_p, probs.dtype)
    above = tf.zeros([rows, 1], probs.dtype)  # mass of keys above the current prefix
    prefix = None
    shift = 32
    for width in widths:
        shift -= width
        size = 1 << width
        digit = tf.bitwise.bitwise_and(tf.bitwise.right_shift(keys, shift), size - 1)
        if prefix is None:  # top digit: flip the sign bit so that digits are ordered
            digit = tf.bitwise.bitwise_xor(digit, size >> 1)
            mass = probs
        else:
            mass = tf.where(tf.bitwise.right_shift(keys, shift + width) == prefix, probs, 0.0)
        flat = digit + tf.range(rows)[:, None] * size
        hist = tf.math.bincount(flat, weights=mass, minlength=rows * size, maxlength=rows * size)
        hist = tf.reshape(hist, [rows, size])
        higher = tf.math.cumsum(hist, axis=-1, exclusive=True, reverse=True)
        reach = above + higher + hist >= top_p
        digits = tf.range(size)[None]
        chosen = tf.where(
            tf.reduce_any(reach, -1, keepdims=True),
            tf.reduce_max(tf.where(reach, digits, -1), -1, keepdims=True),
            tf.reduce_min(tf.where(hist > 0, digits, size), -1, keepdims=True),  # rounding: keep all
        )
        above += tf.gather(higher, chosen, batch_dims=1)
        prefix = chosen - (size >> 1) if prefix is None else prefix * size + chosen
    return keys >= prefix


def step_seed(seed: tf.Tensor, step) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int32))


def seed_pair(seed: tf.Tensor) -> tf.Tensor:
    """The stateless seed [2] int64 of a non-negative int64 seed: its bits above 31 and its low 31 bits."""
    seed = tf.cast(seed, tf.int64)
    return tf.stack([tf.bitwise.right_shift(seed, 31), tf.bitwise.bitwise_and(seed, 2**31 - 1)])


def seed_tensor(seed: int | None) -> tf.Tensor:
    """:func:`seed_pair` of ``seed`` (None: a random one)."""
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**62))
    check_seed(seed)
    return seed_pair(tf.constant(int(seed), tf.int64))
