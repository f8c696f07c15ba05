"""Timing, log lines and model evaluation shared by the long benchmark scripts
(compare_objectives.py, reproduce_small.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
    """Wall and process-CPU seconds since construction."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall_s": round(time.perf_counter() - self.wall0, 2), "cpu_s": round(time.process_time() - self.cpu0, 2)}


def eval_model(evaluator, path: Path, name: str) -> dict:
    """Score the checkpoint at ``path`` with a SimilarityEvaluator; the result and how long it took."""
    from roformer_sim_ft.model import SimModel

    clock = Clock()
    result = evaluator(SimModel.load(path), name=name)
    log(f"eval {name}: avg {result.average:.2f} ({clock.read()['wall_s']} s)")
    return {"eval": result.as_dict(), "eval_time": clock.read()}


def shared_data_default() -> str | None:
    """The data root named by ``$ROFORMER_SIM_FT_SHARED`` (the shared folder or its ``data/``), as
    tests/conftest.py reads it; None when the variable is unset (then ``--data`` is required)."""
    env = os.environ.get("ROFORMER_SIM_FT_SHARED")
    if not env:
        return None
    return str(Path(env) / "data" if (Path(env) / "data").is_dir() else Path(env))
