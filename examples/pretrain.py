"""Stage 1 of train/stage1.py (SimBERT v2: make a RoFormer-Sim from a RoFormer) through the Python API.

    python examples/pretrain.py ROFORMER OUT_DIR PAIRS.jsonl [PAIRS2.jsonl ...] [--steps N] [--weights 2,1,1]

ROFORMER is a plain RoFormer (chinese_roformer-char_L-12_H-768_A-12: its missing pooler, and MLM head
if absent, are initialised), a released RoFormer-Sim, or the output of `roformer-sim-ft init`.
PAIRS files hold {"text": ..., "synonyms": [...]} or {"text_a": ..., "text_b": ...} lines; --weights
interleaves them (the reference reads f1, f2, f1, f3: 2,1,1).
"""
import argparse

from roformer_sim_ft import SimModel
from roformer_sim_ft.pipeline import pretrain
from roformer_sim_ft.settings import Stage1Settings, TrainConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("pairs", nargs="+")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--weights", type=lambda s: tuple(int(w) for w in s.split(",")))
    args = parser.parse_args(argv)
    config = TrainConfig(out_dir=args.out_dir, steps=args.steps, save_every=500)
    # train/stage1.py's values: 96 rows (48 pairs, both directions), AdamW 1e-5 / 0.01, dropout 0.2, scale 20
    settings = Stage1Settings(batch_size=96, learning_rate=1e-5, weight_decay=0.01, dropout_rate=0.2,
                              similarity_scale=20.0, weights=args.weights)
    result = pretrain(args.checkpoint, config, args.pairs, settings=settings)
    print(f"step {result.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items()))
    model = SimModel.load(args.out_dir)
    print(model.similarity("微信和支付宝哪个好？", "支付宝和微信哪个好用"))
    print(model.gen_synonyms("微信和支付宝哪个好？", n=20, k=5, seed=0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
