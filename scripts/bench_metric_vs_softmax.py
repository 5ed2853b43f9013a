"""Metric learning against softmax on one data set, same backbone, same budget: one table.

Rows: the softmax classifier; kNN on that classifier's pre-logit features (no metric training);
`train-triplet` with its defaults, which are the best metric recipe (configs/metric/best.yaml
spells them out; tests/test_bench_metric.py keeps the two equal, so one run stands for both);
`train-siamese` with its defaults; the best recipe warm-started from the softmax run's backbone
(`--init-from`, its own --minutes on top of the classifier's: its minutes column counts both);
the ensembles of the classifier with the triplet model and with the warm-started one, each by
`fermetric ensemble`'s three votes: soft vote, val-accuracy-weighted and searched weights (the
weights cross-fitted on val, so that no image is scored with weights its own label fitted).
Columns: accuracy, macro-F1, MAP@R (kNN rows), training minutes, the collapse flag, and each row's
paired comparison with the softmax classifier on the same images (the accuracy difference with a
95 % paired-bootstrap interval and McNemar's exact p; fermetric.evaluation.significance).

Every model trains for --epochs epochs with the same optimiser settings (AdamW, lr 0.003, weight
decay 5e-4, the settings of scripts/reproduce_fer2013_cpu.sh), the same backbone and width and the
same cap of --minutes per model (train.time_budget_minutes, checked after each epoch: a model stops
after the epoch that crosses it, so a row can take up to one epoch more; --max-steps caps the steps
per epoch). Models are trained one after another with the commands users run (printed, so every row
can be rebuilt by hand; each training's log is OUT/logs/<model>.log). Val is the split reported
(FER2013: PublicTest).

    python scripts/bench_metric_vs_softmax.py fer2013.csv.gz --minutes 15 --threads 2 --out runs/bench-metric
    python scripts/bench_metric_vs_softmax.py synth --minutes 1 --epochs 1 --width 8 --max-steps 5   # smoke test

Writes OUT/bench.md (the table), OUT/bench.json and the run directories. The table is rewritten
after every row, marked partial until the last, so a crash or a kill keeps what was measured. A
training that fails is a "failed" row (its log's tail in bench.json) and the others still run; the
script then exits 1. Run the same command again into the same OUT to finish: finished runs are
reused, an interrupted one is resumed (--resume), failed ones are trained again.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fermetric.evaluation.significance import comparison_text, paired_comparison
from fermetric.retrieval.index import run_knn
from fermetric.retrieval.embeddings import embed_split
from fermetric.evaluation.knn_report import run_knn_report

REPO = Path(__file__).resolve().parents[1]
COMMON_SETTINGS = ["optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.0005"]
BEST = str(REPO / "configs" / "metric" / "best.yaml")
# run name -> the train-* command and options (before the common ones) and after them
TRAININGS: dict[str, list[str]] = {
    "classifier": ["train-classifier", "--set", "train.label_smoothing=0.1"],
    "triplet": ["train-triplet"],
    "siamese": ["train-siamese"],
    "warm": ["train-triplet", "--config", BEST, "--init-from", "{out}/classifier"],
}
DEPENDS = {"warm": ["classifier"]}  # runs that start from another run of the bench
ARGS_FILE = "bench-args.json"


class TrainingFailed(RuntimeError):
    """A train-* command exited non-zero; the message ends with its log's tail."""


def fermetric(args: list[str], threads: int, log: Path) -> None:
    """Run `fermetric --threads T -q ARGS`, its output appended to `log`."""
    cmd = [sys.executable, "-m", "fermetric", "--threads", str(threads), "-q", *args]
    print("$ fermetric " + " ".join(shlex.quote(a) for a in cmd[3:]), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write("$ fermetric " + " ".join(shlex.quote(a) for a in cmd[3:]) + "\n")
        fh.flush()
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise TrainingFailed(f"exit code {res.returncode}; log {log}:\n{tail}")


def run_state(run: Path) -> str:
    """"new", "finished" (metrics.json written after the last epoch of history.csv) or "interrupted"."""
    from fermetric.runs.history import read_history

    if not (run / "checkpoints" / "last.pt").is_file():
        return "new"
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        if metrics.get("epochs_run") == len(read_history(run / "history.csv")) and "val" in metrics:
            return "finished"
    except (OSError, ValueError):
        pass
    return "interrupted"


def row(name: str, metrics: dict[str, Any], minutes: Optional[float], map_r: Optional[float] = None,
        collapsed: Optional[bool] = None, vs_softmax: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    return {"model": name, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "map_at_r": map_r,
            "minutes": minutes, "collapsed": collapsed, "vs_softmax": vs_softmax}


def failed_row(name: str, error: str) -> dict[str, Any]:
    return {"model": name, "accuracy": None, "macro_f1": None, "map_at_r": None, "minutes": None, "collapsed": None,
            "vs_softmax": None, "error": error}


def markdown(rows: list[dict[str, Any]], title: str, missing: int = 0) -> str:
    def pct(x):
        return "–" if x is None else f"{x * 100:.2f} %"

    lines = [f"### {title}", "",
             "| model | accuracy | macro-F1 | MAP@R | minutes | collapse | vs softmax [95 % CI], McNemar p |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("error") is not None:
            lines.append(f"| {r['model']} | failed: {r['error'].splitlines()[0]} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {pct(r['accuracy'])} | {pct(r['macro_f1'])} | "
                     f"{'–' if r['map_at_r'] is None else format(r['map_at_r'], '.4f')} | "
                     f"{'–' if r['minutes'] is None else format(r['minutes'], '.1f')} | "
                     f"{'–' if r['collapsed'] is None else ('yes' if r['collapsed'] else 'no')} | "
                     f"{'–' if r.get('vs_softmax') is None else comparison_text(r['vs_softmax'])} |")
    if missing:
        lines += ["", f"*Partial: {missing} row(s) still to come.*"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="fer2013.csv(.gz), an image folder, or 'synth' (SynthFER)")
    ap.add_argument("--minutes", type=float, required=True, help="training budget of each model")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: full epochs)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every training and of the evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override for every model")
    ap.add_argument("--out", default="runs/bench-metric")
    args = ap.parse_args(argv)

    import torch

    from fermetric.evaluation.ensemble import ensemble_report
    from fermetric.runs import load_run
    from fermetric.utils.io import atomic_write_text

    torch.set_num_threads(args.threads)  # the evaluation below runs in this process
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    if out.exists() and any(out.iterdir()):
        try:
            earlier = json.loads((out / ARGS_FILE).read_text())
        except (OSError, ValueError):
            earlier = None
        if earlier != settings:
            sys.exit(f"{out} is not empty and holds no bench run with these settings ({out / ARGS_FILE}); "
                     "choose another --out, or repeat the earlier command exactly to finish it")
        print(f"continuing the bench in {out}: finished runs are reused", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ARGS_FILE, json.dumps(settings, indent=2))

    common = ["--model", args.model, "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.data != "synth":
        common += ["--data", args.data]
    sets = COMMON_SETTINGS + [f"model.width={args.width}", f"train.time_budget_minutes={args.minutes}",
                              f"train.max_steps_per_epoch={args.max_steps}", *args.overrides]
    common += [x for s in sets for x in ("--set", s)]
    title = (f"{args.data}: {args.model} width {args.width}, {args.epochs} epochs"
             + (f" of at most {args.max_steps} steps" if args.max_steps else "")
             + f", at most {args.minutes:g} min per model (checked after each epoch), val split reported")

    t0 = time.time()
    runs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}

    def train(name: str) -> None:
        """Train (or reuse, or resume) run `name`; on failure record why in `errors`."""
        lost = [d for d in DEPENDS.get(name, []) if d in errors]
        if lost:
            errors[name] = f"not trained: it starts from {', '.join(lost)}, which failed"
            return
        cmd = [a.replace("{out}", str(out)) for a in TRAININGS[name]]
        run = out / name
        state = run_state(run)
        try:
            if state == "finished":
                print(f"{run}: finished run reused", flush=True)
            else:
                if state == "new" and run.exists():  # a failed earlier try that wrote no checkpoint
                    import shutil

                    shutil.rmtree(run)
                resume = ["--resume"] if state == "interrupted" else []
                fermetric([*cmd[:1], *common, *cmd[1:], *resume, "--out", str(run)], args.threads, out / "logs" / f"{name}.log")
            runs[name] = load_run(run, device="cpu")
        except Exception as exc:  # one failed model must not cost the rows already measured
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED ({errors[name].splitlines()[0]})", file=sys.stderr, flush=True)

    def minutes(name: str) -> float:
        return runs[name].metrics["train_seconds"] / 60

    def vs_softmax(pred) -> dict[str, Any]:
        """The paired comparison of `pred` on val with the softmax classifier's predictions."""
        clf = runs["classifier"]
        return paired_comparison(clf.load_data()["val"].labels.numpy(), clf.predict("val"), pred)

    def knn_row(name: str, label: str, own_minutes: Optional[float]) -> dict[str, Any]:
        run = runs[name]
        rep = run_knn_report(run, "val")
        collapsed = None if run.kind == "classifier" else run.metrics["val"].get("collapsed")
        # the kNN prediction (ties to the nearest neighbour's class), as knn_report counts it
        pred = run_knn(run).predict(embed_split(run, "val"))
        return row(label, rep, own_minutes, rep.get("mean_average_precision_at_r"), collapsed, vs_softmax(pred))

    votes = {"soft_vote": "soft vote", "val_weighted_vote": "val-accuracy weights, cross-fitted",
             "fitted_vote": "searched weights, cross-fitted"}
    reports: dict[str, Any] = {}

    def ensemble_row(member: str, vote: str, label: str) -> dict[str, Any]:
        if member not in reports:
            reports[member] = ensemble_report([runs["classifier"], runs[member]], "val", keep_predictions=True)
            extra.setdefault("ensemble_weights", {})[member] = {v: reports[member][v].get("weights") for v in votes}
        vote_report = reports[member][vote]
        return row(label, vote_report, minutes("classifier") + minutes(member),
                   vs_softmax=vs_softmax(vote_report["predictions"]))

    triplet_label = "train-triplet (defaults = the best recipe, configs/metric/best.yaml)"
    warm_label = "best recipe warm-started from the softmax run (--init-from; minutes include the classifier's)"
    ens_label = "ensemble softmax + {} ({})"
    plan: list[tuple[str, list[str], Callable[[], dict[str, Any]]]] = [
        ("softmax classifier", ["classifier"],
         lambda: row("softmax classifier", runs["classifier"].metrics["val"], minutes("classifier"))),
        ("kNN on the softmax classifier's features", ["classifier"],
         lambda: knn_row("classifier", "kNN on the softmax classifier's features", None)),
        (triplet_label, ["triplet"], lambda: knn_row("triplet", triplet_label, minutes("triplet"))),
        ("train-siamese (defaults)", ["siamese"], lambda: knn_row("siamese", "train-siamese (defaults)", minutes("siamese"))),
        (warm_label, ["warm"], lambda: knn_row("warm", warm_label, minutes("classifier") + minutes("warm"))),
    ]
    for member, shown in (("triplet", "triplet"), ("warm", "warm-started")):
        for vote, how in votes.items():
            label = ens_label.format(shown, how)
            plan.append((label, ["classifier", member],
                         lambda member=member, vote=vote, label=label: ensemble_row(member, vote, label)))

    def write(missing: int) -> str:
        table = markdown(rows, title, missing)
        result = {"rows": rows, "title": title, "ensemble_weights": extra.get("ensemble_weights"), "args": vars(args),
                  "total_minutes": (time.time() - t0) / 60, "complete": missing == 0,
                  "failed": sorted(errors)}
        atomic_write_text(out / "bench.md", table)
        atomic_write_text(out / "bench.json", json.dumps(result, indent=2))
        return table

    trained: set[str] = set()
    for i, (label, needs, compute) in enumerate(plan):
        for name in needs:
            if name not in trained:
                train(name)
                trained.add(name)
        failed = [n for n in needs if n in errors]
        if failed:
            rows.append(failed_row(label, "; ".join(f"{n}: {errors[n]}" for n in failed)))
        else:
            try:
                rows.append(compute())
            except Exception as exc:  # an evaluation that fails is a failed row, not a lost table
                errors[label] = f"{type(exc).__name__}: {exc}"
                rows.append(failed_row(label, errors[label]))
        table = write(len(plan) - i - 1)
    result = json.loads((out / "bench.json").read_text())
    print(table)
    print(f"{out / 'bench.md'}\n{out / 'bench.json'}")
    if errors:
        print(f"{len(errors)} failed: {', '.join(sorted(errors))} (bench.json has the reasons; run the same command "
              "again to retry them)", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
