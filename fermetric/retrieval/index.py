"""A run's kNN index over its train gallery: RUN/index when `fermetric build-index` built one
(checked to come from the run's current checkpoint and layer), else an exact index fitted on the
train embeddings with the config's metric.knn_k and metric.knn_weighting."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fermetric.errors import CheckpointError
from fermetric.retrieval.embeddings import embed_split, split_embeddings
from fermetric.retrieval.knn import KNNClassifier
import fermetric.run_layout as layout
from fermetric.runs.reader import register_moved


def run_knn(run: Any) -> KNNClassifier:
    """The run's kNN classifier (see the module docstring), kept in `run.derived`.

    Raises:
        CheckpointError: RUN/index is damaged, or was built from other weights (after --resume
            or retraining, or copied from another run); the message gives the build-index
            command that rebuilds it.
    """
    run.single_network("kNN index")
    if "knn" in run.derived:
        return run.derived["knn"]
    folder = layout.path_of(run.path, layout.INDEX)
    if folder.exists():
        knn = _saved_index(run, folder)
    else:
        knn = KNNClassifier(k=run.cfg.metric.knn_k, weighting=run.cfg.metric.knn_weighting,
                            num_classes=len(run.class_names), class_names=list(run.class_names))
        knn.fit(*split_embeddings(run, "train"))
    run.derived["knn"] = knn
    return knn


def _saved_index(run: Any, folder) -> KNNClassifier:
    rebuild = f"fermetric build-index {run.path}"
    try:
        knn = KNNClassifier.load(folder)
    except CheckpointError as e:
        raise CheckpointError(f"{e}. Rebuild the index: {rebuild}") from None
    rebuild += f" --index {knn.index_type} -k {knn.k} --weighting {knn.weighting}"
    src = knn.source
    if src.get("checkpoint_sha256") == run.checkpoint_sha256 and not run.made_here(src):
        raise CheckpointError(
            f"the kNN index {folder} holds embeddings of the {src.get('embedding_layer', 'projection')} "
            f"layer, but the run now embeds with the {run.embedding_layer} (metric.embedding_layer). "
            f"Rebuild it: {rebuild}")
    if src.get("checkpoint_sha256") != run.checkpoint_sha256:
        came = (f"{src.get('checkpoint')} (epoch {src.get('epoch')}, sha256 {str(src.get('checkpoint_sha256'))[:12]}) "
                f"of run {src.get('run')}") if src.get("checkpoint_sha256") else "weights it did not record"
        raise CheckpointError(
            f"the kNN index {folder} is stale: its gallery was embedded by {came}, not by this run's "
            f"{run.checkpoint_path.name} (epoch {run.checkpoint.get('epoch')}, sha256 {run.checkpoint_sha256[:12]}). "
            f"Rebuild it: {rebuild}"
        )
    if tuple(knn.class_names or ()) != tuple(run.class_names):
        raise CheckpointError(f"the kNN index {folder} has classes {knn.class_names}, the run "
                              f"{list(run.class_names)}. Rebuild it: {rebuild}")
    return knn


def build_run_index(run: Any, index_type: str = "flat", k: Optional[int] = None,
                    weighting: Optional[str] = None) -> KNNClassifier:
    """Build the kNN index over the train embeddings, save it as RUN/index (stamped with the
    checkpoint's fingerprint) and return it; what was derived from the old index is dropped."""
    run.single_network("kNN index")
    emb, labels = split_embeddings(run, "train")
    knn = KNNClassifier(k=k or run.cfg.metric.knn_k, weighting=weighting or run.cfg.metric.knn_weighting,
                        index=index_type, num_classes=len(run.class_names), class_names=list(run.class_names),
                        seed=run.cfg.seed)
    knn.fit(emb, labels)
    knn.save(layout.path_of(run.path, layout.INDEX), source=run.fingerprint)
    for key in [key for key in run.derived if key.startswith("proba:")]:
        del run.derived[key]
    run.derived["knn"] = knn
    return knn


def gallery_exclude(run: Any, split: str) -> Optional[np.ndarray]:
    """Queries from the gallery split (train) must not find themselves: their own indices."""
    if split != "train":
        return None
    n, gallery = len(embed_split(run, split)), len(run_knn(run))
    if n != gallery:
        raise CheckpointError(f"the kNN gallery has {gallery} vectors but the train split {n} images; "
                              f"rebuild the index: fermetric build-index {run.path}")
    return np.arange(n)


register_moved("knn", run_knn)
register_moved("build_index", build_run_index)
