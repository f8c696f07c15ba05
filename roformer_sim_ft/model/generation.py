"""Similar-sentence generation with a RoFormer-Sim UniLM: sampling, decoding, reranking.

The original script (``test/generate.py``) decodes with bert4keras's
``AutoRegressiveDecoder.random_sample``: at every step it reruns the whole
``[CLS] text [SEP] generated…`` sequence of every sample through the model and
the full MLM head, then keeps the last position. Two paths here, over a model
they are handed (a :class:`~roformer_sim_ft.model.SimModel`):

* ``use_cache=True`` (default) — the model's :class:`~roformer_sim_ft.model.forward.FastRoFormer`:
  the same forward pass in plain TF ops with a key/value cache, the whole
  sampling loop compiled (used when the model's layout allows it);
* ``use_cache=False`` — that original algorithm (``model.seq2seq`` on the
  full sequence each step, finished samples dropped), kept for equivalence tests.

Both sample with :func:`~roformer_sim_ft.model.sampling.sample_next` from the same
seeds, so a seeded run repeats exactly and both paths draw the same tokens.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from ..errors import RoformerSimError
from .sampling import sample_next, seed_tensor, step_seed
from ..settings import GENERATE_MAX_LEN, GENERATE_MAX_SAMPLES, GENERATE_TOP_P

if TYPE_CHECKING:  # pragma: no cover
    from .sim_model import SimModel


# ------------------------------------------------------- reference (uncached)
_LAST_LOGITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _last_logits_fn(model: "SimModel"):
    """``model.seq2seq``'s logits at the last position, compiled once per model."""
    if model in _LAST_LOGITS:
        return _LAST_LOGITS[model]
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def fn(tokens, segments):
        return model.seq2seq([tokens, segments], training=False)[:, -1]

    _LAST_LOGITS[model] = fn
    return fn


def decode_uncached(
    model: "SimModel",
    source: Sequence[int],
    n: int,
    max_len: int,
    seed: tf.Tensor,
    top_p: float | None,
    top_k: int | None,
    greedy: bool = False,
    record: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The original decoder's algorithm: every step reruns ``model.seq2seq`` on
    ``[CLS] text [SEP] generated`` (segment ids 0/1) for the unfinished samples
    and keeps the last position. Same sampler and seeds as the cached path.
    Returns tokens [n, steps] and, if ``record``, logits [steps, n, V] (NaN
    for samples already finished)."""
    last_logits = _last_logits_fn(model)
    end_id = model.tokenizer._token_end_id
    source = np.asarray(source, np.int32)
    tokens = np.zeros((n, 0), np.int32)
    active = np.arange(n)
    finished = np.zeros(n, bool)
    recorded = []
    logits = np.repeat(last_logits(source[None], np.zeros((1, len(source)), np.int32)).numpy(), n, axis=0)
    for t in range(max_len):
        full = np.zeros((n, logits.shape[-1]), np.float32)  # finished rows: sampled, then discarded
        full[active] = logits
        if record:
            recorded.append(np.where(finished[:, None], np.nan, full))
        sampled = sample_next(tf.constant(full), step_seed(seed, t), top_p, top_k, greedy).numpy()
        column = np.where(finished, 0, sampled).astype(np.int32)
        tokens = np.concatenate([tokens, column[:, None]], axis=1)
        finished |= column == end_id
        active = np.flatnonzero(~finished)
        if not len(active) or t + 1 == max_len:
            break
        ids = np.concatenate([np.repeat(source[None], len(active), 0), tokens[active]], axis=1)
        segs = np.concatenate([np.zeros_like(ids[:, : len(source)]), np.ones_like(tokens[active])], axis=1)
        logits = last_logits(ids, segs).numpy()
    return tokens, (np.stack(recorded) if record else None)


# ------------------------------------------------------------------ API


def _source_ids(model: "SimModel", text: str) -> list[int]:
    if not isinstance(text, str):
        raise RoformerSimError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise RoformerSimError("text is empty")
    return model.tokenizer.encode(text, maxlen=model.maxlen)[0]


def check_counts(n: int, k: int | None = None) -> None:
    """One line unless ``n`` (samples) is in [1, GENERATE_MAX_SAMPLES] and ``k`` (kept, if given) is positive."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise RoformerSimError(f"n must be a positive integer, got {n!r}")
    if n > GENERATE_MAX_SAMPLES:
        raise RoformerSimError(f"n must be at most {GENERATE_MAX_SAMPLES} (the samples of one call are held in "
                               f"memory together; call again for more), got {n}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise RoformerSimError(f"k must be a positive integer, got {k!r}")


def _check(n: int, top_p: float | None, top_k: int | None, max_len: int) -> None:
    check_counts(n)
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise RoformerSimError(f"max_len must be a positive integer, got {max_len!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RoformerSimError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise RoformerSimError(f"top_k must be a positive integer, got {top_k!r}")


def generate_ids(
    model: "SimModel",
    text: str,
    n: int = 1,
    top_p: float | None = GENERATE_TOP_P,
    top_k: int | None = None,
    max_len: int = GENERATE_MAX_LEN,
    seed: int | None = None,
    use_cache: bool = True,
    greedy: bool = False,
    record_logits: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Generated token ids [n, steps] (0 after [SEP]) and optionally the per-step logits [steps, n, V]."""
    _check(n, top_p, top_k, max_len)
    top_p = None if top_p is not None and top_p >= 1 else top_p
    source = _source_ids(model, text)
    seed_t = seed_tensor(seed)
    fast = model.fast_forward if use_cache else None
    if fast is not None:
        return fast.decode(source, n, max_len, seed_t, top_p, top_k, greedy, record_logits)
    return decode_uncached(model, source, n, max_len, seed_t, top_p, top_k, greedy, record_logits)


def decode_ids(model: "SimModel", tokens: np.ndarray) -> list[str]:
    """Text of each row of generated ids, cut before the first [SEP]."""
    end_id = model.tokenizer._token_end_id
    texts = []
    for row in np.asarray(tokens):
        stop = np.flatnonzero(row == end_id)
        texts.append(model.tokenizer.decode([int(i) for i in row[: stop[0] if len(stop) else len(row)]]))
    return texts


def generate(
    model: "SimModel",
    text: str,
    n: int = 1,
    top_p: float | None = GENERATE_TOP_P,
    top_k: int | None = None,
    max_len: int = GENERATE_MAX_LEN,
    seed: int | None = None,
    use_cache: bool = True,
    greedy: bool = False,
) -> list[str]:
    """n sampled continuations of ``[CLS] text [SEP]`` (see ``SimModel.generate``)."""
    tokens, _ = generate_ids(model, text, n, top_p, top_k, max_len, seed, use_cache, greedy)
    return decode_ids(model, tokens)


def gen_synonyms(
    model: "SimModel", text: str, n: int = 100, k: int = 20, seed: int | None = None, **kwargs
) -> list[str]:
    """Sample n, drop duplicates, empty strings and the input, keep the k closest by cosine."""
    check_counts(n, k)
    candidates = generate(model, text, n=n, seed=seed, **kwargs)
    source = model.tokenizer.decode(_source_ids(model, text))
    candidates = list(dict.fromkeys(c for c in candidates if c.strip() and c != text and c != source))
    if not candidates:
        return []
    vectors = model.encode([text] + candidates)
    sims = vectors[1:] @ vectors[0]
    return [candidates[i] for i in np.argsort(-sims, kind="stable")[:k]]
