"""Readers of the training and evaluation data: records, validation, folder discovery.

Readers turn user files into small frozen records and validate every line at
the boundary. A bad line (wrong column count, label not a number or out of
range, empty text, invalid UTF-8, bad JSON, missing key) raises
:class:`~roformer_sim_ft.errors.RoformerSimError` naming ``path:line`` and what
is wrong; with ``skip_bad_lines=True`` the line is skipped instead and counted
in the file's :class:`FileReport`, so nothing is dropped silently.

This module also holds the data constants (maxlen, tasks, splits, NLI labels).
It is pure Python: importing it does not import TensorFlow or bert4keras.
Defaults follow the reference scripts ``train/supervised.py``,
``train/stage1.py`` and ``train/stage2.py`` of ZhuiyiTechnology/roformer-sim.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from ..errors import NoDataFiles, RoformerSimError
from ..fs.digest import hash_file
from ..settings import DEFAULT_SPLITS, DEFAULT_TASKS, MAXLEN  # noqa: F401  (part of this module's API)
from .lines import MAX_REPORTED_ERRORS, FileReport  # noqa: F401  (FileReport is part of this module's API)
from .lines import BadLine as _BadLine, LineReader as _LineReader

__all__ = [
    "MAXLEN", "DEFAULT_TASKS", "OPTIONAL_TASKS", "DEFAULT_SPLITS", "NLI_LABELS",
    "TaskSpec", "LabeledPair", "ScoredPair", "SynonymGroup", "FileReport",
    "SentevalFile", "DataFiles", "SupervisedData", "DistillData",
    "task_spec", "task_from_filename", "cut_text",
    "read_senteval", "read_senteval_scored", "read_nli", "read_synonyms",
    "find_data_files", "load_supervised_data", "positive_pairs", "load_distill_pairs",
    "sample_data_dir", "text_segmentate",
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

OPTIONAL_TASKS: tuple[str, ...] = ("SOHU21-SSB",)  # used when present, never reported missing
NLI_LABELS: dict[str, int] = {"contradiction": 2, "entailment": 3, "neutral": 4}
ENTAILMENT = NLI_LABELS["entailment"]
# gold_label values of lines without a majority label (CNSD writes '-'): skipped, not errors.
NLI_UNLABELED = ("-", "")
SEPS = "\n。！？!?；;，, "
STRIPS = "；;，, "

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


class _Reported:
    """Data read from files, each with its :class:`FileReport` in ``reports``."""

    reports: list[FileReport]

    @property
    def bad(self) -> int:
        """Bad lines skipped over all files."""
        return sum(r.bad for r in self.reports)


@dataclass
class SupervisedData(_Reported):
    """Everything the supervised stage reads: binary pairs, NLI pairs, per-file reports."""

    binary: list[LabeledPair]
    nli: list[LabeledPair]
    reports: list[FileReport]
    missing: list[str] = field(default_factory=list)


@dataclass
class DistillData(_Reported):
    """Everything stage 1 and distillation read: synonym groups, per-file reports, and
    ``sizes``: how many of ``groups`` (in order) each source gave (each pair file, then
    the labelled folder; empty: one source), for weighted interleaving."""

    groups: list[SynonymGroup]
    reports: list[FileReport]
    missing: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


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


def text_segmentate(text: str, maxlen: float, seps: str = "\n", strips: str | None = None) -> list[str]:
    """Split ``text`` into pieces of at most about ``maxlen`` chars at the separators, tried in order.

    The rule of bert4keras's ``snippets.text_segmentate`` (tested equal), kept here
    so that reading data needs no TensorFlow: strip, then if the text is too long
    split it at ``seps[0]`` (kept on each piece), greedily join pieces while they
    fit, and treat each joined run with the remaining separators.
    """
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    out: list[str] = []
    run = ""
    for i, part in enumerate(parts):
        if run and part and len(run) + len(part) > maxlen - 1:
            out += text_segmentate(run, maxlen, rest, strips)
            run = ""
        run += part if i == len(parts) - 1 else part + sep
    if run:
        out += text_segmentate(run, maxlen, rest, strips)
    return out


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
        limit = csv.field_size_limit()
        if len(text) > limit:  # the csv module's "field larger than field limit"
            raise _BadLine(f"line too long ({len(text)} characters; a field may hold at most {limit})") from None
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

    contradiction/entailment/neutral -> 2/3/4. CNSD's unlabelled lines (gold_label
    '-') are skipped, as in the reference, and counted in ``report.unlabeled``; any
    other gold_label (a typo such as 'entail') is a bad line.
    A U+FEFF at the very start of the file is ignored (JSON cannot start with it).
    """
    reader = _LineReader(path, skip_bad_lines, strip_bom=True)
    pairs = []
    for lineno, text in reader.lines():
        try:
            obj = _json_object(text)
            s1, s2 = _string_field(obj, "sentence1"), _string_field(obj, "sentence2")
            gold = _string_field(obj, "gold_label")
            if gold in NLI_UNLABELED:
                reader.report.unlabeled += 1
                continue
            if gold not in NLI_LABELS:
                raise _BadLine(f"gold_label {gold!r} is not one of {', '.join(NLI_LABELS)} "
                               f"or {' / '.join(repr(u) for u in NLI_UNLABELED)} (unlabelled)")
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
                    nli: bool = True, nli_glob: str = "cnsd/*/*.jsonl", log_missing: bool = True) -> DataFiles:
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
        raise NoDataFiles(
            f"{root}: no data files (expected senteval_cn/<TASK>/<TASK>.<split>.data or {nli_glob})")
    for m in missing if log_missing else ():
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
    sizes: list[int] = []  # groups per source
    for path in files:
        g, report = read_synonyms(path, maxlen=maxlen, skip_bad_lines=skip_bad_lines)
        groups += g
        sizes.append(len(g))
        reports.append(report)
    if labeled_dir is not None:
        data = load_supervised_data(labeled_dir, tasks=tasks, splits=splits, maxlen=maxlen,
                                    skip_bad_lines=skip_bad_lines)
        groups += positive_pairs(data)
        sizes.append(len(groups) - sum(sizes))
        reports += data.reports
        missing = data.missing
    if not groups:
        if not reports:
            raise RoformerSimError("no data: give pair files or a labelled data folder")
        raise RoformerSimError("no usable pairs in the data files: "
                               + "; ".join(r.summary() for r in reports))
    return DistillData(groups, reports, missing, sizes)


def overlapping_files(first: Iterable[PathLike], second: Iterable[PathLike]) -> list[tuple[Path, Path]]:
    """Pairs (a, b) of ``first`` × ``second`` that are the same file: the same path or the same content."""
    def digest(path: Path) -> str:
        return hash_file(path).hexdigest()

    a_files = [Path(p) for p in first]
    b_files = [Path(p) for p in second]
    b_sizes = {p.stat().st_size for p in b_files}
    a_by_digest: dict[str, list[Path]] = {}
    for a in a_files:
        if a.stat().st_size in b_sizes:  # only files of equal size can have equal content
            a_by_digest.setdefault(digest(a), []).append(a)
    pairs = []
    for b in b_files:
        same = [a for a in a_files if a.resolve() == b.resolve()]
        pairs += [(a, b) for a in same or a_by_digest.get(digest(b), [])]
    return pairs


def sample_data_dir() -> Path:
    """The bundled sample data folder (hand-written, laid out like the reference's data root)."""
    path = Path(__file__).resolve().parent / "sample_data"
    if not (path / "senteval_cn").is_dir():
        raise RoformerSimError(f"{path}: bundled sample data missing (package installed without package_data?)")
    return path
