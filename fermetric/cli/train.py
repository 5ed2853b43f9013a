"""`fermetric train-classifier`, `train-siamese`, `train-triplet`: one implementation, three objectives."""
from __future__ import annotations

import click

from fermetric.cli.options import (
    RUN, OutPath, compile_option, config_options, data_option, device_option, ferplus_option, precision_option, seed_option,
)

def print_result(result) -> None:
    """Where the run went and how it scored."""
    m = result.metrics
    lines = [f"run directory: {result.run_dir}"]
    for split in ("val", "test"):
        if split in m:
            lines.append(f"  {split}: accuracy {m[split]['accuracy'] * 100:.2f} %, macro-F1 {m[split]['macro_f1'] * 100:.2f} %")
    lines += [
        f"  best epoch {m.get('best_epoch')} of {m.get('epochs_run')}, {m.get('train_seconds', 0):.0f} s",
        f"  {result.run_dir / 'metrics.json'}",
        f"  {result.run_dir / 'history.csv'}",
        f"  {result.run_dir / 'checkpoints' / 'best.pt'}",
        f"  {result.run_dir / 'figures'}",
    ]
    click.echo("\n".join(lines))


def _train_options(f):
    f = click.option("--quiet-bars", is_flag=True, hidden=True)(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Start from this state-dict file (3-channel first convs are folded to 1).")(f)
    f = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")(f)
    f = click.option("--init-from", "init_from", type=RUN, default=None,
                     help="Start from the trained backbone of this run or pretrained model (classifier or embedding; "
                          "same --model, width and stem); sets model.init_from.")(f)
    f = compile_option(f)
    f = precision_option(f)
    f = seed_option(f)
    f = click.option("--epochs", type=click.IntRange(min=1), default=None, help="Number of epochs (overrides train.epochs).")(f)
    f = device_option(f)
    f = click.option("--out", type=OutPath(file_okay=False), default=None,
                     help="Run directory (default: runs/<family>-<model>-<time>).")(f)
    f = config_options(f)
    f = ferplus_option(f)
    f = data_option(f)
    f = click.option("--model", default=None, help="Backbone name (see `fermetric models`).")(f)
    return f


def _make_command(family: str, name: str, help_text: str):
    @click.command(name=name, help=help_text)
    @_train_options
    @click.pass_context
    def command(ctx, model, data, ferplus, config_path, overrides, out, device, epochs, seed, resume, init_from, weights, quiet_bars,
                precision, compile_):
        from fermetric.api import train
        from fermetric.api.train import is_main_process

        result = train(
            family, model=model, data=data, ferplus=ferplus, config_path=config_path, overrides=overrides,
            out=out, device=device, epochs=epochs, seed=seed, resume=resume, weights=weights, init_from=init_from,
            quiet=bool(ctx.obj.get("quiet")) or quiet_bars, threads=ctx.obj.get("threads"),
            precision=precision, compile_=compile_,
        )
        if is_main_process():
            print_result(result)

    return command


def register(main: click.Group) -> None:
    main.add_command(_make_command(
        "classifier", "train-classifier",
        "Train a softmax classifier (baseline, resnet18, resnet50, vgg16, senet50) on --data (default SynthFER).",
    ))
    main.add_command(_make_command(
        "siamese", "train-siamese",
        "Train a Siamese embedding model with contrastive loss (pytorch-metric-learning); validated by kNN accuracy.",
    ))
    main.add_command(_make_command(
        "triplet", "train-triplet",
        "Train a triplet-loss embedding model with a miner and m-per-class batches; validated by kNN accuracy.",
    ))
