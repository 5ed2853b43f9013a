"""Training throughput on this CPU: a plain PyTorch loop, fermetric's bare step, fermetric's loop.

For each model, same batch, images/s (after warm-up):
  plain       : what a FER user writes: a TensorDataset of uint8 faces with per-sample torchvision
                transforms (random crop with padding 4, horizontal flip, rotation 10 degrees) in a
                DataLoader, fp32, eager, cross-entropy, SGD;
  bare fp32   : fermetric's model, forward + backward + SGD step on one random batch, fp32 eager
                (the floor of the step, no data);
  bare <v>    : the same step with the variants asked for (--variants): bf16 autocast,
                channels_last, torch.compile (compile seconds reported apart);
  loop        : `fermetric train-classifier` on SynthFER for a few steps with --precision and
                --compile as given (default auto), read back from history.csv's train_img_per_s of
                the last epoch (data indexing, batched augmentation, loss, optimiser, logging;
                validation excluded; with compile the first epoch pays the compile).
Columns: loop / plain (aim >= 2.5x) and the loop's overhead over the bare step of the precision
the loop resolved to (aim: within 10 %).

    python scripts/bench_train_throughput.py [--models baseline resnet18] [--threads 2]
        [--variants bf16 channels_last compile] [--loop-compile true] [--steps 8]

Run on a quiet machine: every number is wall time.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


WIDTH: int | None = None  # --width: every model of one run is built at this width (None: the model's default)


def make_model(name: str, stem: str):
    from fermetric.models import create_model

    kw = {"stem": stem} if name.startswith(("resnet", "senet")) else {}
    if WIDTH is not None:
        kw["width"] = WIDTH
    torch.manual_seed(0)
    return create_model(name, num_classes=7, **kw).train()


def plain_loop_rate(name: str, batch: int, steps: int, stem: str) -> float:
    """A plain torchvision training loop, as in the PyTorch tutorials (fp32, eager, DataLoader)."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from fermetric.data.synthetic import generate_synthfer

    data = generate_synthfer(batch * (steps + 2), seed=0)
    tf = v2.Compose([v2.RandomCrop(48, padding=4), v2.RandomHorizontalFlip(), v2.RandomRotation(10),
                     v2.ToDtype(torch.float32, scale=True)])

    class Faces(Dataset):
        def __len__(self):
            return len(data.labels)

        def __getitem__(self, i):
            return tf(data.images[i]), int(data.labels[i])

    model = make_model(name, stem)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loader = DataLoader(Faces(), batch_size=batch, shuffle=True, drop_last=True)
    t0, seen = None, 0
    for i, (x, y) in enumerate(loader):
        if i == 2:  # two warm-up steps
            t0, seen = time.perf_counter(), 0
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def bare_step_rate(name: str, batch: int, steps: int, stem: str, precision: str = "fp32",
                   channels_last: bool = False, compile_: bool = False) -> tuple[float, float]:
    """fermetric's step on one random batch: (images/s, seconds of the warm-up incl. compile)."""
    from fermetric.utils import runtime

    model = make_model(name, stem)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = runtime.CompiledWithFallback(model, "bench", dynamic=False) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = runtime.to_memory_format(torch.rand(batch, 1, 48, 48), channels_last)
    y = torch.randint(0, 7, (batch,))

    def step():
        with runtime.autocast("cpu", precision):
            out = step_model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    w0 = time.perf_counter()
    step()
    step()
    warm = time.perf_counter() - w0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0), warm


def loop_rate(name: str, batch: int, steps: int, stem: str, threads: int, precision: str, compile_: str) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fermetric", "-q", "train-classifier", "--model", name, "--epochs", "2",
               "--device", "cpu", "--out", str(out), "--precision", precision, "--compile", compile_,
               "--set", f"train.batch_size={batch}", "--set", f"train.max_steps_per_epoch={steps}",
               "--set", f"data.synth_train={batch * steps}", "--set", "data.synth_val=64", "--set", "data.synth_test=0",
               "--set", f"train.threads={threads}", "--set", f"model.stem={stem}", "--set", "schedule.warmup_epochs=0"]
        if WIDTH is not None:
            cmd += ["--set", f"model.width={WIDTH}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = list(csv.DictReader(open(out / "history.csv")))
        resolved = torch.load(out / "checkpoints" / "last.pt", weights_only=True).get("runtime", {})
        return float(rows[-1]["train_img_per_s"]), resolved  # the last epoch: caches (and compile) warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["baseline", "resnet18"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stem", default="small")
    ap.add_argument("--width", type=int, default=None, help="channel width of every model (default: each model's own)")
    ap.add_argument("--variants", nargs="*", default=["channels_last"], choices=["bf16", "channels_last", "compile"],
                    help="bare-step variants to time besides fp32 eager")
    ap.add_argument("--loop-precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--loop-compile", default="auto", choices=["auto", "true", "false"],
                    help="auto compiles only long runs, so a short benchmark loop stays eager; 'true' shows a long run's speed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global WIDTH
    WIDTH = args.width
    from fermetric.utils import runtime

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.steps} timed steps, stem {args.stem}, width {args.width or 'default'}, "
          f"native bf16: {runtime.cpu_has_native_bf16()}")
    results = []
    for name in args.models:
        row: dict = {"model": name}
        row["plain"] = plain_loop_rate(name, args.batch, args.steps, args.stem)
        row["bare_fp32"], _ = bare_step_rate(name, args.batch, args.steps, args.stem)
        for v in args.variants:
            rate, warm = bare_step_rate(name, args.batch, args.steps, args.stem, precision="bf16" if v == "bf16" else "fp32",
                                        channels_last=v == "channels_last", compile_=v == "compile")
            row[f"bare_{v}"] = rate
            if v == "compile":
                row["compile_warmup_s"] = warm
        row["loop"], row["loop_runtime"] = loop_rate(name, args.batch, args.steps, args.stem, args.threads,
                                                     args.loop_precision, args.loop_compile)
        rt = row["loop_runtime"]
        bare_same, _ = bare_step_rate(name, args.batch, args.steps, args.stem, precision=rt.get("precision", "fp32"),
                                      channels_last=rt.get("channels_last", False), compile_=rt.get("compile", False))
        row["bare_as_loop"] = bare_same
        row["loop_over_plain"] = row["loop"] / row["plain"]
        row["loop_overhead"] = bare_same / row["loop"] - 1
        results.append(row)
        bare = "  ".join(f"bare {v} {row['bare_' + v]:.1f}" for v in args.variants)
        print(f"{name:9s} plain {row['plain']:.1f}  bare fp32 {row['bare_fp32']:.1f}  {bare}  "
              f"loop ({rt}) {row['loop']:.1f} img/s  loop/plain {row['loop_over_plain']:.2f}x  "
              f"loop overhead over its bare step {row['loop_overhead']:+.1%}"
              + (f"  (compile warm-up {row['compile_warmup_s']:.0f} s)" if "compile_warmup_s" in row else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
