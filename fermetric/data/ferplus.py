"""FER+ relabelling of FER2013 (`fer2013new.csv`, Barsoum et al. 2016): ten annotators' votes
per FER2013 image, in fer2013.csv's row order.

The 8-class protocol used here: the label is the column with the most votes among all ten
(`neutral ... contempt, unknown, NF`), ties going to the first such column in file order. Because
the eight emotions come before `unknown` and `NF`, a tie between an emotion and unknown/NF goes to
the emotion, and a tie between emotions to the one listed first in FERPLUS_CLASSES. Rows whose
winner is `unknown` or `NF` (not a face), or that have no votes, are dropped and counted in
`info["ferplus"]`. Soft labels are the votes over the eight emotions, normalised to sum to 1.
This is a plurality, not a majority: the FER+ authors' "majority" mode also asks for more than
half of the votes; the plain plurality keeps more images and is what most FER+ papers train on.
Which target training uses (the one-hot plurality label, a label drawn from the votes, or the
vote distribution) is `data.ferplus_mode`, see fermetric.training.classifier.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from fermetric.data.classes import FERPLUS_CLASSES, FERPLUS_VOTE_COLUMNS
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.fer2013 import USAGE_TO_SPLIT, USAGES
from fermetric.errors import DataError

logger = logging.getLogger(__name__)

HEADER: tuple[str, ...] = ("Usage", "Image name") + FERPLUS_VOTE_COLUMNS
_SPLIT_TO_USAGE = {v: k for k, v in USAGE_TO_SPLIT.items()}
_N_EMOTIONS = len(FERPLUS_CLASSES)


def load_ferplus_votes(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read fer2013new.csv.

    Args:
        path: the FER+ CSV (`Usage,Image name,neutral,...,contempt,unknown,NF`).

    Returns:
        votes (N, 10) int64 in FERPLUS_VOTE_COLUMNS order, and the N Usage values, one per
        fer2013.csv data row.

    Raises:
        DataError: missing or empty file, another header, a row without 12 fields, a vote that is
            not a non-negative integer, or an unknown Usage (naming the file and line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected FER+'s fer2013new.csv")
    votes: list[list[int]] = []
    usage: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected the header {','.join(HEADER)}")
        if [h.strip() for h in header] != list(HEADER):
            raise DataError(f"{path} line 1: header {','.join(header)!r} does not match; expected {','.join(HEADER)}")
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(HEADER):
                raise DataError(f"{path} line {line}: expected {len(HEADER)} comma-separated fields; found {len(row)}")
            u = row[0].strip()
            if u not in USAGE_TO_SPLIT:
                raise DataError(f"{path} line {line}: Usage {u!r} is not one of {', '.join(USAGES)}")
            try:
                v = [int(x) for x in row[2:]]
            except ValueError:
                v = [-1]
            if min(v) < 0:
                raise DataError(f"{path} line {line}: votes {','.join(row[2:])!r} must be non-negative integers")
            votes.append(v)
            usage.append(u)
    if not votes:
        raise DataError(f"{path}: no data rows after the header")
    return np.asarray(votes, dtype=np.int64), usage


def ferplus_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plurality labels of FER+ votes (see the module docstring for ties).

    Args:
        votes: (N, 10) vote counts in FERPLUS_VOTE_COLUMNS order.

    Returns:
        labels (N,) int64 in 0..7 (meaningless where not kept), keep (N,) bool, soft (N, 8)
        float32 emotion-vote distributions (zeros where an image has no emotion votes).
    """
    votes = np.asarray(votes)
    winner = votes.argmax(axis=1)  # argmax returns the first maximum: the tie rule
    keep = (winner < _N_EMOTIONS) & (votes.sum(axis=1) > 0)
    emo = votes[:, :_N_EMOTIONS].astype(np.float32)
    total = emo.sum(axis=1, keepdims=True)
    soft = np.divide(emo, total, out=np.zeros_like(emo), where=total > 0)
    return winner.astype(np.int64), keep, soft


def _where(ds: FERDataset, row_index: np.ndarray, i: int) -> str:
    """How to name image i of a split in a message: its source ("fer2013.csv:LINE")."""
    return ds.sources[i] if ds.sources else f"data row {int(row_index[i])}"


def apply_ferplus(splits: DataSplits, ferplus_csv: str | os.PathLike) -> DataSplits:
    """Relabel FER2013 splits with FER+ plurality labels (8 classes, FERPLUS_CLASSES).

    Args:
        splits: from `load_fer2013_csv` (its `info["row_index"]` aligns rows with FER+).
        ferplus_csv: fer2013new.csv; it may cover more rows than the CSV (e.g. all 35,887).

    Returns:
        New DataSplits with FER+ labels and soft_labels; unknown/NF/no-vote rows dropped and
        counted in `info["ferplus"]["dropped"]` (split -> {"unknown", "NF", "no_votes"}).

    Raises:
        DataError: splits without row indices, a FER+ file too short for the CSV, or a row whose
            Usage differs between the two files (they are not aligned).
    """
    t0 = time.perf_counter()
    row_index = splits.info.get("row_index")
    if not isinstance(row_index, dict) or any(s not in row_index for s in splits.splits):
        raise DataError("FER+ labels need the rows of a fer2013.csv loaded by load_fer2013_csv (info['row_index'])")
    path = Path(ferplus_csv).expanduser()
    votes, usage = load_ferplus_votes(path)
    usage_code = np.asarray([USAGES.index(u) for u in usage], dtype=np.int8)
    out: dict[str, FERDataset] = {}
    new_index: dict[str, np.ndarray] = {}
    dropped: dict[str, dict[str, int]] = {}
    for split, ds in splits.splits.items():
        ri = np.asarray(row_index[split], dtype=np.int64)
        if ri.size and int(ri.max()) >= len(votes):
            i = int(np.argmax(ri >= len(votes)))
            raise DataError(
                f"{path}: has {len(votes)} rows but {_where(ds, ri, i)} is data row {int(ri[i])}; "
                "FER+ must cover every fer2013.csv row, in the same order"
            )
        want = USAGES.index(_SPLIT_TO_USAGE[split])
        wrong = np.flatnonzero(usage_code[ri] != want)
        if wrong.size:
            i = int(wrong[0])
            raise DataError(
                f"{path} line {int(ri[i]) + 2}: Usage {usage[ri[i]]!r}, but the matching FER2013 row "
                f"({_where(ds, ri, i)}) is {_SPLIT_TO_USAGE[split]!r}; the files are not aligned "
                f"({wrong.size} of {ri.size} {split} rows disagree)"
            )
        v = votes[ri]
        labels, keep, soft = ferplus_labels(v)
        winner = v.argmax(axis=1)
        no_votes = v.sum(axis=1) == 0
        dropped[split] = {
            "unknown": int(np.sum((winner == _N_EMOTIONS) & ~no_votes)),
            "NF": int(np.sum((winner == _N_EMOTIONS + 1) & ~no_votes)),
            "no_votes": int(np.sum(no_votes)),
        }
        idx = torch.from_numpy(np.flatnonzero(keep))
        kept = ds.subset(idx)
        out[split] = FERDataset(
            images=kept.images, labels=torch.from_numpy(labels[keep]), class_names=FERPLUS_CLASSES,
            soft_labels=torch.from_numpy(soft[keep]), sources=kept.sources,
        )
        new_index[split] = ri[keep]
    total = sum(sum(d.values()) for d in dropped.values())
    logger.info("FER+ %s: dropped %d rows whose plurality is unknown/NF or that have no votes (%s)", path.name, total, dropped)
    info = dict(splits.info)
    info["row_index"] = new_index
    info["ferplus"] = {
        "source": str(path),
        "dropped": dropped,
        "dropped_total": total,
        "rule": "plurality of 10 vote columns, first maximum wins; unknown/NF/no votes dropped",
    }
    if "load_seconds" in info:
        info["load_seconds"] = round(info["load_seconds"] + time.perf_counter() - t0, 3)
    return DataSplits(name=f"{splits.name} + FER+", splits=out, info=info)
