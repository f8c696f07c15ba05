"""Batch options for faster training steps: ``pad_to`` (length a multiple of N) and
``bucket`` (similar lengths share a batch). Both keep each batch a pure function
of (seed, index): resume and prefetching stay exact."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from roformer_sim_ft.data import batches as B
from roformer_sim_ft.errors import RoformerSimError


def supervised(sample_data, tokenizer, **kwargs):
    return B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8, seed=3, **kwargs)


def distill(sample_groups, tokenizer, **kwargs):
    return B.DistillBatches(sample_groups, tokenizer, batch_size=8, seed=3, **kwargs)


@pytest.mark.parametrize("make", [supervised, distill])
def test_pad_to_only_adds_zero_columns(make, sample_data, sample_groups, tokenizer):
    source = sample_data if make is supervised else sample_groups
    plain, padded = make(source, tokenizer), make(source, tokenizer, pad_to=8)
    for i in range(12):
        a, b = plain.batch_at(i), padded.batch_at(i)
        for k, v in b.items():
            if v.ndim == 2:
                width = a[k].shape[1]
                assert v.shape[1] % 8 == 0 and v.shape[1] - width in range(8)
                assert not v[:, width:].any()
                np.testing.assert_array_equal(v[:, :width], a[k])
            else:
                np.testing.assert_array_equal(v, a[k])


def test_bucket_deals_the_same_samples_with_less_padding(sample_data, tokenizer):
    k = 4
    plain, bucketed = supervised(sample_data, tokenizer), supervised(sample_data, tokenizer, bucket=k)

    def cells(batch):
        return batch["token_ids"].size, int((batch["token_ids"] != 0).sum())

    for group in range(3):
        indices = range(group * k, (group + 1) * k)
        seen = Counter(p for i in indices for p in plain.pairs_at(i))
        assert Counter(p for i in indices for p in bucketed.pairs_at(i)) == seen
        assert all(len(bucketed.pairs_at(i)) == 4 for i in indices)
    padded = [cells(b.batch_at(i)) for b in (plain, bucketed) for i in range(40)]
    plain_cells = sum(c for c, _ in padded[:40])
    bucket_cells = sum(c for c, _ in padded[40:])
    assert sum(t for _, t in padded[:40]) == sum(t for _, t in padded[40:])  # same real tokens
    assert bucket_cells < plain_cells
    # within a batch, rows still come in pairs (text1, text2) with the pair's label
    batch = bucketed.batch_at(5)
    assert (batch["labels"][0::2] == batch["labels"][1::2]).all()


def test_bucketed_batches_keep_the_one_to_one_mix(sample_data, tokenizer):
    """Binary and NLI pairs stay 1:1 in every batch, as in the reference's order; lengths are sorted per source."""
    bucketed = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=16, seed=3, bucket=8)
    for i in range(24):
        labels = bucketed.batch_at(i)["labels"][0::2]
        assert (labels >= 2).sum() == (labels < 2).sum() == 4, (i, labels)
    # within a group, each source's samples are dealt in length order over the batches
    order = np.random.default_rng([3, 2 << 20, 0]).permutation(8)  # the group's seeded dealing
    by_rank = [bucketed._samples(int(np.flatnonzero(order == c)[0])) for c in range(8)]
    for source in (0, 1):
        lengths = [[bucketed._length(s) for s in batch if s[0] == source] for batch in by_rank]
        assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:])), lengths


@pytest.mark.parametrize("make", [supervised, distill])
def test_bucketed_batches_are_a_pure_function_of_seed_and_index(make, sample_data, sample_groups, tokenizer,
                                                                assert_batches_equal):
    source = sample_data if make is supervised else sample_groups
    forward = make(source, tokenizer, bucket=3, pad_to=8)
    straight = [forward.batch_at(i) for i in range(10)]
    backward = make(source, tokenizer, bucket=3, pad_to=8)
    for i in reversed(range(10)):  # any call order, fresh object: same batches
        assert_batches_equal(backward.batch_at(i), straight[i])
    # resume in the middle of a group
    first = make(source, tokenizer, bucket=3, pad_to=8)
    for _ in range(4):
        next(first)
    resumed = make(source, tokenizer, bucket=3, pad_to=8)
    resumed.restore(json.loads(json.dumps(first.state())))
    for i in range(4, 10):
        assert_batches_equal(next(resumed), straight[i])
    # the tf.data stream gives the same batches
    it = iter(make(source, tokenizer, bucket=3, pad_to=8).dataset())
    for i in range(5):
        assert_batches_equal({k: v.numpy() for k, v in next(it).items()}, straight[i])


def test_state_records_bucket_and_refuses_a_different_one(sample_data, tokenizer):
    assert "bucket" not in supervised(sample_data, tokenizer).state()  # unbucketed states as before
    state = supervised(sample_data, tokenizer, bucket=4).state()
    assert state["bucket"] == 4
    with pytest.raises(RoformerSimError, match="bucket 4, not 1"):
        supervised(sample_data, tokenizer).restore(state)
    with pytest.raises(RoformerSimError, match="bucket 1, not 2"):
        supervised(sample_data, tokenizer, bucket=2).restore(supervised(sample_data, tokenizer).state())


@pytest.mark.parametrize("option", ["pad_to", "bucket"])
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_bad_options(option, value, sample_data, tokenizer):
    with pytest.raises(RoformerSimError, match=f"{option} must be an integer >= 1"):
        supervised(sample_data, tokenizer, **{option: value})
