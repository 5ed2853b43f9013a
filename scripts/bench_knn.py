#!/usr/bin/env python
"""Benchmark kNN classification at FER2013 size: FAISS exact search against scikit-learn and the
bare matrix product, then IVF and HNSW (agreement with exact predictions and speed-up).

The embeddings are random but clustered like a trained metric-learning model's: points of 7
classes (FER2013 training proportions), each class 8 sub-clusters with unit Gaussian spread in a
16-d latent space, mapped linearly into 128-d, plus isotropic noise, L2-normalised, float32.
The defaults give an exact kNN accuracy near 72 %, about what the best FER2013 models reach.

    python scripts/bench_knn.py --threads 2 --repeats 5 --out bench_knn.json

Every timing is the median of --repeats runs after one warm-up, the methods run round-robin so
that changes in machine load hit all alike; process CPU time is reported beside wall time.
"predict" timings include query normalisation, the neighbour search and the vote
(KNNClassifier.predict); "search_only_default_block" is the bare faiss index.search with
FAISS's default BLAS block (KNNClassifier uses a larger one).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

FER_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gallery", type=int, default=28_709)
    p.add_argument("--queries", type=int, default=3_589)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--separation", type=float, default=0.5,
                   help="class-centre spread in latent units; 0.5 gives ~72%% exact kNN accuracy")
    p.add_argument("--noise", type=float, default=0.1,
                   help="isotropic noise in the 128-d space (0.3 makes neighbours harder to find)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 48, 64, 128])
    p.add_argument("--ef-search", type=int, nargs="+", default=[10, 16, 24, 32, 48, 64])
    p.add_argument("--hnsw-m", type=int, nargs="+", default=[16, 32])
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--out", type=str, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def clustered_embeddings(n_gallery: int, n_query: int, dim: int, separation: float, seed: int, noise: float = 0.1):
    """(gallery, gallery_labels, queries, query_labels): float32 unit vectors, int64 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    latent, subs_per_class, classes = 16, 8, len(FER_COUNTS)
    p = np.asarray(FER_COUNTS) / sum(FER_COUNTS)
    centers = separation * rng.normal(size=(classes, latent))
    subs = centers[:, None, :] + 0.5 * separation * rng.normal(size=(classes, subs_per_class, latent))
    lift = rng.normal(size=(latent, dim)) / np.sqrt(latent)

    def draw(n: int):
        y = rng.choice(classes, size=n, p=p)
        s = rng.integers(0, subs_per_class, size=n)
        z = subs[y, s] + rng.normal(size=(n, latent))
        x = z @ lift + noise * rng.normal(size=(n, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), y.astype(np.int64)

    g, yg = draw(n_gallery)
    q, yq = draw(n_query)
    return g, yg, q, yq


CPU_TIMES: dict[str, float] = {}  # name -> median process CPU seconds of the last interleaved_medians


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median wall time of each function over `repeats` rounds, after one warm-up call each.

    The functions run round-robin (one call of each per round) so that a change in machine load
    during the benchmark hits every method alike, and ratios between them stay fair. The median
    process CPU time (all threads) of each is left in CPU_TIMES: on a shared machine it is less
    disturbed by other jobs than wall time.

    Returns:
        ({name: median wall seconds}, {name: result of its last call}).
    """
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    CPU_TIMES.clear()
    CPU_TIMES.update({name: statistics.median(ts) for name, ts in cpu.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # thread counts must be fixed before numpy / torch / faiss start their pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import faiss
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from fermetric.retrieval import KNNClassifier

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)

    results: dict[str, Any] = {
        "config": vars(args),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "faiss": faiss.__version__, "torch": torch.__version__, "numpy": np.__version__,
                    "load_average_at_start": os.getloadavg()},
    }
    R = args.repeats
    g, yg, q, yq = clustered_embeddings(args.gallery, args.queries, args.dim, args.separation, args.seed, args.noise)
    print(f"gallery {g.shape}, queries {q.shape}, k={args.k}, threads={args.threads}, repeats={R} (median)")

    # ------------------------------------------------------------ exact search
    from sklearn.neighbors import KNeighborsClassifier

    tg, tq = torch.from_numpy(g), torch.from_numpy(q)
    t0 = time.perf_counter()
    exact = KNNClassifier(k=args.k).fit(g, yg)
    build_flat = time.perf_counter() - t0
    maj = KNNClassifier(k=args.k, weighting="majority").fit(g, yg)
    fns: dict[str, Callable[[], Any]] = {
        "numpy_matmul": lambda: q @ g.T,
        "torch_matmul": lambda: tq @ tg.T,
        "torch_matmul_topk": lambda: torch.topk(tq @ tg.T, args.k, dim=1),
        "faiss_flat_search_only_default_block": lambda: exact.index_.search(q, args.k),
        "faiss_flat_kneighbors": lambda: exact.kneighbors(q),
        "faiss_flat_predict": lambda: exact.predict(q),
        "faiss_flat_predict_majority": lambda: maj.predict(q),
    }
    sk_models = {}
    if not args.skip_sklearn:
        for metric in ("cosine", "euclidean"):
            sk = KNeighborsClassifier(n_neighbors=args.k, algorithm="brute", metric=metric, n_jobs=args.threads)
            sk_models[metric] = sk.fit(g, yg)
            fns[f"sklearn_brute_{metric}_predict"] = (lambda m=sk: m.predict(q))
    with torch.inference_mode():
        timings, outs = interleaved_medians(fns, R)
    cpu_times = dict(CPU_TIMES)
    e_sims, e_idx = outs["faiss_flat_kneighbors"]
    exact_pred = outs["faiss_flat_predict"]
    accuracy = float((exact_pred == yq).mean())
    floor = min(timings["numpy_matmul"], timings["torch_matmul"])
    results["exact"] = {
        "build_s": build_flat, "timings_s": timings, "cpu_times_s": cpu_times,
        "accuracy_distance_weighting": accuracy,
        "accuracy_majority": float((outs["faiss_flat_predict_majority"] == yq).mean()),
        "faiss_predict_over_bare_matmul": timings["faiss_flat_predict"] / floor,
        "faiss_kneighbors_over_bare_matmul": timings["faiss_flat_kneighbors"] / floor,
        "faiss_predict_over_bare_matmul_cpu": cpu_times["faiss_flat_predict"]
        / min(cpu_times["numpy_matmul"], cpu_times["torch_matmul"]),
    }
    print(f"exact kNN accuracy: distance weighting {accuracy:.4f}, majority {results['exact']['accuracy_majority']:.4f}")

    maj_proba = maj.predict_proba(q)
    for metric, sk in sk_models.items():
        sk_pred = outs[f"sklearn_brute_{metric}_predict"]
        sk_proba = sk.predict_proba(q)
        sk_idx = sk.kneighbors(q, return_distance=False)
        # sklearn breaks vote ties towards the smallest class id (argmax); compare like with like
        results[f"sklearn_{metric}"] = {
            "neighbour_sets_identical": float(np.mean([set(a) == set(b) for a, b in zip(sk_idx, e_idx)])),
            "proba_identical": float(np.mean(np.all(np.abs(sk_proba - maj_proba) < 1e-9, axis=1))),
            "predictions_identical_same_tie_rule": float((sk_pred == maj_proba.argmax(1)).mean()),
            "predictions_identical_our_tie_rule": float((sk_pred == outs["faiss_flat_predict_majority"]).mean()),
            "faiss_speedup": timings[f"sklearn_brute_{metric}_predict"] / timings["faiss_flat_predict_majority"],
        }
        print(f"sklearn brute {metric}: {results[f'sklearn_{metric}']}")

    def recall_at_k(idx: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx, e_idx)]))

    def sweep(clf: Any, setter: Callable[[int], None], values: list[int], key: str, default: int) -> list[dict]:
        """Time clf.predict at each setting, round-robin with exact predict for fair speed-ups."""
        def run(v: int) -> Callable[[], Any]:
            return lambda: (setter(v), clf.predict(q))[1]
        fns = {"exact": lambda: exact.predict(q), **{str(v): run(v) for v in values}}
        med, preds = interleaved_medians(fns, R)
        rows = []
        for v in values:
            setter(v)
            rows.append({key: v, "predict_s": med[str(v)], "exact_predict_s": med["exact"],
                         "speedup": med["exact"] / med[str(v)],
                         "cpu_s": CPU_TIMES[str(v)], "exact_cpu_s": CPU_TIMES["exact"],
                         "cpu_speedup": CPU_TIMES["exact"] / CPU_TIMES[str(v)],
                         "agreement": float((preds[str(v)] == exact_pred).mean()),
                         "recall_at_k": recall_at_k(clf.kneighbors(q)[1]),
                         "accuracy": float((preds[str(v)] == yq).mean()), "is_default": v == default})
        setter(default)
        return rows

    # ------------------------------------------------------------ IVF
    t0 = time.perf_counter()
    ivf = KNNClassifier(k=args.k, index="ivf", seed=args.seed).fit(g, yg)
    ivf_build = time.perf_counter() - t0
    ivf_index = faiss.extract_index_ivf(ivf.index_)
    default_nprobe = ivf.search_params["nprobe"]
    values = sorted(v for v in set(args.nprobe + [default_nprobe]) if v <= ivf_index.nlist)
    ivf_rows = sweep(ivf, lambda v: ivf.set_search_params(nprobe=v), values, "nprobe", default_nprobe)
    results["ivf"] = {"nlist": ivf.nlist_, "default_nprobe": default_nprobe, "build_s": ivf_build, "sweep": ivf_rows}

    # ------------------------------------------------------------ HNSW
    hnsw_results = []
    for m in args.hnsw_m:
        t0 = time.perf_counter()
        hnsw = KNNClassifier(k=args.k, index="hnsw", hnsw_m=m).fit(g, yg)
        build = time.perf_counter() - t0
        default_ef = hnsw.search_params["ef_search"]
        values = sorted(v for v in set(args.ef_search + [default_ef]) if v >= args.k)
        rows = sweep(hnsw, lambda v, h=hnsw: h.set_search_params(ef_search=v), values, "ef_search", default_ef)
        hnsw_results.append({"hnsw_m": m, "build_s": build, "default_ef_search": default_ef, "sweep": rows})
    results["hnsw"] = hnsw_results
    results["machine"]["load_average_at_end"] = os.getloadavg()

    # ------------------------------------------------------------ summary
    cpu_floor = min(cpu_times["numpy_matmul"], cpu_times["torch_matmul"])
    print("\n| method | wall (s) | vs bare matmul | CPU (s) | CPU vs bare matmul |")
    print("|---|---:|---:|---:|---:|")
    print(f"| faiss_flat_build | {build_flat:.4f} | | | |")
    for name, t in timings.items():
        c = cpu_times[name]
        print(f"| {name} | {t:.4f} | {t / floor:.2f}x | {c:.4f} | {c / cpu_floor:.2f}x |")
    print(f"\nIVF nlist={ivf.nlist_}, build {ivf_build:.2f}s, default nprobe={default_nprobe}")
    print("| nprobe | predict wall (s) | speed-up (wall) | speed-up (CPU) | agreement | recall@k |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in ivf_rows:
        print(f"| {r['nprobe']}{' (default)' if r['is_default'] else ''} | {r['predict_s']:.4f} | {r['speedup']:.1f}x | "
              f"{r['cpu_speedup']:.1f}x | {r['agreement'] * 100:.2f} % | {r['recall_at_k'] * 100:.2f} % |")
    for h in hnsw_results:
        print(f"\nHNSW M={h['hnsw_m']}, build {h['build_s']:.2f}s, default efSearch={h['default_ef_search']}")
        print("| efSearch | predict wall (s) | speed-up (wall) | speed-up (CPU) | agreement | recall@k |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in h["sweep"]:
            print(f"| {r['ef_search']}{' (default)' if r['is_default'] else ''} | {r['predict_s']:.4f} | {r['speedup']:.1f}x | "
                  f"{r['cpu_speedup']:.1f}x | {r['agreement'] * 100:.2f} % | {r['recall_at_k'] * 100:.2f} % |")
    print(f"\nload average start {results['machine']['load_average_at_start']}, end {results['machine']['load_average_at_end']}")
    if args.out:
        from fermetric.utils.io import write_json

        print(write_json(args.out, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
