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
from pathlib import Path
from typing import Optional

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from .. import checkpoints
from ..fs import folders as outputs
from ..errors import DamagedState, RoformerSimError
from ..fs.atomic import error_text, os_error

STATE_DIR = "training_state"


def step_of(path: Path) -> Optional[int]:
    """N of a `step-N` folder, or None for any other name."""
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


def list_states(out_dir: Path) -> list[Path]:
    """The complete ``step-N`` folders of ``out_dir``, oldest first."""
    root = Path(out_dir) / STATE_DIR
    states = [p for p in root.glob("step-*") if step_of(p) is not None and (p / "state.json").exists()]
    return sorted(states, key=step_of)


def latest_state(out_dir: Path) -> Optional[Path]:
    """The newest complete state of ``out_dir``, or None."""
    states = list_states(out_dir)
    return states[-1] if states else None


def save_state(out_dir: Path, step: int, checkpoint: tf.train.Checkpoint, record: dict, keep: int, model) -> Path:
    """Write ``training_state/step-N`` through a temporary folder, then prune all but the ``keep`` newest.

    A failed write (full disk, no permission) raises a one-line error naming the
    state and leaves the earlier states as they were.
    """
    root = Path(out_dir) / STATE_DIR
    final = root / f"step-{step}"
    tmp = outputs.temp_dir_beside(final)
    try:
        checkpoint.write(str(tmp / "ckpt"))
        checkpoints.write_config_vocab(tmp, model.config, model.vocab)
        (tmp / "state.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except OSError as e:
        raise os_error(final, e) from None
    except tf.errors.OpError as e:
        raise RoformerSimError(f"{final}: cannot write the training state ({error_text(e)}); "
                               "the earlier states are kept") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    states = list_states(out_dir)
    for old in states[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Delete the ``.step-N.tmp-*`` folders a killed save left behind; return them."""
    root = Path(out_dir) / STATE_DIR
    found = [p for p in root.glob(".step-*.tmp-*") if p.is_dir()] if root.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


def clear_states(out_dir: Path) -> None:
    """Delete every ``step-N`` state of ``out_dir`` (ours by name and content: each holds state.json)."""
    for state in list_states(out_dir):
        shutil.rmtree(state)


def set_aside(state: Path) -> Path:
    """Rename a damaged state to ``step-N.damaged`` (kept for inspection, no longer listed)."""
    target = state.with_name(state.name + ".damaged")
    n = 1
    while target.exists():
        n += 1
        target = state.with_name(f"{state.name}.damaged-{n}")
    os.rename(state, target)
    return target


def read_record(state: Path) -> dict:
    """The ``state.json`` of a state folder (:class:`DamagedState` when it cannot be one)."""
    try:
        record = json.loads((Path(state) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DamagedState(f"{state}/state.json: unreadable training state ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "sampler" not in record:
        raise DamagedState(f"{state}/state.json: not a training state record")
    history = record.get("history", {"evaluations": [], "best": None, "losses": []})
    if not (isinstance(history, dict) and isinstance(history.get("evaluations"), list)
            and isinstance(history.get("losses"), list) and isinstance(history.get("best", 0), (dict, type(None)))):
        raise DamagedState(f"{state}/state.json: malformed history (expected evaluations, losses and best)")
    return {**record, "history": history}


def load_state_model(path: str | os.PathLike):
    """The model of a training state: a ``training_state/step-N`` folder, or a
    training output folder (its latest state). Optimizer and head are not needed."""
    from ..model.sim_model import SimModel

    path = Path(path)
    if not (path / "state.json").exists():
        latest = latest_state(path)
        if latest is None:
            raise RoformerSimError(f"{path}: not a training state (no state.json, no {STATE_DIR}/step-N)")
        path = latest
    config = checkpoints.read_config(path / checkpoints.CONFIG_NAME)
    vocab = checkpoints.read_vocab(path / checkpoints.VOCAB_NAME, config["vocab_size"])
    model = SimModel(config, vocab)
    try:
        tf.train.Checkpoint(model=model.model).read(str(path / "ckpt")).expect_partial()
    except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:
        raise RoformerSimError(f"{path}: damaged training state ({error_text(e)})") from None
    return model
