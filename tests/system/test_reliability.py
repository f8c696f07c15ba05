"""Reliability: no run and no user file is lost, and every failure is one line.

Each test reproduces one way an adversarial user lost data or got a traceback:
reused and shared ``--out`` folders, writes into folders that are not ours,
kills in the middle of a checkpoint swap or a state save, damaged files, bad
values and paths, resumes with other settings, degenerate inputs, file modes.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from roformer_sim_ft.data import batches, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.fs import folders as outputs
from roformer_sim_ft.export import core as export_core
from roformer_sim_ft.training import loop, states
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.training.objectives import SupervisedObjective
from reliability_helpers import one_line_error, same_weights, weights_of

REPO = Path(__file__).resolve().parents[2]
DATA = "bert_model.ckpt.data-00000-of-00001"


@pytest.fixture(scope="module")
def few():
    """16 binary + 16 NLI pairs of the bundled sample: enough for a few steps of batch 8."""
    corpus = readers.load_supervised_data(readers.sample_data_dir(), splits=("train",))
    return readers.SupervisedData(corpus.binary[:16], corpus.nli[:16], [], [])


def _train(ckpt, few, tokenizer, out, steps, seed=11, on_step=None, settings=None, **kw):
    stream = batches.SupervisedBatches.from_data(few, tokenizer, batch_size=8, seed=seed)
    config = training.TrainConfig(out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=kw.pop("save_every", 2),
                                  log_every=1, show_progress=False, seed=seed, **kw)
    return training.train(SupervisedObjective(ckpt, dropout_rate=0.1), stream, config, on_step=on_step,
                          settings=settings or {"stage": "supervised", "objective": "concat"})


# ------------------------------------------------------------ 1, 2: reused and shared --out
def test_new_run_into_used_out_stops_and_overwrite_starts_again(tiny_checkpoint, tiny_model, few, tmp_path, capsys):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=4, seed=1)
    first = weights_of(out)
    with pytest.raises(RoformerSimError, match=r"holds a run at step 4: use --resume to continue it or --overwrite"):
        _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=2, seed=2)
    assert [p.name for p in states.list_states(out)] == ["step-2", "step-4"] and same_weights(weights_of(out), first)

    _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=2, seed=2, overwrite=True)
    assert "cleared the earlier run" in capsys.readouterr().err
    # only the new run's states remain, and they are the ones the new run wrote
    assert [p.name for p in states.list_states(out)] == ["step-2"]
    assert states.read_record(out / "training_state/step-2")["seed"] == 2
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 2
    assert not same_weights(weights_of(out), first)


def test_second_training_into_a_locked_out_is_refused(tiny_checkpoint, tiny_model, few, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with outputs.FolderLock(out):  # as another training would hold it (flock: a second open file conflicts)
        with pytest.raises(RoformerSimError, match=rf"another training \(pid {os.getpid()}\) is writing"):
            _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=2)
    # a lock left by a killed process: its pid stays in the file, the kernel released the flock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / outputs.LOCK_NAME).write_text(str(dead.pid))
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=2)
    assert f"took over the lock of pid {dead.pid}" in capsys.readouterr().err
    assert (out / outputs.LOCK_NAME).read_text() == ""  # released cleanly


# ------------------------------------------------------------ 3, 4: folders that are not ours
def test_checkpoint_writes_refuse_foreign_folders(tiny_checkpoint, tiny_config, tmp_path, capsys):
    from roformer_sim_ft import export as ex

    user = tmp_path / "mine"
    user.mkdir()
    (user / "vocab.txt").write_text("my own vocab\n")
    (user / "bert_config.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    err = one_line_error(capsys, ["init", "--config", "tiny", "--out", str(user)])
    assert "not an earlier output" in err
    model = SimModel.load(tiny_checkpoint)
    for attempt in (lambda: model.save(user), lambda: ex.export(tiny_checkpoint, user)):
        with pytest.raises(RoformerSimError, match="not an earlier output"):
            attempt()
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before
    # a training folder's model is written only by its own training
    run = tmp_path / "run"
    run.mkdir()
    outputs.write_manifest(run, "training", ["run.json"])
    with pytest.raises(RoformerSimError, match="holds a training run"):
        model.save(run)


@pytest.mark.parametrize("format, generic", [("hf", "model.safetensors"), ("h5", "bert_model.weights.h5")])
def test_exports_recognise_their_own_outputs_by_manifest(tiny_checkpoint, tmp_path, format, generic):
    from roformer_sim_ft import export as ex

    user = tmp_path / "user"
    user.mkdir()
    (user / generic).write_bytes(b"someone else's weights")
    (user / "notes.txt").write_text("keep")
    with pytest.raises(RoformerSimError, match="not an earlier output"):
        ex.export(tiny_checkpoint, user, format)
    assert (user / generic).read_bytes() == b"someone else's weights" and (user / "notes.txt").read_text() == "keep"

    ours = tmp_path / "ours"
    ex.export(tiny_checkpoint, ours, format)
    manifest = outputs.read_manifest(ours)
    assert manifest["format"] == format and generic in manifest["files"]
    (ours / "notes.txt").write_text("mine, in an export folder")
    ex.export(tiny_checkpoint, ours, format, overwrite=True)  # an earlier export of ours: replaced, the user's file kept
    assert (ours / "notes.txt").read_text() == "mine, in an export folder"
    assert "notes.txt" not in outputs.read_manifest(ours)["files"]
    with pytest.raises(RoformerSimError, match=f"holds a roformer-sim-ft {format} output"):
        ex.export(tiny_checkpoint, ours, "savedmodel" if format != "savedmodel" else "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "user"]  # no temporary folder left


_KILL_AT = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    from roformer_sim_ft.fs import folders as outputs
    new, target, kill_at, exchange = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    calls = [0]
    def counted(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper
    os.rename, os.link, shutil.rmtree = counted(os.rename), counted(os.link), counted(shutil.rmtree)
    outputs._exchange = counted(outputs._exchange if exchange else (lambda a, b: False))
    outputs.swap_in(new, target, "ckpt", [p.name for p in new.iterdir()])
    print(calls[0])
""")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_kill_at_every_step_of_a_checkpoint_swap_leaves_a_loadable_checkpoint(tiny_checkpoint, tiny_config, tmp_path, exchange):
    """SIGKILL at each file operation of replacing a checkpoint (which before this
    was one ``os.replace`` per file): the folder always loads as the old or the new one."""
    vocab = checkpoints.read_vocab(tiny_checkpoint / "vocab.txt")
    old_w, new_w = weights_of(tiny_checkpoint), checkpoints.init_weights(tiny_config, seed=99)
    staged = tmp_path / "staged"
    checkpoints.write_checkpoint(staged, tiny_config, vocab, new_w)

    def attempt(kill_at):
        case = tmp_path / f"k{kill_at}"
        case.mkdir()
        target = shutil.copytree(tiny_checkpoint, case / "ck")
        (target / "notes.txt").write_text("the user's")
        (target / "training_state").mkdir()  # an entry the new folder must carry over
        (target / "training_state" / "x").write_text("state")
        new = shutil.copytree(staged, case / ".ck.tmp-test")
        (new / outputs.MANIFEST_NAME).unlink()
        proc = subprocess.run([sys.executable, "-c", _KILL_AT, str(new), str(target), str(kill_at), "1" if exchange else "0"],
                              capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        outputs.recover(target)  # what the next write into it does first
        got = weights_of(target)
        assert same_weights(got, old_w) or same_weights(got, new_w), f"kill at operation {kill_at}: a mix of old and new"
        assert (target / "notes.txt").read_text() == "the user's"
        assert (target / "training_state" / "x").read_text() == "state"
        return proc, got

    proc, got = attempt(10_000)  # no kill: count the operations
    assert proc.returncode == 0, proc.stderr
    total = int(proc.stdout.split()[-1])
    assert same_weights(got, new_w) and total >= 3
    outcomes = []
    for kill_at in range(1, total + 1):
        proc, got = attempt(kill_at)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        outcomes.append("new" if same_weights(got, new_w) else "old")
    assert outcomes[0] == "old" and outcomes[-1] == "new"


# ------------------------------------------------------------ 5: signals during the interrupt save
def test_second_signal_during_the_interrupt_save_waits_for_it(tiny_checkpoint, tiny_model, few, tmp_path, monkeypatch, capsys):
    real_save = states.save_state

    def save_under_fire(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal, 0 s into the save
        return real_save(*args, **kwargs)

    monkeypatch.setattr(states, "save_state", save_under_fire)

    def interrupt(step, losses):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    result = _train(tiny_checkpoint, few, tiny_model.tokenizer, tmp_path / "run", steps=6, on_step=interrupt, save_every=0)
    assert result.interrupted and result.step == 3
    assert "a third signal exits at once" in capsys.readouterr().err
    assert states.read_record(states.latest_state(tmp_path / "run"))["step"] == 3


def test_third_signal_exits_saying_what_is_lost(monkeypatch, capsys, tmp_path):
    exits = []
    monkeypatch.setattr(loop.os, "_exit", lambda code: exits.append(code))
    flag = loop._StopFlag()
    flag.last_saved = tmp_path / "training_state/step-2"
    for _ in range(3):
        flag._handle(signal.SIGTERM, None)
    assert flag.signal == signal.SIGTERM and exits == [128 + signal.SIGTERM]
    err = capsys.readouterr().err
    assert "steps since the last saved state are lost" in err and "step-2" in err


# ------------------------------------------------------------ 6: damaged files
@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "other-index"])
def test_damaged_checkpoint_is_one_line(tiny_checkpoint, tiny_config, tmp_path, capsys, damage):
    ck = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    data = ck / DATA
    if damage == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    elif damage == "empty":
        os.truncate(data, 0)
    elif damage == "flipped":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        data.write_bytes(raw)
    else:  # the index of another model of the same shape
        vocab = checkpoints.read_vocab(ck / "vocab.txt")
        other = checkpoints.write_checkpoint(tmp_path / "other", tiny_config, vocab, checkpoints.init_weights(tiny_config, 5))
        shutil.copy(other / "bert_model.ckpt.index", ck / "bert_model.ckpt.index")
    err = one_line_error(capsys, ["similarity", "--checkpoint", str(ck), "a", "b"])
    assert str(ck) in err and ("unreadable" in err or "not a readable" in err)


def test_resume_skips_damaged_states(tiny_checkpoint, tiny_model, few, tmp_path, capsys):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=6, keep_states=3)  # states 2, 4 and 6
    os.truncate(next((out / "training_state/step-6").glob("ckpt.data-*")), 10)  # damaged weights
    (out / "training_state/step-4/state.json").write_text("not json")  # an invalid record
    (out / "training_state/step-80.bak").mkdir()  # a stray copy
    (out / "training_state/step-80.bak/state.json").write_text("{")
    (out / "training_state/.step-8.tmp-abc123").mkdir()  # left by a kill inside a save
    capsys.readouterr()
    result = _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=8, resume=True, keep_states=3)
    err = capsys.readouterr().err
    assert "training state" in err and "step-6 is damaged" in err and "step-4 is damaged" in err
    assert (out / "training_state/step-6.damaged").is_dir() and (out / "training_state/step-4.damaged").is_dir()
    assert "removed" in err and not (out / "training_state/.step-8.tmp-abc123").exists()
    assert result.step == 8 and [p.name for p in states.list_states(out)] == ["step-2", "step-4", "step-6", "step-8"][-3:]
    history = json.loads((out / "run.json").read_text())["losses"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6, 7, 8]  # continued from step 2's history


# ------------------------------------------------------------ 9: resume bound to its settings
def test_resume_refuses_other_settings_seed_data_and_past_steps(tiny_checkpoint, tmp_path, capsys):
    from roformer_sim_ft.pipeline import supervised
    from roformer_sim_ft.settings import SupervisedSettings, TrainConfig

    sample = readers.sample_data_dir()
    pairs = shutil.copy(sample / "senteval_cn/ATEC/ATEC.train.data", tmp_path / "ATEC.train.data")
    nli = sample / "cnsd/cnsd-sample/sample.train.jsonl"
    out = tmp_path / "run"

    def run(steps, settings=SupervisedSettings(batch_size=8, bucket=1), **kw):
        config = TrainConfig(out_dir=str(out), steps=steps, save_every=0, show_progress=False, **kw)
        return supervised(tiny_checkpoint, config, senteval_files=[pairs], nli_files=[nli], settings=settings)

    run(2)
    with pytest.raises(RoformerSimError, match=r"seed 0, not 3 \(resume with the same setting: --seed 0\), or pass --allow-changed-settings"):
        run(4, resume=True, seed=3)
    with pytest.raises(RoformerSimError, match=r"objective concat, not cos-mse: that is another model"):
        run(4, resume=True, settings=SupervisedSettings(batch_size=8, bucket=1, objective="cos-mse"))
    with pytest.raises(RoformerSimError, match=r"features"):
        run(4, resume=True, settings=SupervisedSettings(batch_size=8, bucket=1, features=("u", "v")))
    with pytest.raises(RoformerSimError, match=r"is at step 2 and --steps is 1: nothing to do"):
        run(1, resume=True)
    lines = pairs.read_text(encoding="utf-8").splitlines()
    swapped = [line[:-1] + ("1" if line.endswith("0") else "0") for line in lines[:2]] + lines[2:]
    pairs.write_text("\n".join(swapped) + "\n", encoding="utf-8")  # same size, other labels
    with pytest.raises(RoformerSimError, match=r"saved on other data \(content fingerprint"):
        run(4, resume=True)
    assert run(4, resume=True, allow_changed_settings=True).step == 4
    assert "--allow-changed-settings" in capsys.readouterr().err


# ------------------------------------------------------------ 7, 8: bad values and paths
@pytest.mark.parametrize("key, value, message", [
    ("num_attention_heads", 0, "num_attention_heads must be a positive integer"),
    ("hidden_size", "64", "hidden_size must be a positive integer, got '64'"),
    ("hidden_act", "gelo", "unknown hidden_act 'gelo'"),
    ("hidden_dropout_prob", 1.5, "hidden_dropout_prob must be a number in"),
])
def test_bad_config_values_are_one_line(tiny_checkpoint, tmp_path, capsys, key, value, message):
    ck = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    config = json.loads((ck / "bert_config.json").read_text())
    (ck / "bert_config.json").write_text(json.dumps({**config, key: value}))
    assert message in one_line_error(capsys, ["similarity", "--checkpoint", str(ck), "a", "b"])


def test_out_of_range_option_and_bad_out_paths_are_one_line(tiny_checkpoint, tmp_path, capsys):
    data = str(readers.sample_data_dir())
    base = ["train", "--checkpoint", str(tiny_checkpoint), "--data", data, "--steps", "1", "--no-progress"]
    assert "dropout_rate must be in [0, 1), got 2.0" in one_line_error(capsys, base + ["--out", str(tmp_path / "o"), "--dropout", "2"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "exists and is not a folder" in one_line_error(capsys, base + ["--out", str(afile)])
    assert f"{afile} is a file, not a folder" in one_line_error(capsys, base + ["--out", str(afile / "sub")])
    assert afile.read_text() == "x"


def test_folder_given_for_a_file_is_refused_before_any_work(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("今天天气不错\n", encoding="utf-8")
    enc = ["encode", "--checkpoint", str(tmp_path / "no-such-checkpoint")]
    # a missing checkpoint would be the error if the output path were checked after loading it
    assert "is a folder" in one_line_error(capsys, enc + ["--input", str(tmp_path / "in.txt"), "--output", str(tmp_path)])
    assert "is a folder, expected a text file" in one_line_error(
        capsys, ["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path), "--output", str(tmp_path / "v.npy")])
    assert "--json file must be a file path" in one_line_error(
        capsys, ["evaluate", "--checkpoint", str(tmp_path / "no-such"), "--probes", "--json", str(tmp_path)])


def test_full_disk_or_read_only_destination_is_one_line_and_leaves_nothing(tiny_checkpoint, tiny_model, few, tmp_path, monkeypatch, capsys):
    from roformer_sim_ft import export as ex

    out = tmp_path / "run"
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=2, save_every=0)
    kept = sorted(p.name for p in (out / "training_state").iterdir())

    import tensorflow as tf

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)
    with pytest.raises(RoformerSimError, match=r"step-4: cannot write \(no space left on device\)"):
        _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=4, resume=True, save_every=0)
    assert sorted(p.name for p in (out / "training_state").iterdir()) == kept
    monkeypatch.undo()

    exported = tmp_path / "hf"
    ex.export(tiny_checkpoint, exported, "hf")
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    monkeypatch.setattr(export_core, "write_safetensors", full)
    err = one_line_error(capsys, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(exported), "--format", "hf",
                                   "--overwrite"])
    assert f"{exported}: cannot write (no space left on device)" in err
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    def read_only(*args, **kwargs):  # the tests may run as root, for whom chmod does not make a folder read-only
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", read_only)
    err = one_line_error(capsys, ["init", "--config", "tiny", "--out", str(tmp_path / "ro")])
    assert f"{tmp_path}: cannot write (permission denied)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]


# ------------------------------------------------------------ 10: degenerate inputs
def test_bad_vocab_lines_are_named(tiny_checkpoint, tmp_path):
    tokens = checkpoints.read_vocab(tiny_checkpoint / "vocab.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join(tokens[:500] + [tokens[200]] + tokens[501:]) + "\n", encoding="utf-8")
    with pytest.raises(RoformerSimError, match=r"dup.txt:501: duplicate token .* \(also on line 201\)"):
        checkpoints.read_vocab(dup)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n".join(tokens[:500] + [""] + tokens[501:]) + "\n", encoding="utf-8")
    with pytest.raises(RoformerSimError, match=r"blank.txt:501: blank line inside the vocab"):
        checkpoints.read_vocab(blank)


def test_nli_label_typo_is_a_bad_line_and_dash_stays_unlabelled(tmp_path):
    path = tmp_path / "n.jsonl"
    lines = [{"sentence1": "一个人", "sentence2": "有人", "gold_label": g} for g in ("entailment", "-", "entail")]
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    with pytest.raises(RoformerSimError, match=r"n.jsonl:3: gold_label 'entail' is not one of"):
        readers.read_nli(path)
    pairs, report = readers.read_nli(path, skip_bad_lines=True)
    assert len(pairs) == 1 and report.unlabeled == 1 and report.bad == 1


def test_empty_encode_input_constant_labels_and_top_k(tiny_checkpoint, tiny_model, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    err = one_line_error(capsys, ["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path / "empty.txt"),
                                   "--output", str(tmp_path / "v.npy")])
    assert "no sentences to encode" in err and not (tmp_path / "v.npy").exists()
    task = tmp_path / "d/senteval_cn/ATEC"
    task.mkdir(parents=True)
    (task / "ATEC.valid.data").write_text("今天天气不错\t今天天气很好\t1\n我喜欢北京\t我很喜欢北京\t1\n", encoding="utf-8")
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "d"),
                                   "--split", "valid", "--tasks", "ATEC"])
    assert "all 2 labels are 1: Spearman correlation is undefined" in err
    for bad in (-1, 0, 1.5):
        with pytest.raises(RoformerSimError, match="top_k must be a positive integer"):
            tiny_model.most_similar("今天", ["明天", "后天"], top_k=bad)


# ------------------------------------------------------------ 11: modes follow the umask
def test_outputs_follow_the_umask(tiny_checkpoint, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        (tmp_path / "in.txt").write_text("好\n", encoding="utf-8")
        assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path / "in.txt"),
                     "--output", str(tmp_path / "v.npy")]) == 0
        assert main(["init", "--config", "tiny", "--out", str(tmp_path / "ck")]) == 0
        os.umask(0o027)
        assert main(["init", "--config", "tiny", "--out", str(tmp_path / "ck27")]) == 0
    finally:
        os.umask(previous)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "v.npy") == 0o644
    assert mode(tmp_path / "ck") == 0o755 and all(mode(p) == 0o644 for p in (tmp_path / "ck").iterdir())
    assert mode(tmp_path / "ck27") == 0o750 and mode(tmp_path / "ck27/vocab.txt") == 0o640


# ------------------------------------------------------------ the demo's --out
def test_demo_replaces_only_its_own_output(tmp_path, capsys):
    from roformer_sim_ft import demo

    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    assert demo.main(["--out", str(user)]) == 2
    assert "not an earlier output" in capsys.readouterr().err and (user / "thesis.tex").read_text() == "years of work"

    earlier = tmp_path / "demo_out"
    for name in ("init", "supervised"):
        (earlier / name).mkdir(parents=True)
        (earlier / name / "x").write_text("old")
    (earlier / "evaluation.json").write_text("{}")
    demo._clear_earlier_demo(earlier)  # written before manifests existed: recognised by its layout
    assert sorted(p.name for p in earlier.iterdir()) == [outputs.MANIFEST_NAME]
    (earlier / "mine.txt").write_text("keep")
    demo._clear_earlier_demo(earlier)  # ours now: our entries go, the user's file stays
    assert (earlier / "mine.txt").read_text() == "keep"
