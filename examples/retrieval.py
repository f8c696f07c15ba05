"""Retrieval as test/retrieval.py of RoFormer-Sim: encode a corpus once, rank it for each query.

    python examples/retrieval.py CHECKPOINT [corpus.txt]   # one sentence a line
"""
import argparse

from roformer_sim_ft import SimModel

CORPUS = [
    "微信和支付宝哪个好", "支付宝和微信哪个好用", "今天天气很好", "明天会下雨吗",
    "我很喜欢北京", "北京的冬天很冷", "推荐一辆红车", "怎么开通花呗", "花呗怎么还款",
]
QUERIES = ["微信和支付宝，哪个好?", "给我推荐一款红色的车", "花呗如何开通"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("corpus_file", nargs="?", help="one sentence a line (default: a small built-in corpus)")
    args = parser.parse_args(argv)
    model = SimModel.load(args.checkpoint)
    corpus = CORPUS
    if args.corpus_file:
        with open(args.corpus_file, encoding="utf-8") as f:
            corpus = [line.strip() for line in f if line.strip()]
    vectors = model.encode(corpus, batch_size=64)  # L2-normalised
    for query in QUERIES:
        sims = vectors @ model.encode(query)
        best = sims.argsort()[::-1][:3]
        print(query, "->", [(corpus[i], round(float(sims[i]), 3)) for i in best])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
