"""Every command's work as one Python call. The CLI (fermetric.cli) parses options, calls one of
these and prints what it returns; Python users call the same functions:

    import fermetric
    metrics, paths = fermetric.evaluate_run("runs/clf", split="test", tta=True)
    rep, paths = fermetric.knn_eval("runs/tri", split="val")

Each function loads the run(s) through the run reader (fermetric.runs), calls the library
(evaluation, retrieval, analysis, plotting) and writes its files. A function that writes into a
run directory holds that run's lock (fermetric.utils.runlock) while it works, so it is refused,
not interleaved, while a training or another command writes the same run. Training is `train`
(fermetric.training.launch: the train-* commands), a study `run_study` (fermetric.study).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from fermetric.errors import ConfigError, FermetricError
from fermetric.utils.outputs import final_path, staged_outputs
import fermetric.run_layout as layout

PathLike = str | Path
log = logging.getLogger("fermetric.api")


@contextlib.contextmanager
def _writing(run: PathLike, *, only_caches: bool = False, hint: str = "give --out elsewhere"):
    """Hold the run's lock while a command writes into the run directory. A pretrained model's
    name (fermetric.zoo) writes into its cache folder, which is locked instead.

    `only_caches`: the command's output goes elsewhere and it keeps nothing in the run but caches
    (embeddings, calibrations, written atomically). Such a command also reads a run that another
    process holds (a training in progress), and a read-only run (an archive, a read-only mount),
    whose caches it then skips. A command that must write into a read-only run is refused in one
    line, with `hint`.
    """
    from fermetric.utils.runlock import RunLockedError, RunReadOnlyError, run_lock

    run_dir = Path(run)
    if not run_dir.is_dir():
        from fermetric.zoo import zoo_run_dir

        run_dir = zoo_run_dir(str(run))
        run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
        except RunReadOnlyError as e:
            if not only_caches:
                raise RunReadOnlyError(f"{e}, and this command writes into it; {hint}") from None
            log.info("%s: reading it without the lock; caches are not kept", e)
        except RunLockedError:
            if not only_caches:
                raise
        yield


def _claim(out: Optional[PathLike], kind: str, *legacy: str) -> None:
    """Refuse an --out folder that holds what fermetric did not write, before any work (the
    default folders inside a run need no check: out None). Nothing is created here, so a command
    that fails leaves no folder; the files this output always has (`legacy` glob patterns) mark
    the folder as ours for the next command (fermetric.utils.outputs)."""
    from fermetric.utils.outputs import output_dir

    if out is not None:
        output_dir(out, kind, legacy=legacy, create=False)


def _load(run: PathLike, device: Optional[str], precision: Optional[str], data: Optional[PathLike] = None):
    """The run (or zoo entry); `data`: its own data at another path (Run.use_data), e.g. the
    fer2013.csv a pretrained model was trained on."""
    from fermetric.zoo.load import open_run as load_run

    r = load_run(run, device=device or "auto", precision=precision or "auto")
    if data is not None:
        r.use_data(str(data))
    return r


def _data_tag(data: str) -> str:
    """A file-name-safe tag of a data source ("/data/CK+" -> "CK")."""
    import re

    tag = re.sub(r"[^A-Za-z0-9]+", "_", Path(str(data)).name.split(".")[0]).strip("_")
    return tag or "data"


def evaluate_run(run: PathLike, split: Optional[str] = None, tta: bool | str = False, out: Optional[PathLike] = None,
                 device: Optional[str] = "auto", precision: Optional[str] = "auto", data: Optional[str] = None,
                 class_map: Optional[Sequence[str] | dict] = None,
                 exclude_duplicates: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric evaluate`: accuracy, macro-F1, per-class scores and the confusion matrix of a run
    on a split, written as <split>[_tta|_tencrop].json / .md / _confusion.png / _reliability.png into `out` (default
    RUN/eval).

    Args:
        split: val (default), test or train of the run's data; with `data`, a split of that data
            or None for all its images.
        tta: False, True / "shift" (5 crops shifted by 2 px x flip) or "tencrop" (centre and
            corner crops at the run's training crop padding x flip); classifiers only.
        data: another data set (folder, fer2013.csv, synth) to evaluate on: its classes are
            matched to the model's by name and emotion (fermetric.evaluation.crossdata), images
            of classes the model does not know are counted and left out; the mapping is stored
            under metrics["cross_data"] and the files are named <data>_<split>[...].
        class_map: with `data`: "DATA_CLASS=MODEL_CLASS" entries (or a dict; "" / None leaves a
            class out) that override the matching by name.
        exclude_duplicates: leave out the evaluated faces that have an exact or near duplicate in
            the run's training split (fermetric.data.audit; FER2013 PublicTest has 418 such faces);
            the files are named <...>_nodup and metrics["excluded_duplicates"] counts them.

    Returns:
        (metrics, paths written).
    """
    from fermetric.scoring.tta import resolve_tta

    mode = resolve_tta(tta)
    if class_map and data is None:
        raise ConfigError("--class-map maps the classes of another data set; give that data set with --data")
    suffix = {None: "", "shift": "_tta", "tencrop": "_tencrop"}[mode]
    tta_text = {None: "", "shift": " + TTA", "tencrop": " + ten-crop TTA"}[mode]
    _claim(out, "evaluation", "*_confusion.png", "*.md")
    with _writing(run, only_caches=out is not None):  # out elsewhere: nothing but caches goes into RUN
        from fermetric.evaluation.metrics import write_metrics

        r = _load(run, device, precision)
        if data is None:
            from fermetric.evaluation.crossdata import evaluate_split

            split = split or "val"
            m = evaluate_split(r, split, mode, exclude_duplicates)
            name, where = f"{split}{suffix}", split
        else:
            from fermetric.evaluation.crossdata import evaluate_on_data

            m = evaluate_on_data(r, data, split, mode, class_map,
                                 exclude_duplicates_of=_training_faces(r, data) if exclude_duplicates else None)
            split = m["cross_data"]["split"]
            name, where = f"{_data_tag(data)}_{split}{suffix}", f"{m['cross_data']['data']} ({split})"
        if exclude_duplicates:
            name, where = f"{name}_nodup", f"{where}, faces with a duplicate in training left out"
        m.update({"run": str(r.path), "split": split, "tta": mode or False, "kind": r.kind, "checkpoint": r.fingerprint})
        dest = Path(out) if out else r.path / "eval"
        with staged_outputs(dest) as tmp:  # all files or none: an earlier evaluation stays whole on failure
            paths = [final_path(p, tmp, dest) for p in write_metrics(tmp, name, m, f"{r.cfg.model.name} on {where}{tta_text}")]
    return m, paths


def _training_faces(r, data: str):
    """The run's training split, for --exclude-duplicates: the run's own data, else (a pretrained
    model whose training file is not here) the Training split of `data` when it is a file of the
    name the model was trained on."""
    from fermetric.errors import DataError

    try:
        return r.load_data()["train"]
    except DataError:
        trained_on = Path(str(r.cfg.data.source or "")).name
        if trained_on and Path(str(data)).name == trained_on:
            from fermetric.data import load_data

            return load_data(str(data), r.cfg.data, seed=r.cfg.seed)["train"]
        raise


def ensemble(runs: Sequence[PathLike], split: str = "val", tta: bool | str = False, out: PathLike = "ensemble",
             device: Optional[str] = "auto", precision: Optional[str] = "auto",
             data: Optional[PathLike] = None) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric ensemble`: soft vote and val-accuracy-weighted vote of runs on a split
    (fermetric.evaluation.ensemble.ensemble_report), written as OUT/ensemble_<split>.json / .md.

    Returns:
        (results, paths written); `ensemble_markdown(results)` is the table.
    """
    from fermetric.evaluation.ensemble import ensemble_report, write_ensemble

    _claim(out, "ensemble", "ensemble_*.json")
    members = [_load(r, device, precision, data) for r in runs]
    results = ensemble_report(members, split, tta)
    with staged_outputs(out) as tmp:
        paths = [final_path(p, tmp, out) for p in write_ensemble(results, tmp)]
    return results, paths


def build_index(run: PathLike, index_type: str = "flat", k: Optional[int] = None, weighting: Optional[str] = None,
                device: Optional[str] = "auto", data: Optional[PathLike] = None):
    """`fermetric build-index`: the run's FAISS kNN index over its train split, saved as RUN/index
    and stamped with the checkpoint it came from.

    Returns:
        (the Run, the fitted KNNClassifier).
    """
    from fermetric.retrieval.index import build_run_index

    with _writing(run, hint="the index is kept in the run: copy the run somewhere writable"):
        r = _load(run, device, None, data)
        return r, build_run_index(r, index_type, k=k, weighting=weighting)


def knn_eval(run: PathLike, split: Optional[str] = None, k: Optional[int] = None, weighting: Optional[str] = None,
             out: Optional[PathLike] = None, device: Optional[str] = "auto", data: Optional[str] = None,
             class_map: Optional[Sequence[str] | dict] = None) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric knn-eval`: the kNN report of a split (default val) against the train gallery
    (Run.knn_report), written into `out` (default RUN/knn_<split>); with `data`, of another data
    set's images, classes mapped as in `evaluate_run` (default RUN/knn_<data>_<split>).

    Returns:
        (report, paths written).
    """
    from fermetric.evaluation.knn_report import run_knn_report, write_knn_report

    if class_map and data is None:
        raise ConfigError("--class-map maps the classes of another data set; give that data set with --data")
    _claim(out, "kNN report", "knn_report.json")
    with _writing(run, only_caches=out is not None):  # the embedding cache goes into RUN whatever `out` is
        r = _load(run, device, None)
        if data is None:
            split = split or "val"
            rep = run_knn_report(r, split, k=k, weighting=weighting)
            folder = f"knn_{split}"
        else:
            from fermetric.evaluation.crossdata import knn_report_on_data

            rep = knn_report_on_data(r, data, split, class_map, k=k, weighting=weighting)
            folder = f"knn_{_data_tag(data)}_{rep['split']}"
        dest = Path(out) if out else r.path / folder
        with staged_outputs(dest) as tmp:
            return rep, [final_path(p, tmp, dest) for p in write_knn_report(rep, tmp)]


def similarity(run: PathLike, image_a: PathLike, image_b: PathLike, device: Optional[str] = "auto",
               data: Optional[PathLike] = None, detect: str = "auto", maps: Optional[PathLike] = None):
    """`fermetric similarity`: the probability that two face images show the same expression
    (fermetric.retrieval.similarity.same_expression_probability); the images are read and checked
    before the run is opened. The calibration (and the val embeddings it needs) is kept in RUN.
    `maps`: also draw which regions of each face make them similar (gradient x input of the
    cosine, fermetric.analysis.similarity_maps) into that PNG.

    Returns:
        A SimilarityResult (cosine, probability, calibration).
    """
    from fermetric.inference.faces import one_face
    from fermetric.retrieval.similarity import same_expression_probability

    # a missing or bad file, or one without a face, is refused before any model work
    crops = [one_face(image, detect) for image in (image_a, image_b)]
    if maps is not None:
        from fermetric.utils.outputs import is_fermetric_png, replaceable_file

        replaceable_file(maps, "figure", is_fermetric_png, option="--maps")
    with _writing(run, only_caches=True):  # the calibration is cached in RUN
        r = _load(run, device, None, data)
        res = same_expression_probability(r, crops[0], crops[1], str(image_a), str(image_b))
        if maps is not None:
            import torch

            from fermetric.analysis.similarity_maps import similarity_maps
            from fermetric.plotting import save_figure
            from fermetric.plotting.similarity import plot_similarity_pair

            x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32) / 255.0).to(r.device)
            r.model.eval()
            embed = r.model.embed if hasattr(r.model, "embed") else r.model
            map_a, map_b, _ = similarity_maps(embed, x[:1], x[1:])
            fig = plot_similarity_pair(crops[0], crops[1], map_a[0], map_b[0],
                                       title=f"same expression: p = {res.probability:.2f} (cosine {res.cosine:.3f}), "
                                             f"{r.cfg.model.name} ({r.kind})")
            res.maps = str(save_figure(fig, maps))
        return res


def calibrate(run: PathLike, split: str = "val", tta: bool | str = False, device: Optional[str] = "auto",
              precision: Optional[str] = "auto", data: Optional[PathLike] = None) -> dict[str, Any]:
    """`fermetric calibrate`: fit a classifier run's temperature on `split` and keep it in
    RUN/temperature.json (fermetric.evaluation.calibration.calibrate_run); `predict` then uses it."""
    from fermetric.evaluation.calibration import calibrate_run
    from fermetric.scoring.tta import resolve_tta

    with _writing(run, hint="the temperature is kept in the run: copy the run somewhere writable"):
        return calibrate_run(_load(run, device, precision, data), split, resolve_tta(tta))


def embed_plot(run: PathLike, split: str = "val", method: str = "umap", out: Optional[PathLike] = None,
               device: Optional[str] = "auto", data: Optional[PathLike] = None) -> tuple[np.ndarray, list[Path]]:
    """`fermetric embed-plot`: a 2-D projection (umap, pca, tsne) of a split's embeddings (pre-logit
    features for classifiers), coloured by class: RUN/embeddings/<split>_<method>_2d.npy and the
    figure `out` (default RUN/figures/embed_<method>_<split>.png).

    Returns:
        ((N, 2) coordinates, [figure, coordinates file, the split's cached embeddings]).
    """
    from fermetric.retrieval.embeddings import split_embeddings

    from fermetric.analysis.projection import project_2d
    from fermetric.plotting import save_figure
    from fermetric.plotting.embeddings import plot_embedding_2d
    from fermetric.utils.io import save_npy
    from fermetric.utils.outputs import is_fermetric_png, replaceable_file
    from fermetric.utils.runlock import known_read_only

    if out is not None:  # before any work: never over a file that is not our figure
        replaceable_file(out, "figure", is_fermetric_png)
    with _writing(run, only_caches=out is not None):
        r = _load(run, device, None, data)
        emb, labels = split_embeddings(r, split)
        coords = project_2d(emb, method=method, seed=r.cfg.seed)
        # beside the figure when the run is read-only (an archived run still gets its plot)
        coords_dir = Path(out).parent if known_read_only(r.path) else layout.path_of(r.path, layout.EMBEDDINGS)
        coords_path = save_npy(coords_dir / f"{split}_{method}_2d.npy", coords)
        fig = plot_embedding_2d(coords, labels, r.class_names,
                                title=f"{r.cfg.model.name} ({r.kind}) {split} embeddings, {method.upper()}")
        path = save_figure(fig, Path(out) if out else r.path / "figures" / f"embed_{method}_{split}.png")
    return coords, [path, coords_path, layout.path_of(r.path, layout.EMBEDDINGS) / f"{split}.npy"]


def _explain_images(sc, images, methods: Sequence[str], out_dir: Path, tag: str, *, class_names: Sequence[str],
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
                progress: bool = False, mask_fraction: float = 0.1, data: Optional[PathLike] = None) -> dict[str, Any]:
    """`fermetric explain`: maps of `method` ("all": every method the scorer supports) for
    `per_class` seeded images of each class of a split, as OUT/<method>_<split>.npy and .png
    (image / map / overlay / mask rows; the data's evidence masks, SynthFER's, outlined in
    green) and OUT/explain_<split>.json (default OUT: RUN/explain). Method "neighbours": the
    kNN decision by example (the nearest training faces, their labels, similarities and vote
    weights; `_explain_neighbours`).

    Args:
        scorer: "auto", "classifier", "prototype" or "knn" (see Run.scorer).
        target: "predicted" (explain the predicted class) or "label" (the true one).
        progress: a progress bar over the methods.
        data: the run's own data at another path (same classes; Run.use_data), e.g. the
            fer2013.csv a pretrained model was trained on.
        mask_fraction: the mask column shows this share of the pixels with the largest
            attributions (`top_attribution_mask`); for LIME, its top regions (as lime's
            get_image_and_mask).

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
    _claim(out, "explanations", "explain_*.json")
    with _writing(run, only_caches=out is not None):
        r = _load(run, device, precision, data)
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
            written, done, skipped = _explain_images(
                sc, images, methods, tmp, split, class_names=r.class_names, labels=labels[idx], predictions=preds,
                target=tgt, evidence=evidence, seed=seed, mask_fraction=mask_fraction, progress=progress,
                title=f"{r.cfg.model.name} ({r.kind}, {type(sc).__name__}) · {split}")
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
    from fermetric.retrieval.index import run_knn

    import torch

    from fermetric.analysis.methods import pick_per_class
    from fermetric.plotting import save_figure
    from fermetric.plotting.neighbours import plot_neighbours
    from fermetric.retrieval.neighbours import nearest_examples
    from fermetric.utils.io import write_json

    _claim(out, "explanations", "explain_*.json")
    with _writing(run, only_caches=out is not None):
        r = _load(run, device, precision, data)
        ds = r.load_data()[split]
        labels = ds.labels.numpy()
        idx = pick_per_class(labels, per_class, len(r.class_names), seed=seed)
        queries = ds.subset(torch.as_tensor(idx))
        nb = nearest_examples(r, queries)
        gallery = None
        try:  # a pretrained model ships its gallery's embeddings, not its faces: those need --data
            gallery = r.load_data()["train"].images[:, 0].numpy()
        except FermetricError as e:
            log.warning("the training faces are not here (%s): the neighbours are drawn as labels only", e)
        knn = run_knn(r)
        fig = plot_neighbours(queries.images[:, 0].numpy(), labels[idx], nb, gallery, r.class_names,
                              title=f"{r.cfg.model.name} ({r.kind}): the nearest training faces of {split} faces "
                                    f"(k = {knn.k}, {knn.weighting} weighting; s similarity, w vote weight)")
        dest = Path(out) if out else r.path / "explain"
        record = {"run": str(r.path), "split": split, "scorer": "knn", "target": "predicted", "indices": idx,
                  "labels": labels[idx], "predictions": nb.predicted, "methods": ["neighbours"], "skipped": [],
                  "k": knn.k, "weighting": knn.weighting, "neighbours": nb.to_json(r.class_names)}
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

    _claim(out, "filter figures", "filters_*.png")

    with _writing(run, only_caches=out is not None):
        r = _load(run, device, precision, data)
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
    (Run.scorers: classifier; prototype and, with `knn`, kNN for embedding runs): deletion /
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

    _claim(out, "faithfulness table", "explain_eval.json")

    chosen = [m.strip() for m in methods if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(bad)}; valid: {', '.join(METHODS)}")
    loaded = [_load(r, device, precision, data) for r in runs]
    if len({r.class_names for r in loaded}) != 1:
        raise FermetricError("the runs disagree on class names; compare runs trained on the same data")
    with _writing(loaded[0].path, only_caches=out is not None):
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


def data_info(source: Optional[str] = None, out: PathLike = "fermetric-data-info", per_class: int = 8,
              split: Optional[str] = None, cfg: Any = None) -> tuple[str, list[str], list[Path]]:
    """`fermetric data info`: images per split and class, facts about the data, and sample grids
    of each class, written as OUT/summary.txt, OUT/samples.png (and samples_masks.png where the
    data has evidence masks).

    Args:
        source: fer2013.csv(.gz), an image folder or "synth"; overrides cfg.data.source.
        split: split the samples come from (default: train, else the first).
        cfg: a RunConfig for the data options (default: the defaults).

    Returns:
        (count table, fact lines, paths written).
    """
    from fermetric.config import RunConfig
    from fermetric.data import load_data
    from fermetric.data.info import describe, info_lines
    from fermetric.plotting import save_figure
    from fermetric.plotting.samples import sample_grid
    from fermetric.utils.io import atomic_write_text

    cfg = cfg if cfg is not None else RunConfig()
    _claim(out, "data summary", "summary.txt")
    t0 = time.perf_counter()
    splits = load_data(source if source is not None else cfg.data.source, cfg.data, seed=cfg.seed)
    splits.info.setdefault("load_seconds", round(time.perf_counter() - t0, 3))
    table, facts = describe(splits), info_lines(splits)
    name = split or ("train" if "train" in splits else next(iter(splits.splits)))
    ds = splits[name]
    dest = Path(out)
    variants = [("samples.png", False)] + ([("samples_masks.png", True)] if ds.masks is not None else [])
    with staged_outputs(dest) as tmp:
        atomic_write_text(tmp / "summary.txt", "\n".join([table, *facts]) + "\n")
        for fname, masks in variants:
            fig = sample_grid(ds, per_class=per_class, seed=cfg.seed, masks=masks,
                              title=f"{splits.name} [{name}]" + (" + evidence masks" if masks else ""))
            save_figure(fig, tmp / fname)
    return table, facts, [dest / "summary.txt", *[dest / fname for fname, _ in variants]]


def data_audit(source: Optional[str] = None, out: PathLike = "fermetric-data-audit", radius: Optional[int] = None,
               cfg: Any = None, examples: int = 32) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric data audit`: exact and near-duplicate faces within and across the splits,
    duplicates with other labels, blank images (fermetric.data.audit), written as OUT/audit.json
    (every pair), OUT/audit.md (the tables) and OUT/duplicates.png (`examples` pairs across
    splits: up to half with conflicting labels, the rest with the same label).

    Returns:
        (report, paths written).
    """
    from fermetric.config import RunConfig
    from fermetric.data import load_data
    from fermetric.data.audit import NEAR_RADIUS, audit_markdown, audit_splits
    from fermetric.plotting import save_figure
    from fermetric.plotting.audit import plot_duplicate_pairs
    from fermetric.utils.io import atomic_write_text, write_json

    cfg = cfg if cfg is not None else RunConfig()
    _claim(out, "data audit", "audit.json")
    splits = load_data(source if source is not None else cfg.data.source, cfg.data, seed=cfg.seed)
    report = audit_splits(splits, NEAR_RADIUS if radius is None else radius)
    report["data"] = splits.name
    across = [d for d in report["duplicates"] if d["a"] != d["b"]] or report["duplicates"]
    conflicting = [d for d in across if d["label_a"] != d["label_b"]][:examples // 2]
    shown = conflicting + [d for d in across if d["label_a"] == d["label_b"]][:examples - len(conflicting)]
    dest = Path(out)
    names = ["audit.json", "audit.md"] + (["duplicates.png"] if shown else [])
    with staged_outputs(dest) as tmp:
        write_json(tmp / "audit.json", report)
        atomic_write_text(tmp / "audit.md", audit_markdown(report, splits.class_names))
        if shown:
            fig = plot_duplicate_pairs(shown, splits, title=f"{splits.name}: duplicate pairs (radius {report['radius']}), "
                                                             "other labels in red")
            save_figure(fig, tmp / "duplicates.png")
    return report, [dest / n for n in names]


def predict(run: PathLike, images: Iterable[PathLike], out: Optional[PathLike] = "predictions", *,
            detect: str = "auto", min_face: int = 40, margin: Optional[float] = None, saliency: bool = False,
            tta: bool | str | None = "default", device: Optional[str] = "auto", progress=None):
    """`fermetric predict`: the expression of every face in photos (files or folders), with
    OUT/predictions.json and an annotated image per photo (out=None: write nothing).

    Returns:
        A fermetric.inference.BatchResult (failed inputs are in its `errors`, not raised).
        tta "default" is fermetric.inference.predictor.DEFAULT_TTA; None: one pass per face.
    """
    from fermetric.inference import FacePredictor, predict_images
    from fermetric.inference.faces import DEFAULT_MARGIN
    from fermetric.inference.predictor import DEFAULT_TTA

    predictor = FacePredictor.from_run_dir(run, device=device, tta=DEFAULT_TTA if tta == "default" else tta)
    margin = DEFAULT_MARGIN if margin is None else margin
    return predict_images(predictor, images, out, detect=detect, min_face=min_face, margin=margin,
                          saliency=saliency, progress=progress)


DEMO_METHODS = ("saliency", "occlusion", "gradcam", "lime")  # the rows `fermetric demo` draws for each run


def demo_pretrained(model: Optional[str] = None, images: Sequence[PathLike] = (), out: PathLike = "fermetric-demo-pretrained",
                    *, synth_per_class: int = 1, bundled: bool = True, methods: Sequence[str] = DEMO_METHODS,
                    detect: str = "auto", min_face: int = 40, margin: Optional[float] = None, seed: int = 0,
                    lime_samples: int = 1000, device: Optional[str] = "auto", precision: Optional[str] = "auto",
                    progress: bool = False) -> dict[str, Any]:
    """`fermetric demo --pretrained`: the explanation half of the demo on a pretrained model of the
    zoo, with no training and no data set: predict and explain the bundled real faces
    (fermetric.data.bundled), `synth_per_class` SynthFER faces of each class (their evidence masks
    outlined) and the faces found in `images` (the user's photos, detected as `predict` does),
    then write the HTML report.

    Writes into `out` (which must not exist or be empty): predict/ (predictions.json and the
    annotated photos: the bundled photo and the user's), explain/ (<method>_<group>.png / .npy and
    explain_<group>.json for the groups bundled, synthfer, photos), demo.json and report.html.

    Args:
        model: a zoo entry's name (default: the default classifier, fermetric.zoo.DEFAULT_CLASSIFIER).
        images: photos or folders of photos; inputs without a face are listed in the result's
            "predict_errors", not raised.
        methods: explanation methods (fermetric.analysis.METHODS), default the demo's four.
        lime_samples: perturbed images LIME scores per face (explain's default 1000).
        detect, min_face, margin: face detection as in `predict`.

    Returns:
        The demo.json record (model, card numbers, per group: faces, known and predicted
        classes, methods done and skipped) plus "paths": every figure and the report.

    Raises:
        ZooError: the model (or the default one) is not installed.
        ConfigError: `out` already holds files, no face to explain, or an unknown method.
    """
    from fermetric.scoring.run import run_scorer

    import torch

    from fermetric.analysis import METHODS
    from fermetric.data.bundled import bundled_faces
    from fermetric.data.classes import FER2013_CLASSES
    from fermetric.data.synthetic import generate_synthfer
    from fermetric.evaluation.crossdata import map_classes
    from fermetric.inference import FacePredictor, predict_images
    from fermetric.inference.faces import DEFAULT_MARGIN
    from fermetric.inference.predictor import DEFAULT_TTA
    from fermetric.report import build_report
    from fermetric.utils.checks import check_int
    from fermetric.utils.io import write_json
    from fermetric.zoo import DEFAULT_CLASSIFIER, ZooError, get_entry, is_pretrained_name, load_pretrained

    synth_per_class = check_int("synth_per_class", synth_per_class, 0, error=ConfigError)
    lime_samples = check_int("lime_samples", lime_samples, 10, error=ConfigError)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"methods: unknown or none ({', '.join(bad) or 'empty'}); valid: {', '.join(METHODS)}")
    name = model or DEFAULT_CLASSIFIER
    if model is None and not is_pretrained_name(name):
        raise ZooError(f"the default pretrained model {name!r} is not installed (fermetric models --pretrained lists "
                       "what is); give one with --model NAME, or run fermetric demo without --pretrained to train "
                       "the demo's models on SynthFER")
    entry = get_entry(name)  # an unknown --model: the known names, before anything is written
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"--out {out_dir} already exists and is not empty; remove it or choose another --out")
    if not bundled and synth_per_class == 0 and not images:
        raise ConfigError("nothing to explain: no bundled face, no SynthFER face and no image given")
    created = not out_dir.exists()
    try:
        t0 = time.time()
        r = load_pretrained(name, device=device or "auto", precision=precision or "auto")
        sc = run_scorer(r, "auto")
        # bundled and SynthFER labels are FER2013 ids: matched to the model's classes by name and emotion
        fer_to_model = map_classes(FER2013_CLASSES, r.class_names).index
        faces = bundled_faces() if bundled else []
        predictor = FacePredictor(r, tta=DEFAULT_TTA)  # the predictions `fermetric predict` gives
        batch = predict_images(predictor, [f.photo for f in faces] + [Path(p) for p in images], out_dir / "predict",
                               detect=detect, min_face=min_face, margin=DEFAULT_MARGIN if margin is None else margin)
        bundled_photos = {f.photo for f in faces}
        groups: dict[str, tuple[torch.Tensor, np.ndarray, list[str], Optional[np.ndarray]]] = {}
        if faces:
            groups["bundled"] = (torch.tensor(np.stack([f.image() for f in faces]))[:, None],
                                 fer_to_model[[f.label_id for f in faces]], [f.name for f in faces], None)
        if synth_per_class:
            fer_ids = np.flatnonzero(fer_to_model >= 0)  # SynthFER draws FER2013 classes; only those the model knows
            ds = generate_synthfer(len(fer_ids) * synth_per_class, seed=seed, labels=np.repeat(fer_ids, synth_per_class))
            groups["synthfer"] = (ds.images, fer_to_model[ds.labels.numpy()],
                                  [f"SynthFER {i}" for i in range(len(ds))], ds.masks.numpy())
        user = [(res, i, f) for res in batch.images if res.path not in bundled_photos for i, f in enumerate(res.faces)]
        if user:
            groups["photos"] = (torch.tensor(np.stack([f.crop for _, _, f in user]))[:, None],
                                np.full(len(user), -1), [f"{res.path.name} face {i + 1}" for res, i, _ in user], None)
        if not groups:
            raise ConfigError("no face to explain: none of the images gave a face ("
                              + "; ".join(f"{p}: {msg}" for p, msg in batch.errors) + ")")
        record: dict[str, Any] = {
            "model": name, "kind": r.kind, "architecture": r.cfg.model.name, "class_names": list(r.class_names),
            "card": {k: entry.card.get(k) for k in ("data", "split", "test", "sha256")}, "scorer": type(sc).__name__,
            "methods": list(methods), "seed": seed, "groups": {},
            "predict_errors": [{"path": str(p), "error": msg} for p, msg in batch.errors],
        }
        written: list[Path] = []
        for group, (uint8_images, labels, names, evidence) in groups.items():
            # the probabilities `predict` gives (softmax, or an embedding model's kNN votes); the maps
            # explain that predicted class
            proba = predictor.predict_proba(uint8_images.numpy())
            preds = proba.argmax(1)
            x = uint8_images.float().div_(255.0)
            rows = [f"{n}\ntrue: {r.class_names[y] if y >= 0 else '?'} · pred: {r.class_names[p]} {proba[i, p]:.0%}"
                    for i, (n, y, p) in enumerate(zip(names, labels, preds))]
            paths, done, skipped = _explain_images(
                sc, x, list(methods), out_dir / "explain", group, class_names=r.class_names, labels=None, predictions=preds,
                target=preds, evidence=evidence, seed=seed, row_titles=rows, lime_samples=lime_samples, progress=progress,
                title=f"{name} ({r.kind}, {r.cfg.model.name}) · {group}")
            written += paths
            record["groups"][group] = {
                "faces": [{"name": n, "label": r.class_names[y] if y >= 0 else None, "prediction": r.class_names[p],
                           "probability": float(proba[i, p])} for i, (n, y, p) in enumerate(zip(names, labels, preds))],
                "methods": done, "skipped": skipped}
            write_json(out_dir / "explain" / f"explain_{group}.json", {"model": name, "group": group, **record["groups"][group]})
        record["seconds"] = round(time.time() - t0, 1)
        write_json(out_dir / "demo.json", record)
        report = build_report([], out_dir / "report.html", title=f"fermetric demo: pretrained model {name}",
                              extra_dirs=[out_dir], preface_html=_demo_preface(record))
        return {**record, "paths": [*written, *(res.annotated for res in batch.images if res.annotated), report]}
    except BaseException:
        # bad input (no face in the photos) or a failure part-way: no half-written demo is left
        shutil.rmtree(out_dir, ignore_errors=True)
        if not created:  # it was an empty folder: leave it so
            out_dir.mkdir(parents=True, exist_ok=True)
        raise


def _demo_preface(record: dict[str, Any]) -> str:
    """The pretrained demo's model card and prediction table, as HTML for the report."""
    from fermetric.report.html import e, pct

    t = record["card"].get("test") or {}
    rows = "".join(
        f"<tr><td>{e(group)}</td><td>{e(f['name'])}</td><td>{e(f['label'] or '?')}</td><td>{e(f['prediction'])}</td>"
        f"<td>{pct(f['probability'])}</td></tr>"
        for group, g in record["groups"].items() for f in g["faces"])
    return (f"<section><h2>Pretrained model {e(record['model'])}</h2>"
            f"<p>{e(record['kind'])} ({e(record['architecture'])}), trained on {e(record['card'].get('data'))}; "
            f"accuracy {pct(t.get('accuracy'))}, macro-F1 {pct(t.get('macro_f1'))} on {e(record['card'].get('split'))} "
            f"(model card). Explained with {e(record['scorer'])}: {e(', '.join(record['methods']))}.</p>"
            "<table><tr><th>group</th><th>face</th><th>known class</th><th>predicted</th><th>probability</th></tr>"
            f"{rows}</table></section>")


def write_report(runs: Sequence[PathLike], out: PathLike = "report.html", title: Optional[str] = None,
           extras: Sequence[PathLike] = ()) -> Path:
    """`fermetric report`: one self-contained HTML page of runs (fermetric.report.build_report)."""
    from fermetric.report import build_report

    return build_report(runs, out, title=title, extra_dirs=extras)


def train(family: str, **options):
    """`fermetric train-classifier / train-siamese / train-triplet`: train a run of `family`
    ("classifier", "siamese", "triplet") with the commands' options (model=, data=, config_path=,
    overrides=["train.epochs=5"], out=, resume=, ...); returns the TrainResult
    (fermetric.training.launch.train)."""
    from fermetric.training.launch import train as _train

    return _train(family, **options)


__all__ = ["train", "similarity", "evaluate_run", "demo_pretrained", "ensemble", "build_index", "knn_eval", "embed_plot", "explain_run", "filters_run",
           "explain_eval", "data_info", "predict", "write_report"]
