"""`build-index`, `knn-eval`, `similarity` and `embed-plot`: what a run's embeddings give."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

import fermetric.run_layout as layout
from fermetric.errors import ConfigError
from fermetric.api.common import PathLike, claim_output, data_tag, open_for_command, writing_to
from fermetric.utils.outputs import final_path, staged_outputs


def build_index(run: PathLike, index_type: str = "flat", k: Optional[int] = None, weighting: Optional[str] = None,
                device: Optional[str] = "auto", data: Optional[PathLike] = None):
    """`fermetric build-index`: the run's FAISS kNN index over its train split, saved as RUN/index
    and stamped with the checkpoint it came from.

    Returns:
        (the Run, the fitted KNNClassifier).
    """
    from fermetric.retrieval.index import build_run_index

    with writing_to(run, hint="the index is kept in the run: copy the run somewhere writable"):
        r = open_for_command(run, device, None, data)
        return r, build_run_index(r, index_type, k=k, weighting=weighting)


def knn_eval(run: PathLike, split: Optional[str] = None, k: Optional[int] = None, weighting: Optional[str] = None,
             out: Optional[PathLike] = None, device: Optional[str] = "auto", data: Optional[str] = None,
             class_map: Optional[Sequence[str] | dict] = None) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric knn-eval`: the kNN report of a split (default val) against the train gallery
    (fermetric.evaluation.knn_report.run_knn_report), written into `out` (default RUN/knn_<split>); with `data`, of another data
    set's images, classes mapped as in `evaluate_run` (default RUN/knn_<data>_<split>).

    Returns:
        (report, paths written).
    """
    from fermetric.evaluation.knn_report import run_knn_report, write_knn_report

    if class_map and data is None:
        raise ConfigError("--class-map maps the classes of another data set; give that data set with --data")
    claim_output(out, "kNN report", "knn_report.json")
    with writing_to(run, only_caches=out is not None):  # the embedding cache goes into RUN whatever `out` is
        r = open_for_command(run, device, None)
        if data is None:
            split = split or "val"
            rep = run_knn_report(r, split, k=k, weighting=weighting)
            folder = f"knn_{split}"
        else:
            from fermetric.evaluation.crossdata import knn_report_on_data

            rep = knn_report_on_data(r, data, split, class_map, k=k, weighting=weighting)
            folder = f"knn_{data_tag(data)}_{rep['split']}"
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
    with writing_to(run, only_caches=True):  # the calibration is cached in RUN
        r = open_for_command(run, device, None, data)
        res = same_expression_probability(r, crops[0], crops[1], str(image_a), str(image_b))
        if maps is not None:
            import torch

            from fermetric.analysis.similarity_maps import similarity_maps
            from fermetric.plotting import save_figure
            from fermetric.plotting.similarity import plot_similarity_pair
            from fermetric.retrieval.embeddings import embedding_function

            x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32) / 255.0).to(r.device)
            r.model.eval()
            map_a, map_b, _ = similarity_maps(embedding_function(r.model), x[:1], x[1:])
            fig = plot_similarity_pair(crops[0], crops[1], map_a[0], map_b[0],
                                       title=f"same expression: p = {res.probability:.2f} (cosine {res.cosine:.3f}), "
                                             f"{r.cfg.model.name} ({r.kind})")
            res.maps = str(save_figure(fig, maps))
        return res


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
    with writing_to(run, only_caches=out is not None):
        r = open_for_command(run, device, None, data)
        emb, labels = split_embeddings(r, split)
        coords = project_2d(emb, method=method, seed=r.cfg.seed)
        # beside the figure when the run is read-only (an archived run still gets its plot)
        coords_dir = Path(out).parent if known_read_only(r.path) else layout.path_of(r.path, layout.EMBEDDINGS)
        coords_path = save_npy(coords_dir / f"{split}_{method}_2d.npy", coords)
        fig = plot_embedding_2d(coords, labels, r.class_names,
                                title=f"{r.cfg.model.name} ({r.kind}) {split} embeddings, {method.upper()}")
        path = save_figure(fig, Path(out) if out else r.path / "figures" / f"embed_{method}_{split}.png")
    return coords, [path, coords_path, layout.path_of(r.path, layout.EMBEDDINGS) / f"{split}.npy"]
