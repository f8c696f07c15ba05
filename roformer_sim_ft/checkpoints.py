"""The released RoFormer-Sim checkpoint layout: read, validate, write, init.

A released model is a folder holding ``bert_config.json``, ``vocab.txt`` and a
TF1 name-based checkpoint ``bert_model.ckpt.{index,data-00000-of-00001}``
(variable names as in Google's BERT, without position embeddings since
RoFormer's positions are rotary). This module knows that layout and nothing
about training. Reading never executes code from a checkpoint: it reads named
tensors with ``tf.train.load_checkpoint``. Writing goes to a temporary folder,
is read back and compared bit for bit, and only then renamed into place.
TensorFlow is loaded only by the functions that read or write the tensors, so
the config and vocab readers serve TensorFlow-free code (the Keras 3 model) too.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from .fs import folders as outputs
from .errors import RoformerSimError
from .fs.atomic import error_text, os_error, read_lines
from .settings import check_seed

CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"
CKPT_NAME = "bert_model.ckpt"
# Every file of a released checkpoint folder, as write_checkpoint writes it.
CKPT_FILES = (CONFIG_NAME, VOCAB_NAME, "checkpoint", CKPT_NAME + ".index", CKPT_NAME + ".data-00000-of-00001")
SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
REQUIRED_CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)
# Largest value of each integer of a config, far above any released BERT-style model (BERT-large: hidden
# 1024, 24 layers, 16 heads, intermediate 4096), and of the whole model's parameter count (8 GB in
# float32): a typo must stop in one line, not start a huge allocation.
CONFIG_MAXIMA = {
    "hidden_size": 16_384,
    "num_hidden_layers": 256,
    "num_attention_heads": 256,
    "intermediate_size": 65_536,
    "vocab_size": 1_000_000,
    "type_vocab_size": 1_024,
    "max_position_embeddings": 65_536,
}
MAX_PARAMETERS = 2_000_000_000
ACTIVATION_EXAMPLES = "e.g. gelu, gelu_tanh, relu, swish"


@dataclass(frozen=True)
class CheckpointFiles:
    """Where the three parts of a released checkpoint live."""

    config: Path
    prefix: Path
    vocab: Path


def resolve(path: str | os.PathLike) -> CheckpointFiles:
    """Find config, checkpoint prefix and vocab from a folder or a ``.../bert_model.ckpt`` prefix."""
    path = Path(path)
    if path.is_dir():
        folder, prefix = path, path / CKPT_NAME
        if not Path(str(prefix) + ".index").exists():
            indexes = sorted(folder.glob("*.ckpt.index"))
            if len(indexes) == 1:
                prefix = Path(str(indexes[0])[: -len(".index")])
    else:
        folder, prefix = path.parent, path
        if not path.exists() and not Path(str(path) + ".index").exists():
            raise RoformerSimError(f"checkpoint not found: {path} (expected a folder or a bert_model.ckpt prefix)")
        if path.suffix in (".index",) or ".data-" in path.name:
            prefix = path.with_name(path.name.split(".index")[0].split(".data-")[0])
    files = CheckpointFiles(folder / CONFIG_NAME, prefix, folder / VOCAB_NAME)
    for required in (files.config, files.vocab, Path(str(prefix) + ".index")):
        if not required.exists():
            if path.is_file() and prefix == path:  # a file, neither a prefix nor its .index / .data
                raise RoformerSimError(f"checkpoint file missing: {required.absolute()} (looked beside {path}, which "
                                       f"is a file: give the checkpoint folder or its {CKPT_NAME} prefix)")
            raise RoformerSimError(f"checkpoint file missing: {required}")
    if not list(prefix.parent.glob(prefix.name + ".data-*")):
        raise RoformerSimError(f"checkpoint file missing: {prefix}.data-00000-of-00001")
    return files


def read_config(path: str | os.PathLike, check_activation: bool = True) -> dict:
    """Read and check a BERT-style ``bert_config.json``.

    ``check_activation`` asks bert4keras (so TensorFlow) whether it knows
    ``hidden_act``; TensorFlow-free callers check it against their own table."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise RoformerSimError(f"checkpoint file missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RoformerSimError(f"{path}: not a JSON config ({e})") from None
    if not isinstance(config, dict):
        raise RoformerSimError(f"{path}: not a JSON object")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise RoformerSimError(f"{path}: missing config keys {', '.join(missing)}")
    _check_config_values(path, config, check_activation)
    if config["hidden_size"] % config["num_attention_heads"]:
        raise RoformerSimError(
            f"{path}: hidden_size {config['hidden_size']} is not a multiple of "
            f"num_attention_heads {config['num_attention_heads']}"
        )
    head = config["hidden_size"] // config["num_attention_heads"]
    if head % 2:
        raise RoformerSimError(f"{path}: the head size hidden_size / num_attention_heads = {head} must be even "
                               "(rotary positions turn pairs of dimensions)")
    return config


def _non_finite(value, where: str = "") -> tuple[str, float] | None:
    """(where, number) of the first NaN or infinite number inside ``value`` (a JSON value), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}[{key!r}]" if where else str(key))
        if found:
            return found
    return None


def _check_config_values(path, config: Mapping, check_activation: bool = True) -> None:
    """One line for a config value the model cannot be built with (finiteness, type, range, size, activation)."""
    found = _non_finite(dict(config))
    if found:
        raise RoformerSimError(f"{path}: {found[0]} must be a finite number, got {json.dumps(found[1])}")
    for key, most in CONFIG_MAXIMA.items():
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RoformerSimError(f"{path}: {key} must be a positive integer, got {value!r}")
            if value > most:
                raise RoformerSimError(f"{path}: {key} must be at most {most:,}, got {value:,}")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise RoformerSimError(f"{path}: {key} must be a number in [0, 1), got {value!r}")
    value = config.get("initializer_range", 0.02)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise RoformerSimError(f"{path}: initializer_range must be a number in (0, 1], got {value!r}")
    if all(key in config for key in REQUIRED_CONFIG_KEYS):
        count = sum(math.prod(shape) for shape in expected_variables(config).values())
        if count > MAX_PARAMETERS:
            raise RoformerSimError(f"{path}: the config describes {count:,} parameters ({4 * count / 1e9:.0f} GB "
                                   f"in float32), more than the {MAX_PARAMETERS:,} this package builds")
    act = config.get("hidden_act", "gelu")
    if not isinstance(act, str):
        raise RoformerSimError(f"{path}: hidden_act must be the name of an activation ({ACTIVATION_EXAMPLES}), "
                               f"got {act!r}")
    if not check_activation:
        return
    from .compat import keras  # through compat: TensorFlow loads quietly, with bert4keras's activations

    try:
        keras.activations.get(act)
    except (ValueError, TypeError, KeyError):
        raise RoformerSimError(f"{path}: unknown hidden_act {act!r} ({ACTIVATION_EXAMPLES})") from None


def read_vocab(path: str | os.PathLike, vocab_size: int | None = None) -> list[str]:
    """Read ``vocab.txt`` (one token a line) and check its length and special tokens."""
    tokens = read_lines(path, missing="checkpoint file missing")
    if tokens and tokens[0].startswith("\ufeff"):  # a byte-order mark some editors write, not part of [PAD]
        tokens[0] = tokens[0][1:]
    while tokens and tokens[-1] == "":
        tokens.pop()
    seen: dict[str, int] = {}
    for n, token in enumerate(tokens, 1):
        if token == "":
            raise RoformerSimError(f"{path}:{n}: blank line inside the vocab (token ids after it would shift)")
        if token in seen:
            raise RoformerSimError(f"{path}:{n}: duplicate token {token!r} (also on line {seen[token]})")
        seen[token] = n
    if vocab_size is not None:
        check_vocab_size(tokens, vocab_size, path)
    for token, index in SPECIAL_TOKENS.items():
        if token == "[PAD]":
            continue
        if index >= len(tokens) or tokens[index] != token:
            raise RoformerSimError(f"{path}: line {index + 1} should be {token}")
    return tokens


class Block(NamedTuple):
    """A block of the released layout: ``role`` (and ``layer``, the encoder layer or None) names it for the other
    layouts (transformers, Keras 3); ``kind`` 'dense' holds ``prefix/kernel`` (``shape`` [in, out]) and
    ``prefix/bias``, 'norm' ``prefix/gamma`` and ``prefix/beta``, 'leaf' ``prefix`` itself."""
    role: str
    layer: int | None
    prefix: str
    kind: str
    shape: tuple[int, ...]


LAYER_BLOCKS = (  # an encoder layer's: role, name below bert/encoder/layer_N/, kind, shape of (hidden, inner)
    *((part, f"attention/self/{part}", "dense", lambda h, i: (h, h)) for part in ("query", "key", "value")),
    ("attention_output", "attention/output/dense", "dense", lambda h, i: (h, h)),
    ("attention_norm", "attention/output/LayerNorm", "norm", lambda h, i: (h,)),
    ("ffn_inner", "intermediate/dense", "dense", lambda h, i: (h, i)),
    ("ffn_output", "output/dense", "dense", lambda h, i: (i, h)),
    ("ffn_norm", "output/LayerNorm", "norm", lambda h, i: (h,)),
)


def layout(config: Mapping) -> list[Block]:
    """The released checkpoint's blocks in order (Google BERT names, no position embeddings): the one
    table that :func:`expected_variables`, the transformers export and the Keras 3 model read."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    t = config.get("type_vocab_size", 2)
    blocks = [Block("word_embeddings", None, "bert/embeddings/word_embeddings", "leaf", (v, h)),
              Block("segment_embeddings", None, "bert/embeddings/token_type_embeddings", "leaf", (t, h)),
              Block("embedding_norm", None, "bert/embeddings/LayerNorm", "norm", (h,))]
    for n in range(config["num_hidden_layers"]):
        blocks += [Block(role, n, f"bert/encoder/layer_{n}/{name}", kind, shape(h, i))
                   for role, name, kind, shape in LAYER_BLOCKS]
    return blocks + [Block("pooler", None, "bert/pooler/dense", "dense", (h, h)),
                     Block("mlm_transform", None, "cls/predictions/transform/dense", "dense", (h, h)),
                     Block("mlm_norm", None, "cls/predictions/transform/LayerNorm", "norm", (h,)),
                     Block("mlm_bias", None, "cls/predictions/output_bias", "leaf", (v,))]


def block_variables(block: Block) -> list[tuple[str, tuple[int, ...]]]:
    """(released name, shape) of each variable of ``block``, in ``get_weights()`` order (kernel, bias; gamma, beta)."""
    if block.kind == "dense":
        return [(block.prefix + "/kernel", block.shape), (block.prefix + "/bias", block.shape[-1:])]
    if block.kind == "norm":
        return [(block.prefix + "/gamma", block.shape), (block.prefix + "/beta", block.shape)]
    return [(block.prefix, block.shape)]


def expected_variables(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every variable of a released RoFormer-Sim checkpoint (Google BERT names, no position embeddings)."""
    return {name: shape for block in layout(config) for name, shape in block_variables(block)}


def check_vocab_size(vocab: Sequence[str], vocab_size: int, where: object = None) -> None:
    """Stop when ``vocab`` lacks the config's ``vocab_size`` tokens (``where``: the file, if any); the message's one home."""
    if len(vocab) != vocab_size:
        raise RoformerSimError(f"{where}: " * (where is not None) + f"vocab has {len(vocab)} tokens but config vocab_size is {vocab_size}")


def check_stored(prefix: object, names: Sequence[str], stored: Mapping) -> None:
    """Stop when the checkpoint at ``prefix`` (its variables ``stored``) lacks some of ``names``."""
    missing = [name for name in names if name not in stored]
    if missing:  # the first eight named
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise RoformerSimError(f"{prefix}: checkpoint lacks {len(missing)} required variables: {shown}")


def required_weight(weights: Mapping[str, np.ndarray], name: str):
    """``weights[name]``, or stop naming the variable the weights lack."""
    if name not in weights:
        raise RoformerSimError(f"weights lack variable {name}")
    return weights[name]


def check_shape(name: str, shape: tuple, needed: tuple, where: object = None, needer: str = "the config") -> None:
    """Stop when variable ``name`` has ``shape`` instead of the ``needed`` one."""
    if tuple(shape) != tuple(needed):
        raise RoformerSimError(f"{where}: " * (where is not None) + f"variable {name} has shape {tuple(shape)} but {needer} needs {tuple(needed)}")


def _tensorflow():
    """TensorFlow, loaded through compat (tf_keras for bert4keras) on first use."""
    from . import compat  # noqa: F401  (must precede tensorflow)
    import tensorflow

    return tensorflow


# The heads a plain RoFormer checkpoint may lack (no pooler; the MLM head is sometimes absent).
HEAD_PREFIXES = ("bert/pooler/", "cls/predictions/")


def _open_reader(prefix: str | os.PathLike):
    tf = _tensorflow()
    try:
        return tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:
        raise RoformerSimError(f"{prefix}: not a readable TF checkpoint ({error_text(e)})") from None


def absent_heads(prefix: str | os.PathLike, config: Mapping) -> list[str]:
    """The pooler and MLM-head variables the checkpoint at ``prefix`` lacks (what ``init_missing_heads`` fills)."""
    stored = _open_reader(prefix).get_variable_to_shape_map()
    return [n for n in expected_variables(config) if n.startswith(HEAD_PREFIXES) and n not in stored]


def read_weights(prefix: str | os.PathLike, config: Mapping, init_missing_heads: bool = False) -> dict[str, np.ndarray]:
    """Read every expected variable, checking presence and shape against ``config``.

    Extra variables (optimizer slots, NSP head, global_step) are ignored.
    ``init_missing_heads``: pooler and MLM-head variables the checkpoint lacks
    (a plain RoFormer) get :func:`init_weights` values instead of an error
    (:func:`absent_heads` names them).
    """
    tf = _tensorflow()
    reader = _open_reader(prefix)
    stored = reader.get_variable_to_shape_map()
    expected = expected_variables(config)
    fresh = {}
    if init_missing_heads:
        absent = [n for n in expected if n.startswith(HEAD_PREFIXES) and n not in stored]
        fresh = init_weights(config, names=absent) if absent else {}
    check_stored(prefix, [name for name in expected if name not in fresh], stored)
    for name, shape in expected.items():
        if name not in fresh:
            check_shape(name, stored[name], shape, prefix)
    try:
        return {name: fresh[name] if name in fresh else reader.get_tensor(name) for name in expected}
    except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
        raise RoformerSimError(
            f"{prefix}: checkpoint data unreadable ({error_text(e)}): the .index and .data files are damaged "
            "or do not belong together"
        ) from None


def init_weights(config: Mapping, seed: int = 0, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Random weights for ``config``: truncated normal(0.02) kernels and embeddings,
    LayerNorm gamma 1 / beta 0, zero biases. Every variable is drawn independently.
    ``names``: only these variables."""
    check_seed(seed)
    rng = np.random.default_rng(seed)
    std = config.get("initializer_range", 0.02)
    weights = {}
    for name, shape in expected_variables(config).items():
        if names is not None and name not in names:
            continue
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "gamma":
            value = np.ones(shape, np.float32)
        elif leaf in ("beta", "bias", "output_bias"):
            value = np.zeros(shape, np.float32)
        else:
            value = rng.standard_normal(shape, dtype=np.float32)
            outside = np.abs(value) > 2
            while outside.any():
                value[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
                outside = np.abs(value) > 2
            value *= std
        weights[name] = value
    return weights


def _save_tensors(prefix: Path, weights: Mapping[str, np.ndarray]) -> None:
    tf = _tensorflow()
    names = sorted(weights)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(np.asarray(weights[n], dtype=np.float32)) for n in names],
    )


def write_config_vocab(folder: str | os.PathLike, config: Mapping, vocab: Sequence[str]) -> None:
    """Write ``bert_config.json`` and ``vocab.txt`` into ``folder`` (a folder being built, not yet in
    place), creating it when missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CONFIG_NAME, "w", encoding="utf-8") as f:
        json.dump(dict(config), f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(folder / VOCAB_NAME, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")


def write_checkpoint(
    out_dir: str | os.PathLike,
    config: Mapping,
    vocab: list[str],
    weights: Mapping[str, np.ndarray],
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder in the released layout, atomically and verified.

    Files are written to a temporary folder beside ``out_dir``, read back and
    compared bit for bit with ``weights``; only then is the folder swapped in
    whole (:func:`roformer_sim_ft.fs.folders.swap_in`: a kill leaves the old or the
    new checkpoint, never a mix). An existing ``out_dir`` must be empty, an
    earlier checkpoint of ours (replaced only with ``overwrite``), or the
    training folder this process is training into (its other entries are
    kept). A symlinked ``out_dir`` is written through. On failure nothing that
    existed before is touched and the temporary folder is removed.
    """
    out_dir = Path(out_dir)
    expected = expected_variables(config)
    check_vocab_size(vocab, config["vocab_size"])
    for name, shape in expected.items():
        check_shape(name, np.shape(required_weight(weights, name)), shape)
        if not np.isfinite(weights[name]).all():
            raise RoformerSimError(f"{out_dir}: variable {name} holds NaN or infinite values; not writing them")
    outputs.recover(out_dir)
    if outputs.check_folder_target(out_dir, ("ckpt", "training"), "checkpoint") == "training":
        if not outputs.holds_lock(out_dir):
            raise RoformerSimError(f"{out_dir}: holds a training run, whose model only its training writes; "
                                   "write this checkpoint into another folder")
    else:
        outputs.check_replace(out_dir, overwrite)
    tmp = outputs.temp_dir_beside(out_dir)
    tf = _tensorflow()
    try:
        to_save = {name: np.asarray(weights[name], dtype=np.float32) for name in expected}
        _save_tensors(tmp / CKPT_NAME, to_save)
        (tmp / "checkpoint").write_text(
            f'model_checkpoint_path: "{CKPT_NAME}"\nall_model_checkpoint_paths: "{CKPT_NAME}"\n'
        )
        write_config_vocab(tmp, config, vocab)
        reread = read_weights(tmp / CKPT_NAME, read_config(tmp / CONFIG_NAME))
        for name, value in to_save.items():
            if reread[name].dtype != np.float32 or not np.array_equal(reread[name], value):
                raise RoformerSimError(f"{out_dir}: verification failed: variable {name} differs after writing")
        if read_vocab(tmp / VOCAB_NAME) != list(vocab):
            raise RoformerSimError(f"{out_dir}: verification failed: vocab.txt differs after writing")
        outputs.swap_in(tmp, out_dir, "ckpt", CKPT_FILES)
    except OSError as e:
        raise os_error(out_dir, e) from None
    except tf.errors.OpError as e:
        raise RoformerSimError(f"{out_dir}: cannot write the checkpoint ({error_text(e)}); nothing half-written was left") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_checkpoint(path: str | os.PathLike, init_missing_heads: bool = False) -> tuple[dict, list[str], dict[str, np.ndarray]]:
    """Config, vocab and validated weights of a released checkpoint (folder or prefix); see :func:`read_weights`."""
    files = resolve(path)
    config = read_config(files.config)
    vocab = read_vocab(files.vocab, config["vocab_size"])
    return config, vocab, read_weights(files.prefix, config, init_missing_heads)


PRESETS: dict[str, dict] = {
    # Shapes of the released -ft models (their bert_config.json), and small ones for tests and demos.
    "L-12_H-768": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "L-6_H-384": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "L-4_H-256": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "L-2_H-128": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}


def preset_config(name: str, vocab_size: int = 12000) -> dict:
    """A full bert_config for a named shape (``L-6_H-384``, ``tiny``, …)."""
    if name not in PRESETS:
        raise RoformerSimError(f"unknown config preset {name!r}; choose from {', '.join(PRESETS)}")
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        **PRESETS[name],
    }


def builtin_vocab(size: int = 12000) -> list[str]:
    """A char vocab in the released layout ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102,
    [MASK]=103) made from jieba's dictionary: ASCII first, then Chinese chars by
    frequency. For demos and tests without the released vocab.txt."""
    import jieba

    counts: dict[str, int] = {}
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as f:
        for line in f:
            word, freq = line.split(" ", 2)[:2]
            for ch in word:
                counts[ch] = counts.get(ch, 0) + int(freq)
    head = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_tokens = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    punct = list("，。！？；：、“”‘’（）《》【】…—·")
    seen = set(head)
    tokens = list(head)
    for tok in ascii_tokens + punct + sorted(counts, key=lambda c: -counts[c]):
        if tok not in seen and not tok.isspace():
            seen.add(tok)
            tokens.append(tok)
        if len(tokens) == size:
            break
    while len(tokens) < size:
        tokens.append(f"[unused{len(tokens)}]")
    return tokens
