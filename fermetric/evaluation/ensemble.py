"""Ensembles of anything that yields class probabilities: soft vote (mean of the members'
probabilities), a vote weighted by each member's validation accuracy, and a vote with weights
searched on the simplex for the best validation accuracy (`fitted_vote`; a kNN member's sharp
vote fractions need it).

Weights fitted on the split being reported would flatter the ensemble. `ensemble_report` fits
them on val and reports test; when the report is on val itself, the weights are cross-fitted:
val is cut in two halves (a seeded shuffle) and each half is voted with the accuracies the
members reach on the other half. The report says which split the weights were fitted on."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fermetric.errors import FermetricError
from fermetric.evaluation.significance import comparison_text, paired_comparison
from fermetric.evaluation.calibration import brief_calibration
from fermetric.scoring.ensemble import soft_vote
from fermetric.scoring.run import split_predictions, split_proba


CROSS_FIT_FOLDS = 2


def accuracy_weights(probs: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """Each member's accuracy on (probs, y); all 1 when every member is always wrong."""
    w = [float((p.argmax(1) == y).mean()) for p in probs]
    return w if sum(w) > 0 else [1.0] * len(probs)


def _simplex_grid(m: int, steps: int) -> np.ndarray:
    """All weight vectors of m members in multiples of 1/steps that sum to 1, (G, m)."""
    import itertools

    # stars and bars: each way of cutting `steps` units into m parts
    rows = [np.diff([0, *cuts, steps]) for cuts in itertools.combinations_with_replacement(range(steps + 1), m - 1)]
    return np.asarray(rows, dtype=np.float64) / steps


def searched_weights(probs: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """Weights on a grid over the simplex (steps of 0.05 for 2 members, 0.1 for up to 4, 0.2
    beyond) that maximise the soft vote's accuracy on (probs, y), ties going to the lower
    negative log-likelihood. A weight of 0 drops a member: this is member selection too. kNN vote
    fractions are far sharper than a softmax, so equal or accuracy weights let a kNN member
    outvote a better classifier; fitted weights do not."""
    m = len(probs)
    grid = _simplex_grid(m, 20 if m == 2 else (10 if m <= 4 else 5))
    stack = np.stack(probs).astype(np.float64)  # (m, N, C)
    best, best_key = None, None
    for w in grid:
        ens = np.tensordot(w, stack, axes=1)
        acc = float((ens.argmax(1) == y).mean())
        nll = float(-np.log(np.clip(ens[np.arange(len(y)), y], 1e-6, None)).mean())
        key = (round(acc, 12), -nll)
        if best_key is None or key > best_key:
            best, best_key = w, key
    return [float(x) for x in best]


WEIGHT_FITS = {"accuracy": accuracy_weights, "search": searched_weights}


def cross_fitted_vote(probs: Sequence[np.ndarray], y: np.ndarray, folds: int = CROSS_FIT_FOLDS,
                      seed: int = 0, fit: str = "accuracy") -> tuple[np.ndarray, list[list[float]]]:
    """Weighted soft vote where no image is voted with weights its own label fitted.

    Args:
        probs: the members' (N, C) probabilities on one split.
        y: (N,) labels of that split.
        folds: parts the split is cut into (a shuffle seeded by `seed`); each part is voted with
            weights fitted on the other parts.
        fit: "accuracy" (each member's accuracy) or "search" (`searched_weights`).

    Returns:
        (N, C) ensemble probabilities and the weights used for each part.
    """
    n = len(y)
    if n < folds:
        raise FermetricError(f"cross-fitting ensemble weights needs at least {folds} images, got {n}")
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    out = np.zeros(np.stack(probs).shape[1:], dtype=np.float64)
    used = []
    for part in parts:
        rest = np.setdiff1d(np.arange(n), part)
        w = WEIGHT_FITS[fit]([p[rest] for p in probs], y[rest])
        out[part] = soft_vote([p[part] for p in probs], w)
        used.append(w)
    return out, used


def check_same_data(runs: Sequence[Any], splits: Sequence[str]) -> None:
    """Refuse to vote or compare runs whose `splits` hold other faces or labels (e.g. SynthFER
    drawn with another seed, another CSV): every member would be scored against the first run's
    labels, and the result would be reported as a success.

    Raises:
        FermetricError: naming the two runs, the split and their data sources.
    """
    first = runs[0]
    for split in splits:
        want = first.load_data()[split].fingerprint()
        for r in runs[1:]:
            if r.load_data()[split].fingerprint() != want:
                raise FermetricError(
                    f"{r.path} was not trained on the same data as {first.path}: their {split} splits hold other "
                    f"images or labels (data {r.cfg.data.source or 'synth'!s} seed {r.cfg.seed} vs "
                    f"{first.cfg.data.source or 'synth'!s} seed {first.cfg.seed}); vote or compare runs of one data set")


def vote_diversity(predictions: Sequence[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """How much room a vote of these members has: how often each pair predicts the same class
    (`agreement`, a symmetric matrix in member order; `mean_agreement` over the pairs), how often
    at least one member is right (`oracle_accuracy`: no vote of them can do better) and how often
    all are (`all_right`: faces every vote gets right). Members that agree on most faces leave a
    vote few faces to win, whatever its weights (Kuncheva & Whitaker 2003)."""
    shapes = [np.shape(p) for p in predictions]
    if not shapes or any(s != (len(y),) for s in shapes):
        raise FermetricError(f"vote_diversity takes one (N,) prediction per member for {len(y)} labels; "
                             f"got shapes {shapes}")
    preds = np.stack([np.asarray(p) for p in predictions])
    k = preds.shape[0]
    agreement = (preds[:, None, :] == preds[None, :, :]).mean(-1)
    pairs = agreement[np.triu_indices(k, 1)]
    right = preds == np.asarray(y)[None, :]
    return {"agreement": agreement.round(6).tolist(),
            "mean_agreement": float(pairs.mean()) if pairs.size else 1.0,
            "oracle_accuracy": float(right.any(0).mean()), "all_right": float(right.all(0).mean())}


def ensemble_report(members: Sequence[Any], split: str = "val", tta: bool | str = False,
                    keep_predictions: bool = False) -> dict[str, Any]:
    """Soft vote, val-accuracy-weighted vote and searched-weight vote of runs
    (fermetric.runs.Run) on a split.

    Args:
        keep_predictions: also return each vote's (N,) predicted class ids ("predictions"), e.g.
            for a paired comparison with a member (fermetric.evaluation.significance).

    Returns:
        {"members": [{member, kind, model, val_acc, <split>_acc}], "split", "tta",
         "soft_vote": metrics, "val_weighted_vote" and "fitted_vote": metrics + "weights",
         "weights_fitted_on", "diversity": vote_diversity of the members' predictions}.

    Raises:
        FermetricError: the runs disagree on classes, or their splits hold other images or labels.
    """
    from fermetric.evaluation.metrics import classification_metrics

    if split not in ("val", "test"):
        raise FermetricError(f"ensembles are reported on val or test, not {split!r} (the members were fitted on train)")
    names = {tuple(m.class_names) for m in members}
    if len(names) != 1:
        raise FermetricError(f"runs disagree on class names: {sorted(names)}")
    class_names = members[0].class_names
    check_same_data(members, sorted({split, "val"}))
    y = members[0].load_data()[split].labels.numpy()
    y_val = members[0].load_data()["val"].labels.numpy()
    probs, val_probs, rows, member_preds = [], [], [], []
    for m in members:
        m_tta = tta if m.kind == "classifier" else False  # the mode itself ("tencrop"), not just True
        p = split_proba(m, split, tta=m_tta)
        pv = p if split == "val" else split_proba(m, "val", tta=m_tta)
        for arr, labels, name in ((p, y, split), (pv, y_val, "val")):
            if arr.shape[0] != len(labels):
                raise FermetricError(f"{m.path}: {arr.shape[0]} {name} predictions for {len(labels)} images; "
                                     "were the runs trained on the same data?")
        probs.append(p)
        val_probs.append(pv)
        pred_val = split_predictions(m, "val", tta=m_tta)
        pred = pred_val if split == "val" else split_predictions(m, split, tta=m_tta)
        member_preds.append(pred)
        val_acc = float((pred_val == y_val).mean())
        acc = float((pred == y).mean())
        rows.append({"member": str(m.path), "kind": m.kind, "model": m.cfg.model.name, "val_acc": val_acc,
                     f"{split}_acc": acc, "calibration": brief_calibration(p, y)})
    results: dict[str, Any] = {"members": rows, "split": split, "tta": tta}
    # each vote against the member most accurate on this split (the strictest reference)
    best = int(np.argmax([r[f"{split}_acc"] for r in rows]))
    results["best_member"] = rows[best]["member"]
    results["diversity"] = vote_diversity(member_preds, y)

    def vote_result(vote_probs: np.ndarray, **extra: Any) -> dict[str, Any]:
        pred = vote_probs.argmax(1)
        out = {**classification_metrics(y, pred, class_names), **extra, "calibration": brief_calibration(vote_probs, y),
               "vs_best_member": paired_comparison(y, member_preds[best], pred)}
        if keep_predictions:
            out["predictions"] = pred
        return out

    results["soft_vote"] = vote_result(soft_vote(probs))
    for key, fit in (("val_weighted_vote", "accuracy"), ("fitted_vote", "search")):
        if split == "val":
            ens, weights = cross_fitted_vote(probs, y, seed=members[0].cfg.seed, fit=fit)
        else:
            weights = [WEIGHT_FITS[fit](val_probs, y_val)]
            ens = soft_vote(probs, weights[0])
        results[key] = vote_result(ens, weights=weights)
    results["weights_fitted_on"] = (
        f"val, {CROSS_FIT_FOLDS}-fold cross-fitted (each half of val voted with weights fitted on the other half)"
        if split == "val" else "val")
    return results


def ensemble_markdown(results: dict[str, Any]) -> str:
    """The members' and the votes' accuracies of `ensemble_report` output as a Markdown table."""
    from pathlib import Path

    split = results["split"]
    def cal(c: Any) -> str:
        return f"{c['ece'] * 100:.2f} % / {c['nll']:.3f} / {c['brier']:.3f}" if c else ""

    lines = [f"| member | kind | {split} accuracy | ECE / NLL / Brier | vs the best member [95 % CI], McNemar p |",
             "|---|---|---:|---:|---|"]
    for r in results["members"]:
        lines.append(f"| {Path(r['member']).name} ({r['model']}) | {r['kind']} | {r[f'{split}_acc'] * 100:.2f} % | "
                     f"{cal(r.get('calibration'))} | |")
    for vote in ("soft_vote", "val_weighted_vote", "fitted_vote"):
        if vote in results:
            cmp = results[vote].get("vs_best_member")
            lines.append(f"| **{vote.replace('_', ' ')}** | ensemble | **{results[vote]['accuracy'] * 100:.2f} %** | "
                         f"{cal(results[vote].get('calibration'))} | {comparison_text(cmp) if cmp else ''} |")
    div = results.get("diversity")
    room = (f"\n\nThe members predict the same class on {div['mean_agreement'] * 100:.1f} % of the images (mean over "
            f"pairs); at least one is right on {div['oracle_accuracy'] * 100:.2f} % (no vote of them can do better), all "
            f"on {div['all_right'] * 100:.2f} %." if div else "")
    return ("\n".join(lines) + f"\n\nval-weighted and fitted votes: weights fitted on {results['weights_fitted_on']}. "
            "Each vote is compared image by image with the member most accurate on this split (paired bootstrap, "
            "McNemar's exact test)." + room + "\n")


def write_ensemble(results: dict[str, Any], out_dir: Any) -> list:
    """Write OUT/ensemble_<split>.json and .md (ensemble_markdown); returns both paths."""
    from pathlib import Path

    from fermetric.utils.io import atomic_write_text, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = results["split"]
    return [write_json(out / f"ensemble_{split}.json", results),
            atomic_write_text(out / f"ensemble_{split}.md", ensemble_markdown(results))]
