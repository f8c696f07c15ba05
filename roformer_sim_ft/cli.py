"""``roformer-sim-ft`` command line: argument parsing only, each subcommand a thin call.

Errors in user input (``RoformerSimError``) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import RoformerSimError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None], str]] = {}


def command(name: str, help: str):
    """Register ``run`` with its ``add_arguments`` companion under ``name``."""

    def register(add_arguments):
        def attach(run):
            COMMANDS[name] = (add_arguments, run, help)
            return run

        return attach

    return register


def _args_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="bert_config.json, or a preset: tiny, L-2_H-128, L-4_H-256, L-6_H-384, L-12_H-768")
    p.add_argument("--vocab", default="builtin", help="vocab.txt (default: a char vocab built from jieba's dictionary)")
    p.add_argument("--out", required=True, help="output folder (released layout)")
    p.add_argument("--seed", type=int, default=0)


@command("init", "write a new random RoFormer-Sim checkpoint")(_args_init)
def _run_init(args: argparse.Namespace) -> None:
    from . import checkpoints
    from .model import SimModel

    vocab = checkpoints.builtin_vocab() if args.vocab == "builtin" else checkpoints.read_vocab(args.vocab)
    if Path(args.config).suffix == ".json" or Path(args.config).exists():
        config = checkpoints.read_config(args.config)
    else:
        config = checkpoints.preset_config(args.config, len(vocab))
    if len(vocab) != config["vocab_size"]:
        raise RoformerSimError(f"{args.vocab}: vocab has {len(vocab)} tokens but config vocab_size is {config['vocab_size']}")
    checkpoints.write_checkpoint(args.out, config, vocab, checkpoints.init_weights(config, args.seed))
    print(f"wrote {args.out}")


def _args_similarity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("text1")
    p.add_argument("text2")


@command("similarity", "print the cosine similarity of two texts")(_args_similarity)
def _run_similarity(args: argparse.Namespace) -> None:
    from .model import SimModel

    print(f"{SimModel.load(args.checkpoint).similarity(args.text1, args.text2):.6f}")


def _args_encode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True, help="text file, one sentence a line")
    p.add_argument("--output", required=True, help=".npy file of L2-normalised vectors")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-normalize", action="store_true")


@command("encode", "encode a file of sentences (one a line) to .npy")(_args_encode)
def _run_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from .io import atomic_path
    from .model import SimModel

    texts = _read_lines(args.input)
    vectors = SimModel.load(args.checkpoint).encode(
        texts, batch_size=args.batch_size, normalize=not args.no_normalize
    )
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    print(f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]}")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (released layout)")
    p.add_argument("--out", required=True, help="output folder (replaced only if empty or an earlier export of the same format)")
    p.add_argument("--format", default="ckpt", choices=("ckpt", "h5", "savedmodel", "hf"),
                   help="ckpt: released TF1 layout (default); h5: Keras HDF5 weights for plain bert4keras; "
                   "savedmodel: TF SavedModel with encode/similarity signatures; hf: transformers RoFormer + pooler")


@command("export", "write a checkpoint as ckpt, h5, savedmodel or hf, verified against this model")(_args_export)
def _run_export(args: argparse.Namespace) -> None:
    from .export import export

    result = export(args.checkpoint, args.out, args.format)
    print(f"wrote {result.path} ({result.format}; verified: {result.checked}; largest difference {result.max_diff:.2g})")


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise RoformerSimError(f"input file missing: {path}") from None
    except UnicodeDecodeError as e:
        raise RoformerSimError(f"{path}: invalid UTF-8 ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise RoformerSimError(f"{path}:{n}: empty text")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roformer-sim-ft",
        description="Load, fine-tune, distill, export and evaluate RoFormer-Sim checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except RoformerSimError as e:
        print(f"roformer-sim-ft: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
