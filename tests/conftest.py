"""Shared fixtures and helpers.

Everything a test needs is built here from the package itself: tiny random
checkpoints on the package's built-in char vocab (``checkpoints.builtin_vocab``:
12000 tokens in the released layout, [UNK]/[CLS]/[SEP]/[MASK] at the released
ids, covering every character of the bundled sample data), and the bundled
sample data. Only the fixtures ``shared_data`` and ``real_vocab`` need the
team's real data folder (``../shared/data`` beside the repository, or
``$ROFORMER_SIM_FT_SHARED``); tests using them skip without it, naming what is missing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import roformer_sim_ft  # noqa: F401  (selects tf_keras before anything imports tensorflow)
from roformer_sim_ft import checkpoints

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "ROFORMER_SIM_FT_SHARED"


def shared_data_dir() -> Path:
    """Where the real data folder should be: ``$ROFORMER_SIM_FT_SHARED`` (the shared
    folder or its ``data/``), else ``../shared/data`` beside the repository."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env) / "data" if (Path(env) / "data").is_dir() else Path(env)
    return REPO.parent / "shared" / "data"


def _batches_equal(a, b) -> None:
    if isinstance(a, dict):
        a, b = [a], [b]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="session")
def assert_batches_equal():
    """``assert_batches_equal(a, b)``: two batches (dicts of arrays), or two lists of them, are equal key for key."""
    return _batches_equal


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (vocab/, senteval_cn/, cnsd/); skips when it is absent."""
    path = shared_data_dir()
    how = f"lay shared/data beside the repository or set {SHARED_ENV}"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} absent ({how})")
    missing = [p for p in ("vocab/vocab.txt", "senteval_cn", "cnsd") if not (path / p).exists()]
    if missing:
        pytest.skip(f"real data folder {path} lacks {', '.join(missing)} ({how})")
    return path


@pytest.fixture(scope="session")
def real_vocab(shared_data) -> list[str]:
    """The released 12000-char vocab.txt."""
    return checkpoints.read_vocab(shared_data / "vocab" / "vocab.txt", 12000)


@pytest.fixture(scope="session")
def tiny_vocab() -> list[str]:
    """The package's built-in 12000-token char vocab: the released size and special ids."""
    return checkpoints.builtin_vocab()


@pytest.fixture(scope="session")
def tokenizer(tiny_vocab):
    """The tokenizer of every tiny checkpoint (the one SimModel builds)."""
    from roformer_sim_ft.model import make_tokenizer

    return make_tokenizer(tiny_vocab)


@pytest.fixture(scope="session")
def tiny_config(tiny_vocab) -> dict:
    return checkpoints.preset_config("tiny", len(tiny_vocab))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_vocab, tiny_config) -> Path:
    """A tiny random checkpoint (built-in vocab, L-2/H-32) in the released layout."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    checkpoints.write_checkpoint(out, tiny_config, tiny_vocab, checkpoints.init_weights(tiny_config, seed=7))
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from roformer_sim_ft.model import SimModel

    return SimModel.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def spread_checkpoint(tmp_path_factory, tiny_vocab, tiny_config) -> Path:
    """Like ``tiny_checkpoint`` but drawn at init std 1.0: a random tiny model at 0.02 maps every
    text to nearly the same vector (cosines all ≈ 1, ranks decided by round-off); this one does not."""
    out = tmp_path_factory.mktemp("ckpt") / "spread"
    weights = checkpoints.init_weights({**tiny_config, "initializer_range": 1.0}, seed=123)
    checkpoints.write_checkpoint(out, tiny_config, tiny_vocab, weights)
    return out


@pytest.fixture(scope="session")
def sample_data():
    """The bundled sample senteval_cn (train and valid splits) + CNSD data, read once."""
    from roformer_sim_ft.data import readers

    return readers.load_supervised_data(readers.sample_data_dir(), splits=("train", "valid"))


@pytest.fixture(scope="session")
def sample_groups():
    """The bundled distillation pairs (both jsonl forms), read once."""
    from roformer_sim_ft.data import readers

    s = readers.sample_data_dir() / "synonyms"
    return readers.load_distill_pairs([s / "sample.jsonl", s / "pairs.jsonl"]).groups
