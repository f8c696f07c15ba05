"""Similar-sentence generation as test/generate.py: sample n with top-p, rerank by the encoder.

    python examples/generate.py CHECKPOINT "微信和支付宝哪个好？" [n] [k]
"""
import argparse

from roformer_sim_ft import SimModel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("text")
    parser.add_argument("n", nargs="?", type=int, default=100, help="samples drawn (default 100)")
    parser.add_argument("k", nargs="?", type=int, default=20, help="most similar kept (default 20)")
    args = parser.parse_args(argv)
    model = SimModel.load(args.checkpoint)
    for sentence in model.gen_synonyms(args.text, n=args.n, k=args.k, seed=0):
        print(sentence)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
