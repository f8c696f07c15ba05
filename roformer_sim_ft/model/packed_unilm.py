"""The UniLM student's training forward pass with packed tokens, over the live keras weights.

Stage 1 and distillation train the UniLM model on rows ``[CLS] source [SEP]
target [SEP]`` padded to the longest row, so much of a padded batch is padding
that the keras model runs through every dense layer. :class:`PackedUniLM`
computes the same two outputs the objectives need — the pooled [CLS] vector
and the hidden states at the positions the seq2seq loss scores
(:meth:`Seq2SeqLoss.targets <roformer_sim_ft.training.losses.Seq2SeqLoss.targets>`) —
with the dense layers on the real tokens only, packed into [tokens, H].
Attention scatters each layer's rotated queries, keys and values back to the
padded layout and applies the UniLM mask as
:meth:`FastRoFormer.encode_sequence <roformer_sim_ft.model.forward.FastRoFormer.encode_sequence>`
does. Q, K and V are one matmul (:meth:`FastRoFormer.encoder_weights`), and
the last layer's attention output and feed-forward run on the [CLS] and scored
positions only. The ops read the model's keras variables, so gradients reach
them as through the keras model (tests: loss within 1e-5 relative, gradients
within 1e-4 of each one's largest value).

Dropout sits where bert4keras's RoFormer puts it — after the embedding norm,
on the attention probabilities, after the attention output and after the
feed-forward output — with the keras model's rates. Inside
:class:`compat.seeded_dropout <roformer_sim_ft.compat.seeded_dropout>` its
masks are stateless and numbered like the keras layers' (a resumed run draws
the masks of an uninterrupted one); the masks themselves differ from the
keras model's, whose tensors have the padded shapes.
"""
from __future__ import annotations

from .. import compat
import tensorflow as tf

from .forward import _MASKED, FastRoFormer, _dense, _layer_norm, _mm, _rotate, rotary_tables


def dropout(x: tf.Tensor, rate: float, training) -> tf.Tensor:
    """``x`` with dropout at ``rate`` when ``training`` (a bool or a bool tensor; None: not
    training): stateless and step-seeded inside ``compat.seeded_dropout``, else TensorFlow's
    stateful dropout."""
    if not rate or training is None or training is False:
        return x
    seed = compat.next_dropout_seed()

    def dropped():
        if seed is None:
            return tf.nn.dropout(x, rate=rate)
        return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)

    if training is True:
        return dropped()
    return tf.cond(tf.cast(training, tf.bool), dropped, lambda: tf.identity(x))


class PackedUniLM:
    """The training forward pass of a UniLM :class:`~roformer_sim_ft.model.SimModel` on packed tokens.

    Args:
        fast: the model's :class:`~roformer_sim_ft.model.forward.FastRoFormer` (its layers and weights).
        dropout_rate: hidden and embedding dropout, as the keras model was built with.
        attention_dropout_rate: dropout on the attention probabilities.

    Rows must hold their tokens first and padding (id 0) after, as the batch
    builders make them.

    Example:
    >>> packed = PackedUniLM(model.fast_forward, 0.2, 0.1)
    >>> pooled, labels, hidden = packed(token_ids, segment_ids, training=True)
    >>> logits = packed.fast.mlm_logits(hidden)  # the seq2seq logits of the scored positions
    """

    def __init__(self, fast: FastRoFormer, dropout_rate: float, attention_dropout_rate: float) -> None:
        self.fast = fast
        self.dropout_rate = float(dropout_rate or 0.0)
        self.attention_dropout_rate = float(attention_dropout_rate or 0.0)

    def __call__(self, tokens: tf.Tensor, segments: tf.Tensor, training=False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(pooled [b, H], labels [N], hidden [N, H]) of padded ids and segment ids [b, L]:
        the pooled vectors and, for the N positions the seq2seq loss scores (in the
        order of ``Seq2SeqLoss.targets``), the token each predicts and its final
        hidden state."""
        fast = self.fast
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        segments = tf.cast(segments, tf.int32)
        valid = fast._valid(tokens)  # the keys (bert4keras masks [PAD] keys)
        scored = tf.not_equal(segments[:, 1:], 0)  # position t predicts token t + 1
        # the query rows: every real token, and any position the loss scores
        rows = valid | tf.pad(scored, [[0, 0], [0, 1]])
        index = tf.where(rows)  # [R, 2], row by row
        shape = tf.shape(tokens, out_type=tf.int64)
        slots = tf.scatter_nd(index, tf.range(tf.shape(index, out_type=tf.int64)[0]), shape)
        targets = tf.where(scored)
        labels = tf.gather_nd(tokens[:, 1:], targets)
        keep = tf.concat([slots[:, 0], tf.gather_nd(slots, targets)], 0)  # [CLS] rows, then the scored ones

        x = fast._embed(tf.gather_nd(tokens, index), tf.gather_nd(segments, index))  # [R, H]
        x = dropout(x, self.dropout_rate, training)
        heads, d = fast.heads, fast.head_size
        hidden = heads * d
        cos, sin = rotary_tables(index[:, 1], d)  # q and k rotate, v does not: 3 * heads rows of d
        ones = tf.ones_like(cos[:, None]) * tf.ones([1, heads, 1])
        cos = tf.concat([tf.tile(cos[:, None], [1, 2 * heads, 1]), ones], 1)
        sin = tf.concat([tf.tile(sin[:, None], [1, 2 * heads, 1]), ones * 0.0], 1)
        padded_shape = tf.concat([shape, [3, heads, d]], 0)
        rank = tf.cumsum(segments, axis=1)  # the UniLM mask, as FastRoFormer.encode_sequence
        allowed = (rank[:, None, :] <= rank[:, :, None]) & valid[:, None, :]
        bias = tf.where(allowed, 0.0, _MASKED)[:, None]  # [b, 1, query, key]
        scale = 1.0 / d**0.5
        last = len(fast.blocks) - 1
        for i, (block, (qkv_kernel, qkv_bias, o_kernel, in_kernel, out_kernel)) in enumerate(
            zip(fast.blocks, fast.encoder_weights())
        ):
            qkv = _rotate(tf.reshape(_mm(x, qkv_kernel) + qkv_bias, [-1, 3 * heads, d]), cos, sin)
            q, k, v = tf.unstack(tf.scatter_nd(index, tf.reshape(qkv, [-1, 3, heads, d]), padded_shape), axis=2)
            a = tf.nn.softmax(tf.einsum("bjhd,bkhd->bhjk", q, k) * scale + bias, axis=-1)
            a = dropout(a, self.attention_dropout_rate, training)
            o = tf.einsum("bhjk,bkhd->bjhd", a, v)
            if i == last:  # only [CLS] and the scored positions matter from here on
                o, x = tf.gather_nd(o, tf.gather(index, keep)), tf.gather(x, keep)
            else:
                o = tf.gather_nd(o, index)
            o = dropout(_mm(tf.reshape(o, [-1, hidden]), o_kernel, block["o"]), self.dropout_rate, training)
            x = _layer_norm(x + o, block["norm1"])
            h = _mm(_mm(x, in_kernel, block["ffn_in"]), out_kernel, block["ffn_out"])
            x = _layer_norm(x + dropout(h, self.dropout_rate, training), block["norm2"])
        batch = tf.shape(tokens)[0]
        return _dense(x[:batch], fast.pooler), labels, x[batch:]
