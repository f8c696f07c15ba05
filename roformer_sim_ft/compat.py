"""Run bert4keras 0.11.5 on TensorFlow 2.x with tf_keras.

Imported first by the package. It selects tf_keras (Keras 2) for both
TensorFlow and bert4keras *before* TensorFlow loads, and holds every fix that
bert4keras needs on today's TensorFlow, so no other module has to care.
bert4keras files on disk are never edited; fixes are applied at import time.
"""
from __future__ import annotations

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "roformer_sim_ft must be imported before tensorflow (or set TF_KERAS=1 and "
        "TF_USE_LEGACY_KERAS=1 in the environment): tensorflow was already imported "
        "with Keras 3, which bert4keras cannot use."
    )
os.environ["TF_KERAS"] = "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

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
