"""Run bert4keras 0.11.5 on TensorFlow 2.x with tf_keras.

Imported by every module that builds models, before TensorFlow. It makes sure
tf_keras (Keras 2) serves both TensorFlow and bert4keras, loads TensorFlow
quietly, and patches what bert4keras's layers need on today's TensorFlow:
seeded initializers, step-seeded dropout, and the tied MLM embedding (fp16 cast,
reshape+matmul). bert4keras's optimizers are not patched but not used either:
training uses tf_keras's AdamW (``training.make_optimizer``). bert4keras files
on disk are never edited; the patches are applied at import time.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

from . import _TF_LOADED_WITH_KERAS3
from .settings import VERBOSE_ENV

if _TF_LOADED_WITH_KERAS3:
    raise ImportError(
        "roformer_sim_ft must be imported before tensorflow (or set TF_USE_LEGACY_KERAS=1 "
        "in the environment before tensorflow is imported): tensorflow was already imported "
        "with Keras 3, which bert4keras cannot use."
    )
os.environ["TF_KERAS"] = "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"

BERT4KERAS_INSTALL = "pip install --no-deps bert4keras==0.11.5"

try:
    import bert4keras  # noqa: F401  (checked before TensorFlow loads: a missing package is reported at once)
except ModuleNotFoundError as e:
    if e.name != "bert4keras":
        raise
    raise ImportError(
        f"roformer_sim_ft needs bert4keras 0.11.5, which is not installed: {BERT4KERAS_INSTALL} "
        "(--no-deps: its keras<=2.3.1 pin is obsolete)",
        name="bert4keras",
    ) from None


def verbose() -> bool:
    """Whether TensorFlow's own log lines are wanted (``--verbose`` or ``ROFORMER_SIM_FT_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


# TensorFlow's start-up lines (oneDNN, "Could not find cuda drivers", "failed call to cuInit")
# come from absl's C++ logging before it is initialised, which ignores TF_CPP_MIN_LOG_LEVEL.
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^\]]+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def _wanted(line: bytes, level: int) -> bool:
    """Whether a line TensorFlow wrote while loading passes ``TF_CPP_MIN_LOG_LEVEL=level``."""
    if line.startswith(_ABSL_PREAMBLE):
        return level == 0
    match = _ABSL_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= level


def _import_tensorflow():
    """Import TensorFlow and let it find its devices, quietly unless :func:`verbose`.

    Quiet: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 (the user's value is kept), and
    file descriptor 2 is captured while TensorFlow loads; the captured lines are
    written back except TensorFlow's log lines below that level. Python-side
    TensorFlow/absl loggers show errors only. Warnings that matter to a user
    (no GPU for ``--devices``) are the CLI's own, in its words.
    """
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable standard error: nothing to keep quiet
        import tensorflow

        return tensorflow
    captured = tempfile.TemporaryFile()
    try:
        os.dup2(captured.fileno(), 2)
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the CUDA probe ("cuInit") logs here, not later
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().splitlines(keepends=True) if _wanted(line, level)]
        captured.close()
        if kept:
            os.write(2, b"".join(kept))
    import logging

    tensorflow.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tensorflow


tf = _import_tensorflow()

import bert4keras.backend  # noqa: E402,F401  (binds sys.modules['keras'] to tf.keras)
from bert4keras.backend import keras  # noqa: E402

if not hasattr(keras.layers, "InputSpec") or getattr(keras, "__name__", "").startswith("keras.src"):
    raise ImportError(
        "bert4keras needs Keras 2 (tf_keras), but tf.keras is Keras 3. "
        "Install tf_keras==2.21.0 and import roformer_sim_ft before tensorflow."
    )


def _seeded_initializers() -> None:
    """bert4keras hands every layer one unseeded ``TruncatedNormal``; tf_keras then
    returns the *same* values on each call, so a randomly initialised model has
    identical q/k/v/o kernels. Give each call its own seed, drawn from the
    global seed stream (``tf.keras.utils.set_random_seed`` makes it repeatable)."""
    import bert4keras.models as models

    def initializer(self):
        seed = int(np.random.randint(0, 2**31 - 1))
        return keras.initializers.TruncatedNormal(stddev=0.02, seed=seed)

    models.Transformer.initializer = property(initializer)


import numpy as np  # noqa: E402

_seeded_initializers()


class _DropoutSeeds:
    """Which stateless seed each dropout call of a traced training step uses."""

    def __init__(self) -> None:
        self.base = None  # a [2] int64 tensor while a training step is being traced
        self.counter = 0


_DROPOUT_SEEDS = _DropoutSeeds()


class seeded_dropout:
    """Context for tracing a training step: dropout masks become a pure function of
    ``(seed, step, call index, replica)``, so a resumed run draws the same masks as
    an uninterrupted one. Outside it, dropout is Keras's ordinary stateful dropout.

    bert4keras creates its attention-probability Dropout inside
    ``MultiHeadAttention.call`` (a new layer on every call), which rules out
    tf.random.Generator state; numbering the calls within one trace does not.
    """

    def __init__(self, seed: int, step) -> None:
        self.seed, self.step = seed, step

    def __enter__(self):
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = tf.cast(self.step, tf.int64)
        _DROPOUT_SEEDS.base = tf.stack(
            [tf.constant(self.seed, tf.int64), step * 1024 + tf.cast(replica_id, tf.int64)]
        )
        _DROPOUT_SEEDS.counter = 0
        return self

    def __exit__(self, *exc) -> None:
        _DROPOUT_SEEDS.base = None


def next_dropout_seed():
    """The stateless seed [2] of the next dropout call of the training step being traced
    inside ``seeded_dropout``, or None outside it (then dropout is stateful)."""
    base = _DROPOUT_SEEDS.base
    if base is None:
        return None
    _DROPOUT_SEEDS.counter += 1
    return base + tf.constant([0, 1 << 40], tf.int64) * _DROPOUT_SEEDS.counter


class SeededDropout(keras.layers.Dropout):
    """Keras Dropout that uses stateless, step-seeded masks inside ``seeded_dropout``."""

    def call(self, inputs, training=None):
        if _DROPOUT_SEEDS.base is None or self.rate == 0:
            return super().call(inputs, training=training)
        if training is None:
            training = keras.backend.learning_phase()
        seed = next_dropout_seed()

        def dropped():
            return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed)

        if isinstance(training, bool):
            return dropped() if training else tf.identity(inputs)
        return tf.cond(tf.cast(training, tf.bool), dropped, lambda: tf.identity(inputs))


def _patch_dropout() -> None:
    import bert4keras.layers as layers
    import bert4keras.models as models

    layers.Dropout = SeededDropout
    models.Dropout = SeededDropout


_patch_dropout()


def _patch_tied_embedding() -> None:
    """bert4keras's tied MLM output (``Embedding(mode='dense')``), two fixes.

    Under mixed_float16 Keras does not autocast Embedding variables, so the
    fp16 activations met the fp32 table: the table is cast to the activations'
    dtype. And the product is a reshape + matmul instead of bert4keras's
    ellipsis einsum, whose gradient materialised a [batch, time, vocab,
    hidden] tensor (seconds per distillation step on CPU)."""
    import bert4keras.layers as layers

    original = layers.Embedding.call

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return original(self, inputs, mode)
        # reshape + matmul, not einsum: the gradient of an ellipsis einsum materialises
        # a [batch, time, vocab, hidden] tensor (seconds per step on CPU).
        kernel = tf.cast(self.embeddings, inputs.dtype)
        flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
        out = tf.matmul(flat, kernel, transpose_b=True)
        out = tf.reshape(out, tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[:1]], 0))
        out.set_shape(inputs.shape[:-1].concatenate(kernel.shape[:1]))
        return out

    layers.Embedding.call = call


_patch_tied_embedding()
