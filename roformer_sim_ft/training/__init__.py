"""Training: the loop, objectives, losses, replicas, distribution, states, summaries, resume and run folders.

``roformer_sim_ft.training.train`` and ``roformer_sim_ft.training.TrainConfig`` are the public names."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "STATE_DIR": "loop", "TrainConfig": "loop", "TrainResult": "loop", "check_out_dir": "loop",
    "load_state_model": "loop", "make_optimizer": "loop", "make_strategy": "loop", "train": "loop"
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The public names, imported on first use (importing the package stays cheap and circle-free)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
