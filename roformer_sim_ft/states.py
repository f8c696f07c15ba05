"""Training states: ``OUT/training_state/step-N`` folders, written atomically, pruned, found again.

A state holds the ``tf.train.Checkpoint`` of the model, the optimizer and any
head (``ckpt.*``), ``state.json`` (step, sampler position, history, settings)
and the model's ``bert_config.json`` and ``vocab.txt``, so that
:func:`load_state_model` (and ``roformer-sim-ft export``) can rebuild the model
from the folder alone. The training loop (:mod:`roformer_sim_ft.training`)
decides when to save; this module knows how.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from . import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from . import checkpoints
from .errors import RoformerSimError

STATE_DIR = "training_state"


def _step_of(path: Path) -> Optional[int]:
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


def list_states(out_dir: Path) -> list[Path]:
    """The complete ``step-N`` folders of ``out_dir``, oldest first."""
    root = Path(out_dir) / STATE_DIR
    states = [p for p in root.glob("step-*") if _step_of(p) is not None and (p / "state.json").exists()]
    return sorted(states, key=_step_of)


def latest_state(out_dir: Path) -> Optional[Path]:
    """The newest complete state of ``out_dir``, or None."""
    states = list_states(out_dir)
    return states[-1] if states else None


def save_state(out_dir: Path, step: int, checkpoint: tf.train.Checkpoint, record: dict, keep: int, model) -> Path:
    """Write ``training_state/step-N`` through a temporary folder, then prune all but the ``keep`` newest."""
    root = Path(out_dir) / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.tmp-", dir=root))
    try:
        checkpoint.write(str(tmp / "ckpt"))
        checkpoints.write_config_vocab(tmp, model.config, model.vocab)
        (tmp / "state.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    states = list_states(out_dir)
    for old in states[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_record(state: Path) -> dict:
    """The ``state.json`` of a state folder."""
    try:
        return json.loads((Path(state) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RoformerSimError(f"{state}/state.json: unreadable training state ({e})") from None


def load_state_model(path: str | os.PathLike):
    """The model of a training state: a ``training_state/step-N`` folder, or a
    training output folder (its latest state). Optimizer and head are not needed."""
    from .model import SimModel

    path = Path(path)
    if not (path / "state.json").exists():
        latest = latest_state(path)
        if latest is None:
            raise RoformerSimError(f"{path}: not a training state (no state.json, no {STATE_DIR}/step-N)")
        path = latest
    config = checkpoints.read_config(path / checkpoints.CONFIG_NAME)
    vocab = checkpoints.read_vocab(path / checkpoints.VOCAB_NAME, config["vocab_size"])
    model = SimModel(config, vocab)
    tf.train.Checkpoint(model=model.model).read(str(path / "ckpt")).expect_partial()
    return model
