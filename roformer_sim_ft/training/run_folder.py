"""A training run's output folder: whether a run may start in it, and claiming it (under its lock).

A folder holding another run (its ``training_state/step-N``, or, those deleted,
the model and ``run.json`` it wrote) takes a new run only with ``overwrite``,
which deletes what that run wrote (states, model files, run.json, the event
files its log folder's manifest names) and nothing else. No input of the run
(``{flag: path}``, e.g. the checkpoint) may lie inside the folder.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import checkpoints
from . import distribute, states, summaries
from ..fs import folders as outputs
from ..errors import RoformerSimError
from ..settings import LOG_DIR, TrainConfig

STATE_DIR = states.STATE_DIR


def check_out_dir(config: TrainConfig, inputs: Optional[Mapping[str, Any]] = None) -> None:
    """One line, before any work, if ``config.out_dir`` cannot take this run: a file,
    a folder that is not a training output of ours, another run without
    ``resume``/``overwrite``, or a folder holding one of ``inputs`` (``{flag: path}``).
    (:func:`train` checks again under the folder's lock.)"""
    if not config.out_dir or not distribute.role().chief:
        return  # TrainConfig.validate says so; a worker other than the chief never touches out_dir
    out_dir = outputs.real_path(config.out_dir)
    outputs.check_not_input(out_dir, inputs or {})
    outputs.recover(out_dir)
    outputs.check_folder_target(out_dir, ("training",), "training run")
    if not config.resume and not config.overwrite:
        _refuse_earlier_run(out_dir)


def _refuse_earlier_run(out_dir: Path) -> None:
    """One line if ``out_dir`` holds another run: its states, or (states deleted) its model or run.json."""
    latest = states.latest_state(out_dir) if out_dir.is_dir() else None
    if latest is not None:
        raise RoformerSimError(
            f"{out_dir} holds a run at step {states.step_of(latest)}: use --resume to continue it "
            "or --overwrite to start again"
        )
    if _model_files(out_dir):
        raise RoformerSimError(
            f"{out_dir} holds a trained model but no training state to resume: "
            "use --overwrite to start again, or choose another --out"
        )


def _model_files(out_dir: Path) -> list[Path]:
    """The model files and run.json an earlier run wrote in ``out_dir`` (by its manifest)."""
    _, ours = outputs.ownership(out_dir) if out_dir.is_dir() else (None, set())
    return [out_dir / name for name in ("run.json", *checkpoints.CKPT_FILES)
            if name in ours and os.path.lexists(out_dir / name)]


def claim(out_dir: Path, config: TrainConfig) -> None:
    """Make ``out_dir`` this run's (under its lock): leftovers of a kill removed,
    another run's states refused or (``overwrite``) cleared, the manifest written."""
    for leftover in states.remove_leftovers(out_dir):
        print(f"note: removed {leftover} (a state save cut short by a kill)", file=sys.stderr)
    if config.resume:
        return
    if not config.overwrite:
        _refuse_earlier_run(out_dir)
    elif states.latest_state(out_dir) is not None or _model_files(out_dir):
        _, ours = outputs.ownership(out_dir)
        kept_logs = LOG_DIR in ours and (out_dir / LOG_DIR).is_dir() and not summaries.clear_logs(out_dir / LOG_DIR)
        states.clear_states(out_dir)
        for path in _model_files(out_dir):
            path.unlink()
        print(f"note: --overwrite: cleared the earlier run in {out_dir}", file=sys.stderr)
        if kept_logs:  # event files written before log folders had a manifest: not known to be ours
            print(f"note: kept {out_dir / LOG_DIR}: no manifest names the earlier run's event files there",
                  file=sys.stderr)
    if outputs.read_manifest(out_dir) is None:
        _, ours = outputs.ownership(out_dir)
        log_dir = config.log_dir()
        logs = {LOG_DIR} if log_dir and Path(log_dir).resolve() == (out_dir / LOG_DIR).resolve() else set()
        outputs.write_manifest(out_dir, "training", {"run.json", STATE_DIR, outputs.LOCK_NAME} | logs | ours)
