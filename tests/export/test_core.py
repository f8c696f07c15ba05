"""Exports: each format written atomically, verified, and loaded in a separate process
by its own runtime (plain bert4keras, PyTorch transformers; the SavedModel in plain
TensorFlow: tests/export/test_savedmodel.py)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_sim_ft import checkpoints, export as ex
from roformer_sim_ft.model import pad
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError

TEXTS = list(ex.VERIFY_TEXTS) + ["我喜欢北京", "Café naïve RÉSUMÉ ＡＢＣ全角 unaffable"]
HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "safetensors"))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("exports")
    # The SavedModel (and its run in plain TensorFlow): tests/export/test_savedmodel.py.
    return {fmt: ex.export_model(tiny_model, root / fmt, fmt) for fmt in ("h5", "hf")}


@pytest.fixture(scope="module")
def ids(tiny_model):
    return pad(tiny_model.tokenize(TEXTS))


def _run(script: str, *args, env: dict | None = None) -> None:
    """Run ``script`` in a fresh interpreter that never imports roformer_sim_ft."""
    env = {k: v for k, v in (env or os.environ).items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_each_export_verified_within_tolerance(exports):
    for fmt, result in exports.items():
        assert result.path.is_dir() and result.max_diff <= ex.TOLERANCE[fmt], result
    assert not [p for p in exports["h5"].path.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert json.loads((exports["hf"].path / "config.json").read_text())["layer_norm_eps"] == 1e-7


def test_h5_loads_in_plain_bert4keras(exports, tiny_model, ids, tmp_path):
    np.save(tmp_path / "ids.npy", ids)
    _run(
        """
        import os, sys
        os.environ["TF_KERAS"] = "1"; os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np
        from bert4keras.models import build_transformer_model
        folder, ids = sys.argv[1], np.load(sys.argv[2])
        model = build_transformer_model(f"{folder}/bert_config.json", None, model="roformer",
                                        application="unilm", with_pool="linear")
        model.load_weights(f"{folder}/bert_model.weights.h5")
        pooled, probs = model.predict([ids, np.zeros_like(ids)], verbose=0)
        assert "roformer_sim_ft" not in sys.modules
        np.save(sys.argv[3], pooled); np.save(sys.argv[4], probs)
        """,
        exports["h5"].path, tmp_path / "ids.npy", tmp_path / "pooled.npy", tmp_path / "probs.npy",
    )
    pooled, logits = tiny_model.model.predict([ids, np.zeros_like(ids)], verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "pooled.npy"), pooled, atol=1e-5)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), softmax / softmax.sum(-1, keepdims=True), atol=1e-6)


@pytest.mark.skipif(not HAS_TORCH, reason="torch/transformers not installed")
def test_hf_loads_in_transformers(exports, tiny_model, ids, tmp_path):
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False), encoding="utf-8")
    _run(
        """
        import json, sys
        import numpy as np, torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, RoFormerForMaskedLM, RoFormerModel
        folder = sys.argv[1]
        texts = json.load(open(sys.argv[2], encoding="utf-8"))
        batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
        model = RoFormerModel.from_pretrained(folder).eval()
        pooler = torch.nn.Linear(model.config.hidden_size, model.config.hidden_size)
        pooler.load_state_dict(load_file(f"{folder}/pooler.safetensors"))
        mlm = RoFormerForMaskedLM.from_pretrained(folder).eval()
        with torch.no_grad():
            pooled = pooler(model(**batch).last_hidden_state[:, 0])
            logits = mlm(**batch).logits
        np.save(sys.argv[3], batch["input_ids"].numpy())
        np.save(sys.argv[4], pooled.numpy()); np.save(sys.argv[5], logits.numpy())
        """,
        exports["hf"].path, tmp_path / "texts.json", tmp_path / "ids.npy", tmp_path / "pooled.npy", tmp_path / "logits.npy",
    )
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), ids)  # HF BertTokenizer == bert4keras Tokenizer
    pooled, logits = tiny_model.model.predict([ids, np.zeros_like(ids)], verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "pooled.npy"), pooled, atol=1e-4)
    real = ids > 0  # logits at padding positions are not compared (bert4keras does not mask queries)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy")[real], logits[real], atol=1e-4)


def test_hf_without_torch_checks_safetensors_with_numpy(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    result = ex.export_model(tiny_model, tmp_path / "hf", "hf")
    assert "torch/transformers absent" in result.checked
    state, pooler = ex.hf_weights(tiny_model.get_weights(), tiny_model.config)
    reread = ex.read_safetensors(tmp_path / "hf" / ex.HF_WEIGHTS)
    assert set(reread) == set(state) and all(np.array_equal(reread[k], state[k]) for k in state)
    raw = (tmp_path / "hf" / ex.HF_POOLER).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size % 8 == 0 and json.loads(raw[8 : 8 + size])["__metadata__"] == {"format": "pt"}


def test_cli_ckpt_export_rewrites_released_layout(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "ck")]) == 0
    assert "wrote" in capsys.readouterr().out
    _, _, before = checkpoints.load_checkpoint(tiny_checkpoint)
    _, _, after = checkpoints.load_checkpoint(tmp_path / "ck")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_failed_verification_leaves_nothing_and_exits_2(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "h5"
    monkeypatch.setitem(ex.TOLERANCE, "h5", -1.0)
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--format", "h5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "largest difference" in err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(ex.TOLERANCE, "h5", 1e-5)
    ex.export(tiny_checkpoint, out, "h5")
    ex.export(tiny_checkpoint, out, "h5", overwrite=True)  # an earlier export of the same format is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h5"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RoformerSimError, match="not an earlier output"):
        ex.export(tiny_checkpoint, tmp_path / "mine", "hf")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
