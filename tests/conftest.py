"""Shared fixtures: the real vocab/configs from ../shared/data, tiny checkpoints built with ``init``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import roformer_sim_ft  # noqa: F401  (selects tf_keras before anything imports tensorflow)
from roformer_sim_ft import checkpoints

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data beside the repo (CI lays it there), or $ROFORMER_SIM_FT_SHARED."""
    env = os.environ.get("ROFORMER_SIM_FT_SHARED")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "vocab" / "vocab.txt").exists():
        pytest.skip(f"real data folder {path} not present")
    return path


@pytest.fixture(scope="session")
def real_vocab(shared_data) -> list[str]:
    return checkpoints.read_vocab(shared_data / "vocab" / "vocab.txt", 12000)


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    return checkpoints.preset_config("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, real_vocab, tiny_config) -> Path:
    """A tiny random checkpoint (real 12000-char vocab, L-2/H-32) in the released layout."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    checkpoints.write_checkpoint(out, tiny_config, real_vocab, checkpoints.init_weights(tiny_config, seed=7))
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from roformer_sim_ft.model import SimModel

    return SimModel.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def spread_checkpoint(tmp_path_factory, real_vocab, tiny_config) -> Path:
    """Like ``tiny_checkpoint`` but drawn at init std 1.0: a random tiny model at 0.02 maps every
    text to nearly the same vector (cosines all ≈ 1, ranks decided by round-off); this one does not."""
    out = tmp_path_factory.mktemp("ckpt") / "spread"
    weights = checkpoints.init_weights({**tiny_config, "initializer_range": 1.0}, seed=123)
    checkpoints.write_checkpoint(out, tiny_config, real_vocab, weights)
    return out


@pytest.fixture(scope="session")
def sample_data():
    """The bundled sample senteval_cn (train and valid splits) + CNSD data, read once."""
    from roformer_sim_ft import data

    return data.load_supervised_data(data.sample_data_dir(), splits=("train", "valid"))


@pytest.fixture(scope="session")
def sample_groups():
    """The bundled distillation pairs (both jsonl forms), read once."""
    from roformer_sim_ft import data

    s = data.sample_data_dir() / "synonyms"
    return data.load_distill_pairs([s / "sample.jsonl", s / "pairs.jsonl"]).groups
