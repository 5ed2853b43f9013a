"""The explanation figures of a study, for one seed's runs:

- per model, one face per emotion: image / map / mask for every method (the mask is the top
  `mask_fraction` of the attributions; SynthFER's evidence masks drawn as contours);
- per model, LIME per emotion with the top regions outlined, and LIME's view of one face for
  every class;
- per embedding model, its kNN decision on those faces by example (the nearest training faces);
- the filters of one layer (gradient ascent) and that layer's outputs for one face per emotion;
- the faithfulness table of every method on every model (deletion / insertion; mask mass and
  pointing game where the data has evidence masks, there also for the similarity maps of
  same-expression pairs and for the embedding models' kNN decisions by example, as vote maps).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

from fermetric.plotting import save_figure
from fermetric.study.config import StudyConfig
from fermetric.scoring.run import run_scorer, split_predictions


def _faces(run: Any, split: str, scorer: Any):
    """One face per emotion of `split` (correctly predicted where possible), their labels,
    predictions and evidence masks (None without)."""
    from fermetric.analysis import one_per_class

    ds = run.load_data()[split]
    preds = split_predictions(run, split)
    idx = one_per_class(ds.labels.numpy(), len(run.class_names), predictions=preds)
    images = ds.float_images(torch.as_tensor(idx))
    masks = None if ds.masks is None else ds.masks[torch.as_tensor(idx)].numpy()
    return idx, images, ds.labels.numpy()[idx], preds[idx], masks


def explain_study(study: StudyConfig, runs: dict[str, Any], everyone: dict[str, Any], out: Path, result: Any,
                  say: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """Figures of `runs` (explain.models), the filters of explain.filters.model and the
    faithfulness table of every model (`everyone`: one seed's runs).

    Returns:
        The faithfulness table as written to explain_eval.json (split, n_images, masks, rows),
        or None when explain.faithfulness is off.
    """
    from fermetric.analysis import (
        explain, layer_activations, lime_explanation, normalize_maps, supports, top_attribution_mask, visualize_filters,
    )
    from fermetric.plotting.explanations import plot_lime_all_classes, plot_lime_regions, plot_method_rows
    from fermetric.plotting.filters import plot_activation_rows, plot_filter_grid

    spec = study.explain
    fig_dir = out / "figures"
    seed = next(iter(everyone.values())).cfg.seed if everyone else 0
    for name, run in runs.items():
        say(f"== explain {name}")
        sc = run_scorer(run, "auto")
        idx, images, labels, preds, evidence = _faces(run, spec.split, sc)
        maps, masks, lime = {}, {}, None
        for method in spec.methods:
            if not supports(sc, method):
                continue
            if method == "lime":
                lime = lime_explanation(sc, images, None, num_samples=spec.lime_samples, seed=seed)
                m = lime.weights
            elif method == "smoothgrad":
                m = explain(sc, images, method, seed=seed)
            else:
                m = explain(sc, images, method)
            maps[method] = normalize_maps(m)
            masks[method] = top_attribution_mask(maps[method], spec.mask_fraction)
        kind = f"{run.cfg.model.name}, {run.kind}"
        if maps:
            result.figures.append(save_figure(plot_method_rows(
                images, maps, masks, labels=labels, predictions=preds, class_names=run.class_names, evidence=evidence,
                title=f"{name} ({kind}): image / map / top {spec.mask_fraction:.0%} mask per method, {spec.split}"),
                fig_dir / f"explain_{name}.png"))
        if lime is not None:
            result.figures.append(save_figure(plot_lime_regions(
                images, lime.weights, lime.top_mask, labels=labels, predictions=preds, class_names=run.class_names,
                targets=lime.targets, title=f"{name} ({kind}): LIME, top regions for the predicted class"),
                fig_dir / f"lime_{name}.png"))
            c = len(run.class_names)
            face = images[:1].expand(c, -1, -1, -1)
            every = lime_explanation(sc, face, list(range(c)), num_samples=spec.lime_samples, seed=seed)
            probs = sc.scores(images[:1])[0].numpy() if getattr(sc, "kind", "") == "classifier" else None
            result.figures.append(save_figure(plot_lime_all_classes(
                images[0], every.top_mask, run.class_names, probabilities=probs, label=int(labels[0]),
                title=f"{name}: LIME top regions of one face for every class"), fig_dir / f"lime_all_classes_{name}.png"))
        if spec.neighbours and run.kind == "embedding":
            result.figures.append(_neighbours_figure(name, run, spec.split, idx, fig_dir))
    f = spec.filters
    fname = f.model or next((n for n in everyone if study.models[n].family == "classifier"), None)
    if fname in everyone:
        run = everyone[fname]
        say(f"== filters of {fname}")
        layer = f.layer or getattr(run.model, "gradcam_layer", None)
        fi = visualize_filters(run.model, layer, num_channels=f.channels, steps=f.steps, seed=seed, precision=run.precision)
        safe = str(fi.layer).replace(".", "_")
        result.figures.append(save_figure(plot_filter_grid(
            fi, title=f"{fname} ({run.cfg.model.name}): images that excite {fi.layer} (gradient ascent)"),
            fig_dir / f"filters_{fname}_{safe}.png"))
        _, images, labels, _, _ = _faces(run, spec.split, None)
        acts = layer_activations(run.model, images, fi.layer, channels=fi.channels)
        result.figures.append(save_figure(plot_activation_rows(
            acts, images, row_titles=[run.class_names[int(c)] for c in labels],
            title=f"{fname}: {fi.layer} outputs for one face of each emotion"), fig_dir / f"activations_{fname}_{safe}.png"))
    if spec.faithfulness and everyone:
        return _faithfulness(study, everyone, out, result, say, seed)
    return None


def _neighbours_figure(name: str, run: Any, split: str, idx: Any, fig_dir: Path) -> Path:
    """The embedding model's kNN decision on the study's faces by example: the nearest training
    faces of each, with their labels, similarities and vote weights (fermetric.analysis.neighbours)."""
    from fermetric.analysis.neighbours import nearest_examples, neighbours_figure

    queries = run.load_data()[split].subset(torch.as_tensor(idx))
    fig = neighbours_figure(run, queries, nearest_examples(run, queries), split, f"{name} ({run.cfg.model.name})")
    return save_figure(fig, fig_dir / f"neighbours_{name}.png")


def _similarity_map_rows(runs: dict[str, Any], ds: Any, n_pairs: int, seed: int) -> list[dict[str, Any]]:
    """The similarity maps (gradient x input of the cosine of two embeddings; pre-logit features for
    classifiers) of `n_pairs` same-expression pairs of `ds`, scored against both faces' evidence
    masks: one row per model for the evidence table (fermetric.analysis.similarity_maps)."""
    from fermetric.analysis.similarity_maps import similarity_map_scores
    from fermetric.models.layers import eval_mode
    from fermetric.retrieval.embeddings import embedding_function

    images, labels, masks = ds.float_images(), ds.labels.numpy(), ds.masks.numpy()
    rows = []
    for name, run in runs.items():
        if run.kind not in ("classifier", "embedding"):
            continue
        with eval_mode(run.model):
            s = similarity_map_scores(embedding_function(run.model), images.to(run.device), labels, masks, n_pairs=n_pairs, seed=seed)
        rows.append({"model": f"{name} ({run.cfg.model.name})", "method": "similarity map",
                     "mask_mass_ratio": s["mask_mass"], "pointing_game": s["pointing_game"],
                     "note": f"{s['pairs']} same-expression pairs, both faces (pointing chance {s['pointing_chance']:.2f})"})
    return rows


def _vote_map_rows(runs: dict[str, Any], queries: Any) -> list[dict[str, Any]]:
    """The embedding models' kNN decisions by example, scored on the evidence masks: the pixels of
    each face that raise its vote for the predicted class (fermetric.analysis.neighbours.vote_maps)."""
    from fermetric.analysis.neighbours import vote_map_scores

    rows = []
    for name, run in runs.items():
        if run.kind != "embedding":
            continue
        s = vote_map_scores(run, queries)
        rows.append({"model": f"{name} ({run.cfg.model.name})", "method": "neighbours (vote map)",
                     "mask_mass_ratio": s["mask_mass"], "pointing_game": s["pointing_game"],
                     "note": f"{s['queries']} faces, k {s['k']}; {s['label_agreement']:.0%} of the neighbours share "
                             f"the face's label (pointing chance {s['pointing_chance']:.2f})"})
    return rows


def _faithfulness(study: StudyConfig, runs: dict[str, Any], out: Path, result: Any, say: Callable[[str], None],
                  seed: int) -> dict[str, Any]:
    from fermetric.analysis import evaluate_explanations, evidence_table_markdown, table_to_markdown
    from fermetric.analysis.methods import pick_per_class
    from fermetric.utils.io import atomic_write_text, write_json

    say("== faithfulness of the explanations")
    spec = study.explain
    first = next(iter(runs.values()))
    ds = first.load_data()[spec.split]
    labels = ds.labels.numpy()
    idx = pick_per_class(labels, spec.faithfulness_per_class, len(first.class_names), seed=seed)
    images = ds.float_images(torch.as_tensor(idx))
    masks = None if ds.masks is None else ds.masks[torch.as_tensor(idx)].numpy()
    scorers = {f"{n} ({r.cfg.model.name})": run_scorer(r, "auto") for n, r in runs.items()}
    rows = evaluate_explanations(scorers, images, labels[idx], masks, list(spec.methods), seed=seed,
                                 method_options={"lime": {"num_samples": spec.lime_samples}}, randomization=None)
    if masks is not None:
        rows += _similarity_map_rows(runs, ds, max(2 * len(idx), 28), seed)
        rows += _vote_map_rows(runs, ds.subset(torch.as_tensor(idx)))
    folder = out / "explain_eval"
    table = {"split": spec.split, "n_images": int(len(idx)), "masks": masks is not None, "rows": rows}
    write_json(folder / "explain_eval.json", table)
    text = table_to_markdown(rows)
    evidence = evidence_table_markdown(rows)
    if evidence:
        text += "\nMask mass ratio / pointing game against the evidence masks:\n\n" + evidence
    atomic_write_text(folder / "explain_eval.md", text)
    result.paths["explain_eval.md"] = folder / "explain_eval.md"
    return table
