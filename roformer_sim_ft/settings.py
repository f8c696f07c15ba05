"""Every default of the package, in one place: the training loop's and each stage's.

Plain dataclasses, no TensorFlow: the command line builds its flags and help
from these defaults, the stage functions of :mod:`roformer_sim_ft.pipeline`
read them, and nothing else repeats them (:func:`parse_weights` checks the
stage-1 source weights for both). Stage values are the reference scripts'
(ZhuiyiTechnology/roformer-sim ``train/stage1.py``, ``train/supervised.py``,
``train/stage2.py``); docs/FIDELITY.md lists where this package differs.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields
from typing import Optional, Sequence

from .errors import RoformerSimError

# Longest tokenised text (pairs are cut to it), the default of SimModel and the readers.
MAXLEN = 64
# The five tasks of the Chinese STS benchmark (senteval_cn), read and reported by default.
DEFAULT_TASKS: tuple[str, ...] = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
# Training splits: train only, so that valid can select a model and test report it without overlap
# (the reference trains on train and valid: ``--splits train,valid``; docs/FIDELITY.md).
DEFAULT_SPLITS: tuple[str, ...] = ("train",)

# The classifier's features of a pair of pooled vectors (Sentence-BERT's best set).
DEFAULT_FEATURES: tuple[str, ...] = ("u", "v", "|u-v|")

# TensorBoard's folder inside a training output folder, unless --tensorboard names another.
LOG_DIR = "logs"

# Short names of the mixed-precision policies (CLI --mixed-precision) and the Keras policies they select.
MIXED_PRECISIONS: dict[str, str] = {"fp16": "mixed_float16", "bf16": "mixed_bfloat16"}

# Matmul precisions of the plain-TensorFlow encoder (SimModel.encode(precision=...), FastRoFormer.encoder_weights).
ENCODE_PRECISIONS = ("fp32", "bf16")

# Set to 1 (the CLI's --verbose) to see TensorFlow's own start-up and log lines (roformer_sim_ft.compat).
VERBOSE_ENV = "ROFORMER_SIM_FT_VERBOSE"

# Sampling defaults of generation: SimModel.generate, gen_synonyms and the SavedModel's generate_text.
GENERATE_TOP_P = 0.95  # top-p of each draw (the reference's random_sample)
GENERATE_MAX_LEN = 64  # generated tokens per sample at most
# Samples of one generation call at most (generate, gen_synonyms, the CLI's -n and the SavedModel's
# generate_text): each step holds [n, vocab] logits, and one request must not exhaust the memory.
GENERATE_MAX_SAMPLES = 1000
# Seeds are integers in [0, SEED_LIMIT): TensorFlow takes them as int64.
SEED_LIMIT = 2**63


def check_seed(seed: object, name: str = "seed") -> None:
    """One line unless ``seed`` is an integer in [0, 2**63) (the range every seeded function here takes)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
        raise RoformerSimError(f"{name} must be an integer from 0 to 2**63 - 1, got {seed!r}")

# Export formats and what each writes (``roformer-sim-ft export --format``).
EXPORT_FORMATS: dict[str, str] = {
    "ckpt": "released TF1 layout (default)",
    "h5": "Keras HDF5 weights for plain bert4keras",
    "savedmodel": "TF SavedModel: encode/similarity on token ids; on raw text, and generate_text, with tensorflow-text",
    "hf": "transformers RoFormer + pooler (safetensors)",
    "keras": "Keras 3 .keras archive, loads without this package on any backend",
}


@dataclass
class TrainConfig:
    """Settings of the training loop, whatever the stage.

    ``learning_rate`` and ``weight_decay`` left as None take the stage's own
    values (its settings below, filled in by the stage functions); calling
    :func:`~roformer_sim_ft.training.train` directly needs ``learning_rate``,
    and ``weight_decay`` None is :class:`StageSettings`' value. Everything else
    here is the loop's.
    """

    out_dir: str = ""  # the stage functions of pipeline.run_pipeline set it per stage
    steps: int = 1000
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup_steps: int = 0
    seed: int = 0
    save_every: int = 500
    keep_states: int = 2
    eval_every: int = 0
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False  # a new run into an out_dir holding another run's states clears them first
    allow_changed_settings: bool = False  # resume although seed, data or a non-structural setting changed
    devices: Optional[int] = None
    mixed_precision: Optional[str] = None  # None, "mixed_float16" or "mixed_bfloat16"
    jit_compile: bool = False
    show_progress: Optional[bool] = None
    tensorboard: bool = True  # TensorBoard scalars (roformer_sim_ft.training.summaries), written by the chief alone
    tensorboard_dir: Optional[str] = None  # None: OUT/logs (LOG_DIR)
    collective_timeout: float = 600.0  # multi-worker: seconds start-up or a collective waits for the other workers
    # keras 2.3.1's Adam, which the published models were trained with: K.epsilon(), added to sqrt(v)
    # outside the bias correction (bert4keras's own TF2 Adam uses 1e-6).
    adam_epsilon: float = 1e-7

    def __post_init__(self) -> None:
        self._check_values()  # at once: a bad flag stops before any data is read or model built

    def log_dir(self) -> Optional[str]:
        """Where TensorBoard event files go, or None when off."""
        if not self.tensorboard:
            return None
        return self.tensorboard_dir or os.path.join(self.out_dir, LOG_DIR)

    def validate(self) -> None:
        """One-line errors for values the loop cannot run with."""
        if not self.out_dir:
            raise RoformerSimError("out_dir is not set")
        if self.learning_rate is None:
            raise RoformerSimError("learning_rate is not set (the stage functions take it from the stage's settings)")
        self._check_values()
        if self.resume and self.overwrite:
            raise RoformerSimError("resume and overwrite exclude each other: continue the run or start again")

    def _check_values(self) -> None:
        """One line for a value out of its range (learning_rate and weight_decay when set)."""
        check_seed(self.seed)
        if self.steps < 1:
            raise RoformerSimError(f"steps must be at least 1, got {self.steps}")
        if self.learning_rate is not None:
            check_number("learning_rate", self.learning_rate, low=0, low_included=False)
        if self.weight_decay is not None:
            check_number("weight_decay", self.weight_decay, low=0)
        if self.mixed_precision not in (None, *MIXED_PRECISIONS.values()):
            raise RoformerSimError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS.values())}, got {self.mixed_precision!r}"
            )
        if self.keep_states < 1:
            raise RoformerSimError(f"keep_states must be at least 1, got {self.keep_states}")
        if self.devices is not None and self.devices < 1:
            raise RoformerSimError(f"devices must be at least 1, got {self.devices}")
        check_number("adam_epsilon", self.adam_epsilon, low=0, low_included=False)
        check_number("collective_timeout", self.collective_timeout, low=0, low_included=False)
        for name in ("save_every", "eval_every", "warmup_steps", "log_every"):
            if getattr(self, name) < 0:
                raise RoformerSimError(f"{name} must not be negative, got {getattr(self, name)}")


def check_number(name: str, value: float, low: float = 0, low_included: bool = True) -> None:
    """One line unless ``value`` is a finite number above ``low`` (or equal to it, if ``low_included``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not (value >= low if low_included else value > low):
        bound = f">= {low:g}" if low_included else f"> {low:g}"
        raise RoformerSimError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass
class StageSettings:
    """What every training stage sets: batch shape, optimiser values, dropout, batching.

    ``dropout_rate`` is bert4keras's ``dropout_rate`` (embeddings and hidden
    layers). ``attention_dropout_rate`` is the dropout on the attention
    probabilities: 0 by default, as bert4keras 0.10.6 (the reference's stack)
    has none; None takes the checkpoint config's ``attention_probs_dropout_prob``
    (what bert4keras 0.11.5 falls back to). Batching: ``bucket=K`` sorts the samples of K consecutive
    batches by length and deals them out again (less padding); ``pad_to=N``
    rounds batch lengths up to a multiple of N (few shapes for an XLA step).
    """

    batch_size: int = 96
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    maxlen: int = MAXLEN
    dropout_rate: float = 0.2
    attention_dropout_rate: Optional[float] = 0.0
    bucket: int = 1
    pad_to: int = 1
    skip_bad_lines: bool = False

    def validate(self) -> None:
        """One-line errors for out-of-range values."""
        check_number("learning_rate", self.learning_rate, low=0, low_included=False)
        check_number("weight_decay", self.weight_decay, low=0)
        for name in ("dropout_rate", "attention_dropout_rate"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise RoformerSimError(f"{name} must be in [0, 1), got {value}")
        if not isinstance(self.maxlen, int) or self.maxlen < 2:
            raise RoformerSimError(f"maxlen must be an integer >= 2, got {self.maxlen}")

    def as_record(self) -> dict:
        """The settings as JSON-ready values (for run.json)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass
class SupervisedSettings(StageSettings):
    """The supervised stage (defaults: train/supervised.py).

    Length bucketing is on (``bucket=16``): the loss has no in-batch term, so
    bucketing only regroups samples within 16 steps, keeping each batch's 1:1
    binary/NLI mix (about 2x the steps/s, docs/PERFORMANCE.md; 1 = the
    reference's order). ``splits`` are the training splits of the data folder:
    the reference trains on train and valid.
    """

    batch_size: int = 192
    learning_rate: float = 2e-5
    bucket: int = 16
    objective: str = "concat"
    features: Sequence[str] = DEFAULT_FEATURES
    heads: str = "shared"
    tasks: Sequence[str] = DEFAULT_TASKS
    splits: Sequence[str] = DEFAULT_SPLITS
    thresholds: Optional[dict] = None


@dataclass
class PairSettings(StageSettings):
    """What the two stages on pairs of similar texts share (stage 1 and distillation).

    ``weights`` interleave the sources (each pair file, then the labelled
    folder): ``(2, 1, 1)`` is the reference's f1, f2, f1, f3; None pools every
    group. ``labeled_splits`` are the splits whose positive pairs a labelled
    folder gives. Bucketing stays off: the similarity loss compares every row of
    a batch with every other, so regrouping rows would change the objective.
    """

    weights: Optional[Sequence[int]] = None
    labeled_splits: Sequence[str] = DEFAULT_SPLITS


@dataclass
class DistillSettings(PairSettings):
    """The distillation stage (defaults: train/stage2.py): 100 × the MSE of the similarity matrices."""

    batch_size: int = 96
    learning_rate: float = 1e-5
    similarity_weight: float = 100.0

    def validate(self) -> None:
        """One-line errors for out-of-range values."""
        super().validate()
        check_number("similarity_weight", self.similarity_weight, low=0)


@dataclass
class Stage1Settings(PairSettings):
    """Stage 1, making a RoFormer-Sim from a RoFormer (defaults: train/stage1.py).

    Batch 96 rows (48 pairs, each in both directions), AdamW lr 1e-5, weight
    decay 0.01, hidden dropout 0.2, maxlen 64, the similarity softmax's cosine
    scale 20.
    """

    batch_size: int = 96
    learning_rate: float = 1e-5
    similarity_scale: float = 20.0

    def validate(self) -> None:
        """One-line errors for out-of-range values."""
        super().validate()
        check_number("similarity_scale", self.similarity_scale, low=0, low_included=False)


def parse_weights(weights: str | Sequence[int] | None, sources: int) -> tuple[int, ...] | None:
    """Interleaving weights of ``sources`` sources, given as ``"2,1,1"`` or a sequence of positive integers.

    One weight per source (each pair file in order, then the labelled folder):
    in every run of ``sum(weights)`` samples, source j gives ``weights[j]``, as
    the reference's f1, f2, f1, f3 is ``2,1,1``. None stays None (all groups pooled).
    """
    if weights is None:
        return None
    items = [w.strip() for w in weights.split(",")] if isinstance(weights, str) else list(weights)
    try:
        values = tuple(int(w) for w in items)
    except (TypeError, ValueError):
        raise RoformerSimError(f"weights must be positive integers such as 2,1,1, got {weights!r}") from None
    if any(str(v) != str(w).strip() for v, w in zip(values, items)) or any(v < 1 for v in values):
        raise RoformerSimError(f"weights must be positive integers such as 2,1,1, got {weights!r}")
    if len(values) != sources:
        raise RoformerSimError(
            f"{len(values)} weights for {sources} data sources (each pair file, then the labelled folder)")
    return values

