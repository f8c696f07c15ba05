"""Benchmark sentence encoding: ``SimModel.encode`` vs the original scripts' ``encoder.predict``.

The original side is what ``test/retrieval.py`` of ZhuiyiTechnology/roformer-sim
does, applied to a corpus: ``tokenizer.encode(t, maxlen=64)``, batches of 64 in
input order, each padded to its own longest row by ``sequence_padding``, then
``encoder.predict([X, S])`` per batch. Ours is ``SimModel.encode`` (sort by
length, one compiled ``FastRoFormer.pooled_of`` call per batch, input order restored);
``ours-bf16`` is the same with ``precision="bf16"``; ``hf`` is transformers'
``RoFormerModel`` in PyTorch built from the same weights (export.hf_config /
hf_weights), the pooler a torch Linear on [CLS], sorted by length as
sentence-transformers does, batches of 64, torch threads = TF's, in a worker
process of its own (benchmarks/hf_encode_worker.py; it gets the token ids
ready-made, so its tokenizing is not timed while ours is). ``ours-keras``
(``--keras-side``) is our sorting with the keras encoder (``fast=False``).

Both sides run on the same model (real released shapes, random weights) and on
the same real sentences of mixed lengths (first two columns of
../shared/data/senteval_cn/*/*.data, drawn with a fixed seed). They alternate
round by round in one process (A B, B A, A B, …) so that a busy machine slows
both alike; the ratio is the sum of original times over the sum of ours.
Vectors are checked equal (fp32) before timing.

    .venv/bin/python benchmarks/bench_encode.py --quick      # L-6: 1024 sentences x 3 rounds, L-12: 512 x 2
    .venv/bin/python benchmarks/bench_encode.py --shapes L-6 --sentences 2000 --rounds 4
    .venv/bin/python benchmarks/bench_encode.py --corpus mixed --keras-side   # the mixed-length draw
    .venv/bin/python benchmarks/bench_encode.py --profile    # per-batch costs, XLA, bf16, op profile
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import roformer_sim_ft  # noqa: F401,E402  (before tensorflow)
import tensorflow as tf  # noqa: E402
from bert4keras.snippets import sequence_padding  # noqa: E402

from roformer_sim_ft import checkpoints, export  # noqa: E402
from roformer_sim_ft.model import SimModel  # noqa: E402

SHARED = Path(os.environ.get("ROFORMER_SIM_FT_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPES = {
    "L-6": "chinese_roformer-sim-char-ft_L-6_H-384_A-6",
    "L-12": "chinese_roformer-sim-char-ft_L-12_H-768_A-12",
}


def load_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct real sentences (columns 1 and 2 of every senteval_cn file), seeded draw."""
    texts = set()
    for path in sorted((SHARED / "senteval_cn").glob("*/*.data")):
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                texts.update(t.strip() for t in fields[:2] if t.strip())
    texts = sorted(texts)
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), size=min(count, len(texts)), replace=False)]


def load_lcqmc(count: int) -> list[str]:
    """The first ``count`` sentences of LCQMC.valid (first column, then second), in file order."""
    pairs = [line.split("\t") for line in (SHARED / "senteval_cn" / "LCQMC" / "LCQMC.valid.data")
             .read_text(encoding="utf-8").splitlines()]
    texts = [p[0].strip() for p in pairs if p[0].strip()] + [p[1].strip() for p in pairs if len(p) > 1 and p[1].strip()]
    return texts[:count]


class HFSide:
    """transformers' RoFormerModel in a worker process (benchmarks/hf_encode_worker.py)."""

    def __init__(self, model: SimModel, texts: list[str], threads: int) -> None:
        self.folder = tempfile.mkdtemp(prefix="bench_encode_hf_")
        state, pooler = export.hf_weights(model.get_weights(), model.config)
        export.write_safetensors(f"{self.folder}/model.safetensors", state)
        export.write_safetensors(f"{self.folder}/pooler.safetensors", pooler)
        with open(f"{self.folder}/config.json", "w", encoding="utf-8") as f:
            json.dump(export.hf_config(model.config), f)
        ids = model.tokenize(texts)
        np.savez(f"{self.folder}/ids.npz", ids=np.concatenate(ids).astype(np.int64), lengths=[len(x) for x in ids])
        worker = Path(__file__).resolve().with_name("hf_encode_worker.py")
        self.process = subprocess.Popen([sys.executable, str(worker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.info = self._ask({"init": self.folder, "threads": threads, "ids": f"{self.folder}/ids.npz"})
        self.worker_seconds = 0.0

    def _ask(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("hf worker died (see its error above)")
        return json.loads(line)

    def __call__(self) -> np.ndarray:
        out = f"{self.folder}/vectors.npy"
        self.worker_seconds += self._ask({"run": out})["seconds"]
        return np.load(out)

    def close(self) -> None:
        self.process.stdin.write(json.dumps({"quit": 1}) + "\n")
        self.process.stdin.close()
        self.process.wait()


def tf_threads() -> int:
    """The intra-op thread count TensorFlow uses (0 in its config means one per core)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


def original_encode(model: SimModel, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """test/retrieval.py's way, over a corpus: batches in input order, padded per batch, predict."""
    out = []
    for start in range(0, len(texts), batch_size):
        X, S = [], []
        for t in texts[start : start + batch_size]:
            x, s = model.tokenizer.encode(t, maxlen=model.maxlen)
            X.append(x)
            S.append(s)
        X, S = sequence_padding(X), sequence_padding(S)
        out.append(model.encoder.predict([X, S], verbose=0))
    return np.concatenate(out)


def ours_encode(model: SimModel, texts: list[str], **kwargs) -> np.ndarray:
    return model.encode(texts, batch_size=64, normalize=False, show_progress_bar=False, **kwargs)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_shape(name: str, texts: list[str], rounds: int, vocab: list[str], variants: dict, hf_side: bool = True) -> dict:
    config = checkpoints.read_config(SHARED / "vocab" / SHAPES[name] / "bert_config.json")
    model = SimModel(config, vocab, checkpoints.init_weights(config, seed=0))
    lengths = np.array([len(x) for x in model.tokenize(texts)])
    print(f"\n== {name}: L={config['num_hidden_layers']} H={config['hidden_size']}, {len(texts)} sentences, "
          f"tokens min/median/mean/max {lengths.min()}/{int(np.median(lengths))}/{lengths.mean():.1f}/{lengths.max()}")
    batches = [lengths[i : i + 64] for i in range(0, len(lengths), 64)]
    original_cells = sum(len(b) * b.max() for b in batches)
    ordered = np.sort(lengths, kind="stable")
    ours_cells = sum(len(ordered[i : i + 64]) * ordered[i : i + 64].max() for i in range(0, len(ordered), 64))
    print(f"padded token cells: original {original_cells} ({original_cells / lengths.sum():.2f}x the real tokens), "
          f"ours sorted {ours_cells} ({ours_cells / lengths.sum():.2f}x)")
    sides = {"original": lambda: original_encode(model, texts)}
    sides.update({label: (lambda kw=kw: ours_encode(model, texts, **kw)) for label, kw in variants.items()})
    hf = None
    if hf_side:
        hf = HFSide(model, texts, tf_threads())
        print(f"hf: transformers RoFormerModel, torch {hf.info['torch']}, {hf.info['threads']} threads "
              f"(TF intra-op threads {tf_threads()}), worker process")
        sides["hf"] = hf

    # warm-up (tracing) and equivalence, not timed
    first = {}
    for label, fn in sides.items():
        seconds, vectors = timed(fn)
        first[label] = (seconds, vectors)
    if hf is not None:
        hf.worker_seconds = 0.0  # count the timed rounds only
    reference = first["original"][1]
    for label, (seconds, vectors) in first.items():
        diff = float(np.abs(vectors - reference).max())
        cos = float(np.min(np.sum(vectors * reference, 1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)))
        print(f"first call {label:<12} {seconds:7.2f} s   max |Δ| vs original {diff:.2e}, min cosine {cos:.7f}")
    if hf is not None:
        diff = float(np.abs(first["hf"][1] - first["ours"][1]).max())
        bound = 1e-4 * max(1.0, float(np.abs(first["ours"][1]).max()))
        print(f"check: hf vs ours max |Δ| {diff:.2e} (bound {bound:.1e}): {'ok' if diff <= bound else 'FAILED'}")
        if diff > bound:
            raise SystemExit("hf and ours disagree: the comparison would be meaningless")

    totals = {label: 0.0 for label in sides}
    ratios = {label: [] for label in sides}
    labels = list(sides)
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        times = {}
        for label in order:
            times[label], _ = timed(sides[label])
            totals[label] += times[label]
        for label in labels:
            ratios[label].append(times["original"] / times[label])
        print(f"round {r + 1}: " + ", ".join(f"{label} {times[label]:.2f}s" for label in order)
              + " | ratios " + ", ".join(f"{label} {ratios[label][-1]:.2f}x" for label in labels[1:]))
    n = len(texts) * rounds
    print(f"{'side':<14} {'sentences/s':>11} {'vs original':>11} {'per-round min..max':>19}"
          + (f" {'vs hf':>7} {'per-round min..max':>19}" if hf else ""))
    for label in labels:
        line = (f"{label:<14} {n / totals[label]:>11.1f} {totals['original'] / totals[label]:>10.2f}x "
                f"{min(ratios[label]):>8.2f}x..{max(ratios[label]):.2f}x")
        if hf:
            per_round = [mine / theirs for mine, theirs in zip(ratios[label], ratios["hf"])]  # hf time / this time
            line += f" {totals['hf'] / totals[label]:>6.2f}x {min(per_round):>8.2f}x..{max(per_round):.2f}x"
        print(line)
    if hf:
        print(f"hf: compute inside the worker {hf.worker_seconds / totals['hf'] * 100:.0f}% of its timed wall time; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
        hf.close()
    return {label: n / totals[label] for label in labels}


def _batch(T: int, rows: int = 64, seed: int = 0) -> tf.Tensor:
    """A [rows, T] batch of random ids, rows of lengths T/2..T (row 0 full), zero-padded."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 5000, size=(rows, T)).astype(np.int32)
    lengths = rng.integers(T // 2, T + 1, size=rows)
    lengths[0] = T
    for r, n in enumerate(lengths):
        ids[r, n:] = 0
    return tf.constant(ids)


def _op_profile(fn, x, calls: int = 3, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """(wall ms per call, [(op type, ms per call)]) of ``fn(x)`` from the TF profiler's trace."""
    import collections
    import glob
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    fn(x)
    logdir = tempfile.mkdtemp(prefix="bench_encode_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x).numpy()
    wall = (time.perf_counter() - start) / calls * 1e3
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1], "rb").read())
    total = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                for event in line.events:
                    kind = names.get(event.metadata_id, "?").split(":")[-1]
                    if kind != "Process":  # the executor's wrapper around ops
                        total[kind] += event.duration_ps / 1e9 / calls
    return wall, total.most_common(top)


def profile_shape(name: str, vocab: list[str], lengths=(16, 32), repeats: int = 4) -> None:
    """Where an encoder call's time goes: per-batch ms of each variant, bf16 matmuls, op profile."""
    config = checkpoints.read_config(SHARED / "vocab" / SHAPES[name] / "bert_config.json")
    model = SimModel(config, vocab, checkpoints.init_weights(config, seed=0))
    fast = model.fast_forward
    spec = tf.TensorSpec([None, None], tf.int32)

    def keras_encoder(t):
        return model.encoder([t, tf.zeros_like(t)], training=False)

    class Predict:  # the original's call: keras Model.predict on a numpy batch
        def __call__(self, t):
            return tf.constant(model.encoder.predict([t.numpy(), np.zeros_like(t.numpy())], verbose=0))

    variants = {
        "predict": Predict(),
        "keras": tf.function(keras_encoder, input_signature=[spec]),
        "keras+XLA": tf.function(keras_encoder, jit_compile=True),
        "fast": tf.function(fast.pooled_of, input_signature=[spec]),
        "fast+XLA": tf.function(fast.pooled_of, jit_compile=True),
    }
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    print(f"\n== profile {name}: one batch of 64 rows (lengths T/2..T), ms per call, variants alternated")
    for T in lengths:
        x = _batch(T)
        reference = variants["keras"](x).numpy()
        compile_s, diffs = {}, {}
        for label, fn in variants.items():
            seconds, out = timed(lambda: fn(x).numpy())
            compile_s[label] = seconds
            diffs[label] = float(np.abs(out - reference).max())
        totals = dict.fromkeys(variants, 0.0)
        for r in range(repeats):
            for label in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                totals[label] += timed(lambda: variants[label](x).numpy())[0]
        flops = 2 * 64 * T * layers * (4 * hidden * hidden + 2 * hidden * inner)
        print(f"T={T}: dense-layer matmuls {flops / 1e9:.1f} GFLOP")
        for label in variants:
            ms = totals[label] / repeats * 1e3
            print(f"  {label:<10} {ms:8.1f} ms  ({totals['keras'] / totals[label]:.2f}x keras)  "
                  f"first call {compile_s[label]:.1f} s  max |Δ| vs keras {diffs[label]:.1e}")
    a = tf.random.normal([64 * 16, hidden])
    b = tf.random.normal([hidden, inner])
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    for dtype in (tf.float32, tf.bfloat16):
        aa, bb = tf.cast(a, dtype), tf.cast(b, dtype)
        matmul(aa, bb)
        seconds = min(timed(lambda: matmul(aa, bb).numpy())[0] for _ in range(10))
        print(f"matmul [{64 * 16},{hidden}]x[{hidden},{inner}] {dtype.name}: {seconds * 1e3:.2f} ms "
              f"({2 * 64 * 16 * hidden * inner / seconds / 1e9:.0f} GFLOP/s)")
    x = _batch(16)
    for label in ("keras", "fast"):
        wall, ops = _op_profile(variants[label], x)
        print(f"op profile, {label}, T=16 (TF profiler, op time summed over both threads per call; wall {wall:.0f} ms):")
        for kind, ms in ops:
            print(f"    {kind:<24} {ms:7.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["L-6", "L-12"], choices=sorted(SHAPES))
    parser.add_argument("--sentences", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="L-6: 1024 sentences x 3 rounds; L-12: 512 x 2")
    parser.add_argument("--corpus", choices=["lcqmc", "mixed"], default="lcqmc",
                        help="lcqmc: the first N sentences of LCQMC.valid; mixed: a seeded draw from every senteval_cn file")
    parser.add_argument("--keras-side", action="store_true", help="add the ours-keras (sorting only) side")
    parser.add_argument("--no-hf-side", action="store_true", help="skip the transformers/torch side")
    parser.add_argument("--profile", action="store_true",
                        help="instead: per-batch times of the encoder variants (XLA, bf16) and an op profile")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    vocab = checkpoints.read_vocab(SHARED / "vocab" / "vocab.txt", 12000)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if args.profile:
        for name in args.shapes:
            profile_shape(name, vocab)
        return
    variants = {"ours": {}, "ours-bf16": {"precision": "bf16"}}
    if args.keras_side:
        variants["ours-keras"] = {"fast": False}
    for name in args.shapes:
        count, rounds = args.sentences, args.rounds
        if args.quick:
            count, rounds = (1024, 3) if name == "L-6" else (512, 2)
        if args.corpus == "lcqmc":
            texts = load_lcqmc(count)
            print(f"sentences: the first {len(texts)} of LCQMC.valid (column 1, then column 2)")
        else:
            texts = load_sentences(count)
            print(f"sentences: {len(texts)} drawn from senteval_cn/*/*.data (columns 1-2), seed 0")
        print(f"load average {os.getloadavg()[0]:.1f} before {name}")
        bench_shape(name, texts, rounds, vocab, variants, hf_side=not args.no_hf_side)


if __name__ == "__main__":
    main()
