"""The recipe's stages as plain functions: what the CLI, the demo and the examples call.

``pretrain`` (stage 1: make a RoFormer-Sim from a RoFormer), ``supervised``
(fine-tune an encoder on labelled pairs), ``distill`` (teach the UniLM student
the encoder's similarities), ``evaluate`` (Spearman table and probes), and
``run_pipeline``, which chains them with each stage's output kept in its own
folder. Each stage function reads its data, builds the stage's
objective and batches, and hands them to the one training loop; the stage's
values come from its settings (:mod:`roformer_sim_ft.settings`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from .data import batches, readers
from . import checkpoints, evaluation, training
from .training import distribute, resume, states
from .fs import folders as outputs
from .errors import NoDataFiles, NothingToDo, RoformerSimError
from .fs.atomic import write_text_atomic
from .fs.digest import fingerprint_files
from .model.sim_model import SimModel, make_tokenizer
from .training.objectives import DistillObjective, Stage1Objective, SupervisedObjective
from .settings import DistillSettings, Stage1Settings, StageSettings, SupervisedSettings, TrainConfig, parse_weights

__all__ = ["pretrain", "supervised", "distill", "evaluate", "run_pipeline", "Evaluation",
           "Stage1Settings", "SupervisedSettings", "DistillSettings", "TrainConfig"]


def _report(reports, log=print) -> None:
    """Print the files with skipped lines (missing files are logged by ``readers``)."""
    for r in reports:
        if r.bad or r.unlabeled:
            log(r.summary())


def _weighted(pairs, weights) -> str:
    """The data line's note on interleaved sources."""
    return f" from {len(pairs.sizes)} sources weighted {','.join(map(str, weights))}" if weights else ""


def _check_sources(pair_files, labeled_dir, sizes, weights) -> None:
    """Interleaving weights need every source to give pairs: one line naming the first empty one."""
    sources = [*map(str, pair_files), *([str(labeled_dir)] if labeled_dir is not None else [])]
    empty = [source for source, size in zip(sources, sizes) if size == 0]
    if weights and empty:
        raise RoformerSimError(f"{empty[0]}: no usable pairs, yet one of the {len(sources)} sources weighted "
                               f"{','.join(map(str, weights))}: drop it and its weight")


def _evaluator(eval_dir, split: str, tasks, skip_bad_lines: bool, training_files, allow_overlap: bool):
    """The periodic evaluator, refusing evaluation files that are also training files."""
    if eval_dir is None:
        return None
    evaluator = evaluation.SimilarityEvaluator.from_dir(eval_dir, split=split, tasks=tasks, skip_bad_lines=skip_bad_lines)
    overlap = readers.overlapping_files(training_files, evaluator.files)
    if overlap and not allow_overlap:
        train_file, eval_file = overlap[0]
        same = "is" if Path(train_file).resolve() == Path(eval_file).resolve() else f"has the content of training file {train_file} and is"
        raise RoformerSimError(
            f"{eval_file} {same} used for training and for selecting the model: train on other splits "
            f"(e.g. --splits train), evaluate another split, or pass --allow-eval-overlap"
        )
    return evaluator


def _attention_dropout(settings: StageSettings, checkpoint) -> float:
    """The attention-probability dropout the stage builds: the setting, or (None) the checkpoint config's."""
    if settings.attention_dropout_rate is not None:
        return settings.attention_dropout_rate
    config = checkpoints.read_config(checkpoints.resolve(checkpoint).config)
    return float(config.get("attention_probs_dropout_prob") or 0.0)


def _train_stage(objective, stream, settings: StageSettings, train_config: TrainConfig, reports, eval_dir,
                 eval_split: str, tasks, allow_eval_overlap: bool, record: dict,
                 model_checkpoint, inputs: dict) -> training.TrainResult:
    """What every stage shares: the stage's optimiser values, the evaluator, the run record, the loop.

    The record holds the attention-dropout setting (None: the config's) and
    the rate the model was built with (``attention_dropout_used``), so run.json
    tells which recipe made it. ``inputs`` (``{flag: path}``) must not lie inside the
    output folder.
    """
    config = replace(
        train_config,
        learning_rate=settings.learning_rate if train_config.learning_rate is None else train_config.learning_rate,
        weight_decay=settings.weight_decay if train_config.weight_decay is None else train_config.weight_decay,
    )
    evaluator = _evaluator(eval_dir, eval_split, tasks, settings.skip_bad_lines, [r.path for r in reports],
                           allow_eval_overlap)
    fingerprint = fingerprint_files([r.path for r in reports])  # resume refuses other data of the same size
    recorded = {**record, **settings.as_record(), "data_fingerprint": fingerprint,
                "attention_dropout_used": _attention_dropout(settings, model_checkpoint)}
    return training.train(objective, stream, config, evaluator=evaluator, settings=recorded, inputs=inputs)


def supervised(
    checkpoint: str | os.PathLike,
    train_config: TrainConfig,
    data_dir: Optional[str | os.PathLike] = None,
    senteval_files: Sequence[str | os.PathLike] = (),
    nli_files: Sequence[str | os.PathLike] = (),
    settings: SupervisedSettings = SupervisedSettings(),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
    allow_eval_overlap: bool = False,
) -> training.TrainResult:
    """Fine-tune ``checkpoint`` Sentence-BERT style; the encoder lands in ``train_config.out_dir``."""
    settings.validate()
    inputs = {"--checkpoint": checkpoint}
    training.check_out_dir(train_config, inputs)
    corpus = readers.load_supervised_data(
        data_dir, senteval_files=senteval_files, nli_files=nli_files, tasks=settings.tasks, splits=settings.splits,
        thresholds=settings.thresholds, maxlen=settings.maxlen, skip_bad_lines=settings.skip_bad_lines,
    )
    _report(corpus.reports)
    print(f"supervised data: {len(corpus.binary)} binary pairs, {len(corpus.nli)} NLI pairs")
    objective = SupervisedObjective(
        checkpoint, settings.objective, settings.features, settings.heads, settings.dropout_rate, train_config.seed,
        attention_dropout_rate=settings.attention_dropout_rate,
    )
    stream = batches.SupervisedBatches.from_data(
        corpus, _tokenizer(checkpoint), batch_size=settings.batch_size, maxlen=settings.maxlen,
        seed=train_config.seed, bucket=settings.bucket, pad_to=settings.pad_to,
    )
    record = {"stage": "supervised", "checkpoint": str(checkpoint), "data": str(data_dir)}
    return _train_stage(objective, stream, settings, train_config, corpus.reports, eval_dir, eval_split,
                        settings.tasks, allow_eval_overlap, record, checkpoint, inputs)


def distill(
    teacher: str | os.PathLike,
    student: str | os.PathLike,
    train_config: TrainConfig,
    pair_files: Sequence[str | os.PathLike] = (),
    labeled_dir: Optional[str | os.PathLike] = None,
    settings: DistillSettings = DistillSettings(),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
    allow_eval_overlap: bool = False,
) -> training.TrainResult:
    """Distil ``teacher``'s similarities into the UniLM ``student``; the student lands in ``out_dir``."""
    settings.validate()
    inputs = {"--teacher": teacher, "--student": student}
    training.check_out_dir(train_config, inputs)
    pairs = readers.load_distill_pairs(
        pair_files, labeled_dir=labeled_dir, splits=settings.labeled_splits, maxlen=settings.maxlen,
        skip_bad_lines=settings.skip_bad_lines,
    )
    weights = parse_weights(settings.weights, len(pairs.sizes))
    _report(pairs.reports)
    _check_sources(pair_files, labeled_dir, pairs.sizes, weights)
    print(f"distillation data: {len(pairs.groups)} groups of similar texts" + _weighted(pairs, weights))
    objective = DistillObjective(teacher, student, settings.similarity_weight, settings.dropout_rate,
                                 attention_dropout_rate=settings.attention_dropout_rate)
    stream = batches.DistillBatches.from_data(
        pairs, _tokenizer(student), weights=weights, batch_size=settings.batch_size, maxlen=settings.maxlen,
        seed=train_config.seed, bucket=settings.bucket, pad_to=settings.pad_to,
    )
    record = {"stage": "distill", "teacher": str(teacher), "student": str(student),
              "teacher_fingerprint": checkpoint_fingerprint(teacher)}  # resume refuses another teacher
    return _train_stage(objective, stream, settings, train_config, pairs.reports, eval_dir, eval_split,
                        readers.DEFAULT_TASKS, allow_eval_overlap, record, student, inputs)


def pretrain(
    checkpoint: str | os.PathLike,
    train_config: TrainConfig,
    pair_files: Sequence[str | os.PathLike] = (),
    labeled_dir: Optional[str | os.PathLike] = None,
    settings: Stage1Settings = Stage1Settings(),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
    allow_eval_overlap: bool = False,
) -> training.TrainResult:
    """Stage 1: train ``checkpoint`` (a RoFormer, or a RoFormer-Sim) into a RoFormer-Sim; it lands in ``out_dir``.

    Pairs of similar texts from ``pair_files`` and/or the positives of
    ``labeled_dir``, interleaved by ``settings.weights``. A pooler or MLM head
    the checkpoint lacks is initialised, and the variables are named on stdout.
    """
    settings.validate()
    inputs = {"--checkpoint": checkpoint}
    training.check_out_dir(train_config, inputs)
    pairs = readers.load_distill_pairs(
        pair_files, labeled_dir=labeled_dir, splits=settings.labeled_splits, maxlen=settings.maxlen,
        skip_bad_lines=settings.skip_bad_lines,
    )
    weights = parse_weights(settings.weights, len(pairs.sizes))
    _report(pairs.reports)
    _check_sources(pair_files, labeled_dir, pairs.sizes, weights)
    print(f"stage-1 data: {len(pairs.groups)} groups of similar texts" + _weighted(pairs, weights))
    objective = Stage1Objective(checkpoint, settings.similarity_scale, settings.dropout_rate,
                                attention_dropout_rate=settings.attention_dropout_rate)
    if objective.initialised:
        print(f"{checkpoint} lacks {len(objective.initialised)} variables, initialised (truncated normal 0.02, "
              f"LayerNorm 1/0, biases 0): {', '.join(objective.initialised)}")
    stream = batches.Stage1Batches.from_data(
        pairs, _tokenizer(checkpoint), weights=weights, batch_size=settings.batch_size, maxlen=settings.maxlen,
        seed=train_config.seed, bucket=settings.bucket, pad_to=settings.pad_to,
    )
    record = {"stage": "pretrain", "checkpoint": str(checkpoint), "initialised": objective.initialised}
    return _train_stage(objective, stream, settings, train_config, pairs.reports, eval_dir, eval_split,
                        readers.DEFAULT_TASKS, allow_eval_overlap, record, checkpoint, inputs)


@dataclass
class Evaluation:
    """An evaluation's result and its probe rows."""

    result: evaluation.EvalResult
    probes: list = field(default_factory=list)


def evaluate(
    checkpoint: str | os.PathLike,
    data_dir: Optional[str | os.PathLike],
    split: str = "test",
    tasks: Sequence[str] = readers.DEFAULT_TASKS,
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
    loaded = None
    if data_dir is not None:
        hint = " (try --split valid)" if split == "test" else ""
        try:
            loaded = evaluation.load_eval_tasks(data_dir, split, tasks, skip_bad_lines)
        except NoDataFiles:
            loaded = None
        if loaded is None or not loaded.rows:
            raise RoformerSimError(f"{data_dir}: no {split} file for any of {', '.join(tasks)}{hint}")
        _report(loaded.reports)
        _check_labels_vary(loaded, split)
        evaluator = evaluation.SimilarityEvaluator(
            loaded.rows, batch_size=batch_size, name=name, missing=loaded.missing,
            files=loaded.files, show_progress_bar=show_progress_bar,
        )
        result = evaluator(model)
    else:
        result = evaluation.EvalResult(name, {}, [])
    out = Evaluation(result, evaluation.run_probes(model, batch_size=batch_size) if probes else [])
    if json_out is not None:
        files = checkpoints.resolve(checkpoint)
        ckpt_fp = fingerprint_files([files.config, files.vocab, *Path(files.prefix).parent.glob(Path(files.prefix).name + ".*")])
        data_fp = fingerprint_files(loaded.files) if loaded else None
        extra = {"checkpoint": str(checkpoint), "split": split}
        if out.probes:
            extra["probes"] = [row._asdict() for row in out.probes]
        write_text_atomic(json_out, evaluation.to_json(result, ckpt_fp, data_fp, **extra) + "\n")
    return out


def _check_labels_vary(loaded, split: str) -> None:
    """Spearman is undefined when a task's labels are all equal: say so per task, and stop if no task is left."""
    constant = {task: rows[0][2] for task, rows in loaded.rows.items() if rows and len({r[2] for r in rows}) == 1}
    if constant and len(constant) == len(loaded.rows):
        task, label = next(iter(constant.items()))
        raise RoformerSimError(f"{task} {split}: all {len(loaded.rows[task])} labels are {label:g}: "
                               "Spearman correlation is undefined (nothing to rank)")
    for task, label in constant.items():
        print(f"warning: {task} {split}: all {len(loaded.rows[task])} labels are {label:g}: its Spearman is undefined (nan)")


PIPELINE_STAGES = ("pretrained", "supervised", "distilled", "export")


def run_pipeline(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    supervised_config: TrainConfig = TrainConfig(),
    distill_config: TrainConfig = TrainConfig(),
    supervised_settings: SupervisedSettings = SupervisedSettings(),
    distill_settings: DistillSettings = DistillSettings(),
    pair_files: Sequence[str | os.PathLike] = (),
    eval_dir: Optional[str | os.PathLike] = None,
    eval_split: str = "valid",
    synonyms_of: Sequence[str] = (),
    allow_eval_overlap: bool = False,
    pretrain_files: Sequence[str | os.PathLike] = (),
    pretrain_config: TrainConfig = TrainConfig(),
    pretrain_settings: Stage1Settings = Stage1Settings(),
) -> dict:
    """[Stage 1 →] supervised stage → distillation → export → evaluation (+ generated synonyms).

    ``out_dir`` must be new, empty or an earlier pipeline output (a stage
    folder holding a run needs ``overwrite`` or ``resume`` in its config,
    ``OUT/export`` ``distill_config.overwrite`` or ``resume``), and no stage folder may hold ``checkpoint``:
    all checked before the first stage starts. Outputs, each
    kept: ``OUT/pretrained`` (stage 1, only with ``pretrain_files``: pairs of
    similar texts; then ``checkpoint`` may be a plain RoFormer and the later
    stages start from this output), ``OUT/supervised`` (the -ft encoder),
    ``OUT/distilled`` (the UniLM student, released layout), ``OUT/export`` (the
    student re-exported and verified), ``OUT/evaluation.json``. Each stage's
    ``out_dir`` is set here (the configs given are not changed). Distillation
    pairs: ``pair_files`` and the positive pairs of ``data_dir``. With ``resume``
    in the configs, a stage whose run is finished is kept, one that was stopped is
    continued, and the others run; export and evaluation run again. The final
    evaluation reads ``eval_split`` of ``eval_dir`` (default ``data_dir``),
    which must not be a training file unless ``allow_eval_overlap``.
    """
    if distribute.role().multi_worker:
        raise RoformerSimError(f"the pipeline runs on one machine; under a multi-worker {distribute.ENV} run its "
                               "stages one by one (train, distill: docs/SCALING.md)")
    for settings in (supervised_settings, distill_settings, *([pretrain_settings] if pretrain_files else [])):
        settings.validate()  # every stage's values before the first stage runs
    out_dir = outputs.real_path(out_dir)
    dirs = {name: out_dir / name for name in PIPELINE_STAGES}
    eval_dir = eval_dir or data_dir
    outputs.check_folder_target(out_dir, ("pipeline", "demo"), "pipeline output")
    stage_configs = {"pretrained": pretrain_config, "supervised": supervised_config, "distilled": distill_config}
    for name, folder in dirs.items():  # every stage's folder, before hours of training
        outputs.check_not_input(folder, {"--checkpoint": checkpoint})
        if name in stage_configs and (name != "pretrained" or pretrain_files):
            training.check_out_dir(replace(stage_configs[name], out_dir=str(folder)))
    outputs.check_folder_target(dirs["export"], ("ckpt",), "checkpoint")
    replace_export = distill_config.overwrite or distill_config.resume  # the run's own export, written again
    outputs.check_replace(dirs["export"], replace_export)
    outputs.ensure_folder(out_dir)
    if outputs.read_manifest(out_dir) is None:
        outputs.write_manifest(out_dir, "pipeline", [*PIPELINE_STAGES, "evaluation.json"])
    # Refuse a training/evaluation overlap before hours of training, not after.
    found = readers.find_data_files(data_dir, tasks=supervised_settings.tasks, splits=supervised_settings.splits,
                                    log_missing=False)
    _evaluator(eval_dir, eval_split, supervised_settings.tasks, True, [f.path for f in found.senteval] + found.nli,
               allow_eval_overlap)
    start, total = checkpoint, 5 if pretrain_files else 4
    number = iter(range(1, total + 1))
    if pretrain_files:
        print(f"== {next(number)}/{total} stage 1: {checkpoint} -> {dirs['pretrained']}")
        _stage(pretrain_config, dirs["pretrained"],
               lambda config: pretrain(checkpoint, config, pretrain_files, settings=pretrain_settings))
        checkpoint = dirs["pretrained"]
    else:
        del dirs["pretrained"]
    print(f"== {next(number)}/{total} supervised stage: {checkpoint} -> {dirs['supervised']}")
    _stage(supervised_config, dirs["supervised"],
           lambda config: supervised(checkpoint, config, data_dir, settings=supervised_settings))
    print(f"== {next(number)}/{total} distillation: teacher {dirs['supervised']}, student {checkpoint} -> {dirs['distilled']}")
    _stage(distill_config, dirs["distilled"],
           lambda config: distill(dirs["supervised"], checkpoint, config, pair_files, data_dir, distill_settings))
    print(f"== {next(number)}/{total} export in the released layout -> {dirs['export']}")
    SimModel.load(dirs["distilled"]).save(dirs["export"], overwrite=replace_export)
    print(f"== {next(number)}/{total} evaluation")
    evaluations = {}
    for name in ("supervised", "export"):
        evaluations[name] = evaluate(dirs[name], eval_dir, split=eval_split, name=name,
                                     probes=name == "export", show_progress_bar=False)
    table = evaluation.format_table([e.result for e in evaluations.values()])
    print(table)
    print(evaluation.format_probes(evaluations["export"].probes))
    summary = {
        "checkpoint": str(start),
        "data": str(data_dir),
        "outputs": {k: str(v) for k, v in dirs.items()},
        "evaluation": {k: e.result.as_dict() for k, e in evaluations.items()},
        "probes": [row._asdict() for row in evaluations["export"].probes],
    }
    if synonyms_of:
        student = SimModel.load(dirs["export"])
        summary["synonyms"] = {}
        for text in synonyms_of:
            found = student.gen_synonyms(text, n=20, k=5, seed=0)
            summary["synonyms"][text] = found
            print(f"gen_synonyms({text!r}): {found}")
    write_text_atomic(out_dir / "evaluation.json", json.dumps(summary, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
    summary["table"] = table
    return summary


def checkpoint_fingerprint(checkpoint: str | os.PathLike) -> str:
    """Short hash of a checkpoint's config, vocab and weight index (the index holds every tensor's
    checksum): another model, or other weights, give another value, at the cost of reading small files."""
    files = checkpoints.resolve(checkpoint)
    return fingerprint_files([files.config, files.vocab, Path(str(files.prefix) + ".index")])


def _stage(config: TrainConfig, folder: Path, run) -> None:
    """``run(config)`` with the stage's ``out_dir``; under ``resume``, a stage folder without a
    state is started, one with an unfinished run continued, and a finished run kept."""
    if config.resume and not config.overwrite and states.latest_state(folder) is None:  # (validate refuses both)
        config = replace(config, resume=False)
    try:
        run(replace(config, out_dir=str(folder)))
    except NothingToDo:
        print(f"   kept {folder}: its run is finished at step {resume.finished_at(folder)}")


def _tokenizer(checkpoint: str | os.PathLike):
    """The checkpoint's tokenizer, without building its model."""
    files = checkpoints.resolve(checkpoint)
    config = checkpoints.read_config(files.config)
    return make_tokenizer(checkpoints.read_vocab(files.vocab, config["vocab_size"]))
