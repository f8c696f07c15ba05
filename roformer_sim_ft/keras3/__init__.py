"""The Keras 3 encoder (any Keras 3 backend, no TensorFlow): model, TensorFlow-checkpoint reader, WordPiece.

Importing this package loads nothing heavy: Keras 3 is imported with the first public name used
(``roformer_sim_ft.keras3.SimEncoder``), and ``roformer_sim_ft.keras3.wordpiece`` needs nothing at all."""
from __future__ import annotations

from .. import _lazy_exports

_EXPORTS = {
    "ARCHIVE_NAME": "model", "LAYER_NORM_EPSILON": "model", "MLM_NORM_EPSILON": "model",
    "SimEncoder": "model", "build_model": "model", "encoder_model": "model", "keras": "model",
    "load_checkpoint": "model", "ops": "model", "pad_ids": "model", "released_weights": "model",
    "set_released_weights": "model", "weight_names": "model"
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
