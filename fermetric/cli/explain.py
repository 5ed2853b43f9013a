"""`fermetric explain`, `fermetric filters`, `fermetric explain-eval`: the explanation toolkit on
runs of either family (classifiers through their softmax, embedding models through prototype
or kNN scorers)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
import numpy as np
import torch

from fermetric.analysis.methods import pick_per_class
from fermetric.cli.options import OutPath, RUN, SEED, device_option, lock_run, precision_option

METHOD_CHOICES = ["saliency", "smoothgrad", "occlusion", "gradcam", "lime", "all"]
SCORER_CHOICES = ["auto", "classifier", "prototype", "knn"]


def register(main: click.Group) -> None:
    @main.command("explain")
    @click.argument("run", type=RUN)
    @click.option("--method", type=click.Choice(METHOD_CHOICES), default="saliency", show_default=True)
    @click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
    @click.option("--per-class", type=click.IntRange(min=1), default=2, show_default=True, help="Images explained per class.")
    @click.option("--scorer", type=click.Choice(SCORER_CHOICES), default="auto", show_default=True,
                  help="Embedding runs: prototype (differentiable) or knn (black box: occlusion, lime).")
    @click.option("--target", type=click.Choice(["predicted", "label"]), default="predicted", show_default=True)
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/explain.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @device_option
    @precision_option
    @click.pass_context
    def explain_cmd(ctx, run, method, split, per_class, scorer, target, out, seed, device, precision=None):
        """Explain a run's predictions: a row per image of image / map / overlay, per method."""
        from tqdm.auto import tqdm

        from fermetric.analysis import METHODS, explain
        from fermetric.plotting import save_figure
        from fermetric.plotting.explanations import plot_explanations
        from fermetric.runs import load_run
        from fermetric.utils.io import write_json

        if out is None:
            lock_run(run)
        r = load_run(run, device=device or "auto", precision=precision or "auto")
        if scorer == "knn" and split == "train":
            # the kNN gallery is the train split: each image would vote for itself
            raise click.BadParameter("the knn scorer votes with the train split as its gallery, so train images would "
                                     "match themselves; explain --split val or test, or use --scorer prototype",
                                     param_hint="--split")
        sc = r.scorer(scorer)
        ds = r.load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(r.class_names), seed=seed)
        images = ds.float_images(torch.as_tensor(idx))
        preds = sc.scores(images).argmax(1).cpu().numpy()
        tgt = labels[idx] if target == "label" else None
        out_dir = Path(out) if out else r.path / "explain"
        out_dir.mkdir(parents=True, exist_ok=True)
        methods = list(METHODS) if method == "all" else [method]
        written, done, skipped = [], [], []
        for m in tqdm(methods, desc="methods", disable=bool(ctx.obj.get("quiet")) or len(methods) == 1):
            try:
                maps = explain(sc, images, m, target=tgt, seed=seed) if m in ("smoothgrad", "lime") else explain(sc, images, m, target=tgt)
            except Exception as exc:  # a gradient method on a black-box scorer: say so, go on
                from fermetric.errors import FermetricError

                if not isinstance(exc, FermetricError) or len(methods) == 1:
                    raise
                skipped.append(f"{m}: {exc}")
                continue
            np.save(out_dir / f"{m}_{split}.npy", maps)
            done.append(m)
            fig = plot_explanations(images, maps, labels=labels[idx], predictions=preds, class_names=r.class_names,
                                    method=m, title=f"{m} · {r.cfg.model.name} ({r.kind}, {type(sc).__name__}) · {split}")
            written.append(save_figure(fig, out_dir / f"{m}_{split}.png"))
        write_json(out_dir / f"explain_{split}.json", {
            "run": str(r.path), "split": split, "scorer": type(sc).__name__, "target": target,
            "indices": idx, "labels": labels[idx], "predictions": preds, "methods": done, "skipped": skipped,
        })
        for s in skipped:
            click.echo(f"skipped {s}", err=True)
        click.echo(f"explained {len(idx)} {split} images of {r.name} with {', '.join(done) or 'no method'}")
        for p in written:
            click.echo(f"  {p}")

    @main.command("filters")
    @click.argument("run", type=RUN)
    @click.option("--layer", default=None, help="Conv layer name (default: the Grad-CAM layer). A bad name lists the valid ones.")
    @click.option("--channels", default=None, help="Comma-separated channel ids (default: the first --num).")
    @click.option("--num", type=click.IntRange(min=1), default=16, show_default=True)
    @click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Gradient-ascent steps.")
    @click.option("--image-index", type=click.IntRange(min=0), default=0, show_default=True, help="val image whose layer outputs are shown.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/figures.")
    @device_option
    @precision_option
    def filters_cmd(run, layer, channels, num, steps, image_index, out, device, precision=None):
        """Filter visualisation by regularised gradient ascent, and the layer's outputs for one image."""
        from fermetric.analysis import layer_activations, visualize_filters
        from fermetric.plotting import save_figure
        from fermetric.plotting.filters import plot_activation_grid, plot_filter_grid
        from fermetric.runs import load_run

        if out is None:
            lock_run(run)
        r = load_run(run, device=device or "auto", precision=precision or "auto")
        chans = [int(c) for c in channels.split(",")] if channels else None
        layer = layer or getattr(r.model, "gradcam_layer", None)
        fi = visualize_filters(r.model, layer, chans, num_channels=num, steps=steps, seed=r.cfg.seed, precision=r.precision)
        safe = str(layer).replace(".", "_")
        out_dir = Path(out) if out else r.path / "figures"
        p1 = save_figure(plot_filter_grid(fi, layer=layer, title=f"{r.cfg.model.name}: images that excite {layer}"),
                       out_dir / f"filters_{safe}.png")
        ds = r.load_data()["val"]
        if not 0 <= image_index < len(ds):
            raise click.BadParameter(f"--image-index must lie in 0..{len(ds) - 1}")
        img = ds.float_images(torch.tensor([image_index]))
        acts = layer_activations(r.model, img, layer, channels=chans, k=num)
        p2 = save_figure(plot_activation_grid(acts, image=img[0, 0].numpy(), layer=layer,
                                            title=f"{layer} outputs for val image {image_index}"),
                       out_dir / f"activations_{safe}.png")
        click.echo(f"{layer}: {len(fi.channels) if hasattr(fi, 'channels') else num} filters")
        click.echo(f"  {p1}\n  {p2}")

    @main.command("explain-eval")
    @click.argument("runs", nargs=-1, required=True, type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
    @click.option("--per-class", type=click.IntRange(min=1), default=4, show_default=True, help="Images per class evaluated.")
    @click.option("--methods", default="saliency,smoothgrad,occlusion,gradcam,lime", show_default=True)
    @click.option("--lime-samples", type=click.IntRange(min=10), default=300, show_default=True)
    @click.option("--no-knn", is_flag=True, help="Skip the black-box kNN scorer of embedding runs.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: FIRST_RUN/explain_eval.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @device_option
    @precision_option
    @click.pass_context
    def explain_eval_cmd(ctx, runs, split, per_class, methods, lime_samples, no_knn, out, seed, device, precision=None):
        """How faithful is each explanation? One table of methods x models: deletion / insertion AUC,
        evidence-mask mass and pointing game (SynthFER), model-randomisation rank correlation."""
        from fermetric.analysis import METHODS, evaluate_explanations, table_to_markdown
        from fermetric.runs import load_run
        from fermetric.utils.io import atomic_write_text, write_json

        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        bad = [m for m in chosen if m not in METHODS]
        if bad:
            raise click.BadParameter(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(METHODS)}", param_hint="--methods")
        loaded = [load_run(r, device=device or "auto", precision=precision or "auto") for r in runs]
        if len({r.class_names for r in loaded}) != 1:
            raise click.UsageError("the runs disagree on class names; compare runs trained on the same data")
        scorers = {}
        for r in loaded:
            label = f"{r.name} ({r.cfg.model.name})"
            if r.kind == "classifier":
                scorers[label] = r.scorer("classifier")
            else:
                scorers[f"{label} prototype"] = r.scorer("prototype")
                if not no_knn:
                    scorers[f"{label} kNN"] = r.scorer("knn")
        ds = loaded[0].load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(loaded[0].class_names), seed=seed)
        images = ds.float_images(torch.as_tensor(idx))
        masks = None if ds.masks is None else ds.masks[torch.as_tensor(idx)].numpy()
        quiet = bool(ctx.obj.get("quiet"))
        rows = evaluate_explanations(
            scorers, images, labels[idx], masks, chosen, seed=seed,
            method_options={"lime": {"num_samples": lime_samples}},
            progress=not quiet,
        )
        out_dir = Path(out) if out else loaded[0].path / "explain_eval"
        out_dir.mkdir(parents=True, exist_ok=True)
        result = {"runs": [str(r.path) for r in loaded], "split": split, "n_images": int(len(idx)),
                  "masks": masks is not None, "rows": rows}
        p1 = write_json(out_dir / "explain_eval.json", result)
        md = table_to_markdown(rows)
        p2 = atomic_write_text(out_dir / "explain_eval.md", md)
        click.echo(md)
        click.echo(f"  {p1}\n  {p2}")
