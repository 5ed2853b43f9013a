#!/usr/bin/env python
"""Training throughput of every registered model and stem: forward + backward + SGD step,
images/s on random 48x48 tensors, plus parameters and forward GFLOPs per image.

    OMP_NUM_THREADS=1 python scripts/bench_models.py                  # all models, all stems
    python scripts/bench_models.py --models resnet18 --stems small pool --threads 2
    python scripts/bench_models.py --device cuda --batch 256 --steps 20 --csv bench.csv

Each configuration runs `--warmup` untimed steps and `--steps` timed ones, or fewer when
`--max-seconds` is spent first (a slow model on a CPU still reports after one timed step).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fermetric.models import create_model, get_model_entry, list_models
from fermetric.models.resnet import STEMS


def forward_gflops(model: torch.nn.Module, size: int) -> float:
    """Forward FLOPs of one image (a multiply-add counts 2), in GFLOPs."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, size, size))
    model.train()
    return counter.get_total_flops() / 1e9


def bench_one(name: str, stem: str | None, args: argparse.Namespace) -> dict:
    kwargs = {"stem": stem} if stem else {}
    model = create_model(name, num_classes=7, **kwargs)
    gflops = forward_gflops(model, args.size)
    device = torch.device(args.device)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 7, (args.batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < args.steps:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > args.max_seconds:
            break
    per_step = sorted(times)[len(times) // 2]  # median: robust to a neighbour's burst on a shared CPU
    return {
        "model": name,
        "stem": stem or "-",
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "gflops_fwd": round(gflops, 3),
        "batch": args.batch,
        "steps": len(times),
        "s_per_step": round(per_step, 3),
        "img_per_s": round(args.batch / per_step, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help=f"default: all ({', '.join(list_models())})")
    p.add_argument("--stems", nargs="+", default=list(STEMS), help="stems for models that take one")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=30.0, help="time cap per configuration")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    header = f"{'model':9} {'stem':9} {'params_M':>8} {'GFLOPs':>7} {'s/step':>7} {'img/s':>7}"
    print(f"# device {args.device}, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size}", flush=True)
    print(header, flush=True)
    for name in args.models or list_models():
        stems = args.stems if "stem" in get_model_entry(name).options() else [None]
        for stem in stems:
            row = bench_one(name, stem, args)
            rows.append(row)
            print(f"{row['model']:9} {row['stem']:9} {row['params_M']:8.2f} {row['gflops_fwd']:7.3f} "
                  f"{row['s_per_step']:7.3f} {row['img_per_s']:7.1f}", flush=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
