"""The RoFormer-Sim-FT post's comparison (kexue.fm/archives/8541), rerun small and from scratch.

One random checkpoint (the real 12000-token char vocab, a small shape) is
fine-tuned by the supervised stage six times, identical except for the
objective / feature set, all at the same steps, batch size, seed and learning
rate:

    (a) concat   [u, v, |u-v|] + Dense(5), masked 5-way cross-entropy (the reference)
    (b) cos-mse        t(cos-1)^2 + (1-t)cos^2
    (c) cos-mse-pm1    t(cos-1)^2 + (1-t)(cos+1)^2
    (d) cos-hinge      t max(0.9-cos, 0) + (1-t) max(cos-0.1, 0)
    (e) concat on |u-v| only
    (f) concat on u, v only

then (g) the best of them by the valid average is distilled into a student
that starts from the same random init (the reference's student is the
un-fine-tuned RoFormer-Sim), with the positive pairs of the train splits.
Every model, the untrained init and (h) the two lexical baselines (char Jaccard,
char TF-IDF cosine) are scored on the VALID splits of ATEC, BQ, LCQMC, PAWSX and
STS-B (Spearman x 100 of the cosine, as ``roformer-sim-ft evaluate``).

Training data: the train splits of ``--data`` (BQ.train, ATEC.train.partial +
ATEC.train.from_afqmc, STS-B.train; LCQMC and PAWSX have none here) plus every
``cnsd/*/*.jsonl`` (the NLI dev files) as NLI training data.

Each run records steps, wall time and process CPU time (``time.process_time``,
all threads of this process), per step; so results can be read at equal steps
and at equal CPU time. When the runs' CPU cost per step differs by more than
``--cpu-tolerance``, each run is also evaluated at the training state nearest
below the common CPU budget (states are saved every ``--save-every`` steps).

Everything is written under ``--out`` (refused inside the repository; the data
must not be copied into it): the checkpoints, each run's ``run.json`` (loss
history), ``results.json`` (all numbers) and ``results.md`` (the tables).

    .venv/bin/python benchmarks/compare_objectives.py --out /tmp/compare

This is a benchmark of small from-scratch models, not of the released weights.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from roformer_sim_ft import compat  # noqa: E402,F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf  # noqa: E402

from roformer_sim_ft import checkpoints, evaluation, pipeline, training  # noqa: E402
from roformer_sim_ft.data import readers as data  # noqa: E402
from roformer_sim_ft.model import SimModel  # noqa: E402
from run_log import Clock, eval_model, log, shared_data_default  # noqa: E402

# name -> (objective, features); the order is the report's
SUPERVISED_RUNS = {
    "a-concat": ("concat", "u,v,|u-v|"),
    "b-cos-mse": ("cos-mse", "u,v,|u-v|"),
    "c-cos-mse-pm1": ("cos-mse-pm1", "u,v,|u-v|"),
    "d-cos-hinge": ("cos-hinge", "u,v,|u-v|"),
    "e-concat-absdiff": ("concat", "|u-v|"),
    "f-concat-uv": ("concat", "u,v"),
}
TASKS = evaluation.TASKS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared = shared_data_default()
    p.add_argument("--data", default=shared, required=shared is None,
                   help="data root (senteval_cn/, cnsd/); default: $ROFORMER_SIM_FT_SHARED, else required")
    p.add_argument("--vocab", default=None, help="the released 12000-token vocab (default: DATA/vocab/vocab.txt)")
    p.add_argument("--out", required=True, help="output folder, outside the repository")
    p.add_argument("--shape", default="L-2_H-128", help="checkpoints.preset_config name")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random init")
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, dropout, head init)")
    g = p.add_argument_group("supervised stage (same for every run)")
    g.add_argument("--steps", type=int, default=800)
    g.add_argument("--batch-size", type=int, default=64, help="rows per batch (2 rows per pair)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--dropout", type=float, default=0.2)
    g.add_argument("--maxlen", type=int, default=64)
    g.add_argument("--bucket", type=int, default=1,
                   help="length bucketing of the supervised batches (docs/RESULTS.md: 1, the reference's order; "
                   "the stage's default is 16)")
    g.add_argument("--save-every", type=int, default=100,
                   help="training state every N steps (for the equal-CPU-time evaluation)")
    g.add_argument("--cpu-tolerance", type=float, default=0.10,
                   help="evaluate at an equal CPU budget when CPU/step differs across runs by more than this")
    g.add_argument("--runs", default=",".join(SUPERVISED_RUNS), help="subset of the supervised runs")
    g.add_argument("--curve-steps", default="200,400,600",
                   help="also evaluate every run's saved state at these steps (how much the score moves "
                        "from one checkpoint to the next); empty: none")
    g = p.add_argument_group("distillation (g)")
    g.add_argument("--distill-steps", type=int, default=180)
    g.add_argument("--distill-batch-size", type=int, default=64, help="rows per batch (2 rows per pair)")
    g.add_argument("--distill-lr", type=float, default=1e-3)
    g.add_argument("--distill-warmup", type=int, default=20)
    g.add_argument("--no-distill", action="store_true")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--eval-limit", type=int, default=0,
                   help="SMOKE TESTS ONLY: first N rows per task (0: all rows)")
    g.add_argument("--force-cpu-eval", action="store_true",
                   help="run the equal-CPU-time evaluation even when CPU/step is equal (for testing)")
    p.add_argument("--reuse", action="store_true",
                   help="keep runs already recorded in OUT/results.json (restart after an interruption)")
    return p.parse_args(argv)


@contextlib.contextmanager
def step_marks():
    """Record (step, wall, cpu) after every training step of the stage functions.

    ``pipeline.supervised``/``distill`` call ``training.train`` without an
    ``on_step``; this wraps it for the duration to add one (the loop itself is
    unchanged), so the loop's own time can be told apart from data loading,
    model building and evaluation.
    """
    marks: list[tuple[int, float, float]] = []
    original = training.train

    def train(objective, batches, config, evaluator=None, on_step=None, **kwargs):
        def hook(step, losses):
            marks.append((step, time.perf_counter(), time.process_time()))
            if on_step is not None:
                on_step(step, losses)

        return original(objective, batches, config, evaluator=evaluator, on_step=hook, **kwargs)

    training.train = train
    try:
        yield marks
    finally:
        training.train = original


def loop_timing(marks, clock: Clock) -> dict:
    """Loop seconds (wall, CPU) from the first to the last step, and per step; step 1 (tracing) apart."""
    (s0, w0, c0), (s1, w1, c1) = marks[0], marks[-1]
    n = max(s1 - s0, 1)
    return {
        "first_step_at": {"wall_s": round(w0 - clock.wall0, 2), "cpu_s": round(c0 - clock.cpu0, 2)},
        "loop_steps": s1 - s0,
        "loop_wall_s": round(w1 - w0, 2),
        "loop_cpu_s": round(c1 - c0, 2),
        "wall_per_step_s": round((w1 - w0) / n, 4),
        "cpu_per_step_s": round((c1 - c0) / n, 4),
    }


def cpu_at_steps(marks) -> dict[int, float]:
    """CPU seconds of the loop from step ``marks[0]`` to each step."""
    c0 = marks[0][2]
    return {s: c - c0 for s, _, c in marks}


def eval_state(evaluator, init_dir: Path, state_dir: Path, name: str) -> dict:
    """Evaluate the encoder stored in a ``training_state/step-N`` (model variables only)."""
    clock = Clock()
    model = SimModel.load(init_dir)
    status = tf.train.Checkpoint(model=model.model).read(str(state_dir / "ckpt"))
    status.expect_partial().assert_existing_objects_matched()
    result = evaluator(model, name=name)
    log(f"eval {name} @ {state_dir.name}: avg {result.average:.2f}")
    return {"eval": result.as_dict(), "eval_time": clock.read()}


def data_inventory(data_dir: Path, maxlen: int) -> dict:
    """File names and rows kept, for the report (train splits + NLI, valid splits)."""
    train = data.load_supervised_data(data_dir, splits=("train",), maxlen=maxlen)
    valid = evaluation.load_eval_tasks(data_dir, "valid", TASKS)
    rel = lambda p: str(Path(p).relative_to(data_dir))  # noqa: E731
    return {
        "train_files": {rel(r.path): {"kept": r.kept, "bad": r.bad, "unlabeled": r.unlabeled} for r in train.reports},
        "train_missing": train.missing,
        "binary_pairs": len(train.binary),
        "nli_pairs": len(train.nli),
        "valid_files": {rel(r.path): r.kept for r in valid.reports},
        "valid_missing": valid.missing,
    }


def md_table(rows: list[tuple[str, dict]], extra_cols: tuple[str, ...] = (), extra: dict | None = None) -> str:
    """Markdown table: one row per (label, eval dict); Spearman x 100 per task and the average."""
    head = ["run", *TASKS, "avg", *extra_cols]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, ev in rows:
        cells = []
        for t in TASKS:
            v = ev["tasks"].get(t, {}).get("spearman_x100")
            cells.append("-" if v is None else f"{v:.2f}")
        avg = ev.get("average")
        more = [str(x) for x in (extra or {}).get(label, [])]
        out.append("| " + " | ".join([label, *cells, "-" if avg is None else f"{avg:.2f}", *more]) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data).resolve()
    out = Path(args.out).resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit(f"--out {out} is inside the repository {REPO}; use a folder outside it (e.g. /tmp/compare)")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    runs_wanted = [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs_wanted if r not in SUPERVISED_RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(SUPERVISED_RUNS)}")

    results: dict = {}
    if args.reuse and results_path.exists():
        results = json.loads(results_path.read_text(encoding="utf-8"))
        before = results.get("args", {})
        changed = [k for k in ("steps", "shape", "batch_size", "lr", "seed", "init_seed", "eval_limit", "data",
                               "bucket") if before.get(k, 1 if k == "bucket" else None) != getattr(args, k)]
        if changed:
            raise SystemExit(f"{results_path}: recorded with other {', '.join(changed)}; not reusing")
        if "invocations" not in results and "total_time_this_invocation" in results:
            results["invocations"] = [{"time": results["total_time_this_invocation"]}]
    results.setdefault("supervised", {})
    results.update(
        args=vars(args),
        environment={"python": platform.python_version(), "tensorflow": tf.__version__,
                     "cpus": os.cpu_count(), "platform": platform.platform()},
    )
    total = Clock()
    results.setdefault("load_average", {})["start"] = os.getloadavg()

    invocations = results.setdefault("invocations", [])
    invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]})

    def save() -> None:
        invocations[-1]["time"] = total.read()
        results["total_time_this_invocation"] = total.read()
        tmp = results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, results_path)

    log(f"config: {json.dumps(vars(args))}")
    log(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")

    # ---- data and the common evaluator
    if "data" not in results:
        log("reading data for the inventory ...")
        results["data"] = data_inventory(data_dir, args.maxlen)
        log(f"train: {results['data']['binary_pairs']} binary pairs, {results['data']['nli_pairs']} NLI pairs")
    loaded = evaluation.load_eval_tasks(data_dir, "valid", TASKS)
    rows = loaded.rows
    if args.eval_limit:
        log(f"SMOKE TEST: evaluating on the first {args.eval_limit} rows per task only")
        rows = {t: r[: args.eval_limit] for t, r in rows.items()}
    evaluator = evaluation.SimilarityEvaluator(rows, batch_size=args.eval_batch_size, missing=loaded.missing)

    # ---- (h) lexical baselines
    if "lexical" not in results:
        results["lexical"] = {}
        for name, fn in evaluation.LEXICAL_BASELINES.items():
            results["lexical"][name] = evaluation.evaluate_scores(rows, fn, name).as_dict()
        log("lexical baselines: " + ", ".join(f"{k} {v['average']:.2f}" for k, v in results["lexical"].items()))
        save()

    # ---- the random init
    config = checkpoints.preset_config(args.shape)
    vocab = checkpoints.read_vocab(args.vocab or data_dir / "vocab" / "vocab.txt", config["vocab_size"])
    init_dir = out / "init"
    if not init_dir.exists():
        checkpoints.write_checkpoint(init_dir, config, vocab, checkpoints.init_weights(config, seed=args.init_seed))
    results["model"] = {"shape": args.shape, "config": config,
                        "parameters": int(sum(w.size for w in checkpoints.init_weights(config, 0).values()))}
    if "init" not in results:
        results["init"] = eval_model(evaluator, init_dir, "random-init")
        save()

    # ---- (a)-(f) the supervised runs
    for name in runs_wanted:
        if name in results["supervised"]:
            log(f"{name}: reusing the recorded result")
            continue
        objective, features = SUPERVISED_RUNS[name]
        run_dir = out / "runs" / name
        settings = pipeline.SupervisedSettings(
            objective=objective, features=tuple(features.split(",")), batch_size=args.batch_size,
            maxlen=args.maxlen, dropout_rate=args.dropout, splits=("train",), bucket=args.bucket)
        config_ = training.TrainConfig(
            out_dir=str(run_dir), steps=args.steps, learning_rate=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup, seed=args.seed, save_every=args.save_every, keep_states=10_000,
            eval_every=0, log_every=10, show_progress=False)
        log(f"== {name}: objective {objective}, features {features}, {args.steps} steps")
        load0 = os.getloadavg()
        clock = Clock()
        with step_marks() as marks:
            result = pipeline.supervised(init_dir, config_, data_dir=data_dir, settings=settings)
        stage = clock.read()
        timing = loop_timing(marks, clock)
        log(f"{name}: {result.step} steps, stage {stage['wall_s']} s wall / {stage['cpu_s']} s CPU, "
            f"loop {timing['wall_per_step_s']} s wall / {timing['cpu_per_step_s']} s CPU per step, "
            f"last loss {result.losses.get('loss', float('nan')):.4f}")
        entry = {"objective": objective, "features": features, "steps": result.step,
                 "interrupted": result.interrupted, "final_losses": result.losses,
                 "steps_per_second": round(result.steps_per_second, 4),
                 "stage_time": stage, **timing, "cpu_at_step": {str(s): round(c, 2) for s, c in
                                                                 cpu_at_steps(marks).items() if s % args.save_every == 0 or s == result.step},
                 "load_average_before": load0, "load_average_after": os.getloadavg(),
                 "run_json": str(run_dir / "run.json")}
        entry.update(eval_model(evaluator, run_dir, name))
        results["supervised"][name] = entry
        save()

    done = {k: v for k, v in results["supervised"].items() if k in runs_wanted}

    # ---- learning curves: the saved states at --curve-steps
    curve_steps = [int(x) for x in args.curve_steps.split(",") if x.strip()]
    curve = results.setdefault("curve", {})
    for name, entry in done.items():
        points = curve.setdefault(name, {})
        for step in curve_steps:
            state = Path(entry["run_json"]).parent / training.STATE_DIR / f"step-{step}"
            if str(step) in points or step >= entry["steps"] or not state.exists():
                continue
            points[str(step)] = eval_state(evaluator, init_dir, state, f"{name}@{step}")["eval"]
            save()
        points[str(entry["steps"])] = entry["eval"]

    # ---- equal CPU time
    if done:
        per_step = {k: v["cpu_per_step_s"] for k, v in done.items()}
        spread = max(per_step.values()) / min(per_step.values()) - 1
        budget = min(v["loop_cpu_s"] for v in done.values())
        equal = {"cpu_per_step_s": per_step, "relative_spread": round(spread, 4), "tolerance": args.cpu_tolerance,
                 "budget_loop_cpu_s": budget}
        log(f"CPU per step: {per_step}; spread {spread:.1%}")
        if spread > args.cpu_tolerance or args.force_cpu_eval:
            equal["evaluated"] = True
            previous = results.get("equal_cpu", {}).get("runs", {})
            equal["runs"] = {}
            for name, entry in done.items():
                cpu = {int(s): c for s, c in entry["cpu_at_step"].items()}
                reachable = [s for s, c in cpu.items() if c <= budget + 1e-6]
                step = max(reachable) if reachable else None
                rec = {"step_at_budget": step, "cpu_at_step": cpu.get(step)}
                if step is None:
                    rec["note"] = "no saved state within the budget"
                elif step == entry["steps"]:
                    rec.update(eval=entry["eval"], note="final model (its whole run fits the budget)")
                elif name in previous and previous[name].get("step_at_budget") == step and "eval" in previous[name]:
                    rec = previous[name]
                else:
                    state = Path(entry["run_json"]).parent / training.STATE_DIR / f"step-{step}"
                    rec.update(eval_state(evaluator, init_dir, state, f"{name}@{step}"))
                equal["runs"][name] = rec
        else:
            equal["evaluated"] = False
            equal["note"] = (f"CPU per step within {args.cpu_tolerance:.0%} across runs: "
                             "the equal-steps results are also the equal-CPU-time results")
        results["equal_cpu"] = equal
        save()

    # ---- (g) distillation of the best supervised run
    if not args.no_distill and done and "distill" not in results:
        teacher = max(done, key=lambda k: done[k]["eval"]["average"] or -math.inf)
        teacher_dir = Path(done[teacher]["run_json"]).parent
        student_dir = out / "distilled"
        log(f"== distillation: teacher {teacher}, student = the random init, {args.distill_steps} steps")
        config_ = training.TrainConfig(
            out_dir=str(student_dir), steps=args.distill_steps, learning_rate=args.distill_lr,
            weight_decay=args.weight_decay, warmup_steps=args.distill_warmup, seed=args.seed,
            save_every=0, eval_every=0, log_every=10, show_progress=False)
        settings = pipeline.DistillSettings(batch_size=args.distill_batch_size, maxlen=args.maxlen,
                                            dropout_rate=args.dropout, labeled_splits=("train",))
        load0 = os.getloadavg()
        clock = Clock()
        with step_marks() as marks:
            result = pipeline.distill(teacher_dir, init_dir, config_, labeled_dir=data_dir, settings=settings)
        stage = clock.read()
        timing = loop_timing(marks, clock)
        log(f"distillation: {result.step} steps, stage {stage['wall_s']} s wall / {stage['cpu_s']} s CPU, "
            f"last losses {result.losses}")
        entry = {"teacher": teacher, "teacher_eval": done[teacher]["eval"], "steps": result.step,
                 "interrupted": result.interrupted, "final_losses": result.losses,
                 "steps_per_second": round(result.steps_per_second, 4), "stage_time": stage, **timing,
                 "settings": asdict(settings), "load_average_before": load0, "load_average_after": os.getloadavg(),
                 "run_json": str(student_dir / "run.json")}
        entry.update(eval_model(evaluator, student_dir, "distilled-student"))
        results["distill"] = entry
        save()

    results["load_average"]["end"] = os.getloadavg()
    save()

    # ---- report
    table_rows = list(results["lexical"].items()) + [("random-init", results["init"]["eval"])]
    timing_cols = {}
    for k, v in done.items():
        table_rows.append((k, v["eval"]))
        timing_cols[k] = [v["steps"], v["stage_time"]["wall_s"], v["stage_time"]["cpu_s"], v["loop_cpu_s"],
                          v["cpu_per_step_s"]]
    if "distill" in results:
        d = results["distill"]
        table_rows.append(("g-distilled-student", d["eval"]))
        timing_cols["g-distilled-student"] = [d["steps"], d["stage_time"]["wall_s"], d["stage_time"]["cpu_s"],
                                              d["loop_cpu_s"], d["cpu_per_step_s"]]
    md = ["## Equal steps", "", md_table(table_rows, ("steps", "stage wall s", "stage CPU s", "loop CPU s",
                                                       "CPU s/step"), timing_cols)]
    eq = results.get("equal_cpu", {})
    if eq.get("evaluated"):
        rows_eq = [(f"{k} @ step {r.get('step_at_budget')}", r["eval"]) for k, r in eq["runs"].items() if "eval" in r]
        md += ["", f"## Equal loop CPU budget ({eq['budget_loop_cpu_s']} s)", "", md_table(rows_eq)]
    elif eq:
        md += ["", f"Equal CPU time: {eq['note']} (spread {eq['relative_spread']:.1%})."]
    if any(len(v) > 1 for v in results.get("curve", {}).values()):
        steps_seen = sorted({int(s) for v in results["curve"].values() for s in v})
        md += ["", "## Average at each evaluated step (same runs, saved states)", "",
               "| run | " + " | ".join(f"avg @ {s}" for s in steps_seen) + " |",
               "|" + "---|" * (len(steps_seen) + 1)]
        for name, points in results["curve"].items():
            cells = [f"{points[str(s)]['average']:.2f}" if str(s) in points else "-" for s in steps_seen]
            md.append(f"| {name} | " + " | ".join(cells) + " |")
    md += ["", "Invocations: " + json.dumps([i.get("time") for i in results["invocations"]])]
    (out / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    log("\n" + "\n".join(md))
    log(f"all numbers: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
