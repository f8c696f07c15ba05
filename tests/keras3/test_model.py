"""The native Keras 3 model: numpy checkpoint reader, tokenizer, equality with plain bert4keras
under the TensorFlow backend (in process) and the PyTorch / JAX backends (separate processes,
without TensorFlow), and the ``.keras`` export loaded without our package."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_sim_ft import checkpoints, export as ex, keras3
from roformer_sim_ft.fs import folders as outputs
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.settings import MAXLEN
from roformer_sim_ft.model import pad
from roformer_sim_ft.keras3.tensor_bundle import BundleReader, crc32c
from roformer_sim_ft.keras3.wordpiece import WordPieceTokenizer

TEXTS = list(ex.VERIFY_TEXTS) + ["我喜欢北京", "Café naïve RÉSUMÉ ＡＢＣ全角 unaffable", "a\u200bb\tc\x00d\ufffd", "长" * 80]
POOLED_TOLERANCE, LOGITS_TOLERANCE = 1e-5, 1e-4


def _segments(ids: np.ndarray) -> np.ndarray:
    """Second half of each row as segment 1, so that the UniLM mask matters."""
    return ((np.arange(ids.shape[1]) >= ids.shape[1] // 2) & (ids != 0)).astype(np.int32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint, tiny_config):
    """Like ``tiny_checkpoint`` but drawn at std 0.1: at 0.02 a wrong mask moves the pooled vectors
    by only ~3e-5, here by ~5e-3; at 1.0 (``spread_checkpoint``) attention saturates and float
    round-off alone grows past 1e-5."""
    out = tmp_path_factory.mktemp("ckpt") / "std0.1"
    vocab = checkpoints.read_vocab(tiny_checkpoint / checkpoints.VOCAB_NAME)
    weights = checkpoints.init_weights({**tiny_config, "initializer_range": 0.1}, seed=11)
    checkpoints.write_checkpoint(out, tiny_config, vocab, weights)
    return out


@pytest.fixture(scope="module")
def reference_model(checkpoint):
    """The reference: our bert4keras model of ``checkpoint``."""
    from roformer_sim_ft.model import SimModel

    return SimModel.load(checkpoint)


@pytest.fixture(scope="module")
def ids(reference_model):
    return pad(reference_model.tokenize(TEXTS))


@pytest.fixture(scope="module")
def reference(reference_model, ids):
    """Plain bert4keras (tf_keras) outputs: pooled with segment ids 0, pooled and logits with two segments."""
    pooled = reference_model.encoder.predict([ids, np.zeros_like(ids)], verbose=0)
    pooled2, logits = reference_model.model.predict([ids, _segments(ids)], verbose=0)
    return {"pooled": pooled, "pooled2": pooled2, "logits": logits}


def _child(script: str, env_backend: str, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    env["KERAS_BACKEND"] = env_backend
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


# ----------------------------------------------------------------- reader
def test_bundle_reader_equals_tf_load_checkpoint(tiny_checkpoint):
    import tensorflow as tf

    ours = BundleReader(tiny_checkpoint / checkpoints.CKPT_NAME)
    theirs = tf.train.load_checkpoint(str(tiny_checkpoint / checkpoints.CKPT_NAME))
    assert ours.shapes() == {k: tuple(v) for k, v in theirs.get_variable_to_shape_map().items()}
    for name in ours.shapes():
        a, b = ours.read(name), theirs.get_tensor(name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_crc32c_known_value_and_lanes():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8)
    plain = 0xFFFFFFFF
    for byte in data[:20000].tobytes():  # bitwise reference on a prefix large enough for the lane path
        plain ^= byte
        for _ in range(8):
            plain = (plain >> 1) ^ (0x82F63B78 if plain & 1 else 0)
    assert crc32c(data[:20000]) == plain ^ 0xFFFFFFFF
    assert crc32c(data) != crc32c(np.concatenate([data[:-1], data[-1:] ^ 1]))


def test_bundle_reader_reports_damage(tiny_checkpoint, tmp_path):
    shutil.copytree(tiny_checkpoint, tmp_path / "c")
    prefix = tmp_path / "c" / checkpoints.CKPT_NAME
    data = tmp_path / "c" / f"{checkpoints.CKPT_NAME}.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # the last byte belongs to some tensor
    data.write_bytes(bytes(raw))
    reader = BundleReader(prefix)
    with pytest.raises(RoformerSimError, match="crc32c"):
        for name in reader.shapes():
            reader.read(name)
    data.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(RoformerSimError, match="truncated") as err:
        for name in reader.shapes():
            BundleReader(prefix).read(name, verify=False)
    assert str(data) in str(err.value) and "\n" not in str(err.value)
    index = tmp_path / "c" / f"{checkpoints.CKPT_NAME}.index"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(RoformerSimError, match="truncated"):
        BundleReader(prefix)
    index.unlink()
    with pytest.raises(RoformerSimError, match="missing"):
        keras3.load_checkpoint(tmp_path / "c")


# -------------------------------------------------------------- tokenizer
def test_wordpiece_equals_bert4keras(tiny_model):
    ours = WordPieceTokenizer(tiny_model.vocab)
    for text in TEXTS:
        for maxlen in (None, MAXLEN, 5):
            assert ours.encode(text, maxlen) == tiny_model.tokenizer.encode(text, maxlen=maxlen)[0], (text, maxlen)


def test_layout_names_and_constants_agree(tiny_config):
    assert set(keras3.weight_names(tiny_config)) == set(checkpoints.expected_variables(tiny_config))
    assert keras3.ARCHIVE_NAME == ex.KERAS_ARCHIVE


# ----------------------------------------------------- TensorFlow backend
def test_legacy_keras_env_still_gives_keras3():
    """TF_USE_LEGACY_KERAS=1 (set by our package for bert4keras) selects tf_keras for ``tf.keras``
    only: ``keras`` stays Keras 3, here beside bert4keras and in a fresh process."""
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1" and "bert4keras" in sys.modules
    assert keras3.keras.__version__.startswith("3.") and hasattr(keras3.keras.layers, "ReversibleEmbedding")
    script = (
        "import os, keras, tensorflow as tf; assert os.environ['TF_USE_LEGACY_KERAS'] == '1'; "
        "assert not tf.keras.__name__.startswith('keras'), tf.keras.__name__; "
        "print(keras.__version__, float(keras.layers.Dense(1, kernel_initializer='ones')(tf.ones([1, 2]))[0, 0]))"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_KERAS": "1", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    version, value = done.stdout.split()[-2:]
    assert version.startswith("3.") and value == "2.0"


def test_tensorflow_backend_equals_bert4keras(checkpoint, ids, reference):
    assert keras3.keras.backend.backend() == "tensorflow"
    model, config, vocab = keras3.load_checkpoint(checkpoint)
    out = model({"token_ids": ids, "segment_ids": np.zeros_like(ids)})
    out2 = model({"token_ids": ids, "segment_ids": _segments(ids)})
    assert np.max(np.abs(np.asarray(out["pooled"]) - reference["pooled"])) <= POOLED_TOLERANCE
    assert np.max(np.abs(np.asarray(out2["pooled"]) - reference["pooled2"])) <= POOLED_TOLERANCE
    assert np.max(np.abs(np.asarray(out2["mlm_logits"]) - reference["logits"])) <= LOGITS_TOLERANCE
    # a wrong mask would show: the segment-1 rows see fewer keys
    assert np.max(np.abs(np.asarray(out["pooled"]) - reference["pooled2"])) > 1e-3


def test_sim_encoder_equals_simmodel(checkpoint, reference_model):
    theirs = reference_model
    ours = keras3.SimEncoder.from_checkpoint(checkpoint)
    assert np.max(np.abs(ours.encode(TEXTS, batch_size=3) - theirs.encode(TEXTS, batch_size=3))) <= POOLED_TOLERANCE
    assert abs(ours.similarity(TEXTS[0], TEXTS[1]) - theirs.similarity(TEXTS[0], TEXTS[1])) <= POOLED_TOLERANCE
    assert ours.encode(TEXTS[0]).shape == (theirs.config["hidden_size"],)
    with pytest.raises(RoformerSimError, match=r"texts\[1\]"):
        ours.encode(["好", " "])


def test_load_checkpoint_reports_missing_variable(tiny_checkpoint, tiny_config, tmp_path):
    weights = checkpoints.init_weights(tiny_config)
    del weights["bert/pooler/dense/bias"]
    vocab = checkpoints.read_vocab(tiny_checkpoint / checkpoints.VOCAB_NAME)
    checkpoints._save_tensors(tmp_path / checkpoints.CKPT_NAME, weights)
    shutil.copy(tiny_checkpoint / checkpoints.CONFIG_NAME, tmp_path)
    (tmp_path / checkpoints.VOCAB_NAME).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    with pytest.raises(RoformerSimError, match="lacks 1 required variables: bert/pooler/dense/bias"):
        keras3.load_checkpoint(tmp_path)


# ------------------------------------------------ other backends, .keras
@pytest.fixture(scope="module")
def keras_export(tmp_path_factory, reference_model):
    return ex.export_model(reference_model, tmp_path_factory.mktemp("k3") / "keras", "keras")


def test_keras_export_verified_and_round_trips(keras_export, reference_model, ids, reference):
    assert keras_export.max_diff <= ex.TOLERANCE["keras"] and "bit-identical" in keras_export.checked
    assert {p.name for p in keras_export.path.iterdir()} == {ex.KERAS_ARCHIVE, "bert_config.json", "vocab.txt", outputs.MANIFEST_NAME}
    encoder = keras3.SimEncoder.from_keras(keras_export.path / ex.KERAS_ARCHIVE)
    out = encoder.model({"token_ids": ids, "segment_ids": _segments(ids)})
    assert np.max(np.abs(np.asarray(out["mlm_logits"]) - reference["logits"])) <= LOGITS_TOLERANCE
    assert np.max(np.abs(encoder.encode(TEXTS) - reference_model.encode(TEXTS))) <= POOLED_TOLERANCE
    again = ex.export_model(reference_model, keras_export.path, "keras", overwrite=True)  # an earlier keras export may be replaced
    assert again.path == keras_export.path


_OTHER_BACKEND = """
    import json, sys
    import numpy as np
    checkpoint, archive, ids_path, texts_path, out_path = sys.argv[1:]
    ids = np.load(ids_path)
    segments = ((np.arange(ids.shape[1]) >= ids.shape[1] // 2) & (ids != 0)).astype(np.int32)
    import keras
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    # 1. the .keras archive, without our package
    model = keras.saving.load_model(archive)
    archive_logits = keras.ops.convert_to_numpy(model({{"token_ids": ids, "segment_ids": segments}})["mlm_logits"])
    assert "roformer_sim_ft" not in sys.modules
    # 2. our module, reading the TF1 checkpoint with numpy
    from roformer_sim_ft import keras3
    model, config, vocab = keras3.load_checkpoint(checkpoint)
    out = model({{"token_ids": ids, "segment_ids": np.zeros_like(ids)}})
    out2 = model({{"token_ids": ids, "segment_ids": segments}})
    vectors = keras3.SimEncoder(model, vocab).encode(json.load(open(texts_path, encoding="utf-8")))
    assert not {{"tensorflow", "tf_keras", "bert4keras"}} & set(sys.modules), sorted({{"tensorflow", "tf_keras", "bert4keras"}} & set(sys.modules))
    np.savez(out_path, pooled=keras.ops.convert_to_numpy(out["pooled"]), pooled2=keras.ops.convert_to_numpy(out2["pooled"]),
             logits=keras.ops.convert_to_numpy(out2["mlm_logits"]), archive_logits=archive_logits, vectors=vectors)
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backend_equals_bert4keras(backend, checkpoint, keras_export, reference_model, ids, reference, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS), encoding="utf-8")
    done = _child(
        _OTHER_BACKEND.format(backend=backend), backend, checkpoint, keras_export.path / ex.KERAS_ARCHIVE,
        tmp_path / "ids.npy", tmp_path / "texts.json", tmp_path / "out.npz",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert np.max(np.abs(got["pooled"] - reference["pooled"])) <= POOLED_TOLERANCE
    assert np.max(np.abs(got["pooled2"] - reference["pooled2"])) <= POOLED_TOLERANCE
    assert np.max(np.abs(got["logits"] - reference["logits"])) <= LOGITS_TOLERANCE
    assert np.max(np.abs(got["archive_logits"] - reference["logits"])) <= LOGITS_TOLERANCE
    assert np.max(np.abs(got["vectors"] - reference_model.encode(TEXTS))) <= POOLED_TOLERANCE
