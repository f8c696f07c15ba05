"""Reliability of what the user hands in: manifests, configs, flags, TF_CONFIG, data and vocab files.

Each test reproduces one case of bad input (configs, flags, the demo's
manifest): a manifest cannot make us delete outside its folder, a bad number
in a config or a flag is one line before anything is built, and ordinary text
files (a trailing blank line, a BOM) read as a user expects.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roformer_sim_ft import checkpoints
from roformer_sim_ft.fs import folders as outputs
from roformer_sim_ft.data import readers
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.settings import GENERATE_MAX_SAMPLES, VERBOSE_ENV

REPO = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, args) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("roformer-sim-ft: error: "), captured.err
    return captured.err


def _manifest(folder: Path, files, format: str = "demo") -> None:
    (folder / outputs.MANIFEST_NAME).write_text(json.dumps(
        {"written_by": "roformer-sim-ft", "version": "0.1.0", "format": format, "files": files}))


# ------------------------------------------------------------ 6: a manifest is plain names inside its folder
@pytest.mark.parametrize("entry", ["../victim", "/etc/passwd", "", ".", "..", "a/b", "init/../../victim", 3, None])
def test_a_manifest_listing_anything_but_a_plain_name_is_not_ours(tmp_path, entry):
    _manifest(tmp_path, ["init", entry])
    assert outputs.read_manifest(tmp_path) is None
    assert outputs.ownership(tmp_path) == (None, set())
    _manifest(tmp_path, ["init", "evaluation.json"])
    assert outputs.read_manifest(tmp_path)["files"] == ["init", "evaluation.json"]


def test_the_demo_deletes_nothing_outside_its_folder_whatever_its_manifest_lists(tmp_path, capsys, caplog):
    from roformer_sim_ft import demo

    beside = tmp_path / "victim"
    beside.mkdir()
    (beside / "work.txt").write_text("years of work")
    elsewhere = tmp_path / "far" / "notes.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("keep")
    out = tmp_path / "demo_out"
    (out / "init").mkdir(parents=True)
    _manifest(out, ["init", "../victim", str(elsewhere)])
    with pytest.raises(RoformerSimError, match="not an earlier output of roformer-sim-ft"):
        demo._clear_earlier_demo(out)
    assert (beside / "work.txt").read_text() == "years of work" and elsewhere.read_text() == "keep"
    assert (out / "init").is_dir()
    said = [r.getMessage() for r in caplog.records if "not a name inside the folder" in r.getMessage()]
    assert said == [f"{out / outputs.MANIFEST_NAME}: lists '../victim', not a name inside the folder; the folder is "
                    "not taken as an output of roformer-sim-ft"]  # once, though the folder is checked twice

    # A well-formed manifest: only the demo's own entries go, and a symlink among them is removed, not followed.
    target = tmp_path / "linked"
    target.mkdir()
    (target / "data.txt").write_text("keep")
    (out / "init").rmdir()
    (out / "init").symlink_to(target, target_is_directory=True)
    (out / "user.txt").write_text("mine")
    _manifest(out, ["init", "user.txt", "evaluation.json"])
    demo._clear_earlier_demo(out)
    assert not os.path.lexists(out / "init") and (target / "data.txt").read_text() == "keep"
    assert (out / "user.txt").read_text() == "mine"


def test_a_negative_demo_seed_is_refused_before_the_earlier_demo_is_cleared(tmp_path, capsys):
    from roformer_sim_ft import demo

    out = tmp_path / "demo_out"
    (out / "init").mkdir(parents=True)
    (out / "init" / "x").write_text("earlier")
    _manifest(out, list(demo.DEMO_ENTRIES))
    assert demo.main(["--out", str(out), "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed must be an integer from 0 to 2**63 - 1, got -1" in err
    assert (out / "init" / "x").read_text() == "earlier"


# ------------------------------------------------------------ 9: encode never writes over its input
def test_encode_output_that_is_the_input_is_refused(tiny_checkpoint, tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("今天天气不错\n我喜欢北京\n", encoding="utf-8")
    link = tmp_path / "link.npy"
    link.symlink_to(text)
    for output in (text, link, tmp_path / "." / "in.txt"):
        err = _one_line_error(capsys, ["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(text),
                                       "--output", str(output)])
        assert f"--output {output} is the --input file {text}" in err
        assert text.read_text(encoding="utf-8") == "今天天气不错\n我喜欢北京\n" and link.is_symlink()


def test_encode_accepts_blank_lines_at_the_end_of_its_input(tiny_checkpoint, tmp_path, capsys):
    import numpy as np

    text = tmp_path / "in.txt"
    text.write_text("今天天气不错\n我喜欢北京\n\n  \n", encoding="utf-8")
    assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(text),
                 "--output", str(tmp_path / "v.npy")]) == 0
    assert np.load(tmp_path / "v.npy").shape[0] == 2
    text.write_text("今天天气不错\n\n我喜欢北京\n", encoding="utf-8")
    assert "in.txt:2: empty text" in _one_line_error(
        capsys, ["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(text), "--output", str(tmp_path / "w.npy")])


# ------------------------------------------------------------ 10, 13: config numbers checked before anything is built
@pytest.mark.parametrize("key, value, message", [
    ("initializer_range", float("inf"), "initializer_range must be a finite number, got Infinity"),
    ("initializer_range", float("nan"), "initializer_range must be a finite number, got NaN"),
    ("layer_norm_eps", float("-inf"), "layer_norm_eps must be a finite number, got -Infinity"),
    ("initializer_range", 5.0, "initializer_range must be a number in (0, 1], got 5.0"),
    ("intermediate_size", 10**12, "intermediate_size must be at most 65,536, got 1,000,000,000,000"),
    ("intermediate_size", 1e12, "intermediate_size must be a positive integer, got 1000000000000.0"),
    ("vocab_size", 10**7, "vocab_size must be at most 1,000,000"),
    ("hidden_act", {"class_name": "relu"}, "hidden_act must be the name of an activation"),
    ("hidden_act", ["gelu"], "hidden_act must be the name of an activation"),
    ("hidden_act", "", "unknown hidden_act ''"),
    ("hidden_size", 6, "the head size hidden_size / num_attention_heads = 3 must be even"),
])
def test_config_numbers_and_activation_are_checked_in_one_line(tiny_config, tmp_path, capsys, key, value, message):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({**tiny_config, key: value}))  # json writes Infinity / NaN as JavaScript does
    with pytest.raises(RoformerSimError, match="^" + _escaped(f"{path}: {message}")):
        checkpoints.read_config(path)
    err = _one_line_error(capsys, ["init", "--config", str(path), "--out", str(tmp_path / "m")])
    assert message in err and not (tmp_path / "m").exists()


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_a_config_too_large_to_build_is_refused_naming_its_size(tiny_config, tmp_path):
    path = tmp_path / "bert_config.json"
    huge = {**tiny_config, "hidden_size": 16384, "num_attention_heads": 128, "intermediate_size": 65536,
            "num_hidden_layers": 48}
    path.write_text(json.dumps(huge))
    with pytest.raises(RoformerSimError, match=r"describes [\d,]+ parameters \(\d+ GB in float32\), more than the "
                                               r"2,000,000,000 this package builds"):
        checkpoints.read_config(path)
    assert checkpoints.MAX_PARAMETERS == 2_000_000_000


def test_init_with_a_config_file_prints_no_tensorflow_lines(tiny_config, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(tiny_config))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "roformer_sim_ft.cli", "init", "--config", str(path), "--out",
                           str(tmp_path / "m")], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"wrote {tmp_path / 'm'}\n"


# ------------------------------------------------------------ 11: generate -n is capped
def test_generate_n_above_the_cap_is_one_line(tiny_checkpoint, tiny_model, capsys):
    n = GENERATE_MAX_SAMPLES + 1
    err = _one_line_error(capsys, ["generate", "--checkpoint", str(tiny_checkpoint), "北京", "-n", str(n)])
    assert f"n must be at most {GENERATE_MAX_SAMPLES}" in err and f"got {n}" in err
    with pytest.raises(RoformerSimError, match=f"n must be at most {GENERATE_MAX_SAMPLES}"):
        tiny_model.generate("北京", n=n)
    with pytest.raises(RoformerSimError, match=f"n must be at most {GENERATE_MAX_SAMPLES}"):
        tiny_model.gen_synonyms("北京", n=n)
    assert "--seed must be an integer" in _one_line_error(
        capsys, ["generate", "--checkpoint", str(tiny_checkpoint), "北京", "-n", "2", "--seed", "-3"])


# ------------------------------------------------------------ 12: a negative --seed is one line
@pytest.mark.parametrize("command", ["train", "pretrain", "init", "pipeline"])
def test_a_negative_seed_is_one_line(tiny_checkpoint, tmp_path, capsys, command):
    data = readers.sample_data_dir()
    args = {
        "train": ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--steps", "1"],
        "pretrain": ["pretrain", "--checkpoint", str(tiny_checkpoint), "--pairs", str(data / "synonyms/sample.jsonl"),
                     "--steps", "1"],
        "init": ["init", "--config", "tiny"],
        "pipeline": ["pipeline", "--checkpoint", str(tiny_checkpoint), "--data", str(data),
                     "--supervised-steps", "1", "--distill-steps", "1"],
    }[command]
    err = _one_line_error(capsys, args + ["--out", str(tmp_path / "o"), "--seed", "-1"])
    assert "seed must be an integer from 0 to 2**63 - 1, got -1" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "inf", "learning_rate must be a finite number > 0, got inf"),
    ("--lr", "nan", "learning_rate must be a finite number > 0, got nan"),
    ("--weight-decay", "inf", "weight_decay must be a finite number >= 0, got inf"),
    ("--collective-timeout", "inf", "collective_timeout must be a finite number > 0, got inf"),
    ("--devices", "-1", "devices must be at least 1, got -1"),
    ("--devices", "0", "devices must be at least 1, got 0"),
    ("--similarity-scale", "inf", "similarity_scale must be a finite number > 0, got inf"),
    ("--similarity-scale", "nan", "similarity_scale must be a finite number > 0, got nan"),
])
def test_a_flag_out_of_range_is_one_line_before_any_work(tiny_checkpoint, tmp_path, capsys, flag, value, message):
    pairs = str(readers.sample_data_dir() / "synonyms/sample.jsonl")
    args = ["pretrain", "--checkpoint", str(tiny_checkpoint), "--pairs", pairs, "--steps", "1", "--no-progress",
            "--out", str(tmp_path / "o"), flag, value]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and not (tmp_path / "o").exists()
    assert "stage-1 data" not in captured.out  # refused before the data was read


def test_pipeline_checks_every_stage_before_the_first_runs(tiny_checkpoint, tmp_path, capsys):
    err = _one_line_error(capsys, ["pipeline", "--checkpoint", str(tiny_checkpoint), "--data",
                                   str(readers.sample_data_dir()), "--out", str(tmp_path / "o"), "--distill-lr", "inf"])
    assert "learning_rate must be a finite number > 0, got inf" in err and not (tmp_path / "o").exists()


def test_weights_that_are_not_finite_are_never_written(tiny_config, tiny_vocab, tmp_path):
    weights = checkpoints.init_weights(tiny_config, seed=1)
    weights["bert/pooler/dense/bias"][3] = float("nan")
    with pytest.raises(RoformerSimError, match="bert/pooler/dense/bias holds NaN or infinite values; not writing"):
        checkpoints.write_checkpoint(tmp_path / "ck", tiny_config, tiny_vocab, weights)
    assert not (tmp_path / "ck").exists()


# ------------------------------------------------------------ 14: TF_CONFIG
@pytest.mark.parametrize("spec, message", [
    ({"cluster": {"worker": "notalist"}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG: cluster 'worker' must be a list of \"host:port\" addresses, got 'notalist'"),
    ({"cluster": {"worker": ["localhost:1234", "otherhost"]}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG: address 'otherhost' of cluster 'worker' is not \"host:port\""),
    ({"cluster": {"worker": ["localhost:1234", "h:99999"]}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG: address 'h:99999' of cluster 'worker' is not \"host:port\""),
    ({"cluster": {"worker": ["localhost:1234", 5]}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG: address 5 of cluster 'worker' is not \"host:port\""),
    ("{not json", "TF_CONFIG is not a cluster spec (JSONDecodeError"),
])
def test_a_bad_tf_config_is_one_line_naming_it(spec, message):
    from roformer_sim_ft.training.distribute import role

    with pytest.raises(RoformerSimError) as caught:
        role({"TF_CONFIG": spec if isinstance(spec, str) else json.dumps(spec)})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_bad_tf_config_stops_training_in_one_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "nohost"]},
                                                "task": {"type": "worker", "index": 0}}))
    err = _one_line_error(capsys, ["train", "--checkpoint", str(tiny_checkpoint), "--data",
                                   str(readers.sample_data_dir()), "--steps", "1", "--out", str(tmp_path / "o")])
    assert "TF_CONFIG: address 'nohost'" in err


# ------------------------------------------------------------ unclear items: messages and ordinary files
def test_a_file_given_as_checkpoint_is_named(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RoformerSimError, match=_escaped(f"(looked beside {afile}, which is a file: give the checkpoint folder")):
        checkpoints.resolve(afile)
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["similarity", "--checkpoint", "afile", "a", "b"])
    assert f"checkpoint file missing: {tmp_path / 'bert_config.json'} (looked beside afile" in err


def test_a_data_line_too_long_is_named_as_such(tmp_path):
    path = tmp_path / "ATEC.train.data"
    long = "好" * 140_000
    path.write_text(f"今天\t明天\t1\n{long}\t今天\t1\n", encoding="utf-8")
    with pytest.raises(RoformerSimError, match=r"ATEC.train.data:2: line too long \(140005 characters; a field may "
                                               r"hold at most 131072\)$"):
        readers.read_senteval(path)
    pairs, report = readers.read_senteval(path, skip_bad_lines=True)
    assert len(pairs) == 1 and report.bad == 1


def test_blank_lines_at_the_end_of_a_data_file_are_normal(tmp_path):
    pairs = tmp_path / "p.jsonl"
    line = json.dumps({"text_a": "今天", "text_b": "明天"}, ensure_ascii=False)
    pairs.write_text(f"{line}\n{line}\n\n \n", encoding="utf-8")
    groups, report = readers.read_synonyms(pairs)
    assert len(groups) == 2 and report.bad == 0
    pairs.write_text(f"{line}\n\n{line}\n\n", encoding="utf-8")  # inside the file: still a bad line
    with pytest.raises(RoformerSimError, match=r"p.jsonl:2: empty line$"):
        readers.read_synonyms(pairs)
    groups, report = readers.read_synonyms(pairs, skip_bad_lines=True)
    assert len(groups) == 2 and report.bad == 1
    pairs.write_bytes(line.encode() + b"\n\n\xff\n")  # a blank line before a bad one is reported first
    with pytest.raises(RoformerSimError, match=r"p.jsonl:2: empty line$"):
        readers.read_synonyms(pairs)
    senteval = tmp_path / "ATEC.train.data"
    senteval.write_text("今天\t明天\t1\n\n", encoding="utf-8")
    assert len(readers.read_senteval(senteval)[0]) == 1


def test_weights_with_an_empty_source_are_refused_naming_it(tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    sample = readers.sample_data_dir() / "synonyms/sample.jsonl"
    err = _one_line_error(capsys, ["pretrain", "--checkpoint", str(tiny_checkpoint), "--pairs", str(sample),
                                   "--pairs", str(empty), "--weights", "1,1", "--steps", "1", "--no-progress",
                                   "--out", str(tmp_path / "o")])
    assert f"{empty}: no usable pairs, yet one of the 2 sources weighted 1,1" in err
    assert not (tmp_path / "o").exists()


def test_a_vocab_with_a_byte_order_mark_reads_as_without(tiny_checkpoint, tmp_path):
    tokens = checkpoints.read_vocab(tiny_checkpoint / "vocab.txt")
    path = tmp_path / "vocab.txt"
    path.write_text("\ufeff" + "\n".join(tokens) + "\n", encoding="utf-8")
    assert checkpoints.read_vocab(path, len(tokens)) == tokens
