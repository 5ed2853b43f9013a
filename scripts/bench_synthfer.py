"""Benchmark and calibrate SynthFER.

1. Generation speed: images/s for `--n` faces (wall clock and process CPU time), and the time
   to write `--write` images (plus their masks) as PNG files with write_synthfer_folder.
2. Calibration: for each difficulty, a small CNN (fermetric's "baseline" at a small width when
   fermetric.models is importable, else the small CNN below) trained for a few epochs on
   `--train` images, with fermetric's BatchLoader and BatchAugment; val accuracy per epoch.
3. Optionally a sample grid (faces per class, with the evidence masks overlaid) as a PNG.

    OMP_NUM_THREADS=1 python scripts/bench_synthfer.py --difficulties 0.5 1.0 1.5 --grid grid.png

Prints a table and writes the numbers as JSON (`--out`).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from fermetric.data import BatchAugment, BatchLoader, FERDataset
from fermetric.data.classes import FER2013_CLASSES
from fermetric.data.synthetic import generate_synthfer, load_synthfer, write_synthfer_folder


class SmallCNN(nn.Module):
    """Fallback model: three conv-BN-ReLU-pool blocks and a linear head, (N, 1, 48, 48) -> (N, 7)."""

    def __init__(self, width: int = 16, num_classes: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i in range(3):
            cout = width * 2**i
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.25))


def make_model(width: int) -> tuple[nn.Module, str]:
    try:
        from fermetric.models import create_model

        return create_model("baseline", num_classes=7, width=width), f"baseline(width={width})"
    except ImportError:
        return SmallCNN(width), f"SmallCNN(width={width})"


@torch.no_grad()
def accuracy(model: nn.Module, ds: FERDataset, batch_size: int = 500) -> tuple[float, list[float]]:
    """Overall and per-class accuracy of `model` on `ds`."""
    model.eval()
    preds = torch.cat([model(x).argmax(1) for x, _, _ in BatchLoader(ds, batch_size)])
    hit = (preds == ds.labels).float()
    per_class = [float(hit[ds.labels == c].mean()) if (ds.labels == c).any() else float("nan") for c in range(7)]
    return float(hit.mean()), per_class


def train_eval(train: FERDataset, val: FERDataset, epochs: int, width: int, seed: int, lr: float,
               batch_size: int = 64) -> dict:
    """Train a small CNN (AdamW, one-cycle cosine) and return the val accuracy after each epoch."""
    torch.manual_seed(seed)
    model, model_name = make_model(width)
    loader = BatchLoader(train, batch_size, shuffle=True, augment=BatchAugment(), seed=seed, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for x, y, _ in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        acc, per_class = accuracy(model, val)
        history.append(acc)
        print(f"    epoch {epoch + 1}: val acc {acc:.3f}  loss {loss.item():.3f}", flush=True)
    train_acc, _ = accuracy(model, train)
    return {"model": model_name, "val_acc": history, "train_acc": train_acc,
            "per_class_val_acc": dict(zip(FER2013_CLASSES, per_class)), "seconds": time.perf_counter() - t0}


def bench_speed(n: int) -> dict:
    generate_synthfer(64)  # warm-up (first-call allocations)
    t, c = time.perf_counter(), time.process_time()
    ds = generate_synthfer(n, seed=123)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    imgs = ds.images.float() / 255.0
    return {
        "n": n, "wall_s": wall, "cpu_s": cpu, "images_per_s_wall": n / wall, "images_per_s_cpu": n / cpu,
        "pixel_mean": float(imgs.mean()), "pixel_std": float(imgs.std()),
        "mask_fraction": float(ds.masks.float().mean()), "class_counts": ds.class_counts(),
    }


def bench_write(n: int) -> dict:
    """Time write_synthfer_folder for n images (2n PNG files: images and masks) in a temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix="synthfer_bench_"))
    try:
        t, c = time.perf_counter(), time.process_time()
        counts = write_synthfer_folder(tmp / "synthfer", n=n)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "files": 2 * n, "wall_s": wall, "cpu_s": cpu,
            "split_sizes": {k: sum(v.values()) for k, v in counts.items()}}


def sample_grid(path: Path, difficulty: float, per_class: int = 6, seed: int = 1) -> None:
    """Faces per class (rows), each followed by the same face with its evidence mask in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = torch.arange(7).repeat_interleave(per_class)
    ds = generate_synthfer(len(labels), seed=seed, difficulty=difficulty, labels=labels)
    fig, axes = plt.subplots(7, 2 * per_class, figsize=(2 * per_class * 1.2, 7 * 1.3))
    for c in range(7):
        for j in range(per_class):
            i = c * per_class + j
            img, mask = ds.images[i, 0].numpy(), ds.masks[i].numpy()
            for k in range(2):
                axes[c, 2 * j + k].imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[c, 2 * j + 1].imshow(mask, cmap="Reds", vmin=0, vmax=1, alpha=0.45 * mask, interpolation="nearest")
        axes[c, 0].set_ylabel(FER2013_CLASSES[c])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"SynthFER, difficulty {difficulty:g} (right of each pair: evidence mask)")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=10_000, help="images for the speed test (0: skip)")
    ap.add_argument("--write", type=int, default=0, help="images for the PNG-folder writing test (0: skip)")
    ap.add_argument("--difficulties", type=float, nargs="*", default=[0.5, 1.0, 1.5])
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--width", type=int, default=16, help="channels of the CNN's first block")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", type=Path, default=None, help="write a sample grid PNG here")
    ap.add_argument("--grid-difficulty", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"threads": args.threads}
    if args.n > 0:
        s = bench_speed(args.n)
        results["speed"] = s
        print(f"generation: {s['n']} images in {s['wall_s']:.2f} s wall / {s['cpu_s']:.2f} s CPU "
              f"({s['images_per_s_wall']:.0f} / {s['images_per_s_cpu']:.0f} images/s); pixel mean {s['pixel_mean']:.3f} "
              f"std {s['pixel_std']:.3f}; mask covers {100 * s['mask_fraction']:.1f} %")
    if args.write > 0:
        w = bench_write(args.write)
        results["write"] = w
        print(f"write_synthfer_folder: {w['n']} images + {w['n']} masks in {w['wall_s']:.1f} s wall / "
              f"{w['cpu_s']:.1f} s CPU")
    results["calibration"] = {}
    for d in args.difficulties:
        data = load_synthfer(n_train=args.train, n_val=args.val, n_test=0, seed=args.seed, difficulty=d)
        print(f"difficulty {d:g}: training on {args.train} images, {args.epochs} epochs", flush=True)
        r = train_eval(data["train"], data["val"], args.epochs, args.width, args.seed, args.lr)
        results["calibration"][f"{d:g}"] = r
    if results["calibration"]:
        print(f"\n{'difficulty':>10} {'val acc':>8} {'train acc':>9} {'seconds':>8}  per-class val acc")
        for d, r in results["calibration"].items():
            pc = " ".join(f"{k[:3]}={v:.2f}" for k, v in r["per_class_val_acc"].items() if not math.isnan(v))
            print(f"{d:>10} {r['val_acc'][-1]:>8.3f} {r['train_acc']:>9.3f} {r['seconds']:>8.0f}  {pc}")
        print(f"model: {next(iter(results['calibration'].values()))['model']}; chance (majority class) "
              f"{max(data['val'].class_counts()) / args.val:.3f}")
    if args.grid is not None:
        sample_grid(args.grid, args.grid_difficulty)
        print(f"grid: {args.grid}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
