"""`evaluate`, `calibrate` and `ensemble`: numbers of a run (or of several) on a split or another data set."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from fermetric.errors import ConfigError
from fermetric.api.common import PathLike, claim_output, data_tag, open_for_command, writing_to
from fermetric.utils.outputs import final_path, staged_outputs


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
    claim_output(out, "evaluation", "*_confusion.png", "*.md")
    with writing_to(run, only_caches=out is not None):  # out elsewhere: nothing but caches goes into RUN
        from fermetric.evaluation.metrics import write_metrics

        r = open_for_command(run, device, precision)
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
            name, where = f"{data_tag(data)}_{split}{suffix}", f"{m['cross_data']['data']} ({split})"
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


def calibrate(run: PathLike, split: str = "val", tta: bool | str = False, device: Optional[str] = "auto",
              precision: Optional[str] = "auto", data: Optional[PathLike] = None) -> dict[str, Any]:
    """`fermetric calibrate`: fit a classifier run's temperature, or an embedding run's kNN vote
    smoothing, on `split` and keep it in RUN/temperature.json
    (fermetric.evaluation.calibration.calibrate_run); `predict` then uses it."""
    from fermetric.evaluation.calibration import calibrate_run
    from fermetric.scoring.tta import resolve_tta

    with writing_to(run, hint="the calibration is kept in the run: copy the run somewhere writable"):
        return calibrate_run(open_for_command(run, device, precision, data), split, resolve_tta(tta))


def ensemble(runs: Sequence[PathLike], split: str = "val", tta: bool | str = False, out: PathLike = "ensemble",
             device: Optional[str] = "auto", precision: Optional[str] = "auto",
             data: Optional[PathLike] = None) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric ensemble`: soft vote and val-accuracy-weighted vote of runs on a split
    (fermetric.evaluation.ensemble.ensemble_report), written as OUT/ensemble_<split>.json / .md.

    Returns:
        (results, paths written); `ensemble_markdown(results)` is the table.
    """
    from fermetric.evaluation.ensemble import ensemble_report, write_ensemble

    claim_output(out, "ensemble", "ensemble_*.json")
    members = [open_for_command(r, device, precision, data) for r in runs]
    results = ensemble_report(members, split, tta)
    with staged_outputs(out) as tmp:
        paths = [final_path(p, tmp, out) for p in write_ensemble(results, tmp)]
    return results, paths
