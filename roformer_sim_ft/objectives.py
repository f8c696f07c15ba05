"""The two stages as objectives for the one training loop.

An objective owns its models (built inside the training strategy's scope by
:meth:`Objective.build`), computes the loss of one batch, and saves the trained
model in the released layout. The loss math lives in :mod:`roformer_sim_ft.losses`.
"""
from __future__ import annotations

import abc
import os
from typing import Mapping, Optional, Sequence

from . import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf
from bert4keras.backend import keras

from . import checkpoints, losses
from .errors import RoformerSimError
from .model import SimModel

SUPERVISED_OBJECTIVES = ("concat", *losses.COSINE_LOSSES)
HEADS = ("shared", "separate")


class Objective(abc.ABC):
    """A training stage: models, the loss of one batch, and how to save the result."""

    name = "objective"
    model: SimModel  # the model that is trained and evaluated

    def prepare(self, jit_compile: bool = False) -> None:
        """Adapt to the training loop's settings before :meth:`build` (default: nothing)."""

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
    ``dropout_rate`` is the hidden dropout (the reference's 0.2); attention
    dropout stays the config's unless ``attention_dropout_rate`` is given.
    """

    name = "supervised"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        objective: str = "concat",
        features: str | Sequence[str] = losses.DEFAULT_FEATURES,
        heads: str = "shared",
        dropout_rate: float = 0.2,
        seed: int = 0,
        attention_dropout_rate: Optional[float] = None,
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


class DistillObjective(Objective):
    """Distil a fine-tuned encoder (teacher) into the UniLM RoFormer-Sim (student).

    SimBERT v2 / RoFormer-Sim ``train/stage2.py``: seq2seq cross-entropy on the
    second segment plus ``similarity_weight`` × MSE between the student's and
    the teacher's batch cosine-similarity matrices. One student forward pass
    gives both the pooled vector and the MLM logits; under the UniLM mask the
    [CLS] vector sees only the (possibly masked) source, so it is the source's
    encoding. The teacher is frozen and sees the unmasked source.

    ``target_logits_only`` (default) runs the MLM head (Dense, LayerNorm, the
    tied output over the vocabulary) only on the positions the seq2seq loss scores,
    instead of on every position as the reference does: the same loss and
    gradients at a fraction of the head's cost. Its gathered shapes are
    dynamic, so under an XLA-compiled step (``prepare(jit_compile=True)``,
    called by the training loop) the reference's all-position head is used.
    The frozen teacher runs :meth:`FastRoFormer.pooled_of
    <roformer_sim_ft.forward.FastRoFormer.pooled_of>` (no padding in its
    matmuls, [CLS]-only last layer; the keras encoder under XLA).
    Dropout as in :class:`SupervisedObjective` (student only).
    """

    name = "distill"
    HEAD_LAYERS = ("MLM-Dense", "MLM-Norm", "Embedding-Token", "MLM-Bias", "MLM-Activation")

    def __init__(
        self,
        teacher: str | os.PathLike,
        student: str | os.PathLike,
        similarity_weight: float = 100.0,
        dropout_rate: float = 0.2,
        target_logits_only: bool = True,
        attention_dropout_rate: Optional[float] = None,
    ) -> None:
        checkpoints.resolve(teacher)
        checkpoints.resolve(student)
        self.teacher_path, self.student_path = teacher, student
        self.dropout_rate, self.attention_dropout_rate = dropout_rate, attention_dropout_rate
        self.target_logits_only = target_logits_only
        self._fast_teacher = True
        self._seq2seq = losses.Seq2SeqLoss()
        self._similarity = losses.SimilarityMatrixLoss(similarity_weight)

    def prepare(self, jit_compile: bool = False) -> None:
        if jit_compile:
            self.target_logits_only = False
            self._fast_teacher = False  # packing has dynamic shapes

    def build(self) -> None:
        self.teacher = SimModel.load(self.teacher_path)
        self.teacher.encoder.trainable = False
        self.model = SimModel.load(
            self.student_path, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate
        )
        if self.teacher.vocab != self.model.vocab:
            raise RoformerSimError(
                f"teacher {self.teacher_path} and student {self.student_path} have different vocabularies"
            )
        model = self.model.model
        names = {layer.name for layer in model.layers}
        if self.target_logits_only and all(n in names for n in self.HEAD_LAYERS):
            self._head = [model.get_layer(n) for n in self.HEAD_LAYERS]
            self._trunk = keras.Model(model.inputs, [model.outputs[0], self._head[0].input], name="student_trunk")
        else:
            self._trunk = None

    def _mlm_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        dense, norm, embedding, bias, activation = self._head
        return activation(bias(embedding(norm(dense(hidden)), mode="dense")))

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return list(self.model.model.trainable_variables)

    def trackables(self) -> dict:
        return {"model": self.model.model}

    def _teacher_vectors(self, tokens, segments):
        """The frozen teacher's pooled vectors: its plain-TF forward pass (packed tokens, [CLS]-only
        last layer; equal to the keras encoder within 1e-5) when the layout allows, else the keras encoder."""
        fast = self.teacher.fast_forward if self._fast_teacher else None
        if fast is None:
            return self.teacher.encoder([tokens, segments], training=False)
        return fast.pooled_of(tokens)  # the teacher's segment ids are all 0 (one text)

    def loss(self, batch, training=True):
        teacher = self._teacher_vectors(batch["teacher_token_ids"], batch["teacher_segment_ids"])
        tokens, segments = batch["student_token_ids"], batch["student_segment_ids"]
        if self._trunk is not None:
            pooled, hidden = self._trunk([tokens, segments], training=training)
            labels, hidden = self._seq2seq.targets(tokens, segments, hidden)
            seq2seq = self._seq2seq.on_targets(labels, self._mlm_logits(hidden))
        else:
            pooled, logits = self.model.model([tokens, segments], training=training)
            seq2seq = self._seq2seq(tokens, segments, logits)
        similarity = self._similarity(tf.stop_gradient(teacher), pooled)
        return seq2seq + similarity, {"seq2seq": seq2seq, "similarity": similarity}
