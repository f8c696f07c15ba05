"""Data for both training stages: readers, validation, folder discovery, batching.

Readers turn user files into small frozen records and validate every line at
the boundary. A bad line (wrong column count, label not a number or out of
range, empty text, invalid UTF-8, bad JSON, missing key) raises
:class:`~roformer_sim_ft.errors.RoformerSimError` naming ``path:line`` and what
is wrong; with ``skip_bad_lines=True`` the line is skipped instead and counted
in the file's :class:`FileReport`, so nothing is dropped silently.

Batch makers (:class:`SupervisedBatches`, :class:`DistillBatches`) hold no
model: they only tokenize and pad. Their sampling is a pure function of
``(seed, batch index)``, so the resumable state is one counter, and
``dataset()`` can prefetch freely: the training loop calls ``advance(n)`` for
the ``n`` batches it has actually consumed and saves ``state()``.

Defaults follow the reference scripts ``train/supervised.py`` and
``train/stage2.py`` of ZhuiyiTechnology/roformer-sim (see REFERENCE.md).
"""
from __future__ import annotations

from . import compat  # noqa: F401  (must precede tensorflow / bert4keras)

import copy
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
from bert4keras.snippets import sequence_padding, text_segmentate, truncate_sequences

from .errors import RoformerSimError

__all__ = [
    "MAXLEN", "DEFAULT_TASKS", "OPTIONAL_TASKS", "DEFAULT_SPLITS", "NLI_LABELS",
    "TaskSpec", "LabeledPair", "ScoredPair", "SynonymGroup", "FileReport",
    "SentevalFile", "DataFiles", "SupervisedData", "DistillData",
    "task_spec", "task_from_filename", "cut_text",
    "read_senteval", "read_senteval_scored", "read_nli", "read_synonyms",
    "find_data_files", "load_supervised_data", "positive_pairs", "load_distill_pairs",
    "SupervisedBatches", "DistillBatches", "sample_data_dir",
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

MAXLEN = 64
DEFAULT_TASKS: tuple[str, ...] = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
OPTIONAL_TASKS: tuple[str, ...] = ("SOHU21-SSB",)  # used when present, never reported missing
DEFAULT_SPLITS: tuple[str, ...] = ("train", "valid")  # the reference trains on both
NLI_LABELS: dict[str, int] = {"contradiction": 2, "entailment": 3, "neutral": 4}
ENTAILMENT = NLI_LABELS["entailment"]
SEPS = "\n。！？!?；;，, "
STRIPS = "；;，, "
MAX_REPORTED_ERRORS = 20

# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class TaskSpec:
    """How a senteval_cn task's score is read: valid range and binarisation threshold."""

    name: str
    threshold: float
    score_range: tuple[float, float]


@dataclass(frozen=True)
class LabeledPair:
    """A training pair. label: 0/1 for binary tasks, 2/3/4 for NLI (contradiction/entailment/neutral)."""

    text1: str
    text2: str
    label: int


@dataclass(frozen=True)
class ScoredPair:
    """A pair with its score as written in the file (STS-B keeps 0..5), for evaluation."""

    text1: str
    text2: str
    score: float


@dataclass(frozen=True)
class SynonymGroup:
    """Texts that mean the same thing, for distillation.

    ``ordered=False`` ({"text", "synonyms"} lines): two texts are drawn at random
    on every visit, as stage2.py's ``np.random.permutation([text] + synonyms)[:2]``.
    ``ordered=True`` ({"text_a", "text_b"} lines, labelled positives): exactly two
    texts, used in the given order.
    """

    texts: tuple[str, ...]
    ordered: bool = False


@dataclass
class FileReport:
    """What reading one file gave: lines kept, bad lines skipped, unlabelled NLI lines skipped."""

    path: str
    kept: int = 0
    bad: int = 0
    unlabeled: int = 0  # NLI gold_label outside the three classes (e.g. '-'): skipped by design
    errors: list[str] = field(default_factory=list)  # the first MAX_REPORTED_ERRORS bad-line messages

    def summary(self) -> str:
        """One line for the CLI, e.g. ``a.data: 100 kept, 2 bad lines skipped``."""
        parts = [f"{self.kept} kept"]
        if self.bad:
            parts.append(f"{self.bad} bad lines skipped")
        if self.unlabeled:
            parts.append(f"{self.unlabeled} without a gold label skipped")
        return f"{self.path}: " + ", ".join(parts)


@dataclass(frozen=True)
class SentevalFile:
    """A senteval_cn file found in a data folder."""

    path: Path
    task: str
    split: str


@dataclass
class DataFiles:
    """The files a data folder holds, and what was looked for but not found."""

    senteval: list[SentevalFile]
    nli: list[Path]
    missing: list[str]


@dataclass
class SupervisedData:
    """Everything the supervised stage reads: binary pairs, NLI pairs, per-file reports."""

    binary: list[LabeledPair]
    nli: list[LabeledPair]
    reports: list[FileReport]
    missing: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Bad lines skipped over all files."""
        return sum(r.bad for r in self.reports)


@dataclass
class DistillData:
    """Everything the distillation stage reads: synonym groups and per-file reports."""

    groups: list[SynonymGroup]
    reports: list[FileReport]
    missing: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Bad lines skipped over all files."""
        return sum(r.bad for r in self.reports)


# ---------------------------------------------------------------- helpers


def task_spec(task: str | None, threshold: float | None = None,
              score_range: tuple[float, float] | None = None) -> TaskSpec:
    """The reference's label rule for a task: STS-B scores 0..5 cut at 2.5, others 0/1 cut at 0.5."""
    name = task or "?"
    if name.upper() == "STS-B":
        spec = TaskSpec(name, 2.5, (0.0, 5.0))
    else:
        spec = TaskSpec(name, 0.5, (0.0, 1.0))
    if threshold is not None:
        spec = TaskSpec(spec.name, float(threshold), spec.score_range)
    if score_range is not None:
        lo, hi = score_range
        spec = TaskSpec(spec.name, spec.threshold, (float(lo), float(hi)))
    return spec


def task_from_filename(path: PathLike) -> str:
    """The task name of a senteval_cn file: the part of its name before the first dot."""
    return Path(path).name.split(".")[0]


def cut_text(text: str, maxlen: int | None = MAXLEN) -> str:
    """Cut a text like the reference: the first piece of text_segmentate at 1.2 x maxlen.

    Whitespace (and leading/trailing '；;，, ') is stripped; a U+FEFF inside the
    text is kept. ``maxlen=None`` only strips whitespace. Returns '' for a text
    with nothing left, which the readers report as an empty text.
    """
    if maxlen is None:
        return text.strip()
    pieces = text_segmentate(text, maxlen * 1.2, SEPS, STRIPS)
    return pieces[0] if pieces else ""


class _BadLine(Exception):
    """Internal: the current line is bad; carries what is wrong."""


class _LineReader:
    """Iterates a file's lines as (number, text), applying the bad-line policy."""

    def __init__(self, path: PathLike, skip_bad_lines: bool, strip_bom: bool = False):
        self.path = str(path)
        self.skip = skip_bad_lines
        self.strip_bom = strip_bom
        self.report = FileReport(self.path)

    def bad(self, lineno: int, what: str) -> None:
        msg = f"{self.path}:{lineno}: {what}"
        if not self.skip:
            raise RoformerSimError(msg)
        self.report.bad += 1
        if len(self.report.errors) < MAX_REPORTED_ERRORS:
            self.report.errors.append(msg)

    def lines(self) -> Iterator[tuple[int, str]]:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise RoformerSimError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise RoformerSimError(f"{self.path}: is a directory, expected a file") from None
        except OSError as e:
            raise RoformerSimError(f"{self.path}: cannot read ({e.strerror})") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.bad(lineno, f"invalid UTF-8 (byte {e.start})")
                    continue
                if text.endswith("\n"):
                    text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
                if lineno == 1 and self.strip_bom and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text


def _cut_or_fail(text: str, maxlen: int | None, name: str) -> str:
    cut = cut_text(text, maxlen)
    if not cut:
        raise _BadLine(f"empty {name}")
    return cut


def _parse_senteval(text: str, spec: TaskSpec, maxlen: int | None) -> tuple[str, str, float]:
    if not text.strip():
        raise _BadLine("empty line")
    try:
        fields = next(csv.reader([text], delimiter="\t", strict=True))
    except csv.Error as e:
        raise _BadLine(f"bad CSV quoting ({e})") from None
    if len(fields) != 3:
        raise _BadLine(f"expected 3 tab-separated fields (text1, text2, label), got {len(fields)}")
    raw_label = fields[2].strip()
    try:
        score = float(raw_label)
    except ValueError:
        raise _BadLine(f"label {raw_label!r} is not a number") from None
    lo, hi = spec.score_range
    if not lo <= score <= hi:  # also catches nan
        raise _BadLine(f"label {raw_label} out of range {lo:g}..{hi:g} for task {spec.name}")
    return _cut_or_fail(fields[0], maxlen, "text1"), _cut_or_fail(fields[1], maxlen, "text2"), score


def _read_senteval_rows(path: PathLike, spec: TaskSpec, maxlen: int | None,
                        skip_bad_lines: bool) -> tuple[list[tuple[str, str, float]], FileReport]:
    reader = _LineReader(path, skip_bad_lines)
    rows = []
    for lineno, text in reader.lines():
        try:
            rows.append(_parse_senteval(text, spec, maxlen))
        except _BadLine as e:
            reader.bad(lineno, str(e))
    reader.report.kept = len(rows)
    return rows, reader.report


def _json_object(text: str) -> dict:
    if not text.strip():
        raise _BadLine("empty line")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadLine(f"bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _string_field(obj: dict, key: str) -> str:
    if key not in obj:
        raise _BadLine(f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise _BadLine(f"{key!r} is not a string")
    return value


# ---------------------------------------------------------------- readers


def read_senteval(path: PathLike, *, task: str | None = None, threshold: float | None = None,
                  score_range: tuple[float, float] | None = None, maxlen: int | None = MAXLEN,
                  skip_bad_lines: bool = False) -> tuple[list[LabeledPair], FileReport]:
    """Read a senteval_cn file (``text1<TAB>text2<TAB>label``) as binary training pairs.

    Fields are parsed with a tab-delimited csv reader (quoted fields, doubled
    quotes); label -> int(float(label) > threshold). The task (named by the file
    name unless given) sets threshold and valid range: STS-B 2.5 and 0..5, any
    other 0.5 and 0..1; both can be overridden. Texts are cut with
    :func:`cut_text` at ``maxlen``.
    """
    spec = task_spec(task or task_from_filename(path), threshold, score_range)
    rows, report = _read_senteval_rows(path, spec, maxlen, skip_bad_lines)
    return [LabeledPair(a, b, int(s > spec.threshold)) for a, b, s in rows], report


def read_senteval_scored(path: PathLike, *, task: str | None = None,
                         score_range: tuple[float, float] | None = None,
                         maxlen: int | None = None,
                         skip_bad_lines: bool = False) -> tuple[list[ScoredPair], FileReport]:
    """Read a senteval_cn file keeping each score as a float (evaluation: STS-B's 0..5 as they are).

    Same validation as :func:`read_senteval`. By default texts are only
    whitespace-stripped, not cut (the evaluation protocol encodes whole texts;
    the tokenizer truncates); pass ``maxlen`` to cut as in training.
    """
    spec = task_spec(task or task_from_filename(path), None, score_range)
    rows, report = _read_senteval_rows(path, spec, maxlen, skip_bad_lines)
    return [ScoredPair(a, b, s) for a, b, s in rows], report


def read_nli(path: PathLike, *, maxlen: int | None = MAXLEN,
             skip_bad_lines: bool = False) -> tuple[list[LabeledPair], FileReport]:
    """Read CNSD-style NLI jsonl ``{"sentence1", "sentence2", "gold_label"}``.

    contradiction/entailment/neutral -> 2/3/4. Any other gold_label (CNSD's '-')
    is skipped, as in the reference, and counted in ``report.unlabeled``.
    A U+FEFF at the very start of the file is ignored (JSON cannot start with it).
    """
    reader = _LineReader(path, skip_bad_lines, strip_bom=True)
    pairs = []
    for lineno, text in reader.lines():
        try:
            obj = _json_object(text)
            s1, s2 = _string_field(obj, "sentence1"), _string_field(obj, "sentence2")
            gold = _string_field(obj, "gold_label")
            if gold not in NLI_LABELS:
                reader.report.unlabeled += 1
                continue
            pairs.append(LabeledPair(_cut_or_fail(s1, maxlen, "sentence1"),
                                     _cut_or_fail(s2, maxlen, "sentence2"), NLI_LABELS[gold]))
        except _BadLine as e:
            reader.bad(lineno, str(e))
    reader.report.kept = len(pairs)
    return pairs, reader.report


def read_synonyms(path: PathLike, *, maxlen: int | None = MAXLEN,
                  skip_bad_lines: bool = False) -> tuple[list[SynonymGroup], FileReport]:
    """Read distillation pairs: jsonl lines ``{"text", "synonyms": [...]}`` or ``{"text_a", "text_b"}``.

    Both kinds may be mixed in one file. ``synonyms`` must be a non-empty list
    of strings; every text must be non-empty after :func:`cut_text`.
    """
    reader = _LineReader(path, skip_bad_lines, strip_bom=True)
    groups = []
    for lineno, text in reader.lines():
        try:
            obj = _json_object(text)
            if "text" in obj or "synonyms" in obj:
                first = _cut_or_fail(_string_field(obj, "text"), maxlen, "'text'")
                if "synonyms" not in obj:
                    raise _BadLine("missing key 'synonyms'")
                syns = obj["synonyms"]
                if not isinstance(syns, list) or not syns:
                    raise _BadLine("'synonyms' must be a non-empty list of strings")
                texts = [first]
                for i, s in enumerate(syns):
                    if not isinstance(s, str):
                        raise _BadLine(f"'synonyms'[{i}] is not a string")
                    texts.append(_cut_or_fail(s, maxlen, f"'synonyms'[{i}]"))
                groups.append(SynonymGroup(tuple(texts), ordered=False))
            elif "text_a" in obj or "text_b" in obj:
                a = _cut_or_fail(_string_field(obj, "text_a"), maxlen, "'text_a'")
                b = _cut_or_fail(_string_field(obj, "text_b"), maxlen, "'text_b'")
                groups.append(SynonymGroup((a, b), ordered=True))
            else:
                raise _BadLine("expected keys 'text' and 'synonyms', or 'text_a' and 'text_b'")
        except _BadLine as e:
            reader.bad(lineno, str(e))
    reader.report.kept = len(groups)
    return groups, reader.report


# ---------------------------------------------------------------- folders


def _split_files(folder: Path, task: str, split: str) -> list[Path]:
    exact = folder / f"{task}.{split}.data"
    if exact.is_file():
        return [exact]
    return sorted(p for p in folder.glob(f"{task}.{split}.*.data") if p.is_file())


def find_data_files(root: PathLike, *, tasks: Sequence[str] = DEFAULT_TASKS,
                    splits: Sequence[str] = DEFAULT_SPLITS,
                    optional_tasks: Sequence[str] = OPTIONAL_TASKS,
                    nli: bool = True, nli_glob: str = "cnsd/*/*.jsonl") -> DataFiles:
    """Find the files of a data folder laid out like the reference's data root.

    For each task and split: ``senteval_cn/<TASK>/<TASK>.<split>.data``; if that
    file is absent, every ``senteval_cn/<TASK>/<TASK>.<split>.*.data`` instead
    (so ``ATEC.train.partial.data`` and ``ATEC.train.from_afqmc.data`` stand in
    for a missing ``ATEC.train.data``; the exact name wins, so nothing is read
    twice). NLI: every file matching ``nli_glob`` (the reference globs
    ``cnsd-*/*.jsonl``, whatever the split). Absent files are listed in
    ``missing`` and logged as warnings; optional tasks (SOHU21-SSB) are used when
    present and never listed. Raises only when the folder holds none of them.
    """
    root = Path(root)
    if not root.is_dir():
        raise RoformerSimError(f"{root}: data folder not found")
    senteval, missing = [], []
    for task in list(tasks) + [t for t in optional_tasks if t not in tasks]:
        folder = root / "senteval_cn" / task
        for split in splits:
            found = _split_files(folder, task, split)
            senteval += [SentevalFile(p, task, split) for p in found]
            if not found and task not in optional_tasks:
                missing.append(f"senteval_cn/{task}/{task}.{split}.data")
    nli_files = sorted(p for p in root.glob(nli_glob) if p.is_file()) if nli else []
    if nli and not nli_files:
        missing.append(nli_glob)
    if not senteval and not nli_files:
        raise RoformerSimError(
            f"{root}: no data files (expected senteval_cn/<TASK>/<TASK>.<split>.data or {nli_glob})")
    for m in missing:
        log.warning("data file not found under %s: %s", root, m)
    return DataFiles(senteval, nli_files, missing)


def load_supervised_data(data_dir: PathLike | None = None, *,
                         senteval_files: Iterable[PathLike] = (),
                         nli_files: Iterable[PathLike] = (),
                         tasks: Sequence[str] = DEFAULT_TASKS,
                         splits: Sequence[str] = DEFAULT_SPLITS,
                         thresholds: float | Mapping[str, float] | None = None,
                         maxlen: int | None = MAXLEN,
                         skip_bad_lines: bool = False) -> SupervisedData:
    """Read the supervised stage's data from a folder and/or explicit file lists.

    ``thresholds``: one number for every task, or ``{task: threshold}`` overriding
    the defaults (STS-B 2.5, others 0.5). The task of an explicit senteval file is
    its file name up to the first dot. Raises if no example at all was read.
    """
    sfiles: list[tuple[Path, str]] = []
    nfiles: list[Path] = []
    missing: list[str] = []
    if data_dir is not None:
        found = find_data_files(data_dir, tasks=tasks, splits=splits)
        sfiles += [(f.path, f.task) for f in found.senteval]
        nfiles += found.nli
        missing = found.missing
    sfiles += [(Path(p), task_from_filename(p)) for p in senteval_files]
    nfiles += [Path(p) for p in nli_files]
    if not sfiles and not nfiles:
        raise RoformerSimError("no data: give a data folder or data files")
    binary: list[LabeledPair] = []
    nli: list[LabeledPair] = []
    reports: list[FileReport] = []
    for path, task in sfiles:
        if isinstance(thresholds, Mapping):
            thr = thresholds.get(task)
        else:
            thr = thresholds
        pairs, report = read_senteval(path, task=task, threshold=thr, maxlen=maxlen,
                                      skip_bad_lines=skip_bad_lines)
        binary += pairs
        reports.append(report)
    for path in nfiles:
        pairs, report = read_nli(path, maxlen=maxlen, skip_bad_lines=skip_bad_lines)
        nli += pairs
        reports.append(report)
    if not binary and not nli:
        raise RoformerSimError("no usable examples in the data files: "
                               + "; ".join(r.summary() for r in reports))
    return SupervisedData(binary, nli, reports, missing)


def positive_pairs(data: SupervisedData) -> list[SynonymGroup]:
    """The positive pairs of labelled data, for distillation: binary label 1 and NLI entailment.

    A binary label is 1 after thresholding, so STS-B pairs scored above 2.5 count.
    """
    return [SynonymGroup((p.text1, p.text2), ordered=True)
            for p in data.binary + data.nli if p.label == 1 or p.label == ENTAILMENT]


def load_distill_pairs(files: Iterable[PathLike] = (), *, labeled_dir: PathLike | None = None,
                       tasks: Sequence[str] = DEFAULT_TASKS, splits: Sequence[str] = DEFAULT_SPLITS,
                       maxlen: int | None = MAXLEN, skip_bad_lines: bool = False) -> DistillData:
    """Read distillation pairs from jsonl files and/or the positives of a labelled folder."""
    groups: list[SynonymGroup] = []
    reports: list[FileReport] = []
    missing: list[str] = []
    for path in files:
        g, report = read_synonyms(path, maxlen=maxlen, skip_bad_lines=skip_bad_lines)
        groups += g
        reports.append(report)
    if labeled_dir is not None:
        data = load_supervised_data(labeled_dir, tasks=tasks, splits=splits, maxlen=maxlen,
                                    skip_bad_lines=skip_bad_lines)
        groups += positive_pairs(data)
        reports += data.reports
        missing = data.missing
    if not groups:
        if not reports:
            raise RoformerSimError("no data: give pair files or a labelled data folder")
        raise RoformerSimError("no usable pairs in the data files: "
                               + "; ".join(r.summary() for r in reports))
    return DistillData(groups, reports, missing)


def sample_data_dir() -> Path:
    """The bundled sample data folder (hand-written, laid out like the reference's data root)."""
    path = Path(__file__).resolve().parent / "sample_data"
    if not (path / "senteval_cn").is_dir():
        raise RoformerSimError(f"{path}: bundled sample data missing (package installed without package_data?)")
    return path


# ---------------------------------------------------------------- batching


def _check_batching(batch_size: int, maxlen: int, pad_to: int = 1, bucket: int = 1) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 2 or batch_size % 2:
        raise RoformerSimError(f"batch_size must be an even number >= 2 (rows), got {batch_size}")
    if not isinstance(maxlen, (int, np.integer)) or maxlen < 2:
        raise RoformerSimError(f"maxlen must be an integer >= 2, got {maxlen}")
    for name, value in (("pad_to", pad_to), ("bucket", bucket)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise RoformerSimError(f"{name} must be an integer >= 1, got {value}")


class _RoundRobin:
    """Which record the t-th sample is: round-robin over the non-empty sources, 1:1:...

    Source j is read in a permutation drawn afresh for every pass from
    ``default_rng([seed, j, pass])``, so any position is computed without replay.
    """

    def __init__(self, sizes: Sequence[int], seed: int):
        self.sizes = [int(s) for s in sizes]
        self.seed = int(seed)
        self.active = [j for j, s in enumerate(self.sizes) if s > 0]
        if not self.active:
            raise RoformerSimError("no examples to batch")
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def clone(self) -> "_RoundRobin":
        other = copy.copy(self)
        other._perms = {}
        return other

    def consumed(self, samples: int) -> list[int]:
        """How many samples each source has given after ``samples`` samples in all."""
        m = len(self.active)
        out = [0] * len(self.sizes)
        for k, j in enumerate(self.active):
            out[j] = samples // m + (1 if k < samples % m else 0)
        return out

    def __call__(self, t: int) -> tuple[int, int]:
        m = len(self.active)
        j = self.active[t % m]
        passes, pos = divmod(t // m, self.sizes[j])
        cached = self._perms.get(j)
        if cached is None or cached[0] != passes:
            rng = np.random.default_rng([self.seed, j, passes])
            cached = (passes, rng.permutation(self.sizes[j]))
            self._perms[j] = cached
        return j, int(cached[1][pos])


class _Batches:
    """Shared machinery: iteration, resumable state, tf.data wrapping, padding, bucketing.

    Subclasses define ``kind``, ``batch_at(index)``, ``_length(sample)`` and ``_signature()``.

    Two options cut the work of a training step; both keep every batch a pure
    function of (seed, index), so ``resume`` stays exact. ``pad_to=8`` pads each
    batch's length to a multiple of 8: at most 8 shapes for maxlen 64, so an
    XLA-compiled step (``--xla``) compiles a few times instead of once per length
    (the extra [PAD] columns are masked; losses are unchanged up to round-off,
    dropout masks differ since their shape does). ``bucket=K`` sorts the samples
    of each group of K consecutive batches by length (their rank within their
    own source, so each batch keeps the sources' 1:1 mix) and deals them out as
    K batches of similar lengths (in a seeded order), which removes much of
    the padding; the same samples are seen in the same K steps, but which
    samples share a batch changes. Here it is off by default (bucket=1: the
    reference batches in sampling order); the supervised stage
    (``pipeline.SupervisedSettings``, ``train``) turns it on with 16, since
    the supervised loss has no in-batch term and bucketing only regroups its
    samples; the distillation similarity loss compares the rows of a batch, so
    there it would change the objective and stays off.
    """

    kind = "batches"
    version = 1

    def __init__(self, sizes: Sequence[int], batch_size: int, maxlen: int, seed: int,
                 pad_to: int = 1, bucket: int = 1):
        _check_batching(batch_size, maxlen, pad_to, bucket)
        self.batch_size = int(batch_size)
        self.maxlen = int(maxlen)
        self.seed = int(seed)
        self.pad_to = int(pad_to)
        self.bucket = int(bucket)
        self.pairs_per_batch = self.batch_size // 2
        self._sampler = _RoundRobin(sizes, self.seed)
        self._index = 0
        self._group: tuple | None = None  # (group index, its batches' samples), replaced whole

    @property
    def position(self) -> int:
        """Number of batches consumed so far (the index of the next batch)."""
        return self._index

    def batch_at(self, index: int) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _signature(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _length(self, sample: tuple[int, int]) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _samples(self, index: int, sampler: _RoundRobin | None = None) -> list[tuple[int, int]]:
        sampler = sampler or self._sampler
        if self.bucket == 1:
            start = index * self.pairs_per_batch
            return [sampler(t) for t in range(start, start + self.pairs_per_batch)]
        group, position = divmod(index, self.bucket)
        cached = self._group
        if cached is None or cached[0] != group:
            start = group * self.bucket * self.pairs_per_batch
            samples = [sampler(t) for t in range(start, start + self.bucket * self.pairs_per_batch)]
            order = np.lexsort(([j for j, _ in samples], self._length_ranks(samples)))
            chunks = order.reshape(self.bucket, self.pairs_per_batch)
            dealt = np.random.default_rng([self.seed, 2 << 20, group]).permutation(self.bucket)
            cached = (group, [[samples[i] for i in chunks[c]] for c in dealt])
            self._group = cached
        return cached[1][position]

    def _length_ranks(self, samples: list[tuple[int, int]]) -> np.ndarray:
        """Each sample's length rank within its own source, scaled to [0, 1).

        Sorting by it (ties: by source) deals every source's samples evenly over
        the batches, so each batch keeps the sources' 1:1 mix (binary / NLI)
        while holding samples of similar length for its source.
        """
        lengths = np.array([self._length(s) for s in samples])
        sources = np.array([j for j, _ in samples])
        ranks = np.zeros(len(samples))
        for j in np.unique(sources):
            where = np.flatnonzero(sources == j)
            ranks[where[np.argsort(lengths[where], kind="stable")]] = np.arange(len(where)) / len(where)
        return ranks

    def _pad(self, rows: list[list[int]]) -> np.ndarray:
        """int32 [len(rows), L]: right-padded with 0 to the longest row, rounded up to ``pad_to``."""
        longest = max(len(r) for r in rows)
        return sequence_padding(rows, length=-(-longest // self.pad_to) * self.pad_to).astype(np.int32)

    def __iter__(self) -> "_Batches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.batch_at(self._index)
        self._index += 1
        return batch

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more batches as consumed (the training loop's steps when using ``dataset()``)."""
        if n < 0:
            raise RoformerSimError(f"cannot advance by a negative number of batches ({n})")
        self._index += int(n)

    def state(self) -> dict[str, Any]:
        """The sampler's position as a small JSON-serialisable dict.

        ``batches`` and ``seed`` determine everything; ``sources`` (pass and
        position of each source) is for people reading a checkpoint.
        """
        consumed = self._sampler.consumed(self._index * self.pairs_per_batch)
        sources = [{"size": s, "pass": c // s if s else 0, "pos": c % s if s else 0}
                   for s, c in zip(self._sampler.sizes, consumed)]
        state = {"kind": self.kind, "version": self.version, "seed": self.seed,
                 "batch_size": self.batch_size, "batches": self._index, "sources": sources}
        if self.bucket != 1:  # only when set, so states of unbucketed runs are as before
            state["bucket"] = self.bucket
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` (from :meth:`state`) stopped; the data must be the same."""
        try:
            kind, version = state["kind"], state["version"]
            seed, batch_size, index = int(state["seed"]), int(state["batch_size"]), int(state["batches"])
            sizes = [int(s["size"]) for s in state["sources"]]
        except (KeyError, TypeError, ValueError) as e:
            raise RoformerSimError(f"malformed sampler state ({type(e).__name__}: {e})") from None
        if kind != self.kind or version != self.version:
            raise RoformerSimError(f"sampler state is for {kind} v{version}, not {self.kind} v{self.version}")
        if batch_size != self.batch_size:
            raise RoformerSimError(f"sampler state was saved with batch_size {batch_size}, not {self.batch_size}")
        if int(state.get("bucket", 1)) != self.bucket:
            raise RoformerSimError(
                f"sampler state was saved with bucket {state.get('bucket', 1)}, not {self.bucket} "
                f"(resume with the same setting: --bucket {state.get('bucket', 1)})")
        if sizes != self._sampler.sizes:
            raise RoformerSimError(
                f"sampler state does not match the data: saved sizes {sizes}, now {self._sampler.sizes}")
        if index < 0:
            raise RoformerSimError(f"malformed sampler state (batches {index})")
        self.seed = seed
        self._sampler = _RoundRobin(sizes, seed)
        self._index = index
        self._group = None

    def dataset(self, prefetch: int | None = None):
        """An endless tf.data.Dataset of batches, starting at the current position.

        The position is taken when this is called and the object's own position
        is not moved by iterating: prefetching is free, and the training loop
        calls :meth:`advance` with the steps it consumed before saving :meth:`state`.
        ``prefetch`` defaults to tf.data.AUTOTUNE.
        """
        import tensorflow as tf

        start = self._index
        worker = copy.copy(self)
        worker._sampler = self._sampler.clone()
        worker._group = None

        def generate():
            index = start
            while True:
                yield worker.batch_at(index)
                index += 1

        ds = tf.data.Dataset.from_generator(generate, output_signature=self._signature())
        return ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def _int_matrix_spec(name: str):
    import tensorflow as tf

    return tf.TensorSpec(shape=(None, None), dtype=tf.int32, name=name)


class SupervisedBatches(_Batches):
    """Batches of the supervised stage: binary and NLI pairs interleaved 1:1.

    Sample t comes from the binary source when t is even and from NLI when odd
    (only one source given: no interleaving); each source is reshuffled every
    pass. Each pair gives two rows (text1, text2), both carrying the pair's
    label, so a batch of ``batch_size`` rows holds ``batch_size // 2`` pairs.
    Rows are ``tokenizer.encode(text, maxlen=maxlen)``, padded with
    sequence_padding. Batches: ``token_ids``, ``segment_ids`` int32 [rows, len],
    ``labels`` int32 [rows].
    """

    kind = "supervised"

    def __init__(self, binary: Sequence[LabeledPair], nli: Sequence[LabeledPair], tokenizer, *,
                 batch_size: int = 192, maxlen: int = MAXLEN, seed: int = 0,
                 pad_to: int = 1, bucket: int = 1):
        self.sources = (list(binary), list(nli))
        self.tokenizer = tokenizer
        super().__init__([len(s) for s in self.sources], batch_size, maxlen, seed, pad_to, bucket)

    def _length(self, sample: tuple[int, int]) -> int:
        pair = self.sources[sample[0]][sample[1]]
        return max(len(pair.text1), len(pair.text2))

    @classmethod
    def from_data(cls, data: SupervisedData, tokenizer, **kwargs) -> "SupervisedBatches":
        """Batches over a :class:`SupervisedData`'s binary and NLI pairs."""
        return cls(data.binary, data.nli, tokenizer, **kwargs)

    def pairs_at(self, index: int) -> list[LabeledPair]:
        """The pairs of batch ``index``, in row order."""
        return [self.sources[j][i] for j, i in self._samples(index)]

    def batch_at(self, index: int) -> dict[str, np.ndarray]:
        """Batch number ``index`` (a pure function of seed and index)."""
        token_ids, segment_ids, labels = [], [], []
        for pair in self.pairs_at(index):
            for text in (pair.text1, pair.text2):
                ids, segs = self.tokenizer.encode(text, maxlen=self.maxlen)
                token_ids.append(ids)
                segment_ids.append(segs)
                labels.append(pair.label)
        return {"token_ids": self._pad(token_ids),
                "segment_ids": self._pad(segment_ids),
                "labels": np.asarray(labels, dtype=np.int32)}

    def _signature(self) -> dict:
        import tensorflow as tf

        return {"token_ids": _int_matrix_spec("token_ids"),
                "segment_ids": _int_matrix_spec("segment_ids"),
                "labels": tf.TensorSpec(shape=(None,), dtype=tf.int32, name="labels")}


_jieba = None


def _get_jieba():
    """jieba, imported and initialised on first use, quietly."""
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(60)
        jieba.initialize()
        _jieba = jieba
    return _jieba


class DistillBatches(_Batches):
    """Batches of the distillation stage, as stage2.py's data generator (no teacher inside).

    For each pair (text, synonym) two rows: text -> synonym, then synonym -> text.
    Per row, with probability ``source_mask_prob`` (0.5) the source is
    whole-word masked (:meth:`masked_encode`), else encoded plainly. Student row:
    ``[CLS] source [SEP] synonym [SEP]`` truncated to ``2 * maxlen`` by
    truncate_sequences(2*maxlen, -2, ...), segment ids 0 then 1. Teacher row: the
    unmasked source encoded with ``maxlen``, segment ids 0 (``teacher_tokenizer``
    defaults to ``tokenizer``). Batches: ``student_token_ids``,
    ``student_segment_ids``, ``teacher_token_ids``, ``teacher_segment_ids``, int32.
    Random choices come from ``default_rng([seed, 1 << 20, index, k])``, so each
    batch is a pure function of seed and index. Groups are visited in a seeded
    permutation per pass (the reference read pre-shuffled files in order).
    """

    kind = "distill"

    def __init__(self, groups: Sequence[SynonymGroup], tokenizer, *, batch_size: int = 96,
                 maxlen: int = MAXLEN, seed: int = 0, teacher_tokenizer=None,
                 source_mask_prob: float = 0.5, word_mask_prob: float = 0.15,
                 pad_to: int = 1, bucket: int = 1):
        self.groups = list(groups)
        for g in self.groups:
            if len(g.texts) < 2:
                raise RoformerSimError(f"a synonym group needs at least two texts, got {list(g.texts)}")
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer or tokenizer
        self.source_mask_prob = float(source_mask_prob)
        self.word_mask_prob = float(word_mask_prob)
        self._word_ids: dict[str, list[int]] = {}
        super().__init__([len(self.groups)], batch_size, maxlen, seed, pad_to, bucket)

    def _length(self, sample: tuple[int, int]) -> int:
        return max(len(t) for t in self.groups[sample[1]].texts)

    @classmethod
    def from_data(cls, data: DistillData, tokenizer, **kwargs) -> "DistillBatches":
        """Batches over a :class:`DistillData`'s groups."""
        return cls(data.groups, tokenizer, **kwargs)

    def _ids_of_word(self, word: str) -> list[int]:
        ids = self._word_ids.get(word)
        if ids is None:
            ids = self.tokenizer.encode(word)[0][1:-1]
            if len(self._word_ids) < 200_000:
                self._word_ids[word] = ids
        return ids

    def masked_encode(self, text: str, rng: np.random.Generator) -> list[int]:
        """Whole-word masked token ids of ``text`` (stage2.py's masked_encode, source side only).

        jieba words; each selected with probability ``word_mask_prob``; a selected
        word becomes [MASK] for each of its tokens (80%), stays (10%) or becomes
        random ids in 1..vocab_size-1 (10%). Result ``[CLS] ... [SEP]``, at most
        ``maxlen`` ids.
        """
        tok = self.tokenizer
        words = _get_jieba().lcut(text)
        rands = rng.random(len(words))
        p = self.word_mask_prob
        source = [tok._token_start_id]
        for r, word in zip(rands, words):
            ids = self._ids_of_word(word)
            if r < p * 0.8:
                source.extend([tok._token_mask_id] * len(ids))
            elif r < p * 0.9:
                source.extend(ids)
            elif r < p:
                source.extend(int(i) for i in rng.integers(1, tok._vocab_size, size=len(ids)))
            else:
                source.extend(ids)
        return source[:self.maxlen - 1] + [tok._token_end_id]

    def texts_at(self, index: int) -> list[tuple[str, str]]:
        """The (text, synonym) pairs of batch ``index``, before each is used in both directions."""
        rng = np.random.default_rng([self.seed, 1 << 20, index, 0])
        pairs = []
        for _, i in self._samples(index):
            g = self.groups[i]
            if g.ordered:
                pairs.append((g.texts[0], g.texts[1]))
            else:
                a, b = rng.permutation(len(g.texts))[:2]
                pairs.append((g.texts[a], g.texts[b]))
        return pairs

    def batch_at(self, index: int) -> dict[str, np.ndarray]:
        """Batch number ``index`` (a pure function of seed and index)."""
        tok, ttok = self.tokenizer, self.teacher_tokenizer
        s_ids, s_segs, t_ids, t_segs = [], [], [], []
        rng = np.random.default_rng([self.seed, 1 << 20, index, 1])
        for text, synonym in self.texts_at(index):
            for _ in range(2):
                if rng.random() < self.source_mask_prob:
                    source = self.masked_encode(text, rng)
                else:
                    source = tok.encode(text)[0]
                target = tok.encode(synonym)[0][1:]
                truncate_sequences(self.maxlen * 2, -2, source, target)
                s_ids.append(source + target)
                s_segs.append([0] * len(source) + [1] * len(target))
                ids, segs = ttok.encode(text, maxlen=self.maxlen)
                t_ids.append(ids)
                t_segs.append(segs)
                text, synonym = synonym, text
        return {"student_token_ids": self._pad(s_ids),
                "student_segment_ids": self._pad(s_segs),
                "teacher_token_ids": self._pad(t_ids),
                "teacher_segment_ids": self._pad(t_segs)}

    def _signature(self) -> dict:
        return {k: _int_matrix_spec(k) for k in ("student_token_ids", "student_segment_ids",
                                                 "teacher_token_ids", "teacher_segment_ids")}
