#!/usr/bin/env python
"""Forward-only work with and without the ONNX Runtime backend (issue 26), side by side in one
process, rounds interleaved (a busy machine slows every variant of a round alike):

- torch-fp32: PyTorch fp32 with channels_last (what fermetric's default is on a CPU without
  native bf16: the AVX2-only and AVX-512 machines);
- torch-auto: fermetric's default here (precision auto: bf16 where the CPU has it natively);
- onnxruntime: the scorer's network as an fp32 ONNX graph (`backend onnxruntime`).

Jobs, per model: LIME with 1,000 samples (seconds per face), occlusion (8 px patches, stride 4;
seconds per face), evaluation with TTA (5 shifted crops x flip; faces per second) and embedding a
gallery (pre-logit features; faces per second). Untrained models at the zoo's widths (timings do
not depend on the weights); SynthFER faces. The table gives each variant's time and the ratio of
torch-fp32 (and torch-auto) over onnxruntime, with the CPU's name and flags.

    python scripts/bench_inference.py --threads 2 [--models baseline resnet18] [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import torch

from fermetric.analysis import lime_explanation, occlusion_saliency
from fermetric.data.synthetic import generate_synthfer
from fermetric.models import create_model
from fermetric.models.layers import PreLogits
from fermetric.retrieval.embeddings import embed_dataset
from fermetric.scoring import ClassifierScorer
from fermetric.scoring.tta import tta_scorer
from fermetric.utils import runtime

MODELS = {"baseline": dict(width=32), "resnet18": dict(width=32, stem="small")}
VARIANTS = {"torch-fp32": ("torch", "fp32"), "torch-auto": ("torch", "auto"), "onnxruntime": ("onnxruntime", "fp32")}


def cpu_description() -> str:
    return f"{runtime.cpu_model()}, {torch.get_num_threads()} threads"


def scorer(model: torch.nn.Module, variant: str, tta: bool = False):
    backend, precision = VARIANTS[variant]
    sc = ClassifierScorer(model, output="softmax", precision=precision, batch_size=256)
    sc.compile = False  # one pass per call: a compile would not repay itself
    sc = tta_scorer(sc, "shift") if tta else sc
    sc.backend = backend
    if tta:
        sc.inner.backend = backend
    return sc


def jobs(model: torch.nn.Module, faces: torch.Tensor, args) -> dict[str, tuple[Callable[[str], Any], float, str]]:
    """{job: (run(variant), units per call, unit)}."""
    lime_faces, occ_faces = faces[:args.lime_faces], faces[:args.occlusion_faces]
    gallery = generate_synthfer(args.gallery, seed=1)
    net = PreLogits(model)

    def embed(variant: str):
        backend, precision = VARIANTS[variant]
        return embed_dataset(model.embed, gallery, 512, "cpu", precision=precision, network=net, backend=backend)

    return {
        "LIME, 1,000 samples": (lambda v: lime_explanation(scorer(model, v), lime_faces, None, num_samples=1000, seed=0),
                                len(lime_faces), "s / face"),
        "occlusion (8 px, stride 4)": (lambda v: occlusion_saliency(scorer(model, v), occ_faces, None),
                                       len(occ_faces), "s / face"),
        "evaluation with TTA": (lambda v: scorer(model, v, tta=True).scores(faces), len(faces), "faces / s"),
        "gallery embedding": (embed, len(gallery), "faces / s"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest of each variant is kept")
    ap.add_argument("--faces", type=int, default=1000, help="faces evaluated with TTA")
    ap.add_argument("--lime-faces", type=int, default=2)
    ap.add_argument("--occlusion-faces", type=int, default=8)
    ap.add_argument("--gallery", type=int, default=5000, help="faces embedded")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("FERMETRIC_CACHE", os.path.join(os.getcwd(), ".bench-cache"))
    faces = generate_synthfer(args.faces, seed=0).float_images()
    print(f"CPU: {cpu_description()}; torch-auto resolves to {runtime.resolve_precision('auto', 'cpu')}")
    results: list[dict[str, Any]] = []
    for name in args.models:
        model = create_model(name, num_classes=7, **MODELS[name]).eval()
        for job, (run, units, unit) in jobs(model, faces, args).items():
            for v in VARIANTS:  # warm-up: the graph's export and first session, caches
                run(v)
            best = {v: float("inf") for v in VARIANTS}
            for _ in range(args.rounds):
                for v in VARIANTS:
                    t0 = time.perf_counter()
                    run(v)
                    best[v] = min(best[v], time.perf_counter() - t0)
            value = {v: (best[v] / units if unit.startswith("s") else units / best[v]) for v in VARIANTS}
            speed = {v: best[v] / best["onnxruntime"] for v in ("torch-fp32", "torch-auto")}
            results.append({"model": name, "job": job, "unit": unit, **value,
                            "onnxruntime_speedup_over_fp32": speed["torch-fp32"],
                            "onnxruntime_speedup_over_auto": speed["torch-auto"]})
            print(f"{name:9s} {job:28s} " + "  ".join(f"{v} {value[v]:8.3f}" for v in VARIANTS) + f" {unit}; "
                  f"onnxruntime {speed['torch-fp32']:.2f}x torch-fp32, {speed['torch-auto']:.2f}x torch-auto", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": cpu_description(), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
