"""Raw-text serving: the in-graph tokenizer gives bert4keras's token ids, the in-graph detokenizer
bert4keras's text, and the SavedModel's string signatures equal ``SimModel.encode`` / ``similarity``
/ ``generate`` in a process without our package."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from roformer_sim_ft import export as ex
from roformer_sim_ft.model import pad
from roformer_sim_ft.export import graph_tokenizer
from roformer_sim_ft.data import readers
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.settings import GENERATE_MAX_SAMPLES

pytestmark = pytest.mark.skipif(
    graph_tokenizer.unavailable_reason() is not None, reason=str(graph_tokenizer.unavailable_reason())
)

# Each line exercises one rule of bert4keras's Tokenizer (see graph_tokenizer's docstring).
TRICKY = [
    "Café naïve RÉSUMÉ ＡＢＣ全角 unaffable",  # lower-case, accents stripped, full-width kept (no NFKC)
    "ΟΔΟΣ Σ İstanbul Straße ﬁne",  # final sigma, dotted I, ß and ligatures as str.lower
    "a\u200bb\u200dc\ufeffd e\x00f\ufffdg h\x7fi",  # Cf/Cc, NUL and U+FFFD vanish inside a word
    "x\u2028y\u2029z\x0bw\u3000v\xa0u\tt\nr",  # separators: Zs, \t\n, U+2028/9; \x0b is dropped
    "§¶·•‰′″ a-b_c (1+1=2)? 100% 3.1415",  # punctuation each a word
    "한국어 日本語 カタカナ ﾊﾝｶｸ \U00020000\U0002A700 🙂👍🏽",  # CJK ranges; other scripts as words
    "a" * 200 + " " + "b" * 201 + " " + "é" * 150,  # word_maxlen 200 characters, not bytes
    "今天天气不错" * 20,  # truncated to maxlen before [SEP]
    "word " * 80,
    "   ",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    import tensorflow as tf

    graph = graph_tokenizer.GraphTokenizer(tiny_model.vocab, maxlen=tiny_model.maxlen)
    return tf.function(graph, input_signature=[tf.TensorSpec([None], tf.string)])


def _mismatches(tokenizer, reference, texts: list[str], maxlen: int = 64) -> list[str]:
    got = tokenizer(np.array(texts, dtype=object)).numpy()
    return [t for t, row in zip(texts, got) if [int(i) for i in row if i] != reference.encode(t, maxlen=maxlen)[0]]


def test_ids_equal_bert4keras_on_sample_data_and_tricky_text(tokenizer, tiny_model):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from compare_graph_tokenizer import sentences, valid_files

    texts = [t for path in valid_files(readers.sample_data_dir()) for t in sentences(path)]
    assert len(texts) > 300
    texts += list(ex.VERIFY_TEXTS) + TRICKY
    assert _mismatches(tokenizer, tiny_model.tokenizer, texts) == []
    long = tokenizer(np.array(["今天天气不错" * 20], dtype=object)).numpy()
    assert long.shape == (1, 64) and long[0, -1] == tiny_model.tokenizer._token_end_id


def test_ids_equal_bert4keras_with_the_real_vocab_on_a_shared_valid_split(shared_data, real_vocab):
    import tensorflow as tf

    from roformer_sim_ft.model import make_tokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from compare_graph_tokenizer import sentences

    path = shared_data / "senteval_cn" / "STS-B" / "STS-B.valid.data"
    if not path.exists():
        pytest.skip(f"{path} not present")
    graph = graph_tokenizer.GraphTokenizer(real_vocab)
    fn = tf.function(graph, input_signature=[tf.TensorSpec([None], tf.string)])
    texts = sentences(path) + TRICKY
    assert _mismatches(fn, make_tokenizer(real_vocab), texts) == []


def test_duplicate_vocab_tokens_map_to_their_last_line_as_bert4keras(tiny_model):
    from roformer_sim_ft.model import make_tokenizer

    vocab = list(tiny_model.vocab)
    vocab[-1] = "天"  # a second copy of a common character
    graph = graph_tokenizer.GraphTokenizer(vocab)
    assert _mismatches(graph, make_tokenizer(vocab), ["今天天气不错"]) == []


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory, tiny_model):
    return ex.export_model(tiny_model, tmp_path_factory.mktemp("serving") / "sm", "savedmodel")


GENERATE = {"text": "我喜欢北京", "n": 6, "seed": 7}


def test_string_signatures_match_simmodel_in_plain_tensorflow(savedmodel, tiny_model, tmp_path):
    """The SavedModel in a process with only TensorFlow (+ tensorflow-text): text and id signatures
    give SimModel's ids, vectors and similarities; generate_text's candidates are scored as SimModel scores them."""
    assert "encode_text" in savedmodel.checked and savedmodel.max_diff <= ex.TOLERANCE["savedmodel"]
    assert (savedmodel.path / "assets.extra" / "vocab.txt").exists()
    assert "generate_text equal to generate" in savedmodel.checked
    texts = list(ex.VERIFY_TEXTS) + ["我喜欢北京", "Café naïve RÉSUMÉ ＡＢＣ全角 unaffable", "今天天气不错" * 20]
    (tmp_path / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    script = """
        import json, sys
        import numpy as np, tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
        loaded = tf.saved_model.load(sys.argv[1])
        texts = tf.constant(json.load(open(sys.argv[2], encoding="utf-8")))
        ids = loaded.signatures["tokenize_text"](text=texts)["token_ids"].numpy()
        vectors = loaded.signatures["encode_text"](text=texts)["vectors"].numpy()
        sims = loaded.signatures["similarity_text"](text_a=texts, text_b=texts[::-1])["similarity"].numpy()
        assert np.allclose(loaded.encode_text(texts)["vectors"].numpy(), vectors, atol=1e-6)
        # the id signatures, fed those ids: the same vectors and similarities
        seg = tf.zeros_like(ids)
        by_ids = loaded.signatures["encode"](token_ids=ids, segment_ids=seg)["vectors"].numpy()
        assert np.array_equal(loaded.signatures["serving_default"](token_ids=ids, segment_ids=seg)["vectors"].numpy(),
                              by_ids)
        assert np.allclose(loaded.encode(ids, seg)["vectors"].numpy(), by_ids, atol=1e-6)
        assert np.allclose(by_ids, vectors, atol=1e-6)
        sims_ids = loaded.signatures["similarity"](token_ids_a=ids, segment_ids_a=seg, token_ids_b=ids[::-1],
                                                   segment_ids_b=seg)["similarity"].numpy()
        assert np.allclose(sims_ids, sims, atol=1e-6)
        gen = json.loads(sys.argv[6])
        out = loaded.signatures["generate_text"](
            text=tf.constant(gen["text"]), n=tf.constant(gen["n"]), seed=tf.constant(gen["seed"], tf.int64)
        )
        candidates = [c.decode("utf-8") for c in out["candidates"].numpy()]
        assert not any(m.startswith(("roformer_sim_ft", "bert4keras", "tf_keras")) for m in sys.modules)
        np.save(sys.argv[3], ids); np.save(sys.argv[4], vectors); np.save(sys.argv[5], sims)
        json.dump({"candidates": candidates, "similarity": out["similarity"].numpy().tolist()},
                  open("generated.json", "w", encoding="utf-8"), ensure_ascii=False)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    out = [tmp_path / f"{name}.npy" for name in ("ids", "vectors", "sims")]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(savedmodel.path), str(tmp_path / "texts.json"),
         *map(str, out), json.dumps(GENERATE)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out[0]), pad(tiny_model.tokenize(texts)))
    ours = tiny_model.encode(texts)
    np.testing.assert_allclose(np.load(out[1]), ours, atol=1e-5)
    expected_sims = [tiny_model.similarity(a, b) for a, b in zip(texts, texts[::-1])]
    np.testing.assert_allclose(np.load(out[2]), expected_sims, atol=1e-5)

    # This random model's next-token distribution is nearly flat, so a last-bit difference between two
    # processes' arithmetic can change a draw: equality with generate is checked in one process (below).
    # Here: n sampled strings, each scored as SimModel scores that string.
    generated = json.loads((tmp_path / "generated.json").read_text(encoding="utf-8"))
    candidates = generated["candidates"]
    assert len(candidates) == GENERATE["n"] and len(set(candidates)) > 1 and all(candidates)
    vectors = tiny_model.encode([GENERATE["text"]] + candidates)
    np.testing.assert_allclose(generated["similarity"], vectors[1:] @ vectors[0], atol=1e-5)


def test_generate_text_equals_generate_repeats_and_refuses_bad_input(savedmodel, tiny_model):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(savedmodel.path))
    run = lambda text, n, seed: loaded.signatures["generate_text"](  # noqa: E731
        text=tf.constant(text), n=tf.constant(n), seed=tf.constant(seed, tf.int64)
    )["candidates"].numpy().tolist()
    got = [c.decode("utf-8") for c in run(GENERATE["text"], GENERATE["n"], GENERATE["seed"])]
    assert got == tiny_model.generate(GENERATE["text"], n=GENERATE["n"], seed=GENERATE["seed"])
    assert run("我喜欢北京", 4, 1) == run("我喜欢北京", 4, 1)
    assert run("我喜欢北京", 4, 1) != run("我喜欢北京", 4, 2)
    assert len(run("我喜欢北京", 3, 1)) == 3
    for text, n, seed, message in [("  ", 2, 1, "text is empty"), ("北京", 0, 1, "n must be a positive integer"),
                                   ("北京", GENERATE_MAX_SAMPLES + 1, 1, f"n must be at most {GENERATE_MAX_SAMPLES}"),
                                   ("北京", 2, -1, "seed must be a non-negative integer")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            run(text, n, seed)


@pytest.fixture(scope="module")
def signatures(savedmodel):
    """The exported SavedModel's signatures, loaded once; each takes keyword numpy arrays."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(savedmodel.path))

    def call(f):
        specs = f.structured_input_signature[1]
        return lambda **kw: {k: v.numpy() for k, v in f(**{a: tf.constant(b, specs[a].dtype) for a, b in kw.items()}).items()}

    return {name: call(f) for name, f in loaded.signatures.items()}


def _texts(*texts: str) -> list[str]:
    return list(texts)


def _ids(rows: int, length: int, value: int = 101) -> np.ndarray:
    return np.full([rows, length], value, np.int32)


def test_empty_batches_give_empty_outputs(signatures):
    """0 strings, or 0 rows of ids (of any length, 0 included: what tokenize_text gives for 0 strings)."""
    assert signatures["tokenize_text"](text=_texts())["token_ids"].shape[0] == 0
    assert signatures["encode_text"](text=_texts())["vectors"].shape == (0, 32)
    assert signatures["similarity_text"](text_a=_texts(), text_b=_texts())["similarity"].shape == (0,)
    for length in (0, 5):
        assert signatures["encode"](token_ids=_ids(0, length), segment_ids=_ids(0, length, 0))["vectors"].shape == (0, 32)
        empty = {"token_ids_a": _ids(0, length), "segment_ids_a": _ids(0, length, 0)}
        empty.update(token_ids_b=_ids(0, length), segment_ids_b=_ids(0, length, 0))
        assert signatures["similarity"](**empty)["similarity"].shape == (0,)


def _pair(rows_a: int, rows_b: int, segment_length_b: int = 3) -> dict:
    return {"token_ids_a": _ids(rows_a, 3), "segment_ids_a": _ids(rows_a, 3, 0),
            "token_ids_b": _ids(rows_b, 3), "segment_ids_b": _ids(rows_b, segment_length_b, 0)}


@pytest.mark.parametrize("name, inputs, reason", [
    ("similarity_text", {"text_a": _texts("北京", "上海"), "text_b": _texts("北京")},
     "text_a has 2 strings but text_b has 1; both need the same number"),  # broadcast silently before
    ("similarity_text", {"text_a": _texts("北京", "上海", "天津"), "text_b": _texts("北京", "上海")},
     "text_a has 3 strings but text_b has 2; both need the same number"),
    ("similarity", _pair(2, 1), "token_ids_a has 2 rows but token_ids_b has 1; both need the same number"),
    ("similarity", _pair(3, 2), "token_ids_a has 3 rows but token_ids_b has 2; both need the same number"),
    ("similarity", _pair(2, 2, segment_length_b=2), "token_ids_b has shape [2 3] but segment_ids_b [2 2]; they must be the same"),
    ("encode", {"token_ids": _ids(2, 3), "segment_ids": _ids(1, 3, 0)},
     "token_ids has shape [2 3] but segment_ids [1 3]; they must be the same"),  # broadcast silently before
    ("encode", {"token_ids": _ids(2, 0), "segment_ids": _ids(2, 0)},
     "token_ids has 2 rows of length 0; each row needs at least [CLS]"),
    ("encode_text", {"text": _texts("")}, "text[0] is empty"),  # a vector of [CLS] [SEP] before
    ("encode_text", {"text": _texts("北京", " \u3000\t")}, "text[1] is empty"),
    ("tokenize_text", {"text": _texts("北京", "")}, "text[1] is empty"),
    ("similarity_text", {"text_a": _texts("北京"), "text_b": _texts("  ")}, "text_b[0] is empty"),
    ("generate_text", {"text": "北京", "n": np.int32(0), "seed": np.int64(1)}, "n must be a positive integer, got 0"),
    ("generate_text", {"text": "北京", "n": np.int32(GENERATE_MAX_SAMPLES + 1), "seed": np.int64(1)},
     f"n must be at most {GENERATE_MAX_SAMPLES}, got {GENERATE_MAX_SAMPLES + 1}"),
    ("generate_text", {"text": "北京", "n": np.int32(2), "seed": np.int64(-3)}, "seed must be a non-negative integer, got -3"),
    ("generate_text", {"text": " ", "n": np.int32(2), "seed": np.int64(1)}, "text is empty"),
])
def test_bad_requests_are_refused_with_their_reason(signatures, name, inputs, reason):
    """Each refusal is the signature's own assertion, with one reason naming the input (not an
    internal error of an op inside, and not a silent broadcast)."""
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        signatures[name](**inputs)
    assert f"assertion failed: [{reason}]" in str(caught.value)


def test_empty_text_is_what_simmodel_refuses(signatures, tiny_model):
    """The string signatures' empty text is SimModel's: only white space (str.strip's), not a text of
    characters the tokenizer drops."""
    import tensorflow as tf

    for text in (" \u3000\t\n", "\u2028\x1c"):
        with pytest.raises(RoformerSimError, match="empty"):
            tiny_model.encode([text])
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("[text[0] is empty]")):
            signatures["encode_text"](text=[text])
    kept = "\u200b\x00"  # Cf and NUL: not white space, dropped by the tokenizer
    np.testing.assert_allclose(signatures["encode_text"](text=_texts(kept))["vectors"], tiny_model.encode([kept]), atol=1e-5)


def test_generate_text_scores_an_empty_candidate_instead_of_refusing_it(tiny_model, monkeypatch):
    """A sample that ends at once is the candidate "" (as ``generate`` gives it): generate_text returns it
    with its cosine ([CLS] [SEP]'s vector), although encode_text refuses "" as a request."""
    import tensorflow as tf

    from roformer_sim_ft.export import savedmodel as serving

    end_id = tiny_model.tokenizer._token_end_id
    monkeypatch.setattr(tiny_model.fast_forward, "decoder", lambda top_p: lambda source, n, *_: (tf.fill([n, 3], end_id), None, None))
    module = serving.ServingModule(tiny_model, graph_tokenizer.GraphTokenizer(tiny_model.vocab), generate=True)
    out = module.generate_text(tf.constant("我喜欢北京"), tf.constant(2), tf.constant(1, tf.int64))
    assert out["candidates"].numpy().tolist() == [b"", b""]
    ids = tf.constant(pad(tiny_model.tokenize(["我喜欢北京"]) + [[tiny_model.tokenizer._token_start_id, end_id]]))
    vectors = module.encode(ids, tf.zeros_like(ids))["vectors"].numpy()
    np.testing.assert_allclose(out["similarity"].numpy(), [vectors[1] @ vectors[0]] * 2, atol=1e-6)


# Word and ## pieces for the detokenizer test (the built-in vocab has single characters only).
PIECES = ["hello", "world", "don", "re", "ll", "ve", "12", "##ing", "##s", "##ed", "##5", "roformer", "##é"]


def test_graph_detokenizer_writes_text_as_bert4keras_decode(tiny_model):
    import tensorflow as tf

    from roformer_sim_ft.model import make_tokenizer

    vocab = list(tiny_model.vocab)
    unused = [i for i, t in enumerate(vocab) if t.startswith("[unused")]
    assert not set(PIECES) & set(vocab)  # a duplicate would hide its first id from bert4keras's decode
    for i, piece in zip(unused, PIECES):
        vocab[i] = piece
    reference = make_tokenizer(vocab)
    texts = list(ex.VERIFY_TEXTS) + TRICKY + ["hello world's roformers don't 1.5 12.3 (a+b)=c，好。"]
    rows = [reference.encode(t, maxlen=64)[0] for t in texts]
    rng = np.random.default_rng(0)
    kinds = [
        np.arange(len(vocab)),  # anything, specials included
        np.array(unused[: len(PIECES)]),  # words and ## pieces
        np.array([vocab.index(c) for c in "'.,:;!?()+-/=<[{1234567890，。？！、（）《》“”"]),  # punctuation, digits
    ]
    for _ in range(300):
        rows.append([int(rng.choice(kinds[k])) for k in rng.integers(0, len(kinds), size=12)])
    length = max(map(len, rows))
    ids = np.array([r + [0] * (length - len(r)) for r in rows], np.int32)
    mask = np.array([[i < len(r) for i in range(length)] for r in rows])
    detokenizer = graph_tokenizer.GraphDetokenizer(vocab)
    got = [t.decode("utf-8") for t in tf.function(detokenizer)(tf.constant(ids), tf.constant(mask)).numpy()]
    expected = [reference.decode(r) for r in rows]
    assert [(i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if a != b] == []
    assert any(" " in t for t in expected) and any("'" in t for t in expected)


def test_without_tensorflow_text_the_id_signatures_are_still_written(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)
    result = ex.export_model(tiny_model, tmp_path / "sm", "savedmodel")
    assert "string signatures skipped: tensorflow_text is not installed" in result.checked
    import tensorflow as tf

    loaded = tf.saved_model.load(str(result.path))
    assert set(loaded.signatures) == {"serving_default", "encode", "similarity"}


def test_a_tokenizer_that_disagrees_fails_verification_and_writes_nothing(tiny_model, tmp_path, monkeypatch):
    real = graph_tokenizer.GraphTokenizer
    monkeypatch.setattr(graph_tokenizer, "GraphTokenizer", lambda vocab, maxlen: real(vocab, maxlen=5))
    with pytest.raises(RoformerSimError, match="tokenize_text gives other token ids"):
        ex.export_model(tiny_model, tmp_path / "sm", "savedmodel")
    assert list(tmp_path.iterdir()) == []
