#!/usr/bin/env python
"""Benchmark FAISS approximate indexes on a large gallery (issue 7): 1,000,000 random unit
128-d vectors, IVF-Flat and IVF-PQ built through KNNClassifier.

Reports build time (k-means training + adding), query time for --queries queries at several
nprobe values, and recall against the exact inner-product index: recall@1 (the exact nearest
neighbour is the approximate first hit) and recall@10 (overlap of the top-10 lists). The exact
search is run on the first --gt-queries queries only (it is the slow part), so recall is
estimated on those.

Random Gaussian directions in 128-d are the hardest case for approximate search (no cluster
structure to exploit); --data clustered uses the latent-cluster generator of bench_knn.py instead.

    python scripts/bench_knn_large.py --threads 2 --out bench_knn_large.json

Keeps peak memory near 3 GB at the defaults (gallery 512 MB, the exact index and IVF-Flat hold a
copy each; IVF-PQ holds 40 bytes a vector).
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gallery", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--gt-queries", type=int, default=2_000, help="queries searched exactly for recall")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", choices=("random", "clustered"), default="random")
    p.add_argument("--nlist", type=int, default=None, help="default: KNNClassifier's (about 4 sqrt(N))")
    p.add_argument("--train-size", type=int, default=None, help="k-means sample; default 39 * nlist")
    p.add_argument("--pq-m", type=int, default=None, help="IVF-PQ bytes a vector; default D / 4")
    p.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--indexes", nargs="+", choices=("ivf", "ivfpq"), default=["ivf", "ivfpq"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, default=None)
    return p.parse_args(argv)


def random_unit(n: int, d: int, seed: int, chunk: int = 200_000):
    """(n, d) float32 Gaussian directions, generated in chunks to keep memory at one copy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start:start + block.shape[0]] = block
    return x


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import faiss
    import numpy as np

    from fermetric.retrieval import KNNClassifier
    from fermetric.retrieval.knn import default_nlist

    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "config": vars(args),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__,
                    "load_average_at_start": os.getloadavg()},
    }

    t0 = time.perf_counter()
    if args.data == "random":
        g = random_unit(args.gallery, args.dim, args.seed)
        q = random_unit(args.queries, args.dim, args.seed + 1)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_knn import clustered_embeddings

        g, _, q, _ = clustered_embeddings(args.gallery, args.queries, args.dim, 0.5, args.seed)
    labels = np.zeros(args.gallery, dtype=np.int64)  # classification is not measured here
    results["data_s"] = time.perf_counter() - t0
    print(f"{args.data} gallery {g.shape}, {args.queries} queries, threads={args.threads} "
          f"({results['data_s']:.1f}s to generate)", flush=True)

    # ------------------------------------------------------------ exact ground truth
    t0 = time.perf_counter()
    exact = KNNClassifier(k=10, index="flat").fit(g, labels)
    build_exact = time.perf_counter() - t0
    gt_q = q[: args.gt_queries]
    t0 = time.perf_counter()
    _, gt_idx = exact.kneighbors(gt_q, k=10)
    exact_s = time.perf_counter() - t0
    del exact
    gc.collect()
    per_query_exact = exact_s / len(gt_q)
    results["exact"] = {"build_s": build_exact, "search_s": exact_s, "queries": len(gt_q),
                        "per_query_ms": per_query_exact * 1e3,
                        "extrapolated_search_s_all_queries": per_query_exact * args.queries}
    print(f"exact: {len(gt_q)} queries in {exact_s:.1f}s ({per_query_exact * 1e3:.2f} ms/query; "
          f"{per_query_exact * args.queries:.0f}s extrapolated to {args.queries})", flush=True)

    nlist = args.nlist or default_nlist(args.gallery)
    train_size = args.train_size or 39 * nlist
    for kind in args.indexes:
        t0 = time.perf_counter()
        clf = KNNClassifier(k=10, index=kind, nlist=nlist, train_size=train_size, pq_m=args.pq_m,
                            seed=args.seed).fit(g, labels)
        build = time.perf_counter() - t0
        ivf = faiss.extract_index_ivf(clf.index_)
        code_bytes = ivf.code_size  # bytes a vector in the inverted lists (+ 8 for its id)
        rows = []
        for nprobe in args.nprobe:
            if nprobe > nlist:
                continue
            ivf.nprobe = nprobe
            t0 = time.perf_counter()
            _, idx = clf.kneighbors(q)
            t = time.perf_counter() - t0
            sub = idx[: len(gt_q)]
            rows.append({
                "nprobe": nprobe, "search_s": t, "per_query_ms": t / args.queries * 1e3,
                "recall_at_1": float((sub[:, 0] == gt_idx[:, 0]).mean()),
                "recall_at_10": float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(sub, gt_idx)])),
                "speedup_vs_exact": per_query_exact / (t / args.queries),
            })
            r = rows[-1]
            print(f"{kind} nprobe={nprobe}: {t:.2f}s for {args.queries} queries ({r['per_query_ms']:.3f} ms/query, "
                  f"{r['speedup_vs_exact']:.1f}x exact), recall@1 {r['recall_at_1']:.4f}, "
                  f"recall@10 {r['recall_at_10']:.4f}", flush=True)
        results[kind] = {"nlist": nlist, "train_size": train_size, "pq_m": clf.pq_m_, "build_s": build,
                         "index_bytes_estimate": int(args.gallery * (code_bytes + 8)), "sweep": rows}
        print(f"{kind}: nlist={nlist}, trained on {train_size}, build {build:.1f}s, "
              f"~{args.gallery * (code_bytes + 8) / 1e6:.0f} MB of codes+ids", flush=True)
        del clf, ivf
        gc.collect()

    results["total_s"] = time.perf_counter() - t_start
    results["peak_rss_gb"] = peak_rss_gb()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(f"total {results['total_s']:.0f}s, peak RSS {results['peak_rss_gb']:.2f} GB, load average "
          f"{results['machine']['load_average_at_start']} -> {results['machine']['load_average_at_end']}")
    if args.out:
        from fermetric.utils.io import write_json

        print(write_json(args.out, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
