"""The model core: SimModel, the plain-TensorFlow forward pass, generation and sampling."""
from __future__ import annotations

from .. import _lazy_exports

_EXPORTS = {
    "SimModel": "sim_model", "make_tokenizer": "sim_model", "pad": "sim_model"
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
