"""RoFormer-Sim(-FT) as a native Keras 3 model, for Keras 3 apps on any backend.

bert4keras needs Keras 2 (tf_keras); a Keras app written today runs Keras 3 on
TensorFlow, JAX or PyTorch. This module builds the same network — token and
segment embeddings, rotary self-attention with the UniLM mask, feed-forward,
LayerNorm (epsilon 1e-7 as bert4keras's; 1e-12 in the MLM head), the linear
pooler and the MLM head tied to the token embedding — from Keras's own layers (``Dense``,
``LayerNormalization``, ``ReversibleEmbedding``, ``Dropout``) joined by
``keras.ops`` calls in a functional graph. Nothing in the graph is ours, so a
model saved with ``model.save("….keras")`` is self-describing:
``keras.saving.load_model`` opens it without this package, on every backend.

Weights come from the released layout (``bert_config.json``, ``vocab.txt``,
``bert_model.ckpt.*``, ours or the original ones), read with numpy by
:mod:`tensor_bundle`: no TensorFlow and no code from the checkpoint is run.
Importing this module needs numpy and Keras 3 only (set ``KERAS_BACKEND``
before importing keras to choose the backend).

Example:
    >>> from roformer_sim_ft.keras3 import SimEncoder
    >>> encoder = SimEncoder.from_checkpoint("chinese_roformer-sim-char-ft_L-6_H-384_A-6")
    >>> encoder.similarity("今天天气不错", "今天天气很好")
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..checkpoints import (REQUIRED_CONFIG_KEYS, VOCAB_NAME, block_variables, check_shape, check_stored, layout,
                           read_config, read_vocab, required_weight, resolve)
from ..errors import RoformerSimError
from ..settings import MAXLEN
from ..vectors import unit_rows
from .tensor_bundle import BundleReader
from .wordpiece import WordPieceTokenizer


def _import_keras3():
    """Keras 3, also in a process where bert4keras has bound the name ``keras`` (and
    ``keras.backend``, ``keras.layers``…) to tf_keras, as our own tests and exports do:
    set those entries aside, import Keras 3, then put them back for bert4keras."""
    bound = sys.modules.get("keras")
    if bound is None or str(getattr(bound, "__version__", "")).startswith("3."):
        import keras

        return keras
    names = [n for n in sys.modules if n == "keras" or (n.startswith("keras.") and not n.startswith("keras.src"))]
    aside = {name: sys.modules.pop(name) for name in names}
    try:
        import keras
    finally:
        sys.modules.update(aside)
    if not str(getattr(keras, "__version__", "")).startswith("3."):
        raise ImportError(f"roformer_sim_ft.keras3 needs Keras 3; found keras {getattr(keras, '__version__', '?')}")
    return keras


keras = _import_keras3()
layers, ops = keras.layers, keras.ops

ARCHIVE_NAME = "roformer_sim.keras"
# bert4keras's RoFormer: its embedding and encoder LayerNorms take K.epsilon() (1e-7); the MLM head's
# LayerNorm comes from its BERT class, which passes BERT's 1e-12.
LAYER_NORM_EPSILON = 1e-7
MLM_NORM_EPSILON = 1e-12
# bert_config hidden_act → Keras activation name; "gelu" is bert4keras's erf form, as Keras's default gelu.
_ACTIVATIONS = {"gelu": "gelu", "gelu_erf": "gelu", "relu": "relu", "swish": "silu", "tanh": "tanh", "linear": None}


# ------------------------------------------------------------------ graph
def _activation(config: Mapping) -> tuple[str | None, bool]:
    """(Keras activation for a Dense, whether a tanh-approximated gelu op follows it)."""
    act = config.get("hidden_act", "gelu")
    if act == "gelu_tanh":
        return None, True
    if act not in _ACTIVATIONS:
        raise RoformerSimError(f"hidden_act {act!r} is not supported; known: {', '.join([*_ACTIVATIONS, 'gelu_tanh'])}")
    return _ACTIVATIONS[act], False


def _dense(x, units: int, name: str, config: Mapping | None = None):
    """A Dense layer; with ``config``, followed by its ``hidden_act``."""
    activation, tanh_gelu = _activation(config) if config is not None else (None, False)
    x = layers.Dense(units, activation=activation, name=name)(x)
    return ops.gelu(x, approximate=True) if tanh_gelu else x


def _norm(x, name: str, epsilon: float = LAYER_NORM_EPSILON):
    return layers.LayerNormalization(epsilon=epsilon, name=name)(x)


def _attention_allowed(token_ids, segment_ids):
    """[b, 1, query, key] bool: the UniLM mask (a token sees the keys whose segment-id
    cumsum is not above its own; all keys when segment ids are 0) and no [PAD] keys
    (the first position always counts, as bert4keras's Embedding mask)."""
    first = ops.equal(ops.cumsum(ops.ones_like(token_ids), axis=1), 1)
    valid = ops.logical_or(ops.not_equal(token_ids, 0), first)
    rank = ops.cumsum(segment_ids, axis=1)
    allowed = ops.less_equal(ops.expand_dims(rank, 1), ops.expand_dims(rank, 2))
    return ops.expand_dims(ops.logical_and(allowed, ops.expand_dims(valid, 1)), 1)


def _rotary_angles(token_ids, head_size: int):
    """cos and sin [b, L, 1, head_size/2] of bert4keras's sinusoidal positions (float32 as it computes them)."""
    positions = ops.cast(ops.cumsum(ops.ones_like(token_ids), axis=1) - 1, "float32")
    inverse = np.power(np.float32(10000.0), -2 * np.arange(head_size // 2, dtype=np.float32) / np.float32(head_size))
    angles = ops.expand_dims(ops.expand_dims(positions, -1), -1) * inverse.astype(np.float32)
    return ops.cos(angles), ops.sin(angles)


def _rotate(x, cos, sin, heads: int, head_size: int):
    """RoPE on interleaved pairs of each head: (x0, x1) → (x0 cos − x1 sin, x1 cos + x0 sin); [b, L, heads, d]."""
    pairs = layers.Reshape((-1, heads, head_size // 2, 2))(x)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = ops.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    return layers.Reshape((-1, heads, head_size))(rotated)


def _block(x, allowed, cos, sin, config: Mapping, index: int):
    """One RoFormer layer: attention → add → LayerNorm → feed-forward → add → LayerNorm."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    size = hidden // heads
    p = f"layer_{index}_"
    q = _rotate(_dense(x, hidden, p + "query"), cos, sin, heads, size)
    k = _rotate(_dense(x, hidden, p + "key"), cos, sin, heads, size)
    v = layers.Reshape((-1, heads, size))(_dense(x, hidden, p + "value"))
    scores = ops.einsum("bjhd,bkhd->bhjk", q, k) / size**0.5
    probs = ops.softmax(ops.where(allowed, scores, float("-inf")), axis=-1)
    probs = layers.Dropout(config.get("attention_probs_dropout_prob", 0.1), name=p + "attention_dropout")(probs)
    o = layers.Reshape((-1, hidden))(ops.einsum("bhjk,bkhd->bjhd", probs, v))
    o = layers.Dropout(config.get("hidden_dropout_prob", 0.1), name=p + "attention_output_dropout")(
        _dense(o, hidden, p + "attention_output")
    )
    x = _norm(x + o, p + "attention_norm")
    f = _dense(_dense(x, config["intermediate_size"], p + "ffn_inner", config), hidden, p + "ffn_output")
    f = layers.Dropout(config.get("hidden_dropout_prob", 0.1), name=p + "ffn_dropout")(f)
    return _norm(x + f, p + "ffn_norm")


def build_model(config: Mapping, name: str = "roformer_sim") -> keras.Model:
    """The RoFormer-Sim network for a ``bert_config.json`` dict, with fresh weights.

    Inputs ``{"token_ids", "segment_ids"}`` (int32 [batch, length], [PAD] = 0);
    outputs ``{"pooled": [batch, hidden], "mlm_logits": [batch, length, vocab]}``
    as bert4keras's ``build_transformer_model(model="roformer",
    application="unilm", with_pool="linear", with_mlm="linear")``. Dropout as in
    the config, active only when called with ``training=True``.
    """
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise RoformerSimError(f"bert_config lacks {', '.join(missing)}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads or (hidden // heads) % 2:
        raise RoformerSimError(f"hidden_size {hidden} / num_attention_heads {heads} must be an even head size")
    if config.get("embedding_size", hidden) != hidden:
        raise RoformerSimError("embedding_size different from hidden_size is not a RoFormer-Sim layout")
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    segment_ids = keras.Input((None,), dtype="int32", name="segment_ids")
    token_embedding = layers.ReversibleEmbedding(config["vocab_size"], hidden, tie_weights=True, name="token_embedding")
    segments = layers.Embedding(config.get("type_vocab_size", 2), hidden, name="segment_embedding")(segment_ids)
    x = _norm(token_embedding(token_ids) + segments, "embedding_norm")
    x = layers.Dropout(config.get("hidden_dropout_prob", 0.1), name="embedding_dropout")(x)
    allowed = _attention_allowed(token_ids, segment_ids)
    cos, sin = _rotary_angles(token_ids, hidden // heads)
    for index in range(config["num_hidden_layers"]):
        x = _block(x, allowed, cos, sin, config, index)
    pooled = _dense(x[:, 0], hidden, "pooler")
    h = _norm(_dense(x, hidden, "mlm_transform", config), "mlm_norm", MLM_NORM_EPSILON)
    # The MLM output bias as a one-row Embedding: a trainable [vocab] vector from Keras's own layers.
    bias = layers.Embedding(1, config["vocab_size"], embeddings_initializer="zeros", name="mlm_bias")(
        ops.zeros_like(token_ids[:, :1])
    )
    logits = token_embedding(h, reverse=True) + bias
    return keras.Model(
        {"token_ids": token_ids, "segment_ids": segment_ids}, {"pooled": pooled, "mlm_logits": logits}, name=name
    )


def encoder_model(model: keras.Model) -> keras.Model:
    """The pooled-vector part of a :func:`build_model` model (also one loaded from ``.keras``), sharing its weights."""
    return keras.Model(model.input, model.get_layer("pooler").output, name=f"{model.name}_encoder")


# ---------------------------------------------------------------- weights
# Released-layout role (checkpoints.layout) -> Keras layer name where the two differ; an encoder
# layer's are named layer_{index}_{role}.
KERAS_LAYERS = {"word_embeddings": "token_embedding", "segment_embeddings": "segment_embedding"}


def weight_names(config: Mapping) -> dict[str, tuple[str, int]]:
    """Released-layout variable name → (Keras layer name, index in ``layer.get_weights()``)."""
    names = {}
    for block in layout(config):
        layer = KERAS_LAYERS.get(block.role, block.role)
        layer = layer if block.layer is None else f"layer_{block.layer}_{layer}"
        for index, (name, _) in enumerate(block_variables(block)):
            names[name] = (layer, index)
    return names


def set_released_weights(model: keras.Model, weights: Mapping[str, np.ndarray], config: Mapping) -> None:
    """Assign released-layout weights (by variable name) to a :func:`build_model` model; all are required."""
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for name, (layer, index) in weight_names(config).items():
        by_layer.setdefault(layer, {})[index] = np.asarray(required_weight(weights, name), np.float32)
    for layer_name, values in by_layer.items():
        layer = model.get_layer(layer_name)
        current = layer.get_weights()
        new = [values[i] for i in range(len(current))]
        if layer_name == "mlm_bias":
            new[0] = new[0].reshape(1, -1)
        for i, (old, value) in enumerate(zip(current, new)):
            if old.shape != value.shape:
                name = next(n for n, where in weight_names(config).items() if where == (layer_name, i))
                check_shape(name, value.shape, old.shape, needer="the model")
        layer.set_weights(new)


def released_weights(model: keras.Model, config: Mapping) -> dict[str, np.ndarray]:
    """The inverse of :func:`set_released_weights`: weights by released-layout variable name."""
    out = {}
    for name, (layer, index) in weight_names(config).items():
        value = np.asarray(model.get_layer(layer).get_weights()[index], np.float32)
        out[name] = value.reshape(-1) if layer == "mlm_bias" else value
    return out


# -------------------------------------------------------------------- I/O
def load_checkpoint(path: str | os.PathLike, verify: bool = True) -> tuple[keras.Model, dict, list[str]]:
    """(model, config, vocab) from a released folder or ``…/bert_model.ckpt`` prefix.

    The TF1 checkpoint is read with numpy (crc32c-checked unless ``verify`` is
    False); every variable of the layout must be there with its config shape.
    """
    files = resolve(path)
    prefix = files.prefix
    config = read_config(files.config, check_activation=False)  # build_model checks it against _ACTIVATIONS
    vocab = read_vocab(files.vocab, config["vocab_size"])
    reader = BundleReader(prefix)
    stored = reader.shapes()
    check_stored(prefix, list(weight_names(config)), stored)
    model = build_model(config)
    set_released_weights(model, {name: reader.read(name, verify) for name in weight_names(config)}, config)
    return model, config, vocab


# --------------------------------------------------------------- encoding
class SimEncoder:
    """Sentence vectors and cosine similarity from a Keras 3 RoFormer-Sim model.

    Args:
        model: a :func:`build_model` model, e.g. from :func:`load_checkpoint` or
            ``keras.saving.load_model("…/roformer_sim.keras")``.
        vocab: its tokens (``vocab.txt``).
        maxlen: tokens per sentence, [CLS] and [SEP] included (longer ones are cut).

    Sentences are tokenised as the original scripts do (bert4keras's Tokenizer,
    lowercased), sorted by length and batched, segment ids 0; the vector is the
    linear pooler's output on [CLS].

    Example:
        >>> encoder = SimEncoder.from_keras("exported/roformer_sim.keras")  # vocab.txt beside it
        >>> vectors = encoder.encode(["今天天气不错", "今天天气很好"])  # [2, hidden], unit length
        >>> encoder.similarity("今天天气不错", "今天天气很好")
    """

    def __init__(self, model: keras.Model, vocab: Sequence[str], maxlen: int = MAXLEN) -> None:
        self.model = model
        self.encoder = encoder_model(model)
        self.tokenizer = WordPieceTokenizer(vocab)
        self.maxlen = maxlen

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "SimEncoder":
        """From the released layout (folder or ``bert_model.ckpt`` prefix)."""
        model, _, vocab = load_checkpoint(path)
        return cls(model, vocab, **kwargs)

    @classmethod
    def from_keras(cls, path: str | os.PathLike, **kwargs) -> "SimEncoder":
        """From an exported ``.keras`` archive with its ``vocab.txt`` beside it."""
        path = Path(path)
        if not path.exists():
            raise RoformerSimError(f"keras archive missing: {path}")
        return cls(keras.saving.load_model(path), read_vocab(path.parent / VOCAB_NAME), **kwargs)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] … [SEP]`` ids of each text (at most ``maxlen``)."""
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise RoformerSimError(f"texts[{i}] is not a non-empty string")
            out.append(self.tokenizer.encode(text, self.maxlen))
        return out

    def encode(self, texts: str | Sequence[str], batch_size: int = 64, normalize: bool = True) -> np.ndarray:
        """Sentence vectors [n, hidden] (or [hidden] for one string), in input order."""
        single = isinstance(texts, str)
        ids = self.token_ids([texts] if single else list(texts))
        if batch_size < 1:
            raise RoformerSimError(f"batch_size must be positive, got {batch_size}")
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(ids), self.encoder.output.shape[-1]), np.float32)
        for start in range(0, len(ids), batch_size):
            index = order[start : start + batch_size]
            batch = pad_ids([ids[i] for i in index])
            inputs = {"token_ids": batch, "segment_ids": np.zeros_like(batch)}
            out[index] = ops.convert_to_numpy(self.encoder.predict_on_batch(inputs))
        if normalize:
            out = unit_rows(out)
        return out[0] if single else out

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> float | np.ndarray:
        """Cosine similarity: a float for two strings, a [len(a), len(b)] matrix for lists."""
        sims = np.atleast_2d(self.encode(a)) @ np.atleast_2d(self.encode(b)).T
        return float(sims[0, 0]) if isinstance(a, str) and isinstance(b, str) else sims


def pad_ids(batch: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-pad token id lists with 0 ([PAD]) into an int32 [batch, longest] array."""
    out = np.zeros((len(batch), max(len(x) for x in batch)), np.int32)
    for row, ids in zip(out, batch):
        row[: len(ids)] = ids
    return out
