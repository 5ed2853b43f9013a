"""`evaluate` and `knn-eval` as library calls: a run on one of its splits or on another data
set, with the files they write (JSON, markdown, confusion figure)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from fermetric.evaluation.predict import resolve_tta


@dataclass
class Evaluation:
    """What `evaluate_run` / `knn_eval_run` computed and wrote.

    Attributes:
        metrics: classification metrics (or the kNN report), with "cross_data" for another data set.
        paths: the files written.
        mapping: the class mapping, one line per data class (another data set only).
        label: a one-line description ("baseline on val (TTA tencrop)").
    """

    metrics: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    mapping: list[str] = field(default_factory=list)
    label: str = ""


def write_evaluation(out: Path, name: str, metrics: dict, title: str) -> list[Path]:
    """<name>.json, <name>.md and <name>_confusion.png (row-normalised) in `out`."""
    from fermetric.evaluation.metrics import metrics_to_markdown
    from fermetric.plotting import save_figure
    from fermetric.plotting.confusion import plot_confusion
    from fermetric.utils.io import atomic_write_text, write_json

    out.mkdir(parents=True, exist_ok=True)
    md = metrics_to_markdown(metrics, title)
    cross = metrics.get("cross_data")
    if cross:
        md += "\nclass mapping (data -> model): " + ", ".join(
            f"{d} -> {t if t is not None else 'left out'}" for d, t in cross["mapping"].items())
        md += f"; {cross['n_images'] - cross['n_scored']} of {cross['n_images']} images left out\n"
    paths = [write_json(out / f"{name}.json", metrics), atomic_write_text(out / f"{name}.md", md)]
    fig = plot_confusion(metrics["confusion"], metrics["class_names"], normalize=True, title=title)
    paths.append(save_figure(fig, out / f"{name}_confusion.png"))
    return paths


def _data_tag(data: str) -> str:
    """A file-name-safe tag of a data source ("/data/CK+" -> "CK")."""
    tag = re.sub(r"[^A-Za-z0-9]+", "_", Path(str(data)).name.split(".")[0]).strip("_")
    return tag or "data"


def evaluate_run(run: Any, split: Optional[str] = None, tta: bool | str = False, data: Optional[str] = None,
                 class_map: Sequence[str] | Mapping[str, Optional[str]] | None = None,
                 out: Optional[str | Path] = None) -> Evaluation:
    """Evaluate a run: accuracy, macro-F1, per-class scores, confusion matrix; written to `out`
    (default RUN/eval) as <split>[_tta|_tencrop].json / .md / _confusion.png.

    Args:
        run: a fermetric.runs.Run.
        split: val, test or train of the run's data (default val); with `data`, a split of that
            data or None for all its images.
        tta: False, True / "shift", or "tencrop" (classifiers).
        data: another data source to evaluate on (classes mapped by name, see
            fermetric.evaluation.crossdata); None: the run's own data.
        class_map: data class -> model class overrides for `data`.
    """
    from fermetric.evaluation.metrics import classification_metrics

    mode = resolve_tta(tta)
    suffix = {None: "", "shift": "_tta", "tencrop": "_tencrop"}[mode]
    tta_text = {None: "", "shift": " + TTA", "tencrop": " + ten-crop TTA"}[mode]
    if data is None:
        if class_map:
            from fermetric.errors import ConfigError

            raise ConfigError("--class-map maps the classes of another data set; give that data set with --data")
        split = split or "val"
        ds = run.load_data()[split]
        m = classification_metrics(ds.labels.numpy(), run.predict(split, tta=mode), run.class_names)
        m.update({"run": str(run.path), "split": split, "tta": mode or False, "kind": run.kind, "checkpoint": run.fingerprint})
        if run.kind == "embedding":
            knn = run.knn()
            m["knn"] = {"k": knn.k, "weighting": knn.weighting, "index": knn.index_type,
                        "index_source": str(run.index_dir) if run.index_dir.exists() else "exact index fitted on train",
                        "self_matches_excluded": split == "train"}
        name, where, lines = f"{split}{suffix}", split, []
    else:
        from fermetric.evaluation.crossdata import evaluate_on_data, mapping_lines

        m = evaluate_on_data(run, data, split, mode, class_map)
        cross = m["cross_data"]
        m.update({"run": str(run.path), "split": cross["split"], "tta": mode or False, "kind": run.kind,
                  "checkpoint": run.fingerprint})
        where = f"{cross['data']} ({cross['split']})"
        name = f"{_data_tag(data)}_{cross['split']}{suffix}"
        lines = mapping_lines(cross, run.class_names)
    label = f"{run.cfg.model.name} on {where}{tta_text}"
    paths = write_evaluation(Path(out) if out else run.path / "eval", name, m, label)
    return Evaluation(m, paths, lines, label)


def knn_eval_run(run: Any, split: Optional[str] = None, k: Optional[int] = None, weighting: Optional[str] = None,
                 data: Optional[str] = None, class_map: Sequence[str] | Mapping[str, Optional[str]] | None = None,
                 out: Optional[str | Path] = None) -> Evaluation:
    """The kNN report of a split (default val) against the run's train gallery, or of another
    data set's images (`data`, classes mapped by name), written to `out` (default
    RUN/knn_<split> or RUN/knn_<data>_<split>)."""
    from fermetric.retrieval import write_knn_report

    if data is None:
        split = split or "val"
        rep = run.knn_report(split, k=k, weighting=weighting)
        lines, folder = [], f"knn_{split}"
    else:
        from fermetric.evaluation.crossdata import knn_report_on_data, mapping_lines

        rep = knn_report_on_data(run, data, split, class_map, k=k, weighting=weighting)
        cross = rep["cross_data"]
        lines = mapping_lines(cross, run.class_names)
        folder = f"knn_{_data_tag(data)}_{cross['split']}"
    paths = write_knn_report(rep, Path(out) if out else run.path / folder)
    return Evaluation(rep, paths, lines, f"{run.name} kNN on {rep['split']}")
