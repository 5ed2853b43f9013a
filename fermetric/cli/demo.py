"""`fermetric demo`: the whole study end to end, on SynthFER by default, in a few minutes on a CPU.

It is a script of the other commands (so it exercises exactly what users run): train a baseline
classifier and a triplet model, build the kNN index, evaluate both, explain both, plot UMAP,
measure explanation faithfulness, vote an ensemble, and write one HTML report.

With --pretrained it trains nothing: the explanation half on a pretrained model of the zoo
(fermetric.api.demo_pretrained), for users without FER2013 at hand.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from fermetric.api import DEMO_METHODS
from fermetric.cli.options import OutPath, SEED, data_option, device_option
import fermetric.run_layout as layout

# Sized for < 5 minutes on 2 CPU cores with SynthFER; --set adds to or overrides these.
DEMO_SETTINGS = [
    "data.synth_train=3000", "data.synth_val=700", "data.synth_test=700",
    "model.width=16", "train.eval_batch_size=256", "optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.0005",
]
CLASSIFIER_SETTINGS = ["train.batch_size=64"]
# The triplet model with train-triplet's own defaults (triplet loss jointly with cross-entropy on
# a linear head, batches with the data's class priors): what a user gets.
TRIPLET_SETTINGS: list[str] = []


def register(main: click.Group) -> None:
    @main.command("demo")
    @click.argument("images", nargs=-1, type=click.Path(), metavar="[IMAGE]...")
    @data_option
    @click.option("--out", type=OutPath(file_okay=False), default=None,
                  help="Output folder [default: fermetric-demo; with --pretrained: fermetric-demo-pretrained].")
    @click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Epochs for each model.")
    @click.option("--model", default=None, metavar="NAME",
                  help="Backbone of both models [default: baseline]; with --pretrained: the zoo model to explain "
                       "[default: the default classifier].")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Extra config overrides for both models.")
    @click.option("--pretrained", is_flag=True,
                  help="Train nothing: predict and explain (saliency, occlusion, Grad-CAM, LIME) the bundled real face, "
                       "SynthFER faces and the faces in IMAGE... with a pretrained model of the zoo, and write the report.")
    @click.option("--per-class", type=click.IntRange(min=0), default=1, show_default=True,
                  help="With --pretrained: SynthFER faces explained per class (0: none).")
    @click.option("--methods", default=",".join(DEMO_METHODS), show_default=True,
                  help="With --pretrained: the explanation methods drawn (comma-separated).")
    @click.option("--lime-samples", type=click.IntRange(min=10), default=1000, show_default=True,
                  help="With --pretrained: perturbed images LIME scores per face.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @device_option
    @click.pass_context
    def demo(ctx, images: tuple[str, ...], data: Optional[str], out: Optional[str], epochs: int, model: Optional[str],
             overrides: tuple[str, ...], pretrained: bool, per_class: int, methods: str, lime_samples: int,
             seed: int, device: Optional[str]) -> None:
        """Run the whole study end to end and write an HTML report (SynthFER unless --data); with
        --pretrained, explain a pretrained model on real and SynthFER faces (no training)."""
        if pretrained:
            given = [f"--{p.replace('_', '-')}" for p in ("data", "epochs", "overrides")
                     if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE]
            if given:
                raise click.UsageError(f"{', '.join(given).replace('--overrides', '--set')}: --pretrained trains nothing")
            _demo_pretrained(model, images, out or "fermetric-demo-pretrained", per_class, methods.split(","),
                             lime_samples, seed, device)
            return
        if images:
            raise click.UsageError("IMAGE arguments are explained by the pretrained demo: add --pretrained")
        for p in ("per_class", "methods", "lime_samples"):
            if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{p.replace('_', '-')} belongs to --pretrained")
        model = model or "baseline"
        root = Path(out or "fermetric-demo")
        if any(layout.checkpoint_path(root / name, layout.LAST).exists() for name in ("classifier", "triplet")):
            raise click.UsageError(f"{root} already holds a demo; remove it or choose another --out")
        from fermetric.utils.outputs import output_dir

        output_dir(root, "demo")  # a folder of someone else's files is refused before training
        cmd = main.commands
        t0 = time.time()
        steps: list[tuple[str, float]] = []

        def step(name: str, command: str, *args: str) -> None:
            t = time.time()
            click.echo(f"\n== {name}")
            ctx.invoke(cmd[command], **_parse(cmd[command], list(args)))
            steps.append((name, time.time() - t))

        common = ["--seed", str(seed), "--epochs", str(epochs), "--model", model]
        if data:
            common += ["--data", data]
        if device:
            common += ["--device", device]
        sets = [x for s in DEMO_SETTINGS + list(overrides) for x in ("--set", s)]
        clf, tri = str(root / "classifier"), str(root / "triplet")
        step("train a classifier", "train-classifier", *common, *sets,
             *[x for s in CLASSIFIER_SETTINGS for x in ("--set", s)], "--out", clf)
        step("train a triplet-loss embedding model", "train-triplet", *common, *sets,
             *[x for s in TRIPLET_SETTINGS for x in ("--set", s)], "--out", tri)
        step("build the kNN index", "build-index", tri)
        step("evaluate the classifier (TTA)", "evaluate", clf, "--split", "val", "--tta")
        for run in (tri, clf):
            step(f"kNN report: {Path(run).name}", "knn-eval", run, "--split", "val")
            step(f"UMAP: {Path(run).name}", "embed-plot", run, "--split", "val")
        for run in (clf, tri):
            for method in ("saliency", "occlusion", "gradcam", "lime"):
                step(f"explain {Path(run).name}: {method}", "explain", run, "--method", method, "--per-class", "1")
        step("faithfulness of the explanations", "explain-eval", clf, tri, "--per-class", "1",
             "--methods", "saliency,occlusion,gradcam,lime", "--lime-samples", "200",
             "--out", str(root / "explain_eval"))
        step("ensemble", "ensemble", clf, tri, "--out", str(root / "ensemble"))
        report = root / "report.html"
        step("HTML report", "report", clf, tri, "--out", str(report), "--extra", str(root / "ensemble"),
             "--extra", str(root / "explain_eval"), "--title", "fermetric demo")
        click.echo("\n== timings")
        for name, secs in steps:
            click.echo(f"  {secs:7.1f} s  {name}")
        click.echo(f"demo finished in {time.time() - t0:.0f} s")
        click.echo(f"report: {report.resolve()}")


def _demo_pretrained(model: Optional[str], images: tuple[str, ...], out: str, per_class: int, methods: list[str],
                     lime_samples: int, seed: int, device: Optional[str]) -> None:
    from fermetric.api import demo_pretrained

    res = demo_pretrained(model, images, out, synth_per_class=per_class, methods=[m.strip() for m in methods if m.strip()],
                          lime_samples=lime_samples, seed=seed, device=device)
    click.echo(f"model: {res['model']} ({res['kind']}, {res['architecture']}); explained with {res['scorer']}")
    for group, g in res["groups"].items():
        for f in g["faces"]:
            known = f" (known: {f['label']})" if f["label"] else ""
            click.echo(f"  {group}: {f['name']}: {f['prediction']} {f['probability'] * 100:.1f} %{known}")
        for why in g["skipped"]:
            click.echo(f"  {group}: skipped {why}", err=True)
    for err in res["predict_errors"]:
        click.echo(f"skipped {err['path']}: {err['error']}", err=True)
    click.echo(f"demo finished in {res['seconds']:.0f} s")
    for p in res["paths"]:
        click.echo(f"  {p}")
    click.echo(f"report: {Path(res['paths'][-1]).resolve()}")


def _parse(command: click.Command, args: list[str]) -> dict:
    """Parse `args` with `command`'s own parser (defaults included), for ctx.invoke."""
    ctx = command.make_context(command.name, args, resilient_parsing=False)
    return dict(ctx.params)
