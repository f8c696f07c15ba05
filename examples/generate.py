"""Similar-sentence generation as test/generate.py: sample n with top-p, rerank by the encoder.

    python examples/generate.py CHECKPOINT "微信和支付宝哪个好？" [n] [k]
"""
import sys

from roformer_sim_ft import SimModel


def main(checkpoint: str, text: str, n: str = "100", k: str = "20") -> None:
    model = SimModel.load(checkpoint)
    for sentence in model.gen_synonyms(text, n=int(n), k=int(k), seed=0):
        print(sentence)


if __name__ == "__main__":
    main(*sys.argv[1:5])
