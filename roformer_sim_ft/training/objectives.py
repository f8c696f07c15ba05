"""The training stages as objectives for the one training loop.

An objective owns its models (built inside the training strategy's scope by
:meth:`Objective.build`), computes the loss of one batch, and saves the trained
model in the released layout. The loss math lives in :mod:`roformer_sim_ft.training.losses`;
on several replicas every loss is the global batch's (:mod:`roformer_sim_ft.training.replicas`).
"""
from __future__ import annotations

import abc
import os
from typing import Mapping, Optional, Sequence

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf
from bert4keras.backend import keras

from .. import checkpoints
from . import losses
from ..errors import RoformerSimError
from ..model.sim_model import SimModel
from ..model.packed_unilm import PackedUniLM
from ..settings import StageSettings

SUPERVISED_OBJECTIVES = ("concat", *losses.COSINE_LOSSES)
HEADS = ("shared", "separate")


class Objective(abc.ABC):
    """A training stage: models, the loss of one batch, and how to save the result."""

    name = "objective"
    model: SimModel  # the model that is trained and evaluated

    rows_per_replica_multiple = 1  # each replica's rows must be a multiple of this

    def prepare(self, jit_compile: bool = False, replicas: int = 1, batch_size: Optional[int] = None) -> None:
        """Adapt to the training loop's settings before :meth:`build`.

        Refuses a batch that does not split evenly over the replicas (one line).
        """
        if batch_size is None or replicas <= 1:
            return
        multiple = replicas * self.rows_per_replica_multiple
        if batch_size % multiple:
            what = "whole pairs (an even number of rows)" if self.rows_per_replica_multiple == 2 else "equal shares"
            raise RoformerSimError(
                f"a batch of {batch_size} rows on {replicas} replicas: each replica must hold {what}; "
                f"use a batch size that is a multiple of {multiple}"
            )

    @abc.abstractmethod
    def build(self) -> None:
        """Create models and variables (called inside the distribution strategy's scope)."""

    @property
    @abc.abstractmethod
    def trainable_variables(self) -> list[tf.Variable]:
        """Variables the optimizer updates."""

    @abc.abstractmethod
    def trackables(self) -> dict:
        """Objects whose variables go into the training state (``tf.train.Checkpoint`` kwargs)."""

    @abc.abstractmethod
    def loss(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> tuple[tf.Tensor, dict]:
        """Total loss (fp32 scalar) and named parts of one batch."""

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write the trained model in the released layout."""
        self.model.save(out_dir)


class SupervisedObjective(Objective):
    """Sentence-BERT fine-tuning of a RoFormer-Sim encoder (kexue.fm/archives/8541).

    Pooled vectors → features of each pair (default ``[u, v, |u−v|]``) →
    bias-free ``Dense(5)`` with the reference's masked 5-way cross-entropy
    (``heads="shared"``), or bias-free ``Dense(2)`` + ``Dense(3)`` heads
    (``heads="separate"``). ``objective`` may instead name one of the post's
    cosine losses (``cos-mse``, ``cos-mse-pm1``, ``cos-hinge``), which train the
    encoder directly. Only the encoder is saved, with the input checkpoint's
    MLM weights carried over so the distillation stage can start from it.
    ``dropout_rate`` is the hidden dropout (the reference's 0.2);
    ``attention_dropout_rate`` the attention-probability dropout (0, as the
    reference's bert4keras 0.10.6; None: the config's).
    """

    name = "supervised"
    rows_per_replica_multiple = 2  # rows 2i, 2i+1 are a pair: the features join them on one replica

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        objective: str = "concat",
        features: str | Sequence[str] = losses.DEFAULT_FEATURES,
        heads: str = "shared",
        dropout_rate: float = StageSettings.dropout_rate,
        seed: int = 0,
        attention_dropout_rate: Optional[float] = StageSettings.attention_dropout_rate,
    ) -> None:
        if objective not in SUPERVISED_OBJECTIVES:
            raise RoformerSimError(f"unknown objective {objective!r}; choose from {', '.join(SUPERVISED_OBJECTIVES)}")
        if heads not in HEADS:
            raise RoformerSimError(f"unknown heads {heads!r}; choose from {', '.join(HEADS)}")
        checkpoints.resolve(checkpoint)  # fail early, before any model is built
        self.checkpoint, self.objective, self.heads = checkpoint, objective, heads
        self.features = losses.parse_features(features)
        self.dropout_rate, self.seed = dropout_rate, seed
        self.attention_dropout_rate = attention_dropout_rate
        self.head_layers: list = []

    def build(self) -> None:
        self.model = SimModel.load(
            self.checkpoint, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate
        )
        if self.objective != "concat":
            self._cosine = losses.COSINE_LOSSES[self.objective]()
            return
        width = losses.feature_dim(self.model.config["hidden_size"], self.features)
        sizes = (5,) if self.heads == "shared" else (2, 3)
        for i, units in enumerate(sizes):
            layer = keras.layers.Dense(
                units,
                use_bias=False,
                kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed + i),
                name=f"classifier_{units}",
                dtype="float32",
            )
            layer.build((None, width))
            self.head_layers.append(layer)
        self._loss = losses.MaskedClassifierLoss() if self.heads == "shared" else losses.SeparateHeadsLoss()

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        head = [w for layer in self.head_layers for w in layer.trainable_weights]
        return list(self.model.encoder.trainable_variables) + head

    def trackables(self) -> dict:
        items = {"model": self.model.model}
        for layer in self.head_layers:
            items[layer.name] = layer
        return items

    def loss(self, batch, training=True):
        vectors = self.model.encoder([batch["token_ids"], batch["segment_ids"]], training=training)
        vectors = tf.cast(vectors, tf.float32)
        if self.objective != "concat":
            return self._cosine(batch["labels"], vectors), {}
        features = losses.pair_features(vectors, self.features)
        logits = [layer(features) for layer in self.head_layers]
        return self._loss(batch["labels"], *logits), {}


class _UniLMObjective(Objective):
    """What stage 1 and distillation share: the UniLM model whose one forward pass gives
    the pooled vector and the seq2seq loss.

    Under the UniLM mask the [CLS] vector sees only segment 0 (the possibly
    masked source), so the pooled vector is the source's encoding.
    ``target_logits_only`` (default) runs the MLM head (Dense, LayerNorm, the
    tied output over the vocabulary) only on the positions the seq2seq loss scores,
    instead of on every position as the reference does: the same loss and
    gradients at a fraction of the head's cost. ``packed`` (default) runs the
    student through :class:`~roformer_sim_ft.model.packed_unilm.PackedUniLM` (dense
    layers on the real tokens only, the MLM head on the scored positions only;
    the same loss and gradients within float round-off) when the layout allows,
    the model computes in float32 and ``target_logits_only`` is on, else
    through the keras model. Both have dynamic shapes, so under an
    XLA-compiled step (``prepare(jit_compile=True)``, called by the training
    loop) the keras model with the reference's all-position head is used.
    """

    HEAD_LAYERS = ("MLM-Dense", "MLM-Norm", "Embedding-Token", "MLM-Bias", "MLM-Activation")

    def __init__(
        self, dropout_rate: float, target_logits_only: bool, attention_dropout_rate: Optional[float], packed: bool = True
    ) -> None:
        self.dropout_rate, self.attention_dropout_rate = dropout_rate, attention_dropout_rate
        self.target_logits_only, self.packed = target_logits_only, packed
        self._seq2seq = losses.Seq2SeqLoss()
        self._packed = None

    def prepare(self, jit_compile: bool = False, replicas: int = 1, batch_size: Optional[int] = None) -> None:
        super().prepare(jit_compile, replicas, batch_size)
        if jit_compile:
            self.target_logits_only = self.packed = False

    def _load(self, path, **kwargs) -> None:
        self.model = SimModel.load(
            path, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate, **kwargs
        )
        model = self.model.model
        names = {layer.name for layer in model.layers}
        if self.target_logits_only and all(n in names for n in self.HEAD_LAYERS):
            self._head = [model.get_layer(n) for n in self.HEAD_LAYERS]
            self._trunk = keras.Model(model.inputs, [model.outputs[0], self._head[0].input], name="student_trunk")
        else:
            self._trunk = None
        self._packed = None
        fast = self.model.fast_forward
        if fast is not None and self.model.transformer.layers["Embedding-Norm"].compute_dtype == "float32":
            transformer = self.model.transformer
            self._packed = PackedUniLM(fast, transformer.dropout_rate, transformer.attention_dropout_rate)

    def _mlm_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        dense, norm, embedding, bias, activation = self._head
        return activation(bias(embedding(norm(dense(hidden)), mode="dense")))

    def _pooled_and_seq2seq(self, tokens: tf.Tensor, segments: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The pooled vectors of the rows and their seq2seq loss, from one forward pass."""
        if self.packed and self.target_logits_only and self._packed is not None:
            pooled, labels, hidden = self._packed(tokens, segments, training)
            return pooled, self._seq2seq.on_targets(labels, self._packed.fast.mlm_logits(hidden))
        if self._trunk is not None:
            pooled, hidden = self._trunk([tokens, segments], training=training)
            labels, hidden = self._seq2seq.targets(tokens, segments, hidden)
            return pooled, self._seq2seq.on_targets(labels, self._mlm_logits(hidden))
        pooled, logits = self.model.model([tokens, segments], training=training)
        return pooled, self._seq2seq(tokens, segments, logits)

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return list(self.model.model.trainable_variables)

    def trackables(self) -> dict:
        return {"model": self.model.model}


class DistillObjective(_UniLMObjective):
    """Distil a fine-tuned encoder (teacher) into the UniLM RoFormer-Sim (student).

    SimBERT v2 / RoFormer-Sim ``train/stage2.py``: seq2seq cross-entropy on the
    second segment plus ``similarity_weight`` × MSE between the student's and
    the teacher's batch cosine-similarity matrices (on the global batch across
    replicas). One student forward pass gives both the pooled vector and the
    MLM logits (``target_logits_only`` and ``packed`` as in :class:`_UniLMObjective`). The
    teacher is frozen and sees the unmasked source; it runs
    :meth:`FastRoFormer.pooled_of <roformer_sim_ft.model.forward.FastRoFormer.pooled_of>`
    (no padding in its matmuls, [CLS]-only last layer; the keras encoder under
    XLA). Dropout as in :class:`SupervisedObjective` (student only).
    """

    name = "distill"

    def __init__(
        self,
        teacher: str | os.PathLike,
        student: str | os.PathLike,
        similarity_weight: float = 100.0,
        dropout_rate: float = StageSettings.dropout_rate,
        target_logits_only: bool = True,
        attention_dropout_rate: Optional[float] = StageSettings.attention_dropout_rate,
        packed: bool = True,
    ) -> None:
        checkpoints.resolve(teacher)
        checkpoints.resolve(student)
        super().__init__(dropout_rate, target_logits_only, attention_dropout_rate, packed)
        self.teacher_path, self.student_path = teacher, student
        self._fast_teacher = True
        self._similarity = losses.SimilarityMatrixLoss(similarity_weight)

    def prepare(self, jit_compile: bool = False, replicas: int = 1, batch_size: Optional[int] = None) -> None:
        super().prepare(jit_compile, replicas, batch_size)
        if jit_compile:
            self._fast_teacher = False  # packing has dynamic shapes

    def build(self) -> None:
        self.teacher = SimModel.load(self.teacher_path)
        self.teacher.encoder.trainable = False
        self._load(self.student_path)
        if self.teacher.vocab != self.model.vocab:
            raise RoformerSimError(
                f"teacher {self.teacher_path} and student {self.student_path} have different vocabularies"
            )

    def _teacher_vectors(self, tokens, segments):
        """The frozen teacher's pooled vectors: its plain-TF forward pass (packed tokens, [CLS]-only
        last layer; equal to the keras encoder within 1e-5) when the layout allows, else the keras encoder."""
        fast = self.teacher.fast_forward if self._fast_teacher else None
        if fast is None:
            return self.teacher.encoder([tokens, segments], training=False)
        return fast.pooled_of(tokens)  # the teacher's segment ids are all 0 (one text)

    def loss(self, batch, training=True):
        teacher = self._teacher_vectors(batch["teacher_token_ids"], batch["teacher_segment_ids"])
        pooled, seq2seq = self._pooled_and_seq2seq(batch["student_token_ids"], batch["student_segment_ids"], training)
        similarity = self._similarity(tf.stop_gradient(teacher), pooled)
        return seq2seq + similarity, {"seq2seq": seq2seq, "similarity": similarity}


class Stage1Objective(_UniLMObjective):
    """Stage 1: make a RoFormer-Sim from a RoFormer (SimBERT v2, RoFormer-Sim ``train/stage1.py``).

    Rows ``2k`` and ``2k+1`` of a batch are one pair of similar texts in both
    directions (``[CLS] source [SEP] target [SEP]``, the source whole-word
    masked half of the time). Loss = the seq2seq cross-entropy on the target
    segment + :class:`~roformer_sim_ft.training.losses.SimilarityCrossEntropyLoss` of the
    pooled vectors (the sources' encodings) with ``similarity_scale`` (20),
    both logged, the similarity term on the global batch across replicas.

    Args:
        checkpoint: a released RoFormer-Sim(-FT), a checkpoint written by
            ``roformer-sim-ft init``, or a plain RoFormer: with
            ``init_missing_heads`` (default) a pooler or MLM head it lacks is
            initialised (``checkpoints.init_weights`` values) and listed in
            ``initialised``.
        similarity_scale: the cosine scale of the similarity loss.
        dropout_rate: hidden dropout (the reference's 0.2).
        attention_dropout_rate: attention-probability dropout (0, as the
            reference's bert4keras 0.10.6; None: the config's).
        target_logits_only: the MLM head on the scored positions only (see
            :class:`_UniLMObjective`).
        packed: the student's dense layers on real tokens only (see
            :class:`_UniLMObjective`; False: the keras model).

    Example:
    >>> objective = Stage1Objective("chinese_roformer-char_L-12_H-768_A-12")
    >>> training.train(objective, Stage1Batches.from_data(pairs, tokenizer), TrainConfig(out_dir="sim", learning_rate=1e-5))
    """

    name = "pretrain"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        similarity_scale: float = 20.0,
        dropout_rate: float = StageSettings.dropout_rate,
        target_logits_only: bool = True,
        attention_dropout_rate: Optional[float] = StageSettings.attention_dropout_rate,
        init_missing_heads: bool = True,
        packed: bool = True,
    ) -> None:
        files = checkpoints.resolve(checkpoint)
        super().__init__(dropout_rate, target_logits_only, attention_dropout_rate, packed)
        self.checkpoint, self.init_missing_heads = checkpoint, init_missing_heads
        self.initialised: list[str] = (
            checkpoints.absent_heads(files.prefix, checkpoints.read_config(files.config)) if init_missing_heads else []
        )
        self._similarity = losses.SimilarityCrossEntropyLoss(similarity_scale)

    def build(self) -> None:
        self._load(self.checkpoint, init_missing_heads=self.init_missing_heads)

    def loss(self, batch, training=True):
        pooled, seq2seq = self._pooled_and_seq2seq(batch["token_ids"], batch["segment_ids"], training)
        similarity = self._similarity(pooled)
        return seq2seq + similarity, {"seq2seq": seq2seq, "similarity": similarity}
