"""A distillation step's parts timed alone (``bench_train.py --profile --distill``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import roformer_sim_ft  # noqa: F401  (before tensorflow)
import tensorflow as tf

from roformer_sim_ft.data import batches as B
from roformer_sim_ft import training
from roformer_sim_ft.training.objectives import DistillObjective
from roformer_sim_ft.settings import DistillSettings


def profile_distill(ckpt: Path, groups, tokenizer, batch_size: int, repeats: int = 4) -> None:
    """Where a distillation step's time goes: its parts timed alone on one real batch, alternated."""
    objective = DistillObjective(ckpt, ckpt)
    objective.build()
    raw = B.DistillBatches(groups, tokenizer, batch_size=batch_size, seed=0).batch_at(0)
    batch = {k: tf.constant(v) for k, v in raw.items()}
    tokens, segments = batch["student_token_ids"], batch["student_segment_ids"]
    t_tokens, t_segments = batch["teacher_token_ids"], batch["teacher_segment_ids"]
    variables = objective.trainable_variables
    optimizer = training.make_optimizer(training.TrainConfig(out_dir="unused", learning_rate=DistillSettings.learning_rate))

    def grads_of(fn):
        """A scalar that needs every gradient (a tf.function would prune the ones not returned)."""
        with tf.GradientTape() as tape:
            value = fn()
        grads = tape.gradient(value, variables, unconnected_gradients="zero")
        return tf.add_n([tf.reduce_sum(g.values if isinstance(g, tf.IndexedSlices) else g) for g in grads])

    def trunk_sum():
        pooled, hidden = objective._trunk([tokens, segments], training=True)
        return tf.reduce_sum(pooled) + tf.reduce_sum(hidden)

    def packed_sum():
        pooled, _, hidden = objective._packed(tokens, segments, training=True)
        return tf.reduce_sum(pooled) + tf.reduce_sum(hidden)

    def step():
        with tf.GradientTape() as tape:
            loss = objective.loss(batch)[0]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    parts = {
        "teacher: keras encoder (before)": lambda: objective.teacher.encoder([t_tokens, t_segments], training=False),
        "teacher: FastRoFormer.pooled_of (now)": lambda: objective.teacher.fast_forward.pooled_of(t_tokens),
        "student keras trunk forward (before)": lambda: objective._trunk([tokens, segments], training=True)[0],
        "student keras trunk forward+backward (before)": lambda: grads_of(trunk_sum),
        "student PackedUniLM forward (now)": lambda: objective._packed(tokens, segments, training=True)[0],
        "student PackedUniLM forward+backward (now)": lambda: grads_of(packed_sum),
        "loss forward (teacher, student, head, both losses)": lambda: objective.loss(batch)[0],
        "loss forward+backward": lambda: grads_of(lambda: objective.loss(batch)[0]),
        "step: forward+backward+AdamW": step,
    }
    fns = {name: tf.function(fn) for name, fn in parts.items()}
    for fn in fns.values():
        fn()
    totals = dict.fromkeys(fns, 0.0)
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fns[name]())
            totals[name] += time.perf_counter() - start
    real = int((raw["student_token_ids"] != 0).sum())
    scored = int(raw["student_segment_ids"][:, 1:].sum())
    print(f"\ndistillation step parts, one real batch: student {raw['student_token_ids'].shape} "
          f"({real} real tokens = {real / raw['student_token_ids'].size:.0%} of the padded cells; "
          f"{scored} scored positions), teacher {raw['teacher_token_ids'].shape}; ms per call, mean of {repeats}, "
          f"alternated; load average {os.getloadavg()[0]:.1f}")
    step_ms = totals["step: forward+backward+AdamW"] / repeats * 1e3
    for name, seconds in totals.items():
        ms = seconds / repeats * 1e3
        print(f"    {name:<52} {ms:8.0f} ms  {100 * ms / step_ms:5.1f}% of the step")
