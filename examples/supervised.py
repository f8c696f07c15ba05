"""The supervised stage of train/supervised.py through the Python API.

    python examples/supervised.py CHECKPOINT DATA_DIR OUT_DIR [steps]

DATA_DIR is laid out like the reference's data root (senteval_cn/<TASK>/<TASK>.<split>.data,
cnsd/*/*.jsonl); the package's sample data (roformer_sim_ft.data.readers.sample_data_dir()) works too.
"""
import argparse

from roformer_sim_ft.pipeline import supervised
from roformer_sim_ft.settings import SupervisedSettings, TrainConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    args = parser.parse_args(argv)
    config = TrainConfig(out_dir=args.out_dir, steps=args.steps, save_every=500)
    # train/supervised.py's values; the reference trains on train+valid, here valid selects the model.
    settings = SupervisedSettings(objective="concat", features=("u", "v", "|u-v|"), batch_size=192, dropout_rate=0.2,
                                  learning_rate=2e-5, weight_decay=0.01, splits=("train",))
    result = supervised(args.checkpoint, config, args.data_dir, settings=settings, eval_dir=args.data_dir,
                        eval_split="valid")
    print(f"step {result.step}: loss {result.losses['loss']:.4f}; the -ft encoder is in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
