"""`fermetric train-classifier`, `train-siamese`, `train-triplet`: one implementation, three objectives."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import (
    OutPath, compile_option, config_options, data_option, device_option, ferplus_option, precision_option, resolve_config,
    seed_option,
)
from fermetric.config import RunConfig, config_to_dict, load_config
from fermetric.training.families import FAMILY_DEFAULTS, objective_for

log = logging.getLogger("fermetric")

def run_training(
    family: str,
    *,
    model: Optional[str],
    data: Optional[str],
    ferplus: Optional[str],
    config_path: Optional[str],
    overrides: tuple[str, ...],
    out: Optional[str],
    device: Optional[str],
    epochs: Optional[int],
    seed: Optional[int],
    resume: bool,
    weights: Optional[str],
    quiet: bool,
    threads: Optional[int] = None,
    precision: Optional[str] = None,
    compile_: Optional[str] = None,
):
    """Resolve the config, load the data, train, print where everything went.

    The run directory is locked from before its config is read (on --resume) or anything is
    written until training ends, so a second training into it is refused at once.
    """
    from fermetric.config import apply_overrides
    from fermetric.training.distributed import dist_info_from_env
    from fermetric.utils.runlock import run_lock

    extra = list(overrides)
    if model is not None:
        extra.append(f"model.name={model}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if threads is not None:  # the global --threads wins over the config's train.threads
        extra.append(f"train.threads={threads}")
    # how the run computes, not what it learns: may change on resume (checkpoints are fp32)
    if precision:
        extra.append(f"train.precision={precision}")
    if compile_:
        extra.append(f"train.compile={compile_}")
    lock = contextlib.ExitStack()
    changes: dict = {}
    if resume:
        if out is None:
            raise click.UsageError("--resume needs --out RUN_DIR (the run to continue)")
        run_cfg_path = Path(out) / "config.yaml"
        if not run_cfg_path.is_file():
            raise click.UsageError(f"--resume: {out} is not a run directory (no config.yaml); leave out --resume to start a run there")
        if dist_info_from_env().is_main:
            lock.enter_context(run_lock(out))
        from fermetric.training.resume import resume_config

        # a resumed run keeps its own config; what may change is listed in fermetric.training.resume
        run_cfg = load_config(run_cfg_path)
        given = resolve_config(config_path, tuple(extra), data=data, ferplus=ferplus, seed=seed, device=device,
                               base=config_to_dict(run_cfg))
        if weights is not None:
            given.model.weights = str(weights)
        cfg, changes = resume_config(run_cfg, given, out)
    else:
        cfg = resolve_config(config_path, tuple(extra), data=data, ferplus=ferplus, seed=seed, device=device,
                             base=apply_overrides({}, FAMILY_DEFAULTS[family]))
        if weights is not None:
            cfg.model.weights = str(weights)
    with lock:
        return _train(family, cfg, out, resume, quiet, changes, lock)


def _train(family: str, cfg: RunConfig, out: Optional[str], resume: bool, quiet: bool, changes: dict,
           lock: contextlib.ExitStack):
    from fermetric.data.sources import load_data
    from fermetric.training.distributed import init_distributed, shutdown
    from fermetric.training.trainer import Trainer
    from fermetric.utils.device import resolve_device
    from fermetric.utils.runlock import run_lock

    dist = init_distributed(resolve_device(cfg.device))
    if out is None:
        out = str(Path("runs") / f"{family}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if dist.enabled:  # every rank must write into rank 0's directory
            import torch.distributed

            box = [out]
            torch.distributed.broadcast_object_list(box, src=0)
            out = box[0]
    if dist.is_main and not resume:  # taken before the data is read, so a clash is refused at once
        lock.enter_context(run_lock(out))
    t0 = time.time()
    splits = load_data(None, cfg.data, seed=cfg.seed)
    log.info("data: %s (%.1f s)", splits.name, time.time() - t0)
    try:
        result = Trainer(cfg, objective_for(family, cfg), splits, out, resume=resume, quiet=quiet or not dist.is_main,
                         rank=dist.rank, world_size=dist.world_size, changes=changes,
                         command=["fermetric", *sys.argv[1:]]).fit()
    finally:
        shutdown()
    if not dist.is_main:
        return result
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
    return result


def _train_options(f):
    f = click.option("--quiet-bars", is_flag=True, hidden=True)(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Start from this state-dict file (3-channel first convs are folded to 1).")(f)
    f = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")(f)
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
    def command(ctx, model, data, ferplus, config_path, overrides, out, device, epochs, seed, resume, weights, quiet_bars,
                precision, compile_):
        run_training(
            family, model=model, data=data, ferplus=ferplus, config_path=config_path, overrides=overrides,
            out=out, device=device, epochs=epochs, seed=seed, resume=resume, weights=weights,
            quiet=bool(ctx.obj.get("quiet")) or quiet_bars, threads=ctx.obj.get("threads"),
            precision=precision, compile_=compile_,
        )

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
