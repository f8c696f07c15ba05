"""The post's table at small scale: a RoFormer-Sim-mini made here, fine-tuned and distilled.

From one random init of a small shape (the released 12000-char vocab), in order:

    pretrained      stage 1 (RoFormer-Sim-mini): seq2seq + in-batch similarity on the
                    positive pairs of the train splits (binary label 1, STS-B > 2.5)
                    and the NLI entailment pairs; no negatives, no other labels
    supervised      the supervised stage from ``pretrained`` on the train splits with all
                    labels (binary pairs + NLI, the masked 5-way head): the teacher
    distilled       distillation: teacher ``supervised``, student initialised from
                    ``pretrained`` (as the post does), on the same positive pairs
    supervised_from_init
                    the supervised stage from the random init, same steps as ``supervised``

Every model, the random init and the lexical baselines (char Jaccard, char
TF-IDF) are scored on the VALID splits of ATEC, BQ, LCQMC, PAWSX and STS-B
(Spearman x 100 of the cosine, as ``roformer-sim-ft evaluate``). The test
splits are not read. During each stage a fixed random subsample of the valid
splits (``--curve-rows`` per task) is scored every ``--eval-every`` steps for
the learning curves; it selects nothing: each stage's model is its last step.

Resumable: each stage writes ``OUT/<stage>/`` in the released layout with its
``run.json`` and ``training_state/``; a killed run continues from the last
saved state (``--save-every``) with the package's resume, and a finished stage
is skipped. ``OUT/results.json`` holds every number and timing,
``OUT/results.md`` the table (stages not yet finished are marked), and
``--png`` the learning curves. Same command to start and to continue:

    .venv/bin/python benchmarks/reproduce_small.py --data DATA

(or set ROFORMER_SIM_FT_SHARED instead of ``--data``).

These are small models trained here from random weights, not the released ones.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from roformer_sim_ft import compat  # noqa: E402,F401  (selects tf_keras before TensorFlow loads)

from roformer_sim_ft import checkpoints, evaluation, pipeline, training  # noqa: E402
from roformer_sim_ft.training import states  # noqa: E402
from roformer_sim_ft.model import SimModel  # noqa: E402
from run_log import Clock, eval_model, log, shared_data_default  # noqa: E402

TASKS = evaluation.TASKS
TRAIN_SPLITS = ("train",)
# (stage, starts from, label in the table); the order is the run's
STAGES = (
    ("pretrained", "init", "RoFormer-Sim-mini (stage 1)"),
    ("supervised", "pretrained", "RoFormer-Sim-FT-mini teacher (stage 1 + supervised)"),
    ("distilled", "pretrained", "RoFormer-Sim-FT-mini distilled (student of the teacher)"),
    ("supervised_from_init", "init", "supervised without stage 1 (random init + supervised)"),
)
# Arguments a continued run must share with the run it continues (else it is another experiment).
FIXED_ARGS = ("shape", "vocab", "init_seed", "seed", "maxlen", "dropout", "attention_dropout", "adam_epsilon",
              "curve_rows", "s1_batch", "s1_lr", "sup_batch", "sup_lr", "dist_batch", "dist_lr")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared = shared_data_default()
    p.add_argument("--data", default=shared, required=shared is None,
                   help="data root (senteval_cn/, cnsd/); default: $ROFORMER_SIM_FT_SHARED, else required")
    p.add_argument("--vocab", default=None,
                   help="vocab.txt (default: DATA/vocab/vocab.txt); 'builtin': checkpoints.builtin_vocab()")
    p.add_argument("--out", default=str(REPO / "runs" / "reproduce_small"), help="output folder (not committed)")
    p.add_argument("--png", default=str(REPO / "docs" / "reproduce_small_curves.png"), help="learning curves")
    p.add_argument("--shape", default="L-2_H-128", help="checkpoints.preset_config name")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random init")
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, dropout, head init)")
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1, help="hidden dropout of every stage")
    p.add_argument("--attention-dropout", type=float, default=pipeline.StageSettings.attention_dropout_rate,
                   help="attention-probability dropout of every stage (the package's default: none, as the "
                   "published models' bert4keras 0.10.6)")
    p.add_argument("--adam-epsilon", type=float, default=training.TrainConfig.adam_epsilon,
                   help="Adam's epsilon (the package's default: keras 2.3.1's)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--save-every", type=int, default=250, help="training state every N steps (resume point)")
    g = p.add_argument_group("stage 1")
    g.add_argument("--s1-steps", type=int, default=8000, help="stage-1 steps")
    g.add_argument("--s1-batch", type=int, default=64, help="rows (2 per pair)")
    g.add_argument("--s1-lr", type=float, default=1e-3, help="AdamW learning rate")
    g.add_argument("--s1-warmup", type=int, default=200, help="linear warmup steps")
    g = p.add_argument_group("supervised stage (teacher and the run without stage 1)")
    g.add_argument("--sup-steps", type=int, default=4000, help="steps of each supervised run")
    g.add_argument("--sup-batch", type=int, default=64, help="rows (2 per pair, binary and NLI 1:1)")
    g.add_argument("--sup-lr", type=float, default=3e-4, help="AdamW learning rate")
    g.add_argument("--sup-warmup", type=int, default=100, help="linear warmup steps")
    g = p.add_argument_group("distillation")
    g.add_argument("--dist-steps", type=int, default=2500, help="distillation steps")
    g.add_argument("--dist-batch", type=int, default=64, help="rows (2 per pair)")
    g.add_argument("--dist-lr", type=float, default=3e-4, help="AdamW learning rate")
    g.add_argument("--dist-warmup", type=int, default=100, help="linear warmup steps")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-every", type=int, default=250, help="learning-curve point every N steps")
    g.add_argument("--curve-rows", type=int, default=1000, help="valid rows per task for the curves (fixed sample)")
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--eval-limit", type=int, default=0, help="SMOKE TESTS ONLY: first N valid rows per task")
    return p.parse_args(argv)


class CurveEvaluator:
    """The learning-curve evaluator handed to the training loop: scores the subsample, selects nothing.

    Its results' ``primary_metric`` is NaN, so the loop keeps no "best" model
    and each stage's output is its last step (choosing a step by these scores
    would be selection on the split the table reports). Time spent here is
    summed so the loop's own CPU per step can be told apart.
    """

    class Result:
        def __init__(self, result: evaluation.EvalResult) -> None:
            self.result, self.primary_metric = result, float("nan")

        def as_dict(self) -> dict:
            return self.result.as_dict()

    def __init__(self, evaluator: evaluation.SimilarityEvaluator) -> None:
        self.evaluator, self.wall_s, self.cpu_s = evaluator, 0.0, 0.0

    def __call__(self, model):
        clock = Clock()
        result = self.evaluator(model)
        spent = clock.read()
        self.wall_s += spent["wall_s"]
        self.cpu_s += spent["cpu_s"]
        log("valid subsample: avg {:.2f} ({})".format(
            result.average, ", ".join(f"{t} {s.spearman:.1f}" for t, s in result.scores.items())))
        return self.Result(result)


@contextlib.contextmanager
def instrumented(curve: CurveEvaluator):
    """Run the stage functions with ``curve`` as their evaluator and (step, wall, cpu) marks after each step.

    ``pipeline.pretrain``/``supervised``/``distill`` build their own evaluator
    from a data folder; this swaps in ``curve`` for the duration (the loop
    itself is unchanged).
    """
    marks: list[tuple[int, float, float]] = []
    original = training.train

    def train(objective, batches, config, evaluator=None, on_step=None, **kwargs):
        def hook(step, losses):
            marks.append((step, time.perf_counter(), time.process_time()))

        return original(objective, batches, config, evaluator=curve, on_step=hook, **kwargs)

    training.train = train
    try:
        yield marks
    finally:
        training.train = original


def stage_done(folder: Path, steps: int) -> bool:
    """A finished stage: its run.json says it reached ``steps`` without interruption (the model is written).

    A kill between the last training state and run.json leaves the model and
    a state at ``steps`` without run.json: finished too (resuming it would
    have nothing to do).
    """
    path = folder / "run.json"
    if path.exists():
        result = json.loads(path.read_text(encoding="utf-8"))["result"]
        return result["step"] >= steps and not result["interrupted"]
    latest = states.latest_state(folder) if folder.is_dir() else None
    return (latest is not None and states.step_of(latest) >= steps
            and (folder / (checkpoints.CKPT_NAME + ".index")).exists())


def run_stage(name: str, start: Path, out: Path, args, data_dir: Path, curve: CurveEvaluator) -> dict:
    """Train (or continue) one stage into ``out/name``; its timing of this invocation."""
    folder = out / name
    kind = name.split("_")[0] if name != "supervised_from_init" else "supervised"
    steps, batch, lr, warmup = {
        "pretrained": (args.s1_steps, args.s1_batch, args.s1_lr, args.s1_warmup),
        "supervised": (args.sup_steps, args.sup_batch, args.sup_lr, args.sup_warmup),
        "distilled": (args.dist_steps, args.dist_batch, args.dist_lr, args.dist_warmup),
    }[kind]
    resume = folder.is_dir() and states.latest_state(folder) is not None
    config = training.TrainConfig(
        out_dir=str(folder), steps=steps, learning_rate=lr, weight_decay=args.weight_decay, warmup_steps=warmup,
        seed=args.seed, save_every=args.save_every, keep_states=2, eval_every=args.eval_every, log_every=10,
        resume=resume, show_progress=False, adam_epsilon=args.adam_epsilon)
    common = dict(batch_size=batch, maxlen=args.maxlen, dropout_rate=args.dropout,
                  attention_dropout_rate=args.attention_dropout)
    log(f"== {name}: from {start.name}, {steps} steps, batch {batch}, lr {lr}, warmup {warmup}"
        + (f" (resuming from {states.latest_state(folder).name})" if resume else ""))
    clock = Clock()
    with instrumented(curve) as marks:
        if kind == "pretrained":
            result = pipeline.pretrain(start, config, labeled_dir=data_dir,
                                       settings=pipeline.Stage1Settings(labeled_splits=TRAIN_SPLITS, **common))
        elif kind == "supervised":
            result = pipeline.supervised(start, config, data_dir=data_dir,
                                         settings=pipeline.SupervisedSettings(splits=TRAIN_SPLITS, **common))
        else:
            result = pipeline.distill(out / "supervised", start, config, labeled_dir=data_dir,
                                      settings=pipeline.DistillSettings(labeled_splits=TRAIN_SPLITS, **common))
    spent = clock.read()
    timing = {"stage": spent, "curve_eval": {"wall_s": round(curve.wall_s, 2), "cpu_s": round(curve.cpu_s, 2)},
              "load_average_end": os.getloadavg(), "resumed": resume}
    if len(marks) > 1:
        (s0, w0, c0), (s1, w1, c1) = marks[0], marks[-1]
        n = s1 - s0
        timing.update(steps_from=s0 - 1, steps_to=s1,
                      loop_cpu_per_step_s=round((c1 - c0 - curve.cpu_s) / n, 4) if n else None,
                      loop_wall_per_step_s=round((w1 - w0 - curve.wall_s) / n, 4) if n else None)
    log(f"{name}: step {result.step}{' (interrupted)' if result.interrupted else ''}, "
        f"{spent['wall_s']} s wall / {spent['cpu_s']} s CPU this invocation, last losses {result.losses}")
    return timing


def subsample(rows: dict, n: int, seed: int = 0) -> dict:
    """A fixed random sample of ``n`` rows per task (all rows of a smaller task), in file order."""
    out = {}
    for task, task_rows in rows.items():
        keep = sorted(random.Random(f"{seed}-{task}").sample(range(len(task_rows)), min(n, len(task_rows))))
        out[task] = [task_rows[i] for i in keep]
    return out


def curve_points(folder: Path) -> list[dict]:
    """The stage's learning-curve evaluations (run.json when finished, else the newest training state)."""
    if (folder / "run.json").exists():
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))["result"]["evaluations"]
    latest = states.latest_state(folder) if folder.is_dir() else None
    if latest is None:
        return []
    return states.read_record(latest)["history"]["evaluations"]


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(results: dict) -> str:
    """Markdown table of the full-valid scores; stages without a final score say how far they are."""
    head = ["model", *TASKS, "avg", "steps", "stage wall s", "stage CPU s", "loop CPU s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, ev, extra=("", "", "", "")):
        cells = [fmt(ev["tasks"].get(t, {}).get("spearman_x100")) for t in TASKS]
        lines.append("| " + " | ".join([label, *cells, fmt(ev.get("average")), *map(str, extra)]) + " |")

    for name, ev in results.get("lexical", {}).items():
        row(name, ev)
    if "init" in results:
        row("random init (untrained)", results["init"]["eval"], (0, "", "", ""))
    order = ["supervised_from_init", "pretrained", "supervised", "distilled"]
    labels = {n: label for n, _, label in STAGES}
    for name in order:
        entry = results.get("stages", {}).get(name)
        if entry and "eval" in entry:
            t = entry["time_total"]
            per_step = [i.get("loop_cpu_per_step_s") for i in entry["invocations"] if i.get("loop_cpu_per_step_s")]
            row(labels[name], entry["eval"],
                (entry["steps"], t["wall_s"], t["cpu_s"], per_step[-1] if per_step else ""))
        else:
            state = entry.get("progress", "not started") if entry else "not started"
            mark = "not started" if state == "not started" else "running"
            folder = Path(results["args"]["out"]) / name
            latest = states.latest_state(folder) if folder.is_dir() else None
            if latest is not None:
                state += f", saved step {states.step_of(latest)}"
            lines.append(f"| {labels[name]} | " + " | ".join([mark] * (len(TASKS) + 1)) + f" | {state} | | | |")
    return "\n".join(lines)


def plot(results: dict, out: Path, png: Path) -> None:
    """Valid-subsample average and per-task Spearman vs step, one panel per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharey=True)
    base = results.get("curve_baselines", {})
    for ax, (name, start, label) in zip(axes.flat, STAGES):
        points = curve_points(out / name)
        if points and base.get(start) is not None:
            points = [{"step": 0, **base[start]}] + points
        steps = [p["step"] for p in points]
        for task in TASKS:
            ys = [p["tasks"].get(task, {}).get("spearman_x100") for p in points]
            ax.plot(steps, [float("nan") if y is None else y for y in ys], lw=1, alpha=0.7, label=task)
        ax.plot(steps, [p["average"] if p["average"] is not None else float("nan") for p in points],
                color="black", lw=2.2, label="average")
        for key, style, text in (("init", ":", "random init avg"), ("char-tfidf", "--", "char TF-IDF avg")):
            if base.get(key, {}).get("average") is not None:
                ax.axhline(base[key]["average"], color="grey", ls=style, lw=1, label=text)
        ax.set_title(f"{name}: {label}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if not points:
            ax.text(0.5, 0.5, "not started", transform=ax.transAxes, ha="center")
            ax.set_xticks([])
    axes[0][0].set_ylabel("Spearman x 100 (valid subsample)")
    axes[1][0].set_ylabel("Spearman x 100 (valid subsample)")
    axes[0][1].legend(fontsize=7, loc="lower right")
    rows = results.get("curve_rows_per_task", {})
    fig.suptitle(f"RoFormer-Sim-mini family ({results['args']['shape']}): learning curves on a fixed valid "
                 f"subsample ({', '.join(f'{t} {n}' for t, n in rows.items())} rows)", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png)


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    before = results.get("args", {})
    changed = [k for k in FIXED_ARGS if k in before and before[k] != getattr(args, k)]
    if changed:
        raise SystemExit(f"{results_path}: recorded with other {', '.join(changed)} "
                         f"({', '.join(f'{k}={before[k]}' for k in changed)}); use another --out")
    results.update(args=vars(args), environment={"python": platform.python_version(), "cpus": os.cpu_count(),
                                                 "platform": platform.platform()})
    invocations = results.setdefault("invocations", [])
    invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:],
                        "load_average": os.getloadavg()})
    total = Clock()

    def save() -> None:
        invocations[-1]["time"] = total.read()
        tmp = results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, results_path)
        (out / "results.md").write_text(table(results) + "\n", encoding="utf-8")

    log(f"config: {json.dumps(vars(args))}")
    loaded = evaluation.load_eval_tasks(data_dir, "valid", TASKS)
    rows = loaded.rows
    if args.eval_limit:
        log(f"SMOKE TEST: the first {args.eval_limit} valid rows per task only")
        rows = {t: r[: args.eval_limit] for t, r in rows.items()}
    full = evaluation.SimilarityEvaluator(rows, batch_size=args.eval_batch_size, missing=loaded.missing)
    curve_rows = subsample(rows, args.curve_rows)
    results["curve_rows_per_task"] = {t: len(r) for t, r in curve_rows.items()}
    results["valid_rows_per_task"] = {t: len(r) for t, r in rows.items()}
    curve = CurveEvaluator(evaluation.SimilarityEvaluator(curve_rows, batch_size=args.eval_batch_size))

    if "lexical" not in results:
        results["lexical"] = {n: evaluation.evaluate_scores(rows, fn, n).as_dict()
                              for n, fn in evaluation.LEXICAL_BASELINES.items()}
        log("lexical baselines: " + ", ".join(f"{k} {v['average']:.2f}" for k, v in results["lexical"].items()))
    base = results.setdefault("curve_baselines", {})
    if "char-tfidf" not in base:
        base["char-tfidf"] = evaluation.evaluate_scores(curve_rows, evaluation.char_tfidf_scores, "char-tfidf").as_dict()

    config = checkpoints.preset_config(args.shape)
    if args.vocab == "builtin":
        vocab = checkpoints.builtin_vocab(config["vocab_size"])
    else:
        vocab = checkpoints.read_vocab(args.vocab or data_dir / "vocab" / "vocab.txt", config["vocab_size"])
    init_dir = out / "init"
    if not init_dir.exists():
        checkpoints.write_checkpoint(init_dir, config, vocab, checkpoints.init_weights(config, seed=args.init_seed))
    results["model"] = {"shape": args.shape, "config": config,
                        "parameters": int(sum(w.size for w in checkpoints.init_weights(config, 0).values()))}
    if "init" not in results:
        results["init"] = eval_model(full, init_dir, "random-init")
        base["init"] = curve.evaluator(SimModel.load(init_dir)).as_dict()
    save()

    steps_of = {"pretrained": args.s1_steps, "supervised": args.sup_steps, "distilled": args.dist_steps,
                "supervised_from_init": args.sup_steps}
    stage_results = results.setdefault("stages", {})
    for name, start, _ in STAGES:
        folder = out / name
        entry = stage_results.setdefault(name, {"invocations": []})
        ran = not stage_done(folder, steps_of[name])
        if not ran:
            log(f"{name}: finished earlier ({steps_of[name]} steps), skipped")
        else:
            entry.pop("eval", None)
            entry["progress"] = "running"
            save()
            curve.wall_s = curve.cpu_s = 0.0
            start_dir = init_dir if start == "init" else out / start
            entry["invocations"].append(run_stage(name, start_dir, out, args, data_dir, curve))
            entry["time_total"] = {k: round(sum(i["stage"][k] for i in entry["invocations"]), 2)
                                   for k in ("wall_s", "cpu_s")}
            if not stage_done(folder, steps_of[name]):
                entry["progress"] = f"stopped at step {entry['invocations'][-1].get('steps_to', '?')}"
                save()
                plot(results, out, Path(args.png))
                log(f"{name} did not finish; rerun the same command to continue it")
                return 1
        entry["steps"] = steps_of[name]
        entry.pop("progress", None)
        if "eval" not in entry:
            entry.update(eval_model(full, folder, name))
        if name == "pretrained" and "pretrained" not in base:
            base["pretrained"] = curve.evaluator(SimModel.load(folder)).as_dict()
        save()
        if ran:  # the curves gained a stage
            plot(results, out, Path(args.png))

    results["load_average_end"] = os.getloadavg()
    save()
    plot(results, out, Path(args.png))
    log("\n" + table(results))
    log(f"all numbers: {results_path}; curves: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
