"""Sentence-vector arithmetic shared by the encoders, the exports' checks and the evaluation (numpy only)."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` with each row (last axis) scaled to length 1, in ``x``'s dtype; all-zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
