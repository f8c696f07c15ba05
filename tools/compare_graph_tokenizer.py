"""Count sentences whose in-graph token ids differ from bert4keras's Tokenizer.

Reads every sentence of the valid splits (``senteval_cn/*/*.valid.data`` and
``cnsd/*/*dev*.jsonl``/``*valid*.jsonl``) under ``--data`` (default
``../shared/data``) and the package's sample data, tokenises each with
``bert4keras.tokenizers.Tokenizer(vocab, do_lower_case=True).encode(text,
maxlen=64)`` and with ``GraphTokenizer``, and prints the sentences checked and
the mismatches per file, with up to ``--show`` examples.

    .venv/bin/python tools/compare_graph_tokenizer.py
    .venv/bin/python tools/compare_graph_tokenizer.py --data ../shared/data --vocab ../shared/data/vocab/vocab.txt
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import roformer_sim_ft  # noqa: F401  (selects tf_keras before tensorflow loads)
import tensorflow as tf

from roformer_sim_ft import checkpoints
from roformer_sim_ft.data import readers
from roformer_sim_ft.export.graph_tokenizer import GraphTokenizer, unavailable_reason
from roformer_sim_ft.settings import MAXLEN
from roformer_sim_ft.model import make_tokenizer

REPO = Path(__file__).resolve().parents[1]


def sentences(path: Path) -> list[str]:
    """Both sentences of every line, raw (no cutting): senteval .data (tab-separated, CSV-quoted) or jsonl."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".jsonl":
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    out += [row["sentence1"], row["sentence2"]]
        else:
            for row in csv.reader(f, delimiter="\t"):
                if len(row) >= 2:
                    out += row[:2]
    return out


def valid_files(root: Path) -> list[Path]:
    files = sorted(root.glob("senteval_cn/*/*.valid.data"))
    files += sorted(p for p in root.glob("cnsd/*/*.jsonl") if ".dev" in p.name or ".valid" in p.name)
    return files


def compare(texts: list[str], vocab: list[str], maxlen: int = MAXLEN, batch: int = 2048) -> list[tuple[str, list[int], list[int]]]:
    """(text, bert4keras ids, graph ids) of every text whose ids differ."""
    reference = make_tokenizer(vocab)
    graph = GraphTokenizer(vocab, maxlen=maxlen)
    fn = tf.function(graph, input_signature=[tf.TensorSpec([None], tf.string)])
    bad = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        got = fn(tf.constant(chunk)).numpy()
        for text, row in zip(chunk, got):
            want = reference.encode(text, maxlen=maxlen)[0]
            mine = [int(i) for i in row if i != 0]
            if mine != want:
                bad.append((text, want, mine))
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data root (default ../shared/data)")
    p.add_argument("--vocab", type=Path, default=None, help="vocab.txt (default DATA/vocab/vocab.txt)")
    p.add_argument("--show", type=int, default=5, help="mismatch examples to print per file")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot compare: {reason}", file=sys.stderr)
        return 2
    vocab_path = args.vocab or args.data / "vocab" / "vocab.txt"
    if not vocab_path.exists():
        print(f"cannot compare: {vocab_path} missing (--vocab)", file=sys.stderr)
        return 2
    vocab = checkpoints.read_vocab(vocab_path)
    files = valid_files(args.data) + valid_files(readers.sample_data_dir())
    total = total_bad = 0
    for path in files:
        texts = sentences(path)
        bad = compare(texts, vocab)
        total, total_bad = total + len(texts), total_bad + len(bad)
        print(f"{path}: {len(texts)} sentences, {len(bad)} mismatches")
        for text, want, mine in bad[: args.show]:
            print(f"  {text!r}\n    bert4keras {reference_tokens(vocab, want)}\n    graph      {reference_tokens(vocab, mine)}")
    print(f"total: {total} sentences in {len(files)} files, {total_bad} mismatches")
    return 0


def reference_tokens(vocab: list[str], ids: list[int]) -> list[str]:
    return [vocab[i] for i in ids]


if __name__ == "__main__":
    sys.exit(main())
