"""The model core: SimModel, the plain-TensorFlow forward pass, generation and sampling."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SimModel": "sim_model", "make_tokenizer": "sim_model", "pad": "sim_model"
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The public names, imported on first use (importing the package stays cheap and circle-free)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
