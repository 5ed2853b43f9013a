"""`fermetric report RUN [RUN ...]`: one self-contained HTML page."""
from __future__ import annotations

from typing import Optional

import click

from fermetric.cli.options import RUN, OutPath


def register(main: click.Group) -> None:
    @main.command("report")
    @click.argument("runs", nargs=-1, type=RUN)
    @click.option("--out", type=OutPath(dir_okay=False), default="report.html", show_default=True,
                  help="The HTML file to write.")
    @click.option("--title", default=None, help="Page title (default: the run names).")
    @click.option("--extra", "extras", multiple=True, type=click.Path(exists=True),
                  help="A folder (or JSON file) with ensemble_*.json, explain_eval.json or PNGs to include; repeatable.")
    def report(runs: tuple[str, ...], out: str, title: Optional[str], extras: tuple[str, ...]) -> None:
        """One self-contained HTML report (figures embedded, no scripts, no network) of run
        directories or pretrained models' names (their cards and what commands wrote into their
        cache folders): config, training curves, metrics, confusion matrices, kNN reports, embedding
        plots and explanations, with a comparison table when several runs are given."""
        from fermetric.api import write_report

        if not runs and not extras:
            raise click.UsageError("give at least one RUN directory (or --extra folder)")
        path = write_report(runs, out, title=title, extras=extras)
        size = path.stat().st_size
        click.echo(f"report of {len(runs)} run(s), {size / 1e6:.2f} MB")
        click.echo(f"  {path}")
