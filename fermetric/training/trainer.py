"""The training loop shared by classifiers and embedding models.

A run directory holds everything needed to rebuild what it reports:

    config.yaml           the resolved config
    history.csv           one row per epoch (lr, losses, accuracies, seconds)
    metrics.json          best-model metrics on val (and test when the data has it)
    checkpoints/last.pt   after every epoch (resume point)
    checkpoints/best.pt   best epoch by the objective's main metric
    checkpoints/interrupted.pt   the weights at a Ctrl-C (removed once a resumed sitting completes an epoch)
    figures/              training curves and confusion matrices
    train.log             the log

Resuming replays nothing: model, optimiser, schedule, RNG state and history come from last.pt,
and epoch e's batches depend only on (seed, e), so a resumed run ends where an uninterrupted
one would.

Nothing wrong is reported as right: every weight and buffer (BatchNorm statistics included) is
checked to be finite before a checkpoint is written, so best.pt and last.pt only ever hold finite
weights, and a diverged run stops with an error naming the last good checkpoint. While a process
writes the run directory it holds its lock (fermetric.utils.runlock). Each sitting (the first run
and every --resume) is recorded in the checkpoints and metrics.json.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from fermetric.version import __version__
from fermetric.config import RunConfig, check_config, config_to_dict, save_config
from fermetric.data.dataset import DataSplits
from fermetric.errors import CheckpointError, ConfigError, DiskFullError, FermetricError
from fermetric.training.distributed import average_buffers, barrier
from fermetric.runs.history import write_history
from fermetric.runs.checkpoint import (
    check_compatible, load_checkpoint, load_state_dict_checked, non_finite_tensors, save_checkpoint,
)
from fermetric.training.objective import Objective
from fermetric.training.optim import build_optimizer
from fermetric.training.schedule import LRSchedule
from fermetric.utils import runtime
from fermetric.utils.device import resolve_device
from fermetric.utils.io import write_json
from fermetric.utils.runlock import run_lock
from fermetric.utils.seeding import make_generator, seed_everything
import fermetric.run_layout as layout

log = logging.getLogger("fermetric.train")


class TrainingError(FermetricError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    stopped_early: bool
    interrupted: bool = False
    final_state: Optional[dict[str, torch.Tensor]] = None  # weights after the last epoch (every rank)


class Stop(NamedTuple):
    """Why training stops after an epoch: `reason` goes into the sitting's end ("stopped: <reason>"),
    `message` into the log."""

    reason: str
    message: str


@dataclass
class _Fit:
    """What one sitting of `Trainer.fit` works on, handed from step to step."""

    model: nn.Module  # DistributedDataParallel-wrapped in a multi-process run (see `raw`)
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: Optional[torch.amp.GradScaler]
    train_loader: Any
    steps_per_epoch: int
    precision: str
    channels_last: bool
    best: dict[str, Any]  # {"metric", "value", "epoch"}
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    stepper: Optional[runtime.StepCompiler] = None  # the step's model, compiled or not
    t_start: float = 0.0  # when this sitting's training began
    bars: bool = False  # progress bars on (a terminal, not quiet, rank 0)
    bar: Any = None  # the current epoch's progress bar

    @property
    def raw(self) -> nn.Module:
        """The model without its DDP wrapper (what checkpoints and validation use)."""
        return self.model.module if hasattr(self.model, "module") else self.model


class RunLogHandler(logging.FileHandler):
    """train.log. A write that fails (a full disk) must not print logging's own traceback into the
    user's terminal, nor stop the training that checkpoints report on: the log says it once, in
    one line on stderr, and writes nothing more."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            exc = sys.exc_info()[1]
            sys.stderr.write(f"warning: {self.baseFilename} can no longer be written ({exc}); "
                             "training goes on without its log\n")


class Trainer:
    """Train `objective` on `data` into `run_dir`.

    Args:
        cfg: the resolved run config (written to run_dir/config.yaml).
        objective: the family's objective (classifier, embedding).
        data: the loaded splits (train and val are required).
        run_dir: the run directory; with `resume`, must hold checkpoints/last.pt.
        resume: continue from run_dir/checkpoints/last.pt.
        quiet: no progress bars (there are none either when stderr is not a terminal: a log then
            gets one line per epoch, not carriage-return updates).
        changes: on resume, the config keys changed for this sitting ({key: [old, new]}), recorded
            in its sitting.
        command: the command line of this sitting, recorded in its sitting.
    """

    def __init__(
        self,
        cfg: RunConfig,
        objective: Objective,
        data: DataSplits,
        run_dir: str | Path,
        resume: bool = False,
        quiet: bool = False,
        rank: int = 0,
        world_size: int = 1,
        changes: Optional[dict[str, Any]] = None,
        command: Optional[list[str]] = None,
    ):
        self.cfg, self.objective, self.data = cfg, objective, data
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.quiet = quiet
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.changes = dict(changes or {})
        self.command = list(command) if command is not None else None
        self.sittings: list[dict[str, Any]] = []
        self._saved_epoch = 0  # the epoch checkpoints/last.pt holds (0: none written)
        for split in ("train", "val"):
            data[split]  # raises a DataError naming the missing split
        self.device = resolve_device(cfg.device)
        if world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())

    # ------------------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return layout.checkpoints_dir(self.run_dir)

    def _check_run_dir(self) -> None:
        """Refuse to overwrite a run, or to resume one that is not there (before anything is written)."""
        if self.resume:
            if not layout.checkpoint_path(self.run_dir, layout.LAST).is_file():
                raise CheckpointError(f"cannot resume: {layout.checkpoint_path(self.run_dir, layout.LAST)} does not exist")
        elif layout.checkpoint_path(self.run_dir, layout.LAST).exists():
            raise FermetricError(
                f"run directory {self.run_dir} already holds a run; pass --resume to continue it, or choose another --out"
            )

    def _create_run_dir(self) -> None:
        """Written only once the model, optimiser and data are known to be good, so a bad input
        leaves no half-made run directory behind."""
        if self.is_main:
            (self.run_dir / "figures").mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, layout.config_path(self.run_dir))
            self._log_handler = RunLogHandler(layout.path_of(self.run_dir, layout.TRAIN_LOG))
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logging.getLogger("fermetric").addHandler(self._log_handler)

    def _state(self, fit: _Fit, epoch: int) -> dict[str, Any]:
        """What a checkpoint holds after `epoch` epochs (see fermetric.runs.checkpoint)."""
        return {
            "kind": self.objective.kind,
            "model": self.objective.model_meta(fit.raw, self.data.num_classes),
            "class_names": list(self.data.class_names),
            "state_dict": fit.raw.state_dict(),
            "extra_state_dicts": [m.state_dict() for m in self.objective.extra_modules()],
            "optimizer": fit.optimizer.state_dict(),
            "schedule": fit.schedule.state_dict(),
            "scaler": fit.scaler.state_dict() if fit.scaler is not None else {},
            "epoch": epoch,
            "best": fit.best,
            "history": fit.history,
            "notes": fit.notes,
            "sittings": self.sittings,
            "config": config_to_dict(self.cfg),
            "data": {"name": self.data.name, "num_classes": self.data.num_classes},
            "rng": {"torch": torch.get_rng_state()},
            "runtime": dict(getattr(self, "runtime", {})),  # what this machine resolved (informative)
            "fermetric_version": __version__,
        }

    def _sitting_start(self, start_epoch: int) -> dict[str, Any]:
        sitting = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None, "end": "running",
            "epoch_from": start_epoch, "epoch_to": start_epoch, "seconds": 0.0,
            "host": socket.gethostname(), "cpu": runtime.cpu_model(), "pid": os.getpid(), "fermetric_version": __version__,
            "command": self.command, "changes": self.changes,
        }
        self.sittings.append(sitting)
        return sitting

    def _sitting_update(self, t_start: float, epochs_done: int, end: str = "running") -> None:
        self.sittings[-1].update(ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), epoch_to=epochs_done,
                                 seconds=round(time.time() - t_start, 2), end=end)

    def _last_good(self) -> str:
        """Where to go on from after a failure: only a checkpoint that exists (and, being written
        only with finite weights, is finite)."""
        last = layout.checkpoint_path(self.run_dir, layout.LAST)
        if self._saved_epoch > 0 and last.is_file():
            return f"The last good checkpoint is {last} (epoch {self._saved_epoch})"
        return "No epoch ended with finite weights, so no checkpoint was written"

    def _stop_diverged(self, what: str, epoch: int | str) -> TrainingError:
        advice = (f"lower optim.lr (now {self.cfg.optim.lr:g}) or set train.grad_clip, then "
                  + ("--resume" if self._saved_epoch > 0 else "start the run again"))
        return TrainingError(f"training diverged: {what} at epoch {epoch}; training stopped. {self._last_good()}; {advice}.")

    # ------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train (holding the run directory's lock throughout; rank 0 alone writes it).

        The steps, in order: `_set_up` (model, data, optimiser, runtime), `_resume_from` (on
        --resume), `_open_run` (run directory, log, DDP wrapping); then per epoch `_train_epoch`
        (`_train_step` per batch: the AMP / compiled step and the NaN guard), `_validate`,
        `_check_finite`, `_record_epoch`, `_stop_condition`, `_checkpoint`; `_save_interrupted`
        at a Ctrl-C; `_finish` (best checkpoint evaluated, metrics and figures).
        """
        before = set(os.listdir(self.run_dir)) if self.run_dir.is_dir() else None
        try:
            with run_lock(self.run_dir) if self.is_main else contextlib.nullcontext():
                return self._fit()
        except (DiskFullError, OSError):
            # a new run that could not write its first checkpoint (a full disk) leaves nothing behind
            if self.is_main and not self.resume and self._saved_epoch == 0:
                self._remove_new_run(before)
            raise

    def _remove_new_run(self, before: Optional[set[str]]) -> None:
        """Remove what this sitting created in a run directory that held no run (`before`: the
        names that were there, None when the folder did not exist)."""
        handler = getattr(self, "_log_handler", None)
        if handler is not None:  # closed, so that train.log can go
            logging.getLogger("fermetric").removeHandler(handler)
            handler.close()
        if not self.run_dir.is_dir():
            return
        for name in set(os.listdir(self.run_dir)) - (before or set()):
            target = self.run_dir / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        if before is None:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        fit = self._set_up()
        if self.resume:  # checked before anything is written: a refused resume leaves the run as it was
            self._resume_from(fit)
        self._open_run(fit)
        stop: Optional[Stop] = None
        try:
            for epoch in range(fit.start_epoch, cfg.train.epochs):
                fit.epoch = epoch
                t0 = time.time()
                row = self._train_epoch(fit, epoch)
                val = self._validate(fit, epoch, row)
                row["seconds"] = time.time() - t0
                self._check_finite(fit, val, epoch)
                improved = self._record_epoch(fit, epoch, row)
                # decided before the checkpoint is written, so that its record of this sitting says how it ended
                stop = self._stop_condition(fit, epoch)
                self._checkpoint(fit, epoch, improved, stop)
                log.info(
                    "epoch %d/%d  loss %.4f  %s %.4f%s  (%.1f s)",
                    epoch + 1, cfg.train.epochs, row["train_loss"], self.objective.main_metric,
                    float(row[self.objective.main_metric]), "  *best*" if improved else "", row["seconds"],
                )
                if stop is not None:
                    log.info("%s", stop.message)
                    break
        except KeyboardInterrupt:
            self._save_interrupted(fit)
            raise
        finally:
            if fit.bar is not None:
                fit.bar.close()  # before any error message, so that it is not glued onto a bar's last update
            if self.is_main and hasattr(self, "_log_handler"):
                logging.getLogger("fermetric").removeHandler(self._log_handler)
                self._log_handler.close()
        return self._finish(fit, stopped_early=stop is not None)

    # -- set-up and resume -------------------------------------------------------------------------
    def _set_up(self) -> _Fit:
        """Check the run directory and config, then build the model, objective, loader, optimiser,
        schedule and runtime choices; nothing is written yet, so a bad input leaves no trace."""
        cfg, obj = self.cfg, self.objective
        self._check_run_dir()
        check_config(cfg)  # the declared ranges, also for a config built in Python (the CLI checked it already)
        if cfg.train.threads > 0:
            torch.set_num_threads(runtime.usable_threads(cfg.train.threads))
        seed_everything(cfg.seed)
        # resolved here, on this machine, every time (a resumed run may move to another machine)
        precision = runtime.resolve_precision(cfg.train.precision, self.device, amp=cfg.train.amp)
        channels_last = cfg.train.channels_last and runtime.use_channels_last(self.device, precision)
        model = obj.build_model(self.data.num_classes)
        self._warm_note = ""
        if cfg.model.init_from and not self.resume:  # a resumed run's weights come from its last.pt
            import fermetric.training.warmstart as warmstart

            self._warm_note = warmstart.describe(warmstart.init_from_run(model, cfg.model.init_from))
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        obj.setup(model, self.data, self.device)
        for m in obj.extra_modules():
            m.to(self.device)
        if self.world_size > 1:
            obj.distribute(self.world_size)
        train_loader = obj.train_loader(self.data["train"], cfg.seed, self.rank, self.world_size)
        steps_per_epoch = len(train_loader)
        if cfg.train.max_steps_per_epoch > 0:
            steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
        if steps_per_epoch == 0:
            raise FermetricError(
                f"the train split has {len(self.data['train'])} images, fewer than one batch of "
                f"{cfg.train.batch_size}; lower train.batch_size"
            )
        optimizer = build_optimizer(cfg.optim, [model, *obj.extra_modules()])
        schedule = LRSchedule(cfg.schedule, cfg.optim.lr, steps_per_epoch, cfg.train.epochs)
        scaler = torch.amp.GradScaler("cuda") if (self.device.type == "cuda" and precision == "fp16") else None
        # a bad value fails here, before the run directory is made; None: auto, decided after timed steps
        self.runtime = runtime.describe(precision, runtime.resolve_compile(cfg.train.compile, self.device), channels_last)
        return _Fit(model=model, optimizer=optimizer, schedule=schedule, scaler=scaler, train_loader=train_loader,
                    steps_per_epoch=steps_per_epoch, precision=precision, channels_last=channels_last,
                    best={"metric": obj.main_metric, "value": -math.inf, "epoch": -1})

    def _resume_from(self, fit: _Fit) -> None:
        """Load model, optimiser, schedule, scaler, RNG, history and sittings from last.pt, after
        checking that it fits this model, holds finite weights and leaves epochs to train."""
        cfg, obj = self.cfg, self.objective
        last = layout.checkpoint_path(self.run_dir, layout.LAST)
        ckpt = load_checkpoint(last)
        meta = obj.model_meta(fit.model, self.data.num_classes)
        check_compatible(ckpt, last, kind=obj.kind, **meta)
        bad = non_finite_tensors(ckpt["state_dict"])
        if bad:
            raise CheckpointError(f"cannot resume: {last} holds non-finite weights ({bad[0]}); start the run again")
        done = int(ckpt["epoch"])
        if cfg.train.epochs <= done:
            raise ConfigError(
                f"run {self.run_dir} has already trained {done} epoch{'s' if done != 1 else ''}; to continue it pass --epochs "
                f"(train.epochs) larger than {done} (got {cfg.train.epochs})"
            )
        load_state_dict_checked(fit.model, ckpt["state_dict"], last)
        for m, sd in zip(obj.extra_modules(), ckpt.get("extra_state_dicts", [])):
            m.load_state_dict(sd)
        fit.optimizer.load_state_dict(ckpt["optimizer"])
        fit.schedule.load_state_dict(ckpt["schedule"])
        if fit.scaler is not None and ckpt.get("scaler"):
            fit.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        fit.start_epoch, fit.best, fit.history, fit.notes = ckpt["epoch"], ckpt["best"], ckpt["history"], ckpt.get("notes", {})
        fit.epoch = fit.start_epoch
        self.sittings = [dict(x) for x in ckpt.get("sittings", [])]
        for sitting in self.sittings:
            if sitting.get("end") == "running":  # its process died after writing last.pt
                sitting["end"] = "did not finish (crash, error or Ctrl-C); times up to its last checkpoint"
        self._saved_epoch = fit.start_epoch

    def _open_run(self, fit: _Fit) -> None:
        """Write the run directory, start the log and this sitting's record; wrap the model for
        DDP and prepare the (compiled or eager) step."""
        cfg, obj = self.cfg, self.objective
        self._create_run_dir()
        if self.is_main:
            runtime.note_in_config(layout.config_path(self.run_dir), self.runtime)
        if self.resume:
            log.info("resuming %s from epoch %d%s", self.run_dir, fit.start_epoch,
                     "".join(f"; {k}: {a!r} -> {b!r}" for k, (a, b) in self.changes.items()))
        if self.world_size > 1:
            # wrapped after a resume's weights are in, so every rank starts from rank 0's copy
            fit.model = nn.parallel.DistributedDataParallel(
                fit.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        log.info(
            "training %s (%s) on %s: %d train / %d val images, %d epochs, device %s, %d threads",
            obj.kind, cfg.model.name, self.data.name, len(self.data["train"]), len(self.data["val"]),
            cfg.train.epochs, self.device, torch.get_num_threads(),
        )
        if getattr(self, "_warm_note", ""):
            log.info(self._warm_note)
        log.info("precision %s (asked: %s), torch.compile %s (asked: %s), channels_last %s",
                 fit.precision, cfg.train.precision, self.runtime["compile"], cfg.train.compile, fit.channels_last)
        # the step's model, compiled or not (parameters shared with `model`, which checkpoints and validation use)
        fit.stepper = runtime.StepCompiler(fit.model, cfg.train.compile, self.device,
                                           fit.steps_per_epoch * (cfg.train.epochs - fit.start_epoch),
                                           cfg.train.time_budget_minutes * 60)
        fit.t_start = time.time()
        self._sitting_start(fit.start_epoch)
        # a bar's carriage-return updates only make sense on a terminal; a log gets the epoch lines
        fit.bars = not self.quiet and self.is_main and sys.stderr.isatty()

    # -- one epoch ---------------------------------------------------------------------------------
    def _train_epoch(self, fit: _Fit, epoch: int) -> dict[str, Any]:
        """Train one epoch; returns its history row so far (lr, train loss / accuracy, speed)."""
        cfg = self.cfg
        t0 = time.time()
        fit.train_loader.set_epoch(epoch)
        g = make_generator(cfg.seed * 7_919 + epoch)  # objective randomness (mixup, ...)
        fit.model.train()
        loss_sum, correct, seen, n_correct = 0.0, 0, 0, None
        fit.bar = tqdm(
            total=fit.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
            disable=not fit.bars, leave=False, dynamic_ncols=True,
        )
        for step, (x, y, _) in enumerate(fit.train_loader):
            if step >= fit.steps_per_epoch:
                break
            loss, n_correct = self._train_step(fit, x, y, g, epoch, step)
            n = int(y.shape[0])
            loss_sum += float(loss.detach()) / self.objective.loss_scale * n
            seen += n
            if n_correct is not None:
                correct += int(n_correct)
            fit.bar.update(1)
            fit.bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}" if n_correct is not None else "-")
        fit.bar.close()
        loop_seconds = time.time() - t0
        if self.world_size > 1:
            average_buffers(fit.model.module)
        return {
            "epoch": epoch + 1,
            "lr": fit.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": (correct / seen) if seen and n_correct is not None else "",
            "train_img_per_s": seen / max(loop_seconds, 1e-9),  # the loop alone, without validation
        }

    def _train_step(self, fit: _Fit, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                    epoch: int, step: int) -> tuple[torch.Tensor, Optional[int]]:
        """One optimiser step on a batch: the forward under autocast through the (compiled or
        eager) step model, the NaN guard, then backward (scaled under fp16), clipping and the
        update. Returns (loss, correct predictions or None)."""
        cfg, optimizer, scaler = self.cfg, fit.optimizer, fit.scaler
        lr = fit.schedule.lr_at(epoch * fit.steps_per_epoch + step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        x = runtime.to_memory_format(x, fit.channels_last)
        # parameters, gradients and optimiser state stay fp32; objectives compute losses in fp32
        t_step = time.perf_counter()
        with runtime.autocast(self.device, fit.precision):
            loss, n_correct = self.objective.training_step(fit.stepper.current, x, y, g)
        if not torch.isfinite(loss):
            raise self._stop_diverged(f"the loss became {loss.item()}", f"{epoch + 1}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.train.grad_clip > 0:
                nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.train.grad_clip)
            optimizer.step()
        fit.stepper.step_done(time.perf_counter() - t_step)
        return loss, n_correct

    # -- validate, record, stop, checkpoint ----------------------------------------------------------
    def _validate(self, fit: _Fit, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        """Validate the epoch's weights and add the results and the objective's epoch notes to
        `row`; returns the validation metrics."""
        obj = self.objective
        val = obj.validate(fit.raw, self.data, self.device)
        row.update(val)
        epoch_notes = obj.epoch_notes(fit.model, self.data, self.device)
        if epoch_notes:
            fit.notes[f"epoch_{epoch + 1}"] = epoch_notes
            row.update({k: v for k, v in epoch_notes.items() if isinstance(v, (int, float, str))})
        return val

    def _check_finite(self, fit: _Fit, val: dict[str, Any], epoch: int) -> None:
        """Divergence: stop (TrainingError) before a checkpoint would hold non-finite weights or
        buffers, or record a non-finite validation metric."""
        bad = non_finite_tensors(fit.raw.state_dict())
        for i, m in enumerate(self.objective.extra_modules()):
            bad += [f"objective module {i}: {k}" for k in non_finite_tensors(m.state_dict())]
        if bad:
            raise self._stop_diverged(f"{len(bad)} weight or buffer tensors are not finite (first: {bad[0]})", epoch + 1)
        bad_val = [k for k, v in val.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad_val:  # finite weights whose outputs overflow: diverged all the same
            raise self._stop_diverged(f"validation {bad_val[0]} is {val[bad_val[0]]}", epoch + 1)

    def _record_epoch(self, fit: _Fit, epoch: int, row: dict[str, Any]) -> bool:
        """Append the row to the history, step the schedule on the main metric, keep the best
        epoch and the compile decision; returns whether this epoch is the best so far."""
        value = float(row[self.objective.main_metric])
        fit.history.append(row)
        fit.schedule.end_of_epoch(value)
        improved = value > fit.best["value"] + 1e-9
        if improved:
            fit.best = {"metric": self.objective.main_metric, "value": value, "epoch": epoch + 1}
        if fit.stepper.decision is not None and self.runtime["compile"] != fit.stepper.decision:
            self.runtime["compile"] = fit.stepper.decision  # compile=auto decided this epoch
            if self.is_main:
                runtime.note_in_config(layout.config_path(self.run_dir), self.runtime)
        return improved

    def _stop_condition(self, fit: _Fit, epoch: int) -> Optional[Stop]:
        """Why training stops after this epoch, or None to go on; the first condition that holds
        wins. A condition that reads this epoch's metrics finds them in fit.history[-1].
        (Divergence and Ctrl-C stop where they happen: `_stop_diverged`, `_save_interrupted`.)"""
        train = self.cfg.train
        patience, budget = train.early_stopping_patience, train.time_budget_minutes
        if patience > 0 and epoch + 1 - fit.best["epoch"] >= patience:
            return Stop("early stopping", f"early stopping: no improvement of {self.objective.main_metric} for {patience} epochs")
        if budget > 0 and (time.time() - fit.t_start) / 60.0 >= budget:
            return Stop("time budget", f"time budget of {budget:.1f} min reached after epoch {epoch + 1}")
        reason = self.objective.stop_reason()  # e.g. embedding collapse (metric.stop_on_collapse)
        if reason:
            return Stop(reason, f"training stopped after epoch {epoch + 1}: {reason}")
        return None

    def _checkpoint(self, fit: _Fit, epoch: int, improved: bool, stop: Optional[Stop]) -> None:
        """Record how this sitting stands, then (rank 0) write best.pt when improved, last.pt and
        history.csv; every rank waits for the writes."""
        if epoch + 1 == self.cfg.train.epochs:
            end = "finished"
        else:
            end = f"stopped: {stop.reason}" if stop is not None else "running"
        self._sitting_update(fit.t_start, epoch + 1, end)
        if self.is_main:
            state = self._state(fit, epoch + 1)
            if improved:
                save_checkpoint(state, layout.checkpoint_path(self.run_dir, layout.BEST))
            save_checkpoint(state, layout.checkpoint_path(self.run_dir, layout.LAST))
            write_history(fit.history, layout.path_of(self.run_dir, layout.HISTORY))
            # a Ctrl-C's partial epoch is superseded once a later sitting completes an epoch
            (layout.checkpoint_path(self.run_dir, layout.INTERRUPTED)).unlink(missing_ok=True)
        self._saved_epoch = epoch + 1
        barrier()

    def _save_interrupted(self, fit: _Fit) -> None:
        """At a Ctrl-C: the weights of the epoch in progress into interrupted.pt, and a message
        that points at a real file to go on from."""
        if fit.bar is not None:
            fit.bar.close()
        if not self.is_main:
            return
        self._sitting_update(fit.t_start, self._saved_epoch, end="interrupted")
        save_checkpoint(self._state(fit, fit.epoch), layout.checkpoint_path(self.run_dir, layout.INTERRUPTED))
        if self._saved_epoch > 0 and layout.checkpoint_path(self.run_dir, layout.LAST).is_file():
            then = f"--resume continues from the last completed epoch ({layout.checkpoint_path(self.run_dir, layout.LAST)}, epoch {self._saved_epoch})"
        else:  # pointing at a last.pt that does not exist would send the user nowhere
            then = "no epoch finished, so there is nothing to resume: start the run again with the same command"
        log.warning("interrupted during epoch %d: model saved to %s; %s",
                    fit.epoch + 1, layout.checkpoint_path(self.run_dir, layout.INTERRUPTED), then)

    # -- the end -------------------------------------------------------------------------------------
    def _finish(self, fit: _Fit, stopped_early: bool) -> TrainResult:
        """Close this sitting's record and (rank 0) evaluate the best checkpoint into metrics.json
        and figures/."""
        final_state = {k: v.detach().cpu().clone() for k, v in fit.raw.state_dict().items()}
        metrics: dict[str, Any] = {}
        if self.is_main:
            if self.sittings[-1]["end"] == "running":  # no epoch left to train in this sitting
                self._sitting_update(fit.t_start, self._saved_epoch, end="finished")
            metrics = self.finalize(fit.model, fit.history, fit.best, fit.notes,
                                    sum(s["seconds"] for s in self.sittings), stopped_early)
        return TrainResult(self.run_dir, metrics, fit.history, stopped_early, False, final_state)

    # ------------------------------------------------------------------------------------------
    def finalize(self, model, history, best, notes, seconds, stopped_early) -> dict[str, Any]:
        """Reload the best checkpoint, evaluate it on val (and test), write metrics and figures."""
        from fermetric.plotting import save_figure
        from fermetric.plotting.confusion import plot_confusion
        from fermetric.plotting.curves import plot_history

        raw = model.module if hasattr(model, "module") else model
        best_path = layout.checkpoint_path(self.run_dir, layout.BEST)
        if best_path.is_file():
            raw.load_state_dict(load_checkpoint(best_path, map_location=self.device)["state_dict"])
        metrics: dict[str, Any] = {
            "kind": self.objective.kind,
            "model": self.cfg.model.name,
            "data": self.data.name,
            "best_epoch": best["epoch"],
            "best_metric": best["metric"],
            "epochs_run": len(history),
            "stopped_early": stopped_early,
            "train_seconds": round(seconds, 2),  # over all sittings (a resumed run's too)
            "sittings": self.sittings,
            "seed": self.cfg.seed,
            "runtime": dict(getattr(self, "runtime", {})),  # precision / compile / channels_last this machine ran
        }
        if notes:
            metrics["notes"] = notes
        for split in ("val", "test"):
            if split in self.data:
                m = self.objective.final_metrics(raw, self.data, self.device, split)
                metrics[split] = m
                fig = plot_confusion(m["confusion"], m["class_names"], normalize=True,
                                     title=f"{self.cfg.model.name} on {split} (acc {m['accuracy'] * 100:.1f} %)")
                save_figure(fig, self.run_dir / "figures" / f"confusion_{split}.png")
        write_json(layout.path_of(self.run_dir, layout.METRICS), metrics)
        fig = plot_history(history, title=f"{self.cfg.model.name} on {self.data.name}")
        save_figure(fig, self.run_dir / "figures" / "curves.png")
        return metrics
