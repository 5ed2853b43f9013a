"""How faithful is an explanation? Metrics that work for any method and any scorer.

- Deletion / insertion (Petsiuk et al. 2018, RISE): remove (or add) pixels in order of
  attribution and follow the target score; a faithful map makes it fall fast (low deletion AUC)
  and rise fast (high insertion AUC).
- Evidence-mask metrics on SynthFER, whose images carry ground-truth evidence masks: the share of
  attribution mass inside the mask divided by the mask's share of the image (1.0 = chance), and
  the pointing game (Zhang et al. 2016): is the top pixel inside the mask, with a tolerance.
- Model-randomisation sanity check (Adebayo et al. 2018): explain the trained model and a copy
  with re-initialised weights; a high Spearman rank correlation between the two maps means the
  method does not depend on what the model learnt, and fails the check.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.analysis.filters import gaussian_blur
from fermetric.models.layers import parametrised_layers
from fermetric.analysis.methods import METHODS, _check_method, explain, supports
from fermetric.scoring import Scorer, as_image_batch, check_batch_size
from fermetric.analysis.targets import resolve_targets
from fermetric.errors import ConfigError, DataError
from fermetric.utils.checks import check_int

_trapezoid = getattr(np, "trapezoid", None) or np.trapz


# -- deletion / insertion ---------------------------------------------------------------------

@dataclass
class PerturbationCurve:
    """Scores along a deletion or insertion run.

    Attributes:
        mode: "deletion" or "insertion".
        fractions: (S+1,) share of pixels removed / inserted at each step, 0..1.
        scores: (N, S+1) target score at each step.
        auc: (N,) area under each curve (trapezoid over `fractions`).
        targets: (N,) explained classes.
        baseline: what removed pixels became ("zero", "blur" or a number).
    """

    mode: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    targets: np.ndarray
    baseline: str

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.auc)) if self.auc.size else float("nan")


def _as_array(x: Any, dtype: Any = None) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=dtype)


def _check_maps(attributions: Any, n: int, h: int, w: int, what: str = "attributions") -> np.ndarray:
    a = _as_array(attributions, np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (n, h, w):
        raise DataError(f"{what} must have shape ({n}, {h}, {w}) (one map per image); got {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return a


def attribution_ranks(attributions: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Rank of every pixel (0 = most important), (N, H*W) int64.

    Ties (e.g. a flat Grad-CAM region) are broken by one seeded random order, not by position,
    so a constant map is not mistaken for "top-left first".
    """
    n = attributions.shape[0]
    flat = attributions.reshape(n, -1)
    tie = np.random.default_rng(seed).permutation(flat.shape[1])
    ranks = np.empty(flat.shape, np.int64)
    for i in range(n):
        order = np.lexsort((tie, -flat[i]))
        ranks[i, order] = np.arange(flat.shape[1])
    return torch.from_numpy(ranks)


def _baseline_images(x: torch.Tensor, baseline: Union[str, float], blur_sigma: float) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x, blur_sigma)
        if baseline == "mean":
            return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
        raise ConfigError(f"baseline must be 'zero', 'blur', 'mean' or a number; got {baseline!r}")
    return torch.full_like(x, float(baseline))


def perturbation_curve(
    scorer: Scorer,
    images: Any,
    attributions: Any,
    target: Any = None,
    *,
    mode: str = "deletion",
    steps: int = 20,
    baseline: Union[str, float, None] = None,
    blur_sigma: float = 4.0,
    seed: int = 0,
    batch_size: Optional[int] = None,
) -> PerturbationCurve:
    """Deletion or insertion curve of each image.

    Args:
        scorer: any scorer; its raw scores are followed (use ClassifierScorer(output="softmax")
            for probability curves as in the RISE paper).
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        attributions: (N, 48, 48) maps; larger = removed / inserted first.
        target: None (class predicted on the intact image), an int / class name, or N of them.
        mode: "deletion" (intact -> baseline) or "insertion" (baseline -> intact).
        steps: number of equal pixel steps (the curve has steps + 1 points).
        baseline: "zero", "blur" (Gaussian, `blur_sigma` px), "mean" or a number; default: zero
            for deletion and blur for insertion (as Petsiuk et al.).
        seed: tie-breaking order of equal attributions.
        batch_size: perturbed copies per forward pass.

    Returns:
        PerturbationCurve with (N, steps + 1) scores and (N,) AUCs.
    """
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"mode must be 'deletion' or 'insertion'; got {mode!r}")
    check_int("steps", steps, 1)
    x = as_image_batch(images)
    n, _, h, w = x.shape
    a = _check_maps(attributions, n, h, w)
    if baseline is None:
        baseline = "zero" if mode == "deletion" else "blur"
    base = _baseline_images(x, baseline, blur_sigma)
    bs = check_batch_size(batch_size or scorer.batch_size)
    t = resolve_targets(scorer, x, target, bs)
    ranks = attribution_ranks(a, seed).view(n, 1, h, w)
    counts = torch.round(torch.linspace(0, h * w, int(steps) + 1)).long()  # pixels changed per step
    s1 = int(steps) + 1
    scores = torch.empty(n * s1)
    for start in range(0, n * s1, bs):
        idx = torch.arange(start, min(start + bs, n * s1))
        i, k = idx // s1, idx % s1
        changed = ranks[i] < counts[k].view(-1, 1, 1, 1)
        if mode == "deletion":
            batch = torch.where(changed, base[i], x[i])
        else:
            batch = torch.where(changed, x[i], base[i])
        scores[idx] = scorer.scores(batch, bs).gather(1, t[i].view(-1, 1))[:, 0]
    scores = scores.view(n, s1).numpy()
    fractions = (counts.double() / (h * w)).numpy()
    auc = np.array([_trapezoid(row, fractions) for row in scores])
    return PerturbationCurve(mode, fractions, scores, auc, t.numpy(), str(baseline))


def deletion_curve(scorer: Scorer, images: Any, attributions: Any, target: Any = None, **kwargs: Any) -> PerturbationCurve:
    """`perturbation_curve` with mode="deletion" (lower AUC = more faithful)."""
    return perturbation_curve(scorer, images, attributions, target, mode="deletion", **kwargs)


def insertion_curve(scorer: Scorer, images: Any, attributions: Any, target: Any = None, **kwargs: Any) -> PerturbationCurve:
    """`perturbation_curve` with mode="insertion" (higher AUC = more faithful)."""
    return perturbation_curve(scorer, images, attributions, target, mode="insertion", **kwargs)


# -- ground-truth evidence masks ----------------------------------------------------------------

def _check_masks(masks: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = _as_array(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.shape != shape:
        raise DataError(f"masks must have shape {shape} (one evidence mask per map); got {m.shape}")
    return m.astype(bool)


def mask_mass_ratio(attributions: Any, masks: Any, mode: str = "positive") -> np.ndarray:
    """Share of attribution mass inside the evidence mask over the mask's area share.

    1.0 = no better than spreading mass uniformly; 1 / area_share = all mass inside.

    Args:
        attributions: (N, H, W) maps.
        masks: (N, H, W) bool evidence masks.
        mode: "positive" (mass of max(a, 0): evidence for the class) or "absolute" (|a|).

    Returns:
        (N,) float; NaN where a map has no mass or a mask is empty.
    """
    a = _as_array(attributions, np.float64)
    if a.ndim != 3:
        raise DataError(f"attributions must have shape (N, H, W); got {a.shape}")
    m = _check_masks(masks, a.shape)
    if mode == "positive":
        mass = np.clip(a, 0, None)
    elif mode == "absolute":
        mass = np.abs(a)
    else:
        raise ConfigError(f"mode must be 'positive' or 'absolute'; got {mode!r}")
    total = mass.reshape(len(a), -1).sum(1)
    inside = (mass * m).reshape(len(a), -1).sum(1)
    area = m.reshape(len(a), -1).mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (inside / total) / area
    return np.where((total > 0) & (area > 0), ratio, np.nan)


def pointing_game(attributions: Any, masks: Any, tolerance: int = 2) -> np.ndarray:
    """Whether each map's top pixel lies in the evidence mask grown by `tolerance` pixels.

    Args:
        attributions: (N, H, W) maps (the arg-max is the "pointed" pixel).
        masks: (N, H, W) bool evidence masks.
        tolerance: dilation radius in pixels (a (2t+1)^2 square).

    Returns:
        (N,) float: 1.0 hit, 0.0 miss, NaN for an empty mask.
    """
    a = _as_array(attributions, np.float64)
    if a.ndim != 3:
        raise DataError(f"attributions must have shape (N, H, W); got {a.shape}")
    m = _check_masks(masks, a.shape)
    check_int("tolerance", tolerance, 0)
    grown = _grown(m, tolerance).reshape(len(a), -1)
    top = a.reshape(len(a), -1).argmax(1)
    hit = grown[np.arange(len(a)), top].astype(float)
    return np.where(m.reshape(len(a), -1).any(1), hit, np.nan)


def _grown(masks: np.ndarray, tolerance: int) -> np.ndarray:
    """(N, H, W) bool masks grown by `tolerance` pixels (a (2t+1)^2 square): the pointing game's hits."""
    mt = torch.from_numpy(np.asarray(masks, dtype=bool)).float()[:, None]
    if tolerance:
        mt = F.max_pool2d(mt, 2 * int(tolerance) + 1, stride=1, padding=int(tolerance))
    return mt[:, 0].numpy() > 0


def pointing_chance(masks: Any, tolerance: int = 2) -> float:
    """The pointing game's chance level: the share of pixels it counts as hits (within the masks
    grown by `tolerance`), i.e. what a top pixel drawn uniformly at random would score."""
    return float(_grown(_check_masks(masks, np.shape(masks)), tolerance).mean())


# -- model randomisation --------------------------------------------------------------------------

def randomized_copy(model: nn.Module, top_layers: Optional[int] = None, seed: int = 0) -> nn.Module:
    """A deep copy of `model` with re-initialised weights (the caller's model is untouched).

    Args:
        model: any nn.Module.
        top_layers: re-initialise only the last `top_layers` parametrised layers (cascading
            randomisation from the top); None re-initialises all of them.
        seed: seeds the new weights without touching the global random state.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # Re-initialise on the CPU so the CPU generator (forked and seeded here) draws the weights
    # wherever the model lives.
    clone = copy.deepcopy(model).cpu()
    layers = parametrised_layers(clone)
    chosen = layers if top_layers is None else layers[len(layers) - int(top_layers):] if top_layers > 0 else []
    with torch.random.fork_rng(devices=[]):
        # Offset the seed: a model built right after torch.manual_seed(seed) would otherwise get
        # its own initial weights back.
        torch.manual_seed(int(seed) * 7919 + 104729)
        for _, module in chosen:
            module.reset_parameters()
    return clone.to(device)


@dataclass
class RandomizationResult:
    """Spearman rank correlation of each image's map, trained vs randomised model.

    Attributes:
        mode: "full" or "cascading".
        stages: one label per randomisation stage (for cascading: the lowest layer re-initialised
            so far, "all layers" at the end).
        correlations: (S, N) per stage and image (see `spearman_per_image` for constant maps).
        mean: (S,) NaN-ignoring mean per stage.
    """

    mode: str
    stages: list[str]
    correlations: np.ndarray
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def final(self) -> float:
        """Mean correlation after the last stage (all layers re-initialised)."""
        return float(self.mean[-1]) if self.mean.size else float("nan")


def spearman_per_image(a: np.ndarray, b: np.ndarray, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation of maps a[i] and b[i]; (N,).

    A constant map has no ranking (e.g. Grad-CAM of a randomised model, all zero after the
    ReLU): against a non-constant one it shares no rank information and counts as 0; two
    constant maps give NaN.
    """
    from scipy.stats import spearmanr

    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        u, v = a[i].ravel(), b[i].ravel()
        if absolute:
            u, v = np.abs(u), np.abs(v)
        flat_u, flat_v = np.ptp(u) == 0, np.ptp(v) == 0
        if not flat_u and not flat_v:
            out[i] = spearmanr(u, v).statistic
        elif flat_u != flat_v:
            out[i] = 0.0
    return out


def randomization_check(
    scorer: Scorer,
    images: Any,
    method: str,
    target: Any = None,
    *,
    mode: str = "full",
    stages: int = 4,
    absolute: bool = True,
    seed: int = 0,
    maps: Optional[np.ndarray] = None,
    **options: Any,
) -> RandomizationResult:
    """Model-randomisation sanity check of one method (Adebayo et al. 2018).

    Args:
        scorer: the trained model's scorer; a copy wraps each randomised model (a PrototypeScorer
            keeps the trained gallery centroids, a KNNScorer the trained index).
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        method: one of METHODS.
        target: None (class predicted by the trained model), an int / class name, or N of them;
            the randomised model explains the same classes.
        mode: "full" (all weights at once) or "cascading" (from the top layer down, in `stages`
            cumulative steps ending with all layers).
        stages: number of cascading stages.
        absolute: correlate |maps| (as the paper's main figures).
        seed: seeds the new weights.
        maps: the trained model's (N, 48, 48) maps, if already computed.
        **options: passed to the method.

    Returns:
        RandomizationResult; high correlation = the map ignores the weights (fails the check).
    """
    _check_method(method)
    if mode not in ("full", "cascading"):
        raise ConfigError(f"mode must be 'full' or 'cascading'; got {mode!r}")
    x = as_image_batch(images)
    t = resolve_targets(scorer, x, target, options.get("batch_size"))
    trained = explain(scorer, x, method, t, **options) if maps is None else _check_maps(maps, *x.shape[:1], *x.shape[2:])
    layers = parametrised_layers(scorer.model)
    if mode == "full" or not layers:
        plan = [(None, "all layers")]
    else:
        n_layers = len(layers)
        ks = sorted({max(1, int(round(n_layers * (s + 1) / max(1, int(stages))))) for s in range(max(1, int(stages)))})
        plan = [(k, layers[n_layers - k][0] if k < n_layers else "all layers") for k in ks]
    corrs = []
    for k, _ in plan:
        rnd = scorer.with_model(randomized_copy(scorer.model, k, seed))
        corrs.append(spearman_per_image(trained, explain(rnd, x, method, t, **options), absolute))
    c = np.array(corrs)
    with np.errstate(invalid="ignore"):
        mean = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in c])
    return RandomizationResult(mode, [label for _, label in plan], c, mean)


# -- the methods x models table -------------------------------------------------------------------

TABLE_COLUMNS = (
    "model", "method", "n_images", "deletion_auc", "insertion_auc", "mask_mass_ratio",
    "pointing_game", "randomization_spearman", "seconds_per_image",
)


def _nanmean(v: np.ndarray) -> Optional[float]:
    v = np.asarray(v, dtype=float)
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else None


def evaluate_explanations(
    scorers: Mapping[str, Scorer],
    images: Any,
    labels: Any = None,
    masks: Any = None,
    methods: Sequence[str] = METHODS,
    *,
    target: str = "label",
    steps: int = 20,
    deletion_baseline: Union[str, float] = "zero",
    insertion_baseline: Union[str, float] = "blur",
    randomization: Optional[str] = "full",
    tolerance: int = 2,
    method_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    seed: int = 0,
    batch_size: Optional[int] = None,
    progress: Union[bool, Callable[[str, str], None]] = False,
) -> list[dict[str, Any]]:
    """Faithfulness of every method on every model: one row per (model, method).

    Args:
        scorers: name -> scorer (e.g. {"resnet18": ClassifierScorer(...), "triplet": PrototypeScorer(...),
            "triplet-knn": KNNScorer(...)}). Gradient methods on a black-box scorer give a row
            with a `note` and no numbers.
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        labels: (N,) true classes (needed when target="label").
        masks: (N, 48, 48) bool evidence masks (SynthFER) or None (mask columns stay empty).
        methods: names from METHODS.
        target: "label" (explain the true class) or "predicted" (each model's prediction).
        steps, deletion_baseline, insertion_baseline: see `perturbation_curve`.
        randomization: "full", "cascading" (its last stage is reported) or None to skip.
        tolerance: pointing-game tolerance in pixels.
        method_options: method -> options passed to `explain` (e.g. {"lime": {"num_samples": 500}}).
        seed: seeds randomised weights and tie-breaking.
        batch_size: forward batch size for every step.
        progress: True for a tqdm bar, or a callback(model_name, method) called before each pair.

    Returns:
        Rows (dicts) with the keys in TABLE_COLUMNS plus "scorer", "mask_mass_ratio_abs",
        "note"; None where a value does not apply. Scores are each scorer's own (deletion AUC
        of a logit scorer is in logits): compare methods within a model.
    """
    for m in methods:
        _check_method(m)
    if target not in ("label", "predicted"):
        raise ConfigError(f"target must be 'label' or 'predicted'; got {target!r}")
    x = as_image_batch(images)
    n = x.shape[0]
    lab = None
    if labels is not None:
        lab = torch.as_tensor(_as_array(labels)).long().view(-1)
        if lab.shape[0] != n:
            raise DataError(f"labels must have {n} entries (one per image); got {lab.shape[0]}")
    elif target == "label":
        raise ConfigError("target='label' needs labels; pass labels or use target='predicted'")
    m_arr = None if masks is None else _check_masks(masks, (n, *x.shape[2:]))
    opts_all = dict(method_options or {})
    unknown = sorted(set(opts_all) - set(METHODS))
    if unknown:
        raise ConfigError(f"method_options for unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    pairs = [(name, m) for name in scorers for m in methods]
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="explain-eval", unit="pair")
    rows = []
    for name, method in pairs:
        scorer = scorers[name]
        if callable(progress):
            progress(name, method)
        row: dict[str, Any] = {c: None for c in TABLE_COLUMNS}
        row.update(model=name, scorer=getattr(scorer, "kind", type(scorer).__name__), method=method, n_images=n,
                   mask_mass_ratio_abs=None, note="")
        if not supports(scorer, method):
            row["note"] = "skipped: needs gradients (black-box scorer)"
            rows.append(row)
            if bar is not None:
                bar.update(1)
            continue
        opts = dict(opts_all.get(method, {}))
        if batch_size is not None:
            opts.setdefault("batch_size", batch_size)
        bs = opts.get("batch_size")
        t = lab if target == "label" else resolve_targets(scorer, x, None, bs)
        start = time.perf_counter()
        maps = explain(scorer, x, method, t, **opts)
        row["seconds_per_image"] = (time.perf_counter() - start) / max(n, 1)
        curve_kw = dict(steps=steps, seed=seed, batch_size=bs)
        row["deletion_auc"] = deletion_curve(scorer, x, maps, t, baseline=deletion_baseline, **curve_kw).mean_auc
        row["insertion_auc"] = insertion_curve(scorer, x, maps, t, baseline=insertion_baseline, **curve_kw).mean_auc
        if m_arr is not None:
            row["mask_mass_ratio"] = _nanmean(mask_mass_ratio(maps, m_arr, "positive"))
            row["mask_mass_ratio_abs"] = _nanmean(mask_mass_ratio(maps, m_arr, "absolute"))
            row["pointing_game"] = _nanmean(pointing_game(maps, m_arr, tolerance))
        if randomization is not None:
            res = randomization_check(scorer, x, method, t, mode=randomization, seed=seed, maps=maps, **opts)
            row["randomization_spearman"] = None if not np.isfinite(res.final) else res.final
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def table_to_markdown(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None, digits: int = 3) -> str:
    """A GitHub-markdown table of `rows` (missing values as "-"), plus a `note` column when any row has one."""
    if columns is None:
        columns = list(TABLE_COLUMNS)
        if any(r.get("note") for r in rows):
            columns.append("note")
    header = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" if c in ("model", "method", "note") else "---:" for c in columns) + "|"

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = [header, sep] + ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def evidence_table_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    """The evidence-mask numbers of `evaluate_explanations` rows in one table: a row per method, a
    column per model, each cell "mask mass ratio / pointing game" ("-" where a value does not
    apply, e.g. a gradient method on a black-box scorer). Empty text when no row has mask
    numbers (data without evidence masks)."""
    if not any(r.get("mask_mass_ratio") is not None or r.get("pointing_game") is not None for r in rows):
        return ""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    cell = {(str(r["model"]), str(r["method"])): r for r in rows}

    def fmt(v: Any) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"

    lines = ["| method | " + " | ".join(m.replace("|", "\\|") for m in models) + " |",
             "|---|" + "---:|" * len(models)]
    for method in methods:
        cells = []
        for m in models:
            r = cell.get((m, method), {})
            mass, point = r.get("mask_mass_ratio"), r.get("pointing_game")
            cells.append("-" if mass is None and point is None else f"{fmt(mass)} / {fmt(point)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
