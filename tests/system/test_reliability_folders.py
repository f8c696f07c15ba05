"""Reliability of output folders: a folder holding trained weights is replaced only with an
explicit overwrite and never while it is also an input of the same command; ``--overwrite``
deletes only what our runs wrote; symlinked folders are written through; error reasons are kept.

Each test reproduces one way a user could lose a trained model or get a false message.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from roformer_sim_ft.data import batches, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.fs import folders as outputs
from roformer_sim_ft.training import states
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.training.objectives import SupervisedObjective
from reliability_helpers import one_line_error, same_weights, weights_of

SAMPLE = readers.sample_data_dir()
PAIRS = SAMPLE / "synonyms" / "sample.jsonl"


@pytest.fixture(scope="module")
def few():
    """16 binary + 16 NLI pairs of the bundled sample: enough for a few steps of batch 8."""
    corpus = readers.load_supervised_data(SAMPLE, splits=("train",))
    return readers.SupervisedData(corpus.binary[:16], corpus.nli[:16], [], [])


def _train(ckpt, few, tokenizer, out, steps=2, seed=11, **kw):
    stream = batches.SupervisedBatches.from_data(few, tokenizer, batch_size=8, seed=seed)
    config = training.TrainConfig(out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=0, log_every=1,
                                  show_progress=False, seed=seed, **kw)
    return training.train(SupervisedObjective(ckpt, dropout_rate=0.1), stream, config,
                          settings={"stage": "supervised", "objective": "concat"})


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` (symlinks followed) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def run(tiny_checkpoint, tiny_model, few, tmp_path):
    """A finished 2-step training folder (model, run.json, training_state/step-2, logs)."""
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out)
    return out


# ------------------------------------------------------------ 1: an input inside --out
def test_an_input_inside_out_is_refused_before_anything_is_deleted(run, tiny_checkpoint, tmp_path, capsys):
    before = _tree(run)
    train = ["train", "--checkpoint", str(run), "--data", str(SAMPLE), "--steps", "3", "--out", str(run), "--overwrite"]
    assert f"--checkpoint {run} is {run}, the folder this command replaces" in one_line_error(capsys, train)
    state = run / "training_state" / "step-2"
    assert f"--checkpoint {state} is inside {run}, which this command replaces" in \
        one_line_error(capsys, [*train[:2], str(state), *train[3:-1], "--resume"])
    distill = ["distill", "--teacher", str(run), "--student", str(tiny_checkpoint), "--pairs", str(PAIRS),
               "--steps", "3", "--out", str(run), "--overwrite"]
    assert f"--teacher {run} is {run}, the folder" in one_line_error(capsys, distill)
    with pytest.raises(RoformerSimError, match="--checkpoint .* is inside .*, which this command replaces"):
        from roformer_sim_ft.pipeline import pretrain

        pretrain(state, training.TrainConfig(out_dir=str(run), steps=3, overwrite=True), [PAIRS])
    assert _tree(run) == before

    # pipeline --checkpoint OUT/<stage>: refused before the first stage, whichever stage holds it
    out = tmp_path / "pipe"
    out.mkdir()
    outputs.write_manifest(out, "pipeline", ["supervised", "distilled", "export", "evaluation.json"])
    shutil.copytree(run, out / "distilled")
    before = _tree(out)
    pipe = ["pipeline", "--checkpoint", str(out / "distilled"), "--data", str(SAMPLE), "--out", str(out),
            "--supervised-steps", "1", "--distill-steps", "1", "--overwrite"]
    assert f"--checkpoint {out / 'distilled'} is {out / 'distilled'}, the folder" in one_line_error(capsys, pipe)
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == [outputs.MANIFEST_NAME, "distilled"]


# ------------------------------------------------------------ 2: a model whose states were deleted
def test_a_finished_model_stays_protected_after_its_states_are_deleted(run, tiny_checkpoint, tiny_model, few, capsys):
    first = weights_of(run)
    shutil.rmtree(run / "training_state")  # to save disk
    err = one_line_error(capsys, ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(SAMPLE),
                                   "--steps", "1", "--out", str(run)])
    assert f"{run} holds a trained model but no training state to resume: use --overwrite" in err
    with pytest.raises(RoformerSimError, match="holds a trained model"):
        _train(tiny_checkpoint, few, tiny_model.tokenizer, run, seed=5)
    assert same_weights(weights_of(run), first)

    (run / "notes.txt").write_text("mine")
    _train(tiny_checkpoint, few, tiny_model.tokenizer, run, seed=5, overwrite=True)
    assert "cleared the earlier run" in capsys.readouterr().err
    assert not same_weights(weights_of(run), first) and json.loads((run / "run.json").read_text())["config"]["seed"] == 5
    assert (run / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------ 5, 7: OUT/logs, plain and symlinked
def test_overwrite_deletes_only_our_event_files_also_through_a_symlinked_logs(run, tiny_checkpoint, tiny_model, few,
                                                                            tmp_path, capsys):
    logs = run / "logs"
    (first_events,) = [p.name for p in logs.iterdir() if ".tfevents." in p.name]
    (logs / "notes.txt").write_text("my notes")
    (logs / "mine").mkdir()
    (logs / "mine" / "events.out.tfevents.1.mine").write_text("my own curves")
    _train(tiny_checkpoint, few, tiny_model.tokenizer, run, seed=5, overwrite=True)
    assert "cleared the earlier run" in capsys.readouterr().err
    assert (logs / "notes.txt").read_text() == "my notes"
    assert (logs / "mine" / "events.out.tfevents.1.mine").read_text() == "my own curves"
    (second_events,) = outputs.read_manifest(logs)["files"]
    assert not (logs / first_events).exists() and (logs / second_events).is_file()

    # a symlinked OUT/logs: followed, only our event files in its target deleted, the link kept
    target = tmp_path / "elsewhere" / "logs"
    target.parent.mkdir()
    shutil.move(str(logs), str(target))
    logs.symlink_to(target, target_is_directory=True)
    _train(tiny_checkpoint, few, tiny_model.tokenizer, run, seed=6, overwrite=True)
    assert logs.is_symlink() and os.readlink(logs) == str(target)
    assert sorted(p.name for p in target.iterdir() if ".tfevents." not in p.name) == \
        [outputs.MANIFEST_NAME, "mine", "notes.txt"]
    (third_events,) = outputs.read_manifest(target)["files"]
    assert third_events != second_events and (target / third_events).is_file() and not (target / second_events).exists()
    assert [p.name for p in states.list_states(run)] == ["step-2"] and states.read_record(run / "training_state/step-2")["seed"] == 6


# ------------------------------------------------------------ 7: a symlinked --out
def test_a_symlinked_out_is_written_through(tiny_checkpoint, tmp_path, capsys):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    assert main(["train", "--checkpoint", str(tiny_checkpoint), "--data", str(SAMPLE), "--steps", "2",
                 "--batch-size", "8", "--save-every", "0", "--out", str(link), "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "run.json").is_file() and [p.name for p in states.list_states(real)] == ["step-2"]
    assert outputs.read_manifest(real)["format"] == "training" and checkpoints.load_checkpoint(link)[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no .link.tmp-* / .real.tmp-* left

    for fmt in ("ckpt", "h5"):
        exported, exported_link = tmp_path / f"x-{fmt}", tmp_path / f"x-{fmt}-link"
        exported_link.symlink_to(exported, target_is_directory=True)  # dangling: its target is created
        for extra in ([], ["--overwrite"]):
            args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(exported_link), "--format", fmt, *extra]
            assert main(args) == 0, capsys.readouterr().err
            assert f"wrote {exported_link}" in capsys.readouterr().out
            assert exported_link.is_symlink() and outputs.read_manifest(exported)["format"] == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "x-ckpt", "x-ckpt-link", "x-h5", "x-h5-link"]


# ------------------------------------------------------------ 8: init, export, SimModel.save into a model
def test_a_folder_holding_weights_is_replaced_only_with_overwrite(tiny_checkpoint, tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["init", "--config", "tiny", "--out", str(model), "--seed", "1"]) == 0
    first = weights_of(model)
    err = one_line_error(capsys, ["init", "--config", "tiny", "--out", str(model), "--seed", "2"])
    assert f"{model}: holds a roformer-sim-ft ckpt output; not replacing it without --overwrite" in err
    assert same_weights(weights_of(model), first)
    assert main(["init", "--config", "tiny", "--out", str(model), "--seed", "2", "--overwrite"]) == 0
    second = weights_of(model)
    assert not same_weights(second, first)

    loaded = SimModel.load(tiny_checkpoint)
    with pytest.raises(RoformerSimError, match="not replacing it without --overwrite"):
        loaded.save(model)
    assert same_weights(weights_of(model), second)
    loaded.save(model, overwrite=True)
    assert same_weights(weights_of(model), weights_of(tiny_checkpoint))

    for fmt in ("ckpt", "hf"):
        out = tmp_path / f"e-{fmt}"
        args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--format", fmt]
        assert main(args) == 0
        before = _tree(out)
        assert "not replacing it without --overwrite" in one_line_error(capsys, args)
        assert _tree(out) == before
        assert main([*args, "--overwrite"]) == 0
    # an export never replaces its own input
    err = one_line_error(capsys, ["export", "--checkpoint", str(model), "--out", str(model), "--overwrite"])
    assert f"--checkpoint {model} is {model}, the folder this command replaces" in err
    assert same_weights(weights_of(model), weights_of(tiny_checkpoint))


# ------------------------------------------------------------ unclear: a long message keeps its reason
def test_a_long_error_keeps_its_reason(tiny_checkpoint, tiny_model, few, tmp_path, monkeypatch):
    out = tmp_path / ("d" * 120)  # the state's path alone is over 200 characters
    _train(tiny_checkpoint, few, tiny_model.tokenizer, out)
    import tensorflow as tf

    def full(self, prefix, *args, **kwargs):
        raise tf.errors.UnknownError(None, None, f"{prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
                                                 f"No space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)
    with pytest.raises(RoformerSimError, match=r"No space left on device \[Op:SaveV2\]\); the earlier states are kept"):
        _train(tiny_checkpoint, few, tiny_model.tokenizer, out, steps=4, resume=True)
    assert [p.name for p in states.list_states(out)] == ["step-2"]

    from roformer_sim_ft.fs.atomic import error_text

    deep = "/".join(["a-rather-long-folder-name"] * 12)
    text = f"Failed to rename: /{deep}/ckpt.data-00000-of-00001.tempstate123 to: /{deep}/ckpt.data; No space left on device"
    short = error_text(OSError(text))
    assert len(short) <= 200 and short.endswith("No space left on device")
    assert error_text(ValueError("x" * 500 + " the reason")).endswith("the reason")


# ------------------------------------------------------------ 8: the pipeline's export folder, checked first
def test_the_pipeline_refuses_to_replace_an_export_before_training(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "pipe"
    out.mkdir()
    outputs.write_manifest(out, "pipeline", ["supervised", "distilled", "export", "evaluation.json"])
    shutil.copytree(tiny_checkpoint, out / "export")  # a checkpoint of ours, e.g. the export of a run whose stages were deleted
    before = _tree(out)
    err = one_line_error(capsys, ["pipeline", "--checkpoint", str(tiny_checkpoint), "--data", str(SAMPLE), "--out", str(out),
                                   "--supervised-steps", "1", "--distill-steps", "1"])
    assert f"{out / 'export'}: holds a roformer-sim-ft ckpt output; not replacing it without --overwrite" in err
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == [outputs.MANIFEST_NAME, "export"]
