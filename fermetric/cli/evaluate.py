"""`fermetric evaluate RUN`, `fermetric calibrate RUN` and `fermetric ensemble RUN RUN ...`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import (
    OutPath, RUN, device_option, echo_class_mapping, other_data_options, precision_option, run_data_option,
)


def register(main: click.Group) -> None:
    @main.command("evaluate")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["val", "test", "train", "all"]), default=None,
                  help="Default: val of the run's data; with --data, all images of that data.")
    @click.option("--tta", type=click.Choice(["shift", "tencrop"]), is_flag=False, flag_value="shift", default=None,
                  help="Test-time augmentation, mean softmax over 10 views. --tta alone (shift): 5 crops shifted "
                       "by 2 px x flip; --tta tencrop: centre and 4 corner crops where the model's random "
                       "training crops came from (data.augment.crop_padding) x flip.")
    @other_data_options("Evaluate on another data set")
    @click.option("--exclude-duplicates", is_flag=True,
                  help="Leave out the evaluated faces with an exact or near duplicate in the run's training split "
                       "(fermetric data audit); the number left out is printed and recorded.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/eval.")
    @device_option
    @precision_option
    def evaluate(run: str, split: Optional[str], tta: Optional[str], data: Optional[str], class_map: tuple[str, ...],
                 exclude_duplicates: bool, out: Optional[str], device: Optional[str], precision: Optional[str] = None) -> None:
        """Evaluate a trained run on a split, or on another data set (--data): accuracy, macro-F1,
        per-class scores, confusion matrix. With --data, classes the model does not know are
        reported and left out of the metrics; the class mapping is printed."""
        from fermetric.api import evaluate_run

        if split == "all" and data is None:
            raise click.BadParameter("'all' is for --data (all images of another data set); choose val, test or train",
                                     param_hint="--split")
        m, paths = evaluate_run(run, split, tta, out, device=device, precision=precision, data=data, class_map=class_map,
                                exclude_duplicates=exclude_duplicates)
        if "excluded_duplicates" in m:
            ex = m["excluded_duplicates"]
            click.echo(f"  {ex['n_excluded']} face(s) with a duplicate among the {ex['against']} left out "
                       f"(hash radius {ex['radius']}); {ex['n_kept']} scored")
        echo_class_mapping(m)
        where = f"{m['cross_data']['data']} ({m['split']})" if "cross_data" in m else m["split"]
        click.echo(f"{Path(m['run']).name} {where}{f' (TTA {tta})' if tta else ''}: accuracy {m['accuracy'] * 100:.2f} %, "
                   f"macro-F1 {m['macro_f1'] * 100:.2f} % (n = {m['n']})")
        for p in paths:
            click.echo(f"  {p}")

    @main.command("calibrate")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
                  help="The split the calibration is fitted on (never train: the model is over-confident there).")
    @click.option("--tta", type=click.Choice(["shift", "tencrop"]), is_flag=False, flag_value="shift", default=None,
                  help="Fit the temperature of the TTA softmax (--tta alone: shift, what predict uses).")
    @run_data_option
    @device_option
    @precision_option
    def calibrate(run: str, split: str, tta: Optional[str], data: Optional[str], device: Optional[str],
                  precision: Optional[str] = None) -> None:
        """Calibrate a run's probabilities on a split: the temperature of a classifier's softmax, the
        additive smoothing of an embedding run's kNN vote (its zero votes otherwise call a face
        impossible); kept in RUN/temperature.json (stamped with the checkpoint), predict uses it
        from then on. Prints ECE / NLL / Brier before and after (after cross-fitted on halves of
        the split, so the numbers are not flattered by the split's own labels)."""
        from fermetric.api import calibrate as run_calibrate

        rec = run_calibrate(run, split, tta or False, device=device, precision=precision, data=data)
        fitted = (f"temperature {rec['temperature']:.3f}" if rec["method"] == "temperature"
                  else f"kNN vote smoothing {rec['alpha']:.4f}")
        click.echo(f"{Path(run).name} {split}{f' (TTA {tta})' if tta else ''}: {fitted} "
                   f"(n = {rec['n']}, accuracy {rec['accuracy'] * 100:.2f} %, unchanged)")
        for when in ("before", "after_cross_fitted"):
            c = rec[when]
            click.echo(f"  {when.replace('_', ' ')}: ECE {c['ece'] * 100:.2f} % ({rec['binning']}), "
                       f"NLL {c['nll']:.4f}, Brier {c['brier']:.4f}")

    @main.command("ensemble")
    @click.argument("runs", nargs=-1, required=True, type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
    @click.option("--tta", type=click.Choice(["shift", "tencrop"]), is_flag=False, flag_value="shift", default=None,
                  help="TTA for the classifier members (--tta alone: shift; --tta tencrop).")
    @click.option("--out", type=OutPath(file_okay=False), default="ensemble", show_default=True)
    @run_data_option
    @device_option
    @precision_option
    def ensemble(runs: tuple[str, ...], split: str, tta: Optional[str], out: str, data: Optional[str], device: Optional[str],
                 precision: Optional[str] = None) -> None:
        """Soft-vote and val-accuracy-weighted ensembles of classifier and embedding (kNN) runs.

        With --split test the weights are the members' val accuracies; with --split val they are
        cross-fitted (each half of val voted with accuracies on the other half), never fitted on
        the images they score. The output says which."""
        from fermetric.api import ensemble as run_ensemble
        from fermetric.evaluation.ensemble import ensemble_markdown

        results, paths = run_ensemble(runs, split, tta or False, out, device=device, precision=precision, data=data)
        click.echo(ensemble_markdown(results))
        click.echo("\n".join(f"  {p}" for p in paths))
