"""One training loop for every stage.

A stage is an :class:`~roformer_sim_ft.training.objectives.Objective` (models + loss of
one batch) and a batch source from :mod:`roformer_sim_ft.data.batches`; :func:`train`
runs any such pair: AdamW with decoupled weight decay, optional warmup, a
progress bar, periodic evaluation keeping the best model, periodic training
state written atomically (weights + optimizer + sampler position), ``resume``,
clean stop on SIGINT/SIGTERM, TensorBoard scalars, mixed precision and XLA,
on one device, several (``MirroredStrategy``) or several machines
(``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, :mod:`roformer_sim_ft.training.distribute`).
The loop never knows which stage it runs.

Output folder layout (written by the chief; other workers keep their states in
a temporary folder they remove)::

    OUT/                      the trained model in the released layout (best by evaluation, else last)
    OUT/run.json              settings, loss history, evaluations
    OUT/training_state/step-N model + optimizer + sampler state of step N (the last two kept)
    OUT/logs/                 TensorBoard event files (``--tensorboard DIR`` elsewhere)
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .. import compat
import tensorflow as tf
from bert4keras.backend import keras

from . import distribute, resume, run_folder, states, summaries
from ..fs import folders as outputs
from ..errors import RoformerSimError
from ..fs.atomic import write_text_atomic
from ..settings import StageSettings, TrainConfig

STATE_DIR = states.STATE_DIR
check_out_dir = run_folder.check_out_dir
load_state_model = states.load_state_model


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
    """keras 2.3.1's Adam with bert4keras's ``extend_with_weight_decay``, as the published models were trained.

    tf_keras's AdamW computes the same update: the bias-corrected step
    ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)`` with epsilon
    outside the square root (keras 2.3.1's placement), and the decay
    ``lr * weight_decay * x`` on every weight, taken from the weight before the
    step (the Adam step does not depend on it). ``config.adam_epsilon`` is keras
    2.3.1's 1e-7 by default. keras 2.3.1 holds the rates and betas in float32
    variables, so they are given here as float32 values (the same in float32
    training; in float64 the update then equals keras 2.3.1's to round-off).
    bert4keras's own optimizers use the ``_set_hyper`` API, which tf_keras 2.21
    has removed.
    """
    as_float32 = lambda x: float(np.float32(x))  # noqa: E731
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupConstant(config.learning_rate, config.warmup_steps),
        weight_decay=as_float32(StageSettings.weight_decay if config.weight_decay is None else config.weight_decay),
        beta_1=as_float32(0.9),
        beta_2=as_float32(0.999),
        epsilon=config.adam_epsilon,
    )
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def make_strategy(devices: Optional[int]) -> tf.distribute.Strategy:
    """The strategy of this process (:func:`roformer_sim_ft.training.distribute.make_strategy`)."""
    return distribute.make_strategy(devices)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and stops after the current step.

    The handlers stay until the save is complete: a second signal only says so,
    a third exits at once, naming what is lost (``last_saved`` is the newest
    state on disk, kept up to date by the loop).
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.count = 0
        self.last_saved: Optional[Path] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.signal = signum
            return
        if self.count == 2:
            print("stopping: the state of the current step is being saved; a third signal exits at once "
                  "without it", file=sys.stderr, flush=True)
            return
        kept = f"the latest kept state is {self.last_saved}" if self.last_saved else "no state of this run was saved"
        print(f"exiting without saving: the steps since the last saved state are lost ({kept})",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class _Run:
    """What the loop works with: the stage, its optimizer and compiled step, the state to save."""

    objective: Any
    batches: Any
    config: TrainConfig
    out_dir: Path
    strategy: tf.distribute.Strategy
    compile_step: Callable[[Any], Callable]
    step_var: tf.Variable
    checkpoint: tf.train.Checkpoint
    settings: dict
    role: distribute.Role
    log: summaries.ScalarLog
    history: dict = field(default_factory=lambda: {"evaluations": [], "best": None, "losses": []})

    def steps(self, stop: "_StopFlag"):
        """Yield (losses, seconds waited for the batch) of one step after another, from the batches' position.

        Multi-worker, the losses hold ``stop``: 1.0 when any worker got a stop signal.
        """
        dataset = distribute.distributed_batches(self.strategy, self.batches)
        train_step = self.compile_step(dataset.element_spec)
        iterator = iter(dataset)
        while True:
            fetch = time.perf_counter()
            batch = next(iterator)
            waited = time.perf_counter() - fetch
            if self.role.multi_worker:
                yield train_step(batch, tf.constant(float(stop.signal is not None))), waited
            else:
                yield train_step(batch), waited

    def save(self, step: int) -> Path:
        record = {"step": step, "sampler": self.batches.state(), "history": self.history, "settings": self.settings,
                  "seed": self.config.seed, "mixed_precision": self.config.mixed_precision}
        return states.save_state(self.out_dir, step, self.checkpoint, record, self.config.keep_states,
                                 self.objective.model)


def train(
    objective,
    batches,
    config: TrainConfig,
    evaluator: Optional[Callable[[Any], Any]] = None,
    on_step: Optional[Callable[[int, dict], None]] = None,
    settings: Optional[dict] = None,
    inputs: Optional[Mapping[str, Any]] = None,
) -> TrainResult:
    """Train ``objective`` on ``batches`` as ``config`` says; write the model to ``config.out_dir``.

    ``evaluator(model)`` returns an object with ``primary_metric`` (higher is
    better) and ``as_dict()``, e.g. :class:`~roformer_sim_ft.evaluation.SimilarityEvaluator`.
    ``on_step(step, losses)`` is called after every step (for tests and tools).
    ``settings`` is recorded in ``run.json`` and in each state; ``resume``
    refuses a state saved with other settings, seed, data, model, vocab or
    precision (see :mod:`roformer_sim_ft.training.resume`, ``config.allow_changed_settings``).

    ``out_dir`` must be new, empty or a training folder of ours; it is locked
    for the run (a symlink is followed once, here). A new run into a folder
    holding another run (its states, or its model alone) stops unless
    ``config.overwrite`` (which deletes what that run wrote, and nothing else).
    ``inputs`` (``{flag: path}``, e.g. the checkpoint) must not lie inside ``out_dir``.

    Under a ``TF_CONFIG`` of several workers every worker calls this with the
    same arguments; the chief alone uses ``out_dir`` and the TensorBoard folder,
    the others train alike and keep their states in a temporary folder.
    """
    config.validate()
    settings = {**(settings or {}), "adam_epsilon": config.adam_epsilon}
    role = distribute.role()
    if not role.chief:
        with distribute.scratch_folder() as scratch:
            return _train_in(objective, batches, config, Path(scratch), settings, evaluator, on_step, role)
    out_dir = outputs.real_path(config.out_dir)
    check_out_dir(config, inputs)
    outputs.ensure_folder(out_dir)
    with outputs.FolderLock(out_dir):
        run_folder.claim(out_dir, config)
        return _train_in(objective, batches, config, out_dir, settings, evaluator, on_step, role)


def _train_in(objective, batches, config: TrainConfig, out_dir: Path, settings: Optional[dict], evaluator, on_step,
              role: distribute.Role) -> TrainResult:
    """Build, restore, loop and finish with ``out_dir`` claimed (or this worker's scratch folder)."""
    strategy = distribute.make_strategy(config.devices, config.collective_timeout)  # before any other TF work
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(config.mixed_precision)
    log = summaries.ScalarLog(config.log_dir() if role.chief else None)
    try:
        run = _build(objective, batches, config, out_dir, settings or {}, strategy, role, log)
        if config.resume:
            _restore(run)
        with _StopFlag() as stop:
            stop.last_saved = states.latest_state(out_dir)
            result = _loop(run, evaluator, on_step, stop)
            _finish(run, result, evaluator)
        if role.multi_worker:  # the workers leave together (a worker gone first delays the others' exit)
            distribute.barrier(strategy)
        return result
    except distribute.COLLECTIVE_ERRORS as e:
        if not role.multi_worker:
            raise
        raise distribute.collective_error(e, role) from None
    finally:
        log.close()
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")


def _build(objective, batches, config: TrainConfig, out_dir: Path, settings: dict, strategy: tf.distribute.Strategy,
           role: distribute.Role, log: summaries.ScalarLog) -> _Run:
    """Models and optimizer inside the strategy's scope, and the compiled training step."""
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        objective.prepare(jit_compile=config.jit_compile, replicas=replicas, batch_size=getattr(batches, "batch_size", None))
        objective.build()
        optimizer = make_optimizer(config)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        variables = objective.trainable_variables
        scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        (optimizer.inner_optimizer if scaling else optimizer).build(variables)
    checkpoint = tf.train.Checkpoint(optimizer=optimizer, step=step_var, **objective.trackables())

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
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return {"loss": loss, **metrics}

    def worker_step(batch, stop):  # multi-worker: every worker learns whether any of them must stop
        return {**replica_step(batch), "stop": distribute.any_replica(stop)}

    def compile_step(element_spec) -> Callable:
        """The step for batches of ``element_spec``, traced once: the signature leaves the
        lengths open, so batches of other lengths (bucketing) reuse the one graph."""
        signature = [element_spec, tf.TensorSpec([], tf.float32)] if role.multi_worker else [element_spec]

        # autograph=False: the step and the layers it calls branch on Python values only;
        # converting them made a run's start-up slower (docs/PERFORMANCE.md, "One trace per run").
        @tf.function(jit_compile=config.jit_compile, input_signature=signature, autograph=False)
        def train_step(batch, stop=None):
            results = (strategy.run(replica_step, args=(batch,)) if stop is None
                       else strategy.run(worker_step, args=(batch, stop)))
            step_var.assign_add(1)
            return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in results.items()}

        return train_step

    return _Run(objective, batches, config, out_dir, strategy, compile_step, step_var, checkpoint, settings, role, log)


def _restore(run: _Run) -> None:
    """Continue from the latest readable training state of ``out_dir``: weights, optimizer, sampler, history.

    Other settings, model, vocab, precision or teacher than the state's are refused
    in one line; a damaged state (unreadable state.json, sampler or weights) is renamed
    ``step-N.damaged`` with a warning and the previous kept state is used instead
    (:func:`roformer_sim_ft.training.resume.read_state`). Multi-worker, the
    chief alone reads the state and the other workers receive it from the chief
    (they need no access to ``out_dir``).
    """
    if run.role.chief:
        resume.read_state(run)
    if not run.role.multi_worker:
        return
    variables = list({id(v): v for v in tf.train.TrackableView(run.checkpoint).descendants()
                      if isinstance(v, tf.Variable)}.values())
    distribute.broadcast_from_chief(run.strategy, variables)
    if not run.role.chief:  # batch k is a function of (seed, k): the step is the sampler's whole state
        run.batches.advance(int(run.step_var.numpy()) - run.batches.position)


def _loop(run: _Run, evaluator, on_step, stop: _StopFlag) -> TrainResult:
    """Steps until ``config.steps`` or a stop signal: log, evaluate, save states on schedule."""
    config, history = run.config, run.history
    start = int(run.step_var.numpy())
    from tqdm.auto import tqdm

    show = (config.show_progress if config.show_progress is not None else True) and run.role.chief
    bar = tqdm(total=config.steps, initial=start, desc=run.objective.name, disable=not show, dynamic_ncols=True)
    interrupted = False
    last = history["losses"][-1] if history["losses"] else {}
    losses: dict[str, float] = {k: v for k, v in last.items() if k != "step"} if last.get("step") == start else {}
    t0, waited = time.perf_counter(), 0.0
    step = start
    schedule = WarmupConstant(config.learning_rate, config.warmup_steps)
    logged = (start, t0)  # step and time of the last log line: steps/s of the interval
    stepper = run.steps(stop)
    # The caller holds the signal handlers (_StopFlag) until the run is finished.
    while step < config.steps:
        values, wait = next(stepper)
        waited += wait
        run.batches.advance(1)
        step += 1
        losses = {k: float(v.numpy()) for k, v in values.items()}
        stop_any = losses.pop("stop", 0.0) > 0  # multi-worker: a worker got a stop signal
        if not all(math.isfinite(v) for v in losses.values()):
            raise RoformerSimError(f"loss became non-finite at step {step}: {losses}")
        bar.update(1)
        if config.log_every and (step % config.log_every == 0 or step == config.steps):
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
            history["losses"].append({"step": step, **losses})
            now = time.perf_counter()
            rate = (step - logged[0]) / (now - logged[1]) if now > logged[1] else 0.0
            logged = (step, now)
            # The learning rate of this step: the schedule is called with the optimizer's iterations (step - 1).
            run.log.scalars(step, {**losses, "learning_rate": float(schedule(step - 1)), "steps_per_second": rate},
                            "train")
        if on_step is not None:
            on_step(step, losses)
        if evaluator is not None and config.eval_every and step % config.eval_every == 0:
            _evaluate(run, evaluator, step, bar)
        if (stop.signal is not None or stop_any) and step < config.steps:
            interrupted = True
            break
        if config.save_every and step % config.save_every == 0 and step < config.steps:
            stop.last_saved = run.save(step)
    if interrupted:  # still inside the handlers: a second signal waits for this save
        path = stop.last_saved = run.save(step)
        if run.role.chief:
            bar.write(f"interrupted at step {step}: state saved to {path}; continue with --resume")
    elif stop.signal is not None and run.role.chief:  # came during the last step: the run finishes
        bar.write(f"stop signal during the last step {step}: writing the model and run.json")
    bar.close()
    elapsed = time.perf_counter() - t0
    return TrainResult(
        step=step,
        interrupted=interrupted,
        losses=losses,
        evaluations=history["evaluations"],
        best=history["best"],
        steps_per_second=(step - start) / elapsed if elapsed > 0 else 0.0,
        data_wait_seconds=waited,
    )


def _finish(run: _Run, result: TrainResult, evaluator) -> None:
    """Final evaluation and model (unless interrupted), the last state, and run.json."""
    history = run.history
    if not result.interrupted:
        if evaluator is not None and (not history["evaluations"] or history["evaluations"][-1]["step"] != result.step):
            _evaluate(run, evaluator, result.step, None)
            result.best = history["best"]
        if (evaluator is None or history["best"] is None) and run.role.chief:
            run.objective.save(run.out_dir)
        run.save(result.step)  # every worker: saving may take collectives (the others save into scratch)
    if run.role.chief:
        record = {"settings": run.settings, "config": asdict(run.config), "result": asdict(result),
                  "losses": history["losses"]}
        write_text_atomic(run.out_dir / "run.json", json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


def _evaluate(run: _Run, evaluator, step: int, bar) -> None:
    """Evaluate the current model; save it to ``out_dir`` when it is the best so far.

    Every worker evaluates (so none waits in a collective for the chief); the chief alone saves and logs.
    """
    result = evaluator(run.objective.model)
    metric = float(result.primary_metric)
    record = result.as_dict()
    run.history["evaluations"].append({"step": step, "metric": metric, **record})
    run.log.scalars(step, summaries.evaluation_scalars(metric, record), "eval")
    best = run.history["best"]
    if math.isfinite(metric) and (best is None or metric > best["metric"]):
        run.history["best"] = {"step": step, "metric": metric}
        if run.role.chief:
            run.objective.save(run.out_dir)
    if not run.role.chief:
        return
    line = f"step {step}: eval {metric:.2f} (best {run.history['best']['metric'] if run.history['best'] else float('nan'):.2f})"
    (bar.write if bar is not None else print)(line)
