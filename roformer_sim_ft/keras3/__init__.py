"""The Keras 3 encoder (any Keras 3 backend, no TensorFlow): model, TensorFlow-checkpoint reader, WordPiece.

Importing this package loads nothing heavy: Keras 3 is imported with the first public name used
(``roformer_sim_ft.keras3.SimEncoder``), and ``roformer_sim_ft.keras3.wordpiece`` needs nothing at all."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ARCHIVE_NAME": "model", "LAYER_NORM_EPSILON": "model", "MLM_NORM_EPSILON": "model",
    "SimEncoder": "model", "build_model": "model", "encoder_model": "model", "keras": "model",
    "load_checkpoint": "model", "ops": "model", "pad_ids": "model", "released_weights": "model",
    "set_released_weights": "model", "weight_names": "model"
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The public names, imported on first use (importing the package stays cheap and circle-free)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
