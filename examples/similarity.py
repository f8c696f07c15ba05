"""Sentence similarity with a RoFormer-Sim(-FT) checkpoint (cf. the post's probe pairs).

    python examples/similarity.py checkpoints/chinese_roformer-sim-char-ft_L-6_H-384_A-6
"""
import argparse

from roformer_sim_ft import SimModel
from roformer_sim_ft.evaluation import PROBES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    args = parser.parse_args(argv)
    model = SimModel.load(args.checkpoint)
    for text1, text2, published in PROBES:
        print(f"{text1} / {text2}: {model.similarity(text1, text2):.3f} (published base -ft: {published})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
