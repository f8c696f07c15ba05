"""The recipe's stages as plain functions: what the CLI, the demo and the examples call.

``supervised`` (fine-tune an encoder on labelled pairs), ``distill`` (teach the
UniLM student the encoder's similarities), ``evaluate`` (Spearman table and
probes), and ``run_pipeline``, which chains them with each stage's output kept
in its own folder. Each function reads its data, builds the stage's objective
and batches, and hands them to the one training loop.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import compat  # noqa: F401  (must precede tensorflow)
from . import batches, checkpoints, evaluation, losses, readers, training
from .errors import RoformerSimError
from .io import write_text_atomic
from .model import SimModel, make_tokenizer
from .objectives import DistillObjective, SupervisedObjective


@dataclass
class SupervisedSettings:
    """The supervised stage's own settings (defaults: train/supervised.py)."""

    objective: str = "concat"
    features: Sequence[str] = losses.DEFAULT_FEATURES
    heads: str = "shared"
    batch_size: int = 192
    maxlen: int = 64
    dropout_rate: float = 0.2
    attention_dropout_rate: Optional[float] = None  # None: the config's attention_probs_dropout_prob
    tasks: Sequence[str] = readers.DEFAULT_TASKS
    splits: Sequence[str] = readers.DEFAULT_SPLITS
    thresholds: Optional[dict] = None
    skip_bad_lines: bool = False
    bucket: int = 16
    pad_to: int = 1


@dataclass
class DistillSettings:
    """The distillation stage's own settings (defaults: train/stage2.py)."""

    similarity_weight: float = 100.0
    batch_size: int = 96
    maxlen: int = 64
    dropout_rate: float = 0.2
    attention_dropout_rate: Optional[float] = None  # None: the config's attention_probs_dropout_prob
    skip_bad_lines: bool = False
    labeled_splits: Sequence[str] = readers.DEFAULT_SPLITS
    bucket: int = 1
    pad_to: int = 1


# Batching, for both stages (see batches._Batches): ``bucket=K`` sorts the samples of
# K consecutive batches by length and deals them out again, so batches carry
# little padding. The supervised loss has no in-batch term, so there bucketing
# only regroups samples within K steps; it is the default (bucket=16: about 2x
# the steps/s of reference batching, docs/PERFORMANCE.md; bucket=1 is the
# reference). Distillation's similarity matrix compares the rows of a batch,
# so bucketing would change its objective: off by default. ``pad_to=N`` rounds
# batch lengths up to a multiple of N (few shapes for an XLA step; the CLI
# uses 16 with --xla).


def _report(reports, log=print) -> None:
    """Print the files with skipped lines (missing files are logged by ``data``)."""
    for r in reports:
        if r.bad or getattr(r, "unlabeled", 0):
            log(r.summary())


def _evaluator(eval_dir, split: str, tasks, skip_bad_lines: bool):
    if eval_dir is None:
        return None
    return evaluation.SimilarityEvaluator.from_dir(eval_dir, split=split, tasks=tasks, skip_bad_lines=skip_bad_lines)


def supervised(
    checkpoint: str | os.PathLike,
    train_config: training.TrainConfig,
    data_dir: Optional[str | os.PathLike] = None,
    senteval_files: Sequence[str | os.PathLike] = (),
    nli_files: Sequence[str | os.PathLike] = (),
    settings: SupervisedSettings = SupervisedSettings(),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
) -> training.TrainResult:
    """Fine-tune ``checkpoint`` Sentence-BERT style; the encoder lands in ``train_config.out_dir``."""
    corpus = readers.load_supervised_data(
        data_dir,
        senteval_files=senteval_files,
        nli_files=nli_files,
        tasks=settings.tasks,
        splits=settings.splits,
        thresholds=settings.thresholds,
        maxlen=settings.maxlen,
        skip_bad_lines=settings.skip_bad_lines,
    )
    _report(corpus.reports)
    print(f"supervised data: {len(corpus.binary)} binary pairs, {len(corpus.nli)} NLI pairs")
    objective = SupervisedObjective(
        checkpoint, settings.objective, settings.features, settings.heads, settings.dropout_rate, train_config.seed,
        attention_dropout_rate=settings.attention_dropout_rate,
    )
    tokenizer = _tokenizer(checkpoint)
    stream = batches.SupervisedBatches.from_data(
        corpus, tokenizer, batch_size=settings.batch_size, maxlen=settings.maxlen, seed=train_config.seed,
        bucket=settings.bucket, pad_to=settings.pad_to,
    )
    evaluator = _evaluator(eval_dir, eval_split, settings.tasks, settings.skip_bad_lines)
    record = {"stage": "supervised", "checkpoint": str(checkpoint), "data": str(data_dir), **_plain(settings)}
    return training.train(objective, stream, train_config, evaluator=evaluator, settings=record)


def distill(
    teacher: str | os.PathLike,
    student: str | os.PathLike,
    train_config: training.TrainConfig,
    pair_files: Sequence[str | os.PathLike] = (),
    labeled_dir: Optional[str | os.PathLike] = None,
    settings: DistillSettings = DistillSettings(),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
) -> training.TrainResult:
    """Distil ``teacher``'s similarities into the UniLM ``student``; the student lands in ``out_dir``."""
    pairs = readers.load_distill_pairs(
        pair_files,
        labeled_dir=labeled_dir,
        splits=settings.labeled_splits,
        maxlen=settings.maxlen,
        skip_bad_lines=settings.skip_bad_lines,
    )
    _report(pairs.reports)
    print(f"distillation data: {len(pairs.groups)} groups of similar texts")
    objective = DistillObjective(teacher, student, settings.similarity_weight, settings.dropout_rate,
                                 attention_dropout_rate=settings.attention_dropout_rate)
    stream = batches.DistillBatches.from_data(
        pairs, _tokenizer(student), batch_size=settings.batch_size, maxlen=settings.maxlen, seed=train_config.seed,
        bucket=settings.bucket, pad_to=settings.pad_to,
    )
    evaluator = _evaluator(eval_dir, eval_split, readers.DEFAULT_TASKS, settings.skip_bad_lines)
    record = {"stage": "distill", "teacher": str(teacher), "student": str(student), **_plain(settings)}
    return training.train(objective, stream, train_config, evaluator=evaluator, settings=record)


@dataclass
class Evaluation:
    """An evaluation's result, its probe rows, and the JSON document written (if any)."""

    result: evaluation.EvalResult
    probes: list = field(default_factory=list)
    document: Optional[dict] = None


def evaluate(
    checkpoint: str | os.PathLike,
    data_dir: Optional[str | os.PathLike],
    split: str = "test",
    tasks: Sequence[str] = evaluation.TASKS,
    batch_size: int = 64,
    json_out: Optional[str | os.PathLike] = None,
    probes: bool = False,
    skip_bad_lines: bool = False,
    name: Optional[str] = None,
    show_progress_bar: Optional[bool] = None,
) -> Evaluation:
    """Spearman × 100 per task of ``checkpoint`` on ``data_dir``'s ``split`` files (+ probes)."""
    model = SimModel.load(checkpoint)
    name = name or Path(checkpoint).name
    if data_dir is not None:
        hint = " (try --split valid)" if split == "test" else ""
        try:
            loaded = evaluation.load_eval_tasks(data_dir, split, tasks, skip_bad_lines)
        except RoformerSimError as e:
            if "no data files" not in str(e):
                raise
            loaded = None
        if loaded is None or not loaded.rows:
            raise RoformerSimError(f"{data_dir}: no {split} file for any of {', '.join(tasks)}{hint}")
        _report(loaded.reports)
        evaluator = evaluation.SimilarityEvaluator(
            loaded.rows, batch_size=batch_size, name=name, missing=loaded.missing,
            files=loaded.files, show_progress_bar=show_progress_bar,
        )
        result = evaluator(model)
    else:
        loaded, result = None, evaluation.EvalResult(name, {}, [])
    out = Evaluation(result, evaluation.run_probes(model, batch_size=batch_size) if probes else [])
    if json_out is not None:
        files = checkpoints.resolve(checkpoint)
        ckpt_fp = evaluation.fingerprint_files([files.config, files.vocab, *Path(files.prefix).parent.glob(Path(files.prefix).name + ".*")])
        data_fp = evaluation.fingerprint_files(loaded.files) if loaded else None
        extra = {"checkpoint": str(checkpoint), "split": split}
        if out.probes:
            extra["probes"] = [row._asdict() for row in out.probes]
        text = evaluation.to_json(result, ckpt_fp, data_fp, **extra)
        write_text_atomic(json_out, text + "\n")
        out.document = json.loads(text)
    return out


def run_pipeline(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    supervised_config: training.TrainConfig,
    distill_config: training.TrainConfig,
    supervised_settings: SupervisedSettings = SupervisedSettings(),
    distill_settings: DistillSettings = DistillSettings(),
    pair_files: Sequence[str | os.PathLike] = (),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
    synonyms_of: Sequence[str] = (),
) -> dict:
    """Supervised stage → distillation → export → evaluation (+ generated synonyms).

    Outputs, each kept: ``OUT/supervised`` (the -ft encoder), ``OUT/distilled``
    (the UniLM student, released layout), ``OUT/export`` (the student re-exported
    and verified), ``OUT/evaluation.json``. ``*_config.out_dir`` are overridden.
    Distillation pairs: ``pair_files`` and the positive pairs of ``data_dir``.
    """
    out_dir = Path(out_dir)
    stage_dirs = {name: out_dir / name for name in ("supervised", "distilled", "export")}
    supervised_config.out_dir = str(stage_dirs["supervised"])
    distill_config.out_dir = str(stage_dirs["distilled"])
    print(f"== 1/4 supervised stage: {checkpoint} -> {stage_dirs['supervised']}")
    supervised(checkpoint, supervised_config, data_dir, settings=supervised_settings)
    print(f"== 2/4 distillation: teacher {stage_dirs['supervised']}, student {checkpoint} -> {stage_dirs['distilled']}")
    distill(stage_dirs["supervised"], checkpoint, distill_config, pair_files, data_dir, distill_settings)
    print(f"== 3/4 export in the released layout -> {stage_dirs['export']}")
    SimModel.load(stage_dirs["distilled"]).save(stage_dirs["export"])
    print("== 4/4 evaluation")
    evaluations = {}
    for name in ("supervised", "export"):
        evaluations[name] = evaluate(stage_dirs[name], eval_dir or data_dir, split=eval_split, name=name,
                                     probes=name == "export", show_progress_bar=False)
    table = evaluation.format_table([e.result for e in evaluations.values()])
    print(table)
    print(evaluation.format_probes(evaluations["export"].probes))
    summary = {
        "checkpoint": str(checkpoint),
        "data": str(data_dir),
        "outputs": {k: str(v) for k, v in stage_dirs.items()},
        "evaluation": {k: e.result.as_dict() for k, e in evaluations.items()},
        "probes": [row._asdict() for row in evaluations["export"].probes],
    }
    if synonyms_of:
        student = SimModel.load(stage_dirs["export"])
        summary["synonyms"] = {}
        for text in synonyms_of:
            found = student.gen_synonyms(text, n=20, k=5, seed=0)
            summary["synonyms"][text] = found
            print(f"gen_synonyms({text!r}): {found}")
    write_text_atomic(out_dir / "evaluation.json", json.dumps(summary, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
    summary["table"] = table
    return summary


def _tokenizer(checkpoint: str | os.PathLike):
    """The checkpoint's tokenizer, without building its model."""
    files = checkpoints.resolve(checkpoint)
    config = checkpoints.read_config(files.config)
    return make_tokenizer(checkpoints.read_vocab(files.vocab, config["vocab_size"]))


def _plain(settings) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()}
