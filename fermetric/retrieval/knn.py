"""A k-nearest-neighbour classifier over a FAISS index of embeddings (the gallery).

Similarity is the inner product; with `normalize=True` (the default) gallery and queries are
L2-normalised first, so it is cosine similarity, the geometry metric-learning models train for.

Index types:

- ``"flat"``: exact search (``IndexFlatIP``). The default; fast enough for FER-sized galleries.
- ``"ivf"``: inverted file (``IndexIVFFlat``): k-means into ``nlist`` cells, search ``nprobe`` of them.
- ``"hnsw"``: graph search (``IndexHNSWFlat`` with inner product); no training.
- ``"ivfpq"``: inverted file with product-quantised codes (``IndexIVFPQ``): ``pq_m`` bytes a vector,
  for galleries too large to keep as float32.

Threads: FAISS has its own OpenMP runtime (the pip wheel ships a private libgomp), so
``torch.set_num_threads`` does not reach it and vice versa. With ``num_threads=None`` the
classifier leaves FAISS's global setting alone (``faiss.omp_set_num_threads`` or
``OMP_NUM_THREADS``); an integer applies only while the classifier builds or searches.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import faiss
import numpy as np
import torch
from fermetric.version import __version__
from fermetric.errors import CheckpointError, ConfigError, DataError, FermetricError
from fermetric.utils.checks import check_int, check_number
from fermetric.utils.io import atomic_write_bytes, replace_folder, sha256_file, write_json

__all__ = ["KNNClassifier", "NotFittedError", "faiss_threads", "default_nlist", "default_nprobe",
           "default_ef_search", "vote"]

FORMAT = "fermetric.knn"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
SAVED_FILES = (INDEX_FILE, LABELS_FILE, META_FILE)

INDEX_TYPES = ("flat", "ivf", "hnsw", "ivfpq")
WEIGHTINGS = ("distance", "majority")

# Exact search computes query x gallery blocks with BLAS; FAISS's default gallery block (1024)
# leaves it ~30 % slower than the bare product at FER size. 4096 (64 MB of block buffer) gets it
# level (scripts/bench_knn.py). Applied only while our searches run, and only over FAISS's default.
_FAISS_DEFAULT_DB_BLOCK = 1024
FLAT_DB_BLOCK = 4096

# Two classes whose vote fractions differ by less than this are tied (float sums of the same
# weights in another order differ by ~1e-7; distinct majority fractions differ by >= 1/k).
TIE_TOLERANCE = 1e-6


class NotFittedError(FermetricError, AttributeError):
    """predict / kneighbors / save before fit (an AttributeError too, like scikit-learn's)."""


@contextlib.contextmanager
def faiss_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with FAISS using `num_threads` OpenMP threads, then restore the old setting.

    `None` changes nothing. FAISS's thread count is separate from torch's (see the module docstring).
    """
    if num_threads is None:
        yield
        return
    num_threads = check_int("num_threads", num_threads, 1)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def _flat_blas_block() -> Iterator[None]:
    before = faiss.cvar.distance_compute_blas_database_bs
    if before == _FAISS_DEFAULT_DB_BLOCK:
        faiss.cvar.distance_compute_blas_database_bs = FLAT_DB_BLOCK
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_database_bs = before


def default_nlist(n: int) -> int:
    """IVF cells for a gallery of `n` vectors: about 4 * sqrt(n), with at least 39 vectors a cell
    (FAISS's k-means minimum) so training never runs short of points."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))


def default_nprobe(nlist: int) -> int:
    """IVF cells searched: 3 sqrt(nlist) (at least 1, at most nlist), a smaller fraction of the
    cells as the gallery grows. Measured on clustered 128-d data (scripts/bench_knn*.py):
    28,709 vectors, nlist 678 -> nprobe 78 (11.5 %) agrees with exact predictions on 99.3 %;
    1,000,000 vectors, nlist 4000 -> 190 (4.7 %): recall@1 1.000 at 1.6x the speed of exact
    search, where nprobe 64 gives 0.987 at 4.5x. Accuracy first: tune with `set_search_params`."""
    return int(max(1, min(nlist, round(3 * math.sqrt(nlist)))))


def default_ef_search(k: int) -> int:
    """HNSW search breadth: max(32, 2 k) (it must be at least k to return k neighbours). With
    hnsw_m = 32 this agrees with exact predictions on 99.8 % in scripts/bench_knn.py."""
    return int(max(32, 2 * k))


def default_pq_m(d: int) -> int:
    """PQ sub-quantisers: the largest divisor of `d` that is at most d / 4 (32 bytes for 128-d)."""
    target = max(1, d // 4)
    return max(m for m in range(1, target + 1) if d % m == 0)


def _as_float32_matrix(x: Any, name: str) -> np.ndarray:
    """(N, D) float32 C-contiguous copy-or-view of a numpy array or torch tensor of real numbers;
    NaN / inf rows are rejected with their indices."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"{name} must hold real numbers, got a tensor of dtype {t.dtype}")
        arr = t.to(torch.float32).numpy()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(
            f"{name} must be a 2-D (N, D) array, got shape {tuple(arr.shape)}"
            + (" (pass x[None] for a single vector)" if arr.ndim == 1 else "")
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"{name} has NaN or inf in {bad.size} row(s), first {bad[:5].tolist()}; "
            "embeddings must be finite (check the model for diverged weights)"
        )
    return arr


def _as_labels(y: Any, n: int, num_classes: int | None) -> np.ndarray:
    """(N,) int64 labels in [0, num_classes)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D (N,), got shape {tuple(arr.shape)}")
    if arr.shape[0] != n:
        raise DataError(f"labels has {arr.shape[0]} entries but embeddings has {n} rows; they must match")
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise DataError(f"labels must be >= 0, found {int(arr.min())} at index {int(np.argmin(arr))}")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise DataError(
            f"label {int(arr.max())} at index {int(np.argmax(arr))} is out of range for {num_classes} classes"
        )
    return arr


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new array (the caller's array is never modified);
    zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def vote_weights(neighbor_labels: np.ndarray, sims: np.ndarray, weighting: str = "distance",
                 temperature: float = 0.1) -> np.ndarray:
    """(M, k) float64 weight of each neighbour's vote (see `vote`); 0 for a missing neighbour.

    Raises:
        DataError: a query found no neighbour at all. ConfigError: an unknown weighting.
    """
    m = neighbor_labels.shape[0]
    valid = neighbor_labels >= 0
    if m and not valid.any(axis=1).all():
        rows = np.flatnonzero(~valid.any(axis=1))
        raise DataError(
            f"queries {rows[:5].tolist()} found no neighbours; raise nprobe (IVF) or ef_search (HNSW)"
        )
    if weighting == "majority":
        return valid.astype(np.float64)
    if weighting == "distance":
        s = np.where(valid, sims.astype(np.float64), -np.inf)
        return np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
    raise ConfigError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


def vote(
    neighbor_labels: np.ndarray,
    sims: np.ndarray,
    num_classes: int,
    weighting: str = "distance",
    temperature: float = 0.1,
) -> np.ndarray:
    """Class vote fractions from the labels of each query's neighbours.

    Args:
        neighbor_labels: (M, k) int class ids; -1 marks a missing neighbour (an approximate
            index found fewer than k), which gets no vote.
        sims: (M, k) similarities, best first.
        num_classes: C.
        weighting: ``"majority"``: every neighbour weighs 1, so fractions are counts / k.
            ``"distance"``: neighbour j weighs exp((sim_j - sim_max) / temperature), a softmax over
            the neighbours' similarities (subtracting the row maximum keeps it finite).
        temperature: the softmax temperature (0.1 on cosine similarities: a neighbour 0.07 less
            similar than the best counts half as much).

    Returns:
        (M, C) float64 fractions; each row sums to 1.
    """
    m, k = neighbor_labels.shape
    valid = neighbor_labels >= 0
    weights = vote_weights(neighbor_labels, sims, weighting, temperature)
    flat = (np.arange(m)[:, None] * num_classes + np.where(valid, neighbor_labels, 0)).ravel()
    scores = np.bincount(flat, weights=weights.ravel(), minlength=m * num_classes).reshape(m, num_classes)
    return scores / scores.sum(axis=1, keepdims=True)


def break_ties(proba: np.ndarray, neighbor_labels: np.ndarray) -> np.ndarray:
    """argmax of each row; among classes tied within TIE_TOLERANCE, the class of the
    highest-ranked (most similar) neighbour wins."""
    m, c = proba.shape
    best = proba.max(axis=1, keepdims=True)
    tied = proba >= best - TIE_TOLERANCE
    # first_rank[i, c]: position of class c's first neighbour for query i (k if absent)
    k = neighbor_labels.shape[1]
    first_rank = np.full((m, c), k, dtype=np.int64)
    rows = np.arange(m)
    for j in range(k - 1, -1, -1):
        lab = neighbor_labels[:, j]
        ok = lab >= 0
        first_rank[rows[ok], lab[ok]] = j
    return np.where(tied, first_rank, k + 1).argmin(axis=1)


class KNNClassifier:
    """k-nearest-neighbour classification over a FAISS gallery of embeddings.

    Args:
        k: neighbours that vote.
        weighting: ``"distance"`` (softmax of similarities, see `vote`) or ``"majority"``.
        index: ``"flat"`` (exact), ``"ivf"``, ``"hnsw"`` or ``"ivfpq"``.
        num_classes: C; default len(class_names), else max(label) + 1 at fit.
        class_names: names of the C classes (stored with the index).
        nlist: IVF cells; default `default_nlist(N)` (about 4 sqrt(N)).
        nprobe: IVF cells searched; default `default_nprobe(nlist)`.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth; default `default_ef_search(k)`.
        pq_m: IVF-PQ bytes a vector; default `default_pq_m(D)`.
        normalize: L2-normalise gallery and queries (cosine similarity).
        seed: seeds the k-means training sample and FAISS's clustering.
        temperature: softmax temperature of distance weighting.
        train_size: vectors sampled to train IVF / IVF-PQ; default min(N, 64 nlist).
        num_threads: FAISS threads while building / searching; None leaves FAISS's setting alone.

    Ties: neighbours of equal similarity are ranked by gallery index. Classes whose votes tie
    (within 1e-6) go to the class of the highest-ranked neighbour among them, e.g. votes
    [A, B, B, A] with majority weighting predict A. Which of several equally similar vectors
    make the top k at its boundary is FAISS's choice. (scikit-learn instead picks the smallest
    class id; `predict_proba(q).argmax(1)` gives that rule.)

    Example:
        >>> clf = KNNClassifier(k=10).fit(train_emb, train_labels)   # (N, D), (N,)
        >>> proba = clf.predict_proba(test_emb)                       # (M, C)
        >>> clf.save("runs/x/knn"); clf2 = KNNClassifier.load("runs/x/knn")
    """

    def __init__(
        self,
        k: int = 10,
        weighting: str = "distance",
        index: str = "flat",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int | None = None,
        pq_m: int | None = None,
        normalize: bool = True,
        seed: int = 0,
        temperature: float = 0.1,
        train_size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        check_int("k", k, 1)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
        if index not in INDEX_TYPES:
            raise ConfigError(f"unknown index type {index!r}; expected one of {INDEX_TYPES}")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if num_classes is not None and num_classes != len(class_names):
                raise ConfigError(f"num_classes={num_classes} but {len(class_names)} class_names were given")
            num_classes = len(class_names)
        check_int("num_classes", num_classes, 1, allow_none=True)
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("ef_search", ef_search), ("pq_m", pq_m),
                            ("train_size", train_size), ("hnsw_m", hnsw_m)):
            check_int(name, value, 1, allow_none=True)
        check_number("temperature", temperature, above=0)
        self.k = int(k)
        self.weighting = weighting
        self.index_type = index
        self.num_classes = num_classes
        self.class_names = class_names
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = int(hnsw_m)
        self.ef_search = ef_search
        self.pq_m = pq_m
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.train_size = train_size
        self.num_threads = num_threads
        # set by fit / load
        self.index_: faiss.Index | None = None
        self.labels_: np.ndarray | None = None
        self.num_classes_: int | None = None
        self.nlist_: int | None = None
        self.pq_m_: int | None = None
        # where the gallery came from (e.g. the run checkpoint's SHA-256), recorded by save(source=...)
        self.source: dict[str, Any] = {}

    # ---------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        return self.index_ is not None

    @property
    def dimension(self) -> int:
        """D, the embedding dimension of the gallery."""
        self._check_fitted()
        return int(self.index_.d)

    def __len__(self) -> int:
        """Number of gallery vectors."""
        return 0 if self.index_ is None else int(self.index_.ntotal)

    def __repr__(self) -> str:
        state = f"{len(self)} x {self.index_.d}" if self.is_fitted else "not fitted"
        return f"KNNClassifier(k={self.k}, weighting={self.weighting!r}, index={self.index_type!r}, {state})"

    def _check_fitted(self) -> None:
        if self.index_ is None:
            raise NotFittedError(
                "KNNClassifier is not fitted: call fit(embeddings, labels) or KNNClassifier.load(directory) first"
            )

    # ---------------------------------------------------------------- build
    def _build_index(self, d: int, n: int) -> tuple[faiss.Index, int | None, int | None]:
        """An empty (untrained) index, with the nlist and pq_m it uses (None where not used)."""
        ip = faiss.METRIC_INNER_PRODUCT
        if self.index_type == "flat":
            return faiss.IndexFlatIP(d), None, None
        if self.index_type == "hnsw":
            return faiss.IndexHNSWFlat(d, self.hnsw_m, ip), None, None
        nlist = int(self.nlist if self.nlist is not None else default_nlist(n))
        if nlist > n:
            raise ConfigError(f"nlist={nlist} is more than the {n} gallery vectors")
        quantizer = faiss.IndexFlatIP(d)
        pq_m = None
        if self.index_type == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        else:
            pq_m = int(self.pq_m if self.pq_m is not None else default_pq_m(d))
            if d % pq_m:
                raise ConfigError(f"pq_m={pq_m} must divide the embedding dimension {d}")
            # 8-bit codes need >= 256 training points per sub-quantiser; fewer bits for tiny galleries
            nbits = int(min(8, max(1, math.floor(math.log2(max(2, n // 39))))))
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, nbits, ip)
            index.pq.cp.seed = self.seed
        index.cp.seed = self.seed
        return index, nlist, pq_m

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> "KNNClassifier":
        """Change IVF `nprobe` / HNSW `ef_search` of a fitted index (None keeps the current value);
        `save` records them."""
        if nprobe is not None:
            self.nprobe = int(nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)
        self._apply_search_params()
        return self

    @property
    def search_params(self) -> dict[str, int]:
        """The effective search parameters: {"nprobe": ...} (IVF), {"ef_search": ...} (HNSW) or {}."""
        self._check_fitted()
        if self.index_type in ("ivf", "ivfpq"):
            return {"nprobe": int(faiss.extract_index_ivf(self.index_).nprobe)}
        if self.index_type == "hnsw":
            return {"ef_search": int(self.index_.hnsw.efSearch)}
        return {}

    def _apply_search_params(self) -> None:
        if self.index_ is None:
            return
        if self.index_type in ("ivf", "ivfpq"):
            ivf = faiss.extract_index_ivf(self.index_)
            nprobe = self.nprobe if self.nprobe is not None else default_nprobe(ivf.nlist)
            ivf.nprobe = int(min(nprobe, ivf.nlist))
        elif self.index_type == "hnsw":
            ef = self.ef_search if self.ef_search is not None else default_ef_search(self.k)
            self.index_.hnsw.efSearch = int(ef)

    def fit(self, embeddings: Any, labels: Any) -> "KNNClassifier":
        """Build the index over the gallery (replacing any earlier one).

        Args:
            embeddings: (N, D) numpy array or torch tensor, any real dtype.
            labels: (N,) integer class ids in [0, num_classes).

        Returns:
            self, with `index_`, `labels_` (N,), `num_classes_`, `nlist_` and `pq_m_` set.
        """
        x = _as_float32_matrix(embeddings, "embeddings")
        n, d = x.shape
        if n == 0 or d == 0:
            raise DataError(f"embeddings must be non-empty, got shape {x.shape}")
        y = _as_labels(labels, n, self.num_classes)
        if self.k > n:
            raise DataError(f"k={self.k} is more than the {n} gallery vectors")
        if self.normalize:
            x = _l2_normalize(x)
        with faiss_threads(self.num_threads):
            index, nlist, pq_m = self._build_index(d, n)
            if not index.is_trained:
                size = min(n, int(self.train_size if self.train_size is not None else 64 * nlist))
                rng = np.random.default_rng(self.seed)
                sample = np.sort(rng.choice(n, size=size, replace=False)) if size < n else slice(None)
                index.train(np.ascontiguousarray(x[sample]))
            index.add(x)
        self.index_ = index
        self.labels_ = y
        self.num_classes_ = self.num_classes if self.num_classes is not None else int(y.max()) + 1
        self.nlist_, self.pq_m_ = nlist, pq_m
        self._apply_search_params()
        return self

    # ---------------------------------------------------------------- query
    def _queries(self, queries: Any) -> np.ndarray:
        self._check_fitted()
        q = _as_float32_matrix(queries, "queries")
        if q.shape[1] != self.index_.d:
            raise DataError(f"query has {q.shape[1]} dims; the index was built on {self.index_.d}")
        return _l2_normalize(q) if self.normalize else q

    def kneighbors(self, queries: Any, k: int | None = None, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar gallery vectors of each query.

        Args:
            queries: (M, D) numpy array or torch tensor.
            k: neighbours; default self.k.
            exclude: optional (M,) gallery index of each query's own entry (queries that are
                gallery vectors, e.g. the train split against a train gallery): it is never
                returned as a neighbour. Matched by index, so an exact duplicate image elsewhere
                in the gallery still counts. -1 excludes nothing for that query.

        Returns:
            sims: (M, k) float32 similarities, best first (cosine when normalize=True);
            idx: (M, k) int64 gallery indices; -1 where an approximate index found fewer than k.
        """
        q = self._queries(queries)
        k = self.k if k is None else check_int("k", k, 1, error=DataError)
        ex = None
        if exclude is not None:
            ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
            if ex.shape[0] != q.shape[0]:
                raise DataError(f"exclude has {ex.shape[0]} entries for {q.shape[0]} queries; one gallery index per query")
        # with exclusion, search one more and drop each query's own entry
        search_k = k + (ex is not None)
        if search_k > len(self):
            raise DataError(f"k={k} is more than the {len(self) - (ex is not None)} gallery vectors"
                            + (" left once each query's own entry is excluded" if ex is not None else ""))
        if self.index_type == "hnsw" and self.index_.hnsw.efSearch < search_k:
            raise ConfigError(f"ef_search={self.index_.hnsw.efSearch} must be >= k={search_k}")
        if q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        with faiss_threads(self.num_threads), _flat_blas_block():
            sims, idx = self.index_.search(q, search_k)
        # equal similarities are ranked by gallery index so results do not depend on FAISS internals
        order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -sims), axis=1)
        sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
        if ex is not None:
            drop = (idx == ex[:, None]) & (ex[:, None] >= 0)
            # a query whose own entry is not among the results (approximate search, or no entry) loses its last
            drop[~drop.any(axis=1), -1] = True
            keep = ~drop
            sims, idx = sims[keep].reshape(-1, k), idx[keep].reshape(-1, k)
        return sims, idx

    def _vote(self, queries: Any, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.kneighbors(queries, exclude=exclude)
        neighbor_labels = np.where(idx >= 0, self.labels_[np.maximum(idx, 0)], -1)
        proba = vote(neighbor_labels, sims, self.num_classes_, self.weighting, self.temperature)
        return proba, neighbor_labels

    def predict_proba(self, queries: Any, exclude: Any = None) -> np.ndarray:
        """(M, C) vote fractions (see `vote`); rows sum to 1. `exclude`: see `kneighbors`."""
        return self._vote(queries, exclude)[0]

    def predict(self, queries: Any, exclude: Any = None) -> np.ndarray:
        """(M,) int64 class ids: the largest vote, ties to the class of the nearest neighbour.
        `exclude`: see `kneighbors`."""
        return self.predict_with_proba(queries, exclude)[0]

    def predict_with_proba(self, queries: Any, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """`predict` and `predict_proba` from one neighbour search."""
        proba, neighbor_labels = self._vote(queries, exclude)
        return break_ties(proba, neighbor_labels), proba

    def with_vote(self, k: int | None = None, weighting: str | None = None) -> "KNNClassifier":
        """This fitted index voting with another k or weighting (a shallow copy sharing the index)."""
        self._check_fitted()
        other = copy.copy(self)
        if k is not None:
            other.k = check_int("k", k, 1, error=DataError)
        if weighting is not None:
            if weighting not in WEIGHTINGS:
                raise ConfigError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
            other.weighting = weighting
        return other

    def predict_at_ks(self, queries: Any, ks: Sequence[int]) -> dict[int, np.ndarray]:
        """{k: (M,) predictions} for several k from one search of the largest: every smaller k
        votes on a prefix of the same neighbours (an approximate index's k best need not be that
        prefix: its curve is the prefix's). An HNSW graph's ef_search is widened for the search
        only when it is below the largest k."""
        ks = sorted({check_int("k", kk, 1, error=DataError) for kk in ks})
        if not ks:
            return {}
        ef = self.index_.hnsw.efSearch if self.is_fitted and self.index_type == "hnsw" else None
        if ef is not None and ef < ks[-1]:
            self.index_.hnsw.efSearch = ks[-1]
        try:
            sims, idx = self.kneighbors(queries, k=ks[-1])
        finally:
            if ef is not None:
                self.index_.hnsw.efSearch = ef
        neighbor_labels = np.where(idx >= 0, self.labels_[np.maximum(idx, 0)], -1)
        out = {}
        for kk in ks:
            proba = vote(neighbor_labels[:, :kk], sims[:, :kk], self.num_classes_, self.weighting, self.temperature)
            out[kk] = break_ties(proba, neighbor_labels[:, :kk])
        return out

    def score(self, queries: Any, labels: Any) -> float:
        """Accuracy of `predict(queries)` against (M,) labels."""
        pred = self.predict(queries)
        y = _as_labels(labels, pred.shape[0], None)
        return float((pred == y).mean()) if y.size else 0.0

    # ---------------------------------------------------------------- persistence
    def meta(self) -> dict[str, Any]:
        """What meta.json holds (without checksums)."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fermetric_version": __version__,
            "faiss_version": faiss.__version__,
            "dimension": int(self.index_.d),
            "count": int(self.index_.ntotal),
            "k": self.k,
            "weighting": self.weighting,
            "temperature": self.temperature,
            "index_type": self.index_type,
            "num_classes": int(self.num_classes_),
            "class_names": self.class_names,
            "normalize": self.normalize,
            "nlist": self.nlist_,
            "nprobe": self.search_params.get("nprobe"),
            "hnsw_m": self.hnsw_m,
            "ef_search": self.search_params.get("ef_search"),
            "pq_m": self.pq_m_,
            "seed": self.seed,
        }

    def save(self, directory: str | os.PathLike, source: dict[str, Any] | None = None) -> Path:
        """Write `index.faiss`, `labels.npy` and `meta.json` into `directory` (created if needed).

        `source` (JSON-ready) says where the gallery embeddings came from, e.g. the checkpoint
        fingerprint of a run; it is stored in meta.json and restored as `self.source` by `load`,
        so a reader can refuse an index whose embeddings are stale.

        The three files are written into a temporary sibling folder that then replaces
        `directory`, so a save that fails half-way (a full disk) leaves an earlier index as it
        was; meta.json records the SHA-256 of the other two, so a damaged copy is detected by `load`.

        Returns:
            The directory.
        """
        self._check_fitted()
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        index_bytes = faiss.serialize_index(self.index_).tobytes()
        buf = io.BytesIO()
        np.save(buf, self.labels_, allow_pickle=False)
        if source is not None:
            self.source = dict(source)
        meta = self.meta()
        meta["source"] = self.source
        meta["sha256"] = {
            INDEX_FILE: hashlib.sha256(index_bytes).hexdigest(),
            LABELS_FILE: hashlib.sha256(buf.getvalue()).hexdigest(),
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            atomic_write_bytes(tmp / INDEX_FILE, index_bytes)
            atomic_write_bytes(tmp / LABELS_FILE, buf.getvalue())
            write_json(tmp / META_FILE, meta)
            return replace_folder(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: str | os.PathLike, num_threads: int | None = None) -> "KNNClassifier":
        """Restore a classifier written by `save`; predictions are identical.

        Raises:
            CheckpointError: a file is missing, truncated, of another format, or does not match
                the others (the message names the file).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a directory (expected one written by KNNClassifier.save)")
        missing = [name for name in SAVED_FILES if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(f"{directory} is missing {', '.join(missing)} (a KNNClassifier.save directory has {', '.join(SAVED_FILES)})")
        meta_path, labels_path, index_path = directory / META_FILE, directory / LABELS_FILE, directory / INDEX_FILE

        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{meta_path}: not a {FORMAT} meta file (format={meta.get('format') if isinstance(meta, dict) else None!r})")
        if int(meta.get("format_version", -1)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{meta_path}: format_version {meta['format_version']} is newer than this fermetric "
                f"reads ({FORMAT_VERSION}); upgrade fermetric"
            )
        required = ("dimension", "count", "k", "weighting", "index_type", "num_classes", "normalize")
        absent = [key for key in required if key not in meta]
        if absent:
            raise CheckpointError(f"{meta_path}: missing key(s) {', '.join(absent)}")

        try:
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{labels_path}: unreadable ({e}); the file is truncated or not a .npy array") from e
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise CheckpointError(f"{labels_path}: expected a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
        if labels.shape[0] != meta["count"]:
            raise CheckpointError(
                f"{labels_path} has {labels.shape[0]} labels but {meta_path} says the index holds {meta['count']} vectors"
            )

        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CheckpointError(f"{index_path}: FAISS could not read it ({first_line}); the file is truncated or corrupt") from e
        if index.d != meta["dimension"]:
            raise CheckpointError(
                f"{index_path} has dimension {index.d} but {meta_path} says {meta['dimension']}"
            )
        if index.ntotal != labels.shape[0]:
            raise CheckpointError(
                f"{index_path} holds {index.ntotal} vectors but {labels_path} has {labels.shape[0]} labels"
            )
        for name, path in ((INDEX_FILE, index_path), (LABELS_FILE, labels_path)):
            expected = (meta.get("sha256") or {}).get(name)
            if expected is not None and sha256_file(path) != expected:
                raise CheckpointError(
                    f"{path} does not match the SHA-256 recorded in {meta_path}: it was changed or comes from another save"
                )

        clf = cls(
            k=meta["k"],
            weighting=meta["weighting"],
            index=meta["index_type"],
            num_classes=meta["num_classes"],
            class_names=meta.get("class_names"),
            nlist=meta.get("nlist"),
            nprobe=meta.get("nprobe"),
            hnsw_m=meta.get("hnsw_m") or 32,
            ef_search=meta.get("ef_search"),
            pq_m=meta.get("pq_m"),
            normalize=meta["normalize"],
            seed=meta.get("seed", 0),
            temperature=meta.get("temperature", 0.1),
            num_threads=num_threads,
        )
        if labels.size and int(labels.max()) >= clf.num_classes:
            raise CheckpointError(f"{labels_path}: label {int(labels.max())} is out of range for {clf.num_classes} classes in {meta_path}")
        clf.index_ = index
        clf.labels_ = labels.astype(np.int64, copy=False)
        clf.num_classes_ = clf.num_classes
        clf.nlist_ = int(faiss.extract_index_ivf(index).nlist) if clf.index_type in ("ivf", "ivfpq") else None
        clf.pq_m_ = meta.get("pq_m")
        clf.source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
        clf._apply_search_params()
        return clf
