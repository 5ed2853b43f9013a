"""A data set audit: exact and near-duplicate faces within and across splits, duplicates with
conflicting labels, and blank images.

- Exact duplicates: the same 48x48 pixels (SHA-1 of the bytes).
- Near duplicates: a perceptual hash (the signs, against their median, of the 63 lowest
  non-constant 2-D DCT coefficients of the face) compared by Hamming distance, searched with a
  FAISS binary index. The same photo brightened, blurred, re-scaled or re-compressed lands a few
  bits away (tested: +6 grey levels and +-3 levels of noise at 0-4 bits); two different faces
  land ~30 bits apart. A re-crop is caught only when small: shifting a sharp SynthFER face by one
  pixel moves 16 bits, so the count of near duplicates is a lower bound. `NEAR_RADIUS` = 4 was chosen by looking
  at FER2013 PublicTest faces and their nearest Training face: every one of 32 pairs checked at
  distance 2-4 was the same photo, and 21 of 24 at distance 6 (README, "Data audit").
- Blank images: pixel standard deviation below `BLANK_STD` grey levels (FER2013 has a dozen
  all-black faces); reported apart, and left out of the duplicate pairs (they are all alike).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.utils.checks import check_int

NEAR_RADIUS = 4  # Hamming distance of the 63-bit perceptual hash up to which two faces are near duplicates
BLANK_STD = 2.0  # grey levels
HASH_BITS = 63


def exact_hashes(ds: FERDataset) -> list[str]:
    """SHA-1 of each image's pixels: equal strings are pixel-identical images."""
    images = ds.images.contiguous().numpy()
    return [hashlib.sha1(images[i].tobytes()).hexdigest() for i in range(len(images))]


def perceptual_hashes(ds: FERDataset) -> np.ndarray:
    """(N, 8) uint8: each image's 63-bit DCT hash (packed, one zero pad bit).

    The 8x8 lowest frequencies of the orthonormal 2-D DCT of the 48x48 face, the DC term left out
    (brightness), each compared with the median of the 63: one bit per coefficient. float64 and a
    comparison, so machines agree except on exact ties.
    """
    from scipy.fft import dctn

    x = ds.images[:, 0].numpy().astype(np.float64)
    coef = dctn(x, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(x), 64)[:, 1:]
    bits = coef > np.median(coef, axis=1, keepdims=True)
    bits = np.concatenate([bits, np.zeros((len(x), 1), dtype=bool)], axis=1)
    return np.packbits(bits, axis=1)


def hamming_pairs(queries: np.ndarray, gallery: np.ndarray, radius: int, same: bool = False) -> np.ndarray:
    """(M, 3) int64 rows (query index, gallery index, Hamming distance) of every pair within
    `radius` bits. `same`: queries and gallery are one set: each unordered pair once, no self-pairs."""
    import faiss

    if len(queries) == 0 or len(gallery) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    index = faiss.IndexBinaryFlat(64)
    index.add(np.ascontiguousarray(gallery))
    # range_search keeps distances < radius: one more for "at most radius"
    lims, dist, ids = index.range_search(np.ascontiguousarray(queries), radius + 1)
    q = np.repeat(np.arange(len(queries)), np.diff(lims.astype(np.int64)))
    rows = np.stack([q, ids.astype(np.int64), dist.astype(np.int64)], axis=1)
    if same:
        rows = rows[rows[:, 0] < rows[:, 1]]
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def blank_images(ds: FERDataset, min_std: float = BLANK_STD) -> np.ndarray:
    """Indices of images whose pixel standard deviation is below `min_std` grey levels."""
    std = ds.images.float().flatten(1).std(dim=1).numpy()
    return np.flatnonzero(std < min_std)


@dataclass
class SplitHashes:
    exact: list[str]
    perceptual: np.ndarray


def _hashes(ds: FERDataset) -> SplitHashes:
    return SplitHashes(exact_hashes(ds), perceptual_hashes(ds))


def near_duplicate_mask(query: FERDataset, gallery: FERDataset, radius: int = NEAR_RADIUS) -> np.ndarray:
    """(len(query),) bool: the query faces with an exact or near duplicate (Hamming <= radius) in
    `gallery`, e.g. the test faces that also sit in Training. Blank images (`blank_images`) are
    neither duplicates nor duplicated, as in `audit_splits` (they are all alike and no face)."""
    radius = check_int("radius", radius, 0, HASH_BITS)
    blank_q, blank_g = blank_images(query), set(blank_images(gallery).tolist())
    pairs = hamming_pairs(perceptual_hashes(query), perceptual_hashes(gallery), radius)
    pairs = pairs[[int(j) not in blank_g for j in pairs[:, 1]]] if len(pairs) else pairs
    mask = np.zeros(len(query), dtype=bool)
    mask[pairs[:, 0]] = True  # pixel-identical images hash alike (distance 0): exact pairs are among these
    mask[blank_q] = False
    return mask


def audit_splits(splits: DataSplits, radius: int = NEAR_RADIUS, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The audit of a data set's splits.

    Returns:
        {"radius", "blank_std", "splits": {name: {"n", "blank": [indices]}},
         "pairs": [{"a", "b" (split names), "n_exact", "n_near" (pairs within radius, exact ones
         included), "n_conflicting" (of those, pairs whose labels differ), "a_with_duplicate"
         (images of split a with at least one duplicate in b), "b_with_duplicate" (the reverse)}],
         "duplicates": [{"a", "i", "b", "j", "distance", "exact", "label_a", "label_b"}]}
        for every split pair (a, b) with a <= b in `names` order, a split paired with itself too.
    """
    radius = check_int("radius", radius, 0, HASH_BITS)
    names = list(names or splits.splits.keys())
    hashes = {n: _hashes(splits[n]) for n in names}
    report: dict[str, Any] = {"radius": radius, "hash_bits": HASH_BITS, "blank_std": BLANK_STD, "splits": {},
                              "pairs": [], "duplicates": []}
    blank = {n: blank_images(splits[n]) for n in names}
    for n in names:
        report["splits"][n] = {"n": len(splits[n]), "blank": blank[n].tolist()}
    for ia, a in enumerate(names):
        for b in names[ia:]:
            ha, hb = hashes[a], hashes[b]
            rows = hamming_pairs(ha.perceptual, hb.perceptual, radius, same=a == b)
            # blank images are reported as such, not as duplicates of each other (they are all alike)
            skip_a, skip_b = set(blank[a].tolist()), set(blank[b].tolist())
            found = {(int(i), int(j)): int(d) for i, j, d in rows if int(i) not in skip_a and int(j) not in skip_b}
            # pixel-identical images hash alike (distance 0), so every exact pair is among `found`
            la, lb = splits[a].labels.numpy(), splits[b].labels.numpy()
            pairs = []
            for (i, j), d in sorted(found.items()):
                exact = ha.exact[i] == hb.exact[j]
                pairs.append({"a": a, "i": i, "b": b, "j": j, "distance": d, "exact": exact,
                              "label_a": int(la[i]), "label_b": int(lb[j])})
            report["duplicates"] += pairs
            report["pairs"].append({
                "a": a, "b": b, "n_exact": sum(p["exact"] for p in pairs), "n_near": len(pairs),
                "n_conflicting": sum(p["label_a"] != p["label_b"] for p in pairs),
                "a_with_duplicate": len({p["i"] for p in pairs} | ({p["j"] for p in pairs} if a == b else set())),
                "b_with_duplicate": len({p["j"] for p in pairs} | ({p["i"] for p in pairs} if a == b else set())),
            })
    return report


def audit_markdown(report: dict[str, Any], class_names: Sequence[str]) -> str:
    """The audit's tables: duplicate counts per split pair, and blank images per split."""
    lines = [f"Near duplicates: 63-bit DCT hash within {report['radius']} bits (exact: identical pixels).", "",
             "| split pair A - B | exact pairs | near pairs (incl. exact) | with other labels | images of A with a duplicate in B | images of B with a duplicate in A |",
             "|---|---:|---:|---:|---:|---:|"]

    def share(k: int, split: str) -> str:
        return f"{k:,} ({k / max(report['splits'][split]['n'], 1) * 100:.1f} %)"

    for p in report["pairs"]:
        lines.append(f"| {p['a']} - {p['b']} | {p['n_exact']:,} | {p['n_near']:,} | {p['n_conflicting']:,} | "
                     f"{share(p['a_with_duplicate'], p['a'])} | {share(p['b_with_duplicate'], p['b'])} |")
    lines += ["", "| split | images | blank (std < %.0f grey levels) |" % report["blank_std"], "|---|---:|---:|"]
    for name, s in report["splits"].items():
        lines.append(f"| {name} | {s['n']:,} | {len(s['blank'])} |")
    conflicts = [d for d in report["duplicates"] if d["label_a"] != d["label_b"]][:10]
    if conflicts:
        lines += ["", "First duplicates with other labels:", ""]
        lines += [f"- {d['a']}[{d['i']}] {class_names[d['label_a']]} vs {d['b']}[{d['j']}] {class_names[d['label_b']]} "
                  f"(distance {d['distance']}{', identical pixels' if d['exact'] else ''})" for d in conflicts]
    return "\n".join(lines) + "\n"
