"""``SimModel``: a RoFormer-Sim checkpoint as a sentence encoder and a UniLM generator.

One bert4keras RoFormer built with ``application='unilm'``, a 'linear' pooler
(Dense on [CLS], no activation) and a linear MLM head tied to the token
embedding, exactly as the original scripts build it. Two views share its
weights: ``encoder`` (token ids, segment ids → pooled vector) and ``seq2seq``
(→ MLM logits). Encoding follows the original retrieval script: maxlen 64,
segment ids 0, cosine similarity of the pooled vectors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf
from bert4keras.backend import K, keras
from bert4keras.models import build_transformer_model
from bert4keras.snippets import sequence_padding
from bert4keras.tokenizers import Tokenizer

from .. import checkpoints
from ..errors import RoformerSimError
from .forward import FastRoFormer
from ..settings import ENCODE_PRECISIONS, GENERATE_MAX_LEN, GENERATE_TOP_P, MAXLEN
from ..vectors import unit_rows

# bert_config.json keys that bert4keras does not take as constructor arguments.
_BUILD_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
)


def make_tokenizer(vocab: Sequence[str]) -> Tokenizer:
    """bert4keras's Tokenizer over ``vocab`` (ids = line numbers), lowercasing as the original scripts."""
    return Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def _progress(iterable, total: int, show: bool | None, desc: str):
    if show is None:
        show = total > 20
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


class SimModel:
    """A RoFormer-Sim model: encoder for similarity, UniLM head for generation.

    Args:
        config: bert_config.json as a dict.
        vocab: the tokens, one per id.
        weights: by checkpoint variable name (None: bert4keras's initial values).
        dropout_rate: hidden and embedding dropout (None: the config's hidden_dropout_prob).
        attention_dropout_rate: dropout on the attention probabilities (None: the
            config's attention_probs_dropout_prob), set apart from ``dropout_rate``
            as in bert4keras.
        maxlen: tokens per encoded text.

    Example:
    >>> model = SimModel.load("checkpoints/chinese_roformer-sim-char-ft_L-6_H-384_A-6")
    >>> model.similarity("今天天气不错", "今天天气很好")
    """

    def __init__(
        self,
        config: Mapping,
        vocab: Sequence[str],
        weights: Mapping[str, np.ndarray] | None = None,
        *,
        dropout_rate: float | None = None,
        attention_dropout_rate: float | None = None,
        maxlen: int = MAXLEN,
    ) -> None:
        self.config = dict(config)
        self.vocab = list(vocab)
        checkpoints.check_vocab_size(self.vocab, self.config["vocab_size"])
        self.maxlen = maxlen
        self.tokenizer = make_tokenizer(self.vocab)
        build_args = {k: self.config[k] for k in _BUILD_KEYS if k in self.config}
        # As bert4keras's build_transformer_model: a rate not given comes from the
        # config (hidden_dropout_prob, attention_probs_dropout_prob). The training
        # stages pass both (roformer_sim_ft.settings.StageSettings).
        if dropout_rate is not None:
            build_args["dropout_rate"] = dropout_rate
        if attention_dropout_rate is not None:
            build_args["attention_dropout_rate"] = attention_dropout_rate
        self.transformer = build_transformer_model(
            None,
            None,
            model="roformer",
            application="unilm",
            with_pool="linear",
            with_mlm="linear",
            return_keras_model=False,
            **build_args,
        )
        self.model: keras.Model = self.transformer.model
        self.encoder = keras.Model(self.model.inputs, self.model.outputs[0], name="encoder")
        self.seq2seq = keras.Model(self.model.inputs, self.model.outputs[1], name="seq2seq")
        self._encode_fns: dict = {}
        self._fast = None
        if weights is not None:
            self.set_weights(weights)

    # ----------------------------------------------------------------- I/O
    @classmethod
    def load(cls, path: str | os.PathLike, init_missing_heads: bool = False, **kwargs) -> "SimModel":
        """Load a released checkpoint (folder or ``bert_model.ckpt`` prefix).

        ``init_missing_heads``: initialise a pooler or MLM head the checkpoint
        lacks (a plain RoFormer; ``checkpoints.absent_heads`` names them).
        """
        config, vocab, weights = checkpoints.load_checkpoint(path, init_missing_heads)
        return cls(config, vocab, weights, **kwargs)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model in the released layout (atomic, verified); an earlier checkpoint
        in ``path`` is replaced only with ``overwrite``."""
        return checkpoints.write_checkpoint(path, self.config, self.vocab, self.get_weights(), overwrite=overwrite)

    def _layer_variables(self):
        """(keras variable, checkpoint name) for every weight, via bert4keras's mapping."""
        expected = checkpoints.expected_variables(self.config)
        pairs = []
        for layer_name, names in self.transformer.variable_mapping().items():
            if layer_name not in self.transformer.layers:
                continue
            layer = self.transformer.layers[layer_name]
            for variable, name in zip(layer.trainable_weights, names):
                pairs.append((variable, name))
        found = {name for _, name in pairs}
        if found != set(expected):
            raise RoformerSimError(
                f"model variables do not match the released layout: {sorted(set(expected) ^ found)}"
            )
        return pairs

    def get_weights(self) -> dict[str, np.ndarray]:
        """Weights by checkpoint variable name, float32."""
        pairs = self._layer_variables()
        values = K.batch_get_value([v for v, _ in pairs])
        return {name: np.asarray(value, np.float32) for (_, name), value in zip(pairs, values)}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Assign weights by checkpoint variable name; every variable must be given."""
        updates = []
        for variable, name in self._layer_variables():
            if name not in weights:
                raise RoformerSimError(f"weights lack variable {name}")
            value = np.asarray(weights[name])
            if tuple(value.shape) != tuple(variable.shape):
                raise RoformerSimError(
                    f"variable {name} has shape {tuple(value.shape)} but the model needs {tuple(variable.shape)}"
                )
            updates.append((variable, value))
        K.batch_set_value(updates)

    # ------------------------------------------------------------ encoding
    def tokenize(self, texts: Sequence[str], maxlen: int | None = None) -> list[list[int]]:
        """Token ids of each text as the original scripts make them (``[CLS] … [SEP]``)."""
        maxlen = maxlen or self.maxlen
        ids = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RoformerSimError(f"texts[{i}] is {type(text).__name__}, not str")
            if not text.strip():
                raise RoformerSimError(f"texts[{i}] is empty")
            ids.append(self.tokenizer.encode(text, maxlen=maxlen)[0])
        return ids

    def _encoder_call(self, fast: bool = True, precision: str = "fp32"):
        """A function of one padded batch [b, L] (segment ids 0) → pooled vectors, for one
        ``encode`` call: :meth:`FastRoFormer.pooled_of <roformer_sim_ft.model.forward.FastRoFormer.pooled_of>`
        with weights read now from the live variables, if ``fast`` and the layout allows,
        else ``self.encoder``."""
        if precision not in ENCODE_PRECISIONS:
            raise RoformerSimError(f"precision must be one of {', '.join(ENCODE_PRECISIONS)}, got {precision!r}")
        spec = tf.TensorSpec([None, None], tf.int32)
        if not (fast and self.fast_forward is not None):
            if precision != "fp32":
                raise RoformerSimError(f"precision={precision!r} needs the fast path (fast=True and the plain RoFormer layout)")
            fn = self._encode_fns.get("keras")
            if fn is None:

                @tf.function(input_signature=[spec])
                def fn(tokens):
                    return self.encoder([tokens, tf.zeros_like(tokens)], training=False)

                self._encode_fns["keras"] = fn
            return lambda ids: fn(tf.constant(ids, tf.int32)).numpy()
        fns = self._encode_fns.get(precision)
        if fns is None:  # (weights of this call, pooled vectors of a batch), traced once each
            weights_fn = tf.function(lambda: self.fast_forward.encoder_weights(precision))
            structure = weights_fn.get_concrete_function().structured_outputs
            weight_spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), structure)
            fns = (weights_fn, tf.function(self.fast_forward.pooled_of, input_signature=[spec, weight_spec]))
            self._encode_fns[precision] = fns
        weights_fn, pooled_fn = fns
        weights = weights_fn()
        return lambda ids: pooled_fn(tf.constant(ids, tf.int32), weights).numpy()

    @property
    def fast_forward(self) -> "FastRoFormer | None":
        """This model's forward pass in plain TF ops over its live weights (encoding and cached
        decoding use it), or None for a layout it does not cover (the keras model is used then)."""
        if self._fast is None:
            try:
                self._fast = FastRoFormer(self)
            except RoformerSimError:
                self._fast = False
        return self._fast or None

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 64,
        normalize: bool = True,
        show_progress_bar: bool | None = None,
        fast: bool = True,
        precision: str = "fp32",
    ) -> np.ndarray:
        """Pooled sentence vectors, shape [n, hidden] (or [hidden] for one string).

        Texts are sorted by length and batched so that padding is small; the
        result is in input order. ``fast`` (default) runs :attr:`fast_forward`,
        the same forward pass with less work (vectors equal to ``encoder.predict``
        within 1e-5, fp32); ``fast=False`` calls the keras ``encoder``.

        ``precision="bf16"`` (fast path only) runs the dense layers' matmuls in
        bfloat16 (about 2× the fp32 matmul speed on CPUs with AVX512-BF16) at an
        accuracy cost: min cosine to the fp32 vectors 0.999998 (L-6, first 1024
        LCQMC valid sentences) and 0.99998 (L-12, first 512), random weights
        (docs/PERFORMANCE.md). The default ``"fp32"`` keeps the 1e-5 equivalence.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if batch_size < 1:
            raise RoformerSimError(f"batch_size must be positive, got {batch_size}")
        ids = self.tokenize(texts)
        call = self._encoder_call(fast, precision)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(texts), self.config["hidden_size"]), np.float32)
        starts = range(0, len(ids), batch_size)
        for start in _progress(starts, len(starts), show_progress_bar, "encode"):
            index = order[start : start + batch_size]
            out[index] = call(sequence_padding([ids[i] for i in index]))
        if normalize:
            out = unit_rows(out)
        return out[0] if single else out

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> float | np.ndarray:
        """Cosine similarity: a float for two strings, a [len(a), len(b)] matrix for lists."""
        va, vb = self.encode(a), self.encode(b)
        sims = np.atleast_2d(va) @ np.atleast_2d(vb).T
        return float(sims[0, 0]) if isinstance(a, str) and isinstance(b, str) else sims

    def most_similar(
        self, query: str, corpus: Sequence[str], top_k: int = 10, batch_size: int = 64
    ) -> list[tuple[str, float]]:
        """The ``top_k`` texts of ``corpus`` closest to ``query`` by cosine, best first."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise RoformerSimError(f"top_k must be a positive integer, got {top_k!r}")
        corpus = list(corpus)
        if not corpus:
            return []
        sims = self.encode(corpus, batch_size=batch_size) @ self.encode(query)
        best = np.argsort(-sims, kind="stable")[:top_k]
        return [(corpus[i], float(sims[i])) for i in best]

    # ---------------------------------------------------------- generation
    def generate(
        self,
        text: str,
        n: int = 1,
        top_p: float | None = GENERATE_TOP_P,
        top_k: int | None = None,
        max_len: int = GENERATE_MAX_LEN,
        seed: int | None = None,
        use_cache: bool = True,
    ) -> list[str]:
        """n continuations of ``[CLS] text [SEP]`` sampled by the UniLM head.

        Top-k (optional) then top-p filtering as bert4keras's ``random_sample``
        (``top_p`` None or 1: no top-p); each sample stops at [SEP] (not
        included) or after ``max_len`` tokens.
        A text longer than ``maxlen`` tokens is truncated as the encoder does;
        an empty one raises ``RoformerSimError``. A given ``seed`` repeats
        exactly. ``use_cache=False`` runs the original full-recompute decoder.
        """
        from . import generation

        return generation.generate(self, text, n, top_p, top_k, max_len, seed, use_cache)

    def gen_synonyms(self, text: str, n: int = 100, k: int = 20, seed: int | None = None) -> list[str]:
        """Up to k similar sentences: sample n, drop duplicates, empty strings and
        the input (as given or as the tokenizer writes it back), rank by the
        encoder's cosine to the input (most similar first), as the original script.

        Input handling as ``generate`` (over-long text truncated, empty text an error).
        """
        from . import generation

        return generation.gen_synonyms(self, text, n=n, k=k, seed=seed)


def pad(batch: Iterable[Sequence[int]]) -> np.ndarray:
    """Right-pad token id lists with 0 ([PAD]) into an int32 array."""
    return sequence_padding(list(batch)).astype(np.int32)
