"""The TF SavedModel export: the serving signatures, written and checked after loading.

Id signatures (TensorFlow only): ``encode`` (also ``serving_default``) maps
token and segment ids to L2-normalised vectors, ``similarity`` gives the
row-wise cosine of two batches. With ``tensorflow_text`` the raw-string
signatures too, tokenising in the graph as bert4keras does
(:mod:`.graph_tokenizer`): ``tokenize_text``, ``encode_text`` (as
``SimModel.encode``), ``similarity_text`` and ``generate_text``: ``n``
candidates sampled for one ``text`` with a ``seed`` by the compiled
KV-cached decoder (:meth:`FastRoFormer.decoder <roformer_sim_ft.model.forward.FastRoFormer.decoder>`),
top-p ``GENERATE_TOP_P`` and at most ``GENERATE_MAX_LEN`` tokens (the
defaults of ``generate``, fixed at export), ``n`` at most ``GENERATE_MAX_SAMPLES``, written back as text as
``generate`` writes them, each with its cosine to ``text``.

Bad requests are refused with ``InvalidArgumentError`` and one reason naming
the input (:func:`_check_ids`, :func:`_check_texts`, :func:`_check_pair`):
empty text (only white space, as ``SimModel`` refuses it), rows of length 0,
``segment_ids`` of another shape than ``token_ids``, and two batches of
different sizes for a similarity. An empty batch gives empty outputs
(``[0, hidden]`` vectors, ``[0]`` similarities).

:mod:`roformer_sim_ft.export` calls :func:`write` and :func:`verify`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from .. import checkpoints
from ..model import generation
from . import graph_tokenizer
from ..errors import RoformerSimError
from ..model.sim_model import SimModel
from ..model.sampling import seed_pair
from ..settings import GENERATE_MAX_LEN, GENERATE_MAX_SAMPLES, GENERATE_TOP_P

STRING_SIGNATURES = ("tokenize_text", "encode_text", "similarity_text")
VERIFY_GENERATE = {"text": "给我推荐一款红色的车，最好是SUV。", "n": 4, "seed": 2021}  # the export's generate_text check


def _check_ids(token_ids: tf.Tensor, segment_ids: tf.Tensor, names: tuple[str, str]) -> list:
    """Assert ops: ``segment_ids`` has the shape of ``token_ids``, and rows are not of length 0
    (a batch of 0 rows may have any length). ``names``: the two inputs as the caller calls them."""
    ids, segs = tf.shape(token_ids), tf.shape(segment_ids)
    return [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(ids, segs)),
            [tf.strings.format(f"{names[0]} has shape {{}} but {names[1]} {{}}; they must be the same", (ids, segs))],
        ),
        tf.debugging.Assert(
            (ids[0] == 0) | (ids[1] > 0),
            [tf.strings.format(f"{names[0]} has {{}} rows of length 0; each row needs at least [CLS]", ids[0])],
        ),
    ]


def _blank(text: tf.Tensor) -> tf.Tensor:
    """Which strings are empty or only white space (what ``str.strip`` removes): ``SimModel``'s empty text."""
    return tf.strings.regex_full_match(text, graph_tokenizer.char_classes()["strip"] + "*")


def _check_texts(text: tf.Tensor, name: str) -> tf.Tensor:
    """An assert op: no string of ``text`` [batch] is empty (:func:`_blank`); the message names the first."""
    blank = _blank(text)
    first = tf.concat([tf.where(blank)[:, 0], tf.shape(text, out_type=tf.int64)], 0)[0]
    return tf.debugging.Assert(~tf.reduce_any(blank), [tf.strings.format(f"{name}[{{}}] is empty", first)])


def _check_pair(a: tf.Tensor, b: tf.Tensor, names: tuple[str, str], what: str) -> tf.Tensor:
    """An assert op: ``a`` and ``b`` have as many rows (``what``: rows or strings), as a row-wise similarity needs."""
    na, nb = tf.shape(a)[0], tf.shape(b)[0]
    return tf.debugging.Assert(
        tf.equal(na, nb),
        [tf.strings.format(f"{names[0]} has {{}} {what} but {names[1]} has {{}}; both need the same number", (na, nb))],
    )


class ServingModule(tf.Module):
    """The model's serving signatures as tf.functions. The Keras model is captured,
    not tracked, so only its variables (not bert4keras's layers) are serialised.

    Args:
        model: the model to serve.
        tokenizer: a :class:`~roformer_sim_ft.export.graph_tokenizer.GraphTokenizer` for the
            string signatures (None: id signatures only).
        generate: add ``generate_text`` (needs ``tokenizer`` and ``model.fast_forward``).
    """

    def __init__(self, model: SimModel, tokenizer=None, generate: bool = False) -> None:
        super().__init__(name="roformer_sim")
        encoder = model.encoder
        self.weights = list((model.model if generate else encoder).weights)
        spec = tf.TensorSpec([None, None], tf.int32)

        def vectors_of(token_ids, segment_ids, checks=()):
            """L2-normalised pooled vectors [batch, hidden], after ``checks`` (assert ops)."""
            with tf.control_dependencies(list(checks)):
                # a batch of 0 rows of length 0 (0 strings tokenised): length 1, so the pooler's [CLS] exists
                pad = [[0, 0], [0, tf.maximum(1 - tf.shape(token_ids)[1], 0)]]
                token_ids, segment_ids = tf.pad(token_ids, pad), tf.pad(segment_ids, pad)
            vectors = encoder([token_ids, segment_ids], training=False)
            return tf.math.l2_normalize(vectors, axis=-1)

        @tf.function(input_signature=[spec, spec])
        def encode(token_ids, segment_ids):
            """L2-normalised pooled vectors [batch, hidden] ([0, hidden] for 0 rows). Refused
            (InvalidArgument): ``segment_ids`` of another shape, rows of length 0."""
            checks = _check_ids(token_ids, segment_ids, ("token_ids", "segment_ids"))
            return {"vectors": vectors_of(token_ids, segment_ids, checks)}

        @tf.function(input_signature=[spec, spec, spec, spec])
        def similarity(token_ids_a, segment_ids_a, token_ids_b, segment_ids_b):
            """Cosine of row i of batch a with row i of batch b, [batch]. Refused (InvalidArgument):
            batches of different sizes, and what ``encode`` refuses."""
            checks = [_check_pair(token_ids_a, token_ids_b, ("token_ids_a", "token_ids_b"), "rows")]
            checks += _check_ids(token_ids_a, segment_ids_a, ("token_ids_a", "segment_ids_a"))
            checks += _check_ids(token_ids_b, segment_ids_b, ("token_ids_b", "segment_ids_b"))
            a, b = vectors_of(token_ids_a, segment_ids_a, checks), vectors_of(token_ids_b, segment_ids_b, checks)
            return {"similarity": tf.reduce_sum(a * b, axis=-1)}

        self.encode = encode
        self.similarity = similarity
        if tokenizer is None:
            return
        self.tokenizer = tokenizer
        text = tf.TensorSpec([None], tf.string)

        def text_vectors(text, checks=()):
            """Vectors of raw strings [batch, hidden], after ``checks`` (assert ops)."""
            with tf.control_dependencies(list(checks)):
                ids = tokenizer(text)
            return vectors_of(ids, tf.zeros_like(ids))

        @tf.function(input_signature=[text])
        def tokenize_text(text):
            """bert4keras token ids ([CLS] … [SEP], maxlen, 0-padded) and segment ids 0, as
            ``SimModel.tokenize``: empty text (only white space) is refused (InvalidArgument)."""
            with tf.control_dependencies([_check_texts(text, "text")]):
                ids = tokenizer(text)
            return {"token_ids": ids, "segment_ids": tf.zeros_like(ids)}

        @tf.function(input_signature=[text])
        def encode_text(text):
            """L2-normalised vectors [batch, hidden] of raw strings, as ``SimModel.encode`` ([0, hidden]
            for 0 strings); empty text (only white space) is refused (InvalidArgument)."""
            return {"vectors": text_vectors(text, [_check_texts(text, "text")])}

        @tf.function(input_signature=[text, text])
        def similarity_text(text_a, text_b):
            """Cosine of text_a[i] with text_b[i], [batch]. Refused (InvalidArgument): batches of
            different sizes, empty text (only white space)."""
            checks = [_check_pair(text_a, text_b, ("text_a", "text_b"), "strings")]
            checks += [_check_texts(text_a, "text_a"), _check_texts(text_b, "text_b")]
            a, b = text_vectors(text_a, checks), text_vectors(text_b, checks)
            return {"similarity": tf.reduce_sum(a * b, axis=-1)}

        self.tokenize_text = tokenize_text
        self.encode_text = encode_text
        self.similarity_text = similarity_text
        if not generate:
            return
        self.detokenizer = graph_tokenizer.GraphDetokenizer(model.vocab)
        decoder = model.fast_forward.decoder(top_p=GENERATE_TOP_P < 1)
        end_id = model.tokenizer._token_end_id

        @tf.function(input_signature=[
            tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64)
        ])
        def generate_text(text, n, seed):
            """``n`` candidates for ``text`` as ``generate(text, n, seed=seed)`` (string [n], in sample
            order) and each one's cosine with ``text`` ([n], as ``gen_synonyms`` ranks them). Refused
            (InvalidArgument) before any sampling: empty text, ``n`` < 1 or over ``GENERATE_MAX_SAMPLES``, a negative seed."""
            checks = [
                tf.debugging.Assert(n > 0, [tf.strings.format("n must be a positive integer, got {}", n)]),
                tf.debugging.Assert(
                    n <= GENERATE_MAX_SAMPLES, [tf.strings.format(f"n must be at most {GENERATE_MAX_SAMPLES}, got {{}}", n)]
                ),
                tf.debugging.Assert(seed >= 0, [tf.strings.format("seed must be a non-negative integer, got {}", seed)]),
                tf.debugging.Assert(~_blank(text), ["text is empty"]),
            ]
            with tf.control_dependencies(checks):
                source, n, seed = tokenizer(text[None])[0], tf.identity(n), tf.identity(seed)
            tokens, _, _ = decoder(source, n, GENERATE_MAX_LEN, seed_pair(seed), GENERATE_TOP_P, 0)
            candidates = self.detokenizer(tokens, mask=tf.cumsum(tf.cast(tokens == end_id, tf.int32), axis=1) == 0)
            vectors = text_vectors(tf.concat([text[None], candidates], 0))  # a candidate may be ""
            return {"candidates": candidates, "similarity": tf.linalg.matvec(vectors[1:], vectors[0])}

        self.generate_text = generate_text


def write(model: SimModel, folder: Path) -> None:
    """Save the SavedModel (and ``assets.extra/``: config and vocab) into ``folder``."""
    tokenizer = None
    if graph_tokenizer.unavailable_reason() is None:
        tokenizer = graph_tokenizer.GraphTokenizer(model.vocab, maxlen=model.maxlen)
    module = ServingModule(model, tokenizer, generate=tokenizer is not None and model.fast_forward is not None)
    encode = module.encode.get_concrete_function()
    signatures = {"serving_default": encode, "encode": encode, "similarity": module.similarity.get_concrete_function()}
    for name in (*STRING_SIGNATURES, "generate_text"):
        if hasattr(module, name):
            signatures[name] = getattr(module, name).get_concrete_function()
    tf.saved_model.save(module, str(folder), signatures=signatures)
    checkpoints.write_config_vocab(folder / "assets.extra", model.config, model.vocab)


def verify(
    model: SimModel, folder: Path, token_ids: np.ndarray, texts: Sequence[str], tolerance: float
) -> tuple[np.ndarray, str]:
    """Load ``folder`` with ``tf.saved_model.load`` and check every signature written:
    ``similarity`` against its own ``encode``, the string signatures on ``texts`` (whose
    token ids are ``token_ids``) against ``SimModel``. Returns the ``encode`` vectors
    of ``token_ids`` (export compares them with the model) and what was checked."""
    if graph_tokenizer.unavailable_reason() is None:
        import tensorflow_text  # noqa: F401  (registers the ops the string signatures use)
    loaded = tf.saved_model.load(str(folder))
    ids = tf.constant(token_ids, tf.int32)
    vectors = loaded.signatures["encode"](token_ids=ids, segment_ids=tf.zeros_like(ids))["vectors"].numpy()
    sims = loaded.similarity(ids, tf.zeros_like(ids), ids[::-1], tf.zeros_like(ids))["similarity"].numpy()
    expected_sims = np.sum(vectors * vectors[::-1], axis=-1)
    if not np.max(np.abs(sims - expected_sims)) <= 1e-5:
        raise RoformerSimError(f"{folder}: savedmodel similarity disagrees with its encode by {np.max(np.abs(sims - expected_sims)):.3g}")
    checked = "tf.saved_model.load, encode and similarity signatures"
    if "encode_text" not in loaded.signatures:
        reason = graph_tokenizer.unavailable_reason() or "not written"
        return vectors, f"{checked}; string signatures skipped: {reason}"
    checked += "; " + _verify_text_signatures(model, folder, loaded, token_ids, texts, tolerance)
    if "generate_text" not in loaded.signatures:
        return vectors, f"{checked}; generate_text skipped: this model's layout has no compiled decoder"
    return vectors, f"{checked}; " + _verify_generate(model, folder, loaded, tolerance)


def _verify_text_signatures(model: SimModel, folder: Path, loaded, token_ids: np.ndarray, texts, tolerance) -> str:
    """tokenize_text ids equal to bert4keras's, encode_text/similarity_text vectors and
    similarities within ``tolerance`` of ``SimModel.encode``."""
    texts = list(texts)
    strings = tf.constant(texts)
    got_ids = loaded.signatures["tokenize_text"](text=strings)["token_ids"].numpy()
    if got_ids.shape != token_ids.shape or not np.array_equal(got_ids, token_ids):
        bad = next(i for i in range(len(texts)) if i >= len(got_ids) or not np.array_equal(got_ids[i], token_ids[i]))
        raise RoformerSimError(
            f"{folder}: savedmodel tokenize_text gives other token ids than bert4keras for {texts[bad]!r}; nothing written"
        )
    expected = model.encode(texts)
    vectors = loaded.signatures["encode_text"](text=strings)["vectors"].numpy()
    sims = loaded.signatures["similarity_text"](text_a=strings, text_b=strings[::-1])["similarity"].numpy()
    diff = max(
        float(np.max(np.abs(vectors - expected))),
        float(np.max(np.abs(sims - np.sum(expected * expected[::-1], axis=-1)))),
    )
    if not diff <= tolerance:
        raise RoformerSimError(
            f"{folder}: savedmodel encode_text/similarity_text differ from SimModel.encode by {diff:.3g} "
            f"> {tolerance:g} on {len(texts)} sentences; nothing written"
        )
    return f"tokenize_text ids equal to bert4keras's, encode_text/similarity_text within {diff:.2g} of SimModel.encode"


def _verify_generate(model: SimModel, folder: Path, loaded, tolerance: float) -> str:
    """generate_text twice on VERIFY_GENERATE: the same candidates, equal to ``generate``'s;
    similarities within ``tolerance`` of ``SimModel.encode``'s cosines."""
    text, n, seed = VERIFY_GENERATE["text"], VERIFY_GENERATE["n"], VERIFY_GENERATE["seed"]
    run = lambda: loaded.signatures["generate_text"](  # noqa: E731
        text=tf.constant(text), n=tf.constant(n, tf.int32), seed=tf.constant(seed, tf.int64)
    )
    first, second = run(), run()
    got = [c.decode("utf-8") for c in first["candidates"].numpy()]
    expected = generation.generate(model, text, n=n, seed=seed)
    if not np.array_equal(first["candidates"].numpy(), second["candidates"].numpy()):
        raise RoformerSimError(f"{folder}: savedmodel generate_text gives other candidates for the same seed; nothing written")
    if got != expected:
        bad = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise RoformerSimError(
            f"{folder}: savedmodel generate_text differs from generate for {text!r} (n={n}, seed {seed}) "
            f"at candidate {bad}: {got[bad:bad + 1]} vs {expected[bad:bad + 1]}; nothing written"
        )
    vectors = model.encode([text] + expected)
    diff = float(np.max(np.abs(first["similarity"].numpy() - vectors[1:] @ vectors[0])))
    if not diff <= tolerance:
        raise RoformerSimError(
            f"{folder}: savedmodel generate_text similarities differ from SimModel.encode's by {diff:.3g} > {tolerance:g}; nothing written"
        )
    return f"generate_text equal to generate (n={n}, seed {seed}) and repeatable, similarities within {diff:.2g}"
