"""The RoFormer UniLM forward pass in plain TensorFlow ops, over a model's live weights.

bert4keras's keras model is exact but slow to call for the two hot paths,
encoding and token-by-token decoding. :class:`FastRoFormer` computes the same
function from the model's keras variables (so it always sees the current
weights, also during training):

* :meth:`FastRoFormer.pooled_of` — the encoder (segment ids 0 → pooled
  vector), running the last layer's query, attention output and feed-forward
  for [CLS] only, since the pooled vector depends on nothing else there;
* :meth:`FastRoFormer.forward` — the full UniLM pass (pooled vector and MLM
  logits), as ``SimModel.model``;
* :meth:`FastRoFormer.decode` — n samples of a continuation with a key/value
  cache: the source is run once and its keys/values shared by the samples;
  each step feeds one token per sample and applies the MLM head to it only.
  The whole loop, sampling included (:mod:`roformer_sim_ft.model.sampling`), is one
  compiled ``tf.while_loop``.

Rotary positions are applied in one way everywhere: the q and k kernel columns
of each head are de-interleaved (pairs (2j, 2j+1) → (j, j + d/2)), which leaves
every q·k unchanged, and rotating becomes a split and a concat instead of
bert4keras's stride-2 slices and stack (about 40% of a keras encoder call on
this CPU, docs/PERFORMANCE.md). Padding is masked as bert4keras masks [PAD]
keys, with an additive -1e12. Results equal the keras model's within float
round-off (tests: 1e-5).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from ..errors import RoformerSimError
from ..settings import ENCODE_PRECISIONS
from .sampling import NEG_INF, sample_next, step_seed

_MASKED = -1e12  # bert4keras's additive attention mask


def rotary_frequencies(dim: int) -> tf.Tensor:
    """The rotary (sinusoidal) angle of position 1 for each pair of a head of size ``dim``.

    Computed in float32 by ``tf.pow`` exactly as bert4keras's SinusoidalPositionEmbedding,
    so the angles are bit-equal to the keras model's."""
    return tf.pow(10000.0, -2 * tf.range(dim // 2, dtype=tf.float32) / dim)


def rotary_tables(positions: tf.Tensor, dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(cos, sin) [..., dim] for de-interleaved heads: ``x * cos + swap_halves(x) * sin`` rotates."""
    angles = tf.cast(positions, tf.float32)[..., None] * rotary_frequencies(dim)
    cos, sin = tf.cos(angles), tf.sin(angles)
    return tf.concat([cos, cos], -1), tf.concat([-sin, sin], -1)


def _rotate(x, cos, sin):
    first, second = tf.split(x, 2, axis=-1)
    return x * cos + tf.concat([second, first], -1) * sin


def _layer_norm(x, layer):
    """bert4keras LayerNormalization: centre, divide by sqrt(var + eps), scale and shift."""
    x = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    x = x / tf.sqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + layer.epsilon)
    return x * layer.gamma + layer.beta


def _mm(x, kernel, layer=None):
    """``x @ kernel`` (bfloat16 kernels: x cast down, the product cast back to float32); with a
    ``layer``, also its bias and activation (``kernel`` None: the layer's own)."""
    if layer is not None:
        kernel = layer.kernel if kernel is None else kernel
    if kernel.dtype == tf.bfloat16:
        y = tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), kernel), tf.float32)
    else:
        y = tf.matmul(x, kernel)
    return y if layer is None else layer.activation(y + layer.bias)


def _dense(x, layer, kernel=None, bias=None):
    kernel = layer.kernel if kernel is None else kernel
    y = tf.matmul(x, kernel) if x.shape.rank == 2 else tf.tensordot(x, kernel, 1)
    return layer.activation(y + (layer.bias if bias is None else bias))


class FastRoFormer:
    """The forward pass of a bert4keras RoFormer UniLM (``SimModel``) in plain TF ops, with a KV cache.

    Args:
        model: anything with bert4keras's ``transformer.layers`` (by layer name), ``config`` and
            ``tokenizer``, i.e. a :class:`~roformer_sim_ft.model.SimModel`.

    Raises ``RoformerSimError`` for a layout other than the plain RoFormer (callers fall back
    to the keras model).
    """

    def __init__(self, model) -> None:
        layers = model.transformer.layers
        config = model.config
        self.heads = int(config["num_attention_heads"])
        self.head_size = int(config["hidden_size"]) // self.heads
        if self.head_size % 2:
            raise RoformerSimError("rotary head size must be even")
        self.end_id = int(model.tokenizer._token_end_id)
        self.token_embedding = layers["Embedding-Token"]
        self.segment_embedding = layers["Embedding-Segment"]
        self.embedding_norm = layers["Embedding-Norm"]
        self.blocks = []
        for i in range(int(config["num_hidden_layers"])):
            attention = layers[f"Transformer-{i}-MultiHeadSelfAttention"]
            ffn = layers[f"Transformer-{i}-FeedForward"]
            if len(ffn.activation) != 1 or attention.key_size != self.head_size:
                raise RoformerSimError("FastRoFormer supports the plain RoFormer layout only")
            self.blocks.append(dict(
                q=attention.q_dense, k=attention.k_dense, v=attention.v_dense, o=attention.o_dense,
                norm1=layers[f"Transformer-{i}-MultiHeadSelfAttention-Norm"],
                ffn_in=ffn.i0_dense, ffn_out=ffn.o_dense,
                norm2=layers[f"Transformer-{i}-FeedForward-Norm"],
            ))
        self.pooler = layers["Pooler-Dense"]
        self.mlm_dense = layers["MLM-Dense"]
        self.mlm_norm = layers["MLM-Norm"]
        self.mlm_bias = layers["MLM-Bias"]
        self._functions: dict = {}

    # ------------------------------------------------------------ pieces
    def _deinterleave(self, w):
        """Columns of each head (…, 2j, 2j+1, …) → (evens, odds): a reshape and transpose."""
        shape = tf.shape(w)
        w = tf.reshape(w, tf.concat([shape[:-1], [self.heads, self.head_size // 2, 2]], 0))
        rank = w.shape.rank
        w = tf.transpose(w, [*range(rank - 2), rank - 1, rank - 2])
        return tf.reshape(w, shape)

    def _rotary_weights(self) -> list[tuple]:
        """Per layer, the de-interleaved (q kernel, q bias, k kernel, k bias), read from the live weights."""
        return [tuple(self._deinterleave(w) for w in (b["q"].kernel, b["q"].bias, b["k"].kernel, b["k"].bias))
                for b in self.blocks]

    def _embed(self, tokens, segments):
        x = tf.gather(self.token_embedding.embeddings, tokens)
        x = x + tf.gather(self.segment_embedding.embeddings, segments)
        return _layer_norm(x, self.embedding_norm)

    def _split(self, x):
        return tf.reshape(x, tf.concat([tf.shape(x)[:-1], [self.heads, self.head_size]], 0))

    def _ffn(self, x, block):
        h = _dense(x, block["ffn_in"])  # the Dense carries hidden_act
        return _layer_norm(x + _dense(h, block["ffn_out"]), block["norm2"])

    def mlm_logits(self, x):
        """MLM head: Dense(hidden_act) → LayerNorm → tied embedding transpose + bias."""
        h = _layer_norm(_dense(x, self.mlm_dense), self.mlm_norm)
        return tf.matmul(h, self.token_embedding.embeddings, transpose_b=True) + self.mlm_bias.beta

    def pooled(self, x):
        """The 'linear' pooler: Dense on the [CLS] hidden state."""
        return _dense(x[:, 0], self.pooler)

    def _layers(self, tokens, segments, bias, cls_only_last: bool = False):
        """Run every layer over a full sequence with the additive attention ``bias`` [b, 1, query, key].

        Returns the final hidden states and each layer's rotated keys and values
        [b, L, heads, d]. ``cls_only_last`` keeps only [CLS] from the last layer's queries on.
        """
        x = self._embed(tokens, segments)
        cos, sin = rotary_tables(tf.range(tf.shape(tokens)[1]), self.head_size)
        cos, sin = cos[None, :, None], sin[None, :, None]
        kv = []
        for i, (block, (qk, qb, kk, kb)) in enumerate(zip(self.blocks, self._rotary_weights())):
            k = _rotate(self._split(_dense(x, block["k"], kk, kb)), cos, sin)
            v = self._split(_dense(x, block["v"]))
            kv.append((k, v))
            if cls_only_last and i == len(self.blocks) - 1:
                x, cos, sin, bias = x[:, :1], cos[:, :1], sin[:, :1], bias[:, :, :1]
            q = _rotate(self._split(_dense(x, block["q"], qk, qb)), cos, sin)
            a = tf.einsum("bjhd,bkhd->bhjk", q, k) / self.head_size**0.5
            a = tf.nn.softmax(a + bias, axis=-1)
            o = tf.reshape(tf.einsum("bhjk,bkhd->bjhd", a, v), tf.shape(x))
            x = _layer_norm(x + _dense(o, block["o"]), block["norm1"])
            x = self._ffn(x, block)
        return x, kv

    @staticmethod
    def _valid(tokens):
        """Keys that are not [PAD] ([CLS] always counts), as bert4keras's ``mask_zero``."""
        return tf.concat([tf.ones_like(tokens[:, :1], tf.bool), tokens[:, 1:] != 0], axis=1)

    # ------------------------------------------------------ full sequences
    def encoder_weights(self, precision: str = "fp32") -> list[tuple[tf.Tensor, ...]]:
        """Per layer, the kernels of :meth:`pooled_of`'s matmuls, read from the live weights:
        (fused QKV kernel [H, 3H], its bias [3H], attention output, feed-forward in and out
        kernels). The fused kernel holds the de-interleaved q and k kernels and the v kernel
        side by side, so a layer's projections are one matmul. ``precision="bf16"`` stores the
        kernels in bfloat16. Build once per ``encode`` call, not per batch."""
        if precision not in ENCODE_PRECISIONS:
            raise RoformerSimError(f"precision must be one of {', '.join(ENCODE_PRECISIONS)}, got {precision!r}")
        cast = (lambda w: w) if precision == "fp32" else (lambda w: tf.cast(w, tf.bfloat16))  # noqa: E731
        return [
            (
                cast(tf.concat([qk, kk, block["v"].kernel], axis=1)),
                tf.concat([qb, kb, block["v"].bias], axis=0),
                *(cast(tf.convert_to_tensor(block[name].kernel)) for name in ("o", "ffn_in", "ffn_out")),
            )
            for block, (qk, qb, kk, kb) in zip(self.blocks, self._rotary_weights())
        ]

    def pooled_of(self, tokens, weights: list | None = None):
        """Pooled vectors [b, H] of padded token ids [b, L] with segment ids 0 (the encoder).

        The dense layers run on the real tokens only, packed into [tokens, H]
        (padding never reaches a matmul); attention scatters each layer's
        rotated queries, keys and values to [b, L] and gathers its output back.
        The last layer computes [CLS]'s query, attention output and
        feed-forward only. ``weights``: :meth:`encoder_weights` (None: built
        here, fp32). With bf16 ``weights`` the inputs of the dense matmuls are
        cast to bfloat16 and their products back to float32; embeddings,
        attention, softmax, LayerNorm and residuals stay float32.
        """
        weights = self.encoder_weights() if weights is None else weights
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        valid = self._valid(tokens)
        index = tf.where(valid)  # [N, 2], row by row, so each row's [CLS] comes first
        cls_at = tf.cumsum(tf.reduce_sum(tf.cast(valid, tf.int32), 1), exclusive=True)
        ids = tf.gather_nd(tokens, index)
        x = self._embed(ids, tf.zeros_like(ids))  # [N, H]
        heads, d = self.heads, self.head_size
        hidden = heads * d
        # q, k and v of every head as 3 * heads rows of d; v's rotation is the identity
        cos, sin = rotary_tables(index[:, 1], d)
        ones = tf.ones_like(cos[:, None]) * tf.ones([1, heads, 1])
        cos = tf.concat([tf.tile(cos[:, None], [1, 2 * heads, 1]), ones], 1)
        sin = tf.concat([tf.tile(sin[:, None], [1, 2 * heads, 1]), ones * 0.0], 1)
        padded_shape = tf.concat([tf.shape(tokens, out_type=tf.int64), [3, heads, d]], 0)
        bias = tf.where(valid, 0.0, _MASKED)[:, None, None, :]
        scale = 1.0 / d**0.5
        for i, (block, (qkv_kernel, qkv_bias, o_kernel, in_kernel, out_kernel)) in enumerate(zip(self.blocks, weights)):
            qkv = _rotate(tf.reshape(_mm(x, qkv_kernel) + qkv_bias, [-1, 3 * heads, d]), cos, sin)
            q, k, v = tf.unstack(tf.scatter_nd(index, tf.reshape(qkv, [-1, 3, heads, d]), padded_shape), axis=2)
            if i < len(self.blocks) - 1:
                a = tf.nn.softmax(tf.einsum("bjhd,bkhd->bhjk", q, k) * scale + bias, axis=-1)
                o = tf.gather_nd(tf.einsum("bhjk,bkhd->bjhd", a, v), index)
            else:  # [CLS] only: the pooled vector depends on nothing else here
                x = tf.gather(x, cls_at)
                a = tf.nn.softmax(tf.einsum("bhd,bkhd->bhk", q[:, 0], k) * scale + bias[:, :, 0], axis=-1)
                o = tf.einsum("bhk,bkhd->bhd", a, v)
            x = _layer_norm(x + _mm(tf.reshape(o, [-1, hidden]), o_kernel, block["o"]), block["norm1"])
            h = _mm(x, in_kernel, block["ffn_in"])
            x = _layer_norm(x + _mm(h, out_kernel, block["ffn_out"]), block["norm2"])
        return _dense(x, self.pooler)

    def encode_sequence(self, tokens, segments):
        """Final hidden states [b, L, H] and each layer's (rotated keys, values) under the UniLM mask."""
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        segments = tf.convert_to_tensor(segments, tf.int32)
        rank = tf.cumsum(segments, axis=1)
        allowed = (rank[:, None, :] <= rank[:, :, None]) & self._valid(tokens)[:, None, :]
        return self._layers(tokens, segments, tf.where(allowed, 0.0, _MASKED)[:, None])

    def forward(self, tokens, segments) -> tuple[tf.Tensor, tf.Tensor]:
        """(pooled [b, H], MLM logits [b, L, V]) for full sequences, like ``SimModel.model``."""
        if "forward" not in self._functions:
            spec = tf.TensorSpec([None, None], tf.int32)

            @tf.function(input_signature=[spec, spec])
            def fn(tokens, segments):
                x, _ = self.encode_sequence(tokens, segments)
                return self.pooled(x), self.mlm_logits(x)

            self._functions["forward"] = fn
        return self._functions["forward"](tf.constant(tokens, tf.int32), tf.constant(segments, tf.int32))

    # ------------------------------------------------------ cached decoding
    # Keys/values of generated tokens live in two buffers per layer: ``past``
    # [n, heads, T, d] for whole blocks of BLOCK steps, read-only inside a
    # block, and ``block`` [n, heads, BLOCK, d], written every step. TF copies
    # a tensor it scatters into inside a while loop, so writing each step into
    # the small buffer and folding it into ``past`` once per block copies far
    # less (measured: ~20% faster per step than one buffer at n=100 on L-6).
    BLOCK = 8

    def _step(self, tokens, index, start, source_kv, past, block, generated, fused):
        """Feed generated token ``index`` (one per sample, segment 1) and return
        the next-token logits [n, V] and the updated ``block`` buffers.

        ``source_kv``: per layer (k, v) [heads, S, d] of the source, shared by
        the samples. ``past``/``block``: per layer (k, v) buffers, ``block``
        starting at generated index ``start``. ``generated`` [n, T] holds the
        ids so far (0 = not yet or [PAD]: masked, as bert4keras masks [PAD] keys).
        ``fused``: per layer (QKV kernel [H, 3H], bias), as :meth:`encoder_weights`.
        """
        n = tf.shape(tokens)[0]
        x = self._embed(tokens, tf.ones_like(tokens))  # [n, H]
        cos, sin = rotary_tables(tf.shape(source_kv[0][0])[1] + index, self.head_size)
        grid = tf.reshape(tf.stack(tf.meshgrid(tf.range(n), tf.range(self.heads), indexing="ij"), -1), [-1, 2])
        slot = tf.concat([grid, tf.fill([n * self.heads, 1], index - start)], axis=1)
        positions = tf.range(tf.shape(generated)[1])
        past_valid = ((generated != 0) & (positions < start))[:, None]  # [n, 1, T]
        block_valid = (generated[:, start : start + self.BLOCK] != 0)[:, None]
        block_valid = tf.pad(block_valid, [[0, 0], [0, 0], [0, self.BLOCK - tf.shape(block_valid)[2]]])
        scale = 1.0 / self.head_size**0.5
        new_block = []
        for layer, block_kv in enumerate(block):
            weights, (qkv_kernel, qkv_bias) = self.blocks[layer], fused[layer]
            q, k, v = tf.split(tf.matmul(x, qkv_kernel) + qkv_bias, 3, axis=-1)  # one matmul
            q = _rotate(self._split(q), cos, sin)  # [n, heads, d]
            k = _rotate(self._split(k), cos, sin)
            v = self._split(v)
            block_k = tf.tensor_scatter_nd_update(block_kv[0], slot, tf.reshape(k, [-1, self.head_size]))
            block_v = tf.tensor_scatter_nd_update(block_kv[1], slot, tf.reshape(v, [-1, self.head_size]))
            new_block.append((block_k, block_v))
            (src_k, src_v), (past_k, past_v) = source_kv[layer], past[layer]
            a_src = tf.einsum("nhd,hsd->nhs", q, src_k)
            scores = lambda keys, valid: tf.where(  # noqa: E731
                valid, tf.squeeze(tf.matmul(q[:, :, None], keys, transpose_b=True), 2), NEG_INF
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
        fused = [w[:2] for w in self.encoder_weights()]
        x, kv = self.encode_sequence(source[None], tf.zeros_like(source)[None])
        source_kv = [(tf.transpose(k[0], [1, 0, 2]), tf.transpose(v[0], [1, 0, 2])) for k, v in kv]
        logits = tf.tile(self.mlm_logits(x[:, -1]), [n, 1])
        size = (max_len + self.BLOCK - 1) // self.BLOCK * self.BLOCK
        zeros = lambda length: tf.zeros([n, self.heads, length, self.head_size])  # noqa: E731
        past = [(zeros(size), zeros(size)) for _ in self.blocks]
        record_ta = tf.TensorArray(tf.float32, size=max_len if record else 0)
        if record:
            record_ta = record_ta.write(0, logits)
        token = sample_next(logits, step_seed(seed, 0), top_p, top_k, greedy)
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
                logits, block = self._step(token, t - 1, start, source_kv, past, block, generated, fused)
                if record:
                    record_ta = record_ta.write(t, logits)
                token = tf.where(finished, 0, sample_next(logits, step_seed(seed, t), top_p, top_k, greedy))
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

    def decoder(self, greedy: bool = False, record: bool = False, top_p: bool = True, top_k: bool = False):
        """The compiled sampling loop (traced once per option set), for :meth:`decode` and graphs that embed it.

        Called as ``fn(source [S] int32, n, max_len, seed [2] int64, top_p float32, top_k int32)``
        → (tokens [n, max_len] int32, 0 after [SEP]; steps; logits [steps, n, V] if ``record``).
        ``top_p``/``top_k`` False here: that filter is off and its argument ignored."""
        key = ("decode", greedy, record, top_p, top_k)
        if key not in self._functions:
            spec = [
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([2], tf.int64),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]

            def fn(source, n, max_len, seed, p, k):
                return self._decode_graph(source, n, max_len, seed, p if top_p else None, k if top_k else None, greedy, record)

            self._functions[key] = tf.function(fn, input_signature=spec, autograph=False)
        return self._functions[key]

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
        tokens, steps, logits = self.decoder(greedy, record, top_p is not None, top_k is not None)(
            tf.constant(source, tf.int32),
            tf.constant(n, tf.int32),
            tf.constant(max_len, tf.int32),
            seed,
            tf.constant(1.0 if top_p is None else top_p, tf.float32),
            tf.constant(top_k or 0, tf.int32),
        )
        steps = int(steps)
        return tokens.numpy()[:, :steps], (logits.numpy() if record else None)
