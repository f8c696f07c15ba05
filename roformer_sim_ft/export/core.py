"""Export a checkpoint for other runtimes: released layout, Keras HDF5, TF SavedModel, HF RoFormer.

Every format is written into a temporary folder beside the target, checked
against our own model on a fixed set of sentences (Chinese, mixed Chinese and
English, punctuation; padded to mixed lengths so that masking is exercised) and
only then swapped in whole. The target must be new, empty or an earlier export
of the same format (recognised by our manifest), replaced only with
``overwrite``; files we did not write are never replaced or deleted, and a
symlinked target is written through. A failed check removes the temporary folder and
raises :class:`RoformerSimError` with the largest difference found.

- ``ckpt``: the released TF1 layout (``checkpoints.write_checkpoint``, weights
  compared bit for bit after writing).
- ``h5``: Keras HDF5 weights of the bert4keras model plus ``bert_config.json``
  and ``vocab.txt``; checked by building a plain bert4keras model from that
  config and loading the file by topology.
- ``savedmodel``: a TF SavedModel (:mod:`.serving`): ``encode`` maps token and
  segment ids to L2-normalised vectors, ``similarity`` gives the row-wise cosine
  of two batches; with ``tensorflow_text`` installed also raw strings:
  ``tokenize_text``, ``encode_text``, ``similarity_text`` and ``generate_text``
  (sampled similar sentences); without it those are skipped and ``checked``
  says why. Checked by ``tf.saved_model.load``: ids signatures against the
  model, string signatures against ``SimModel.encode``, its tokenizer's ids
  and ``generate``.
- ``hf``: a transformers RoFormer folder (``config.json``, ``model.safetensors``
  written with numpy, ``vocab.txt``, ``tokenizer_config.json``) plus
  ``pooler.safetensors`` (the linear pooler, a Dense on [CLS] that
  ``RoFormerModel`` lacks). The safetensors are always read back and compared
  bit for bit; when torch and transformers are importable the folder is also
  loaded with ``RoFormerModel.from_pretrained`` and its pooled vectors compared.
- ``keras``: a Keras 3 archive ``roformer_sim.keras`` (:mod:`keras3`: Keras's
  own layers and ``keras.ops`` only, so ``keras.saving.load_model`` opens it
  without this package, on any backend) plus ``bert_config.json`` and
  ``vocab.txt``; checked by loading it with Keras 3 in this process: weights
  bit-identical, pooled vectors and MLM logits compared.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .. import checkpoints
from ..fs import folders as outputs
from . import savedmodel as serving
from ..errors import RoformerSimError
from ..fs.atomic import os_error
from ..model.forward import rotary_frequencies
from ..model.sim_model import SimModel, pad
from ..vectors import unit_rows

FORMATS = ("ckpt", "h5", "savedmodel", "hf", "keras")
# Largest allowed difference of L2-normalised vectors on VERIFY_TEXTS, per format.
TOLERANCE = {"ckpt": 0.0, "h5": 1e-5, "savedmodel": 1e-5, "hf": 1e-4, "keras": 1e-5}
KERAS_LOGITS_TOLERANCE = 1e-4  # MLM logits of the keras export vs the bert4keras model
VERIFY_TEXTS = (
    "今天天气不错",
    "给我推荐一款红色的车，最好是SUV。",
    "我用iPhone 15 Pro拍了3张照片, Nice!",
    "RoFormer-Sim is a 中文 similarity model (2021).",
    "“你好！”——他说；（真的吗？）……【完】",
    "好",
)
H5_NAME = "bert_model.weights.h5"
HF_WEIGHTS = "model.safetensors"
HF_POOLER = "pooler.safetensors"
KERAS_ARCHIVE = "roformer_sim.keras"  # keras3.ARCHIVE_NAME (not imported here: keras3 loads Keras 3)
# bert4keras activation name -> transformers ACT2FN name (bert4keras's "gelu" is the erf form).
_HF_ACT = {"gelu": "gelu", "gelu_erf": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "swish": "silu", "linear": "linear"}


@dataclass(frozen=True)
class Exported:
    """Where an export went, and how it was checked."""

    path: Path
    format: str
    max_diff: float
    checked: str


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, format: str = "ckpt",
           overwrite: bool = False) -> Exported:
    """Load a checkpoint (released layout) and export it; see the module docstring. ``out`` may not hold ``checkpoint``."""
    if format not in FORMATS:
        raise RoformerSimError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    outputs.check_not_input(out, {"--checkpoint": checkpoint})
    _check_target(Path(out), format, overwrite)  # before loading the model
    return export_model(_load(checkpoint), out, format, overwrite)


def _load(path: str | os.PathLike) -> SimModel:
    """A released-layout checkpoint, or a training state (``OUT/training_state/step-N``,
    or a training output folder that holds only states)."""
    from ..training.states import STATE_DIR, load_state_model

    path = Path(path)
    if (path / "state.json").exists() or ((path / STATE_DIR).is_dir() and not (path / "bert_config.json").exists()):
        return load_state_model(path)
    return SimModel.load(path)


def export_model(model: SimModel, out: str | os.PathLike, format: str = "ckpt", overwrite: bool = False) -> Exported:
    """Export ``model`` to ``out`` in ``format`` (atomic, verified); an earlier export there is
    replaced only with ``overwrite``."""
    out = Path(out)
    if format not in FORMATS:
        raise RoformerSimError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "ckpt":
        checkpoints.write_checkpoint(out, model.config, model.vocab, model.get_weights(), overwrite=overwrite)
        return Exported(out, format, 0.0, "weights re-read bit-identical")
    writer, verifier = {
        "h5": (_write_h5, _verify_h5),
        "savedmodel": (serving.write, _verify_savedmodel),
        "hf": (_write_hf, _verify_hf),
        "keras": (_write_keras, _verify_keras),
    }[format]
    token_ids = pad(model.tokenize(VERIFY_TEXTS))
    expected = _unit(model.encoder([token_ids, np.zeros_like(token_ids)], training=False).numpy())
    with _atomic_dir(out, format, overwrite) as tmp:
        writer(model, tmp)
        vectors, checked = verifier(model, tmp, token_ids)
        diff = float(np.max(np.abs(vectors - expected))) if vectors is not None else 0.0
        if not diff <= TOLERANCE[format]:  # also catches NaN
            raise RoformerSimError(
                f"{out}: {format} export failed verification: largest difference {diff:.3g} "
                f"> {TOLERANCE[format]:g} on {len(VERIFY_TEXTS)} sentences; nothing written"
            )
    return Exported(out, format, diff, checked)


def _unit(x) -> np.ndarray:
    """``x`` as float32 rows of length 1 (what every exported format is compared on)."""
    return unit_rows(np.asarray(x, np.float32))


def _check_target(out: Path, format: str, overwrite: bool) -> None:
    """One line if ``out`` cannot take this export: not ours, another format, or an earlier export without ``overwrite``."""
    outputs.recover(out)
    outputs.check_folder_target(out, (format,), f"{format} export")
    outputs.check_replace(out, overwrite)


@contextlib.contextmanager
def _atomic_dir(out: Path, format: str, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out`` (beside its real folder, if a symlink), swapped in whole if the block succeeds.

    An existing ``out`` is replaced only if it is empty or (``overwrite``) an
    earlier export of the same format (our manifest says so:
    :mod:`roformer_sim_ft.fs.folders`); any file in it that the export does not write is kept.
    """
    _check_target(out, format, overwrite)
    tmp = outputs.temp_dir_beside(out)
    try:
        yield tmp
        outputs.swap_in(tmp, out, format, [p.name for p in tmp.iterdir()])
    except OSError as e:
        raise os_error(out, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ h5
def _write_h5(model: SimModel, folder: Path) -> None:
    model.model.save_weights(str(folder / H5_NAME), save_format="h5")
    checkpoints.write_config_vocab(folder, model.config, model.vocab)


def _verify_h5(model: SimModel, folder: Path, token_ids: np.ndarray) -> tuple[np.ndarray, str]:
    """Build the model as a plain bert4keras app would and load the file by topology."""
    from bert4keras.models import build_transformer_model

    plain = build_transformer_model(
        str(folder / checkpoints.CONFIG_NAME), None, model="roformer", application="unilm", with_pool="linear"
    )
    plain.load_weights(str(folder / H5_NAME))
    pooled = plain([token_ids, np.zeros_like(token_ids)], training=False)[0].numpy()
    return _unit(pooled), "plain bert4keras model built from bert_config.json, h5 loaded by topology"


# ---------------------------------------------------------- savedmodel
def _verify_savedmodel(model: SimModel, folder: Path, token_ids: np.ndarray) -> tuple[np.ndarray, str]:
    return serving.verify(model, folder, token_ids, VERIFY_TEXTS, TOLERANCE["savedmodel"])


# ------------------------------------------------------------------- hf
def hf_config(config: Mapping) -> dict:
    """transformers ``RoFormerConfig`` keys for a bert4keras RoFormer config."""
    act = config.get("hidden_act", "gelu")
    if act not in _HF_ACT:
        raise RoformerSimError(f"hidden_act {act!r} has no transformers equivalent here; known: {', '.join(_HF_ACT)}")
    return {
        "architectures": ["RoFormerForMaskedLM"],
        "model_type": "roformer",
        "vocab_size": config["vocab_size"],
        "embedding_size": config["hidden_size"],
        "hidden_size": config["hidden_size"],
        "num_hidden_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "intermediate_size": config["intermediate_size"],
        "hidden_act": _HF_ACT[act],
        "hidden_dropout_prob": config.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": config.get("attention_probs_dropout_prob", 0.1),
        "max_position_embeddings": config.get("max_position_embeddings", 512),
        "type_vocab_size": config.get("type_vocab_size", 2),
        "initializer_range": config.get("initializer_range", 0.02),
        "layer_norm_eps": 1e-7,  # bert4keras LayerNormalization uses K.epsilon(), not BERT's 1e-12
        "rotary_value": False,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }


# Released-layout role (checkpoints.layout) -> transformers name: a leaf's whole name, else the prefix of
# .weight/.bias ({n}: the encoder layer). The pooler goes into its own state dict.
_HF_LAYER = "roformer.encoder.layer.{n}."
HF_NAMES = {
    "word_embeddings": "roformer.embeddings.word_embeddings.weight",
    "segment_embeddings": "roformer.embeddings.token_type_embeddings.weight",
    "embedding_norm": "roformer.embeddings.LayerNorm",
    **{part: _HF_LAYER + f"attention.self.{part}" for part in ("query", "key", "value")},
    "attention_output": _HF_LAYER + "attention.output.dense",
    "attention_norm": _HF_LAYER + "attention.output.LayerNorm",
    "ffn_inner": _HF_LAYER + "intermediate.dense",
    "ffn_output": _HF_LAYER + "output.dense",
    "ffn_norm": _HF_LAYER + "output.LayerNorm",
    "pooler": "",
    "mlm_transform": "cls.predictions.transform.dense",
    "mlm_norm": "cls.predictions.transform.LayerNorm",
    "mlm_bias": "cls.predictions.bias",
}


def hf_weights(weights: Mapping[str, np.ndarray], config: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(RoFormerForMaskedLM state dict, pooler state dict) from released-layout weights.

    Kernels are transposed to torch's [out, in]; gamma/beta become weight/bias.
    """
    state, pooler = {}, {}
    for block in checkpoints.layout(config):
        hf = HF_NAMES[block.role].format(n=block.layer)
        for (tf_name, _), part in zip(checkpoints.block_variables(block), ("weight", "bias")):
            value = np.asarray(weights[tf_name], np.float32)
            value = np.ascontiguousarray(value.T) if block.kind == "dense" and part == "weight" else value
            if block.role == "pooler":
                pooler[part] = value
            else:
                state[hf if block.kind == "leaf" else f"{hf}.{part}"] = value
    state["roformer.encoder.embed_positions.weight"] = hf_rotary_table(
        config.get("max_position_embeddings", 512), config["hidden_size"] // config["num_attention_heads"]
    )
    return state, pooler


def hf_rotary_table(positions: int, head_size: int) -> np.ndarray:
    """transformers' fixed RoFormer sinusoid table: sin of every angle in the first half, cos in the
    second (bert4keras interleaves them, and both rotate interleaved pairs: the same rotation)."""
    angles = np.arange(positions, dtype=np.float64)[:, None] * rotary_frequencies(head_size).numpy()
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write float32 tensors in the safetensors format, without torch or the safetensors package:
    8-byte little-endian header length, JSON header (padded to 8 bytes), raw little-endian data."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(tensors[name])), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for data in blobs:
            f.write(data)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a float32 safetensors file with numpy (the inverse of ``write_safetensors``)."""
    with open(path, "rb") as f:
        raw = f.read()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise RoformerSimError(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return out


def _write_hf(model: SimModel, folder: Path) -> None:
    state, pooler = hf_weights(model.get_weights(), model.config)
    write_safetensors(folder / HF_WEIGHTS, state)
    write_safetensors(folder / HF_POOLER, pooler)
    (folder / "config.json").write_text(json.dumps(hf_config(model.config), indent=2) + "\n", encoding="utf-8")
    (folder / checkpoints.VOCAB_NAME).write_text("\n".join(model.vocab) + "\n", encoding="utf-8")
    tokenizer = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": hf_config(model.config)["max_position_embeddings"],
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8")


def _verify_hf(model: SimModel, folder: Path, token_ids: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Read the safetensors back with numpy (bit-identical); then, if torch and
    transformers are importable, run ``RoFormerModel`` and apply the pooler."""
    state, pooler = hf_weights(model.get_weights(), model.config)
    for path, expected in ((folder / HF_WEIGHTS, state), (folder / HF_POOLER, pooler)):
        reread = read_safetensors(path)
        if set(reread) != set(expected) or any(not np.array_equal(reread[k], expected[k]) for k in expected):
            raise RoformerSimError(f"{folder}: hf export failed verification: {path.name} differs from the weights after writing")
    try:
        import torch
        from transformers import RoFormerModel
    except ImportError:
        return None, "safetensors re-read bit-identical with numpy (torch/transformers absent: no forward pass)"
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the MLM head as unused: expected here
    hf_logging.disable_progress_bar()
    try:
        hf = RoFormerModel.from_pretrained(str(folder)).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    with torch.no_grad():
        ids = torch.from_numpy(token_ids.astype(np.int64))
        hidden = hf(input_ids=ids, attention_mask=(ids != 0).long(), token_type_ids=torch.zeros_like(ids)).last_hidden_state
    cls = hidden[:, 0].numpy()
    pooled = cls @ pooler["weight"].T + pooler["bias"]
    return _unit(pooled), "safetensors re-read bit-identical; transformers RoFormerModel + pooler forward pass"


# ---------------------------------------------------------------- keras
def _write_keras(model: SimModel, folder: Path) -> None:
    from .. import keras3

    native = keras3.build_model(model.config)
    keras3.set_released_weights(native, model.get_weights(), model.config)
    native.save(str(folder / KERAS_ARCHIVE))
    checkpoints.write_config_vocab(folder, model.config, model.vocab)


def _verify_keras(model: SimModel, folder: Path, token_ids: np.ndarray) -> tuple[np.ndarray, str]:
    """Open the archive with ``keras.saving.load_model``; weights must be bit-identical and the
    MLM logits (second half of each row as segment 1: the UniLM mask) within KERAS_LOGITS_TOLERANCE."""
    from .. import keras3

    loaded = keras3.keras.saving.load_model(str(folder / KERAS_ARCHIVE))
    weights, reread = model.get_weights(), keras3.released_weights(loaded, model.config)
    for name, value in weights.items():
        if not np.array_equal(reread[name], value):
            raise RoformerSimError(f"{folder}: keras export failed verification: variable {name} differs after loading")
    segments = ((np.arange(token_ids.shape[1]) >= token_ids.shape[1] // 2) & (token_ids != 0)).astype(np.int32)
    out = loaded({"token_ids": token_ids, "segment_ids": segments})
    expected = model.seq2seq([token_ids, segments], training=False).numpy()
    diff = float(np.max(np.abs(keras3.ops.convert_to_numpy(out["mlm_logits"]) - expected)))
    if not diff <= KERAS_LOGITS_TOLERANCE:
        raise RoformerSimError(f"{folder}: keras export failed verification: MLM logits differ by {diff:.3g} > {KERAS_LOGITS_TOLERANCE:g}")
    pooled = loaded({"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids)})["pooled"]
    backend = keras3.keras.backend.backend()
    checked = f"keras.saving.load_model ({backend} backend): weights bit-identical, MLM logits within {KERAS_LOGITS_TOLERANCE:g}"
    return _unit(keras3.ops.convert_to_numpy(pooled)), checked
