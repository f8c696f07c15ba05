"""CLI: init / similarity / encode, and one-line errors with exit code 2."""
from __future__ import annotations

import numpy as np

from roformer_sim_ft import checkpoints
from roformer_sim_ft.cli import main
from roformer_sim_ft.model import SimModel


def test_init_similarity_encode(tmp_path, capsys, tiny_vocab):
    out = tmp_path / "ck"
    assert main(["init", "--config", "tiny", "--out", str(out), "--seed", "5"]) == 0  # the built-in vocab
    _, vocab, w = checkpoints.load_checkpoint(out)
    assert vocab == tiny_vocab
    expected = checkpoints.init_weights(checkpoints.preset_config("tiny"), seed=5)
    assert all(np.array_equal(w[k], expected[k]) for k in expected)
    capsys.readouterr()

    assert main(["similarity", "--checkpoint", str(out), "今天天气不错", "今天天气很好"]) == 0
    printed = float(capsys.readouterr().out.strip())
    model = SimModel.load(out)
    assert abs(printed - model.similarity("今天天气不错", "今天天气很好")) < 1e-6

    (tmp_path / "in.txt").write_text("今天天气不错\n我喜欢北京\n", encoding="utf-8")
    assert main(["encode", "--checkpoint", str(out), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), model.encode(["今天天气不错", "我喜欢北京"]), atol=1e-6)


def test_init_with_real_config_file_and_vocab(tmp_path, shared_data):
    config = shared_data / "vocab/chinese_roformer-sim-char-ft_L-6_H-384_A-6/bert_config.json"
    assert main(["init", "--config", str(config), "--vocab", str(shared_data / "vocab/vocab.txt"), "--out", str(tmp_path / "l6")]) == 0
    assert checkpoints.read_config(tmp_path / "l6/bert_config.json") == checkpoints.read_config(config)


def test_errors_are_one_line_exit_2(tmp_path, capsys, tiny_checkpoint):
    assert main(["similarity", "--checkpoint", str(tmp_path / "none"), "a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    (tmp_path / "in.txt").write_text("好\n\n好\n", encoding="utf-8")
    assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy")]) == 2
    assert "in.txt:2: empty text" in capsys.readouterr().err
    assert not (tmp_path / "v.npy").exists()
    assert main(["init", "--config", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config preset" in capsys.readouterr().err


def test_generate_is_seeded_and_checks_input(tiny_checkpoint, capsys):
    args = ["generate", "--checkpoint", str(tiny_checkpoint), "微信和支付宝哪个好？", "-n", "6", "-k", "3", "--seed", "4"]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == first
    assert 1 <= len(first) <= 3 and "微信和支付宝哪个好？" not in first
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "  "]) == 2
    assert "text is empty" in capsys.readouterr().err
