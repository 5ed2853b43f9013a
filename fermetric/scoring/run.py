"""The scorers of a run, and its class probabilities and predictions through them.

`run_scorer` is the one path from a run (a trained directory, a zoo entry, an ensemble of runs)
to class scores; `split_proba`, `split_predictions` and `dataset_predictions` are what evaluate,
calibrate, ensembles, predict and the kNN report ask of it, computed through that scorer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fermetric.errors import FermetricError
from fermetric.models.layers import PreLogits
from fermetric.retrieval.embeddings import embed_images, embed_split, split_embeddings
from fermetric.retrieval.index import gallery_exclude, run_knn
from fermetric.runs.ensemble import EnsembleRun
from fermetric.runs.reader import register_moved
from fermetric.scoring.base import Scorer
from fermetric.scoring.calibration import CalibratedScorer, apply_calibration
from fermetric.scoring.classifier import ClassifierScorer
from fermetric.scoring.ensemble import EnsembleScorer, soft_vote
from fermetric.scoring.knn import KNNScorer
from fermetric.scoring.prototype import PrototypeScorer
from fermetric.scoring.tta import resolve_tta, tta_scorer

SCORER_KINDS = ("auto", "classifier", "prototype", "knn")


def run_scorer(run: Any, kind: str = "auto", output: str = "softmax", batch_size: int = 256, tta: bool | str = False,
               compile: Any = "auto") -> Scorer:
    """The run as a Scorer (images -> class scores).

    Args:
        run: a fermetric.runs.Run or EnsembleRun.
        kind: "auto" (classifier runs: "classifier"; embedding runs: "prototype"; ensembles: the
            weighted vote), "classifier", "prototype" (cosine to train-class centroids,
            differentiable) or "knn" (kNN vote fractions through the run's index, black box).
        output: classifier scores as "softmax" probabilities or raw "logits".
        batch_size: images per forward pass.
        tta: wrap the scorer in a TTAScorer: True / "shift" (mean scores over 5 crops x flip)
            or "tencrop" (the crops at the run's training crop padding, see scoring.tta).
        compile: the scorer's torch.compile setting (see Scorer.compile); False for one pass
            over a split or for small batches of varying size.
    """
    if isinstance(run, EnsembleRun):
        return _ensemble_scorer(run, kind, batch_size, tta, compile)
    if kind not in SCORER_KINDS:
        raise FermetricError(f"unknown scorer {kind!r}; valid: {', '.join(SCORER_KINDS)}")
    if kind == "auto":
        kind = "classifier" if run.kind == "classifier" else "prototype"
    if kind == "classifier":
        if run.kind != "classifier":
            raise FermetricError(f"{run.path} is an embedding run; use the 'prototype' or 'knn' scorer")
        sc = ClassifierScorer(run.model, output=output, class_names=run.class_names, batch_size=batch_size,
                              precision=run.precision)
    else:
        embed_model = run.model if run.kind == "embedding" else PreLogits(run.model)
        if kind == "prototype":
            gallery, labels = split_embeddings(run, "train")
            sc = PrototypeScorer(embed_model, gallery, labels, num_classes=len(run.class_names),
                                 class_names=run.class_names, batch_size=batch_size, precision=run.precision)
        else:
            sc = KNNScorer(embed_model, run_knn(run), num_classes=len(run.class_names),
                           class_names=run.class_names, batch_size=batch_size, precision=run.precision)
    sc.compile = compile
    return tta_scorer(sc, tta, run.crop_padding)


def run_scorers(run: Any, knn: bool = True, **kwargs: Any) -> dict[str, Scorer]:
    """The run's scorers for comparing explanations, labelled "<run> (<model>)": the classifier
    scorer of a classifier run; the prototype scorer of an embedding run and, with `knn`, its
    black-box kNN scorer; an ensemble's vote. `kwargs` go to `run_scorer`."""
    if isinstance(run, EnsembleRun):
        return {f"{run.name} (ensemble)": run_scorer(run, "auto", **kwargs)}
    label = f"{run.name} ({run.cfg.model.name})"
    if run.kind == "classifier":
        return {label: run_scorer(run, "classifier", **kwargs)}
    out = {f"{label} prototype": run_scorer(run, "prototype", **kwargs)}
    if knn:
        out[f"{label} kNN"] = run_scorer(run, "knn", **kwargs)
    return out


def member_scorers(ens: EnsembleRun, batch_size: int = 256, compile: Any = "auto") -> list[Scorer]:
    """Each member's scorer, as it votes (its probabilities, calibrated where `fermetric calibrate`
    fitted the member for the TTA it votes with)."""
    out = []
    for m in ens.members:
        sc = run_scorer(m.run, m.scorer, output="softmax", batch_size=batch_size, tta=m.tta or False, compile=compile)
        cal = m.run.stored_calibration(m.tta)
        out.append(sc if cal is None else CalibratedScorer(sc, cal))
    return out


def _calibrated(member: Any, probs: np.ndarray) -> np.ndarray:
    """A member's probabilities as it votes: calibrated when `fermetric calibrate` fitted it for its TTA."""
    cal = member.run.stored_calibration(member.tta)
    return probs if cal is None else apply_calibration(probs, cal).astype(np.float32)


def _ensemble_scorer(ens: EnsembleRun, kind: str, batch_size: int, tta: Any, compile: Any) -> EnsembleScorer:
    """The ensemble as one Scorer: an EnsembleScorer over `member_scorers` (probabilities whatever
    `output` asks: a vote has no logits). Gradient methods take it when every member is
    differentiable (a kNN member makes it a black box: occlusion and LIME)."""
    if kind not in ("auto", "ensemble"):
        raise FermetricError(f"{ens.pretrained or ens.path} is an ensemble: its scorer is 'auto' (the weighted vote), "
                             f"not {kind!r}; to score one member, give that member's name")
    ens.refuse_tta(resolve_tta(tta))
    return EnsembleScorer(member_scorers(ens, batch_size, compile), ens.weights, names=ens.labels)


def split_proba(run: Any, split: str, tta: bool | str = False, batch_size: int = 512) -> np.ndarray:
    """(N, C) class probabilities of a split through the run's scorer: softmax for classifiers
    (TTAScorer with `tta`: True / "shift" or "tencrop"), kNN vote fractions (gallery = the train
    split) for embedding runs, voted from the cached embeddings (train images never vote for
    themselves); an ensemble's weighted vote of its members'. Kept in `run.derived`."""
    mode = resolve_tta(tta)
    key = f"proba:{split}:{mode}"
    if key in run.derived:
        return run.derived[key]
    if isinstance(run, EnsembleRun):
        run.refuse_tta(mode)
        probs = soft_vote([_calibrated(m, split_proba(m.run, split, m.tta or False, batch_size)) for m in run.members],
                          run.weights).astype(np.float32)
    elif run.kind == "classifier":
        # one pass over a split: a compile (40-90 s) would not repay itself
        sc = run_scorer(run, "classifier", output="softmax", batch_size=batch_size, tta=mode or False, compile=False)
        probs = sc.scores(run.load_data()[split].images).numpy()
    else:
        _no_tta_for_knn(mode)
        probs = run_scorer(run, "knn").vote(embed_split(run, split, batch_size), exclude=gallery_exclude(run, split))
    run.derived[key] = probs
    return probs


def split_predictions(run: Any, split: str, tta: bool | str = False) -> np.ndarray:
    """(N,) predicted class ids of a split: the arg-max of `split_proba`, except that an
    embedding run's kNN vote gives ties to the nearest neighbour's class (KNNScorer.vote_predict,
    as knn-eval counts them)."""
    if isinstance(run, EnsembleRun) or run.kind == "classifier":
        return split_proba(run, split, tta=tta).argmax(1)
    _no_tta_for_knn(resolve_tta(tta))
    return run_scorer(run, "knn").vote_predict(embed_split(run, split), exclude=gallery_exclude(run, split))


def dataset_predictions(run: Any, dataset, tta: bool | str = False, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class ids (N,) and probabilities (N, C) of any FERDataset (another data set's
    images): the softmax (TTA on request) for classifiers, the kNN vote over the run's train
    gallery for embedding runs (no image of `dataset` is in the gallery), an ensemble's vote."""
    mode = resolve_tta(tta)
    if isinstance(run, EnsembleRun):
        run.refuse_tta(mode)
        probs = soft_vote([_calibrated(m, dataset_predictions(m.run, dataset, m.tta or False, batch_size)[1])
                           for m in run.members], run.weights).astype(np.float32)
        return probs.argmax(1), probs
    if run.kind == "classifier":
        sc = run_scorer(run, "classifier", output="softmax", batch_size=batch_size, tta=mode or False, compile=False)
        probs = sc.scores(dataset.images).numpy()
        return probs.argmax(1), probs
    _no_tta_for_knn(mode)
    return run_scorer(run, "knn").vote_with_predictions(embed_images(run, dataset, batch_size))


def _no_tta_for_knn(mode: Any) -> None:
    if mode:
        raise FermetricError("TTA is for classifier runs; embedding runs vote through the kNN index")


for _name, _fn in (("scorer", run_scorer), ("scorers", run_scorers), ("predict_proba", split_proba),
                   ("predict", split_predictions), ("predict_images", dataset_predictions)):
    register_moved(_name, _fn)
