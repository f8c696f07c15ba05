"""Resume policy: a state is continued only with the model, vocab, precision, teacher and settings it was
saved with; a mismatch is one line naming the setting and both values and touches no state; only
damaged states are set aside; a stop during the last step still writes the model; ``pipeline --resume``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from roformer_sim_ft.data import batches, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.training import states
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.training.objectives import SupervisedObjective


@pytest.fixture(scope="module")
def few():
    """16 binary + 16 NLI pairs of the bundled sample: enough for a few steps of batch 8."""
    corpus = readers.load_supervised_data(readers.sample_data_dir(), splits=("train",))
    return readers.SupervisedData(corpus.binary[:16], corpus.nli[:16], [], [])


def _train(ckpt, few, out, steps, on_step=None, **kw):
    model_vocab = checkpoints.read_vocab(Path(ckpt) / checkpoints.VOCAB_NAME)
    from roformer_sim_ft.model import make_tokenizer

    stream = batches.SupervisedBatches.from_data(few, make_tokenizer(model_vocab), batch_size=8, seed=11)
    config = training.TrainConfig(out_dir=str(out), steps=steps, learning_rate=1e-3, save_every=kw.pop("save_every", 2),
                                  log_every=1, show_progress=False, seed=11, **kw)
    return training.train(SupervisedObjective(ckpt, dropout_rate=0.1), stream, config, on_step=on_step,
                          settings={"stage": "supervised", "objective": "concat"})


def _listing(out: Path) -> list[str]:
    """Every entry of the states folder with its files' sizes: what a refused resume must leave as it was."""
    root = out / states.STATE_DIR
    return sorted(f"{p.relative_to(root)}:{p.stat().st_size if p.is_file() else 'dir'}" for p in root.rglob("*"))


def _checkpoint(tmp_path: Path, name: str, config: dict, vocab: list[str], seed: int = 7) -> Path:
    return checkpoints.write_checkpoint(tmp_path / name, config, vocab, checkpoints.init_weights(config, seed))


# ------------------------------------------------------------ another shape or precision
def test_resume_with_another_model_shape_is_a_mismatch_and_touches_no_state(tiny_checkpoint, tiny_config, tiny_vocab,
                                                                           few, tmp_path):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=4)
    before = _listing(out)
    wider = _checkpoint(tmp_path, "wider", {**tiny_config, "intermediate_size": tiny_config["intermediate_size"] * 2},
                        tiny_vocab)
    with pytest.raises(RoformerSimError) as e:
        _train(wider, few, out, steps=6, resume=True)
    n = tiny_config["intermediate_size"]
    assert f"step-4 was trained with intermediate_size {n} (its bert_config.json), not {2 * n}: that is another model" \
        in str(e.value)
    assert _listing(out) == before and not list((out / states.STATE_DIR).glob("*.damaged*"))


@pytest.mark.parametrize("now, shown", [("mixed_float16", "fp16"), ("mixed_bfloat16", "bf16")])
def test_resume_with_another_precision_is_a_mismatch_and_touches_no_state(tiny_checkpoint, few, tmp_path, now, shown):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=2)
    before = _listing(out)
    with pytest.raises(RoformerSimError, match=rf"step-2 was saved with no --mixed-precision, not --mixed-precision "
                                               rf"{shown}: resume without --mixed-precision$"):
        _train(tiny_checkpoint, few, out, steps=4, resume=True, mixed_precision=now)
    assert _listing(out) == before


def test_resume_of_a_state_without_recorded_precision_reads_it_from_the_optimizer(tiny_checkpoint, few, tmp_path, capsys):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=2, mixed_precision="mixed_float16")
    record = out / states.STATE_DIR / "step-2" / "state.json"
    saved = json.loads(record.read_text())
    assert saved["mixed_precision"] == "mixed_float16"
    del saved["mixed_precision"]  # as a state written before the policy was recorded
    record.write_text(json.dumps(saved))
    before = _listing(out)
    with pytest.raises(RoformerSimError, match=r"step-2 was saved with --mixed-precision fp16, not no --mixed-precision: "
                                               r"resume with --mixed-precision fp16$"):
        _train(tiny_checkpoint, few, out, steps=4, resume=True)
    assert _listing(out) == before
    assert _train(tiny_checkpoint, few, out, steps=3, resume=True, mixed_precision="mixed_float16").step == 3


# ------------------------------------------------------------ vocab content and teacher
def test_resume_with_a_same_size_vocab_of_other_tokens_is_a_mismatch(tiny_checkpoint, tiny_config, tiny_vocab, few,
                                                                    tmp_path):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=2)
    before = _listing(out)
    vocab = list(tiny_vocab)
    vocab[500], vocab[501] = vocab[501], vocab[500]
    other = _checkpoint(tmp_path, "other-vocab", tiny_config, vocab)
    with pytest.raises(RoformerSimError) as e:
        _train(other, few, out, steps=4, resume=True)
    assert (f"step-2 was trained with another vocab (line 501 is {tiny_vocab[500]!r} in its vocab.txt, "
            f"{tiny_vocab[501]!r} now): that is another model") in str(e.value)
    assert _listing(out) == before


def test_resume_of_distillation_refuses_another_teacher_and_accepts_a_moved_one(tiny_checkpoint, tiny_config, tiny_vocab,
                                                                               tmp_path, capsys):
    pairs = readers.sample_data_dir() / "synonyms/sample.jsonl"
    out = tmp_path / "run"
    other = _checkpoint(tmp_path, "other-teacher", tiny_config, tiny_vocab, seed=5)  # same shape and vocab
    moved = shutil.copytree(tiny_checkpoint, tmp_path / "moved-teacher")

    def distill(teacher, steps, *extra):
        return main(["distill", "--teacher", str(teacher), "--student", str(tiny_checkpoint), "--pairs", str(pairs),
                     "--out", str(out), "--steps", str(steps), "--batch-size", "8", "--save-every", "1",
                     "--no-progress", *extra])

    assert distill(tiny_checkpoint, 1) == 0
    before = _listing(out)
    capsys.readouterr()
    assert distill(other, 2, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-1 was distilled from another teacher (fingerprint of its config, vocab" in err
    assert "resume with the same --teacher, or pass --allow-changed-settings" in err
    assert _listing(out) == before
    assert distill(moved, 2, "--resume") == 0  # the same teacher in another folder
    assert json.loads((out / "run.json").read_text())["result"]["step"] == 2


# ------------------------------------------------------------ only damage is set aside, with its path
def test_malformed_sampler_or_history_is_set_aside_with_its_path_and_the_previous_state_used(tiny_checkpoint, few,
                                                                                          tmp_path, capsys):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=6, keep_states=3)  # states 2, 4 and 6
    for step, change in ((6, {"sampler": {"kind": "supervised"}}), (4, {"history": "edited"})):
        record = out / states.STATE_DIR / f"step-{step}" / "state.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
    capsys.readouterr()
    result = _train(tiny_checkpoint, few, out, steps=8, resume=True, keep_states=3)
    err = capsys.readouterr().err
    assert f"training state {out / states.STATE_DIR / 'step-6'} is damaged (state.json: malformed sampler state" in err
    assert f"training state {out / states.STATE_DIR / 'step-4'} is damaged ({out / states.STATE_DIR / 'step-4'}" \
           "/state.json: malformed history" in err
    assert "moved to step-6.damaged, trying the previous one" in err
    assert result.step == 8
    history = json.loads((out / "run.json").read_text())["losses"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6, 7, 8]  # continued from step 2's history


def test_sampler_of_other_settings_is_a_mismatch_naming_the_state(tiny_checkpoint, few, tmp_path):
    out = tmp_path / "run"
    _train(tiny_checkpoint, few, out, steps=2)
    record = out / states.STATE_DIR / "step-2" / "state.json"
    saved = json.loads(record.read_text())
    saved["sampler"]["batch_size"] = 16
    record.write_text(json.dumps(saved))
    before = _listing(out)
    with pytest.raises(RoformerSimError, match=r"--resume: .*step-2/state.json: sampler state was saved with batch_size 16, not 8"):
        _train(tiny_checkpoint, few, out, steps=4, resume=True)
    assert _listing(out) == before


# ------------------------------------------------------------ a stop during the last step
def test_stop_signal_during_the_last_step_still_writes_the_model(tiny_checkpoint, few, tmp_path, capsys):
    out = tmp_path / "run"

    def stop_at_last(step, losses):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    result = _train(tiny_checkpoint, few, out, steps=3, on_step=stop_at_last, save_every=0)
    assert not result.interrupted and result.step == 3
    assert (out / checkpoints.CONFIG_NAME).exists() and (out / f"{checkpoints.CKPT_NAME}.index").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["result"]["step"] == 3 and run["result"]["interrupted"] is False
    assert "stop signal during the last step 3: writing the model and run.json" in capsys.readouterr().out
    with pytest.raises(RoformerSimError, match="is at step 3 and --steps is 3: nothing to do"):
        _train(tiny_checkpoint, few, out, steps=3, resume=True)


def test_resume_at_the_last_step_writes_the_model_a_stopped_run_lacks(tiny_checkpoint, few, tmp_path, capsys):
    out = tmp_path / "run"

    def stop(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert _train(tiny_checkpoint, few, out, steps=4, on_step=stop, save_every=0).interrupted
    assert not (out / f"{checkpoints.CKPT_NAME}.index").exists()  # a stopped run has no model yet
    capsys.readouterr()
    result = _train(tiny_checkpoint, few, out, steps=2, resume=True)  # its state is at the last step asked for
    assert "stopped at its last step 2 before writing its model: writing it now" in capsys.readouterr().err
    assert not result.interrupted and result.step == 2 and result.losses
    assert (out / f"{checkpoints.CKPT_NAME}.index").exists()
    assert json.loads((out / "run.json").read_text())["result"]["interrupted"] is False


# ------------------------------------------------------------ pipeline --resume
def test_pipeline_resume_keeps_finished_stages_and_continues_the_rest(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "all"
    base = ["pipeline", "--checkpoint", str(tiny_checkpoint), "--data", str(readers.sample_data_dir()), "--out", str(out),
            "--supervised-batch-size", "8", "--distill-batch-size", "8"]
    args = [*base, "--supervised-steps", "1"]
    assert main([*args, "--distill-steps", "1", "--resume"]) == 0  # nothing to resume yet: every stage runs
    capsys.readouterr()
    assert main([*args, "--distill-steps", "2"]) == 2
    assert "holds a run at step 1: use --resume to continue it" in capsys.readouterr().err
    assert main([*args, "--distill-steps", "2", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"kept {out / 'supervised'}: its run is finished at step 1" in printed
    assert json.loads((out / "distilled/run.json").read_text())["result"]["step"] == 2
    assert json.loads((out / "evaluation.json").read_text())["outputs"]["distilled"] == str(out / "distilled")
    more = [*base, "--supervised-steps", "2", "--distill-steps", "3", "--resume"]
    assert main(more) == 2  # the supervised stage went on: the distillation's teacher is another now
    assert "was distilled from another teacher" in capsys.readouterr().err
    assert main([*more, "--allow-changed-settings"]) == 0
    assert f"kept {out / 'supervised'}: its run is finished at step 2" in capsys.readouterr().out
    assert json.loads((out / "distilled/run.json").read_text())["result"]["step"] == 3


def test_a_state_without_teacher_fingerprint_is_resumed_with_a_note(tmp_path, capsys):
    from types import SimpleNamespace

    from roformer_sim_ft.training import resume

    run = SimpleNamespace(config=training.TrainConfig(seed=0), settings={"stage": "distill", "teacher_fingerprint": "ab"})
    saved = {"settings": {"stage": "distill"}, "seed": 0}  # written before teachers were fingerprinted
    resume.check_settings(run, tmp_path / "step-2", saved)
    assert "does not record its teacher's fingerprint: the teacher is not compared" in capsys.readouterr().err
    with pytest.raises(RoformerSimError, match=r"distilled from another teacher \(.* cd, now ab\)"):
        resume.check_settings(run, tmp_path / "step-2", {**saved, "settings": {**saved["settings"],
                                                                               "teacher_fingerprint": "cd"}})
