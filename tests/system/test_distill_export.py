"""A distilled student, exported, reloads in plain bert4keras with identical pooled vectors and seq2seq logits."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from roformer_sim_ft.data import readers
from roformer_sim_ft.cli import main
from roformer_sim_ft.model import SimModel


def test_exported_student_matches_in_plain_bert4keras(tiny_checkpoint, spread_checkpoint, tmp_path, capsys):
    pairs = readers.sample_data_dir() / "synonyms/sample.jsonl"
    assert main(["distill", "--teacher", str(spread_checkpoint), "--student", str(tiny_checkpoint), "--pairs", str(pairs),
                 "--out", str(tmp_path / "run"), "--steps", "3", "--batch-size", "8", "--lr", "1e-3", "--no-progress"]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "student")]) == 0
    capsys.readouterr()
    student = SimModel.load(tmp_path / "student")
    tokenizer = student.tokenizer
    source = tokenizer.encode("微信和支付宝哪个好？")[0]
    target = tokenizer.encode("支付宝和微信哪个好用")[0][1:]
    tokens = np.array([source + target])
    segments = np.array([[0] * len(source) + [1] * len(target)])
    np.save(tmp_path / "tokens.npy", tokens)
    np.save(tmp_path / "segments.npy", segments)
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_KERAS"] = "1"; os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np
        from bert4keras.models import build_transformer_model
        ck = {str(tmp_path / "student")!r}
        model = build_transformer_model(ck + "/bert_config.json", ck + "/bert_model.ckpt", model="roformer",
                                        application="unilm", with_pool="linear", with_mlm="linear")
        tokens, segments = np.load({str(tmp_path / "tokens.npy")!r}), np.load({str(tmp_path / "segments.npy")!r})
        pooled, logits = model.predict([tokens, segments], verbose=0)
        np.save({str(tmp_path / "pooled.npy")!r}, pooled); np.save({str(tmp_path / "logits.npy")!r}, logits)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pooled, logits = student.model.predict([tokens, segments], verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "pooled.npy"), pooled, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), logits, rtol=0, atol=1e-4)
    # the student was trained: it differs from where it started
    assert not np.array_equal(student.get_weights()["bert/pooler/dense/kernel"],
                              SimModel.load(tiny_checkpoint).get_weights()["bert/pooler/dense/kernel"])
