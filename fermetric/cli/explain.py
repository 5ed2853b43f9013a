"""`fermetric explain`, `fermetric filters`, `fermetric explain-eval`: the explanation toolkit on
runs of either family (classifiers through their softmax, embedding models through prototype
or kNN scorers)."""
from __future__ import annotations

from pathlib import Path

import click

from fermetric.cli.options import OutPath, RUN, SEED, device_option, precision_option, run_data_option


# "neighbours": the kNN decision by example (nearest training faces), not a map
METHOD_CHOICES = ["saliency", "smoothgrad", "occlusion", "gradcam", "lime", "all", "neighbours"]
SCORER_CHOICES = ["auto", "classifier", "prototype", "knn"]


def register(main: click.Group) -> None:
    @main.command("explain")
    @click.argument("run", type=RUN)
    @click.option("--method", type=click.Choice(METHOD_CHOICES), default="saliency", show_default=True)
    @click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
    @click.option("--per-class", type=click.IntRange(min=1), default=2, show_default=True, help="Images explained per class.")
    @click.option("--scorer", type=click.Choice(SCORER_CHOICES), default="auto", show_default=True,
                  help="Embedding runs: prototype (differentiable) or knn (black box: occlusion, lime).")
    @click.option("--target", type=click.Choice(["predicted", "label"]), default="predicted", show_default=True)
    @click.option("--mask-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
                  help="The mask column: this share of the pixels with the largest attributions (LIME: its top regions).")
    @click.option("--lime-samples", type=click.IntRange(min=10), default=1000, show_default=True,
                  help="Perturbed images LIME scores per face.")
    @run_data_option
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/explain.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @device_option
    @precision_option
    @click.pass_context
    def explain_cmd(ctx, run, method, split, per_class, scorer, target, mask_fraction, lime_samples, data, out, seed,
                    device, precision=None):
        """Explain a run's predictions: a row per image of image / map / overlay, per method;
        --method neighbours: the nearest training faces behind each kNN decision, with their
        labels, similarities and vote weights."""
        from fermetric.api import explain_run

        rec = explain_run(run, method, split, per_class, scorer, target, out, seed, device=device, precision=precision,
                          progress=not ctx.obj.get("quiet"), mask_fraction=mask_fraction, data=data,
                          lime_samples=lime_samples)
        for s in rec["skipped"]:
            click.echo(f"skipped {s}", err=True)
        click.echo(f"explained {len(rec['indices'])} {split} images of {Path(rec['run']).name} with "
                   f"{', '.join(rec['methods']) or 'no method'}")
        for p in rec["paths"]:
            click.echo(f"  {p}")

    @main.command("filters")
    @click.argument("run", type=RUN)
    @click.option("--layer", default=None, help="Conv layer name (default: the Grad-CAM layer). A bad name lists the valid ones.")
    @click.option("--channels", default=None, help="Comma-separated channel ids (default: the first --num).")
    @click.option("--num", type=click.IntRange(min=1), default=16, show_default=True)
    @click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Gradient-ascent steps.")
    @click.option("--image-index", type=click.IntRange(min=0), default=0, show_default=True, help="val image whose layer outputs are shown.")
    @run_data_option
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/figures.")
    @device_option
    @precision_option
    def filters_cmd(run, layer, channels, num, steps, image_index, data, out, device, precision=None):
        """Filter visualisation by regularised gradient ascent, and the layer's outputs for one image."""
        from fermetric.api import filters_run

        try:
            chans = [int(c) for c in channels.split(",")] if channels else None
        except ValueError:
            raise click.BadParameter(f"expected comma-separated channel ids such as 0,3,7; got {channels!r}",
                                     param_hint="--channels") from None
        res = filters_run(run, layer, chans, num, steps, image_index, out, device=device, precision=precision, data=data)
        click.echo(f"{res['layer']}: {res['filters']} filters")
        click.echo("\n".join(f"  {p}" for p in res["paths"]))

    @main.command("explain-eval")
    @click.argument("runs", nargs=-1, required=True, type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
    @click.option("--per-class", type=click.IntRange(min=1), default=4, show_default=True, help="Images per class evaluated.")
    @click.option("--methods", default="saliency,smoothgrad,occlusion,gradcam,lime", show_default=True)
    @click.option("--lime-samples", type=click.IntRange(min=10), default=300, show_default=True)
    @click.option("--no-knn", is_flag=True, help="Skip the black-box kNN scorer of embedding runs.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: FIRST_RUN/explain_eval.")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @run_data_option
    @device_option
    @precision_option
    @click.pass_context
    def explain_eval_cmd(ctx, runs, split, per_class, methods, lime_samples, no_knn, out, seed, data, device, precision=None):
        """How faithful is each explanation? One table of methods x models: deletion / insertion AUC,
        evidence-mask mass and pointing game (SynthFER), model-randomisation rank correlation."""
        from fermetric.analysis import table_to_markdown
        from fermetric.api import explain_eval

        result, paths = explain_eval(runs, split, per_class, methods.split(","), lime_samples, knn=not no_knn, out=out,
                                     seed=seed, device=device, precision=precision, progress=not ctx.obj.get("quiet"),
                                     data=data)
        click.echo(table_to_markdown(result["rows"]))
        click.echo("\n".join(f"  {p}" for p in paths))
