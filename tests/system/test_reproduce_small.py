"""benchmarks/reproduce_small.py end to end on the bundled sample data: a tiny shape, two steps a stage.

Checks the table and JSON are written with every row, that the learning
curves come from the periodic evaluations, that a second invocation skips
the finished stages, and that a stage cut short continues from its training
state instead of starting again. Needs no real data folder.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "roformer_sim_ft" / "data" / "sample_data"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_small", REPO / "benchmarks" / "reproduce_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def argv(out: Path) -> list[str]:
    args = ["--data", str(SAMPLE), "--vocab", "builtin", "--out", str(out), "--png", str(out / "curves.png"),
            "--shape", "tiny", "--save-every", "1", "--eval-every", "1", "--curve-rows", "10",
            "--s1-batch", "8", "--sup-batch", "8", "--dist-batch", "8",
            "--s1-warmup", "0", "--sup-warmup", "0", "--dist-warmup", "0"]
    for name in ("s1", "sup", "dist"):
        args += [f"--{name}-steps", "2"]
    return args


@pytest.fixture(scope="module")
def finished(script, tmp_path_factory):
    """One complete tiny run (two steps a stage), shared by the tests below."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    assert script.main(argv(out)) == 0
    return out


def test_end_to_end_then_skips_finished_stages(script, finished, capsys):
    out = finished
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results["lexical"]) == {"char-jaccard", "char-tfidf"}
    assert results["init"]["eval"]["average"] is not None
    for name, _, _ in script.STAGES:
        entry = results["stages"][name]
        assert entry["steps"] == 2 and set(entry["eval"]["tasks"]) == set(script.TASKS), name
        assert (out / name / "bert_config.json").exists() and (out / name / "bert_model.ckpt.index").exists()
        # the curve: one subsample evaluation per step, selecting nothing (the model is the last step)
        curve = script.curve_points(out / name)
        assert [p["step"] for p in curve] == [1, 2]
        assert all(p["tasks"]["BQ"]["rows"] == 10 for p in curve)
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "running" not in md and "RoFormer-Sim-FT-mini distilled" in md
    assert (out / "curves.png").stat().st_size > 10_000
    written = {name: (out / name / "run.json").stat().st_mtime_ns for name, _, _ in script.STAGES}
    capsys.readouterr()

    assert script.main(argv(out)) == 0
    log = capsys.readouterr().out
    for name, _, _ in script.STAGES:
        assert f"{name}: finished earlier (2 steps), skipped" in log
        assert (out / name / "run.json").stat().st_mtime_ns == written[name]
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(again["invocations"]) == 2
    assert again["stages"]["distilled"]["eval"] == results["stages"]["distilled"]["eval"]


def test_cut_short_stage_resumes_from_its_state(script, finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    # The last stage as a kill after step 1 leaves it: the state of step 1, no finished run.json.
    last = out / script.STAGES[-1][0]
    (last / "run.json").unlink()
    shutil.rmtree(last / "training_state" / "step-2")
    capsys.readouterr()

    assert script.main(argv(out)) == 0
    log = capsys.readouterr().out
    assert "(resuming from step-1)" in log
    assert sum("finished earlier" in line for line in log.splitlines()) == len(script.STAGES) - 1
    run = json.loads((last / "run.json").read_text(encoding="utf-8"))
    assert run["result"]["step"] == 2
    # the curve holds the point of the first invocation and the one of the second
    assert [p["step"] for p in run["result"]["evaluations"]] == [1, 2]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["stages"][last.name]["invocations"][-1]["resumed"] is True


def test_refuses_to_continue_with_another_shape(script, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"args": {"shape": "L-2_H-128"}}), encoding="utf-8")
    with pytest.raises(SystemExit, match="shape"):
        script.main(argv(out))


def test_killed_after_its_last_state_counts_as_finished(script, finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "distilled" / "run.json").unlink()  # the last state and the model are written, run.json is not
    capsys.readouterr()
    assert script.main(argv(out)) == 0
    assert "distilled: finished earlier (2 steps), skipped" in capsys.readouterr().out
    assert [p["step"] for p in script.curve_points(out / "distilled")] == [1, 2]

