"""What ``resume`` continues: a state, only with the model, vocab, precision, teacher and settings it was saved with.

The chief's part of resuming (:func:`read_state`, called by the training
loop): take the newest readable state of ``OUT/training_state``; refuse a
settings mismatch in one line naming the setting and both values, without
renaming or deleting any state; set aside as ``step-N.damaged`` only a state
whose files cannot be used as written (unreadable or malformed ``state.json``,
config, vocab, sampler or weights) and try the previous one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from .. import checkpoints
from . import states
from ..errors import DamagedState, NothingToDo, RoformerSimError
from ..fs.atomic import error_text
from ..model.sim_model import _BUILD_KEYS
from ..settings import MIXED_PRECISIONS

STATE_DIR = states.STATE_DIR

# Settings a state is bound to: a different value makes a different model (never overridable).
RESUME_FIXED = ("stage", "objective", "features", "heads")
# Settings whose change only alters how training goes on: refused unless config.allow_changed_settings.
# Paths (checkpoint, data, teacher, student) may move; the data's and the teacher's content are compared by fingerprint.
# attention_dropout_used follows from attention_dropout_rate and the checkpoint's config.
RESUME_IGNORED = ("checkpoint", "data", "teacher", "student", "skip_bad_lines", "attention_dropout_used")
# bert_config.json keys that make another model (its dropout probabilities only change how training goes on).
MODEL_KEYS = tuple(k for k in _BUILD_KEYS if not k.endswith("_dropout_prob"))
# Where a tf.train.Checkpoint of the loop keeps the fp16 loss scale (LossScaleOptimizer) of its optimizer.
LOSS_SCALE_PREFIX = "optimizer/loss_scale/"

_FLAGS = {"dropout_rate": "--dropout", "attention_dropout_rate": "--attention-dropout"}
# What a state saved before a setting was recorded was trained with.
_UNRECORDED = {"adam_epsilon": 1e-6}


def _shown(value, key: str = "") -> str:
    if value is None and key == "attention_dropout_rate":
        return "config"  # the checkpoint config's rate, as the flag spells it
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def precision_flag(policy: Optional[str]) -> str:
    """The command-line form of a mixed-precision policy: ``--mixed-precision fp16``, or ``no --mixed-precision``."""
    short = {v: k for k, v in MIXED_PRECISIONS.items()}.get(policy) if policy else None
    return f"--mixed-precision {short or policy}" if policy else "no --mixed-precision"


def check_settings(run, state: Path, saved: dict) -> None:
    """One line naming the first setting that differs from the state's (seed, data and teacher fingerprints included)."""
    if "settings" not in saved:
        return
    unrecorded = {k: v for k, v in _UNRECORDED.items() if k in run.settings}
    before = {**unrecorded, **saved.get("settings", {}), "seed": saved.get("seed", run.config.seed)}
    now = {**run.settings, "seed": run.config.seed}
    for key in sorted(set(before) | set(now), key=lambda k: (k not in RESUME_FIXED, k)):
        if key in RESUME_IGNORED or json.dumps(before.get(key), default=str) == json.dumps(now.get(key), default=str):
            continue
        b, n = _shown(before.get(key), key), _shown(now.get(key), key)
        if key in RESUME_FIXED:
            raise RoformerSimError(
                f"--resume: {state} was trained with {key} {b}, not {n}: that is another model; start it in another --out"
            )
        if key == "teacher_fingerprint" and key not in before:
            print(f"note: --resume: {state} does not record its teacher's fingerprint: the teacher is not compared",
                  file=sys.stderr)
            continue
        if not run.config.allow_changed_settings:
            if key == "data_fingerprint":
                raise RoformerSimError(
                    f"--resume: {state} was saved on other data (content fingerprint {b}, now {n}): "
                    "resume with the same data, or pass --allow-changed-settings"
                )
            if key == "teacher_fingerprint":
                raise RoformerSimError(
                    f"--resume: {state} was distilled from another teacher (fingerprint of its config, vocab and "
                    f"weight index {b}, now {n}): resume with the same --teacher, or pass --allow-changed-settings"
                )
            raise RoformerSimError(
                f"--resume: {state} was saved with {key} {b}, not {n} (resume with the same setting: "
                f"{_FLAGS.get(key, '--' + key.replace('_', '-'))} {b}), or pass --allow-changed-settings"
            )
        print(f"note: --resume with {key} {n} instead of {b} (--allow-changed-settings)", file=sys.stderr)


def _saved_model(state: Path) -> tuple[dict, list[str], bool]:
    """The state's model config, vocab, and whether its optimizer has an fp16 loss scale (:class:`DamagedState` if unreadable)."""
    try:
        config = checkpoints.read_config(state / checkpoints.CONFIG_NAME)
        vocab = checkpoints.read_vocab(state / checkpoints.VOCAB_NAME, config["vocab_size"])
    except RoformerSimError as e:
        raise DamagedState(str(e)) from None
    try:
        names = [name for name, _ in tf.train.list_variables(str(state / "ckpt"))]
    except (tf.errors.OpError, ValueError) as e:
        raise DamagedState(f"{state}/ckpt: unreadable weights ({error_text(e)})") from None
    return config, vocab, any(name.startswith(LOSS_SCALE_PREFIX) for name in names)


def check_model(run, state: Path, saved: dict, config: dict, vocab: list[str], loss_scale: bool) -> None:
    """One line when the model (config, vocab) or the precision given now is not the state's."""
    now_config, now_vocab = run.objective.model.config, run.objective.model.vocab
    for key in MODEL_KEYS:
        if config.get(key) != now_config.get(key):
            raise RoformerSimError(
                f"--resume: {state} was trained with {key} {config.get(key)} (its {checkpoints.CONFIG_NAME}), not "
                f"{now_config.get(key)}: that is another model; resume with the checkpoint it started from, "
                "or start it in another --out"
            )
    for line, (a, b) in enumerate(zip(vocab, now_vocab), 1):
        if a != b:
            raise RoformerSimError(
                f"--resume: {state} was trained with another vocab (line {line} is {a!r} in its "
                f"{checkpoints.VOCAB_NAME}, {b!r} now): that is another model; resume with the checkpoint it "
                "started from, or start it in another --out"
            )
    now = run.config.mixed_precision
    if "mixed_precision" in saved:
        before = saved["mixed_precision"]
        differs = before != now
    else:  # a state written before the policy was recorded: its optimizer shows fp16 (a loss scale) or not
        before = MIXED_PRECISIONS["fp16"] if loss_scale else None
        differs = loss_scale != (now == MIXED_PRECISIONS["fp16"])
    if differs:
        raise RoformerSimError(
            f"--resume: {state} was saved with {precision_flag(before)}, not {precision_flag(now)}: "
            + (f"resume with {precision_flag(before)}" if before else "resume without --mixed-precision")
        )


def set_aside(state: Path, error: BaseException) -> None:
    """Rename a damaged state ``step-N.damaged``, saying why and that the previous one is tried."""
    aside = states.set_aside(state)
    print(f"warning: training state {state} is damaged ({error_text(error)}); moved to {aside.name}, "
          "trying the previous one", file=sys.stderr)


def finished_at(out_dir: Path) -> Optional[int]:
    """The step at which ``out_dir``'s run.json records the run as finished (not interrupted), or None."""
    try:
        result = json.loads((Path(out_dir) / "run.json").read_text(encoding="utf-8"))["result"]
        return int(result["step"]) if result["interrupted"] is False else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_state(run: Any) -> None:
    """Restore ``run`` (a :class:`roformer_sim_ft.training._Run`) from the newest usable state of its ``out_dir``.

    A run stopped during its last step (state saved, model not written) is left
    at that step, so the loop goes straight to writing the model and run.json;
    a run finished at ``config.steps`` or beyond raises :class:`NothingToDo`.
    """
    candidates = states.list_states(run.out_dir)[::-1]
    if not candidates:
        raise RoformerSimError(f"--resume: no training state in {run.out_dir / STATE_DIR}")
    for state in candidates:
        try:
            saved = states.read_record(state)
            config, vocab, loss_scale = _saved_model(state)
        except DamagedState as e:
            set_aside(state, e)
            continue
        check_settings(run, state, saved)
        check_model(run, state, saved, config, vocab, loss_scale)
        try:
            run.batches.restore(saved["sampler"])
        except DamagedState as e:
            set_aside(state, RoformerSimError(f"state.json: {e}"))
            continue
        except RoformerSimError as e:
            raise RoformerSimError(f"--resume: {state}/state.json: {e}") from None
        try:
            run.checkpoint.read(str(state / "ckpt")).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:
            set_aside(state, e)
            continue
        break
    else:
        raise RoformerSimError(f"--resume: no readable training state in {run.out_dir / STATE_DIR}")
    run.history = saved["history"]
    step, steps = saved["step"], run.config.steps
    if int(run.step_var.numpy()) != step or run.batches.position != step:
        raise RoformerSimError(f"{state}: inconsistent training state (step {int(run.step_var.numpy())} vs {step})")
    finished = finished_at(run.out_dir) == step
    if step > steps or (step == steps and finished):
        raise (NothingToDo if finished else RoformerSimError)(
            f"--resume: the run in {run.out_dir} is at step {step} and --steps is {steps}: "
            f"nothing to do (give --steps above {step} to continue it)"
        )
    if step == steps:
        print(f"note: --resume: the run in {run.out_dir} stopped at its last step {step} before writing its model: "
              "writing it now", file=sys.stderr)
