"""`explain`, `filters` and `explain-eval`: the explanations of runs and their faithfulness."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fermetric.errors import ConfigError, FermetricError
from fermetric.api.common import PathLike, claim_output, open_for_command, writing_to
from fermetric.utils.outputs import final_path, staged_outputs


def explain_images(sc, images, methods: Sequence[str], out_dir: Path, tag: str, *, class_names: Sequence[str],
                    labels: Optional[np.ndarray], predictions: np.ndarray, target: Optional[np.ndarray] = None,
                    evidence: Optional[np.ndarray] = None, seed: int = 0, mask_fraction: float = 0.1,
                    row_titles: Optional[Sequence[str]] = None, title: str = "", lime_samples: int = 1000,
                    progress: bool = False) -> tuple[list[Path], list[str], list[str]]:
    """The explanation figures of `images` (N, 1, 48, 48) float: for each method, the maps as
    OUT/<method>_<tag>.npy and the image / map / overlay / mask rows as OUT/<method>_<tag>.png.
    A method the scorer cannot run (a gradient method on a black-box scorer) is skipped with why
    when several are asked for, raised when it is the only one.

    Returns:
        (figures written, methods done, "method: why" of those skipped).
    """
    from tqdm.auto import tqdm

    from fermetric.analysis import explain, lime_explanation, top_attribution_mask
    from fermetric.plotting import save_figure
    from fermetric.plotting.explanations import plot_explanations

    out_dir.mkdir(parents=True, exist_ok=True)
    written, done, skipped = [], [], []
    for m in tqdm(methods, desc="methods", disable=not progress or len(methods) == 1):
        try:
            if m == "lime":  # its top regions are the mask, as in lime's own figures
                res = lime_explanation(sc, images, target, seed=seed, num_samples=lime_samples)
                maps, mask, mask_title = res.weights, res.top_mask, "LIME top regions"
            else:
                options = {"seed": seed} if m == "smoothgrad" else {}
                maps = explain(sc, images, m, target=target, **options)
                mask, mask_title = top_attribution_mask(maps, mask_fraction), f"top {mask_fraction:.0%}"
        except FermetricError as exc:  # a gradient method on a black-box scorer: say so, go on
            if len(methods) == 1:
                raise
            skipped.append(f"{m}: {exc}")
            continue
        np.save(out_dir / f"{m}_{tag}.npy", maps)
        done.append(m)
        fig = plot_explanations(images, maps, labels=labels, predictions=predictions, class_names=class_names,
                                method=m, masks=mask, mask_title=mask_title, contours=evidence, row_titles=row_titles,
                                title=f"{m} · {title}" if title else m)
        written.append(save_figure(fig, out_dir / f"{m}_{tag}.png"))
    return written, done, skipped


def explain_run(run: PathLike, method: str = "saliency", split: str = "val", per_class: int = 2, scorer: str = "auto",
                target: str = "predicted", out: Optional[PathLike] = None, seed: int = 0,
                device: Optional[str] = "auto", precision: Optional[str] = "auto",
                progress: bool = False, mask_fraction: float = 0.1, data: Optional[PathLike] = None,
                lime_samples: int = 1000) -> dict[str, Any]:
    """`fermetric explain`: maps of `method` ("all": every method the scorer supports) for
    `per_class` seeded images of each class of a split, as OUT/<method>_<split>.npy and .png
    (image / map / overlay / mask rows; the data's evidence masks, SynthFER's, outlined in
    green) and OUT/explain_<split>.json (default OUT: RUN/explain). Method "neighbours": the
    kNN decision by example (the nearest training faces, their labels, similarities and vote
    weights; `_explain_neighbours`).

    Args:
        scorer: "auto", "classifier", "prototype" or "knn" (see fermetric.scoring.run_scorer).
        target: "predicted" (explain the predicted class) or "label" (the true one).
        progress: a progress bar over the methods.
        data: the run's own data at another path (same classes; Run.use_data), e.g. the
            fer2013.csv a pretrained model was trained on.
        mask_fraction: the mask column shows this share of the pixels with the largest
            attributions (`top_attribution_mask`); for LIME, its top regions (as lime's
            get_image_and_mask).
        lime_samples: perturbed images LIME scores per face.

    Returns:
        The JSON record (indices, labels, predictions, methods done, skipped with why) plus
        "paths": the figures written.
    """
    from fermetric.scoring.run import run_scorer

    import torch

    from fermetric.analysis import METHODS
    from fermetric.analysis.methods import pick_per_class
    from fermetric.utils.io import write_json

    if (scorer == "knn" or method == "neighbours") and split == "train":
        # the kNN gallery is the train split: each image would vote for itself
        raise ConfigError("--split train: the knn scorer votes with the train split as its gallery, so train images "
                          "would match themselves; explain --split val or test, or use --scorer prototype")
    if method == "neighbours":
        return _explain_neighbours(run, split, per_class, out, seed, device, precision, data)
    claim_output(out, "explanations", "explain_*.json")
    with writing_to(run, only_caches=out is not None):
        r = open_for_command(run, device, precision, data)
        sc = run_scorer(r, scorer)
        ds = r.load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(r.class_names), seed=seed)
        images = ds.float_images(torch.as_tensor(idx))
        preds = sc.scores(images).argmax(1).cpu().numpy()
        tgt = labels[idx] if target == "label" else None
        evidence = None if ds.masks is None else ds.masks[torch.as_tensor(idx)].numpy()
        dest = Path(out) if out else r.path / "explain"
        methods = list(METHODS) if method == "all" else [method]
        with staged_outputs(dest) as tmp:
            written, done, skipped = explain_images(
                sc, images, methods, tmp, split, class_names=r.class_names, labels=labels[idx], predictions=preds,
                target=tgt, evidence=evidence, seed=seed, mask_fraction=mask_fraction, progress=progress,
                title=f"{r.cfg.model.name} ({r.kind}, {type(sc).__name__}) · {split}", lime_samples=lime_samples)
            record = {"run": str(r.path), "split": split, "scorer": type(sc).__name__, "target": target,
                      "indices": idx, "labels": labels[idx], "predictions": preds, "methods": done, "skipped": skipped}
            write_json(tmp / f"explain_{split}.json", record)
            written = [final_path(w, tmp, dest) for w in written]
    return {**record, "paths": written}


def _explain_neighbours(run: PathLike, split: str, per_class: int, out: Optional[PathLike], seed: int,
                        device: Optional[str], precision: Optional[str], data: Optional[PathLike]) -> dict[str, Any]:
    """`explain --method neighbours`: the k nearest training faces behind each kNN decision, as
    OUT/neighbours_<split>.png (a row per face) and OUT/explain_<split>.json (every neighbour's
    train index, label, similarity and vote weight)."""
    import torch

    from fermetric.analysis.methods import pick_per_class
    from fermetric.analysis.neighbours import nearest_examples, neighbours_figure
    from fermetric.plotting import save_figure
    from fermetric.utils.io import write_json

    claim_output(out, "explanations", "explain_*.json")
    with writing_to(run, only_caches=out is not None):
        r = open_for_command(run, device, precision, data)
        ds = r.load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(r.class_names), seed=seed)
        queries = ds.subset(torch.as_tensor(idx))
        nb = nearest_examples(r, queries)
        fig = neighbours_figure(r, queries, nb, split)
        dest = Path(out) if out else r.path / "explain"
        record = {"run": str(r.path), "split": split, "scorer": "knn", "target": "predicted", "indices": idx,
                  "labels": labels[idx], "predictions": nb.predicted, "methods": ["neighbours"], "skipped": [],
                  "k": nb.k, "weighting": nb.weighting, "neighbours": nb.to_json(r.class_names)}
        with staged_outputs(dest) as tmp:
            save_figure(fig, tmp / f"neighbours_{split}.png")
            write_json(tmp / f"explain_{split}.json", record)
        paths = [dest / f"neighbours_{split}.png"]
    return {**record, "paths": paths}


def filters_run(run: PathLike, layer: Optional[str] = None, channels: Optional[Sequence[int]] = None, num: int = 16,
                steps: int = 100, image_index: int = 0, out: Optional[PathLike] = None,
                device: Optional[str] = "auto", precision: Optional[str] = "auto",
                data: Optional[PathLike] = None) -> dict[str, Any]:
    """`fermetric filters`: images that excite a conv layer's filters (regularised gradient
    ascent) and that layer's outputs for val image `image_index`, as OUT/filters_<layer>.png and
    OUT/activations_<layer>.png (default OUT: RUN/figures; layer default: the Grad-CAM layer).

    Returns:
        {"layer": the layer's name, "filters": how many were visualised, "paths": [filters figure,
        activations figure]}.
    """
    import torch

    from fermetric.analysis import layer_activations, visualize_filters
    from fermetric.plotting import save_figure
    from fermetric.plotting.filters import plot_activation_grid, plot_filter_grid

    claim_output(out, "filter figures", "filters_*.png")

    with writing_to(run, only_caches=out is not None):
        r = open_for_command(run, device, precision, data)
        ds = r.load_data()["val"]
        if not 0 <= image_index < len(ds):
            raise ConfigError(f"--image-index must lie in 0..{len(ds) - 1}; got {image_index}")
        chans = list(channels) if channels else None
        layer = layer or getattr(r.model, "gradcam_layer", None)
        fi = visualize_filters(r.model, layer, chans, num_channels=num, steps=steps, seed=r.cfg.seed, precision=r.precision)
        safe = str(layer).replace(".", "_")
        dest = Path(out) if out else r.path / "figures"
        img = ds.float_images(torch.tensor([image_index]))
        acts = layer_activations(r.model, img, layer, channels=chans, k=num)
        with staged_outputs(dest) as tmp:
            save_figure(plot_filter_grid(fi, layer=layer, title=f"{r.cfg.model.name}: images that excite {layer}"),
                        tmp / f"filters_{safe}.png")
            save_figure(plot_activation_grid(acts, image=img[0, 0].numpy(), layer=layer,
                                             title=f"{layer} outputs for val image {image_index}"),
                        tmp / f"activations_{safe}.png")
        p1, p2 = dest / f"filters_{safe}.png", dest / f"activations_{safe}.png"
    return {"layer": layer, "filters": len(getattr(fi, "channels", ())) or num, "paths": [p1, p2]}


def explain_eval(runs: Sequence[PathLike], split: str = "val", per_class: int = 4,
                 methods: Sequence[str] = ("saliency", "smoothgrad", "occlusion", "gradcam", "lime"),
                 lime_samples: int = 300, knn: bool = True, out: Optional[PathLike] = None, seed: int = 0,
                 device: Optional[str] = "auto", precision: Optional[str] = "auto",
                 progress: bool = False, data: Optional[PathLike] = None) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric explain-eval`: how faithful each explanation method is on each run's scorers
    (fermetric.scoring.run_scorers: classifier; prototype and, with `knn`, kNN for embedding runs): deletion /
    insertion AUC, evidence-mask mass and pointing game (SynthFER), randomisation check. Written as
    OUT/explain_eval.json and .md (default OUT: FIRST_RUN/explain_eval).

    Returns:
        (result with "rows", paths written); `table_to_markdown(result["rows"])` is the table.
    """
    from fermetric.scoring.run import run_scorers

    import torch

    from fermetric.analysis import METHODS, evaluate_explanations, table_to_markdown
    from fermetric.analysis.methods import pick_per_class
    from fermetric.utils.io import atomic_write_text, write_json

    claim_output(out, "faithfulness table", "explain_eval.json")

    chosen = [m.strip() for m in methods if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(bad)}; valid: {', '.join(METHODS)}")
    loaded = [open_for_command(r, device, precision, data) for r in runs]
    if len({r.class_names for r in loaded}) != 1:
        raise FermetricError("the runs disagree on class names; compare runs trained on the same data")
    with writing_to(loaded[0].path, only_caches=out is not None):
        scorers: dict[str, Any] = {}
        for r in loaded:
            scorers.update(run_scorers(r, knn=knn))
        ds = loaded[0].load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(loaded[0].class_names), seed=seed)
        images = ds.float_images(torch.as_tensor(idx))
        masks = None if ds.masks is None else ds.masks[torch.as_tensor(idx)].numpy()
        rows = evaluate_explanations(scorers, images, labels[idx], masks, chosen, seed=seed,
                                     method_options={"lime": {"num_samples": lime_samples}}, progress=progress)
        dest = Path(out) if out else loaded[0].path / "explain_eval"
        result = {"runs": [str(r.path) for r in loaded], "split": split, "n_images": int(len(idx)),
                  "masks": masks is not None, "rows": rows}
        with staged_outputs(dest) as tmp:
            write_json(tmp / "explain_eval.json", result)
            atomic_write_text(tmp / "explain_eval.md", table_to_markdown(rows))
        paths = [dest / "explain_eval.json", dest / "explain_eval.md"]
    return result, paths
