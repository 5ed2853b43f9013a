"""`fermetric evaluate RUN` and `fermetric ensemble RUN RUN ...`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import OutPath, RUN, device_option, precision_option


def register(main: click.Group) -> None:
    @main.command("evaluate")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["val", "test", "train"]), default="val", show_default=True)
    @click.option("--tta", is_flag=True, help="Test-time augmentation: mean softmax over 5 crops x flip.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/eval.")
    @device_option
    @precision_option
    def evaluate(run: str, split: str, tta: bool, out: Optional[str], device: Optional[str], precision: Optional[str] = None) -> None:
        """Evaluate a trained run on a split: accuracy, macro-F1, per-class scores, confusion matrix."""
        from fermetric.api import evaluate_run

        m, paths = evaluate_run(run, split, tta, out, device=device, precision=precision)
        click.echo(f"{Path(m['run']).name} {split}{' (TTA)' if tta else ''}: accuracy {m['accuracy'] * 100:.2f} %, "
                   f"macro-F1 {m['macro_f1'] * 100:.2f} %")
        for p in paths:
            click.echo(f"  {p}")

    @main.command("ensemble")
    @click.argument("runs", nargs=-1, required=True, type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
    @click.option("--tta", is_flag=True, help="TTA for the classifier members.")
    @click.option("--out", type=OutPath(file_okay=False), default="ensemble", show_default=True)
    @device_option
    @precision_option
    def ensemble(runs: tuple[str, ...], split: str, tta: bool, out: str, device: Optional[str], precision: Optional[str] = None) -> None:
        """Soft-vote and val-accuracy-weighted ensembles of classifier and embedding (kNN) runs.

        With --split test the weights are the members' val accuracies; with --split val they are
        cross-fitted (each half of val voted with accuracies on the other half), never fitted on
        the images they score. The output says which."""
        from fermetric.api import ensemble as run_ensemble
        from fermetric.evaluation.ensemble import ensemble_markdown

        results, paths = run_ensemble(runs, split, tta, out, device=device, precision=precision)
        click.echo(ensemble_markdown(results))
        click.echo("\n".join(f"  {p}" for p in paths))
