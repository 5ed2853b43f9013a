"""Is model B more accurate than model A on the same test images? A paired comparison.

Two models scored on one test set make paired errors, so their accuracies are compared image by
image, not as two independent proportions: the difference with a 95 % paired-bootstrap interval
and McNemar's exact test on the discordant images (those exactly one model gets right; Dietterich
1998 recommends McNemar for comparing two classifiers on one test set). On FER2013 PublicTest
(3,589 images) one image is 0.03 points, and a difference of about 1 point is needed before the
interval leaves zero.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

from fermetric.errors import FermetricError

BOOTSTRAP_SAMPLES = 10_000


def paired_comparison(y: Any, pred_a: Any, pred_b: Any, *, samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = 0) -> dict[str, Any]:
    """Accuracy of B minus accuracy of A on the same images, with its uncertainty.

    Args:
        y: (N,) true class ids.
        pred_a, pred_b: (N,) class ids predicted by A (the reference) and B.
        samples: bootstrap resamples of the N images.
        seed: seeds the bootstrap.

    Returns:
        {"n", "accuracy_a", "accuracy_b", "difference" (B - A, a fraction), "ci95" ([low, high] of
        the difference, paired bootstrap percentiles), "only_a_right", "only_b_right" (the
        discordant counts), "mcnemar_p" (exact two-sided McNemar p-value; 1.0 when no image is
        discordant)}.

    Raises:
        FermetricError: the three arrays differ in length or are empty.
    """
    y, a, b = (np.asarray(v).ravel() for v in (y, pred_a, pred_b))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise FermetricError(f"a paired comparison needs labels and both predictions for the same images; got "
                             f"{len(y)} labels, {len(a)} and {len(b)} predictions")
    right_a, right_b = a == y, b == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    n = len(y)
    # Each image adds -1 (only A right), +1 (only B right) or 0 to the difference; resampling the
    # N images with replacement draws those three counts from a multinomial (the same
    # distribution as resampling indices, without materialising N x samples of them).
    counts = np.random.default_rng(seed).multinomial(n, [only_a / n, only_b / n, 1 - (only_a + only_b) / n],
                                                     size=samples)
    diffs = (counts[:, 1] - counts[:, 0]) / n
    low, high = np.percentile(diffs, [2.5, 97.5])
    discordant = only_a + only_b
    return {
        "n": n, "accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()),
        "difference": (only_b - only_a) / n, "ci95": [float(low), float(high)],
        "only_a_right": only_a, "only_b_right": only_b,
        "mcnemar_p": float(binomtest(only_b, discordant, 0.5).pvalue) if discordant else 1.0,
    }


def comparison_text(cmp: dict[str, Any]) -> str:
    """'+1.11 points [+0.24, +1.98], McNemar p = 0.013' (points: percentage points)."""
    low, high = cmp["ci95"]
    return (f"{cmp['difference'] * 100:+.2f} points [{low * 100:+.2f}, {high * 100:+.2f}], "
            f"McNemar p = {cmp['mcnemar_p']:.2g}")
