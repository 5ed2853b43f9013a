"""Starting a training from a command's options: the config (a new run from the family's
defaults, or --resume under the rules of training.resume), the run lock, the data and the
Trainer. `fermetric train-classifier / train-siamese / train-triplet` are one call of `train`."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from fermetric.config import RunConfig, apply_overrides, config_to_dict, load_run_config, resolve_config
from fermetric.errors import ConfigError
from fermetric.training.families import FAMILY_DEFAULTS, objective_for
from fermetric.training.trainer import TrainResult
import fermetric.run_layout as layout

log = logging.getLogger("fermetric")


def train(
    family: str,
    *,
    model: Optional[str] = None,
    data: Optional[str] = None,
    ferplus: Optional[str] = None,
    config_path: Optional[str] = None,
    overrides: Sequence[str] = (),
    out: Optional[str] = None,
    device: Optional[str] = None,
    epochs: Optional[int] = None,
    seed: Optional[int] = None,
    resume: bool = False,
    weights: Optional[str] = None,
    quiet: bool = False,
    threads: Optional[int] = None,
    precision: Optional[str] = None,
    compile_: Optional[str] = None,
    command: Optional[Sequence[str]] = None,
    init_from: Optional[str] = None,
) -> TrainResult:
    """Train a run of `family` ("classifier", "siamese", "triplet") and return its TrainResult.

    Options as the train-* commands take them; `overrides` are SECTION.KEY=VALUE strings. The
    run directory is locked from before its config is read (on --resume) or anything is written
    until training ends, so a second training into it is refused at once.

    Raises:
        ConfigError for options that contradict each other or a bad --resume target, and the
        errors of config resolution, data loading and training.
    """
    from fermetric.training.distributed import dist_info_from_env
    from fermetric.utils.runlock import run_lock

    if family not in FAMILY_DEFAULTS:
        raise ConfigError(f"unknown training family {family!r}; valid: {', '.join(FAMILY_DEFAULTS)}")
    extra = list(overrides)
    if model is not None:
        extra.append(f"model.name={model}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if init_from is not None:  # a run to start from (fermetric.training.warmstart)
        extra.append(f"model.init_from={init_from}")
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
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        run_cfg_path = layout.config_path(out)
        if not run_cfg_path.is_file():
            raise ConfigError(f"--resume: {out} is not a run directory (no config.yaml); leave out --resume to start a run there")
        if dist_info_from_env().is_main:
            lock.enter_context(run_lock(out))
        from fermetric.training.resume import resume_config

        # a resumed run keeps its own config; what may change is listed in fermetric.training.resume
        run_cfg = load_run_config(run_cfg_path)
        given = resolve_config(config_path, tuple(extra), data=data, ferplus=ferplus, seed=seed, device=device,
                               base=config_to_dict(run_cfg))
        if weights is not None:
            given.model.weights = str(weights)
        cfg, changes = resume_config(run_cfg, given, out, family)
    else:
        cfg = resolve_config(config_path, tuple(extra), data=data, ferplus=ferplus, seed=seed, device=device,
                             base=apply_overrides({}, FAMILY_DEFAULTS[family]))
        if weights is not None:
            cfg.model.weights = str(weights)
    with lock:
        return fit_config(family, cfg, out, resume=resume, quiet=quiet, changes=changes,
                          command=command if command is not None else ["fermetric", *sys.argv[1:]])


def fit_config(family: str, cfg: RunConfig, out: Optional[str], *, resume: bool = False, quiet: bool = False,
               changes: Optional[dict] = None, command: Optional[Sequence[str]] = None) -> TrainResult:
    """Train a resolved config into `out` (default runs/<family>-<model>-<time>), across processes
    when launched by torchrun; the run is locked from before the data is read."""
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
    with contextlib.ExitStack() as lock:
        if dist.is_main and not resume:  # taken before the data is read, so a clash is refused at once
            lock.enter_context(run_lock(out))
        t0 = time.time()
        splits = load_data(None, cfg.data, seed=cfg.seed)
        log.info("data: %s (%.1f s)", splits.name, time.time() - t0)
        try:
            return Trainer(cfg, objective_for(family, cfg), splits, out, resume=resume, quiet=quiet or not dist.is_main,
                           rank=dist.rank, world_size=dist.world_size, changes=changes or {},
                           command=list(command) if command is not None else None).fit()
        finally:
            shutdown()
