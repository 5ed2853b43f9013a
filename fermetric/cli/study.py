"""`fermetric study`: train, evaluate, ensemble and explain the models of a study file, and write
its figures, results tables and HTML report (one call: fermetric.study.run_study)."""
from __future__ import annotations

from typing import Optional

import click

from fermetric.cli.options import SEED, OutPath, device_option


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def register(main: click.Group) -> None:
    @main.command("study")
    @click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="A study file (configs/study/*.yaml). Default: the built-in SynthFER study of the five "
                       "backbones, their ensemble, a triplet and a Siamese model.")
    @click.option("--data", default=None, metavar="PATH", help="Data for every model (default: the study's `data`).")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Study directory (default: studies/<name>).")
    @click.option("--seed", "seeds", type=SEED, multiple=True,
                  help="Seeds to train (repeatable; default: the study's). Finished runs of other seeds in --out are "
                       "reported too: a second call with another seed adds mean ± std.")
    @click.option("--only", default=None, metavar="NAMES", help="Comma-separated models to train (others: reused if finished).")
    @click.option("--skip", default=None, metavar="NAMES", help="Comma-separated models not to train.")
    @click.option("--tta", type=click.Choice(["shift", "tencrop"]), is_flag=False, flag_value="shift", default=None,
                  help="Also evaluate the classifiers with TTA (default: the study's `tta`).")
    @click.option("--no-explain", is_flag=True, help="No explanation figures or faithfulness table.")
    @device_option
    @click.pass_context
    def study(ctx, config_path, data, out, seeds, only, skip, tta, no_explain, device) -> None:
        """Train the study's models (finished runs reused, interrupted ones resumed), evaluate them,
        vote the ensemble, explain, and write figures, results.csv / results.md and report.html."""
        from fermetric.study import run_study

        res = run_study(config_path, data=data, out=out, seeds=list(seeds) or None, only=_names(only), skip=_names(skip),
                        tta=tta, device=device, explain=not no_explain, quiet=True,  # no progress bars: a study logs one line per step
                        echo=click.echo)
        click.echo("\n== timings")
        for name, secs in res.steps:
            click.echo(f"  {secs:7.1f} s  {name}")
        click.echo(f"study directory: {res.out}")
        for key in ("results.md", "results.csv", "results_summary.csv", "explain_eval.md", "report.html"):
            if key in res.paths:
                click.echo(f"  {res.paths[key]}")
        for p in res.figures:
            click.echo(f"  {p}")
