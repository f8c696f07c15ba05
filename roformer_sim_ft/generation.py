"""Similar-sentence generation with a RoFormer-Sim UniLM: sampling, a key/value cache, reranking.

The original script (``test/generate.py``) decodes with bert4keras's
``AutoRegressiveDecoder.random_sample``: at every step it reruns the whole
``[CLS] text [SEP] generated…`` sequence of every sample through the model and
the full MLM head, then keeps the last position. Two paths here:

* ``use_cache=False`` — that algorithm (``model.seq2seq`` on the full sequence
  each step, finished samples dropped), kept for equivalence tests.
* ``use_cache=True`` (default) — :class:`FastRoFormer`, the same forward pass in
  plain TF ops over the model's *live* keras variables (training updates are
  seen). The source is run once and its keys/values are shared by the n
  samples; each step feeds one new token per sample, caches its rotary-rotated
  key and value, and applies the MLM head to that token only. The whole loop,
  sampling included, is one compiled ``tf.while_loop``.

Both paths sample with :func:`sample_next` — top-k, then top-p as bert4keras
(keep the most probable tokens until their mass reaches p, the crossing token
included; renormalise) — from a stateless seed folded with the step number, so
a seeded run repeats exactly. Top-p without top-k finds its threshold by a
radix select instead of sorting the vocabulary at every step.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from .errors import RoformerSimError

if TYPE_CHECKING:  # pragma: no cover
    from .model import SimModel

_NEG_INF = float("-inf")


# ------------------------------------------------------------------ sampling
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
    return _draw(*_filter(logits, top_p, top_k), seed)


def _draw(values, indices, seed):
    choice = tf.random.stateless_categorical(values, 1, seed, dtype=tf.int32)
    return choice[:, 0] if indices is None else tf.gather(indices, choice, batch_dims=1)[:, 0]


def _filter(logits, top_p, top_k):
    """(logits with the filtered-out tokens at -inf, their token ids or None for the identity).

    With ``top_k`` the k best are taken sorted and top-p is a cumulative sum;
    without it top-p is found by :func:`_nucleus_mask` over the whole
    vocabulary, which avoids sorting it at every step.
    """
    if top_k is not None:
        values, indices = tf.math.top_k(logits, k=tf.minimum(tf.cast(top_k, tf.int32), tf.shape(logits)[-1]))
        if top_p is not None:
            before = tf.math.cumsum(tf.nn.softmax(values, axis=-1), axis=-1, exclusive=True)
            values = tf.where(before < tf.cast(top_p, values.dtype), values, _NEG_INF)
        return values, indices
    if top_p is None:
        return logits, None
    return tf.where(_nucleus_mask(logits, top_p), logits, _NEG_INF), None


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


def filtered_probs(logits: np.ndarray, top_p: float | None = None, top_k: int | None = None) -> np.ndarray:
    """The distribution :func:`sample_next` draws from, over the vocabulary ([b, V] numpy)."""
    logits = tf.constant(logits, tf.float32)
    values, indices = _filter(logits, top_p, top_k)
    probs = tf.nn.softmax(values, axis=-1)
    if indices is None:
        return probs.numpy()
    rows = tf.repeat(tf.range(tf.shape(indices)[0])[:, None], tf.shape(indices)[1], axis=1)
    return tf.scatter_nd(tf.stack([rows, indices], axis=-1), probs, tf.shape(logits)).numpy()


def _step_seed(seed: tf.Tensor, step) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int32))


def _seed_tensor(seed: int | None) -> tf.Tensor:
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**62))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RoformerSimError(f"seed must be a non-negative integer, got {seed!r}")
    return tf.constant([int(seed) >> 31, int(seed) & (2**31 - 1)], tf.int64)


# ------------------------------------------------------------ fast forward
def _layer_norm(x, layer):
    """bert4keras LayerNormalization: centre, divide by sqrt(var + eps), scale and shift."""
    x = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    x = x / tf.sqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + layer.epsilon)
    return x * layer.gamma + layer.beta


def _dense(x, layer):
    y = tf.matmul(x, layer.kernel) if x.shape.rank == 2 else tf.tensordot(x, layer.kernel, 1)
    y = y + layer.bias
    return layer.activation(y)


def _rotary_tables(positions, dim: int):
    """cos/sin [..., dim] of bert4keras's sinusoidal embedding, each angle repeated for its pair."""
    inv = tf.pow(10000.0, -2 * tf.range(dim // 2, dtype=tf.float32) / dim)
    angles = tf.cast(positions, tf.float32)[..., None] * inv
    return tf.repeat(tf.cos(angles), 2, axis=-1), tf.repeat(tf.sin(angles), 2, axis=-1)


def _rotate(x, cos, sin):
    """RoPE on interleaved pairs (x0, x1) → (x0 cos − x1 sin, x1 cos + x0 sin)."""
    pairs = tf.stack([-x[..., 1::2], x[..., ::2]], axis=-1)
    return x * cos + tf.reshape(pairs, tf.shape(x)) * sin


class FastRoFormer:
    """The RoFormer UniLM forward pass of a :class:`SimModel` in plain TF ops, with a KV cache.

    Reads the keras layers' variables directly, so it always computes with the
    model's current weights. ``forward`` is the full-sequence pass (UniLM mask,
    [PAD] keys masked as bert4keras's ``mask_zero`` does); ``decode`` is the
    cached sampling loop.
    """

    def __init__(self, model: "SimModel") -> None:
        layers = model.transformer.layers
        config = model.config
        self.heads = int(config["num_attention_heads"])
        self.head_size = int(config["hidden_size"]) // self.heads
        self.num_layers = int(config["num_hidden_layers"])
        self.end_id = int(model.tokenizer._token_end_id)
        self.token_embedding = layers["Embedding-Token"]
        self.segment_embedding = layers["Embedding-Segment"]
        self.embedding_norm = layers["Embedding-Norm"]
        self.blocks = []
        for i in range(self.num_layers):
            attention = layers[f"Transformer-{i}-MultiHeadSelfAttention"]
            ffn = layers[f"Transformer-{i}-FeedForward"]
            if len(ffn.activation) != 1 or attention.key_size != self.head_size:
                raise RoformerSimError("FastRoFormer supports the plain RoFormer layout only")
            self.blocks.append(
                dict(
                    q=attention.q_dense,
                    k=attention.k_dense,
                    v=attention.v_dense,
                    o=attention.o_dense,
                    norm1=layers[f"Transformer-{i}-MultiHeadSelfAttention-Norm"],
                    ffn_in=ffn.i0_dense,
                    ffn_out=ffn.o_dense,
                    norm2=layers[f"Transformer-{i}-FeedForward-Norm"],
                )
            )
        self.pooler = layers["Pooler-Dense"]
        self.mlm_dense = layers["MLM-Dense"]
        self.mlm_norm = layers["MLM-Norm"]
        self.mlm_bias = layers["MLM-Bias"]
        self._forward_fn = None
        self._decode_fns: dict = {}

    # -- pieces
    def _embed(self, tokens, segments):
        x = tf.gather(self.token_embedding.embeddings, tokens)
        x = x + tf.gather(self.segment_embedding.embeddings, segments)
        return _layer_norm(x, self.embedding_norm)

    def _split(self, x):
        shape = tf.concat([tf.shape(x)[:-1], [self.heads, self.head_size]], 0)
        return tf.reshape(x, shape)

    def _ffn(self, x, block):
        h = _dense(x, block["ffn_in"])  # the Dense carries hidden_act
        return _layer_norm(x + _dense(h, block["ffn_out"]), block["norm2"])

    def mlm_logits(self, x):
        """MLM head: Dense(hidden_act) → LayerNorm → tied embedding transpose + bias."""
        h = _layer_norm(_dense(x, self.mlm_dense), self.mlm_norm)
        return tf.matmul(h, self.token_embedding.embeddings, transpose_b=True) + self.mlm_bias.beta

    def pooled(self, x):
        return _dense(x[:, 0], self.pooler)

    # -- full sequence
    def encode_sequence(self, tokens, segments):
        """Final hidden states [b, L, H] and each layer's (rotated keys, values) [b, L, heads, d]."""
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        segments = tf.convert_to_tensor(segments, tf.int32)
        x = self._embed(tokens, segments)
        rank = tf.cumsum(segments, axis=1)
        valid = tf.concat([tf.ones_like(tokens[:, :1], tf.bool), tokens[:, 1:] != 0], axis=1)
        allowed = (rank[:, None, :] <= rank[:, :, None]) & valid[:, None, :]
        allowed = allowed[:, None]  # [b, 1, query, key]
        cos, sin = _rotary_tables(tf.range(tf.shape(tokens)[1]), self.head_size)
        cos, sin = cos[None, :, None], sin[None, :, None]
        kv = []
        for block in self.blocks:
            q = _rotate(self._split(_dense(x, block["q"])), cos, sin)
            k = _rotate(self._split(_dense(x, block["k"])), cos, sin)
            v = self._split(_dense(x, block["v"]))
            kv.append((k, v))
            a = tf.einsum("bjhd,bkhd->bhjk", q, k) / self.head_size**0.5
            a = tf.nn.softmax(tf.where(allowed, a, _NEG_INF), axis=-1)
            o = tf.einsum("bhjk,bkhd->bjhd", a, v)
            o = tf.reshape(o, tf.shape(x))
            x = _layer_norm(x + _dense(o, block["o"]), block["norm1"])
            x = self._ffn(x, block)
        return x, kv

    def forward(self, tokens, segments) -> tuple[tf.Tensor, tf.Tensor]:
        """(pooled [b, H], MLM logits [b, L, V]) for full sequences, like ``SimModel.model``."""
        if self._forward_fn is None:
            spec = tf.TensorSpec([None, None], tf.int32)

            @tf.function(input_signature=[spec, spec])
            def fn(tokens, segments):
                x, _ = self.encode_sequence(tokens, segments)
                return self.pooled(x), self.mlm_logits(x)

            self._forward_fn = fn
        return self._forward_fn(tf.constant(tokens, tf.int32), tf.constant(segments, tf.int32))

    # -- cached decoding
    # Keys/values of generated tokens live in two buffers per layer: ``past``
    # [n, heads, T, d] for whole blocks of BLOCK steps, read-only inside a
    # block, and ``block`` [n, heads, BLOCK, d], written every step. TF copies
    # a tensor it scatters into inside a while loop, so writing each step into
    # the small buffer and folding it into ``past`` once per block copies far
    # less (measured: ~20% faster per step than one buffer at n=100 on L-6).
    BLOCK = 8

    def _step(self, tokens, index, start, source_kv, past, block, generated):
        """Feed generated token ``index`` (one per sample, segment 1) and return
        the next-token logits [n, V] and the updated ``block`` buffers.

        ``source_kv``: per layer (k, v) [heads, S, d] of the source, shared by
        the samples. ``past``/``block``: per layer (k, v) buffers, ``block``
        starting at generated index ``start``. ``generated`` [n, T] holds the
        ids so far (0 = not yet or [PAD]: masked, as bert4keras masks [PAD] keys).
        """
        n = tf.shape(tokens)[0]
        x = self._embed(tokens, tf.ones_like(tokens))  # [n, H]
        cos, sin = _rotary_tables(tf.shape(source_kv[0][0])[1] + index, self.head_size)
        grid = tf.reshape(tf.stack(tf.meshgrid(tf.range(n), tf.range(self.heads), indexing="ij"), -1), [-1, 2])
        slot = tf.concat([grid, tf.fill([n * self.heads, 1], index - start)], axis=1)
        positions = tf.range(tf.shape(generated)[1])
        past_valid = ((generated != 0) & (positions < start))[:, None]  # [n, 1, T]
        block_valid = (generated[:, start : start + self.BLOCK] != 0)[:, None]
        block_valid = tf.pad(block_valid, [[0, 0], [0, 0], [0, self.BLOCK - tf.shape(block_valid)[2]]])
        scale = 1.0 / self.head_size**0.5
        new_block = []
        for layer, block_kv in enumerate(block):
            weights = self.blocks[layer]
            q = _rotate(self._split(_dense(x, weights["q"])), cos, sin)  # [n, heads, d]
            k = _rotate(self._split(_dense(x, weights["k"])), cos, sin)
            v = self._split(_dense(x, weights["v"]))
            block_k = tf.tensor_scatter_nd_update(block_kv[0], slot, tf.reshape(k, [-1, self.head_size]))
            block_v = tf.tensor_scatter_nd_update(block_kv[1], slot, tf.reshape(v, [-1, self.head_size]))
            new_block.append((block_k, block_v))
            (src_k, src_v), (past_k, past_v) = source_kv[layer], past[layer]
            a_src = tf.einsum("nhd,hsd->nhs", q, src_k)
            scores = lambda keys, valid: tf.where(  # noqa: E731
                valid, tf.squeeze(tf.matmul(q[:, :, None], keys, transpose_b=True), 2), _NEG_INF
            )
            a_past, a_block = scores(past_k, past_valid), scores(block_k, block_valid)
            a = tf.nn.softmax(tf.concat([a_src, a_past, a_block], axis=-1) * scale, axis=-1)
            a_src, a_past, a_block = tf.split(a, [tf.shape(src_k)[1], tf.shape(past_k)[2], self.BLOCK], axis=-1)
            o = tf.einsum("nhs,hsd->nhd", a_src, src_v)
            o += tf.squeeze(tf.matmul(a_past[:, :, None], past_v), 2)
            o += tf.squeeze(tf.matmul(a_block[:, :, None], block_v), 2)
            x = _layer_norm(x + _dense(tf.reshape(o, tf.shape(x)), weights["o"]), weights["norm1"])
            x = self._ffn(x, weights)
        return self.mlm_logits(x), new_block

    def _decode_graph(self, source, n, max_len, seed, top_p, top_k, greedy, record):
        """The cached sampling loop: prefill the source, then blocks of steps."""
        x, kv = self.encode_sequence(source[None], tf.zeros_like(source)[None])
        source_kv = [(tf.transpose(k[0], [1, 0, 2]), tf.transpose(v[0], [1, 0, 2])) for k, v in kv]
        logits = tf.tile(self.mlm_logits(x[:, -1]), [n, 1])
        size = (max_len + self.BLOCK - 1) // self.BLOCK * self.BLOCK
        zeros = lambda length: tf.zeros([n, self.heads, length, self.head_size])  # noqa: E731
        past = [(zeros(size), zeros(size)) for _ in self.blocks]
        record_ta = tf.TensorArray(tf.float32, size=max_len if record else 0)
        if record:
            record_ta = record_ta.write(0, logits)
        token = sample_next(logits, _step_seed(seed, 0), top_p, top_k, greedy)
        finished = token == self.end_id
        generated = tf.pad(token[:, None], [[0, 0], [0, size - 1]])
        rows = tf.range(n)

        def running(t, finished):
            return (t < max_len) & ~tf.reduce_all(finished)

        def block_body(t, token, finished, generated, past, record_ta):
            start = t - 1  # generated index fed first in this block

            def step_cond(t, token, finished, generated, block, record_ta):
                return running(t, finished) & (t - 1 - start < self.BLOCK)

            def step_body(t, token, finished, generated, block, record_ta):
                logits, block = self._step(token, t - 1, start, source_kv, past, block, generated)
                if record:
                    record_ta = record_ta.write(t, logits)
                token = tf.where(finished, 0, sample_next(logits, _step_seed(seed, t), top_p, top_k, greedy))
                finished = finished | (token == self.end_id)
                generated = tf.tensor_scatter_nd_update(generated, tf.stack([rows, tf.fill([n], t)], 1), token)
                return t + 1, token, finished, generated, block, record_ta

            block = [(zeros(self.BLOCK), zeros(self.BLOCK)) for _ in self.blocks]
            t, token, finished, generated, block, record_ta = tf.while_loop(
                step_cond, step_body, (t, token, finished, generated, block, record_ta), parallel_iterations=1
            )
            slots = start + tf.range(self.BLOCK)
            grid = tf.stack(tf.meshgrid(rows, tf.range(self.heads), slots, indexing="ij"), -1)
            past = [
                tuple(tf.tensor_scatter_nd_update(p, grid, b) for p, b in zip(past_kv, block_kv))
                for past_kv, block_kv in zip(past, block)
            ]
            return t, token, finished, generated, past, record_ta

        steps, _, _, generated, _, record_ta = tf.while_loop(
            lambda t, token, finished, *_: running(t, finished),
            block_body,
            (tf.constant(1), token, finished, generated, past, record_ta),
            parallel_iterations=1,
        )
        logits = record_ta.stack()[:steps] if record else tf.zeros([0, n, 0])
        return generated[:, :max_len], steps, logits

    def decode(
        self,
        source: Sequence[int],
        n: int,
        max_len: int,
        seed: tf.Tensor,
        top_p: float | None,
        top_k: int | None,
        greedy: bool = False,
        record: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Sample n continuations of ``source`` ids: tokens [n, max_len] (0 after [SEP]) and,
        if ``record``, the logits of every step [steps, n, V]."""
        key = (greedy, record, top_p is None, top_k is None)
        if key not in self._decode_fns:
            spec = [
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([2], tf.int64),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]

            def fn(source, n, max_len, seed, top_p, top_k, _g=greedy, _r=record, _p=key[2], _k=key[3]):
                top_p, top_k = (None if _p else top_p), (None if _k else top_k)
                return self._decode_graph(source, n, max_len, seed, top_p, top_k, _g, _r)

            self._decode_fns[key] = tf.function(fn, input_signature=spec, autograph=False)
        tokens, steps, logits = self._decode_fns[key](
            tf.constant(source, tf.int32),
            tf.constant(n, tf.int32),
            tf.constant(max_len, tf.int32),
            seed,
            tf.constant(1.0 if top_p is None else top_p, tf.float32),
            tf.constant(top_k or 0, tf.int32),
        )
        steps = int(steps)
        return tokens.numpy()[:, :steps], (logits.numpy() if record else None)


# ------------------------------------------------------- reference (uncached)
def _last_logits_fn(model: "SimModel"):
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def fn(tokens, segments):
        return model.seq2seq([tokens, segments], training=False)[:, -1]

    return fn


def decode_uncached(
    model: "SimModel",
    source: Sequence[int],
    n: int,
    max_len: int,
    seed: tf.Tensor,
    top_p: float | None,
    top_k: int | None,
    greedy: bool = False,
    record: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The original decoder's algorithm: every step reruns ``model.seq2seq`` on
    ``[CLS] text [SEP] generated`` (segment ids 0/1) for the unfinished samples
    and keeps the last position. Same sampler and seeds as the cached path.
    Returns tokens [n, steps] and, if ``record``, logits [steps, n, V] (NaN
    for samples already finished)."""
    state = _state(model)
    if state.get("last_logits") is None:
        state["last_logits"] = _last_logits_fn(model)
    last_logits = state["last_logits"]
    end_id = model.tokenizer._token_end_id
    source = np.asarray(source, np.int32)
    tokens = np.zeros((n, 0), np.int32)
    active = np.arange(n)
    finished = np.zeros(n, bool)
    recorded = []
    logits = np.repeat(last_logits(source[None], np.zeros((1, len(source)), np.int32)).numpy(), n, axis=0)
    for t in range(max_len):
        full = np.zeros((n, logits.shape[-1]), np.float32)  # finished rows: sampled, then discarded
        full[active] = logits
        if record:
            recorded.append(np.where(finished[:, None], np.nan, full))
        sampled = sample_next(tf.constant(full), _step_seed(seed, t), top_p, top_k, greedy).numpy()
        column = np.where(finished, 0, sampled).astype(np.int32)
        tokens = np.concatenate([tokens, column[:, None]], axis=1)
        finished |= column == end_id
        active = np.flatnonzero(~finished)
        if not len(active) or t + 1 == max_len:
            break
        ids = np.concatenate([np.repeat(source[None], len(active), 0), tokens[active]], axis=1)
        segs = np.concatenate([np.zeros_like(ids[:, : len(source)]), np.ones_like(tokens[active])], axis=1)
        logits = last_logits(ids, segs).numpy()
    return tokens, (np.stack(recorded) if record else None)


# ------------------------------------------------------------------ API
_STATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _state(model: "SimModel") -> dict:
    if model not in _STATES:
        _STATES[model] = {}
    return _STATES[model]


def fast_decoder(model: "SimModel") -> FastRoFormer:
    """The model's :class:`FastRoFormer` (built once, reads the live weights)."""
    state = _state(model)
    if "fast" not in state:
        state["fast"] = FastRoFormer(model)
    return state["fast"]


def _source_ids(model: "SimModel", text: str) -> list[int]:
    if not isinstance(text, str):
        raise RoformerSimError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise RoformerSimError("text is empty")
    return model.tokenizer.encode(text, maxlen=model.maxlen)[0]


def _check(n: int, top_p: float | None, top_k: int | None, max_len: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise RoformerSimError(f"n must be a positive integer, got {n!r}")
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise RoformerSimError(f"max_len must be a positive integer, got {max_len!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RoformerSimError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise RoformerSimError(f"top_k must be a positive integer, got {top_k!r}")


def generate_ids(
    model: "SimModel",
    text: str,
    n: int = 1,
    top_p: float | None = 0.95,
    top_k: int | None = None,
    max_len: int = 64,
    seed: int | None = None,
    use_cache: bool = True,
    greedy: bool = False,
    record_logits: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Generated token ids [n, steps] (0 after [SEP]) and optionally the per-step logits [steps, n, V]."""
    _check(n, top_p, top_k, max_len)
    top_p = None if top_p is not None and top_p >= 1 else top_p
    source = _source_ids(model, text)
    seed_t = _seed_tensor(seed)
    if use_cache:
        return fast_decoder(model).decode(source, n, max_len, seed_t, top_p, top_k, greedy, record_logits)
    return decode_uncached(model, source, n, max_len, seed_t, top_p, top_k, greedy, record_logits)


def decode_ids(model: "SimModel", tokens: np.ndarray) -> list[str]:
    """Text of each row of generated ids, cut before the first [SEP]."""
    end_id = model.tokenizer._token_end_id
    texts = []
    for row in np.asarray(tokens):
        stop = np.flatnonzero(row == end_id)
        texts.append(model.tokenizer.decode([int(i) for i in row[: stop[0] if len(stop) else len(row)]]))
    return texts


def generate(
    model: "SimModel",
    text: str,
    n: int = 1,
    top_p: float | None = 0.95,
    top_k: int | None = None,
    max_len: int = 64,
    seed: int | None = None,
    use_cache: bool = True,
    greedy: bool = False,
) -> list[str]:
    """n sampled continuations of ``[CLS] text [SEP]`` (see ``SimModel.generate``)."""
    tokens, _ = generate_ids(model, text, n, top_p, top_k, max_len, seed, use_cache, greedy)
    return decode_ids(model, tokens)


def step_logits(
    model: "SimModel", text: str, steps: int, n: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy decoding of ``text`` by both paths: (cached tokens, uncached tokens,
    cached per-step logits, uncached per-step logits), logits shaped [steps, n, V]."""
    fast_tokens, fast_logits = generate_ids(model, text, n, max_len=steps, seed=0, greedy=True, record_logits=True)
    ref_tokens, ref_logits = generate_ids(
        model, text, n, max_len=steps, seed=0, use_cache=False, greedy=True, record_logits=True
    )
    return fast_tokens, ref_tokens, fast_logits, ref_logits


def gen_synonyms(
    model: "SimModel", text: str, n: int = 100, k: int = 20, seed: int | None = None, **kwargs
) -> list[str]:
    """Sample n, drop duplicates, empty strings and the input, keep the k closest by cosine."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise RoformerSimError(f"k must be a positive integer, got {k!r}")
    candidates = generate(model, text, n=n, seed=seed, **kwargs)
    source = model.tokenizer.decode(_source_ids(model, text))
    candidates = list(dict.fromkeys(c for c in candidates if c.strip() and c != text and c != source))
    if not candidates:
        return []
    vectors = model.encode([text] + candidates)
    sims = vectors[1:] @ vectors[0]
    return [candidates[i] for i in np.argsort(-sims, kind="stable")[:k]]
