"""Benchmark and compare the native Keras 3 model (``keras3.SimEncoder``) with ``SimModel.encode``.

One released shape (random weights, real 12000-char vocab and bert_config from
../shared/data/vocab) is written as a released checkpoint. ``SimModel.encode``
(bert4keras on tf_keras, its fast path) and ``SimEncoder.encode`` under the
TensorFlow backend run in this process, alternating round by round; the PyTorch
and JAX backends (when installed) each run in a child process that reads the
same checkpoint with numpy and never imports TensorFlow. All sides encode the
same real sentences (batch 64, sorted by length inside). Printed per backend:
sentences/s and the ratio to ``SimModel.encode`` (child processes are timed on
their own, not interleaved), the largest difference of the unit vectors on
those sentences, and the largest differences of the pooled vectors and of the
MLM logits on ``export.VERIFY_TEXTS`` against the plain bert4keras model.

    .venv/bin/python benchmarks/bench_keras3_encode.py                 # L-6, 1024 sentences, 3 rounds
    .venv/bin/python benchmarks/bench_keras3_encode.py --shape L-12 --sentences 512 --rounds 2
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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _segments(ids: np.ndarray) -> np.ndarray:
    return ((np.arange(ids.shape[1]) >= ids.shape[1] // 2) & (ids != 0)).astype(np.int32)


def keras3_side(checkpoint: str, texts: list[str], ids: np.ndarray, rounds: int) -> dict:
    """Load, warm up, time ``rounds`` encodes; outputs on the check ids (this process's backend)."""
    from roformer_sim_ft import keras3

    start = time.perf_counter()
    encoder = keras3.SimEncoder.from_checkpoint(checkpoint)
    load = time.perf_counter() - start
    vectors = encoder.encode(texts)  # warm-up (tracing), not timed
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        encoder.encode(texts)
        times.append(time.perf_counter() - start)
    out = encoder.model({"token_ids": ids, "segment_ids": np.zeros_like(ids)})
    out2 = encoder.model({"token_ids": ids, "segment_ids": _segments(ids)})
    convert = keras3.ops.convert_to_numpy
    return {
        "backend": keras3.keras.backend.backend(), "load": load, "times": np.array(times), "vectors": vectors,
        "pooled": convert(out["pooled"]), "pooled2": convert(out2["pooled"]), "logits": convert(out2["mlm_logits"]),
    }


def child(args) -> None:
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    result = keras3_side(args.checkpoint, texts, np.load(args.ids), args.rounds)
    assert "tensorflow" not in sys.modules, "the keras3 side imported TensorFlow"
    np.savez(args.child, **result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="L-6", choices=("L-6", "L-12"))
    p.add_argument("--sentences", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", default="torch,jax", help="child-process backends to try (comma-separated)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: write this backend's results here
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    p.add_argument("--ids", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import importlib.util

    import roformer_sim_ft  # noqa: F401  (before tensorflow)
    from bench_encode import SHAPES, SHARED, load_sentences
    from roformer_sim_ft import checkpoints, export
    from roformer_sim_ft.model import SimModel, pad

    config = checkpoints.read_config(SHARED / "vocab" / SHAPES[args.shape] / "bert_config.json")
    vocab = checkpoints.read_vocab(SHARED / "vocab" / "vocab.txt", config["vocab_size"])
    texts = load_sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="bench_keras3_"))
    checkpoint = checkpoints.write_checkpoint(work / "ckpt", config, vocab, checkpoints.init_weights(config, seed=0))
    model = SimModel.load(checkpoint)
    ids = pad(model.tokenize(export.VERIFY_TEXTS))
    (work / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    np.save(work / "ids.npy", ids)
    print(f"== {args.shape}: L={config['num_hidden_layers']} H={config['hidden_size']}, {len(texts)} sentences, "
          f"{args.rounds} rounds, batch 64; check sentences: {len(export.VERIFY_TEXTS)} (padded to {ids.shape[1]})")

    reference = {
        "pooled": model.encoder.predict([ids, np.zeros_like(ids)], verbose=0),
        **dict(zip(("pooled2", "logits"), model.model.predict([ids, _segments(ids)], verbose=0))),
    }
    simmodel = lambda: model.encode(texts, batch_size=64, show_progress_bar=False)  # noqa: E731
    base_vectors = simmodel()  # warm-up
    # SimModel.encode and the keras3 TensorFlow side alternate in this process.
    from roformer_sim_ft import keras3

    encoder = keras3.SimEncoder.from_checkpoint(checkpoint)
    encoder.encode(texts)  # warm-up
    base_times, tf_times = [], []
    sides = [(simmodel, base_times), (lambda: encoder.encode(texts), tf_times)]
    for r in range(args.rounds):
        for fn, times in sides if r % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    results = {"tensorflow": keras3_side(str(checkpoint), texts, ids, 0)}
    results["tensorflow"]["times"] = np.array(tf_times)

    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    for backend in [b for b in args.backends.split(",") if b]:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed, skipped")
            continue
        out = work / f"{backend}.npz"
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(out), "--checkpoint", str(checkpoint), "--texts", str(work / "texts.json"),
             "--ids", str(work / "ids.npy"), "--rounds", str(args.rounds)],
            env={**env, "KERAS_BACKEND": backend}, capture_output=True, text=True,
        )
        if done.returncode:
            print(f"{backend}: child failed:\n{done.stderr[-2000:]}")
            continue
        results[backend] = dict(np.load(out))

    n = len(texts)
    base = n * args.rounds / sum(base_times)
    print(f"{'side':<24} {'sentences/s':>11} {'vs SimModel':>11} {'max|Δ| unit vec':>16} {'pooled Δ (seg 0 / 2 seg)':>26} {'MLM logits Δ':>13}")
    print(f"{'SimModel.encode (tf_keras)':<24} {base:>11.1f} {'1.00x':>11}")
    for backend, r in results.items():
        speed = n * len(r["times"]) / float(np.sum(r["times"]))
        vec = float(np.abs(r["vectors"] - base_vectors).max())
        pooled = float(np.abs(r["pooled"] - reference["pooled"]).max())
        pooled2 = float(np.abs(r["pooled2"] - reference["pooled2"]).max())
        logits = float(np.abs(r["logits"] - reference["logits"]).max())
        label = f"keras3 [{backend}]"
        print(f"{label:<24} {speed:>11.1f} {speed / base:>10.2f}x {vec:>16.2e} {pooled:>12.2e} / {pooled2:.2e} {logits:>13.2e}")


if __name__ == "__main__":
    main()
