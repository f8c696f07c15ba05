"""Benchmark gen_synonyms(n=100, k=20): our cached decoder vs the original bert4keras decoder.

The original side is ``test/generate.py`` of ZhuiyiTechnology/roformer-sim on our
model: an ``AutoRegressiveDecoder`` whose ``predict`` reruns
``seq2seq.predict`` on the whole ``[CLS] text [SEP] generated`` sequence every
step, ``random_sample(topp=0.95)``, then the encoder reranks. Ours is
``SimModel.gen_synonyms`` (KV cache, one compiled loop). Both run side by side
in one process on the real released shapes with random weights and real
sentences of mixed lengths from LCQMC.

    .venv/bin/python benchmarks/bench_generate.py                   # L-6/H-384, 3 sentences
    .venv/bin/python benchmarks/bench_generate.py --shapes L-6 L-12 --sentences 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import roformer_sim_ft  # noqa: F401,E402  (before tensorflow)
import tensorflow as tf  # noqa: E402
from bert4keras.snippets import AutoRegressiveDecoder, sequence_padding  # noqa: E402

from roformer_sim_ft import checkpoints  # noqa: E402
from roformer_sim_ft.model import generation
from roformer_sim_ft.model import SimModel  # noqa: E402

SHARED = Path(os.environ.get("ROFORMER_SIM_FT_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHAPES = {
    "L-6": "chinese_roformer-sim-char-ft_L-6_H-384_A-6",
    "L-12": "chinese_roformer-sim-char-ft_L-12_H-768_A-12",
}


class OriginalGenerator(AutoRegressiveDecoder):
    """``SynonymsGenerator`` of the original script, driving ``model.seq2seq.predict``."""

    def __init__(self, model: SimModel, maxlen: int = 64) -> None:
        super().__init__(start_id=None, end_id=model.tokenizer._token_end_id, maxlen=maxlen)
        self.sim = model
        self.lengths: list[int] = []

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, step):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(self.sim.seq2seq).predict([token_ids, segment_ids], verbose=0)

    def generate(self, text: str, n: int = 1, topp: float = 0.95) -> list[str]:
        token_ids, segment_ids = self.sim.tokenizer.encode(text, maxlen=self.sim.maxlen)
        output_ids = self.random_sample([token_ids, segment_ids], n, topp=topp)
        self.lengths = [len(ids) for ids in output_ids]
        return [self.sim.tokenizer.decode(ids) for ids in output_ids]


def original_gen_synonyms(model: SimModel, generator: OriginalGenerator, text: str, n: int, k: int) -> list[str]:
    """``gen_synonyms`` of the original script (encoder.predict on the padded candidates)."""
    r = generator.generate(text, n)
    r = [text] + [i for i in set(r) if i != text]
    ids = [model.tokenizer.encode(t)[0] for t in r]
    x = sequence_padding(ids)
    z = model.encoder.predict([x, np.zeros_like(x)], verbose=0)
    z /= (z**2).sum(axis=1, keepdims=True) ** 0.5
    return [r[i + 1] for i in np.dot(z[1:], -z[0]).argsort()[:k]]


def pick_sentences(path: Path, count: int) -> list[str]:
    """``count`` distinct first-column sentences spread over the length quantiles 10%…90%."""
    lines = path.read_text(encoding="utf-8").splitlines()
    texts = sorted({line.split("\t")[0] for line in lines if line.strip()}, key=len)
    quantiles = np.linspace(0.1, 0.9, count) if count > 1 else [0.5]
    return [texts[int(q * (len(texts) - 1))] for q in quantiles]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_shape(name: str, sentences: list[str], n: int, k: int, vocab: list[str]) -> tuple[float, float]:
    config = checkpoints.read_config(SHARED / "vocab" / SHAPES[name] / "bert_config.json")
    model = SimModel(config, vocab, checkpoints.init_weights(config, seed=0))
    original = OriginalGenerator(model)
    np.random.seed(0)
    print(f"\n== {name}: L={config['num_hidden_layers']} H={config['hidden_size']} vocab={config['vocab_size']}, n={n}, k={k}")
    first, _ = timed(model.gen_synonyms, "预热一下", n=2, k=k, seed=0)  # traces the loop and the encoder
    warm, _ = timed(OriginalGenerator(model, maxlen=2).generate, "预热一下", 2)
    print(f"first call (tracing, not counted below): ours {first:.2f} s, original {warm:.2f} s")

    # per-step cost of the original decoder at 10 samples; the second
    # run reuses the predict traces of the first (each new sequence length retraces once)
    probe, steps = sentences[len(sentences) // 2], 8
    tokens = len(model.tokenizer.encode(probe)[0])
    for label in ("new lengths", "traced lengths"):
        seconds, _ = timed(OriginalGenerator(model, maxlen=steps).generate, probe, 10)
        print(f"original per step, 10 samples, source {tokens} tokens, steps 1-{steps}, {label}: "
              f"{seconds / steps * 1e3:.0f} ms")
    seconds, (ids, _) = timed(generation.generate_ids, model, probe, n=10, max_len=steps, seed=0)
    print(f"ours     per step, 10 samples, same: {seconds / ids.shape[1] * 1e3:.1f} ms")
    seconds, (ids, _) = timed(generation.generate_ids, model, probe, n=n, max_len=64, seed=0)
    print(f"ours     per step, {n} samples, 64 steps: {seconds / ids.shape[1] * 1e3:.1f} ms")
    ended = int((ids == model.tokenizer._token_end_id).any(1).sum())

    print(f"{'tokens':>6} {'ours s':>8} {'original s':>10} {'ratio':>6} {'orig len':>8}  sentence")
    total_ours = total_original = 0.0
    for i, text in enumerate(sentences):
        ours, result = timed(model.gen_synonyms, text, n=n, k=k, seed=i)
        theirs, reference = timed(original_gen_synonyms, model, original, text, n, k)
        total_ours += ours
        total_original += theirs
        tokens = len(model.tokenizer.encode(text, maxlen=model.maxlen)[0])
        print(f"{tokens:>6} {ours:>8.2f} {theirs:>10.2f} {theirs / ours:>5.1f}x {max(original.lengths):>8}  {text}")
        assert len(result) <= k and len(reference) <= k
    print(
        f"total: ours {total_ours:.2f} s, original {total_original:.2f} s, ratio {total_original / total_ours:.1f}x "
        f"(ours {total_ours / len(sentences):.2f} s per gen_synonyms)"
    )
    print(
        f"note: random weights: {ended}/{n} of our samples hit [SEP] before 64 tokens; nearly every sample "
        "runs to max_len 64 on both sides — the worst case, equal for both."
    )
    return total_ours, total_original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["L-6"], choices=sorted(SHAPES))
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # the original's predict retraces per new length and says so
    vocab = checkpoints.read_vocab(SHARED / "vocab" / "vocab.txt", 12000)
    sentences = pick_sentences(SHARED / "senteval_cn" / "LCQMC" / "LCQMC.valid.data", args.sentences)
    print(f"machine: {os.cpu_count()} cores; TF threads default; sentences from LCQMC.valid (first column)")
    for name in args.shapes:
        bench_shape(name, sentences, args.n, args.k, vocab)


if __name__ == "__main__":
    main()
