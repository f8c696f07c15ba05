"""The distillation stage of train/stage2.py through the Python API.

    python examples/distill.py TEACHER STUDENT PAIRS.jsonl OUT_DIR [steps]

TEACHER is the encoder from examples/supervised.py; STUDENT the original RoFormer-Sim.
PAIRS.jsonl holds {"text": ..., "synonyms": [...]} or {"text_a": ..., "text_b": ...} lines.
"""
import sys

from roformer_sim_ft import SimModel
from roformer_sim_ft.pipeline import distill
from roformer_sim_ft.settings import DistillSettings, TrainConfig


def main(teacher: str, student: str, pairs: str, out_dir: str, steps: str = "1000") -> None:
    config = TrainConfig(out_dir=out_dir, steps=int(steps), save_every=500)
    settings = DistillSettings(similarity_weight=100.0, batch_size=96, learning_rate=1e-5, weight_decay=0.01)  # stage2.py
    result = distill(teacher, student, config, [pairs], settings=settings)
    print(f"step {result.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items()))
    print(SimModel.load(out_dir).gen_synonyms("微信和支付宝哪个好？", n=20, k=5, seed=0))


if __name__ == "__main__":
    main(*sys.argv[1:6])
