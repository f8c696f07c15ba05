"""Benchmark training steps/s: our loop (``training.train``) vs the original scripts' style (Python generator + ``fit``).

Supervised stage (default). The original side is ``train/supervised.py`` of
ZhuiyiTechnology/roformer-sim rebuilt on today's stack: its ``corpus()`` 1:1
generator and ``data_generator(DataGenerator)`` (``forfit()``, shuffle buffer),
a bert4keras RoFormer encoder (``with_pool='linear'``, dropout 0.2, no attention dropout as on
bert4keras 0.10.6) + ``Lambda(merge)``
+ ``Dense(5, use_bias=False)`` compiled with its ``special_crossentropy``, trained
by ``model.fit``. bert4keras's own AdamW does not run on TF2, so both sides use
tf_keras AdamW (lr 2e-5, weight decay 0.01, keras 2.3.1's epsilon 1e-7). Ours is
``training.train(SupervisedObjective, SupervisedBatches, TrainConfig)`` with the
stage's default ``bucket=16`` (samples of 16 consecutive batches sorted by length
and dealt out again; see ``batches._Batches``); the ``ours-bucket1`` side samples
in the reference's order. ``--xla`` runs our step XLA-compiled with ``pad_to=16``
(4 shapes to compile).

Distillation (``--distill``): ``train/stage2.py``'s style (generator with
whole-word masking whose batches carry the teacher's similarity matrix from
``sim_encoder.predict``, a ``TotalLoss`` layer, ``fit``, lr 1e-5) vs
``training.train(DistillObjective, DistillBatches)``: the packed student
(dense layers on real tokens only) with the MLM head on the scored positions
only (the default); ``ours-keras-student`` runs the keras student
(``packed=False``) and ``ours-all-logits`` the keras student with the head on
every position, as the reference. Teacher and student are
both the L-6/H-384 shape with random weights (the shapes matter, not the values).

Stage 1 (``--stage1``): ``train/stage1.py``'s style (generator with whole-word
masking, a ``TotalLoss`` layer of seq2seq + in-batch similarity cross-entropy,
``fit``, lr 1e-5, the model built with ``ignore_invalid_weights=True``) vs
``training.train(Stage1Objective, Stage1Batches)``, with ``ours-keras-student``
and ``ours-all-logits`` as for distillation; the L-6/H-384 shape with random weights.

Fairness on a shared, loaded machine: every side runs in its own thread, in
one process, and a baton passes between them every ``--block`` steps, so only
one side computes at a time and a busy machine slows all alike. The first
``--warmup`` steps of each side (building, tracing, XLA compiling) and the
first step after each hand-over are not timed. Data: real sentences from
../shared/data (senteval_cn train+valid, cnsd) read at run time. Batch 64 rows
(32 pairs) for the supervised stage, 32 rows (16 pairs) for distillation
(the reference uses 192 and 96; smaller keeps a run short on 2 cores).

    .venv/bin/python benchmarks/bench_train.py --quick           # supervised: original, ours (bucket=16), ours-bucket1
    .venv/bin/python benchmarks/bench_train.py --quick --xla     # supervised: original, ours --xla (pad_to=16)
    .venv/bin/python benchmarks/bench_train.py --quick --distill # distillation: original, ours
    .venv/bin/python benchmarks/bench_train.py --quick --stage1  # stage 1: original, ours
    .venv/bin/python benchmarks/bench_train.py --profile [--xla]  # where a step's time goes (TF profiler)
    .venv/bin/python benchmarks/bench_train.py --profile --distill # a distillation step's parts timed alone
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import roformer_sim_ft  # noqa: F401,E402  (before tensorflow)
import tensorflow as tf  # noqa: E402
from bert4keras.backend import K, keras  # noqa: E402
from bert4keras.layers import Loss  # noqa: E402
from bert4keras.models import build_transformer_model  # noqa: E402
from bert4keras.snippets import DataGenerator, sequence_padding, truncate_sequences  # noqa: E402
from bert4keras.tokenizers import Tokenizer  # noqa: E402

from roformer_sim_ft.data import batches as B, readers as D  # noqa: E402
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.settings import DistillSettings, Stage1Settings, SupervisedSettings  # noqa: E402
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective, SupervisedObjective  # noqa: E402
from profile_distill import profile_distill  # noqa: E402

SHARED = Path(os.environ.get("ROFORMER_SIM_FT_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPE = "chinese_roformer-sim-char-ft_L-6_H-384_A-6"
MAXLEN = 64


# ------------------------------------------------------------------ turns
class Turns:
    """A baton passed round-robin between sides running in their own threads.

    A side calls :meth:`begin` before building anything, :meth:`step` after
    every training step and :meth:`finish` at the end. The first ``warmup``
    steps form a side's first turn; later turns are ``block`` steps. Step
    durations are recorded except during warm-up and for the first step after
    a hand-over.
    """

    def __init__(self, names: list[str], warmup: int, block: int):
        self.order = list(names)
        self.warmup, self.block = warmup, block
        self.events = {n: threading.Event() for n in names}
        self.count = dict.fromkeys(names, 0)
        self.in_turn = dict.fromkeys(names, 0)
        self.last: dict[str, float | None] = dict.fromkeys(names, None)
        self.times: dict[str, list[float]] = {n: [] for n in names}
        self.timed_steps: dict[str, list[int]] = {n: [] for n in names}  # 0-based step index of each time
        self.widths: dict[str, list[int]] = {n: [] for n in names}  # padded width of each step's batch
        self.alive = list(names)
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def begin(self, name: str) -> None:
        self.events[name].wait()
        self.last[name] = None

    def _next(self, name: str) -> str:
        i = self.alive.index(name)
        return self.alive[(i + 1) % len(self.alive)]

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.count[name] += 1
        self.in_turn[name] += 1
        if self.count[name] > self.warmup and self.last[name] is not None:
            self.times[name].append(now - self.last[name])
            self.timed_steps[name].append(self.count[name] - 1)
        self.last[name] = now
        limit = self.warmup if self.count[name] <= self.warmup else self.block
        if self.in_turn[name] >= limit and len(self.alive) > 1:
            self.in_turn[name] = 0
            with self.lock:
                self.events[name].clear()
                self.events[self._next(name)].set()
            self.events[name].wait()
            self.last[name] = None  # the step after a hand-over is not timed

    def finish(self, name: str) -> None:
        with self.lock:
            following = self._next(name) if len(self.alive) > 1 else None
            self.alive.remove(name)
            if following is not None:
                self.events[following].set()

    def run(self, sides: dict) -> None:
        """Run ``sides`` {name: fn(turns, name)} in threads, the first one starting."""

        def runner(name, fn):
            try:
                self.begin(name)
                fn(self, name)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                self.errors.append(e)
            finally:
                self.finish(name)

        threads = [threading.Thread(target=runner, args=(n, f), name=n) for n, f in sides.items()]
        for t in threads:
            t.start()
        self.events[self.order[0]].set()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]


class TurnCallback(keras.callbacks.Callback):
    def __init__(self, turns: Turns, name: str):
        super().__init__()
        self.turns, self.side = turns, name

    def on_train_batch_end(self, batch, logs=None):
        self.turns.step(self.side)


# ------------------------------------------------------------------ original: supervised.py
def original_corpus(datasets_1, datasets_2):
    """合并语料，1:1采样 (the reference's corpus())."""

    def generator(dataset):
        while True:
            idxs = np.random.permutation(len(dataset))
            for i in idxs:
                yield dataset[i]

    corpus_1 = generator(datasets_1)
    corpus_2 = generator(datasets_2)
    while True:
        yield next(corpus_1)
        yield next(corpus_2)


def original_supervised_generator(tokenizer, widths: list | None = None):
    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids, batch_labels = [], [], []
            for is_end, (text1, text2, label) in self.sample(random):
                for text in [text1, text2]:
                    token_ids, segment_ids = tokenizer.encode(text, maxlen=MAXLEN)
                    batch_token_ids.append(token_ids)
                    batch_segment_ids.append(segment_ids)
                    batch_labels.append([label])
                if len(batch_token_ids) == self.batch_size or is_end:
                    batch_token_ids = sequence_padding(batch_token_ids)
                    batch_segment_ids = sequence_padding(batch_segment_ids)
                    batch_labels = np.array(batch_labels)
                    if widths is not None:  # benchmark bookkeeping: batches are consumed in this order
                        widths.append(batch_token_ids.shape[1])
                    yield [batch_token_ids, batch_segment_ids], batch_labels
                    batch_token_ids, batch_segment_ids, batch_labels = [], [], []

    return data_generator


def merge(inputs):
    """向量合并：a、b、|a-b|拼接"""
    a, b = inputs[::2], inputs[1::2]
    o = K.concatenate([a, b, K.abs(a - b)], axis=1)
    return K.repeat_elements(o, 2, 0)


def special_crossentropy(y_true, y_pred):
    """特殊的交叉熵"""
    y_true = K.cast(y_true, K.floatx())  # keras 2.3's float y_true placeholder did this implicitly
    task = K.cast(y_true < 1.5, K.floatx())
    mask = K.constant([[0, 0, 1, 1, 1]])
    y_pred_1 = y_pred - mask * 1e12
    y_pred_2 = y_pred - (1 - mask) * 1e12
    y_pred = task * y_pred_1 + (1 - task) * y_pred_2
    y_true = K.cast(y_true, "int32")
    loss = K.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return K.mean(loss)


def adamw(learning_rate: float):
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.01, epsilon=training.TrainConfig.adam_epsilon)


def original_supervised(ckpt: Path, data: D.SupervisedData, tokenizer, batch_size: int, steps: int, seed: int):
    def run(turns: Turns, name: str) -> None:
        np.random.seed(seed)
        encoder = build_transformer_model(
            str(ckpt / "bert_config.json"), str(ckpt / "bert_model.ckpt"),
            model="roformer", with_pool="linear", dropout_rate=0.2, attention_dropout_rate=0.0, ignore_invalid_weights=True,
        )
        output = keras.layers.Lambda(merge)(encoder.output)
        output = keras.layers.Dense(5, use_bias=False)(output)
        model = keras.models.Model(encoder.inputs, output)
        model.compile(loss=special_crossentropy, optimizer=adamw(2e-5))
        datasets_1 = [(p.text1, p.text2, p.label) for p in data.binary]
        datasets_2 = [(p.text1, p.text2, p.label) for p in data.nli]
        generator = original_supervised_generator(tokenizer, turns.widths[name])(
            original_corpus(datasets_1, datasets_2), batch_size)
        model.fit(generator.forfit(), steps_per_epoch=steps, epochs=1, verbose=0,
                  callbacks=[TurnCallback(turns, name)])

    return run


# ------------------------------------------------------------------ original: stage1.py / stage2.py
def original_masked_encode(tokenizer):
    """stage1.py / stage2.py's whole-word masking (masked_encode) over ``tokenizer``."""
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()

    def masked_encode(text):
        words = jieba.lcut(text)
        rands = np.random.random(len(words))
        source, target = [tokenizer._token_start_id], [0]
        for r, w in zip(rands, words):
            ids = tokenizer.encode(w)[0][1:-1]
            if r < 0.15 * 0.8:
                source.extend([tokenizer._token_mask_id] * len(ids))
                target.extend(ids)
            elif r < 0.15 * 0.9:
                source.extend(ids)
                target.extend(ids)
            elif r < 0.15:
                source.extend(np.random.choice(tokenizer._vocab_size - 1, size=len(ids)) + 1)
                target.extend(ids)
            else:
                source.extend(ids)
                target.extend([0] * len(ids))
        source = source[:MAXLEN - 1] + [tokenizer._token_end_id]
        target = target[:MAXLEN - 1] + [0]
        return source, target

    return masked_encode


def original_pairs(groups: list[D.SynonymGroup]):
    """(text, synonym) pairs as the reference's corpus() gives them (here from one pooled list)."""
    while True:
        for i in np.random.permutation(len(groups)):
            texts = list(groups[i].texts)
            text, synonym = texts[:2] if groups[i].ordered else np.random.permutation(texts)[:2]
            yield text, synonym


def original_distill(ckpt: Path, groups: list[D.SynonymGroup], tokenizer, batch_size: int, steps: int, seed: int):
    masked_encode = original_masked_encode(tokenizer)
    corpus = lambda: original_pairs(groups)  # noqa: E731

    def run(turns: Turns, name: str) -> None:
        np.random.seed(seed)
        simbert = build_transformer_model(
            str(ckpt / "bert_config.json"), str(ckpt / "bert_model.ckpt"),
            model="roformer", with_pool="linear", application="unilm", return_keras_model=False,
        )
        sim_encoder = keras.models.Model(simbert.model.inputs, simbert.model.outputs[0])

        class data_generator(DataGenerator):
            def __iter__(self, random=False):
                batch_token_ids, batch_segment_ids = [], []
                batch_sim_token_ids, batch_sim_segment_ids = [], []
                for is_end, (text, synonym) in self.sample(random):
                    for i in range(2):
                        if np.random.random() < 0.5:
                            text_ids = masked_encode(text)[0]
                        else:
                            text_ids = tokenizer.encode(text)[0]
                        synonym_ids = tokenizer.encode(synonym)[0][1:]
                        truncate_sequences(MAXLEN * 2, -2, text_ids, synonym_ids)
                        batch_token_ids.append(text_ids + synonym_ids)
                        batch_segment_ids.append([0] * len(text_ids) + [1] * len(synonym_ids))
                        token_ids, segment_ids = tokenizer.encode(text, maxlen=MAXLEN)
                        batch_sim_token_ids.append(token_ids)
                        batch_sim_segment_ids.append(segment_ids)
                        text, synonym = synonym, text
                    if len(batch_token_ids) == self.batch_size or is_end:
                        batch_token_ids = sequence_padding(batch_token_ids)
                        batch_segment_ids = sequence_padding(batch_segment_ids)
                        batch_sim_token_ids = sequence_padding(batch_sim_token_ids)
                        batch_sim_segment_ids = sequence_padding(batch_sim_segment_ids)
                        turns.widths[name].append(batch_token_ids.shape[1])  # benchmark bookkeeping
                        sim_vecs = sim_encoder.predict([batch_sim_token_ids, batch_sim_segment_ids], verbose=0)
                        sim_vecs /= (sim_vecs**2).sum(axis=1, keepdims=True) ** 0.5
                        sims = sim_vecs.dot(sim_vecs.T)
                        # a tuple, not stage2.py's list: tf_keras would unpack a list of three as (x, y, weights)
                        yield (batch_token_ids, batch_segment_ids, sims), None
                        batch_token_ids, batch_segment_ids = [], []
                        batch_sim_token_ids, batch_sim_segment_ids = [], []

        class TotalLoss(Loss):
            def compute_loss(self, inputs, mask=None):
                return self.compute_loss_of_seq2seq(inputs, mask) + self.compute_loss_of_similarity(inputs, mask)

            def compute_loss_of_seq2seq(self, inputs, mask=None):
                y_true, y_mask, _, y_pred, _ = inputs
                y_true = y_true[:, 1:]
                y_mask = y_mask[:, 1:]
                y_pred = y_pred[:, :-1]
                loss = K.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
                return K.sum(loss * y_mask) / K.sum(y_mask)

            def compute_loss_of_similarity(self, inputs, mask=None):
                _, _, y_pred, _, y_true = inputs
                y_pred = K.l2_normalize(y_pred, axis=1)
                similarities = K.dot(y_pred, K.transpose(y_pred))
                return 100 * K.mean((similarities - y_true) ** 2)

        roformer = build_transformer_model(
            str(ckpt / "bert_config.json"), str(ckpt / "bert_model.ckpt"),
            model="roformer", application="unilm", with_pool="linear", with_mlm="linear",
            dropout_rate=0.2, attention_dropout_rate=0.0, ignore_invalid_weights=True,
        )
        sim_in = keras.layers.Input(shape=(None,))
        outputs = TotalLoss([2, 3])(roformer.inputs + roformer.outputs + [sim_in])
        model = keras.models.Model(roformer.inputs + [sim_in], outputs)
        model.compile(optimizer=adamw(1e-5))
        generator = data_generator(corpus(), batch_size)
        model.fit(generator.forfit(), steps_per_epoch=steps, epochs=1, verbose=0,
                  callbacks=[TurnCallback(turns, name)])

    return run


def original_stage1(ckpt: Path, groups: list[D.SynonymGroup], tokenizer, batch_size: int, steps: int, seed: int):
    """train/stage1.py's style: a generator of masked rows, a TotalLoss layer (seq2seq + in-batch similarity), fit."""
    masked_encode = original_masked_encode(tokenizer)

    def run(turns: Turns, name: str) -> None:
        np.random.seed(seed)

        class data_generator(DataGenerator):
            def __iter__(self, random=False):
                batch_token_ids, batch_segment_ids = [], []
                for is_end, (text, synonym) in self.sample(random):
                    for i in range(2):
                        if np.random.random() < 0.5:
                            text_ids = masked_encode(text)[0]
                        else:
                            text_ids = tokenizer.encode(text)[0]
                        synonym_ids = tokenizer.encode(synonym)[0][1:]
                        truncate_sequences(MAXLEN * 2, -2, text_ids, synonym_ids)
                        batch_token_ids.append(text_ids + synonym_ids)
                        batch_segment_ids.append([0] * len(text_ids) + [1] * len(synonym_ids))
                        text, synonym = synonym, text
                    if len(batch_token_ids) == self.batch_size or is_end:
                        batch_token_ids = sequence_padding(batch_token_ids)
                        batch_segment_ids = sequence_padding(batch_segment_ids)
                        turns.widths[name].append(batch_token_ids.shape[1])  # benchmark bookkeeping
                        yield (batch_token_ids, batch_segment_ids), None
                        batch_token_ids, batch_segment_ids = [], []

        class TotalLoss(Loss):
            def compute_loss(self, inputs, mask=None):
                return self.compute_loss_of_seq2seq(inputs, mask) + self.compute_loss_of_similarity(inputs, mask)

            def compute_loss_of_seq2seq(self, inputs, mask=None):
                y_true, y_mask, _, y_pred = inputs
                y_mask = K.cast(y_mask[:, 1:], K.floatx())
                loss = K.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1], from_logits=True)
                return K.sum(loss * y_mask) / K.sum(y_mask)

            def compute_loss_of_similarity(self, inputs, mask=None):
                _, _, y_pred, _ = inputs
                idxs = K.arange(0, K.shape(y_pred)[0])
                y_true = K.cast(K.equal(idxs[None, :], (idxs + 1 - idxs % 2 * 2)[:, None]), K.floatx())
                y_pred = K.l2_normalize(y_pred, axis=1)
                # tf.eye: tf_keras's K.eye makes a variable, which a traced step cannot create
                similarities = K.dot(y_pred, K.transpose(y_pred)) - tf.eye(K.shape(y_pred)[0]) * 1e12
                return K.mean(K.categorical_crossentropy(y_true, similarities * 20, from_logits=True))

        roformer = build_transformer_model(
            str(ckpt / "bert_config.json"), str(ckpt / "bert_model.ckpt"),
            model="roformer", application="unilm", with_pool="linear", with_mlm="linear",
            dropout_rate=0.2, attention_dropout_rate=0.0, ignore_invalid_weights=True,
        )
        outputs = TotalLoss([2, 3])(roformer.inputs + roformer.outputs)
        model = keras.models.Model(roformer.inputs, outputs)
        model.compile(optimizer=adamw(1e-5))
        generator = data_generator(original_pairs(groups), batch_size)
        model.fit(generator.forfit(), steps_per_epoch=steps, epochs=1, verbose=0,
                  callbacks=[TurnCallback(turns, name)])

    return run


# ------------------------------------------------------------------ ours
def ours(objective_fn, batches_fn, steps: int, seed: int, jit_compile: bool, results: dict, key: str,
         stage=SupervisedSettings):
    def run(turns: Turns, name: str) -> None:
        out = tempfile.mkdtemp(prefix=f"bench_train_{name}_")
        config = training.TrainConfig(out_dir=out, steps=steps, seed=seed, save_every=0, log_every=0,
                                      learning_rate=stage.learning_rate, weight_decay=stage.weight_decay,
                                      show_progress=False, jit_compile=jit_compile)
        batches = batches_fn()
        turns.widths[name] += [batches.batch_at(i)[key].shape[1] for i in range(steps)]
        results[name] = training.train(objective_fn(), batches, config,
                                       on_step=lambda step, losses: turns.step(name))

    return run


# ------------------------------------------------------------------ profile
WRAPPERS = {"Process", "Execute", "EagerExecute", "EagerKernelExecute", "ExecuteAsyncOnStream", "BlockUntilReady",
            "Await", "TFE_Py_ExecuteCancelable", "train_step", "ParallelFor", "ExecutorState::Process"}


def profile_step(ckpt: Path, batch_size: int, width: int, jit_compile: bool, top: int = 12) -> None:
    """Op-type breakdown (TF profiler) of our supervised step on one fixed [batch_size, width] batch."""
    import collections
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, 5000, size=(batch_size, width)).astype(np.int32)
    labels = np.repeat(rng.integers(0, 2, size=batch_size // 2), 2).astype(np.int32)

    class Fixed:  # the same batch every step
        position = 0

        def dataset(self):
            return tf.data.Dataset.from_tensors(
                {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "labels": labels}).repeat()

        def advance(self, n):
            pass

        def state(self):
            return {}

    first, last = 3, 6
    logdir = tempfile.mkdtemp(prefix="bench_train_profile_")
    stamps = []

    def on_step(step, losses):
        stamps.append(time.perf_counter())
        if step == first:
            tf.profiler.experimental.start(logdir)
        elif step == last:
            tf.profiler.experimental.stop()

    config = training.TrainConfig(out_dir=tempfile.mkdtemp(), steps=last, save_every=0, log_every=0,
                                  learning_rate=SupervisedSettings.learning_rate,
                                  weight_decay=SupervisedSettings.weight_decay,
                                  show_progress=False, jit_compile=jit_compile)
    training.train(SupervisedObjective(ckpt), Fixed(), config, on_step=on_step)
    space = xplane_pb2.XSpace()
    space.ParseFromString(open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1], "rb").read())
    total = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_") or (not jit_compile and not line.name.startswith("tf_Compute")):
                continue
            for event in line.events:
                kind = names.get(event.metadata_id, "?").split(":")[-1]
                kind = kind.split(".")[0] if jit_compile else kind  # XLA numbers its fusions: fold them
                if kind not in WRAPPERS and not kind.startswith(("__inference", "ThreadpoolListener")):
                    total[kind] += event.duration_ps / 1e9 / (last - first)
    wall = (stamps[last - 1] - stamps[first - 1]) / (last - first) * 1e3
    summed = sum(total.values())
    print(f"\nop profile of our supervised step{' (XLA)' if jit_compile else ''}, one fixed batch "
          f"[{batch_size}, {width}]: wall {wall:.0f} ms per step; op time summed over threads {summed:.0f} ms")
    for kind, ms in total.most_common(top):
        print(f"    {kind:<34} {ms:8.0f} ms  {100 * ms / summed:5.1f}%")


# ------------------------------------------------------------------ main
def data_costs(makers: dict, count: int) -> dict:
    """ms per batch of each batch maker (called alternately), on the main thread, nothing else running."""
    totals = dict.fromkeys(makers, 0.0)
    for i in range(count):
        for name, fn in makers.items():
            start = time.perf_counter()
            fn(i)
            totals[name] += time.perf_counter() - start
    return {name: totals[name] / count * 1e3 for name in makers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distill", action="store_true", help="distillation stage instead of supervised")
    parser.add_argument("--stage1", action="store_true", help="stage 1 (pretrain) instead of supervised")
    parser.add_argument("--xla", action="store_true", help="our step XLA-compiled (pad_to=16)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows; default 64 supervised, 32 distill")
    parser.add_argument("--bucket", type=int, default=SupervisedSettings.bucket,
                        help="supervised: bucket of the ours side (the stage's default); an ours-bucket1 side "
                        "runs the reference's sampling (1: only that)")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="warmup 3, block 4, rounds 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="instead: op profile of our supervised step on a fixed [batch, 64] batch (with --xla: XLA)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.block, args.rounds = 3, 4, 3
    batch_size = args.batch_size or (32 if args.distill or args.stage1 else 64)
    steps = args.warmup + args.rounds * args.block
    tf.get_logger().setLevel("ERROR")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    vocab = checkpoints.read_vocab(SHARED / "vocab" / "vocab.txt", 12000)
    config = checkpoints.read_config(SHARED / "vocab" / SHAPE / "bert_config.json")
    ckpt = Path(tempfile.mkdtemp(prefix="bench_train_ckpt_")) / "L-6_H-384"
    checkpoints.write_checkpoint(ckpt, config, vocab, checkpoints.init_weights(config, seed=0))
    tokenizer = Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    np.random.seed(args.seed)
    if args.profile and args.distill:
        profile_distill(ckpt, D.load_distill_pairs(labeled_dir=SHARED).groups, tokenizer, batch_size)
        return
    if args.profile:
        profile_step(ckpt, batch_size, 64, args.xla)
        return

    results: dict = {}
    pad_to = 16 if args.xla else 1
    if args.stage1:
        groups = D.load_distill_pairs(labeled_dir=SHARED).groups
        print(f"stage 1, L-6/H-384 (random weights), batch {batch_size} rows, {len(groups)} positive pairs of "
              f"../shared/data; steps per side {steps} (warm-up {args.warmup}, then {args.rounds} turns of {args.block})")

        def batches():
            return B.Stage1Batches(groups, tokenizer, batch_size=batch_size, seed=args.seed, pad_to=pad_to)

        label = "ours-xla" if args.xla else "ours"
        sides = {
            "original": original_stage1(ckpt, groups, tokenizer, batch_size, steps, args.seed),
            label: ours(lambda: Stage1Objective(ckpt), batches, steps, args.seed, args.xla, results, "token_ids",
                        Stage1Settings),
        }
        if not args.xla:
            sides["ours-keras-student"] = ours(lambda: Stage1Objective(ckpt, packed=False), batches, steps,
                                               args.seed, False, results, "token_ids", Stage1Settings)
            sides["ours-all-logits"] = ours(lambda: Stage1Objective(ckpt, target_logits_only=False), batches, steps,
                                            args.seed, False, results, "token_ids", Stage1Settings)
        maker = batches()
        costs = data_costs({label: maker.batch_at}, 20)
        widths = [maker.batch_at(i)["token_ids"].shape[1] for i in range(20)]
        print(f"data: ours {costs[label]:.1f} ms per batch (tokenize, whole-word mask, pad), width mean {np.mean(widths):.1f}")
    elif args.distill:
        groups = D.load_distill_pairs(labeled_dir=SHARED).groups
        print(f"distillation, L-6/H-384 teacher and student (random weights), batch {batch_size} rows, "
              f"{len(groups)} positive pairs of ../shared/data; steps per side {steps} "
              f"(warm-up {args.warmup}, then {args.rounds} turns of {args.block})")

        def batches():
            return B.DistillBatches(groups, tokenizer, batch_size=batch_size, seed=args.seed, pad_to=pad_to)

        label = "ours-xla" if args.xla else "ours"
        # ours: the packed student, the MLM head on the scored positions only (the default; not under XLA);
        # ours-keras-student: the keras student, the head on the scored positions;
        # ours-all-logits: the keras student, the head on every position, as the reference
        sides = {
            "original": original_distill(ckpt, groups, tokenizer, batch_size, steps, args.seed),
            label: ours(lambda: DistillObjective(ckpt, ckpt), batches, steps,
                        args.seed, args.xla, results, "student_token_ids", DistillSettings),
        }
        if not args.xla:
            sides["ours-keras-student"] = ours(lambda: DistillObjective(ckpt, ckpt, packed=False), batches, steps,
                                               args.seed, False, results, "student_token_ids", DistillSettings)
            sides["ours-all-logits"] = ours(lambda: DistillObjective(ckpt, ckpt, target_logits_only=False), batches,
                                            steps, args.seed, False, results, "student_token_ids", DistillSettings)
        maker = batches()
        costs = data_costs({label: maker.batch_at}, 20)
        widths = [maker.batch_at(i)["student_token_ids"].shape[1] for i in range(20)]
        print(f"data: ours {costs[label]:.1f} ms per batch (tokenize, whole-word mask, pad; the teacher runs "
              f"in our step), student width mean {np.mean(widths):.1f}; the original's generator also runs the "
              f"teacher's predict per batch")
    else:
        data = D.load_supervised_data(SHARED)
        print(f"supervised, L-6/H-384 (random weights), batch {batch_size} rows = {batch_size // 2} pairs, "
              f"{len(data.binary)} binary + {len(data.nli)} NLI pairs of ../shared/data; steps per side {steps} "
              f"(warm-up {args.warmup}, then {args.rounds} turns of {args.block})")

        def batches(bucket=1):
            return lambda: B.SupervisedBatches.from_data(data, tokenizer, batch_size=batch_size, seed=args.seed,
                                                        pad_to=pad_to, bucket=bucket)

        label = "ours-xla" if args.xla else "ours"
        # ours: the stage's default batching (bucket=16); ours-bucket1: the reference's sampling order
        variants = {label: args.bucket, f"{label}-bucket1": 1} if args.bucket > 1 else {label: 1}
        sides = {"original": original_supervised(ckpt, data, tokenizer, batch_size, steps, args.seed)}
        for name, bucket in variants.items():
            sides[name] = ours(lambda: SupervisedObjective(ckpt), batches(bucket), steps, args.seed, args.xla,
                               results, "token_ids")
        datasets_1 = [(p.text1, p.text2, p.label) for p in data.binary]
        datasets_2 = [(p.text1, p.text2, p.label) for p in data.nli]
        reference = original_supervised_generator(tokenizer)(original_corpus(datasets_1, datasets_2), batch_size)
        stream = reference.forfit()
        next(stream)  # fills the reference's shuffle buffer (batch_size * 1000 samples) once
        makers = {"original": lambda i: next(stream)}
        makers.update({name: batches(bucket)().batch_at for name, bucket in variants.items()})
        costs = data_costs(makers, 20)
        widths = {name: batches(bucket)() for name, bucket in variants.items()}
        widths = {n: np.mean([b.batch_at(i)["token_ids"].shape[1] for i in range(64)]) for n, b in widths.items()}
        widths["original"] = np.mean([next(stream)[0][0].shape[1] for _ in range(64)])
        print("data: ms per batch made " + ", ".join(f"{n} {c:.1f}" for n, c in costs.items())
              + "; mean padded width over 64 batches " + ", ".join(f"{n} {w:.1f}" for n, w in widths.items()))

    turns = Turns(list(sides), args.warmup, args.block)
    turns.run(sides)

    print(f"\n{'side':<22} {'steps/s':>8} {'ms/step':>8} {'median':>7} {'vs original':>11}   "
          f"{'width':>5} {'cells/s':>8} {'vs original':>11}  timed steps")
    rates, cells = {}, {}
    for name in sides:
        times = np.array(turns.times[name])
        width = np.mean([turns.widths[name][i] for i in turns.timed_steps[name]])
        rates[name] = 1 / times.mean()
        cells[name] = batch_size * width * len(times) / times.sum()
        print(f"{name:<22} {rates[name]:>8.3f} {times.mean() * 1e3:>8.0f} {np.median(times) * 1e3:>7.0f} "
              f"{rates[name] / rates['original']:>10.2f}x   {width:>5.1f} {cells[name]:>8.0f} "
              f"{cells[name] / cells['original']:>10.2f}x  {len(times)}")
    print("width: mean padded length of the timed steps' batches; cells/s: rows x width per second "
          "(throughput with the batch shapes factored out)")
    for name in sides:
        print(f"{name} timed steps (step: ms @ width): " + ", ".join(
            f"{i + 1}: {t * 1e3:.0f}@{turns.widths[name][i]}" for i, t in zip(turns.timed_steps[name], turns.times[name])))
    for name, result in results.items():
        print(f"{name}: per step, waiting for the next batch {result.data_wait_seconds / steps * 1e3:.1f} ms "
              f"(mean over all {steps} steps, first included) vs {np.mean(turns.times[name]) * 1e3:.0f} ms per step: "
              "tf.data prefetch makes batches while the step runs")


if __name__ == "__main__":
    main()
