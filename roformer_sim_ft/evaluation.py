"""Evaluate sentence similarity the way the RoFormer-Sim-FT post reports it.

Protocol of kexue.fm/archives/8321 (used by kexue.fm/archives/8541): for each
task's test file, Spearman correlation × 100 between cos(u, v) of the
encoder's vectors and the gold label (STS-B keeps its 0–5 scores, the binary
tasks their 0/1), and the average over tasks. Also here: the post's ten probe
pairs, plain-text and JSON reports with file fingerprints, and two lexical
baselines (character Jaccard and character TF-IDF cosine) scored by the same
code so that their numbers sit in the same table.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
from scipy import stats

from .errors import RoformerSimError
from .fs.digest import fingerprint_files  # noqa: F401  (part of this module's API)
from .vectors import unit_rows
from .settings import DEFAULT_TASKS as TASKS
from .data.readers import find_data_files, read_senteval_scored

Row = tuple[str, str, float]
ScoreFn = Callable[[Sequence[tuple[str, str]]], Sequence[float]]

# The post's probe pairs with the published similarities of the base -ft model (kexue.fm/archives/8541).
PROBES: list[tuple[str, str, float]] = [
    ("今天天气不错", "今天天气很好", 0.977),
    ("今天天气不错", "今天天气不好", 0.624),
    ("我喜欢北京", "我很喜欢北京", 0.992),
    ("我喜欢北京", "我不喜欢北京", 0.529),
    ("电影不错", "电影很好", 0.968),
    ("电影不错", "电影不好", 0.631),
    ("红色的苹果", "绿色的苹果", 0.697),
    ("给我推荐一款红色的车", "给我推荐一款黑色的车", 0.719),
    ("给我推荐一款红色的车", "推荐一辆红车", 0.987),
    ("给我推荐一款红色的车", "麻烦来一辆红车", 0.946),
]


class Encoder(Protocol):
    """Anything with ``encode(texts, batch_size=, normalize=, show_progress_bar=)`` returning [n, H],
    as ``SimModel.encode``. (sentence-transformers' ``encode`` names its flag ``normalize_embeddings``:
    wrap such a model in a small adapter to evaluate it here.)"""

    def encode(self, texts: Sequence[str], batch_size: int = ..., normalize: bool = ...,
               show_progress_bar: bool | None = ...) -> np.ndarray: ...


# --------------------------------------------------------------------------- results
@dataclass
class TaskScore:
    """Spearman × 100 of one task and the number of rows it was computed on."""

    task: str
    spearman: float
    rows: int


@dataclass
class EvalResult:
    """Per-task scores of one model, the tasks whose files were missing, and the average."""

    name: str
    scores: dict[str, TaskScore] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def average(self) -> float:
        """Mean Spearman × 100 over the evaluated tasks (NaN if none)."""
        values = [s.spearman for s in self.scores.values()]
        return float(np.mean(values)) if values else math.nan

    @property
    def primary_metric(self) -> float:
        """The number periodic evaluation maximises: the average."""
        return self.average

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "tasks": {t: {"spearman_x100": _finite(s.spearman), "rows": s.rows} for t, s in self.scores.items()},
            "average": _finite(self.average),
            "missing": list(self.missing),
        }


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def spearman_x100(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman rank correlation × 100 (NaN when either side is constant or shorter than 2)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise RoformerSimError(f"scores {scores.shape} and labels {labels.shape} must be equal-length vectors")
    if len(scores) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        return float(stats.spearmanr(scores, labels).statistic) * 100


def _check_rows(task: str, rows: Sequence[Sequence[Any]]) -> list[Row]:
    out = []
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise RoformerSimError(f"task {task} row {i}: expected (text1, text2, label), got {len(row)} items")
        try:
            out.append((str(row[0]), str(row[1]), float(row[2])))
        except (TypeError, ValueError):
            raise RoformerSimError(f"task {task} row {i}: label {row[2]!r} is not a number") from None
    return out


def evaluate_scores(task_rows: Mapping[str, Sequence[Row]], score_fn: ScoreFn, name: str = "model",
                    missing: Sequence[str] = ()) -> EvalResult:
    """Spearman × 100 per task of ``score_fn(pairs)`` against the gold labels.

    ``score_fn`` gets one task's ``[(text1, text2), ...]`` at once (so a
    baseline can fit statistics on that task's rows) and returns one score per
    pair. Models (through :class:`SimilarityEvaluator`) and the lexical
    baselines are scored by this one function.
    """
    result = EvalResult(name=name, missing=list(missing))
    for task, rows in task_rows.items():
        rows = _check_rows(task, rows)
        scores = np.asarray(score_fn([(a, b) for a, b, _ in rows]), np.float64)
        if scores.shape != (len(rows),):
            raise RoformerSimError(f"task {task}: score function gave shape {scores.shape} for {len(rows)} rows")
        result.scores[task] = TaskScore(task, spearman_x100(scores, [r[2] for r in rows]), len(rows))
    return result


def cosine_scores(model: Encoder, pairs: Sequence[tuple[str, str]], batch_size: int = 64,
                  show_progress_bar: bool | None = False) -> np.ndarray:
    """cos(encode(a), encode(b)) per pair, encoding each distinct text once in one call."""
    index: dict[str, int] = {}
    for a, b in pairs:
        index.setdefault(a, len(index))
        index.setdefault(b, len(index))
    if not index:
        return np.zeros(0)
    vectors = np.asarray(model.encode(list(index), batch_size=batch_size, normalize=True,
                                      show_progress_bar=show_progress_bar), np.float64)
    if vectors.ndim != 2 or len(vectors) != len(index):
        raise RoformerSimError(f"encode returned shape {vectors.shape} for {len(index)} texts")
    vectors = unit_rows(vectors)
    left = vectors[[index[a] for a, _ in pairs]]
    right = vectors[[index[b] for _, b in pairs]]
    return (left * right).sum(axis=1)


class SimilarityEvaluator:
    """Spearman × 100 of cosine similarities on labelled pairs, per task and averaged.

    The kexue.fm/archives/8321 protocol in sentence-transformers'
    ``EmbeddingSimilarityEvaluator`` shape: built once from
    ``{task: [(text1, text2, label), ...]}``, then called with any model that
    has ``.encode(texts, batch_size=, normalize=True, show_progress_bar=)`` —
    at the end of training or periodically during it (``primary_metric``).
    Each task's distinct texts are encoded in one call.
    """

    def __init__(self, task_rows: Mapping[str, Sequence[Row]], batch_size: int = 64, name: str = "model",
                 show_progress_bar: bool | None = False, missing: Sequence[str] = (),
                 files: Sequence[Path] = ()):
        if batch_size < 1:
            raise RoformerSimError(f"batch_size must be positive, got {batch_size}")
        self.task_rows = {task: _check_rows(task, rows) for task, rows in task_rows.items()}
        self.batch_size = batch_size
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.missing = list(missing)
        self.files = list(files)  # the test files read, for fingerprint_files

    @classmethod
    def from_dir(cls, data_dir: str | os.PathLike, split: str = "valid", tasks: Sequence[str] = TASKS,
                 skip_bad_lines: bool = False, **kwargs: Any) -> "SimilarityEvaluator":
        """An evaluator over ``load_eval_tasks(data_dir, split, tasks)``; missing files are recorded."""
        data = load_eval_tasks(data_dir, split, tasks, skip_bad_lines)
        return cls(data.rows, missing=data.missing, files=data.files, **kwargs)

    def __call__(self, model: Encoder, name: str | None = None) -> EvalResult:
        def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
            return cosine_scores(model, pairs, self.batch_size, self.show_progress_bar)

        return evaluate_scores(self.task_rows, score, name or self.name, self.missing)


# --------------------------------------------------------------------------- test files
@dataclass
class EvalTasks:
    """Rows per task read from a data folder, the files read, the tasks whose files were missing."""

    rows: dict[str, list[Row]]
    files: list[Path]
    missing: list[str]
    reports: list[Any] = field(default_factory=list)  # readers.FileReport per file (bad lines skipped)


def load_eval_tasks(data_dir: str | os.PathLike, split: str = "valid", tasks: Sequence[str] = TASKS,
                    skip_bad_lines: bool = False) -> EvalTasks:
    """Read ``senteval_cn/<TASK>/<TASK>.<split>.data`` per task, keeping float scores.

    Uses the project's readers (:func:`readers.find_data_files`,
    :func:`readers.read_senteval_scored`), so the bad-line policy is the training
    one. A task without a file is listed in ``missing`` and skipped.
    """

    found = find_data_files(data_dir, tasks=tasks, splits=[split], optional_tasks=(), nli=False)
    out = EvalTasks(rows={}, files=[], missing=[])
    for task in tasks:
        files = [f.path for f in found.senteval if f.task == task]
        if not files:
            out.missing.append(task)
            continue
        out.rows[task] = []
        for path in files:
            pairs, report = read_senteval_scored(path, task=task, skip_bad_lines=skip_bad_lines)
            out.rows[task] += [(p.text1, p.text2, p.score) for p in pairs]
            out.files.append(path)
            out.reports.append(report)
    return out


# --------------------------------------------------------------------------- reports
def format_table(results: EvalResult | Sequence[EvalResult], tasks: Sequence[str] = TASKS) -> str:
    """Plain-text table like the post's: one row per model, Spearman × 100 per task and the average."""
    results = [results] if isinstance(results, EvalResult) else list(results)
    header = ["Model", *tasks, "Avg"]
    body = []
    for r in results:
        cells = [f"{r.scores[t].spearman:.2f}" if t in r.scores else "-" for t in tasks]
        body.append([r.name, *cells, f"{r.average:.2f}" if r.scores else "-"])
    widths = [max(_width(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = []
    for row in [header, *body]:
        lines.append("  ".join(_pad(c, w, left=i == 0) for i, (c, w) in enumerate(zip(row, widths))))
    missing = sorted({t for r in results for t in r.missing})
    if missing:
        lines.append(f"missing (skipped): {', '.join(missing)}")
    return "\n".join(lines)


def to_json(result: EvalResult, checkpoint_fingerprint: str | None = None, data_fingerprint: str | None = None,
            **extra: Any) -> str:
    """The result's numbers plus fingerprints (and any ``extra`` settings) as a JSON document."""
    doc = result.as_dict()
    doc.update(checkpoint_fingerprint=checkpoint_fingerprint, data_fingerprint=data_fingerprint, **extra)
    return json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False)


class ProbeRow(NamedTuple):
    text1: str
    text2: str
    ours: float
    published: float


def run_probes(model: Encoder, probes: Sequence[tuple[str, str, float]] = PROBES,
               batch_size: int = 64) -> list[ProbeRow]:
    """Our cosine for each probe pair beside the post's published value."""
    sims = cosine_scores(model, [(a, b) for a, b, _ in probes], batch_size)
    return [ProbeRow(a, b, float(s), float(p)) for (a, b, p), s in zip(probes, sims)]


def format_probes(rows: Sequence[ProbeRow]) -> str:
    """Aligned lines ``text1  text2  ours  published`` (CJK characters count as two columns)."""
    w1 = max([_width(r.text1) for r in rows] + [_width("text1")])
    w2 = max([_width(r.text2) for r in rows] + [_width("text2")])
    lines = [f"{_pad('text1', w1, True)}  {_pad('text2', w2, True)}    ours  published"]
    for r in rows:
        lines.append(f"{_pad(r.text1, w1, True)}  {_pad(r.text2, w2, True)}  {r.ours:6.3f}  {r.published:9.3f}")
    return "\n".join(lines)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, left: bool) -> str:
    gap = " " * (width - _width(text))
    return text + gap if left else gap + text


# --------------------------------------------------------------------------- lexical baselines
def char_jaccard(a: str, b: str) -> float:
    """|chars(a) ∩ chars(b)| / |chars(a) ∪ chars(b)| over character sets (0 for two empty strings)."""
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def char_jaccard_scores(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """:func:`char_jaccard` of each pair."""
    return np.array([char_jaccard(a, b) for a, b in pairs], np.float64)


def char_tfidf_scores(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Cosine of character TF-IDF vectors, IDF fitted on the given pairs' texts.

    Every text of every pair is one document (n = 2 × pairs); tf = raw
    character count, idf = ln((1 + n) / (1 + df)) + 1 (scikit-learn's smooth
    idf); a text without characters has cosine 0.
    """
    counts = [(Counter(a), Counter(b)) for a, b in pairs]
    df: Counter = Counter()
    for ca, cb in counts:
        df.update(ca.keys())
        df.update(cb.keys())
    n = 2 * len(pairs)
    idf = {c: math.log((1 + n) / (1 + k)) + 1 for c, k in df.items()}
    out = np.zeros(len(pairs))
    for i, (ca, cb) in enumerate(counts):
        # math.fsum: exact sums, independent of set order (PYTHONHASHSEED), so identical
        # character multisets score exactly 1 and ties rank the same in every process.
        dot = math.fsum(ca[c] * cb[c] * idf[c] ** 2 for c in ca.keys() & cb.keys())
        na2 = math.fsum((k * idf[c]) ** 2 for c, k in ca.items())
        nb2 = math.fsum((k * idf[c]) ** 2 for c, k in cb.items())
        out[i] = min(dot / math.sqrt(na2 * nb2), 1.0) if na2 and nb2 else 0.0
    return out


LEXICAL_BASELINES: dict[str, ScoreFn] = {"char-jaccard": char_jaccard_scores, "char-tfidf": char_tfidf_scores}
