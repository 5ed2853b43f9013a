#!/usr/bin/env python
"""The heap setting the CLI makes at start (fermetric.utils.heap.retain_freed_memory) against
glibc's default, side by side: each job runs in a fresh process per variant, rounds interleaved
(a busy machine slows both variants of a round alike), and reports wall seconds, user and kernel
CPU-seconds, and minor page faults.

Jobs:
- tta: one evaluation pass with predict's TTA (5 shifted crops x flip, batches of 512) over a
  split: a zoo entry on `--data` (FER2013 CSV; its PublicTest) or, without --data, an untrained
  network of that entry's architecture on 3,589 SynthFER faces (the timing does not depend on
  the weights);
- train: `--steps` training steps of that architecture (batch 128, fermetric's precision and
  memory format, eager).

    python scripts/bench_heap.py --threads 2 [--model fer2013-vgg16] [--data fer2013.csv.gz] [--rounds 2] [--jobs tta train]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("glibc default", "retain freed memory")
N_FACES = 3589  # the size of FER2013 PublicTest


def _network(model: str, data: str | None):
    """(network, precision, images, labels or None) of the job."""
    import torch

    from fermetric.zoo import load_pretrained

    run = load_pretrained(model, device="cpu")
    if data:
        run.use_data(data)
        split = run.load_data()["val"]
        return run, split.images, split.labels
    from fermetric.data.synthetic import generate_synthfer

    for p in run.model.parameters():  # the architecture, not the weights: re-initialised
        torch.nn.init.normal_(p, std=0.02)
    return run, generate_synthfer(N_FACES, seed=0).images, None


def worker(job: str, variant: str, model: str, data: str | None, steps: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from fermetric.utils import runtime
    from fermetric.utils.heap import retain_freed_memory

    torch.set_num_threads(threads)
    retained = retain_freed_memory() if variant == VARIANTS[1] else False
    run, images, labels = _network(model, data)
    out: dict = {"job": job, "variant": variant, "retained": retained}
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if job == "tta":
        from fermetric.scoring.run import run_scorer

        probs = run_scorer(run, "classifier", batch_size=512, tta="shift", compile=False).scores(images).numpy()
        if labels is not None:
            out["accuracy"] = float((probs.argmax(1) == labels.numpy()).mean())
    else:
        net = run.model.train()
        prec = runtime.resolve_precision("auto", "cpu")
        cl = runtime.use_channels_last("cpu", prec)
        if cl:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = runtime.to_memory_format(images[:128].float() / 255.0 if images.dtype == torch.uint8 else images[:128], cl)
        y = torch.randint(0, 7, (128,))
        for _ in range(steps):
            with runtime.autocast("cpu", prec):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["precision"] = prec
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.update(wall=time.perf_counter() - t0, user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime,
               faults=r1.ru_minflt - r0.ru_minflt, max_rss_gb=r1.ru_maxrss / 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fer2013-vgg16", help="a zoo classifier (its architecture, and its weights with --data)")
    ap.add_argument("--data", default=None, help="FER2013 CSV: the tta job scores its PublicTest")
    ap.add_argument("--jobs", nargs="+", default=["tta", "train"], choices=["tta", "train"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.model, args.data, args.steps, args.threads)))
        return
    from fermetric.utils.runtime import cpu_model

    print(f"{cpu_model()}, {args.threads} threads; model {args.model}, data {args.data or 'SynthFER (untrained weights)'}")
    results = []
    for job in args.jobs:
        rows: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                cmd = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--threads",
                       str(args.threads), "--worker", job, v] + (["--data", args.data] if args.data else [])
                done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ})
                rows[v].append(json.loads(done.stdout.strip().splitlines()[-1]))
        med = {v: {k: statistics.median(r[k] for r in rs) for k in ("wall", "user", "sys", "faults", "max_rss_gb")}
               for v, rs in rows.items()}
        for v in VARIANTS:
            m = med[v]
            acc = rows[v][0].get("accuracy")
            print(f"{job:5s} {v:20s} wall {m['wall']:6.1f} s  user {m['user']:6.1f} s  sys {m['sys']:5.1f} s  "
                  f"minor faults {m['faults'] / 1e6:6.2f} M  max RSS {m['max_rss_gb']:.2f} GB"
                  + (f"  accuracy {acc * 100:.2f} %" if acc is not None else ""), flush=True)
        print(f"{job:5s} speed-up (wall, median of {args.rounds}): {med[VARIANTS[0]]['wall'] / med[VARIANTS[1]]['wall']:.2f}x")
        results.append({"job": job, "rounds": rows, "median": med})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
