"""The distillation stage of train/stage2.py through the Python API.

    python examples/distill.py TEACHER STUDENT PAIRS.jsonl OUT_DIR [steps]

TEACHER is the encoder from examples/supervised.py; STUDENT the original RoFormer-Sim.
PAIRS.jsonl holds {"text": ..., "synonyms": [...]} or {"text_a": ..., "text_b": ...} lines.
"""
import argparse

from roformer_sim_ft import SimModel
from roformer_sim_ft.pipeline import distill
from roformer_sim_ft.settings import DistillSettings, TrainConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("pairs")
    parser.add_argument("out_dir")
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    args = parser.parse_args(argv)
    config = TrainConfig(out_dir=args.out_dir, steps=args.steps, save_every=500)
    settings = DistillSettings(similarity_weight=100.0, batch_size=96, learning_rate=1e-5, weight_decay=0.01)  # stage2.py
    result = distill(args.teacher, args.student, config, [args.pairs], settings=settings)
    print(f"step {result.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items()))
    print(SimModel.load(args.out_dir).gen_synonyms("微信和支付宝哪个好？", n=20, k=5, seed=0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
