"""Evaluating a trained run on a split of its own data (`evaluate_split`) or on another data set (CK+, FER+,
JAFFE, a user's own faces).

Classes are matched by name: both sides are read as emotions (`canonical_emotion`: FER2013's
"Angry" is CK+'s "anger" and FER+'s "Anger"), and `class_map` entries (`DATA_CLASS=MODEL_CLASS`,
or `DATA_CLASS=` to leave a class out) decide the rest. Images of a class the model does not know
(CK+'s "contempt" for a FER2013 model) are counted and left out of every metric, never scored as
errors or silently relabelled; model classes the data lacks are listed. The mapping is part of
the result, so what was compared with what is on record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from fermetric.data.classes import canonical_emotion, class_key
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.errors import ConfigError, DataError
from fermetric.retrieval.embeddings import embed_images
from fermetric.retrieval.index import run_knn
from fermetric.scoring.run import dataset_predictions, split_predictions, split_proba

ALL_SPLITS = "all"


@dataclass
class ClassMapping:
    """How the classes of a data set map onto a model's.

    Attributes:
        data_classes: the data set's class names (its label ids).
        model_classes: the model's class names.
        target: data class -> model class, or None (unknown to the model: left out).
        how: data class -> "same name", "synonym" or "--class-map" (why it maps as it does).
    """

    data_classes: tuple[str, ...]
    model_classes: tuple[str, ...]
    target: dict[str, Optional[str]] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)

    @property
    def index(self) -> np.ndarray:
        """(C_data,) int64: the model class id of each data class id, -1 for left-out classes."""
        ids = {name: i for i, name in enumerate(self.model_classes)}
        return np.array([ids[self.target[c]] if self.target[c] is not None else -1 for c in self.data_classes], np.int64)

    @property
    def unknown(self) -> list[str]:
        """Data classes the model does not know (left out)."""
        return [c for c in self.data_classes if self.target[c] is None]

    @property
    def absent(self) -> list[str]:
        """Model classes no data class maps to."""
        used = {t for t in self.target.values() if t is not None}
        return [c for c in self.model_classes if c not in used]

    def lines(self) -> list[str]:
        """The mapping, one line per data class, for printing."""
        out = []
        for c in self.data_classes:
            t = self.target[c]
            out.append(f"{c} -> {t} ({self.how[c]})" if t is not None else f"{c} -> (unknown to the model: left out; {self.how[c]})")
        if self.absent:
            out.append(f"model classes without images here: {', '.join(self.absent)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"mapping": dict(self.target), "matched_by": dict(self.how), "unknown_classes": self.unknown,
                "model_classes_without_images": self.absent}


def mapping_lines(cross: Mapping[str, Any], model_classes: Sequence[str]) -> list[str]:
    """The "cross_data" record of a result as printable lines: the mapping and what was left out."""
    m = ClassMapping(tuple(cross["mapping"]), tuple(model_classes), dict(cross["mapping"]), dict(cross["matched_by"]))
    lines = m.lines()
    left = int(cross["n_images"]) - int(cross["n_scored"])
    if left:
        counts = ", ".join(f"{c} {n}" for c, n in cross.get("left_out", {}).items())
        lines.append(f"{left} of {cross['n_images']} images left out (classes unknown to the model: {counts})")
    return lines


def parse_class_map(items: Sequence[str] | Mapping[str, Optional[str]] | None) -> dict[str, Optional[str]]:
    """`["anger=Angry", "contempt="]` (the CLI's --class-map) or a mapping -> {data: model or None}.

    Raises:
        ConfigError: an item without '=', an empty data class name, or a class mapped twice.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): (None if v in (None, "") else str(v)) for k, v in items.items()}
    out: dict[str, Optional[str]] = {}
    for item in items:
        for part in str(item).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(f"--class-map entry {part!r} is not DATA_CLASS=MODEL_CLASS (or DATA_CLASS= to leave it out)")
            k, v = (x.strip() for x in part.split("=", 1))
            if not k:
                raise ConfigError(f"--class-map entry {part!r} has no data class before '='")
            if k in out and out[k] != (v or None):  # the last would win silently
                raise ConfigError(f"--class-map maps {k!r} twice (to {out[k] or 'nothing'} and to {v or 'nothing'}); "
                                  "keep one")
            out[k] = v or None
    return out


def map_classes(data_classes: Sequence[str], model_classes: Sequence[str],
                class_map: Sequence[str] | Mapping[str, Optional[str]] | None = None) -> ClassMapping:
    """Match a data set's classes to a model's: `class_map` first, then the same name (case,
    spaces, '-', '_' aside), then the same emotion (`canonical_emotion`); the rest is unknown.

    Raises:
        ConfigError: a class_map key that is no data class, or a value that is no model class
            (both list the valid names); two model classes that read as the same emotion.
    """
    data_classes, model_classes = tuple(map(str, data_classes)), tuple(map(str, model_classes))
    given = parse_class_map(class_map)
    by_key = {class_key(c): c for c in data_classes}
    model_by_key = {class_key(c): c for c in model_classes}
    mapping = ClassMapping(data_classes, model_classes)
    for k, v in given.items():
        if class_key(k) not in by_key:
            raise ConfigError(f"--class-map names data class {k!r}, but the data's classes are: {', '.join(data_classes)}")
        if v is not None and class_key(v) not in model_by_key:
            raise ConfigError(f"--class-map maps {k!r} to {v!r}, but the model's classes are: {', '.join(model_classes)}")
        d = by_key[class_key(k)]
        mapping.target[d] = None if v is None else model_by_key[class_key(v)]
        mapping.how[d] = "--class-map"
    model_by_emotion: dict[str, str] = {}
    for c in model_classes:
        e = canonical_emotion(c)
        if e in model_by_emotion:
            raise ConfigError(f"the model's classes {model_by_emotion[e]!r} and {c!r} mean the same emotion; "
                              "map the data's classes with --class-map")
        model_by_emotion[e] = c
    for d in data_classes:
        if d in mapping.target:
            continue
        if class_key(d) in model_by_key:
            mapping.target[d], mapping.how[d] = model_by_key[class_key(d)], "same name"
        elif canonical_emotion(d) in model_by_emotion:
            mapping.target[d], mapping.how[d] = model_by_emotion[canonical_emotion(d)], "synonym"
        else:
            mapping.target[d], mapping.how[d] = None, "no model class of that name; --class-map maps it"
    mapping.target = {d: mapping.target[d] for d in data_classes}  # in the data's class order
    mapping.how = {d: mapping.how[d] for d in data_classes}
    if all(t is None for t in mapping.target.values()):
        raise ConfigError(f"none of the data's classes ({', '.join(data_classes)}) matches a model class "
                          f"({', '.join(model_classes)}); map them with --class-map DATA_CLASS=MODEL_CLASS")
    return mapping


def concat_splits(splits: DataSplits, split: str = ALL_SPLITS) -> FERDataset:
    """One split of `splits`, or all of them together (`split="all"`)."""
    if split != ALL_SPLITS:
        return splits[split]
    parts = list(splits.splits.values())
    masks = [p.masks for p in parts]
    return FERDataset(
        images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
        class_names=parts[0].class_names,
        masks=torch.cat(masks) if all(m is not None for m in masks) else None,
        sources=sum((p.sources for p in parts), []) if all(p.sources is not None for p in parts) else None,
    )


def load_other_data(run: Any, data: str, split: Optional[str] = None) -> tuple[FERDataset, str, str]:
    """The images of another data source (`--data`), read as the run would read a data set
    (same val_fraction and seed), but with none of the run's class_map / FER+ settings.

    Returns:
        (dataset, its name, the split used: `split`, or "all" splits when None).
    """
    from fermetric.config import DataConfig
    from fermetric.data.sources import load_data

    cfg = DataConfig(source=str(data), val_fraction=run.cfg.data.val_fraction)
    splits = load_data(str(data), cfg, seed=run.cfg.seed)
    used = split or ALL_SPLITS
    if used != ALL_SPLITS and used not in splits:
        raise DataError(f"data set {splits.name} has no split {used!r}; available: {', '.join(splits.splits)} or all")
    return concat_splits(splits, used), splits.name, used


def _known_subset(ds: FERDataset, mapping: ClassMapping) -> tuple[FERDataset, np.ndarray, dict[str, int]]:
    idx = mapping.index[ds.labels.numpy()]
    keep = np.flatnonzero(idx >= 0)
    left_out = {c: int((ds.labels == i).sum()) for i, c in enumerate(ds.class_names) if mapping.target[c] is None}
    if keep.size == 0:
        raise DataError(f"no image of {', '.join(mapping.data_classes)} belongs to a class the model knows; "
                        "map the classes with --class-map")
    return ds.subset(torch.as_tensor(keep)), idx[keep], left_out


def duplicate_free(ds: FERDataset, gallery: FERDataset) -> tuple[np.ndarray, dict[str, Any]]:
    """The indices of `ds` without an exact or near duplicate in `gallery` (fermetric.data.audit),
    and what was left out: {"n_excluded", "n_kept", "radius", "against"}."""
    from fermetric.data.audit import NEAR_RADIUS, near_duplicate_mask

    dup = near_duplicate_mask(ds, gallery, NEAR_RADIUS)
    keep = np.flatnonzero(~dup)
    if keep.size == 0:
        raise DataError("every evaluated image has a duplicate in the training split; nothing is left to score")
    return keep, {"n_excluded": int(dup.sum()), "n_kept": int(keep.size), "radius": NEAR_RADIUS,
                  "against": f"{len(gallery)} training images"}


def without_duplicates(ds: FERDataset, labels: np.ndarray, gallery: FERDataset) -> tuple[FERDataset, np.ndarray, dict[str, Any]]:
    """`ds` (and its `labels`) without the faces that have an exact or near duplicate in `gallery`,
    and what was left out (see `duplicate_free`)."""
    keep, info = duplicate_free(ds, gallery)
    return ds.subset(torch.as_tensor(keep)), labels[keep], info


def evaluate_split(run: Any, split: str, tta: Optional[str] = None, exclude_duplicates: bool = False) -> dict[str, Any]:
    """Classification and calibration metrics of a run on a split of its own data, through the
    scoring path (a kNN vote's ties go to the nearest neighbour, as knn-eval counts them); with
    `exclude_duplicates`, without the faces that have a duplicate in the run's training split."""
    from fermetric.evaluation.calibration import calibration_metrics
    from fermetric.evaluation.metrics import classification_metrics

    ds = run.load_data()[split]
    y = ds.labels.numpy()
    probs = split_proba(run, split, tta=tta)
    pred = split_predictions(run, split, tta=tta)
    keep, excluded = np.arange(len(y)), None
    if exclude_duplicates:
        keep, excluded = duplicate_free(ds, run.load_data()["train"])
    m = classification_metrics(y[keep], pred[keep], run.class_names)
    m["calibration"] = calibration_metrics(probs[keep], y[keep])
    if excluded is not None:
        m["excluded_duplicates"] = excluded
    if run.kind == "embedding":
        knn = run_knn(run)
        m["knn"] = {"k": knn.k, "weighting": knn.weighting, "index": knn.index_type,
                    "index_source": str(run.index_dir) if run.index_dir.exists() else "exact index fitted on train",
                    "self_matches_excluded": split == "train"}
    return m


def evaluate_on_data(run: Any, data: str, split: Optional[str] = None, tta: bool | str = False,
                     class_map: Sequence[str] | Mapping[str, Optional[str]] | None = None,
                     exclude_duplicates_of: Optional[FERDataset] = None) -> dict[str, Any]:
    """Classification metrics of a run on another data set, over the model's classes.

    Args:
        run: a fermetric.runs.Run (classifier: softmax, TTA on request; embedding: kNN over its
            own train gallery).
        data: the other data source (a folder, a fer2013.csv, "synth").
        split: a split of that data, or None for all its images.
        tta: False, "shift" or "tencrop" (classifiers).
        class_map: data class -> model class overrides (see `map_classes`).
        exclude_duplicates_of: leave out the images with an exact or near duplicate among these
            faces (the run's training split; fermetric.data.audit), counted under
            "excluded_duplicates".

    Returns:
        classification_metrics over the images of known classes (labels mapped to the model's
        ids), plus "cross_data": {data, split, n_images, n_scored, left_out {class: images},
        mapping, matched_by, unknown_classes, model_classes_without_images}.
    """
    from fermetric.evaluation.calibration import calibration_metrics
    from fermetric.evaluation.metrics import classification_metrics

    ds, name, used = load_other_data(run, data, split)
    mapping = map_classes(ds.class_names, run.class_names, class_map)
    known, y, left_out = _known_subset(ds, mapping)
    excluded, n_known = None, len(known)
    if exclude_duplicates_of is not None:
        known, y, excluded = without_duplicates(known, y, exclude_duplicates_of)
    pred, probs = dataset_predictions(run, known, tta=tta)
    m = classification_metrics(y, pred, run.class_names)
    if excluded is not None:
        m["excluded_duplicates"] = excluded
    if len(y):
        m["calibration"] = calibration_metrics(probs, y)
    m["cross_data"] = {"data": name, "source": str(data), "split": used, "n_images": len(ds), "n_scored": n_known,
                       "left_out": left_out, **mapping.to_dict()}
    return m


def knn_report_on_data(run: Any, data: str, split: Optional[str] = None,
                       class_map: Sequence[str] | Mapping[str, Optional[str]] | None = None,
                       k: Optional[int] = None, weighting: Optional[str] = None) -> dict[str, Any]:
    """The kNN report (fermetric.evaluation.knn_report) of another data set's images, embedded by
    the run, against the run's train gallery, through the run's index; classes mapped as in
    `evaluate_on_data` and unknown ones left out (reported under "cross_data")."""
    from fermetric.evaluation.knn_report import run_queries_report

    ds, name, used = load_other_data(run, data, split)
    mapping = map_classes(ds.class_names, run.class_names, class_map)
    known, y, left_out = _known_subset(ds, mapping)
    rep = run_queries_report(run, lambda: (embed_images(run, known), y), k, weighting)
    rep.update({"split": used,
                "cross_data": {"data": name, "source": str(data), "split": used, "n_images": len(ds),
                               "n_scored": len(known), "left_out": left_out, **mapping.to_dict()}})
    return rep
