"""SimModel: encoding as the original retrieval script, and compatibility with plain bert4keras."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel

TEXTS = ["今天天气不错", "今天天气很好，适合出去走走。", "我喜欢北京", "给我推荐一款红色的车", "A mixed 中英文 sentence!", "好"]


def _plain_predict(model, texts):
    ids = [model.tokenizer.encode(t, maxlen=64)[0] for t in texts]
    width = max(map(len, ids))
    tokens = np.array([x + [0] * (width - len(x)) for x in ids])
    return model.encoder.predict([tokens, np.zeros_like(tokens)], verbose=0)


def test_encode_matches_plain_predict_in_input_order(tiny_model):
    ours = tiny_model.encode(TEXTS, batch_size=2, normalize=False)
    plain = _plain_predict(tiny_model, TEXTS)
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    unit = tiny_model.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert tiny_model.encode(TEXTS[0]).shape == (32,)


def test_similarity_and_most_similar(tiny_model):
    v = tiny_model.encode(TEXTS)
    assert tiny_model.similarity(TEXTS[0], TEXTS[1]) == pytest.approx(float(v[0] @ v[1]), abs=1e-5)
    matrix = tiny_model.similarity(TEXTS[:2], TEXTS)
    np.testing.assert_allclose(matrix, v[:2] @ v.T, atol=1e-5)
    ranked = tiny_model.most_similar(TEXTS[0], TEXTS[1:], top_k=3)
    scores = [s for _, s in ranked]
    assert len(ranked) == 3 and scores == sorted(scores, reverse=True)
    assert ranked[0][0] == TEXTS[1:][int(np.argmax(v[1:] @ v[0]))]


def test_encode_rejects_empty_text(tiny_model):
    with pytest.raises(RoformerSimError, match=r"texts\[1\] is empty"):
        tiny_model.encode(["好", "  "])


def test_save_then_load_gives_same_vectors(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "copy")
    again = SimModel.load(tmp_path / "copy")
    np.testing.assert_array_equal(again.encode(TEXTS), tiny_model.encode(TEXTS))


def test_plain_bert4keras_loads_our_checkpoint_in_a_separate_process(tiny_model, tiny_checkpoint, tmp_path):
    """A user's Keras app: plain bert4keras, no roformer_sim_ft import."""
    script = textwrap.dedent(
        f"""
        import json, os, sys
        os.environ["TF_KERAS"] = "1"; os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np
        from bert4keras.models import build_transformer_model
        from bert4keras.tokenizers import Tokenizer
        from bert4keras.snippets import sequence_padding
        ck = {str(tiny_checkpoint)!r}
        from bert4keras.backend import keras
        roformer = build_transformer_model(ck + "/bert_config.json", ck + "/bert_model.ckpt",
                                           model="roformer", application="unilm", with_pool="linear")
        encoder = keras.models.Model(roformer.inputs, roformer.outputs[0])  # as test/retrieval.py
        tokenizer = Tokenizer(ck + "/vocab.txt", do_lower_case=True)
        texts = json.load(open(sys.argv[1]))
        ids = [tokenizer.encode(t, maxlen=64)[0] for t in texts]
        tokens = sequence_padding(ids)
        np.save(sys.argv[2], encoder.predict([tokens, np.zeros_like(tokens)], verbose=0))
        """
    )
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "texts.json"), str(tmp_path / "out.npy")],
        env=env, capture_output=True, text=True,
    ).check_returncode()
    theirs = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(theirs, tiny_model.encode(TEXTS, normalize=False), atol=1e-5)


# encode(precision="bf16"): a speed option beyond the 1e-5-equivalent default.
PRECISION_TEXTS = ["今天天气不错", "好", "给我推荐一款红色的车", "我喜欢北京", "为什么我的支付宝账户被冻结了", "花呗的额度怎么提升" * 8]


@pytest.fixture(scope="module")
def spread_model(spread_checkpoint):
    return SimModel.load(spread_checkpoint)


def test_bf16_encode_is_close_to_fp32_and_not_equal(spread_model):
    fp32 = spread_model.encode(PRECISION_TEXTS, batch_size=4)
    bf16 = spread_model.encode(PRECISION_TEXTS, batch_size=4, precision="bf16")
    cosine = np.sum(fp32 * bf16, axis=1)  # both unit vectors
    assert cosine.min() >= 0.999, cosine
    assert np.abs(fp32 - bf16).max() > 1e-6  # bf16 really ran
    np.testing.assert_array_equal(spread_model.encode(PRECISION_TEXTS, batch_size=4, precision="fp32"), fp32)  # the default


def test_precision_is_checked(spread_model):
    with pytest.raises(RoformerSimError, match="precision must be one of fp32, bf16, got 'fp16'"):
        spread_model.encode(PRECISION_TEXTS, precision="fp16")
    with pytest.raises(RoformerSimError, match="needs the fast path"):
        spread_model.encode(PRECISION_TEXTS, precision="bf16", fast=False)
