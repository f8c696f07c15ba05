"""``roformer-sim-ft`` command line: argument parsing only, each subcommand a thin call.

Errors in user input (``RoformerSimError``) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Sequence

from .errors import RoformerSimError
from .settings import DEFAULT_TASKS
from .settings import (
    EXPORT_FORMATS, GENERATE_MAX_SAMPLES, GENERATE_TOP_P, LOG_DIR, MIXED_PRECISIONS, VERBOSE_ENV, DistillSettings,
    Stage1Settings, StageSettings, SupervisedSettings, TrainConfig, check_seed, parse_weights,
)

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
    p.add_argument("--overwrite", action="store_true", help="replace an earlier checkpoint in --out")


@command("init", "write a new random RoFormer-Sim checkpoint")(_args_init)
def _run_init(args: argparse.Namespace) -> None:
    from . import checkpoints

    check_seed(args.seed, "--seed")
    vocab = checkpoints.builtin_vocab() if args.vocab == "builtin" else checkpoints.read_vocab(args.vocab)
    if Path(args.config).suffix == ".json" or Path(args.config).exists():
        config = checkpoints.read_config(args.config)
    else:
        config = checkpoints.preset_config(args.config, len(vocab))
    checkpoints.check_vocab_size(vocab, config["vocab_size"], args.vocab)
    checkpoints.write_checkpoint(args.out, config, vocab, checkpoints.init_weights(config, args.seed),
                                 overwrite=args.overwrite)
    print(f"wrote {args.out}")


def _args_similarity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("text1")
    p.add_argument("text2")


@command("similarity", "print the cosine similarity of two texts")(_args_similarity)
def _run_similarity(args: argparse.Namespace) -> None:
    from .model.sim_model import SimModel

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

    from .fs.atomic import atomic_path
    from .model.sim_model import SimModel
    from .fs.folders import check_file_target

    check_file_target(args.output, "--output .npy")
    if _same_file(args.input, args.output):
        raise RoformerSimError(f"--output {args.output} is the --input file {args.input}; "
                               "not overwriting the sentences with vectors: choose another --output")
    texts = _read_lines(args.input)
    if not texts:
        raise RoformerSimError(f"{args.input}: no sentences to encode (the file is empty or blank)")
    vectors = SimModel.load(args.checkpoint).encode(
        texts, batch_size=args.batch_size, normalize=not args.no_normalize
    )
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    print(f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]}")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (released layout)")
    p.add_argument("--out", required=True, help="output folder (new or empty; an earlier export of the same format "
                   "is replaced only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export of the same format in --out")
    p.add_argument("--format", default="ckpt", choices=tuple(EXPORT_FORMATS),
                   help="; ".join(f"{name}: {what}" for name, what in EXPORT_FORMATS.items()))


@command("export", "write a checkpoint as ckpt, h5, savedmodel, hf or keras, verified against this model")(_args_export)
def _run_export(args: argparse.Namespace) -> None:
    from .export.core import export

    result = export(args.checkpoint, args.out, args.format, args.overwrite)
    print(f"wrote {result.path} ({result.format}; verified: {result.checked}; largest difference {result.max_diff:.2g})")


def _default(cls, name: str):
    """The default of a settings dataclass field: the one home of every default."""
    return next(f.default for f in fields(cls) if f.name == name)


def _add_loop_args(p: argparse.ArgumentParser, stage: type[StageSettings]) -> None:
    loop = lambda name: _default(TrainConfig, name)  # noqa: E731
    own = lambda name: _default(stage, name)  # noqa: E731
    g = p.add_argument_group("training loop")
    g.add_argument("--out", required=True, help="output folder: the trained model (released layout), run.json, training_state/; "
                   "new, empty or a training output (locked while training)")
    g.add_argument("--steps", type=int, default=loop("steps"))
    g.add_argument("--batch-size", type=int, default=own("batch_size"), help=f"rows per batch (default {own('batch_size')})")
    g.add_argument("--bucket", type=int, default=own("bucket"),
                   help=f"sort the samples of K consecutive batches by length and deal them out again: less padding, "
                   f"faster steps; 1 batches in sampling order as the reference (default {own('bucket')})")
    g.add_argument("--pad-to", type=int, default=None,
                   help="pad batch lengths up to a multiple of N (default 16 with --xla, else 1)")
    g.add_argument("--learning-rate", "--lr", type=float, default=own("learning_rate"),
                   help=f"(default {own('learning_rate')})")
    g.add_argument("--weight-decay", type=float, default=own("weight_decay"))
    g.add_argument("--warmup-steps", type=int, default=loop("warmup_steps"))
    g.add_argument("--adam-epsilon", type=float, default=loop("adam_epsilon"),
                   help=f"Adam's epsilon, added to sqrt(v) (default {loop('adam_epsilon'):g}: keras 2.3.1's, as the "
                   f"published models; bert4keras's own TF2 Adam uses 1e-6)")
    g.add_argument("--dropout", type=float, default=own("dropout_rate"),
                   help="dropout of embeddings and hidden layers (bert4keras's dropout_rate)")
    g.add_argument("--attention-dropout", type=_rate_or_config, default=own("attention_dropout_rate"), metavar="R",
                   help=f"dropout on the attention probabilities, or 'config' for the checkpoint config's "
                   f"attention_probs_dropout_prob (default {own('attention_dropout_rate')}: bert4keras 0.10.6, which "
                   f"made the published models, has none)")
    g.add_argument("--maxlen", type=int, default=own("maxlen"))
    g.add_argument("--seed", type=int, default=loop("seed"))
    g.add_argument("--save-every", type=int, default=loop("save_every"),
                   help="write training state every N steps (0: only at the end)")
    g.add_argument("--eval-data", help="data folder whose senteval_cn files are evaluated periodically; the best model is kept")
    g.add_argument("--eval-split", default="valid")
    g.add_argument("--eval-every", type=int, default=0)
    g.add_argument("--allow-eval-overlap", action="store_true",
                   help="evaluate (and select the model) on files that are also training files")
    g.add_argument("--resume", action="store_true", help="continue from the latest state in --out")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds another run (its states, model, run.json and "
                   "event files are deleted; nothing else)")
    g.add_argument("--allow-changed-settings", action="store_true",
                   help="--resume although the seed, the data or a setting such as --lr differs from the saved run's")
    g.add_argument("--devices", type=int, help="MirroredStrategy over N devices (default: all GPUs, else one device); "
                   "with a TF_CONFIG of several workers, MultiWorkerMirroredStrategy instead (docs/SCALING.md)")
    g.add_argument("--collective-timeout", type=float, default=loop("collective_timeout"), metavar="SECONDS",
                   help="multi-worker: stop with an error when start-up or a collective waits longer for the other workers "
                   f"(default {loop('collective_timeout'):g})")
    g.add_argument("--tensorboard", metavar="DIR", default=loop("tensorboard_dir"),
                   help=f"TensorBoard event files: loss terms, learning rate, steps/s, evaluations "
                   f"(default OUT/{LOG_DIR})")
    g.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard event files")
    g.add_argument("--mixed-precision", choices=tuple(MIXED_PRECISIONS), help="mixed_float16 / mixed_bfloat16 (loss stays fp32)")
    g.add_argument("--xla", action="store_true", help="compile the train step with XLA")
    g.add_argument("--skip-bad-lines", action="store_true", help="skip malformed data lines (counted per file) instead of stopping")
    g.add_argument("--no-progress", action="store_true")


def _loop_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        out_dir=args.out, steps=args.steps, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, seed=args.seed, save_every=args.save_every,
        eval_every=args.eval_every if args.eval_data else 0, resume=args.resume, overwrite=args.overwrite,
        allow_changed_settings=args.allow_changed_settings, devices=args.devices,
        mixed_precision=MIXED_PRECISIONS.get(args.mixed_precision), jit_compile=args.xla,
        show_progress=False if args.no_progress else None, collective_timeout=args.collective_timeout,
        tensorboard=not args.no_tensorboard, tensorboard_dir=args.tensorboard, adam_epsilon=args.adam_epsilon,
    )


def _stage_args(args: argparse.Namespace) -> dict:
    """The StageSettings fields the loop flags set."""
    return dict(batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                maxlen=args.maxlen, dropout_rate=args.dropout, attention_dropout_rate=args.attention_dropout,
                skip_bad_lines=args.skip_bad_lines,
                bucket=args.bucket, pad_to=args.pad_to if args.pad_to is not None else (16 if args.xla else 1))


def _print_result(result) -> None:
    state = "interrupted" if result.interrupted else "done"
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
    print(f"{state} at step {result.step}: {losses} ({result.steps_per_second:.2f} steps/s)")
    if result.best:
        print(f"best evaluation {result.best['metric']:.2f} at step {result.best['step']}")


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="RoFormer-Sim checkpoint to fine-tune")
    p.add_argument("--data", help="data folder: senteval_cn/<TASK>/<TASK>.<split>.data and cnsd/*/*.jsonl")
    p.add_argument("--pairs-file", action="append", default=[], help="extra senteval-format file (repeatable)")
    p.add_argument("--nli-file", action="append", default=[], help="extra CNSD-format jsonl (repeatable)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    splits = ",".join(_default(SupervisedSettings, "splits"))
    p.add_argument("--splits", default=splits,
                   help=f"splits of --data to train on (default {splits}; the reference: train,valid)")
    p.add_argument("--objective", default=_default(SupervisedSettings, "objective"),
                   help="concat (the [u,v,|u-v|] classifier), cos-mse, cos-mse-pm1, cos-hinge")
    p.add_argument("--features", default=",".join(_default(SupervisedSettings, "features")),
                   help="feature set of the classifier: any of u, v, |u-v|, u*v")
    p.add_argument("--heads", default=_default(SupervisedSettings, "heads"), choices=("shared", "separate"),
                   help="one Dense(5) or Dense(2)+Dense(3)")
    _add_loop_args(p, SupervisedSettings)


@command("train", "supervised stage: fine-tune an encoder on labelled pairs and NLI")(_args_train)
def _run_train(args: argparse.Namespace) -> int:
    from .pipeline import supervised

    if not args.data and not args.pairs_file and not args.nli_file:
        raise RoformerSimError("give --data DIR or --pairs-file/--nli-file")
    settings = SupervisedSettings(objective=args.objective, features=args.features, heads=args.heads,
                                  tasks=_csv(args.tasks), splits=_csv(args.splits), **_stage_args(args))
    result = supervised(args.checkpoint, _loop_config(args), args.data, args.pairs_file, args.nli_file, settings,
                        eval_dir=args.eval_data, eval_split=args.eval_split, allow_eval_overlap=args.allow_eval_overlap)
    _print_result(result)
    return 130 if result.interrupted else 0


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    """The data flags of the two stages on pairs of similar texts (stage 1 and distillation)."""
    p.add_argument("--pairs", action="append", default=[], help='jsonl of {"text","synonyms"} or {"text_a","text_b"} (repeatable)')
    p.add_argument("--from-labeled", help="use the positive pairs of a senteval_cn/CNSD data folder")
    p.add_argument("--weights", help="interleave the sources (each --pairs file, then --from-labeled) by these integers, "
                   "e.g. 2,1,1 as the reference's f1,f2,f1,f3 (default: every group pooled)")


def _pair_weights(args: argparse.Namespace) -> tuple[int, ...] | None:
    if not args.pairs and not args.from_labeled:
        raise RoformerSimError("give --pairs FILE or --from-labeled DIR")
    return parse_weights(args.weights, len(args.pairs) + bool(args.from_labeled))


def _args_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="the fine-tuned encoder (output of `train`)")
    p.add_argument("--student", required=True, help="the UniLM RoFormer-Sim to distil into (the original, or `train`'s output)")
    _add_pair_args(p)
    p.add_argument("--similarity-weight", type=float, default=_default(DistillSettings, "similarity_weight"))
    _add_loop_args(p, DistillSettings)


@command("distill", "distillation stage: teach the UniLM student the teacher's similarities")(_args_distill)
def _run_distill(args: argparse.Namespace) -> int:
    from .pipeline import distill

    settings = DistillSettings(similarity_weight=args.similarity_weight, weights=_pair_weights(args), **_stage_args(args))
    result = distill(args.teacher, args.student, _loop_config(args), args.pairs, args.from_labeled, settings,
                     eval_dir=args.eval_data, eval_split=args.eval_split, allow_eval_overlap=args.allow_eval_overlap)
    _print_result(result)
    return 130 if result.interrupted else 0


def _args_pretrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a RoFormer (a pooler or MLM head it lacks is initialised), a RoFormer-Sim(-FT), or `init`'s output")
    _add_pair_args(p)
    p.add_argument("--similarity-scale", type=float, default=_default(Stage1Settings, "similarity_scale"),
                   help="scale of the cosines in the similarity softmax (default %(default)s)")
    _add_loop_args(p, Stage1Settings)


@command("pretrain", "stage 1: make a RoFormer-Sim from a RoFormer (seq2seq + in-batch similarity, SimBERT v2)")(_args_pretrain)
def _run_pretrain(args: argparse.Namespace) -> int:
    from .pipeline import pretrain

    settings = Stage1Settings(similarity_scale=args.similarity_scale, weights=_pair_weights(args), **_stage_args(args))
    result = pretrain(args.checkpoint, _loop_config(args), args.pairs, args.from_labeled, settings,
                      eval_dir=args.eval_data, eval_split=args.eval_split, allow_eval_overlap=args.allow_eval_overlap)
    _print_result(result)
    return 130 if result.interrupted else 0


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="data folder with senteval_cn/<TASK>/<TASK>.<split>.data")
    p.add_argument("--split", default="test")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    p.add_argument("--json", help="write the numbers, checkpoint and data fingerprints here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--probes", action="store_true", help="also print the post's ten probe pairs beside the published values")
    p.add_argument("--skip-bad-lines", action="store_true")


@command("evaluate", "Spearman x 100 of cos(u, v) per task, as the post reports it")(_args_evaluate)
def _run_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import format_probes, format_table
    from .pipeline import evaluate

    if not args.data and not args.probes:
        raise RoformerSimError("give --data DIR and/or --probes")
    if args.json:
        from .fs.folders import check_file_target

        check_file_target(args.json, "--json file")
    out = evaluate(args.checkpoint, args.data, args.split, _csv(args.tasks), args.batch_size, args.json,
                   args.probes, args.skip_bad_lines)
    if args.data:
        print(format_table(out.result, _csv(args.tasks)))
        print("rows: " + ", ".join(f"{t} {s.rows}" for t, s in out.result.scores.items()))
    if out.probes:
        print(format_probes(out.probes))
    if args.json:
        print(f"wrote {args.json}")


def _args_pipeline(p: argparse.ArgumentParser) -> None:
    sup, dis = (lambda name: _default(SupervisedSettings, name)), (lambda name: _default(DistillSettings, name))
    pre = lambda name: _default(Stage1Settings, name)  # noqa: E731
    p.add_argument("--checkpoint", required=True,
                   help="a released RoFormer-Sim checkpoint, or with --pretrain-data a plain RoFormer")
    p.add_argument("--data", required=True, help="labelled data folder (senteval_cn/, cnsd/)")
    p.add_argument("--out", required=True,
                   help="[OUT/pretrained,] OUT/supervised, OUT/distilled, OUT/export, OUT/evaluation.json")
    p.add_argument("--pretrain-data", action="append", default=[],
                   help="run stage 1 first on these pairs of similar texts (jsonl, repeatable)")
    p.add_argument("--pretrain-weights", help="interleaving weights of the --pretrain-data files, e.g. 2,1,1")
    p.add_argument("--pretrain-steps", type=int, default=_default(TrainConfig, "steps"))
    p.add_argument("--pretrain-batch-size", type=int, default=pre("batch_size"))
    p.add_argument("--pretrain-lr", type=float, default=pre("learning_rate"))
    p.add_argument("--pairs", action="append", default=[], help="extra distillation pairs (jsonl)")
    p.add_argument("--distill-weights", help="interleave the distillation sources (each --pairs file, then the "
                   "positives of --data) by these integers, e.g. 2,1,1 (default: every group pooled)")
    p.add_argument("--splits", default=",".join(sup("splits")), help="training splits of --data (both stages)")
    p.add_argument("--eval-data", help="folder evaluated at the end (default: --data)")
    p.add_argument("--eval-split", default="valid", help="must not be a training split (see --allow-eval-overlap)")
    p.add_argument("--allow-eval-overlap", action="store_true", help="evaluate on files that are also training files")
    p.add_argument("--supervised-steps", type=int, default=_default(TrainConfig, "steps"))
    p.add_argument("--distill-steps", type=int, default=_default(TrainConfig, "steps"))
    p.add_argument("--supervised-batch-size", type=int, default=sup("batch_size"))
    p.add_argument("--distill-batch-size", type=int, default=dis("batch_size"))
    p.add_argument("--supervised-bucket", type=int, default=sup("bucket"), help="length bucketing of the supervised stage (1: off)")
    p.add_argument("--distill-bucket", type=int, default=dis("bucket"), help="length bucketing of distillation (default off: "
                   "it changes which rows the similarity matrix compares)")
    p.add_argument("--supervised-lr", type=float, default=sup("learning_rate"))
    p.add_argument("--distill-lr", type=float, default=dis("learning_rate"))
    p.add_argument("--seed", type=int, default=_default(TrainConfig, "seed"))
    p.add_argument("--devices", type=int)
    p.add_argument("--mixed-precision", choices=tuple(MIXED_PRECISIONS))
    p.add_argument("--synonyms-of", action="append", default=[], help="print gen_synonyms of this text at the end")
    p.add_argument("--overwrite", action="store_true", help="start again where --out holds an earlier pipeline run")
    p.add_argument("--resume", action="store_true", help="continue an earlier pipeline run in --out: finished stages "
                   "are kept, a stopped stage is resumed (same settings), the rest run")
    p.add_argument("--allow-changed-settings", action="store_true",
                   help="--resume a stopped stage although its seed, data or a setting such as the lr differs")


@command("pipeline", "[stage 1,] supervised stage, distillation, export and evaluation in one run")(_args_pipeline)
def _run_pipeline(args: argparse.Namespace) -> None:
    from .pipeline import run_pipeline

    loop = TrainConfig(seed=args.seed, devices=args.devices, mixed_precision=MIXED_PRECISIONS.get(args.mixed_precision),
                       overwrite=args.overwrite, resume=args.resume, allow_changed_settings=args.allow_changed_settings)
    splits = _csv(args.splits)
    weights = parse_weights(args.pretrain_weights, len(args.pretrain_data))
    distill_weights = parse_weights(args.distill_weights, len(args.pairs) + 1)
    run_pipeline(
        args.checkpoint, args.data, args.out,
        replace(loop, steps=args.supervised_steps), replace(loop, steps=args.distill_steps),
        SupervisedSettings(batch_size=args.supervised_batch_size, bucket=args.supervised_bucket,
                           learning_rate=args.supervised_lr, splits=splits),
        DistillSettings(batch_size=args.distill_batch_size, bucket=args.distill_bucket,
                        learning_rate=args.distill_lr, labeled_splits=splits, weights=distill_weights),
        pair_files=args.pairs, eval_dir=args.eval_data, eval_split=args.eval_split, synonyms_of=args.synonyms_of,
        allow_eval_overlap=args.allow_eval_overlap,
        pretrain_files=args.pretrain_data, pretrain_config=replace(loop, steps=args.pretrain_steps),
        pretrain_settings=Stage1Settings(batch_size=args.pretrain_batch_size, learning_rate=args.pretrain_lr,
                                         weights=weights),
    )


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a UniLM RoFormer-Sim(-FT) checkpoint")
    p.add_argument("text")
    p.add_argument("-n", type=int, default=100, help=f"samples drawn (top-p {GENERATE_TOP_P}; at most {GENERATE_MAX_SAMPLES})")
    p.add_argument("-k", type=int, default=20, help="most similar kept, reranked by the encoder")
    p.add_argument("--seed", type=int, help="repeat a run exactly")


@command("generate", "similar sentences: sample n continuations, keep the k closest by the encoder")(_args_generate)
def _run_generate(args: argparse.Namespace) -> None:
    from .model.generation import check_counts
    from .model.sim_model import SimModel

    check_counts(args.n, args.k)  # before the model loads
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    for sentence in SimModel.load(args.checkpoint).gen_synonyms(args.text, n=args.n, k=args.k, seed=args.seed):
        print(sentence)


def _rate_or_config(text: str) -> float | None:
    """``--attention-dropout``: a rate, or ``config`` (None) for the checkpoint config's."""
    if text.strip().lower() == "config":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate such as 0.1 or 'config', got {text!r}") from None


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (the same path, or links to one file)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.abspath(a) == os.path.abspath(b)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _read_lines(path: str) -> list[str]:
    from .fs.atomic import read_lines

    lines = read_lines(path, missing="input file missing")
    while lines and not lines[-1].strip():  # blank lines at the end of a text file are normal
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise RoformerSimError(f"{path}:{n}: empty text")
    return lines


def _warn_devices(args: argparse.Namespace) -> None:
    """Say it when the hardware cannot give what --devices / --mixed-precision ask for
    (TensorFlow's own notices are silenced unless --verbose)."""
    devices, precision = getattr(args, "devices", None), getattr(args, "mixed_precision", None)
    if not (devices and devices > 1) and precision != "fp16":
        return
    from . import compat

    if compat.tf.config.list_physical_devices("GPU"):
        return
    if devices and devices > 1:
        _warn(f"--devices {devices}: TensorFlow finds no GPU (no CUDA driver or device), so the {devices} "
              "devices must be logical CPUs")
    if precision == "fp16":
        _warn("--mixed-precision fp16 without a GPU: a CPU computes float16 slower than float32")


def _warn(message: str) -> None:
    print(f"roformer-sim-ft: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roformer-sim-ft",
        description="Load, fine-tune, distill, export and evaluate RoFormer-Sim checkpoints.",
    )
    verbose_help = "also show TensorFlow's own start-up and log lines (silenced by default)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_arguments(p)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read by compat when TensorFlow loads, which it has not yet
    try:
        _warn_devices(args)
        return int(args.run(args) or 0)
    except RoformerSimError as e:
        print(f"roformer-sim-ft: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if e.name != "bert4keras":
            raise
        print(f"roformer-sim-ft: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file operation not covered by a clearer message: still one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"roformer-sim-ft: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roformer-sim-ft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
