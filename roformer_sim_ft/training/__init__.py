"""Training: the loop, objectives, losses, replicas, distribution, states, summaries, resume and run folders.

``roformer_sim_ft.training.train`` and ``roformer_sim_ft.training.TrainConfig`` are the public names."""
from __future__ import annotations

from .. import _lazy_exports

_EXPORTS = {
    "STATE_DIR": "loop", "TrainConfig": "loop", "TrainResult": "loop", "check_out_dir": "loop",
    "load_state_model": "loop", "make_optimizer": "loop", "make_strategy": "loop", "train": "loop"
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
