"""Batches for the training stages: mixing, bucketing, whole-word masking, tf.data.

Batch makers (:class:`SupervisedBatches`, :class:`DistillBatches`,
:class:`Stage1Batches`) hold no
model: they only tokenize and pad. Their sampling is a pure function of
``(seed, batch index)``, so the resumable state is one counter, and
``dataset()`` can prefetch freely: the training loop calls ``advance(n)`` for
the ``n`` batches it has actually consumed and saves ``state()``. They take
records from :mod:`roformer_sim_ft.data.readers` and never read files.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede bert4keras)
from bert4keras.snippets import sequence_padding, truncate_sequences

from ..errors import DamagedState, RoformerSimError
from ..settings import MAXLEN
from .readers import DistillData, LabeledPair, SupervisedData, SynonymGroup

__all__ = ["SupervisedBatches", "DistillBatches", "Stage1Batches"]

def _check_batching(batch_size: int, maxlen: int, pad_to: int = 1, bucket: int = 1) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 2 or batch_size % 2:
        raise RoformerSimError(f"batch_size must be an even number >= 2 (rows), got {batch_size}")
    if not isinstance(maxlen, (int, np.integer)) or maxlen < 2:
        raise RoformerSimError(f"maxlen must be an integer >= 2, got {maxlen}")
    for name, value in (("pad_to", pad_to), ("bucket", bucket)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise RoformerSimError(f"{name} must be an integer >= 1, got {value}")


def _spread(weight: dict[int, int]) -> list[int]:
    """One run of the interleave: ``weight[j]`` slots for each source j, evenly spaced (see :class:`_RoundRobin`)."""
    total = sum(weight.values())
    slots: list[int | None] = [None] * total
    for j in sorted(weight, key=lambda j: -weight[j]):  # stable: equal weights keep source order
        for k in range(weight[j]):
            pos = (2 * k * total + weight[j]) // (2 * weight[j])  # round(k * total / weight[j]), halves up
            while slots[pos % total] is not None:
                pos += 1
            slots[pos % total] = j
    return slots


class _RoundRobin:
    """Which record the t-th sample is: weighted round-robin over the non-empty sources.

    Without weights, 1:1:...; with integer ``weights``, every run of
    ``sum(weights)`` samples takes ``weights[j]`` from source j, spread evenly:
    heaviest source first (ties in source order), the k-th sample of source j
    takes the first free slot at or after ``round(k * sum / weights[j])``. So
    2,1,1 gives sources 0,1,0,2, the reference's f1, f2, f1, f3
    (``train/stage2.py:55-73``). Source j is read in a permutation drawn afresh
    for every pass from ``default_rng([seed, j, pass])``, so any position is
    computed without replay.
    """

    def __init__(self, sizes: Sequence[int], seed: int, weights: Sequence[int] | None = None):
        self.sizes = [int(s) for s in sizes]
        self.seed = int(seed)
        self.weights = None if weights is None else [int(w) for w in weights]
        if self.weights is not None and (len(self.weights) != len(self.sizes) or min(self.weights) < 1):
            raise RoformerSimError(f"weights {self.weights} do not give a positive integer to each of "
                                   f"{len(self.sizes)} sources")
        self.active = [j for j, s in enumerate(self.sizes) if s > 0]
        if not self.active:
            raise RoformerSimError("no examples to batch")
        self.weight = {j: 1 if self.weights is None else self.weights[j] for j in self.active}
        self.pattern = _spread(self.weight)
        self._before = [self.pattern[:k].count(j) for k, j in enumerate(self.pattern)]
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def clone(self) -> "_RoundRobin":
        other = copy.copy(self)
        other._perms = {}
        return other

    def consumed(self, samples: int) -> list[int]:
        """How many samples each source has given after ``samples`` samples in all."""
        cycles, rest = divmod(samples, len(self.pattern))
        out = [0] * len(self.sizes)
        for j in self.active:
            out[j] = cycles * self.weight[j] + self.pattern[:rest].count(j)
        return out

    def __call__(self, t: int) -> tuple[int, int]:
        cycle, k = divmod(t, len(self.pattern))
        j = self.pattern[k]
        passes, pos = divmod(cycle * self.weight[j] + self._before[k], self.sizes[j])
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
                 pad_to: int = 1, bucket: int = 1, weights: Sequence[int] | None = None):
        _check_batching(batch_size, maxlen, pad_to, bucket)
        self.batch_size = int(batch_size)
        self.maxlen = int(maxlen)
        self.seed = int(seed)
        self.pad_to = int(pad_to)
        self.bucket = int(bucket)
        self.pairs_per_batch = self.batch_size // 2
        self.weights = None if weights is None else [int(w) for w in weights]
        self._sampler = _RoundRobin(sizes, self.seed, self.weights)
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
        if self.weights is not None:  # likewise
            state["weights"] = list(self.weights)
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` (from :meth:`state`) stopped; the data must be the same."""
        try:
            kind, version = state["kind"], state["version"]
            seed, batch_size, index = int(state["seed"]), int(state["batch_size"]), int(state["batches"])
            sizes = [int(s["size"]) for s in state["sources"]]
            bucket = int(state.get("bucket", 1))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedState(f"malformed sampler state ({type(e).__name__}: {e})") from None
        if kind != self.kind or version != self.version:
            raise RoformerSimError(f"sampler state is for {kind} v{version}, not {self.kind} v{self.version}")
        if batch_size != self.batch_size:
            raise RoformerSimError(f"sampler state was saved with batch_size {batch_size}, not {self.batch_size}")
        if bucket != self.bucket:
            raise RoformerSimError(
                f"sampler state was saved with bucket {bucket}, not {self.bucket} "
                f"(resume with the same setting: --bucket {bucket})")
        if state.get("weights") != self.weights:
            raise RoformerSimError(
                f"sampler state was saved with weights {state.get('weights')}, not {self.weights} "
                f"(resume with the same data and weights)")
        if sizes != self._sampler.sizes:
            raise RoformerSimError(
                f"sampler state does not match the data: saved sizes {sizes}, now {self._sampler.sizes}")
        if index < 0:
            raise DamagedState(f"malformed sampler state (batches {index})")
        self.seed = seed
        self._sampler = _RoundRobin(sizes, seed, self.weights)
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
    ``groups`` is one pooled source, or a list of sources (lists of groups)
    interleaved by integer ``weights``
    (2,1,1 as the reference's f1, f2, f1, f3; None: 1 each).
    """

    kind = "distill"
    teacher_rows = True

    def __init__(self, groups: Sequence[SynonymGroup] | Sequence[Sequence[SynonymGroup]], tokenizer, *,
                 batch_size: int = 96, maxlen: int = MAXLEN, seed: int = 0, teacher_tokenizer=None,
                 source_mask_prob: float = 0.5, word_mask_prob: float = 0.15,
                 pad_to: int = 1, bucket: int = 1, weights: Sequence[int] | None = None):
        groups = list(groups)
        nested = bool(groups) and not isinstance(groups[0], SynonymGroup)
        self.sources = [list(g) for g in groups] if nested else [groups]
        for g in (g for source in self.sources for g in source):
            if len(g.texts) < 2:
                raise RoformerSimError(f"a synonym group needs at least two texts, got {list(g.texts)}")
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer or tokenizer
        self.source_mask_prob = float(source_mask_prob)
        self.word_mask_prob = float(word_mask_prob)
        self._word_ids: dict[str, list[int]] = {}
        super().__init__([len(s) for s in self.sources], batch_size, maxlen, seed, pad_to, bucket, weights)

    @property
    def groups(self) -> list[SynonymGroup]:
        """Every group of every source, in order."""
        return [g for source in self.sources for g in source]

    def _length(self, sample: tuple[int, int]) -> int:
        return max(len(t) for t in self.sources[sample[0]][sample[1]].texts)

    @classmethod
    def from_data(cls, data: DistillData, tokenizer, weights: Sequence[int] | None = None, **kwargs) -> "DistillBatches":
        """Batches over a :class:`DistillData`'s groups: pooled, or its sources (``data.sizes``) interleaved by ``weights``."""
        if weights is None:
            return cls(data.groups, tokenizer, **kwargs)
        starts = np.cumsum([0, *data.sizes])
        sources = [data.groups[a:b] for a, b in zip(starts[:-1], starts[1:])]
        return cls(sources, tokenizer, weights=weights, **kwargs)
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
        for j, i in self._samples(index):
            g = self.sources[j][i]
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
        teacher = self.teacher_rows
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
                if teacher:
                    ids, segs = ttok.encode(text, maxlen=self.maxlen)
                    t_ids.append(ids)
                    t_segs.append(segs)
                text, synonym = synonym, text
        if not teacher:
            return {"token_ids": self._pad(s_ids), "segment_ids": self._pad(s_segs)}
        return {"student_token_ids": self._pad(s_ids),
                "student_segment_ids": self._pad(s_segs),
                "teacher_token_ids": self._pad(t_ids),
                "teacher_segment_ids": self._pad(t_segs)}

    def _signature(self) -> dict:
        return {k: _int_matrix_spec(k) for k in ("student_token_ids", "student_segment_ids",
                                                 "teacher_token_ids", "teacher_segment_ids")}


class Stage1Batches(DistillBatches):
    """Batches of stage 1 (train/stage1.py's data generator): :class:`DistillBatches`' rows without a teacher.

    Rows ``2k`` (text -> synonym) and ``2k+1`` (synonym -> text) are a pair,
    which the similarity loss relies on. Batches: ``token_ids``,
    ``segment_ids`` int32. Bucketing is off by default: it would change which
    rows the similarity loss compares.

    Example:
    >>> pairs = readers.load_distill_pairs(["f1.jsonl", "f2.jsonl", "f3.jsonl"])
    >>> batches = Stage1Batches.from_data(pairs, tokenizer, weights=(2, 1, 1), batch_size=96)
    """

    kind = "pretrain"
    teacher_rows = False

    def _signature(self) -> dict:
        return {k: _int_matrix_spec(k) for k in ("token_ids", "segment_ids")}
