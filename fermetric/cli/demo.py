"""`fermetric demo`: the built-in demo study (fermetric.study.demo: a classifier and a triplet
model on SynthFER, trained, evaluated with TTA, searched by kNN, mapped by UMAP, explained, voted
and reported) run by the one study runner, in a few minutes on a CPU.

With --pretrained it trains nothing: the explanation half on a pretrained model of the zoo
(fermetric.api.demo_pretrained), for users without FER2013 at hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from fermetric.api import DEMO_METHODS
from fermetric.cli.options import OutPath, SEED, data_option, device_option
from fermetric.study.config import DEMO_EPOCHS


def register(main: click.Group) -> None:
    @main.command("demo")
    @click.argument("images", nargs=-1, type=click.Path(), metavar="[IMAGE]...")
    @data_option
    @click.option("--out", type=OutPath(file_okay=False), default=None,
                  help="Output folder [default: fermetric-demo; with --pretrained: fermetric-demo-pretrained].")
    @click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True, help="Epochs for each model.")
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
        from fermetric.study.demo import run_demo

        res = run_demo(data=data, out=out, epochs=epochs, model=model, overrides=overrides, seed=seed, device=device,
                       echo=click.echo)
        click.echo("\n== timings")
        for name, secs in res.steps:
            click.echo(f"  {secs:7.1f} s  {name}")
        click.echo(f"demo finished in {res.steps[-1][1]:.0f} s")
        click.echo(f"report: {Path(res.paths['report.html']).resolve()}")


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
