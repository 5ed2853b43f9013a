"""Training throughput: fermetric's whole training loop against the bare model step.

For each model, at batch 128 on this CPU:
  bare  : forward + backward + SGD step on one random tensor batch, repeated (the floor);
  loop  : `fermetric train-classifier` on SynthFER for a few steps, read back from history.csv's
          train_img_per_s (data indexing, uint8 -> float, batched augmentation, loss, optimiser,
          progress bar; validation excluded).
The overhead (bare / loop - 1) is what the data pipeline and the loop cost (aim: within 15 %).

    python scripts/bench_train_throughput.py [--models baseline resnet18] [--steps 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def bare_step_rate(name: str, batch: int, steps: int, warmup: int, stem: str) -> float:
    from fermetric.models import create_model

    kw = {"stem": stem} if name.startswith(("resnet", "senet")) else {}
    model = create_model(name, num_classes=7, **kw).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(batch, 1, 48, 48)
    y = torch.randint(0, 7, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def loop_rate(name: str, batch: int, steps: int, stem: str, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fermetric", "-q", "train-classifier", "--model", name, "--epochs", "2",
               "--device", "cpu", "--out", str(out),
               "--set", f"train.batch_size={batch}", "--set", f"train.max_steps_per_epoch={steps}",
               "--set", f"data.synth_train={batch * steps}", "--set", "data.synth_val=64", "--set", "data.synth_test=0",
               "--set", f"train.threads={threads}", "--set", f"model.stem={stem}", "--set", "schedule.warmup_epochs=0"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = list(csv.DictReader(open(out / "history.csv")))
        return float(rows[-1]["train_img_per_s"])  # the second epoch: caches and allocator warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["baseline", "resnet18"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stem", default="small")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.steps} timed steps, stem {args.stem}")
    print(f"{'model':10s} {'bare img/s':>11s} {'loop img/s':>11s} {'overhead':>9s}")
    for name in args.models:
        bare = bare_step_rate(name, args.batch, args.steps, warmup=1, stem=args.stem)
        loop = loop_rate(name, args.batch, args.steps, args.stem, args.threads)
        print(f"{name:10s} {bare:11.1f} {loop:11.1f} {bare / loop - 1:9.1%}", flush=True)


if __name__ == "__main__":
    main()
