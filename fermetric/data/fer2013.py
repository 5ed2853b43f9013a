"""FER2013 in Kaggle's `fer2013.csv` format (`emotion,pixels,Usage`), plain or gzip-compressed.

Parsing is vectorised: the file is read into memory once, rows are located with `bytes.find`
(no copies), and the pixel fields of a block of rows are joined and decoded as one NumPy byte
array (digit runs -> integers), so the full 35,887-row file parses in about a second plus the
gzip time. Rows are validated in bulk; only when a block holds a bad row is that row re-read in
Python to say exactly what is wrong with it.

Parsed arrays are cached as an uncompressed .npz in `$FERMETRIC_CACHE_DIR` (or
`~/.cache/fermetric`), keyed by the file's absolute path, size and modification time, so a
second load takes a fraction of a second. A corrupt or foreign cache file is ignored and rebuilt.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fermetric.data.classes import FER2013_CLASSES, IMAGE_SIZE
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.errors import DataError
from fermetric.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
# Usage value -> split name, in the order the splits are returned.
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
USAGES: tuple[str, ...] = tuple(USAGE_TO_SPLIT)
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
CACHE_VERSION = 1
_BLOCK_ROWS = 512  # rows decoded per NumPy pass: ~4 MB of text, small enough to stay in cache
_LABELS = {str(i).encode(): i for i in range(len(FER2013_CLASSES))}
_USAGE_CODES = {u.encode(): i for i, u in enumerate(USAGES)}
_SHOW_BAD = 10  # bad line numbers listed in info and warnings
_PAD = 3  # spaces before a block of pixel fields
_DIGITS_SPACE = b"0123456789 "
_NON_SPACE = re.compile(rb"\S")


@dataclass
class ParsedCSV:
    """The good rows of a fer2013.csv, and what was wrong with the others.

    Attributes:
        images: (N, 48, 48) uint8.
        labels: (N,) int64 FER2013 class ids.
        usage: (N,) int8 index into USAGES.
        lines: (N,) int64 1-based file line numbers (the header is line 1).
        row_index: (N,) int64 0-based data-row index (blank lines are not rows), for FER+.
        bad_lines: (B,) int64 line numbers of bad rows.
        bad_messages: (B,) str, one message per bad row.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    lines: np.ndarray
    row_index: np.ndarray
    bad_lines: np.ndarray
    bad_messages: np.ndarray


# ---------------------------------------------------------------------------------------------
# reading


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw:
        return raw  # reported as an empty file
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc}); expected fer2013.csv or fer2013.csv.gz") from exc
    if path.name.lower().endswith(".gz"):
        raise DataError(f"{path}: named .gz but not gzip-compressed; expected fer2013.csv.gz")
    return raw


def _clean(field: bytes) -> bytes:
    return field.strip().strip(b'"').strip()


def _check_header(header: bytes, path: Path) -> None:
    got = [_clean(c).decode("utf-8", "replace") for c in header.lstrip(b"\xef\xbb\xbf").split(b",")]
    if [c.lower() for c in got] != [c.lower() for c in COLUMNS]:
        raise DataError(
            f"{path} line 1: header {','.join(got)!r} does not match; expected the columns "
            f"{','.join(COLUMNS)} (Kaggle's fer2013.csv)"
        )


def _parse_pixels_slow(field: bytes) -> tuple[Optional[np.ndarray], str]:
    """One row's pixels the careful way: (2304,) uint8 values, or None and why not.

    Used for the rows the block decoder rejects, so any whitespace between the numbers (tabs,
    double spaces, a trailing space) is accepted here, and real errors get a precise message.
    """
    if b"," in field:
        return None, f"expected 3 comma-separated fields ({','.join(COLUMNS)}); found {field.count(b',') + 3}"
    tokens = field.split()
    for j, tok in enumerate(tokens):
        if not tok.isdigit() or int(tok) > 255:
            return None, f"pixels value {tok.decode('utf-8', 'replace')[:20]!r} (value {j + 1}) is not an integer in 0..255"
    if len(tokens) != N_PIXELS:
        return None, f"pixels must be {N_PIXELS} integers in 0..255 separated by spaces; found {len(tokens)} values"
    return np.array([int(t) for t in tokens], dtype=np.uint8), ""


def _decode_block(fields: list[memoryview]) -> tuple[np.ndarray, np.ndarray]:
    """Decode a block of pixel fields at once, assuming the usual format (numbers separated by
    single spaces); rows that break it are flagged for `_parse_pixels_slow`.

    Args:
        fields: R pixel fields.

    Returns:
        values (R, 2304) uint8 (flagged rows hold zeros), ok (R,) bool.
    """
    n_rows = len(fields)
    lengths = np.fromiter((len(f) for f in fields), dtype=np.int64, count=n_rows)
    row_start = np.empty(n_rows + 1, dtype=np.int64)
    row_start[0] = _PAD
    np.cumsum(lengths + 1, out=row_start[1:])
    row_start[1:] += _PAD
    # Leading spaces make the look-back of the first number safe; the trailing one ends the last.
    text = b" " * _PAD + b" ".join(fields) + b" "
    c = np.frombuffer(text, dtype=np.uint8)
    ok = np.ones(n_rows, dtype=bool)
    if text.translate(None, _DIGITS_SPACE):  # a sign, a dot, a letter, a tab... (rare)
        stray = np.flatnonzero(((c - np.uint8(48)) >= 10) & (c != 32))
        ok[np.searchsorted(row_start, stray, side="right") - 1] = False
        c = c.copy()
        c[stray] = 32  # keeps the decoding below defined; those rows are re-read anyway
    space = c == 32
    ends = np.flatnonzero(space[1:] > space[:-1])  # a digit followed by a space
    counts = np.diff(np.searchsorted(ends, row_start))
    ok &= counts == N_PIXELS
    # With single spaces a number starts two bytes after the previous one ends. Where that byte
    # is a space (double spaces, a leading space, an empty field) the row is flagged; then all
    # bytes from there to the end are digits, and n_digits is exact.
    n_digits = np.diff(ends, prepend=_PAD - 2) - 1
    bad_tok = (n_digits > 3) | space[ends - n_digits + 1]
    n_digits = np.minimum(n_digits, 3)
    vals = c[ends].astype(np.uint16) - 48
    vals += (c[ends - 1].astype(np.uint16) - 48) * 10 * (n_digits >= 2)
    vals += (c[ends - 2].astype(np.uint16) - 48) * 100 * (n_digits >= 3)
    bad_tok |= vals > 255
    if bad_tok.any():
        ok[np.searchsorted(row_start, ends[bad_tok], side="right") - 1] = False

    out = np.zeros((n_rows, N_PIXELS), dtype=np.uint8)
    if ok.all():
        out[:] = vals.reshape(n_rows, N_PIXELS)
    elif ok.any():
        token_row = np.searchsorted(row_start, ends, side="right") - 1
        out[ok] = vals[ok[token_row]].reshape(-1, N_PIXELS)
    return out, ok


def parse_fer2013_bytes(data: bytes, path: Path | str = "fer2013.csv") -> ParsedCSV:
    """Parse the text of a fer2013.csv.

    Args:
        data: the whole (decompressed) file.
        path: named in error messages.

    Returns:
        The good rows and the bad rows' line numbers and messages (the caller decides whether
        bad rows are an error).

    Raises:
        DataError: empty file, wrong header, or no data rows.
    """
    path = Path(path)
    if _NON_SPACE.search(data) is None:  # stops at the first character, unlike data.strip()
        raise DataError(f"{path}: empty file; expected a header {','.join(COLUMNS)} and one row per image")
    buf = memoryview(data)
    n = len(data)
    eol = data.find(b"\n")
    eol = n if eol < 0 else eol
    _check_header(data[:eol], path)

    # Locate every row's fields without copying: (line, row, pixel start, pixel end, label, usage).
    lines, rows, ps, pe, labels, usages = [], [], [], [], [], []
    bad: list[tuple[int, int, str]] = []  # (line, row, message)
    pos, line, row = eol + 1, 1, 0
    find, rfind = data.find, data.rfind
    while pos < n:
        line += 1
        end = find(b"\n", pos)
        end = n if end < 0 else end
        start, pos = pos, end + 1
        c1 = find(b",", start, end)
        if c1 < 0:
            if data[start:end].strip():
                bad.append((line, row, f"expected 3 comma-separated fields ({','.join(COLUMNS)}); found 1"))
                row += 1
            continue  # blank lines are not rows
        c2 = rfind(b",", start, end)
        # Exact bytes first (the common case), then without spaces, quotes and a CR.
        label = _LABELS.get(data[start:c1])
        if label is None:
            label = _LABELS.get(_clean(data[start:c1]))
        usage = _USAGE_CODES.get(data[c2 + 1:end])
        if usage is None:
            usage = _USAGE_CODES.get(_clean(data[c2 + 1:end]))
        if c1 == c2:
            bad.append((line, row, f"expected 3 comma-separated fields ({','.join(COLUMNS)}); found 2"))
        elif label is None:
            got = _clean(data[start:c1]).decode("utf-8", "replace")[:20]
            bad.append((line, row, f"emotion label {got!r} is not an integer in 0..{len(FER2013_CLASSES) - 1}"))
        elif usage is None:
            got = _clean(data[c2 + 1:end]).decode("utf-8", "replace")[:20]
            bad.append((line, row, f"Usage {got!r} is not one of {', '.join(USAGES)}"))
        else:
            a, b = c1 + 1, c2
            if data[a:a + 1] == b'"' and data[b - 1:b] == b'"':
                a, b = a + 1, b - 1
            lines.append(line), rows.append(row), ps.append(a), pe.append(b)
            labels.append(label), usages.append(usage)
        row += 1
    if row == 0:
        raise DataError(f"{path}: no data rows after the header; expected one row per image")

    n_cand = len(lines)
    images = np.empty((n_cand, N_PIXELS), dtype=np.uint8)
    keep = np.ones(n_cand, dtype=bool)
    for b0 in range(0, n_cand, _BLOCK_ROWS):
        b1 = min(b0 + _BLOCK_ROWS, n_cand)
        fields = [buf[ps[i]:pe[i]] for i in range(b0, b1)]
        images[b0:b1], ok = _decode_block(fields)
        for i in np.flatnonzero(~ok) + b0:
            values, why = _parse_pixels_slow(data[ps[i]:pe[i]])
            if values is None:
                keep[i] = False
                bad.append((lines[i], rows[i], why))
            else:
                images[i] = values
    bad.sort()
    if not keep.all():
        images = images[keep]
    return ParsedCSV(
        images=images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
        labels=np.asarray(labels, dtype=np.int64)[keep],
        usage=np.asarray(usages, dtype=np.int8)[keep],
        lines=np.asarray(lines, dtype=np.int64)[keep],
        row_index=np.asarray(rows, dtype=np.int64)[keep],
        bad_lines=np.asarray([b[0] for b in bad], dtype=np.int64),
        bad_messages=np.asarray([b[2] for b in bad], dtype=str),
    )


# ---------------------------------------------------------------------------------------------
# cache


def cache_dir() -> Path:
    """`$FERMETRIC_CACHE_DIR`, or `~/.cache/fermetric`."""
    env = os.environ.get("FERMETRIC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fermetric"


def cache_path(path: Path) -> Path:
    """The cache file of a CSV: a hash of its absolute path, size and mtime, so an edited or
    replaced file never reads a stale cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|v{CACHE_VERSION}".encode()).hexdigest()[:20]
    stem = path.name.split(".")[0] or "fer2013"
    return cache_dir() / f"{stem}-{key}.npz"


_FIELDS = ("images", "labels", "usage", "lines", "row_index", "bad_lines", "bad_messages")


def _read_cache(file: Path) -> Optional[ParsedCSV]:
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            parsed = ParsedCSV(**{k: z[k] for k in _FIELDS})
        n = len(parsed.labels)
        if parsed.images.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or parsed.images.dtype != np.uint8 or any(
            len(getattr(parsed, k)) != n for k in ("usage", "lines", "row_index")
        ):
            raise ValueError("arrays of inconsistent shapes")
        return parsed
    except Exception as exc:  # any damage at all means: parse again
        logger.warning("ignoring unreadable cache file %s (%s); rebuilding it", file, exc)
        return None


def _write_cache(file: Path, parsed: ParsedCSV) -> None:
    bio = io.BytesIO()
    np.savez(bio, **{k: getattr(parsed, k) for k in _FIELDS})  # uncompressed: loads in ~0.1 s
    try:
        atomic_write_bytes(file, bio.getvalue())
    except OSError as exc:  # a read-only home must not stop the load
        logger.warning("could not write cache file %s (%s)", file, exc)


# ---------------------------------------------------------------------------------------------
# public API


def load_fer2013_csv(path: str | os.PathLike, skip_bad_rows: bool = False, cache: bool = True) -> DataSplits:
    """Load Kaggle's fer2013.csv (or .csv.gz).

    Usage `Training` -> "train", `PublicTest` -> "val", `PrivateTest` -> "test"; only the splits
    present are returned. Images are (N, 1, 48, 48) uint8, labels FER2013 ids, sources
    "<file name>:<line>" (the header is line 1).

    Args:
        path: the CSV.
        skip_bad_rows: skip malformed rows (reported in `info["skipped_rows"]` and logged)
            instead of raising.
        cache: read and write the parsed-array cache (see `cache_path`).

    Returns:
        DataSplits whose info holds: source, cache ("hit", "miss" or "off"), cache_file,
        load_seconds, rows (data rows in the file), skipped_rows ({count, lines, first_error}),
        row_index (split -> (N,) int64 0-based data-row index, to align FER+).

    Raises:
        DataError: the file is empty, has another header, or (unless skip_bad_rows) a row has a
            label outside 0..6, an unknown Usage, or pixels that are not 2,304 integers in 0..255;
            the message names the file and line.
    """
    t0 = time.perf_counter()
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected fer2013.csv or fer2013.csv.gz")
    parsed, status, cfile = None, "off", None
    if cache:
        cfile = cache_path(path)
        parsed = _read_cache(cfile)
        status = "hit" if parsed is not None else "miss"
    if parsed is None:
        parsed = parse_fer2013_bytes(_read_bytes(path), path)
        if cache:
            _write_cache(cfile, parsed)

    n_bad = len(parsed.bad_lines)
    if n_bad and not skip_bad_rows:
        more = f" ({n_bad - 1} more bad rows; --skip-bad-rows / data.skip_bad_rows=true skips them)" if n_bad > 1 else ""
        raise DataError(f"{path} line {int(parsed.bad_lines[0])}: {parsed.bad_messages[0]}{more}")
    skipped = {
        "count": n_bad,
        "lines": [int(x) for x in parsed.bad_lines[:_SHOW_BAD]],
        "first_error": str(parsed.bad_messages[0]) if n_bad else None,
    }
    if n_bad:
        logger.warning(
            "%s: skipped %d bad rows (lines %s%s); first: %s", path, n_bad,
            ", ".join(map(str, skipped["lines"])), ", ..." if n_bad > _SHOW_BAD else "", skipped["first_error"],
        )

    splits: dict[str, FERDataset] = {}
    row_index: dict[str, np.ndarray] = {}
    images = torch.from_numpy(parsed.images).unsqueeze(1)
    labels = torch.from_numpy(parsed.labels.astype(np.int64))
    for code, usage in enumerate(USAGES):
        idx = np.flatnonzero(parsed.usage == code)
        if idx.size == 0:
            continue
        split = USAGE_TO_SPLIT[usage]
        t_idx = torch.from_numpy(idx)
        splits[split] = FERDataset(
            images=images[t_idx].contiguous(),
            labels=labels[t_idx],
            class_names=FER2013_CLASSES,
            sources=[f"{path.name}:{line}" for line in parsed.lines[idx].tolist()],
        )
        row_index[split] = parsed.row_index[idx]
    if not splits:
        raise DataError(
            f"{path}: every data row is bad; nothing to load (first error: line {skipped['lines'][0]}: {skipped['first_error']})"
        )
    info = {
        "source": str(path),
        "format": "fer2013.csv",
        "rows": int(len(parsed.labels) + n_bad),
        "skipped_rows": skipped,
        "row_index": row_index,
        "cache": status,
        "cache_file": None if cfile is None else str(cfile),
        "load_seconds": round(time.perf_counter() - t0, 3),
    }
    return DataSplits(name=path.name, splits=splits, info=info)
