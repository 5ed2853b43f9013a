#!/usr/bin/env python
"""Time fermetric's real-data loaders and print a small table.

    python scripts/bench_data_load.py [--csv fer2013.csv.gz] [--folder DIR] [--folder-images N]

Rows: the full CSV (uncached: gunzip + parse + cache write; its gunzip and parse parts alone;
cached), the FER+ relabelling, the folder sample, and a folder of N JPEGs cut from the CSV read
with 1 thread and with the default thread pool. The uncached load runs against an empty
temporary cache folder; cached and folder timings are the best of --repeats runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERMETRIC_SHARED_DATA", REPO.parent / "shared" / "data"))


def best(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds of this process) of the fastest run, its result). CPU time
    is what to compare on a busy machine: wall time also counts waiting for a core."""
    times, out = [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=SHARED / "fer2013" / "fer2013-dev.csv.gz")
    ap.add_argument("--ferplus", type=Path, default=SHARED / "ferplus" / "fer2013new.csv")
    ap.add_argument("--folder", type=Path, default=SHARED / "fer2013" / "folder-sample")
    ap.add_argument("--folder-images", type=int, default=3000, help="JPEGs for the thread-pool row (0: skip).")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fermetric-bench-"))
    os.environ["FERMETRIC_CACHE_DIR"] = str(tmp / "cache")  # an empty cache: the first load parses
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:

    import numpy as np
    from PIL import Image

    from fermetric.data.fer2013 import _read_bytes, load_fer2013_csv, parse_fer2013_bytes
    from fermetric.data.ferplus import apply_ferplus
    from fermetric.data.folders import load_folder

    rows: list[tuple[str, int, tuple[float, float]]] = []  # (what, images, (wall, cpu) seconds)
    splits = None
    if args.csv.is_file():
        t_first, splits = best(lambda: load_fer2013_csv(args.csv), 1)
        n = sum(len(d) for d in splits.splits.values())
        t_gz, data = best(lambda: _read_bytes(args.csv), 1)
        t_parse, _ = best(lambda: parse_fer2013_bytes(data, args.csv), 1)
        del data
        t_cached, _ = best(lambda: load_fer2013_csv(args.csv), args.repeats)
        rows += [
            (f"{args.csv.name}: first load (uncached)", n, t_first),
            ("  of which: read + gunzip", n, t_gz),
            ("  of which: parse", n, t_parse),
            (f"{args.csv.name}: cached load", n, t_cached),
        ]
        if args.ferplus.is_file():
            t_fp, fp = best(lambda: apply_ferplus(splits, args.ferplus), 1)
            rows.append(("FER+ relabelling (fer2013new.csv)", sum(len(d) for d in fp.splits.values()), t_fp))
    else:
        print(f"skipping the CSV rows: {args.csv} is absent")
    if args.folder.is_dir():
        t, s = best(lambda: load_folder(args.folder), args.repeats)
        rows.append((f"folder {args.folder.name}", s.info["files"], t))
    if args.folder_images > 0 and splits is not None:
        folder = tmp / "jpegs"
        imgs = splits["train"].images[: args.folder_images, 0].numpy()
        labels = splits["train"].labels[: args.folder_images].tolist()
        for i, (img, y) in enumerate(zip(imgs, labels)):
            d = folder / "train" / splits.class_names[y].lower()
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(img)).save(d / f"Training_{i}.jpg", quality=95)
        n = len(imgs)
        t1, _ = best(lambda: load_folder(folder, workers=1), args.repeats)
        tn, _ = best(lambda: load_folder(folder), args.repeats)
        rows.append((f"folder of {n} JPEGs, 1 thread", n, t1))
        rows.append((f"folder of {n} JPEGs, {min(8, os.cpu_count() or 1)} threads", n, tn))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'images':>7}  {'wall s':>7}  {'cpu s':>7}  {'images/s (wall)':>15}")
    for what, n, (wall, cpu) in rows:
        print(f"{what:<{width}}  {n:>7,}  {wall:>7.3f}  {cpu:>7.3f}  {n / wall:>15,.0f}")
    print(f"(cpu count {os.cpu_count()}; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
