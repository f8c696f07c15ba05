"""One training loop for both stages.

A stage is an :class:`~roformer_sim_ft.objectives.Objective` (models + loss of
one batch) and a batch source from :mod:`roformer_sim_ft.data`; :func:`train`
runs any such pair: AdamW with decoupled weight decay, optional warmup, a
progress bar, periodic evaluation keeping the best model, periodic training
state written atomically (weights + optimizer + sampler position), ``resume``,
clean stop on SIGINT/SIGTERM, ``tf.distribute.MirroredStrategy``, mixed
precision and XLA. The loop never knows which stage it runs.

Output folder layout::

    OUT/                      the trained model in the released layout (best by evaluation, else last)
    OUT/run.json              settings, loss history, evaluations
    OUT/training_state/step-N model + optimizer + sampler state of step N (the last two kept)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import compat
import tensorflow as tf
from bert4keras.backend import keras

from . import checkpoints
from .errors import RoformerSimError
from .io import write_text_atomic

STATE_DIR = "training_state"


@dataclass
class TrainConfig:
    """Settings of one training run (defaults: the reference's supervised stage)."""

    out_dir: str
    steps: int = 1000
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    seed: int = 0
    save_every: int = 500
    keep_states: int = 2
    eval_every: int = 0
    log_every: int = 10
    resume: bool = False
    devices: Optional[int] = None
    mixed_precision: Optional[str] = None  # None, "mixed_float16" or "mixed_bfloat16"
    jit_compile: bool = False
    show_progress: Optional[bool] = None

    def validate(self) -> None:
        if self.steps < 1:
            raise RoformerSimError(f"steps must be at least 1, got {self.steps}")
        if self.learning_rate <= 0:
            raise RoformerSimError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.mixed_precision not in (None, "mixed_float16", "mixed_bfloat16"):
            raise RoformerSimError(
                f"mixed_precision must be mixed_float16 or mixed_bfloat16, got {self.mixed_precision!r}"
            )
        for name in ("save_every", "eval_every", "warmup_steps", "log_every"):
            if getattr(self, name) < 0:
                raise RoformerSimError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass
class TrainResult:
    """What a run did: steps done, whether it was interrupted, last losses, evaluations."""

    step: int
    interrupted: bool
    losses: dict[str, float]
    evaluations: list[dict] = field(default_factory=list)
    best: Optional[dict] = None
    steps_per_second: float = 0.0
    data_wait_seconds: float = 0.0  # of this run's time, spent waiting for the next batch (prefetch hides the rest)


class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 over ``warmup`` steps, then constant (the reference has no decay)."""

    def __init__(self, rate: float, warmup: int) -> None:
        self.rate, self.warmup = rate, warmup

    def __call__(self, step):
        if not self.warmup:
            return tf.constant(self.rate, tf.float32)
        fraction = tf.minimum(tf.cast(step + 1, tf.float32) / self.warmup, 1.0)
        return self.rate * fraction

    def get_config(self) -> dict:
        return {"rate": self.rate, "warmup": self.warmup}


def make_optimizer(config: TrainConfig):
    """AdamW with decoupled weight decay on every weight, as bert4keras's
    ``extend_with_weight_decay(Adam)`` (epsilon 1e-6). bert4keras's own optimizers
    use the removed ``_set_hyper`` API, so this is tf_keras's AdamW."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupConstant(config.learning_rate, config.warmup_steps),
        weight_decay=config.weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
    )
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def make_strategy(devices: Optional[int]) -> tf.distribute.Strategy:
    """MirroredStrategy over ``devices`` devices (GPUs if any, else logical CPUs); the
    default strategy for one. ``None``: every visible GPU, or one device."""
    gpus = tf.config.list_logical_devices("GPU")
    if devices is None:
        devices = len(gpus) or 1
    if devices <= 1:
        return tf.distribute.get_strategy()
    pool = gpus if gpus else tf.config.list_logical_devices("CPU")
    if len(pool) < devices:
        raise RoformerSimError(
            f"devices={devices} but only {len(pool)} {'GPU' if gpus else 'CPU'} device(s) are visible"
        )
    names = [d.name for d in pool[:devices]]
    cross = None if gpus else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(names, cross_device_ops=cross)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and stops after the current step."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second signal: stop hard
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _latest_state(out_dir: Path) -> Optional[Path]:
    states = sorted((out_dir / STATE_DIR).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    states = [p for p in states if (p / "state.json").exists()]
    return states[-1] if states else None


def _save_state(out_dir: Path, step: int, checkpoint: tf.train.Checkpoint, extra: dict, keep: int, model) -> Path:
    """Write ``training_state/step-N`` through a temporary folder, then prune old ones.

    The folder holds the checkpoint, ``state.json`` and the model's
    ``bert_config.json`` and ``vocab.txt``, so :func:`load_state_model` (and
    ``roformer-sim-ft export``) can rebuild the model from it alone."""
    root = out_dir / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.tmp-", dir=root))
    try:
        checkpoint.write(str(tmp / "ckpt"))
        (tmp / checkpoints.CONFIG_NAME).write_text(json.dumps(model.config, indent=2), encoding="utf-8")
        (tmp / checkpoints.VOCAB_NAME).write_text("\n".join(model.vocab) + "\n", encoding="utf-8")
        (tmp / "state.json").write_text(json.dumps(extra, indent=2, ensure_ascii=False), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    states = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in states[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def train(
    objective,
    batches,
    config: TrainConfig,
    evaluator: Optional[Callable[[Any], Any]] = None,
    on_step: Optional[Callable[[int, dict], None]] = None,
    settings: Optional[dict] = None,
) -> TrainResult:
    """Train ``objective`` on ``batches`` as ``config`` says; write the model to ``config.out_dir``.

    ``evaluator(model)`` returns an object with ``primary_metric`` (higher is
    better) and ``as_dict()``, e.g. :class:`~roformer_sim_ft.evaluation.SimilarityEvaluator`.
    ``on_step(step, losses)`` is called after every step (for tests and tools).
    ``settings`` is recorded in ``run.json``.
    """
    config.validate()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(config.mixed_precision)
    try:
        return _train(objective, batches, config, evaluator, on_step, settings or {}, out_dir)
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")


def _train(objective, batches, config, evaluator, on_step, settings, out_dir) -> TrainResult:
    strategy = make_strategy(config.devices)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        objective.prepare(jit_compile=config.jit_compile)
        objective.build()
        optimizer = make_optimizer(config)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        variables = objective.trainable_variables
        scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        (optimizer.inner_optimizer if scaling else optimizer).build(variables)
    checkpoint = tf.train.Checkpoint(optimizer=optimizer, step=step_var, **objective.trackables())

    history: dict[str, Any] = {"evaluations": [], "best": None, "losses": []}
    if config.resume:
        latest = _latest_state(out_dir)
        if latest is None:
            raise RoformerSimError(f"--resume: no training state in {out_dir / STATE_DIR}")
        checkpoint.read(str(latest / "ckpt")).assert_existing_objects_matched()
        saved = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        batches.restore(saved["sampler"])
        history = saved["history"]
        if int(step_var.numpy()) != saved["step"] or batches.position != saved["step"]:
            raise RoformerSimError(f"{latest}: inconsistent training state (step {int(step_var.numpy())} vs {saved['step']})")

    def replica_step(batch):
        with compat.seeded_dropout(config.seed, step_var):
            with tf.GradientTape() as tape:
                loss, metrics = objective.loss(batch, training=True)
                scaled = loss / replicas
                if scaling:
                    scaled = optimizer.get_scaled_loss(scaled)
            grads = tape.gradient(scaled, variables)
            if scaling:
                grads = optimizer.get_unscaled_gradients(grads)
        if config.jit_compile:
            # The token embedding's gradient is sparse (IndexedSlices); compiled by XLA,
            # AdamW's sparse update made a step 4-5x slower (docs/PERFORMANCE.md). Dense: same update.
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None]
        )
        return {"loss": loss, **metrics}

    @tf.function(jit_compile=config.jit_compile, reduce_retracing=True)
    def train_step(batch):
        results = strategy.run(replica_step, args=(batch,))
        step_var.assign_add(1)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in results.items()}

    dataset = batches.dataset()
    if replicas > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dataset)

    start = int(step_var.numpy())
    show = config.show_progress if config.show_progress is not None else True
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start, desc=objective.name, disable=not show, dynamic_ncols=True)
    interrupted = False
    losses: dict[str, float] = {}
    t0, done_here, waited = time.perf_counter(), 0, 0.0
    with _StopFlag() as stop:
        step = start
        while step < config.steps:
            fetch = time.perf_counter()
            batch = next(iterator)
            waited += time.perf_counter() - fetch
            values = train_step(batch)
            batches.advance(1)
            step += 1
            done_here += 1
            losses = {k: float(v.numpy()) for k, v in values.items()}
            if not all(math.isfinite(v) for v in losses.values()):
                raise RoformerSimError(f"loss became non-finite at step {step}: {losses}")
            bar.update(1)
            if config.log_every and (step % config.log_every == 0 or step == config.steps):
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
                history["losses"].append({"step": step, **losses})
            if on_step is not None:
                on_step(step, losses)
            if evaluator is not None and config.eval_every and step % config.eval_every == 0:
                _evaluate(objective, evaluator, step, history, out_dir, bar)
            if stop.signal is not None:
                interrupted = True
                break
            if config.save_every and step % config.save_every == 0 and step < config.steps:
                _save_state(out_dir, step, checkpoint, _state(step, batches, history, settings), config.keep_states, objective.model)
    bar.close()
    elapsed = time.perf_counter() - t0
    if interrupted:
        path = _save_state(out_dir, step, checkpoint, _state(step, batches, history, settings), config.keep_states, objective.model)
        print(f"interrupted at step {step}: state saved to {path}; continue with --resume")
    else:
        if evaluator is not None and (not history["evaluations"] or history["evaluations"][-1]["step"] != step):
            _evaluate(objective, evaluator, step, history, out_dir, bar)
        if evaluator is None or history["best"] is None:
            objective.save(out_dir)
        _save_state(out_dir, step, checkpoint, _state(step, batches, history, settings), config.keep_states, objective.model)
    result = TrainResult(
        step=step,
        interrupted=interrupted,
        losses=losses,
        evaluations=history["evaluations"],
        best=history["best"],
        steps_per_second=done_here / elapsed if elapsed > 0 else 0.0,
        data_wait_seconds=waited,
    )
    run = {"settings": settings, "config": asdict(config), "result": asdict(result), "losses": history["losses"]}
    write_text_atomic(out_dir / "run.json", json.dumps(run, indent=2, ensure_ascii=False, default=str) + "\n")
    return result


def load_state_model(path: str | os.PathLike):
    """The model of a training state: a ``training_state/step-N`` folder, or a
    training output folder (its latest state). Optimizer and head are not needed."""
    from .model import SimModel

    path = Path(path)
    if not (path / "state.json").exists():
        latest = _latest_state(path)
        if latest is None:
            raise RoformerSimError(f"{path}: not a training state (no state.json, no {STATE_DIR}/step-N)")
        path = latest
    config = checkpoints.read_config(path / checkpoints.CONFIG_NAME)
    vocab = checkpoints.read_vocab(path / checkpoints.VOCAB_NAME, config["vocab_size"])
    model = SimModel(config, vocab)
    tf.train.Checkpoint(model=model.model).read(str(path / "ckpt")).expect_partial()
    return model


def _state(step: int, batches, history: dict, settings: dict) -> dict:
    return {"step": step, "sampler": batches.state(), "history": history, "settings": settings}


def _evaluate(objective, evaluator, step: int, history: dict, out_dir: Path, bar) -> None:
    """Evaluate the current model; save it to ``out_dir`` when it is the best so far."""
    result = evaluator(objective.model)
    metric = float(result.primary_metric)
    record = {"step": step, "metric": metric, **result.as_dict()}
    history["evaluations"].append(record)
    best = history["best"]
    if math.isfinite(metric) and (best is None or metric > best["metric"]):
        history["best"] = {"step": step, "metric": metric}
        objective.save(out_dir)
    bar.write(f"step {step}: eval {metric:.2f} (best {history['best']['metric'] if history['best'] else float('nan'):.2f})")
