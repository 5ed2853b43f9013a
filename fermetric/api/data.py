"""`data info` and `data audit`: what a data set holds."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from fermetric.api.common import PathLike, claim_output
from fermetric.utils.outputs import staged_outputs


def data_info(source: Optional[str] = None, out: PathLike = "fermetric-data-info", per_class: int = 8,
              split: Optional[str] = None, cfg: Any = None) -> tuple[str, list[str], list[Path]]:
    """`fermetric data info`: images per split and class, facts about the data, and sample grids
    of each class, written as OUT/summary.txt, OUT/samples.png (and samples_masks.png where the
    data has evidence masks).

    Args:
        source: fer2013.csv(.gz), an image folder or "synth"; overrides cfg.data.source.
        split: split the samples come from (default: train, else the first).
        cfg: a RunConfig for the data options (default: the defaults).

    Returns:
        (count table, fact lines, paths written).
    """
    from fermetric.config import RunConfig
    from fermetric.data import load_data
    from fermetric.data.info import describe, info_lines
    from fermetric.plotting import save_figure
    from fermetric.plotting.samples import sample_grid
    from fermetric.utils.io import atomic_write_text

    cfg = cfg if cfg is not None else RunConfig()
    claim_output(out, "data summary", "summary.txt")
    t0 = time.perf_counter()
    splits = load_data(source if source is not None else cfg.data.source, cfg.data, seed=cfg.seed)
    splits.info.setdefault("load_seconds", round(time.perf_counter() - t0, 3))
    table, facts = describe(splits), info_lines(splits)
    name = split or ("train" if "train" in splits else next(iter(splits.splits)))
    ds = splits[name]
    dest = Path(out)
    variants = [("samples.png", False)] + ([("samples_masks.png", True)] if ds.masks is not None else [])
    with staged_outputs(dest) as tmp:
        atomic_write_text(tmp / "summary.txt", "\n".join([table, *facts]) + "\n")
        for fname, masks in variants:
            fig = sample_grid(ds, per_class=per_class, seed=cfg.seed, masks=masks,
                              title=f"{splits.name} [{name}]" + (" + evidence masks" if masks else ""))
            save_figure(fig, tmp / fname)
    return table, facts, [dest / "summary.txt", *[dest / fname for fname, _ in variants]]


def data_audit(source: Optional[str] = None, out: PathLike = "fermetric-data-audit", radius: Optional[int] = None,
               cfg: Any = None, examples: int = 32) -> tuple[dict[str, Any], list[Path]]:
    """`fermetric data audit`: exact and near-duplicate faces within and across the splits,
    duplicates with other labels, blank images (fermetric.data.audit), written as OUT/audit.json
    (every pair), OUT/audit.md (the tables) and OUT/duplicates.png (`examples` pairs across
    splits: up to half with conflicting labels, the rest with the same label).

    Returns:
        (report, paths written).
    """
    from fermetric.config import RunConfig
    from fermetric.data import load_data
    from fermetric.data.audit import NEAR_RADIUS, audit_markdown, audit_splits
    from fermetric.plotting import save_figure
    from fermetric.plotting.audit import plot_duplicate_pairs
    from fermetric.utils.io import atomic_write_text, write_json

    cfg = cfg if cfg is not None else RunConfig()
    claim_output(out, "data audit", "audit.json")
    splits = load_data(source if source is not None else cfg.data.source, cfg.data, seed=cfg.seed)
    report = audit_splits(splits, NEAR_RADIUS if radius is None else radius)
    report["data"] = splits.name
    across = [d for d in report["duplicates"] if d["a"] != d["b"]] or report["duplicates"]
    conflicting = [d for d in across if d["label_a"] != d["label_b"]][:examples // 2]
    shown = conflicting + [d for d in across if d["label_a"] == d["label_b"]][:examples - len(conflicting)]
    dest = Path(out)
    names = ["audit.json", "audit.md"] + (["duplicates.png"] if shown else [])
    with staged_outputs(dest) as tmp:
        write_json(tmp / "audit.json", report)
        atomic_write_text(tmp / "audit.md", audit_markdown(report, splits.class_names))
        if shown:
            fig = plot_duplicate_pairs(shown, splits, title=f"{splits.name}: duplicate pairs (radius {report['radius']}), "
                                                             "other labels in red")
            save_figure(fig, tmp / "duplicates.png")
    return report, [dest / n for n in names]
