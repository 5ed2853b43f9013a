"""Metric learning against softmax on one data set, same backbone, same budget: one table.

Rows: the softmax classifier; kNN on that classifier's pre-logit features (no metric training);
`train-triplet` and `train-siamese` with their defaults; the best metric recipe
(configs/metric/best.yaml); the ensemble of the classifier and the best recipe (weights searched
on val, cross-fitted so that no image is scored with weights its own label fitted). Columns:
accuracy, macro-F1, MAP@R (kNN rows), training minutes, the collapse flag.

Every model trains for --epochs epochs with the same optimiser settings (AdamW, lr 0.003, weight
decay 5e-4, the settings of scripts/reproduce_fer2013_cpu.sh), the same backbone and width and the
same cap of --minutes per model (train.time_budget_minutes; --max-steps caps the steps per epoch).
Models are trained one after another with the commands users run (printed, so every row can be
rebuilt by hand). Val is the split reported (FER2013: PublicTest).

    python scripts/bench_metric_vs_softmax.py fer2013.csv.gz --minutes 15 --threads 2 --out runs/bench-metric
    python scripts/bench_metric_vs_softmax.py synth --minutes 1 --epochs 1 --width 8 --max-steps 5   # smoke test

Writes OUT/bench.md (the table), OUT/bench.json and the run directories.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
COMMON_SETTINGS = ["optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.0005"]


def fermetric(args: list[str], threads: int) -> None:
    cmd = [sys.executable, "-m", "fermetric", "--threads", str(threads), "-q", *args]
    print("$ fermetric " + " ".join(shlex.quote(a) for a in cmd[3:]), flush=True)
    res = subprocess.run(cmd, text=True, capture_output=True)
    if res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")


def row(name: str, metrics: dict[str, Any], minutes: Optional[float], map_r: Optional[float] = None,
        collapsed: Optional[bool] = None) -> dict[str, Any]:
    return {"model": name, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "map_at_r": map_r,
            "minutes": minutes, "collapsed": collapsed}


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    def pct(x):
        return "–" if x is None else f"{x * 100:.2f} %"

    lines = [f"### {title}", "", "| model | accuracy | macro-F1 | MAP@R | minutes | collapse |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {pct(r['accuracy'])} | {pct(r['macro_f1'])} | "
                     f"{'–' if r['map_at_r'] is None else format(r['map_at_r'], '.4f')} | "
                     f"{'–' if r['minutes'] is None else format(r['minutes'], '.1f')} | "
                     f"{'–' if r['collapsed'] is None else ('yes' if r['collapsed'] else 'no')} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="fer2013.csv(.gz), an image folder, or 'synth' (SynthFER)")
    ap.add_argument("--minutes", type=float, required=True, help="training budget of each model")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: full epochs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override for every model")
    ap.add_argument("--out", default="runs/bench-metric")
    args = ap.parse_args(argv)

    from fermetric.evaluation.ensemble import ensemble_report
    from fermetric.runs import load_run

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.data != "synth":
        common += ["--data", args.data]
    sets = COMMON_SETTINGS + [f"model.width={args.width}", f"train.time_budget_minutes={args.minutes}",
                              f"train.max_steps_per_epoch={args.max_steps}", *args.overrides]
    common += [x for s in sets for x in ("--set", s)]
    trainings = {
        "classifier": ["train-classifier", "--set", "train.label_smoothing=0.1"],
        "triplet": ["train-triplet"],
        "siamese": ["train-siamese"],
        "best": ["train-triplet", "--config", str(REPO / "configs" / "metric" / "best.yaml")],
    }
    t0 = time.time()
    for name, cmd in trainings.items():
        fermetric([*cmd[:1], *common, *cmd[1:], "--out", str(out / name)], args.threads)

    runs = {name: load_run(out / name, device="cpu") for name in trainings}
    minutes = {name: r.metrics["train_seconds"] / 60 for name, r in runs.items()}
    rows = [row("softmax classifier", runs["classifier"].metrics["val"], minutes["classifier"])]
    for name, label in (("classifier", "kNN on the softmax classifier's features"), ("triplet", "train-triplet (defaults)"),
                        ("siamese", "train-siamese (defaults)"), ("best", "best recipe (configs/metric/best.yaml)")):
        rep = runs[name].knn_report("val")
        m = runs[name].metrics["val"]
        rows.append(row(label, rep, None if name == "classifier" else minutes[name],
                        rep.get("mean_average_precision_at_r"), m.get("collapsed") if name != "classifier" else None))
    ens = ensemble_report([runs["classifier"], runs["best"]], "val")
    rows.append(row("ensemble softmax + best recipe (weights fitted, cross-fitted on val)", ens["fitted_vote"],
                    minutes["classifier"] + minutes["best"]))
    title = (f"{args.data}: {args.model} width {args.width}, {args.epochs} epochs"
             + (f" of at most {args.max_steps} steps" if args.max_steps else "")
             + f", at most {args.minutes:g} min per model, val split reported")
    table = markdown(rows, title)
    result = {"rows": rows, "title": title, "ensemble_weights": ens["fitted_vote"]["weights"],
              "args": vars(args), "total_minutes": (time.time() - t0) / 60}
    (out / "bench.md").write_text(table)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(table)
    print(f"{out / 'bench.md'}\n{out / 'bench.json'}")
    return result


if __name__ == "__main__":
    main()
