"""Plain-text summaries of a loaded data set: the per-split, per-class count table and the
loader's facts (skipped rows, dropped FER+ rows, cache, timing)."""
from __future__ import annotations

from typing import Any

from fermetric.data.dataset import DataSplits


def count_table(splits: DataSplits) -> tuple[list[str], list[str], list[list[int]]]:
    """(class names, split names, counts[class][split]) with no totals."""
    names = list(splits.class_names)
    split_names = list(splits.splits)
    table = splits.count_table()
    return names, split_names, [[table[s][c] for s in split_names] for c in range(len(names))]


def describe(splits: DataSplits) -> str:
    """A per-class, per-split count table with totals and class shares.

    Example::

        fer2013.csv: 2 splits, 7 classes, 32,298 images
        class      train    val   total  share
        Angry      3,995    467   4,462  13.8%
        ...
        total     28,709  3,589  32,298  100.0%
    """
    names, split_names, rows = count_table(splits)
    split_totals = [sum(r[j] for r in rows) for j in range(len(split_names))]
    grand = sum(split_totals)
    header = ["class", *split_names, "total", "share"]
    body = [
        [name, *(f"{v:,}" for v in r), f"{sum(r):,}", f"{100.0 * sum(r) / grand:.1f}%" if grand else "-"]
        for name, r in zip(names, rows)
    ]
    body.append(["total", *(f"{v:,}" for v in split_totals), f"{grand:,}", "100.0%" if grand else "-"])
    widths = [max(len(str(row[j])) for row in [header, *body]) for j in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(str(c).ljust(widths[0]) if j == 0 else str(c).rjust(widths[j]) for j, c in enumerate(row)).rstrip()

    plural = "s" if len(split_names) != 1 else ""
    title = f"{splits.name}: {len(split_names)} split{plural}, {len(names)} classes, {grand:,} images"
    extras = []
    masks = [s for s, ds in splits.splits.items() if ds.masks is not None]
    soft = [s for s, ds in splits.splits.items() if ds.soft_labels is not None]
    if masks:
        extras.append(f"evidence masks: {', '.join(masks)}")
    if soft:
        extras.append(f"soft labels: {', '.join(soft)}")
    return "\n".join([title, fmt(header), *(fmt(r) for r in body), *extras])


def info_lines(splits: DataSplits) -> list[str]:
    """The loader facts worth showing a user, one line each (source, cache, skipped rows,
    dropped FER+ rows, ignored files, where val came from, load time)."""
    info: dict[str, Any] = splits.info
    out = []
    if info.get("source"):
        out.append(f"source: {info['source']}")
    if info.get("cache"):
        cache = info["cache"]
        out.append(f"cache: {cache}" + (f" ({info['cache_file']})" if info.get("cache_file") else ""))
    skipped = info.get("skipped_rows")
    if isinstance(skipped, dict):
        line = f"skipped bad rows: {skipped.get('count', 0)}"
        if skipped.get("count"):
            more = ", ..." if skipped["count"] > len(skipped.get("lines", [])) else ""
            line += f" (lines {', '.join(map(str, skipped.get('lines', [])))}{more}; first: {skipped.get('first_error')})"
        out.append(line)
    ferplus = info.get("ferplus")
    if isinstance(ferplus, dict):
        per = "; ".join(
            f"{s}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for s, d in ferplus.get("dropped", {}).items()
        )
        out.append(f"FER+ labels: {ferplus.get('source')}; dropped {ferplus.get('dropped_total', 0)} rows ({per})")
    ignored = info.get("ignored")
    if isinstance(ignored, dict) and ignored.get("count"):
        out.append(f"ignored (not images): {ignored['count']} (e.g. {', '.join(ignored.get('examples', []))})")
    if info.get("val_from"):
        out.append(f"val split: {info['val_from']}")
    if "load_seconds" in info:
        speed = f", {info['images_per_second']:,.0f} images/s" if info.get("images_per_second") else ""
        out.append(f"load time: {info['load_seconds']:.2f} s{speed}")
    return out
