"""Objectives of the two training stages, each a small callable class.

Supervised stage (kexue.fm/archives/8541, train/supervised.py of RoFormer-Sim):
pooled vectors of a batch whose rows ``2i`` and ``2i+1`` form a pair are merged
into Sentence-BERT features (:func:`pair_features`) and classified by a
bias-free ``Dense(5)`` trained with :class:`MaskedClassifierLoss`; the post's
three cosine losses are the alternatives it compared against.

Distillation stage (SimBERT / RoFormer-Sim train/stage2.py): UniLM seq2seq
cross-entropy (:class:`Seq2SeqLoss`) plus the MSE between the student's and the
teacher's batch cosine-similarity matrices (:class:`SimilarityMatrixLoss`).

Stage 1 (SimBERT v2 / RoFormer-Sim train/stage1.py): the same seq2seq
cross-entropy plus :class:`SimilarityCrossEntropyLoss`, a softmax over each
row's cosines to the other rows of the batch with its partner as the target.

On several replicas (``tf.distribute``) every loss is the global batch's:
losses that compare rows gather the other replicas' rows, and means are taken
over the global count (:mod:`roformer_sim_ft.training.replicas`), so the objective does
not depend on the number of devices.

Every loss casts its floating inputs to float32 first, so the loss stays in
fp32 under mixed precision, and casts integer labels explicitly, so int8,
int32, int64 (or integral float) labels all work. Arguments follow the Keras
order: targets first, predictions second.
"""
from __future__ import annotations

from typing import Sequence

from .. import compat  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf  # noqa: E402

from ..errors import RoformerSimError  # noqa: E402
from .replicas import global_rows, replica_mean  # noqa: E402
from ..settings import DEFAULT_FEATURES  # noqa: E402

FEATURES = ("u", "v", "|u-v|", "u*v")
_MASK_OFFSET = 1e12  # positive: subtracted from masked logits (as the reference does) to push them out of the softmax


# --------------------------------------------------------------------------- features
def parse_features(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a feature set given as ``"u,v,|u-v|"`` or a sequence of names.

    Any ordered, duplicate-free, non-empty subset of :data:`FEATURES` is valid
    (the Sentence-BERT ablation, arXiv:1908.10084, Table 6).
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [n.replace(" ", "") for n in names if n.strip()]
    if not names:
        raise RoformerSimError(f"empty feature set; choose from {', '.join(FEATURES)}")
    bad = [n for n in names if n not in FEATURES]
    if bad:
        raise RoformerSimError(f"unknown feature {bad[0]!r}; choose from {', '.join(FEATURES)}")
    if len(set(names)) != len(names):
        raise RoformerSimError(f"duplicate feature in {','.join(names)}")
    return tuple(names)


def feature_dim(hidden_size: int, features: str | Sequence[str] = DEFAULT_FEATURES) -> int:
    """Width of :func:`pair_features`' output: ``hidden_size`` per feature."""
    return int(hidden_size) * len(parse_features(features))


def pair_features(vectors: tf.Tensor, features: str | Sequence[str] = DEFAULT_FEATURES) -> tf.Tensor:
    """Sentence-BERT features of consecutive row pairs, repeated onto both rows.

    ``vectors`` is ``[2P, H]`` with rows ``2i`` (u) and ``2i+1`` (v) a pair.
    Returns ``[2P, H * len(features)]``: the concatenation of the chosen
    features of each pair, written to both rows of the pair (the reference's
    ``merge``: ``K.repeat_elements(o, 2, 0)``), so labels stay one per row.
    Keeps the input dtype (it feeds the classifier layer, not the loss).
    """
    names = parse_features(features)
    rows = vectors.shape[0]
    if rows is not None and rows % 2:
        raise RoformerSimError(f"pair_features needs an even number of rows (pairs), got {rows}")
    u, v = vectors[0::2], vectors[1::2]
    table = {"u": lambda: u, "v": lambda: v, "|u-v|": lambda: tf.abs(u - v), "u*v": lambda: u * v}
    merged = tf.concat([table[n]() for n in names], axis=1)
    return tf.repeat(merged, 2, axis=0)


# --------------------------------------------------------------------------- helpers
def _labels(labels: tf.Tensor) -> tf.Tensor:
    """Row labels as a flat int32 vector ([N] or [N, 1] in, any int/float dtype)."""
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        labels = tf.round(labels)
    return tf.reshape(tf.cast(labels, tf.int32), [-1])


def _fp32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def similarity_matrix(vectors: tf.Tensor) -> tf.Tensor:
    """Cosine-similarity matrix ``[B, B]`` of ``vectors`` ``[B, H]``, in fp32."""
    x = tf.math.l2_normalize(_fp32(vectors), axis=1)
    return tf.matmul(x, x, transpose_b=True)


# --------------------------------------------------------------------------- supervised
class MaskedClassifierLoss:
    """Masked 5-way cross-entropy: the reference ``special_crossentropy``.

    Labels 0/1 are binary similarity tasks, 2/3/4 the NLI classes
    (contradiction, entailment, neutral). Rows with label < 2 get logits 2–4
    pushed down by 1e12, the others logits 0–1, so each row is a softmax over
    its own task's classes; then sparse softmax cross-entropy, averaged over
    rows (kexue.fm/archives/8541; RoFormer-Sim train/supervised.py).
    """

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        y = _labels(labels)
        logits = _fp32(logits)
        binary = tf.cast(y < 2, tf.float32)[:, None]
        nli_mask = tf.constant([[0.0, 0.0, 1.0, 1.0, 1.0]])
        masked = logits - (binary * nli_mask + (1.0 - binary) * (1.0 - nli_mask)) * _MASK_OFFSET
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=masked)
        return replica_mean(tf.reduce_sum(loss), tf.size(loss))


class SeparateHeadsLoss:
    """Two heads: 2-way cross-entropy for binary rows, 3-way for NLI rows.

    Labels as in :class:`MaskedClassifierLoss`; NLI labels 2..4 become 0..2 of
    the 3-way head. Averaged over all rows. On bias-free heads this equals
    :class:`MaskedClassifierLoss` on ``concat([logits2, logits3])`` (masked
    logits get zero probability and zero gradient); the option exists so the
    two heads can differ (biases, widths) and so that equality is tested.
    """

    def __call__(self, labels: tf.Tensor, logits2: tf.Tensor, logits3: tf.Tensor) -> tf.Tensor:
        y = _labels(labels)
        binary = y < 2
        ce2 = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.clip_by_value(y, 0, 1), logits=_fp32(logits2))
        ce3 = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.clip_by_value(y - 2, 0, 2), logits=_fp32(logits3))
        return replica_mean(tf.reduce_sum(tf.where(binary, ce2, ce3)), tf.size(y))


class _PairCosineLoss:
    """Base of the post's cosine losses over cos(u, v) of consecutive row pairs.

    Inputs: row labels ``[2P]`` (both rows of a pair carry the pair's label)
    and vectors ``[2P, H]``. The target t of a pair is its binary label; NLI
    rows map entailment (3) → 1 and contradiction (2) → 0, and neutral (4)
    pairs are excluded, since "neutral" is neither similar nor opposite and
    the post's formulas need t ∈ {0, 1}. The loss is averaged over the
    included pairs (0 when there are none).
    """

    def __call__(self, labels: tf.Tensor, vectors: tf.Tensor) -> tf.Tensor:
        y = _labels(labels)[0::2]
        x = tf.math.l2_normalize(_fp32(vectors), axis=1)
        cos = tf.reduce_sum(x[0::2] * x[1::2], axis=1)
        t = tf.cast(tf.logical_or(tf.equal(y, 1), tf.equal(y, 3)), tf.float32)
        keep = tf.cast(tf.not_equal(y, 4), tf.float32)
        return replica_mean(tf.reduce_sum(keep * self.pair_loss(cos, t)), tf.reduce_sum(keep))

    def pair_loss(self, cos: tf.Tensor, t: tf.Tensor) -> tf.Tensor:  # pragma: no cover
        raise NotImplementedError


class CosineMSELoss(_PairCosineLoss):
    """t·(cos−1)² + (1−t)·cos²: the post's first alternative (kexue.fm/archives/8541)."""

    def pair_loss(self, cos: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        return t * tf.square(cos - 1.0) + (1.0 - t) * tf.square(cos)


class CosineMSEPM1Loss(_PairCosineLoss):
    """t·(cos−1)² + (1−t)·(cos+1)²: the post's second alternative (kexue.fm/archives/8541)."""

    def pair_loss(self, cos: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        return t * tf.square(cos - 1.0) + (1.0 - t) * tf.square(cos + 1.0)


class CosineHingeLoss(_PairCosineLoss):
    """t·max(0.9−cos, 0) + (1−t)·max(cos−0.1, 0): the post's third alternative (kexue.fm/archives/8541)."""

    def __init__(self, positive_margin: float = 0.9, negative_margin: float = 0.1):
        self.positive_margin = float(positive_margin)
        self.negative_margin = float(negative_margin)

    def pair_loss(self, cos: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        return (t * tf.nn.relu(self.positive_margin - cos)
                + (1.0 - t) * tf.nn.relu(cos - self.negative_margin))


COSINE_LOSSES = {"cos-mse": CosineMSELoss, "cos-mse-pm1": CosineMSEPM1Loss, "cos-hinge": CosineHingeLoss}


# --------------------------------------------------------------------------- distillation
class Seq2SeqLoss:
    """UniLM seq2seq cross-entropy over segment-1 tokens (stage2.py ``compute_loss_of_seq2seq``).

    ``logits[:, :-1]`` predict ``token_ids[:, 1:]``; positions are weighted by
    ``segment_ids[:, 1:]`` (1 exactly on the synonym tokens and its final
    [SEP]; padding has segment 0); the loss is sum / sum(weights), or 0 when a
    batch has no segment-1 token. On several replicas the sum of weights is
    the global batch's.
    """

    def __call__(self, token_ids: tf.Tensor, segment_ids: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        y = tf.cast(token_ids, tf.int32)[:, 1:]
        w = tf.cast(segment_ids, tf.float32)[:, 1:]
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=_fp32(logits)[:, :-1])
        return replica_mean(tf.reduce_sum(ce * w), tf.reduce_sum(w))

    @staticmethod
    def targets(token_ids: tf.Tensor, segment_ids: tf.Tensor, hidden: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(labels [N], hidden states [N, H]) of the N predicted positions only.

        The same weighting as ``__call__`` (position t predicts token t+1 where
        segment t+1 is 1), gathered so the MLM head can run on N rows instead
        of batch × length; the positions' count is dynamic (no XLA).
        """
        where = tf.not_equal(segment_ids[:, 1:], 0)
        return tf.boolean_mask(tf.cast(token_ids, tf.int32)[:, 1:], where), tf.boolean_mask(hidden[:, :-1], where)

    def on_targets(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """The loss from the logits of :meth:`targets`' positions: equal to ``__call__``'s."""
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=_fp32(logits))
        return replica_mean(tf.reduce_sum(ce), tf.size(labels))


class SimilarityMatrixLoss:
    """weight × mean((S_s − S_t)²) over the batch cosine matrices (stage2.py, SimBERT distillation).

    S_s and S_t are the cosine-similarity matrices of the student's and the
    teacher's vectors over the same rows; the teacher is a constant (its
    gradient is stopped). Default weight 100 as the reference. On several
    replicas each replica computes its rows of the global ``[B, B]`` matrices.
    """

    def __init__(self, weight: float = 100.0):
        self.weight = float(weight)

    def __call__(self, teacher_vectors: tf.Tensor, student_vectors: tf.Tensor) -> tf.Tensor:
        teacher = tf.math.l2_normalize(tf.stop_gradient(_fp32(teacher_vectors)), axis=1)
        student = tf.math.l2_normalize(_fp32(student_vectors), axis=1)
        teacher_all, _ = global_rows(teacher)
        student_all, _ = global_rows(student)
        target = tf.matmul(teacher, teacher_all, transpose_b=True)
        squares = tf.square(tf.matmul(student, student_all, transpose_b=True) - target)
        return self.weight * replica_mean(tf.reduce_sum(squares), tf.size(squares))


# --------------------------------------------------------------------------- stage 1
def partner_rows(rows: tf.Tensor) -> tf.Tensor:
    """The partner of each global row index: i + 1 for even i, i − 1 for odd i (rows 2k, 2k+1 are a pair)."""
    return rows + 1 - rows % 2 * 2


class SimilarityCrossEntropyLoss:
    """In-batch similarity cross-entropy of SimBERT v2 / RoFormer-Sim stage 1.

    The pooled vectors of a batch whose rows ``2k`` and ``2k+1`` are two texts
    of the same meaning are L2-normalised; their cosine matrix, with the
    diagonal pushed down by 1e12 (a row is not its own candidate) and scaled by
    ``scale``, gives each row a softmax over the other rows, trained by
    cross-entropy towards its partner row (``i+1`` for even ``i``, ``i−1`` for
    odd ``i``); the loss is the mean over rows (``compute_loss_of_similarity``
    of ZhuiyiTechnology/roformer-sim ``train/stage1.py``; SimBERT v2 in
    kexue.fm/archives/8454). On several replicas each replica computes its rows
    against every row of the global batch.

    Args:
        scale: multiplies the cosines before the softmax (the reference's 20).

    Example:
    >>> loss = SimilarityCrossEntropyLoss(scale=20.0)
    >>> value = loss(pooled)  # pooled: [2P, H], rows 2k and 2k+1 a pair
    """

    def __init__(self, scale: float = 20.0):
        self.scale = float(scale)

    def __call__(self, vectors: tf.Tensor) -> tf.Tensor:
        x = tf.math.l2_normalize(_fp32(vectors), axis=1)
        everything, offset = global_rows(x)
        rows = offset + tf.range(tf.shape(x)[0])
        sims = tf.matmul(x, everything, transpose_b=True)
        sims = (sims - tf.one_hot(rows, tf.shape(everything)[0]) * _MASK_OFFSET) * self.scale
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=partner_rows(rows), logits=sims)
        return replica_mean(tf.reduce_sum(ce), tf.size(ce))
