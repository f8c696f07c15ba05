"""Exports: the orchestration and verification (core), the SavedModel's signatures (savedmodel), the in-graph tokenizer.

``roformer_sim_ft.export.export`` is the public entry point."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Exported": "core", "FORMATS": "core", "H5_NAME": "core", "HF_POOLER": "core", "HF_WEIGHTS": "core",
    "KERAS_ARCHIVE": "core", "KERAS_LOGITS_TOLERANCE": "core", "TOLERANCE": "core", "VERIFY_TEXTS": "core",
    "export": "core", "export_model": "core", "hf_config": "core", "hf_rotary_table": "core",
    "hf_weights": "core", "read_safetensors": "core", "write_safetensors": "core"
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The public names, imported on first use (importing the package stays cheap and circle-free)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
