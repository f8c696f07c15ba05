"""Exports: the orchestration and verification (core), the SavedModel's signatures (savedmodel), the in-graph tokenizer.

``roformer_sim_ft.export.export`` is the public entry point."""
from __future__ import annotations

from .. import _lazy_exports

_EXPORTS = {
    "Exported": "core", "FORMATS": "core", "H5_NAME": "core", "HF_POOLER": "core", "HF_WEIGHTS": "core",
    "KERAS_ARCHIVE": "core", "KERAS_LOGITS_TOLERANCE": "core", "TOLERANCE": "core", "VERIFY_TEXTS": "core",
    "export": "core", "export_model": "core", "hf_config": "core", "hf_rotary_table": "core",
    "hf_weights": "core", "read_safetensors": "core", "write_safetensors": "core"
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
