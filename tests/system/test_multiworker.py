"""Multi-worker training: two worker processes on this machine (loopback, one CPU each) against one process.

The workers find each other through ``TF_CONFIG`` on free loopback ports; the
tests skip, naming why, where a loopback socket cannot be bound.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roformer_sim_ft.data import batches as B
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.data import readers
from roformer_sim_ft.training import states
from roformer_sim_ft.training.distribute import Role, _not_joined, role
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective, SupervisedObjective

pytestmark = pytest.mark.sockets

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
# Losses of a step on two workers vs one process, same global batch and weights (dropout off):
# the same float32 math summed in another order (rows split, gradients all-reduced); measured
# at most 2.5e-7 relative (3 steps of distillation and stage 1, 2 resumed supervised steps).
TOLERANCE = 1e-5

# One worker: trains the stages of job["stages"] (supervised, distill, pretrain) for job["steps"] steps each,
# printing each step's losses as JSON; or, with "die_at", exits hard at that step.
WORKER = """
import json, os, sys
import roformer_sim_ft
from roformer_sim_ft.data import batches as B, readers
from roformer_sim_ft import training
from roformer_sim_ft.model import make_tokenizer
from roformer_sim_ft import checkpoints
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective, SupervisedObjective
from roformer_sim_ft.errors import RoformerSimError
job = json.loads(sys.argv[1])
tok = make_tokenizer(checkpoints.builtin_vocab())
quiet = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
losses = {}
def record(name):
    losses[name] = []
    def on_step(step, values):
        losses[name].append(values)
        if job.get("die_at") == step and job["die"]:
            os._exit(7)
    return on_step
def stages():
    if "supervised" in job["stages"]:
        data = readers.load_supervised_data(readers.sample_data_dir())
        yield "supervised", "sup", SupervisedObjective(job["ckpt"], **quiet), B.SupervisedBatches.from_data(
            data, tok, batch_size=8, seed=3, pad_to=64)
    groups = readers.load_distill_pairs([readers.sample_data_dir() / "synonyms" / "sample.jsonl"]).groups
    if "distill" in job["stages"]:
        yield "distill", "dis", DistillObjective(job["teacher"], job["ckpt"], **quiet), B.DistillBatches(
            groups, tok, batch_size=8, seed=3, pad_to=128)
    if "pretrain" in job["stages"]:
        yield "pretrain", "pre", Stage1Objective(job["ckpt"], **quiet), B.Stage1Batches(
            groups, tok, batch_size=8, seed=3, pad_to=128)
try:
    for name, folder, objective, batches in stages():
        config = training.TrainConfig(out_dir=job["out"] + "/" + folder, steps=job["steps"], learning_rate=1e-3,
                                      log_every=1, save_every=2, show_progress=False, resume=job["resume"],
                                      collective_timeout=job.get("timeout", 60))
        training.train(objective, batches, config, on_step=record(name))
except RoformerSimError as e:
    print("ERROR", e, flush=True)
    sys.exit(2)
print("LOSSES", json.dumps(losses), flush=True)
"""


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    except OSError as e:
        pytest.skip(f"cannot bind a loopback TCP socket here ({e}): multi-worker tests need sockets")
    finally:
        for s in sockets:
            s.close()


def _start_job(job: dict, die: int | None = None, start: tuple[int, ...] = (0, 1)) -> list[subprocess.Popen]:
    """A cluster of two workers, one CPU device each, of which those in ``start`` are started;
    worker ``die`` (if any) exits at ``job['die_at']``."""
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in start:
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                      "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps({**job, "die": index == die})],
                                      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            out.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _losses(stdout: str) -> dict:
    line = [x for x in stdout.splitlines() if x.startswith("LOSSES ")]
    assert line, stdout[-2000:]
    return json.loads(line[-1][len("LOSSES "):])


def _single_process(objective, stream, out: Path, steps: int) -> list[dict]:
    losses = []
    config = training.TrainConfig(out_dir=str(out), steps=steps, learning_rate=1e-3, log_every=1, save_every=0,
                                  show_progress=False)
    training.train(objective, stream, config, on_step=lambda step, values: losses.append(values))
    return losses


@pytest.fixture(scope="module")
def two_worker_job(tiny_checkpoint, spread_checkpoint, tmp_path_factory):
    """A finished two-worker job (distillation, then stage 1; STEPS steps each): its outputs and losses."""
    out = tmp_path_factory.mktemp("multiworker") / "job"
    job = {"ckpt": str(tiny_checkpoint), "teacher": str(spread_checkpoint), "out": str(out), "steps": STEPS,
           "resume": False, "stages": ["distill", "pretrain"]}
    start = time.perf_counter()
    results = _finish(_start_job(job), timeout=240)
    for code, stdout, stderr in results:
        assert code == 0, (stdout + stderr)[-3000:]
    return job, [_losses(stdout) for _, stdout, _ in results], time.perf_counter() - start


def _supervised(tiny_checkpoint, tokenizer):
    data = readers.load_supervised_data(readers.sample_data_dir())
    return (SupervisedObjective(tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0),
            B.SupervisedBatches.from_data(data, tokenizer, batch_size=8, seed=3, pad_to=64))


def _assert_same_losses(two: list[dict], one: list[dict], stage: str, gaps: dict) -> None:
    assert len(two) == len(one)
    for a, b in zip(two, one):
        assert a.keys() == b.keys()
        for term in b:
            gaps[(stage, term)] = max(gaps.get((stage, term), 0.0), abs(a[term] - b[term]) / abs(b[term]))
            assert a[term] == pytest.approx(b[term], rel=TOLERANCE), (stage, term, a, b)


def _gap_text(gaps: dict) -> str:
    return ", ".join(f"{s}/{t} {g:.1e}" for (s, t), g in gaps.items())


def test_two_workers_give_the_losses_of_one_process(two_worker_job, tiny_checkpoint, spread_checkpoint, tokenizer,
                                                     tmp_path):
    """Two workers, global batch 8 (4 rows each): the losses of the first steps of distillation and
    stage 1, whose similarity terms compare rows across workers, equal one process's on the same 8
    rows within TOLERANCE; the chief alone writes the outputs (model, run.json, states, TensorBoard
    logs), which load. (The supervised stage: the restart test below.)"""
    job, (chief, worker), took = two_worker_job
    assert chief == worker  # every worker sees the global (all-reduced) losses
    groups = readers.load_distill_pairs([readers.sample_data_dir() / "synonyms" / "sample.jsonl"]).groups
    single = {
        "distill": _single_process(DistillObjective(spread_checkpoint, tiny_checkpoint, dropout_rate=0.0,
                                                    attention_dropout_rate=0.0),
                                   B.DistillBatches(groups, tokenizer, batch_size=8, seed=3, pad_to=128),
                                   tmp_path / "dis", STEPS),
        "pretrain": _single_process(Stage1Objective(tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0),
                                    B.Stage1Batches(groups, tokenizer, batch_size=8, seed=3, pad_to=128),
                                    tmp_path / "pre", STEPS),
    }
    gaps = {}
    assert sorted(chief) == sorted(single)
    for stage in single:
        assert len(chief[stage]) == STEPS
        _assert_same_losses(chief[stage], single[stage], stage, gaps)
    print(f"\ntwo workers vs one process, largest relative gap over {STEPS} steps:",
          _gap_text(gaps), f"(two-worker job {took:.1f}s)")
    print("two workers:", json.dumps(chief), "\none process:", json.dumps(single))

    out = Path(job["out"])
    for stage in ("dis", "pre"):
        folder = out / stage
        assert (folder / "run.json").exists() and (folder / "logs").is_dir()
        assert [states.step_of(p) for p in states.list_states(folder)] == [STEPS - 1, STEPS]
        checkpoints.load_checkpoint(folder)
    assert sorted(p.name for p in out.iterdir()) == ["dis", "pre"]  # the other worker wrote nothing beside


def test_a_dead_worker_stops_the_chief_and_the_restarted_job_resumes_from_its_state(tiny_checkpoint, tokenizer,
                                                                                     tmp_path):
    """Supervised stage, 4 steps, states every 2: worker 1 exits hard at step 3, and the chief stops
    with one line (exit 2) within seconds, not a hang. The same job restarted with --resume continues
    from the chief's state of step 2: its steps 3 and 4 equal an uninterrupted single process's."""
    job = {"ckpt": str(tiny_checkpoint), "out": str(tmp_path / "job"), "steps": 4, "resume": False,
           "stages": ["supervised"], "die_at": 3}
    start = time.perf_counter()
    (chief_code, chief_out, chief_err), (worker_code, _, _) = _finish(_start_job(job, die=1), timeout=120)
    took = time.perf_counter() - start
    assert worker_code == 7
    assert chief_code == 2, (chief_out + chief_err)[-3000:]
    assert "ERROR multi-worker training stopped on worker:0: another worker died" in chief_out, chief_out[-2000:]
    assert took < 120
    sup = Path(job["out"]) / "sup"
    assert [states.step_of(p) for p in states.list_states(sup)] == [2]

    results = _finish(_start_job({**job, "resume": True, "die_at": None}), timeout=240)
    for code, stdout, stderr in results:
        assert code == 0, (stdout + stderr)[-3000:]
    resumed = [_losses(stdout)["supervised"] for _, stdout, _ in results]
    assert len(resumed[0]) == 2 and resumed[0] == resumed[1]
    assert states.step_of(states.latest_state(sup)) == 4
    longer = _single_process(*_supervised(tiny_checkpoint, tokenizer), tmp_path / "long", 4)
    gaps = {}
    _assert_same_losses(resumed[0], longer[2:], "supervised", gaps)
    print("\nresumed two-worker steps 3-4 vs one process, largest relative gap:", _gap_text(gaps))


def test_a_worker_alone_stops_at_start_up_with_a_message(tiny_checkpoint, tmp_path):
    """A cluster of two of which one worker never starts: the chief (which leads TensorFlow's
    coordination) and, in another job, the other worker each stop with one line and exit 2
    once the timeout has passed, instead of waiting for ever."""
    job = {"ckpt": str(tiny_checkpoint), "out": "", "steps": 2, "resume": False, "stages": ["supervised"],
           "timeout": 5}
    start = time.perf_counter()
    alone = [_start_job({**job, "out": str(tmp_path / f"job{i}")}, start=(i,))[0] for i in (0, 1)]
    (chief_code, chief_out, chief_err), (worker_code, worker_out, worker_err) = _finish(alone, timeout=120)
    took = time.perf_counter() - start
    assert chief_code == 2, (chief_out + chief_err)[-3000:]
    assert ("ERROR multi-worker start-up stopped on worker:0: worker:1 did not join within 5 s; start every worker"
            in chief_out), chief_out[-2000:]
    assert worker_code == 2, (worker_out + worker_err)[-3000:]
    assert "ERROR multi-worker start-up stopped on worker:1: could not reach the chief (worker:0) within 5 s" in worker_out, \
        worker_out[-2000:]
    claimed = tmp_path / "job0" / "sup"  # the chief's folder: claimed (manifest) but no model and no state,
    assert states.latest_state(claimed) is None and not (claimed / "bert_model.ckpt.index").exists()
    assert not (tmp_path / "job1").exists()  # so the same command starts afresh; the other worker wrote nothing
    assert took < 120


def test_role_from_tf_config():
    assert role({}) == Role()
    spec = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert role({"TF_CONFIG": json.dumps(spec)}) == Role(workers=2, task="worker:1", chief_task="worker:0")
    assert not role({"TF_CONFIG": json.dumps(spec)}).chief and role({}).chief
    spec = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert role({"TF_CONFIG": json.dumps(spec)}) == Role(workers=2, task="worker:0", chief_task="chief:0")
    assert not role({"TF_CONFIG": json.dumps(spec)}).chief
    assert role({"TF_CONFIG": json.dumps({**spec, "task": {"type": "chief", "index": 0}})}).chief
    one = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert not role({"TF_CONFIG": json.dumps(one)}).multi_worker
    with pytest.raises(RoformerSimError, match="TF_CONFIG is not a cluster spec"):
        role({"TF_CONFIG": "{not json"})
    with pytest.raises(RoformerSimError, match="task types ps are not used here"):
        role({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": spec["task"]})})
    with pytest.raises(RoformerSimError, match="task worker:3 is not in the cluster"):
        role({"TF_CONFIG": json.dumps({**spec, "task": {"type": "worker", "index": 3}})})


@pytest.mark.parametrize("cluster, chief", [({"worker": ["a:1", "b:2"]}, "worker:0"),
                                            ({"chief": ["c:0"], "worker": ["a:1"]}, "chief:0")])
def test_a_worker_that_cannot_reach_the_chief_names_the_chief_task(monkeypatch, cluster, chief):
    last = {"type": "worker", "index": len(cluster["worker"]) - 1}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": last}))
    text = _not_joined(RuntimeError("DEADLINE_EXCEEDED: barrier"), 5)
    assert f"could not reach the chief ({chief}) within 5 s" in text
