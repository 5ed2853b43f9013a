"""`fermetric data info [PATH]`, `fermetric data audit [PATH]` and `fermetric data synth --n N --out DIR`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import OutPath, SEED, config_options, seed_option


def register(main: click.Group) -> None:
    @main.group("data")
    def data() -> None:
        """Inspect data sets and write SynthFER to disk."""

    @data.command("info")
    @click.argument("path", required=False, default=None)
    @click.option("--ferplus", default=None, metavar="CSV", type=click.Path(dir_okay=False),
                  help="fer2013new.csv: show FER+ plurality labels instead of FER2013's.")
    @click.option("--out", type=OutPath(file_okay=False), default="fermetric-data-info", show_default=True,
                  help="Folder for samples.png and summary.txt.")
    @click.option("--per-class", type=click.IntRange(1, 64), default=8, show_default=True,
                  help="Sample images per class in samples.png.")
    @click.option("--split", default=None, help="Split to draw samples from (default: train, else the first).")
    @click.option("--skip-bad-rows", is_flag=True, help="Skip malformed CSV rows (counted) instead of failing.")
    @seed_option
    @config_options
    def info(path: Optional[str], ferplus: Optional[str], out: str, per_class: int, split: Optional[str],
             skip_bad_rows: bool, seed: Optional[int], config_path: Optional[str], overrides: tuple[str, ...]) -> None:
        """Count images per split and class, and draw samples of each class.

        PATH is a fer2013.csv(.gz), an image folder, or 'synth' (the default: SynthFER).
        """
        from fermetric.api import data_info
        from fermetric.config import resolve_config

        cfg = resolve_config(config_path, overrides, data=path, ferplus=ferplus, seed=seed)
        if skip_bad_rows:
            cfg.data.skip_bad_rows = True
        table, facts, written = data_info(out=out, per_class=per_class, split=split, cfg=cfg)
        click.echo(table)
        for line in facts:
            click.echo(line)
        for p in written:
            click.echo(f"wrote {p}")

    @data.command("audit")
    @click.argument("path", required=False, default=None)
    @click.option("--out", type=OutPath(file_okay=False), default="fermetric-data-audit", show_default=True,
                  help="Folder for audit.json, audit.md and duplicates.png.")
    @click.option("--radius", type=click.IntRange(0, 63), default=None,
                  help="Near duplicates: at most this many of the 63 hash bits differ (default 4, see the README).")
    @click.option("--skip-bad-rows", is_flag=True, help="Skip malformed CSV rows (counted) instead of failing.")
    @seed_option
    @config_options
    def audit(path: Optional[str], out: str, radius: Optional[int], skip_bad_rows: bool, seed: Optional[int],
              config_path: Optional[str], overrides: tuple[str, ...]) -> None:
        """Exact and near-duplicate faces within and across splits (e.g. PublicTest faces that are
        also in Training), duplicates with other labels, and blank images."""
        from fermetric.api import data_audit
        from fermetric.config import resolve_config

        cfg = resolve_config(config_path, overrides, data=path, seed=seed)
        if skip_bad_rows:
            cfg.data.skip_bad_rows = True
        report, written = data_audit(None, out, radius, cfg=cfg)
        for p in report["pairs"]:
            n = report["splits"][p["b"]]["n"]
            click.echo(f"{p['a']} - {p['b']}: {p['n_exact']:,} exact, {p['n_near']:,} near pairs "
                       f"({p['n_conflicting']:,} with other labels); {p['b_with_duplicate']:,} of {n:,} {p['b']} images "
                       f"have a duplicate in {p['a']}")
        for name, s in report["splits"].items():
            if s["blank"]:
                click.echo(f"{name}: {len(s['blank'])} blank image(s)")
        for w in written:
            click.echo(f"wrote {w}")

    @data.command("synth")
    @click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Images in all (10% val, 10% test).")
    @click.option("--out", type=OutPath(file_okay=False), required=True, help="Target folder.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @click.option("--difficulty", type=click.FloatRange(0, 10), default=1.0, show_default=True,
                  help="0 = clean prototypes; 1 = the default; higher = harder.")
    @click.option("--overwrite", is_flag=True, help="Write into a folder that already holds a data set.")
    def synth(n: int, out: str, seed: int, difficulty: float, overwrite: bool) -> None:
        """Write SynthFER as PNGs in Kaggle's FER2013 folder layout, with evidence masks."""
        from fermetric.data.synthetic import write_synthfer_folder

        counts = write_synthfer_folder(out, n=n, seed=seed, difficulty=difficulty, overwrite=overwrite)
        for split, per_class in counts.items():
            detail = ", ".join(f"{c} {k}" for c, k in per_class.items())
            click.echo(f"{split}: {sum(per_class.values()):,} images ({detail})")
        click.echo(f"wrote {sum(sum(c.values()) for c in counts.values()):,} images and their masks to {Path(out)}")
