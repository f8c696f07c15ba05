"""Released-layout I/O: names, shapes, bit-exact round trips, atomic writes, error messages."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from roformer_sim_ft import checkpoints
from roformer_sim_ft.errors import RoformerSimError

REFERENCE_LAYER_VARS = [
    "attention/self/query/kernel", "attention/self/query/bias",
    "attention/self/key/kernel", "attention/self/key/bias",
    "attention/self/value/kernel", "attention/self/value/bias",
    "attention/output/dense/kernel", "attention/output/dense/bias",
    "attention/output/LayerNorm/gamma", "attention/output/LayerNorm/beta",
    "intermediate/dense/kernel", "intermediate/dense/bias",
    "output/dense/kernel", "output/dense/bias",
    "output/LayerNorm/gamma", "output/LayerNorm/beta",
]


def test_written_variables_match_reference_for_real_l6_config(shared_data, real_vocab, tmp_path):
    config = checkpoints.read_config(shared_data / "vocab/chinese_roformer-sim-char-ft_L-6_H-384_A-6/bert_config.json")
    weights = checkpoints.init_weights(config, seed=0)
    out = checkpoints.write_checkpoint(tmp_path / "l6", config, real_vocab, weights)
    import tensorflow as tf

    stored = dict(tf.train.list_variables(str(out / "bert_model.ckpt")))
    # The released checkpoints' variable list, written out independently of expected_variables().
    H, FFN, V = 384, 1536, 12000
    reference = {
        "bert/embeddings/word_embeddings": [V, H],
        "bert/embeddings/token_type_embeddings": [2, H],
        "bert/embeddings/LayerNorm/gamma": [H], "bert/embeddings/LayerNorm/beta": [H],
        "bert/pooler/dense/kernel": [H, H], "bert/pooler/dense/bias": [H],
        "cls/predictions/transform/dense/kernel": [H, H], "cls/predictions/transform/dense/bias": [H],
        "cls/predictions/transform/LayerNorm/gamma": [H], "cls/predictions/transform/LayerNorm/beta": [H],
        "cls/predictions/output_bias": [V],
    }
    for layer in range(6):
        for var in REFERENCE_LAYER_VARS:
            leaf = var.rsplit("/", 1)[1]
            if var.startswith("intermediate") and leaf == "kernel":
                shape = [H, FFN]
            elif var.startswith("intermediate"):
                shape = [FFN]
            elif var.startswith("output/dense") and leaf == "kernel":
                shape = [FFN, H]
            elif leaf == "kernel":
                shape = [H, H]
            else:
                shape = [H]
            reference[f"bert/encoder/layer_{layer}/{var}"] = shape
    assert stored == reference
    reader = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
    assert set(reader.get_variable_to_dtype_map().values()) == {tf.float32}
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == real_vocab


def test_write_then_load_is_bit_exact(tiny_checkpoint, tiny_config):
    config, vocab, weights = checkpoints.load_checkpoint(tiny_checkpoint)
    expected = checkpoints.init_weights(tiny_config, seed=7)
    assert config == tiny_config
    assert set(weights) == set(expected)
    for name in expected:
        assert weights[name].dtype == np.float32
        assert np.array_equal(weights[name], expected[name]), name


def test_load_accepts_prefix(tiny_checkpoint):
    _, _, a = checkpoints.load_checkpoint(tiny_checkpoint)
    _, _, b = checkpoints.load_checkpoint(tiny_checkpoint / "bert_model.ckpt")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_init_draws_every_kernel_independently(tiny_config):
    w = checkpoints.init_weights(tiny_config, seed=1)
    p = "bert/encoder/layer_0/attention/"
    kernels = [w[p + "self/query/kernel"], w[p + "self/key/kernel"], w[p + "self/value/kernel"], w[p + "output/dense/kernel"]]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(kernels[i], kernels[j])
    assert np.all(np.abs(kernels[0]) <= 0.04 + 1e-7)  # truncated at 2 std
    assert abs(float(w["bert/embeddings/word_embeddings"].std()) - 0.02 * 0.88) < 0.002
    assert np.all(w[p + "output/LayerNorm/gamma"] == 1) and np.all(w[p + "output/LayerNorm/beta"] == 0)
    same = checkpoints.init_weights(tiny_config, seed=1)
    other = checkpoints.init_weights(tiny_config, seed=2)
    assert np.array_equal(same[p + "self/query/kernel"], kernels[0])
    assert not np.array_equal(other[p + "self/query/kernel"], kernels[0])


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"])
def test_missing_file_is_named(tiny_checkpoint, tmp_path, name):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    (ck / name).unlink()
    with pytest.raises(RoformerSimError, match="checkpoint file missing: .*" + name.replace(".", r"\.")):
        checkpoints.load_checkpoint(ck)


def test_meta_and_checkpoint_files_not_required(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    (ck / "checkpoint").unlink()
    assert not list(ck.glob("*.meta"))
    checkpoints.load_checkpoint(ck)


def test_vocab_length_mismatch(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    lines = (ck / "vocab.txt").read_text(encoding="utf-8").splitlines()[:-3]
    (ck / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RoformerSimError, match=r"vocab has 11997 tokens but config vocab_size is 12000"):
        checkpoints.load_checkpoint(ck)


def test_shape_mismatch_names_variable_and_both_shapes(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    config = json.loads((ck / "bert_config.json").read_text())
    config["intermediate_size"] = 48
    (ck / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(RoformerSimError,
                       match=r"variable bert/encoder/layer_0/intermediate/dense/kernel has shape \(32, 64\) but the config needs \(32, 48\)"):
        checkpoints.load_checkpoint(ck)


def test_missing_variables_are_listed(tiny_checkpoint, tmp_path, tiny_config):
    _, vocab, weights = checkpoints.load_checkpoint(tiny_checkpoint)
    ck = tmp_path / "ck"
    ck.mkdir()
    del weights["bert/pooler/dense/kernel"], weights["cls/predictions/output_bias"]
    checkpoints._save_tensors(ck / "bert_model.ckpt", weights)
    shutil.copy(tiny_checkpoint / "bert_config.json", ck)
    shutil.copy(tiny_checkpoint / "vocab.txt", ck)
    with pytest.raises(RoformerSimError, match=r"lacks 2 required variables: bert/pooler/dense/kernel, cls/predictions/output_bias"):
        checkpoints.load_checkpoint(ck)


def test_not_found_path(tmp_path):
    with pytest.raises(RoformerSimError, match="checkpoint not found"):
        checkpoints.load_checkpoint(tmp_path / "nowhere")


def test_failed_write_keeps_existing_checkpoint(tiny_checkpoint, tmp_path, tiny_config):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    _, vocab, weights = checkpoints.load_checkpoint(ck)
    weights["bert/pooler/dense/bias"] = np.zeros((5,), np.float32)
    with pytest.raises(RoformerSimError, match="bert/pooler/dense/bias has shape"):
        checkpoints.write_checkpoint(ck, tiny_config, vocab, weights)
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary folder left


def test_overwrite_replaces_in_place(tiny_checkpoint, tmp_path, tiny_config):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    (ck / "notes.txt").write_text("keep me")
    _, vocab, _ = checkpoints.load_checkpoint(ck)
    new = checkpoints.init_weights(tiny_config, seed=99)
    checkpoints.write_checkpoint(ck, tiny_config, vocab, new, overwrite=True)
    _, _, back = checkpoints.load_checkpoint(ck)
    assert all(np.array_equal(back[k], new[k]) for k in new)
    assert (ck / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_builtin_vocab_has_released_layout():
    vocab = checkpoints.builtin_vocab()
    assert len(vocab) == 12000 == len(set(vocab))
    assert [vocab[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "天" in vocab and "气" in vocab
