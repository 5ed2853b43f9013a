"""`fermetric build-index RUN`, `fermetric knn-eval RUN`, `fermetric similarity RUN A B`, `fermetric embed-plot RUN`.

All of them work on embedding runs and on classifier runs (their pre-logit features), so both
families can be compared on one table. Embeddings are cached (fermetric.retrieval.embeddings:
RUN/embeddings/<split>.npy, keyed to the checkpoint) so every command reuses them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import OutPath, RUN, device_option, echo_class_mapping, other_data_options, run_data_option

INDEX_TYPES = ("flat", "ivf", "hnsw", "ivfpq")


def register(main: click.Group) -> None:
    @main.command("build-index")
    @click.argument("run", type=RUN)
    @click.option("--index", "index_type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
                  help="flat = exact inner product; ivf / hnsw / ivfpq for large galleries.")
    @click.option("-k", "--k", type=click.IntRange(min=1), default=None, help="Neighbours that vote (default: the run's metric.knn_k).")
    @click.option("--weighting", type=click.Choice(["distance", "majority"]), default=None)
    @run_data_option
    @device_option
    def build_index(run: str, index_type: str, k: Optional[int], weighting: Optional[str], data: Optional[str],
                    device: Optional[str]) -> None:
        """Build the run's FAISS kNN index over its train split (the gallery): RUN/index/."""
        from fermetric.api import build_index as run_build_index

        r, knn = run_build_index(run, index_type, k=k, weighting=weighting, device=device, data=data)
        click.echo(f"{index_type} index over {len(knn)} train embeddings of dimension {knn.dimension} (k={knn.k}, "
                   f"{knn.weighting}), from {r.checkpoint_path.name} sha256 {r.checkpoint_sha256[:12]}")
        click.echo(f"  {r.index_dir}")

    @main.command("knn-eval")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["val", "test", "all"]), default=None,
                  help="Default: val of the run's data; with --data, all images of that data.")
    @click.option("-k", "--k", type=click.IntRange(min=1), default=None, help="Neighbours for the headline metrics (default: the index's).")
    @click.option("--weighting", type=click.Choice(["distance", "majority"]), default=None,
                  help="Default: the index's.")
    @other_data_options("Query with another data set's images")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/knn_<split> (RUN/knn_<data>_<split>).")
    @device_option
    def knn_eval(run: str, split: Optional[str], k: Optional[int], weighting: Optional[str], data: Optional[str],
                 class_map: tuple[str, ...], out: Optional[str], device: Optional[str]) -> None:
        """kNN report of a split (or of another data set's images, --data) against the train
        gallery: accuracy, macro-F1, per-class scores, confusion, precision@1, R-precision, MAP@R,
        accuracy against k.

        Searches through RUN/index when build-index built one (refused when stale), else an
        exact index over the train embeddings: the index predict, evaluate and ensemble use."""
        from fermetric.api import knn_eval as run_knn_eval

        if split == "all" and data is None:
            raise click.BadParameter("'all' is for --data (all images of another data set); choose val or test",
                                     param_hint="--split")
        rep, paths = run_knn_eval(run, split, k=k, weighting=weighting, out=out, device=device, data=data,
                                  class_map=class_map)
        echo_class_mapping(rep)
        click.echo(f"{Path(rep['run']).name} kNN on {rep['split']}: accuracy {rep['accuracy'] * 100:.2f} %, macro-F1 {rep['macro_f1'] * 100:.2f} %, "
                   f"MAP@R {rep.get('mean_average_precision_at_r', float('nan')):.4f} "
                   f"(k={rep['k']}, {rep['weighting']}, {rep['index']} index: {rep['index_source']})")
        ver = rep.get("verification")
        if ver and ver.get("roc_auc") is not None:
            click.echo(f"  verification of {ver['n_pairs']} {split} pairs: ROC AUC {ver['roc_auc']:.4f}, accuracy "
                       f"{ver['accuracy'] * 100:.2f} % ({ver['same_share'] * 100:.1f} % same-expression pairs)")
        for p in paths:
            click.echo(f"  {p}")

    @main.command("similarity")
    @click.argument("run", type=RUN)
    @click.argument("image_a", type=click.Path())
    @click.argument("image_b", type=click.Path())
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.option("--no-detect", is_flag=True, help="Use each image whole as the face (default: as predict, "
                  "images up to 64 px are crops, larger ones are searched for their largest face).")
    @click.option("--maps", type=OutPath(dir_okay=False), default=None, metavar="PNG",
                  help="Also draw which regions of each face make them similar (gradient x input of the cosine).")
    @run_data_option
    @device_option
    def similarity(run: str, image_a: str, image_b: str, as_json: bool, no_detect: bool, maps: Optional[str],
                   data: Optional[str], device: Optional[str]) -> None:
        """Probability that two face images show the same expression (cosine of the run's
        embeddings, Platt-calibrated on val pairs and kept in RUN/similarity.json). Faces are
        found as predict finds them; an image without one is refused."""
        import json

        from fermetric.api import similarity as run_similarity

        res = run_similarity(run, image_a, image_b, device=device, data=data, detect="never" if no_detect else "auto",
                             maps=maps)
        if as_json:
            click.echo(json.dumps(res.to_dict(), indent=2))
            return
        cal = res.calibration
        click.echo(f"same expression: probability {res.probability:.3f} (cosine {res.cosine:.4f}; calibrated on "
                   f"{cal['n_pairs']} {cal['split']} pairs, {cal['same_share'] * 100:.1f} % of them the same expression)")
        if res.maps:
            click.echo(f"  {res.maps}")

    @main.command("embed-plot")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
    @click.option("--method", type=click.Choice(["umap", "pca", "tsne"]), default="umap", show_default=True)
    @click.option("--out", type=OutPath(dir_okay=False), default=None, help="Default: RUN/figures/embed_<method>_<split>.png.")
    @run_data_option
    @device_option
    def embed_plot(run: str, split: str, method: str, out: Optional[str], data: Optional[str], device: Optional[str]) -> None:
        """2-D UMAP (or PCA / t-SNE) of a split's embeddings, coloured by class, with centroids."""
        from fermetric.api import embed_plot as run_embed_plot

        coords, paths = run_embed_plot(run, split, method, out, device=device, data=data)
        click.echo(f"{len(coords)} {split} embeddings projected with {method}")
        click.echo(f"  {paths[0]}\n  {paths[2]}")
