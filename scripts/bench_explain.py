#!/usr/bin/env python
"""Benchmark fermetric's explanation methods (CPU by default).

Each fermetric timing runs twice in one process, side by side: "fp32-eager" (fp32, contiguous
weights: fermetric before issue 11) and "auto" (what fermetric picks on this machine: precision
auto, channels_last weights; see fermetric.utils.runtime); the table at the end gives seconds
per image of each and the speed-up. captum and plain lime run in fp32 only.

1. Occlusion: fermetric vs captum.attr.Occlusion on the same model, images, patch and stride:
   the largest absolute difference of the maps and the speed ratio.
2. LIME with 1,000 samples: seconds per image, split into model time and everything else, for
   fermetric and for plain lime (its own sampling loop, default batch size 10).
3. Saliency and Grad-CAM: images per second in batches (captum's Saliency / LayerGradCam
   alongside when installed).

captum is only needed here (pip install captum); it is not a fermetric dependency.

    python scripts/bench_explain.py                        # defaults below, prints a table
    python scripts/bench_explain.py --threads 2 --lime-images 2 --json bench.json

Models are untrained (timings and map agreement do not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Callable

import numpy as np
import torch

from fermetric.analysis import gradcam, gradient_saliency, lime_explanation, occlusion_saliency
from fermetric.scoring import ClassifierScorer
from fermetric.analysis.lime_explainer import segment_image
from fermetric.data.synthetic import generate_synthfer
from fermetric.models import create_model
from fermetric.utils import runtime


CPU_TIMES: dict[str, float] = {}


def best_of(fn: Callable[[], object], repeats: int, key: str = "") -> tuple[float, object]:
    """Fastest wall time of `repeats` runs (the least disturbed by other jobs), and the last result.

    The CPU time of that run is kept in CPU_TIMES[key]: on a shared machine wall time includes
    waiting for a core, CPU time does not (with one torch thread it estimates an idle machine's
    wall time).
    """
    best, out = float("inf"), None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best = wall
            if key:
                CPU_TIMES[key] = time.process_time() - cpu
    return best, out


def make_model(name: str, stem: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"stem": stem} if name.startswith("resnet") else {}
    return create_model(name, num_classes=7, **kw).eval()


def make_scorer(model, batch_size, precision):
    scorer = ClassifierScorer(model, batch_size=batch_size, precision=precision)
    if precision == "fp32":  # "fp32-eager": fermetric before issue 11
        scorer.compile = False
    return scorer


def bench_occlusion(model, x, t, patch, stride, batch_size, repeats, precision="fp32", captum=True) -> dict:
    scorer = make_scorer(model, batch_size, precision)
    secs, ours = best_of(lambda: occlusion_saliency(scorer, x, t, patch_size=patch, stride=stride, baseline=0.0), repeats, "occ")
    row = {"images": len(x), "patch": patch, "stride": stride, "batch_size": batch_size,
           "fermetric_s_per_image": secs / len(x), "fermetric_cpu_s_per_image": CPU_TIMES["occ"] / len(x)}
    if not captum:
        return row
    try:
        from captum.attr import Occlusion
    except ImportError:
        row["captum"] = "not installed (pip install captum)"
        return row
    occ = Occlusion(model)

    def run_captum():
        with torch.no_grad():
            return occ.attribute(x, sliding_window_shapes=(1, patch, patch), strides=(1, stride, stride),
                                 baselines=0.0, target=t, perturbations_per_eval=batch_size)

    c_secs, theirs = best_of(run_captum, repeats, "occ_captum")
    theirs = theirs[:, 0].numpy()
    row.update(captum_s_per_image=c_secs / len(x), captum_cpu_s_per_image=CPU_TIMES["occ_captum"] / len(x),
               speed_ratio_captum_over_fermetric=c_secs / secs,
               cpu_ratio_captum_over_fermetric=CPU_TIMES["occ_captum"] / CPU_TIMES["occ"],
               max_abs_diff=float(np.abs(ours - theirs).max()), max_abs_value=float(np.abs(theirs).max()))
    return row


def bench_lime(model, x, t, samples, batch_size, repeats, precision="fp32", plain=True) -> dict:
    scorer = make_scorer(model, batch_size, precision)
    model_time = [0.0]
    forward = scorer.forward

    def timed_forward(xb):
        start = time.perf_counter()
        out = forward(xb)
        model_time[0] += time.perf_counter() - start
        return out

    if scorer.compile is False:  # (a timer inside a compiled forward would break its graph)
        scorer.forward = timed_forward  # instance attribute: times only the model's share
    # warm-up: one whole image (under compile=auto the scorer compiles after 30 s of eager forwards,
    # so the timed images below run compiled; the warm-up's seconds, compile included, are reported)
    w0 = time.perf_counter()
    lime_explanation(scorer, x[:1], t[:1], num_samples=samples, batch_size=batch_size)
    warmup = time.perf_counter() - w0
    model_time[0] = 0.0
    secs, res = best_of(lambda: lime_explanation(scorer, x, t, num_samples=samples, batch_size=batch_size), 1, "lime")
    n_regions = [int(s.max()) + 1 for s in res.segments]
    row = {"images": len(x), "num_samples": samples, "batch_size": batch_size, "regions": n_regions,
           "fermetric_s_per_image": secs / len(x), "fermetric_cpu_s_per_image": CPU_TIMES["lime"] / len(x),
           "fermetric_model_s_per_image": model_time[0] / len(x) if scorer.compile is False else None,
           "warmup_image_s": warmup,
           "compiled": "_compiled" in scorer.__dict__,
           "fermetric_other_s_per_image": (secs - model_time[0]) / len(x) if scorer.compile is False else None}
    # LIME's own cost (sampling, segmentation, ridge fit), measured with a near-free model
    cheap = ClassifierScorer(torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(36, 7)).eval(),
                             batch_size=batch_size)
    o_secs, _ = best_of(lambda: lime_explanation(cheap, x, t, num_samples=samples, batch_size=batch_size), repeats)
    row["fermetric_overhead_trivial_model_s_per_image"] = o_secs / len(x)
    if not plain:
        return row
    # plain lime: same segmentation and classifier, lime's own sampling loop (tqdm bar silenced)
    from lime import lime_image

    def classifier_fn(rgb):
        return scorer.scores(torch.from_numpy(np.ascontiguousarray(rgb[..., 0], dtype=np.float32))[:, None], batch_size).numpy()

    def run_plain(bs: int):
        for i in range(len(x)):
            seg = segment_image(x[i, 0].numpy().astype(np.float64))
            lime_image.LimeImageExplainer(random_state=0).explain_instance(
                np.repeat(x[i, 0].numpy()[..., None].astype(np.float64), 3, axis=2), classifier_fn, labels=(int(t[i]),),
                hide_color=0.0, top_labels=None, num_samples=samples, batch_size=bs, segmentation_fn=lambda _i, s=seg: s)

    real_tqdm = lime_image.tqdm
    lime_image.tqdm = lambda it, **kw: it
    try:
        for bs, key in ((10, "plain_lime_batch10"), (batch_size, f"plain_lime_batch{batch_size}")):
            model_time[0] = 0.0
            p_secs, _ = best_of(lambda: run_plain(bs), 1)
            row[f"{key}_s_per_image"] = p_secs / len(x)
            row[f"{key}_other_s_per_image"] = (p_secs - model_time[0]) / len(x)
    finally:
        lime_image.tqdm = real_tqdm
    return row


def bench_gradients(model, x, t, batch_size, repeats, precision="fp32", captum=True) -> dict:
    scorer = make_scorer(model, batch_size, precision)
    row = {"images": len(x), "batch_size": batch_size}
    secs, _ = best_of(lambda: gradient_saliency(scorer, x, t), repeats, "sal")
    row["saliency_img_per_s"] = len(x) / secs
    row["saliency_img_per_cpu_s"] = len(x) / CPU_TIMES["sal"]
    secs, _ = best_of(lambda: gradcam(scorer, x, t), repeats, "cam")
    row["gradcam_img_per_s"] = len(x) / secs
    row["gradcam_img_per_cpu_s"] = len(x) / CPU_TIMES["cam"]
    secs, _ = best_of(lambda: gradient_saliency(scorer, x[: max(1, len(x) // 8)], t[: max(1, len(x) // 8)], smooth_samples=25),
                      repeats, "sg")
    row["smoothgrad25_img_per_s"] = max(1, len(x) // 8) / secs
    if not captum:
        return row
    try:
        from captum.attr import LayerGradCam, Saliency
    except ImportError:
        return row
    sal = Saliency(model)
    secs, _ = best_of(lambda: torch.cat([sal.attribute(x[i:i + batch_size], target=t[i:i + batch_size], abs=True)
                                         for i in range(0, len(x), batch_size)]), repeats)
    row["captum_saliency_img_per_s"] = len(x) / secs
    layer = model.get_submodule(model.gradcam_layer)
    lgc = LayerGradCam(model, layer)
    secs, _ = best_of(lambda: torch.cat([lgc.attribute(x[i:i + batch_size], target=t[i:i + batch_size], relu_attributions=True)
                                         for i in range(0, len(x), batch_size)]), repeats)
    row["captum_layergradcam_img_per_s"] = len(x) / secs
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="registered model name")
    ap.add_argument("--stem", default="small", help="resnet stem: small (default of the zoo), pool, imagenet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1)")
    ap.add_argument("--occlusion-images", type=int, default=4)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--lime-images", type=int, default=3)
    ap.add_argument("--lime-samples", type=int, default=1000)
    ap.add_argument("--grad-images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["occlusion", "lime", "gradients"])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--no-reference", action="store_true", help="skip captum and plain lime (fermetric variants only)")
    ap.add_argument("--variants", nargs="+", default=["fp32-eager", "auto"], choices=["fp32-eager", "auto", "bf16"],
                    help="fermetric runtimes to time side by side (bf16: forced, channels_last)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data = generate_synthfer(max(args.occlusion_images, args.lime_images, args.grad_images), seed=0)
    x, t = data.float_images(), data.labels
    result = {"model": args.model, "stem": args.stem if args.model.startswith("resnet") else None,
              "threads": args.threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "native_bf16": runtime.cpu_has_native_bf16(), "variants": {}}
    table = []
    for variant in args.variants:
        precision = {"fp32-eager": "fp32", "auto": "auto", "bf16": "bf16"}[variant]
        model = make_model(args.model, args.stem)
        if variant != "fp32-eager":
            runtime.prepare_for_inference(model, "cpu", runtime.resolve_precision(precision, "cpu"))
        first = variant == args.variants[0] and not args.no_reference  # captum / plain lime once, in the first variant
        res = result["variants"][variant] = {"precision": runtime.resolve_precision(precision, "cpu")}
        if "occlusion" not in args.skip:
            n = args.occlusion_images
            res["occlusion"] = bench_occlusion(model, x[:n], t[:n], args.patch, args.stride, args.batch_size, args.repeats,
                                               precision, captum=first)
            print(variant, "occlusion", json.dumps(res["occlusion"], indent=1), flush=True)
            table.append(("occlusion", variant, res["occlusion"]["fermetric_s_per_image"]))
        if "lime" not in args.skip:
            n = args.lime_images
            res["lime"] = bench_lime(model, x[:n], t[:n], args.lime_samples, args.batch_size, args.repeats, precision, plain=first)
            print(variant, "lime", json.dumps(res["lime"], indent=1), flush=True)
            table.append((f"lime {args.lime_samples}", variant, res["lime"]["fermetric_s_per_image"]))
        if "gradients" not in args.skip:
            n = args.grad_images
            res["gradients"] = g = bench_gradients(model, x[:n], t[:n], min(args.batch_size, 64), args.repeats, precision,
                                                   captum=first)
            print(variant, "gradients", json.dumps(g, indent=1), flush=True)
            table += [("saliency", variant, 1 / g["saliency_img_per_s"]), ("gradcam", variant, 1 / g["gradcam_img_per_s"]),
                      ("smoothgrad 25", variant, 1 / g["smoothgrad25_img_per_s"])]
    methods = list(dict.fromkeys(m for m, _, _ in table))
    secs = {(m, v): s for m, v, s in table}
    print(f"\n{args.model} (stem {args.stem}), {args.threads} threads, native bf16: {result['native_bf16']}; seconds per image")
    print(f"{'method':14s}" + "".join(f"{v + ' (' + result['variants'][v]['precision'] + ')':>22s}" for v in args.variants)
          + (f"{'speed-up':>10s}" if len(args.variants) > 1 else ""))
    for m in methods:
        vals = [secs.get((m, v), float("nan")) for v in args.variants]
        print(f"{m:14s}" + "".join(f"{v:22.4f}" for v in vals) + (f"{vals[0] / vals[-1]:9.2f}x" if len(vals) > 1 else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
