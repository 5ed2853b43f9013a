"""The kNN evaluation report of an embedding model: queries (e.g. the test set) classified by
their neighbours in a gallery (e.g. the training set).

Classification metrics come from fermetric.evaluation.metrics (scikit-learn); retrieval metrics
(precision@1, R-precision, MAP@R) from pytorch-metric-learning's AccuracyCalculator with the
query and reference sets kept apart (``ref_includes_query=False``) and FAISS exact
inner-product search on L2-normalised vectors.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np
import torch

from fermetric.errors import DataError, FermetricError
from fermetric.evaluation.metrics import classification_metrics, metrics_to_markdown
from fermetric.retrieval.embeddings import split_embeddings
from fermetric.retrieval.index import run_knn
from fermetric.retrieval.knn import KNNClassifier, _as_float32_matrix, _as_labels, _l2_normalize
from fermetric.retrieval.similarity import split_verification
from fermetric.runs.reader import register_moved
from fermetric.evaluation.calibration import calibration_metrics
from fermetric.scoring.calibration import apply_calibration
from fermetric.scoring.run import run_scorer
from fermetric.utils.io import atomic_write_text, write_json

__all__ = ["knn_report", "run_knn_report", "run_queries_report", "retrieval_metrics", "write_knn_report", "knn_report_markdown"]

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")

# (queries x neighbours) elements AccuracyCalculator handles at once; MAP@R searches R neighbours
# (up to the largest class of the gallery), so queries are fed in chunks to bound memory.
_RETRIEVAL_CHUNK_ELEMENTS = 8_000_000


def retrieval_metrics(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_labels: np.ndarray,
) -> dict[str, float | None]:
    """precision@1, R-precision and MAP@R of queries against a separate gallery.

    Args:
        query_emb: (M, D) float32, L2-normalised.
        query_labels: (M,) int.
        gallery_emb: (N, D) float32, L2-normalised.
        gallery_labels: (N,) int.

    Returns:
        {"precision_at_1", "r_precision", "mean_average_precision_at_r"}: means over queries whose
        class occurs in the gallery (None when none does), plus "n_queries_scored".
    """
    # imported here: pytorch-metric-learning is slow to import and only this function needs it
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    calc = AccuracyCalculator(
        include=RETRIEVAL_METRICS,
        k="max_bin_count",  # R = the query's class count in the gallery, as MAP@R needs
        device=torch.device("cpu"),
        knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP),  # inner product = cosine here
    )
    present = np.isin(query_labels, np.unique(gallery_labels))
    counts = np.bincount(gallery_labels)
    max_r = int(counts.max()) if counts.size else 1
    chunk = max(1, _RETRIEVAL_CHUNK_ELEMENTS // max_r)
    sums = dict.fromkeys(RETRIEVAL_METRICS, 0.0)
    scored = 0
    ref = torch.from_numpy(gallery_emb)
    ref_labels = torch.from_numpy(gallery_labels)
    for start in range(0, query_emb.shape[0], chunk):
        stop = min(start + chunk, query_emb.shape[0])
        n_scored = int(present[start:stop].sum())
        if n_scored == 0:
            continue
        out = calc.get_accuracy(
            torch.from_numpy(query_emb[start:stop]),
            torch.from_numpy(query_labels[start:stop]),
            ref,
            ref_labels,
            ref_includes_query=False,
        )
        # each metric is a mean over the chunk's scored queries: re-weight to a mean over all
        for key in RETRIEVAL_METRICS:
            sums[key] += float(out[key]) * n_scored
        scored += n_scored
    result: dict[str, float | None] = {key: (sums[key] / scored if scored else None) for key in RETRIEVAL_METRICS}
    result["n_queries_scored"] = scored
    return result


def knn_report(
    query_emb: Any,
    query_labels: Any,
    gallery_emb: Any,
    gallery_labels: Any,
    class_names: Sequence[str],
    k: int = 10,
    ks: Sequence[int] = (1, 3, 5, 10, 20, 50),
    weighting: str = "distance",
    index: str = "flat",
    temperature: float = 0.1,
    classifier: KNNClassifier | None = None,
    predictions: Any = None,
) -> dict[str, Any]:
    """Evaluate kNN classification of queries against a gallery.

    Args:
        query_emb: (M, D) embeddings (numpy or torch, any float dtype).
        query_labels: (M,) class ids.
        gallery_emb: (N, D) embeddings of the reference set (not the queries).
        gallery_labels: (N,) class ids.
        class_names: the C class names.
        k: neighbours for the headline metrics.
        ks: neighbour counts for the accuracy-against-k curve (those above N are dropped).
        weighting: "distance" or "majority" (see fermetric.retrieval.knn.vote).
        index: FAISS index type of the classifier ("flat" = exact).
        temperature: softmax temperature of distance weighting.
        classifier: a fitted KNNClassifier over this same gallery (e.g. a run's saved index):
            its index does the neighbour search, so the report scores exactly what predictions
            through it give; `index` and `temperature` are then taken from it. Default: an
            index of type `index` is fitted on the gallery.
        predictions: (M,) the headline predictions at `k`, as the scoring path gives them
            (fermetric.scoring: a run's KNNScorer); default: the classifier's own at `k`.

    Returns:
        A JSON-ready dict: "k", "weighting", "index", "n_query", "n_gallery", "dimension",
        "class_names", "accuracy", "macro_f1", "per_class" {name: {precision, recall, f1, support}},
        "confusion" (C, C) counts (rows = true class), "confusion_normalized", "precision_at_1",
        "r_precision", "mean_average_precision_at_r", "n_queries_scored" (queries whose class
        occurs in the gallery) and "accuracy_vs_k" {"k", "accuracy", "macro_f1"} lists.
    """
    class_names = [str(c) for c in class_names]
    num_classes = len(class_names)
    q = _as_float32_matrix(query_emb, "query_emb")
    g = _as_float32_matrix(gallery_emb, "gallery_emb")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"query has {q.shape[1]} dims; the gallery has {g.shape[1]}")
    yq = _as_labels(query_labels, q.shape[0], num_classes)
    yg = _as_labels(gallery_labels, g.shape[0], num_classes)
    if q.shape[0] == 0:
        raise DataError("knn_report needs at least one query")
    n = g.shape[0]
    ks_used = sorted({int(x) for x in ks if 1 <= int(x) <= n})
    if k > n:
        raise DataError(f"k={k} is more than the {n} gallery vectors")

    if classifier is None:
        clf = KNNClassifier(
            k=k, weighting=weighting, index=index, class_names=class_names, temperature=temperature
        ).fit(g, yg)
    else:
        if len(classifier) != n or classifier.dimension != g.shape[1] or not np.array_equal(classifier.labels_, yg):
            raise DataError(f"the classifier's gallery ({len(classifier)} x {classifier.dimension}) is not the gallery "
                            f"given ({n} x {g.shape[1]}, same labels); rebuild the index")
        clf = classifier.with_vote(k, weighting)
        index, temperature = clf.index_type, clf.temperature
    if predictions is None:
        headline = clf.predict(q)
    else:
        headline = np.asarray(predictions).reshape(-1)
        if headline.shape != (q.shape[0],):
            raise DataError(f"{headline.shape[0]} predictions for {q.shape[0]} queries")
    at_k = clf.predict_at_ks(q, ks_used)

    metrics = classification_metrics(yq, headline, class_names)
    curve = {"k": [], "accuracy": [], "macro_f1": []}
    for kk in ks_used:
        m = metrics if kk == k else classification_metrics(yq, at_k[kk], class_names)
        curve["k"].append(kk)
        curve["accuracy"].append(m["accuracy"])
        curve["macro_f1"].append(m["macro_f1"])

    retrieval = retrieval_metrics(_l2_normalize(q), yq, _l2_normalize(g), yg)
    report: dict[str, Any] = {
        "k": int(k),
        "weighting": weighting,
        "index": index,
        **({"search_params": clf.search_params} if clf.search_params else {}),
        "temperature": float(temperature) if weighting == "distance" else None,
        "n_query": int(q.shape[0]),
        "n_gallery": int(n),
        "dimension": int(q.shape[1]),
        "class_names": class_names,
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "confusion_normalized": metrics["confusion_normalized"],
        **retrieval,
        "accuracy_vs_k": curve,
    }
    return report


def run_queries_report(run: Any, queries: Callable[[], tuple[np.ndarray, np.ndarray]], k: int | None = None,
                       weighting: str | None = None) -> dict[str, Any]:
    """The kNN report of queries against the run's train gallery: the headline predictions and
    the calibration of the vote's probabilities (as predict gives them: calibrated where
    `fermetric calibrate` fitted the run) through the run's KNNScorer, from one search of the
    index `predict`, `evaluate` and the explanations use, so the numbers agree; the
    accuracy-against-k curve and the retrieval metrics from the same index. k and weighting
    default to the index's.

    Args:
        queries: gives (embeddings, labels) of the queries; called once the run's index is
            checked, so that a stale index is refused before any query is embedded (and cached
            into the run).
    """
    scorer = run_scorer(run, "knn").with_vote(k, weighting)
    query, labels = queries()
    gallery, g_labels = split_embeddings(run, "train")
    predictions, proba = scorer.vote_with_predictions(query)
    rep = knn_report(query, labels, gallery, g_labels, list(run.class_names), k=scorer.knn.k,
                     weighting=scorer.knn.weighting, classifier=run_knn(run), predictions=predictions)
    rep["calibration"] = calibration_metrics(apply_calibration(proba, run.stored_calibration()), labels)
    rep.update({
        "run": str(run.path), "kind": run.kind, "checkpoint": run.fingerprint,
        "index_source": str(run.index_dir) if run.index_dir.exists() else
        "exact (flat) index fitted on the train embeddings (no RUN/index)",
    })
    return rep


def run_knn_report(run: Any, split: str, k: int | None = None, weighting: str | None = None) -> dict[str, Any]:
    """The kNN report (`run_queries_report`) of a split of the run's data against its train
    gallery, with the verification metrics of pairs of the split."""
    if split == "train":
        raise FermetricError("knn-eval scores val or test against the train gallery; train would match itself")
    rep = run_queries_report(run, lambda: split_embeddings(run, split), k, weighting)
    rep["split"] = split
    # pairs of the split: same expression or not, by cosine (calibrated on val pairs)
    rep["verification"] = split_verification(run, split)
    return rep


register_moved("knn_report", run_knn_report)


def calibration_rows(cal: dict[str, Any] | None) -> list[str]:
    """Markdown table rows of ECE / NLL / Brier (none without a calibration record)."""
    if not cal:
        return []
    return [f"| ECE ({cal['binning']}) | {_fmt(cal['ece'])} |", f"| NLL | {cal['nll']:.4f} |",
            f"| Brier | {cal['brier']:.4f} |"]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.2f} %"


def knn_report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: headline table, accuracy against k, per-class table, confusion."""
    lines = [
        "# kNN evaluation",
        "",
        f"{report['n_query']} queries against a gallery of {report['n_gallery']} "
        f"({report['dimension']}-d embeddings); k = {report['k']}, {report['weighting']} weighting, "
        f"{report['index']} index"
        + (f" {report['search_params']}" if report.get("search_params") else "")
        + (f" ({report['index_source']})" if report.get("index_source") else "") + ".",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| accuracy | {_fmt(report['accuracy'])} |",
        f"| macro-F1 | {_fmt(report['macro_f1'])} |",
        f"| precision@1 | {_fmt(report['precision_at_1'])} |",
        f"| R-precision | {_fmt(report['r_precision'])} |",
        f"| MAP@R | {_fmt(report['mean_average_precision_at_r'])} |",
        *calibration_rows(report.get("calibration")),
        "",
        "## Accuracy against k",
        "",
        "| k | accuracy | macro-F1 |",
        "|---:|---:|---:|",
    ]
    curve = report["accuracy_vs_k"]
    for kk, acc, f1 in zip(curve["k"], curve["accuracy"], curve["macro_f1"]):
        lines.append(f"| {kk} | {_fmt(acc)} | {_fmt(f1)} |")
    ver = report.get("verification")
    if ver:
        lines += [
            "", "## Verification (same expression or not, by cosine similarity)", "",
            f"{ver['n_pairs']} pairs of the queries, {_fmt(ver['same_share'])} of them the same expression; "
            f"probabilities calibrated on {ver['calibrated_on']}.", "",
            "| metric | value |", "|---|---:|",
            f"| ROC AUC | {'n/a' if ver['roc_auc'] is None else format(ver['roc_auc'], '.4f')} |",
            f"| accuracy (p >= 0.5) | {_fmt(ver['accuracy'])} |",
            f"| balanced accuracy | {_fmt(ver['balanced_accuracy'])} |",
        ]
    lines += ["", metrics_to_markdown(report, title=f"Per class (k = {report['k']})").rstrip(), ""]
    names = report["class_names"]
    lines += [
        "### Confusion matrix (rows = true class, counts)",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, report["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_knn_report(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write knn_report.json, knn_report.md, knn_accuracy_vs_k.png and knn_confusion.png.

    Returns:
        The paths written, in that order.
    """
    from fermetric.plotting import save_figure
    from fermetric.plotting.confusion import plot_confusion
    from fermetric.plotting.knn import plot_accuracy_vs_k

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {
        key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in report.items()
    }
    paths = [
        write_json(out_dir / "knn_report.json", clean),
        atomic_write_text(out_dir / "knn_report.md", knn_report_markdown(report)),
    ]
    curve = report["accuracy_vs_k"]
    fig = plot_accuracy_vs_k(curve["k"], curve["accuracy"], curve["macro_f1"], chosen_k=report["k"])
    paths.append(save_figure(fig, out_dir / "knn_accuracy_vs_k.png"))
    fig = plot_confusion(
        np.asarray(report["confusion"]), report["class_names"], normalize=True,
        title=f"kNN confusion (k = {report['k']}, row-normalised)",
    )
    paths.append(save_figure(fig, out_dir / "knn_confusion.png"))
    return paths
