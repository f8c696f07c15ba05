"""``make demo``: the whole recipe on the embedded default, in a few minutes on a laptop CPU.

init a small random RoFormer-Sim (the package's own char vocab) → supervised
stage on the bundled sample data → distillation into the UniLM student →
export in the released layout → evaluation table and probes → a few
``gen_synonyms`` lines. Needs no download and nothing outside the package.
The model is tiny and starts from random weights, so its numbers say that the
pipeline runs, not how good RoFormer-Sim-FT is: for that, run
``roformer-sim-ft pipeline`` on a released checkpoint and real data.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from . import checkpoints
from .fs import folders as outputs
from .data import readers
from .errors import RoformerSimError
from .pipeline import PIPELINE_STAGES, run_pipeline
from .settings import DistillSettings, SupervisedSettings, TrainConfig, check_seed

SYNONYMS_OF = ("今天天气不错", "我喜欢北京", "给我推荐一款红色的车")
DEMO_ENTRIES = ("init", *PIPELINE_STAGES, "evaluation.json")


def _clear_earlier_demo(out: Path) -> None:
    """Delete what an earlier demo wrote in ``out``; refuse a folder that is not a demo output."""
    if out.is_dir() and outputs.read_manifest(out) is None and (out / "init").is_dir() \
            and {p.name for p in out.iterdir()} <= set(DEMO_ENTRIES):
        outputs.write_manifest(out, "demo", DEMO_ENTRIES)  # a demo output written before manifests existed
    outputs.check_folder_target(out, ("demo",), "demo output")
    if out.exists():
        _, ours = outputs.ownership(out)
        # Only what a demo writes, and only as a plain name inside ``out``: a symlink is removed, never followed.
        for name in sorted(ours & set(DEMO_ENTRIES)):
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    outputs.ensure_folder(out)
    outputs.write_manifest(out, "demo", DEMO_ENTRIES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roformer_sim_ft.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (an earlier demo output there is replaced)")
    parser.add_argument("--preset", default="L-2_H-128", help="model shape (see `roformer-sim-ft init --help`)")
    parser.add_argument("--supervised-steps", type=int, default=300)
    parser.add_argument("--distill-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except RoformerSimError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:

    start = time.perf_counter()
    check_seed(args.seed, "--seed")  # before an earlier demo output is cleared
    out = Path(args.out)
    _clear_earlier_demo(out)
    sample = readers.sample_data_dir()
    vocab = checkpoints.builtin_vocab()
    config = checkpoints.preset_config(args.preset, len(vocab))
    init_dir = out / "init"
    print(f"== 0/4 init: random {args.preset} RoFormer-Sim, char vocab from jieba's dictionary -> {init_dir}")
    checkpoints.write_checkpoint(init_dir, config, vocab, checkpoints.init_weights(config, args.seed))

    common = dict(seed=args.seed, save_every=0, log_every=10, warmup_steps=20)
    run_pipeline(
        init_dir,
        sample,
        out,
        TrainConfig(steps=args.supervised_steps, **common),
        TrainConfig(steps=args.distill_steps, **common),
        # A tiny model from random weights learns at a far higher rate than a released one is fine-tuned at.
        SupervisedSettings(batch_size=32, learning_rate=1e-3),
        DistillSettings(batch_size=16, learning_rate=5e-4),
        pair_files=[sample / "synonyms" / "sample.jsonl"],
        eval_split="valid",
        synonyms_of=SYNONYMS_OF,
    )
    print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")
    print("(a tiny model trained from random weights on ~500 hand-written pairs: the numbers show the "
          "pipeline working, not RoFormer-Sim-FT's quality)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
