"""The training loop shared by classifiers and embedding models.

A run directory holds everything needed to rebuild what it reports:

    config.yaml           the resolved config
    history.csv           one row per epoch (lr, losses, accuracies, seconds)
    metrics.json          best-model metrics on val (and test when the data has it)
    checkpoints/last.pt   after every epoch (resume point)
    checkpoints/best.pt   best epoch by the objective's main metric
    checkpoints/interrupted.pt   the weights at a Ctrl-C
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
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from fermetric import __version__
from fermetric.config import RunConfig, check_config, config_to_dict, save_config
from fermetric.data.dataset import DataSplits
from fermetric.errors import CheckpointError, ConfigError, FermetricError
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
from fermetric.utils.io import atomic_write_text, write_json
from fermetric.utils.runlock import run_lock
from fermetric.utils.seeding import make_generator, seed_everything

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
        return self.run_dir / "checkpoints"

    def _check_run_dir(self) -> None:
        """Refuse to overwrite a run, or to resume one that is not there (before anything is written)."""
        if self.resume:
            if not (self.ckpt_dir / "last.pt").is_file():
                raise CheckpointError(f"cannot resume: {self.ckpt_dir / 'last.pt'} does not exist")
        elif (self.ckpt_dir / "last.pt").exists():
            raise FermetricError(
                f"run directory {self.run_dir} already holds a run; pass --resume to continue it, or choose another --out"
            )

    def _create_run_dir(self) -> None:
        """Written only once the model, optimiser and data are known to be good, so a bad input
        leaves no half-made run directory behind."""
        if self.is_main:
            (self.run_dir / "figures").mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self._log_handler = logging.FileHandler(self.run_dir / "train.log")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logging.getLogger("fermetric").addHandler(self._log_handler)

    def _state(self, model, optimizer, schedule, scaler, epoch, best, history, notes) -> dict[str, Any]:
        raw = model.module if hasattr(model, "module") else model
        return {
            "kind": self.objective.kind,
            "model": self.objective.model_meta(raw, self.data.num_classes),
            "class_names": list(self.data.class_names),
            "state_dict": raw.state_dict(),
            "extra_state_dicts": [m.state_dict() for m in self.objective.extra_modules()],
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": epoch,
            "best": best,
            "history": history,
            "notes": notes,
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
            "host": socket.gethostname(), "pid": os.getpid(), "fermetric_version": __version__,
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
        last = self.ckpt_dir / "last.pt"
        if self._saved_epoch > 0 and last.is_file():
            return f"The last good checkpoint is {last} (epoch {self._saved_epoch})"
        return "No epoch ended with finite weights, so no checkpoint was written"

    def _stop_diverged(self, what: str, epoch: int | str) -> TrainingError:
        advice = (f"lower optim.lr (now {self.cfg.optim.lr:g}) or set train.grad_clip, then "
                  + ("--resume" if self._saved_epoch > 0 else "start the run again"))
        return TrainingError(f"training diverged: {what} at epoch {epoch}; training stopped. {self._last_good()}; {advice}.")

    # ------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train (holding the run directory's lock throughout; rank 0 alone writes it)."""
        with run_lock(self.run_dir) if self.is_main else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg, obj = self.cfg, self.objective
        self._check_run_dir()
        check_config(cfg)  # the declared ranges, also for a config built in Python (the CLI checked it already)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        # resolved here, on this machine, every time (a resumed run may move to another machine)
        precision = runtime.resolve_precision(cfg.train.precision, self.device, amp=cfg.train.amp)
        channels_last = cfg.train.channels_last and runtime.use_channels_last(self.device, precision)
        model = obj.build_model(self.data.num_classes).to(self.device)
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

        start_epoch, best, history, notes = 0, {"metric": obj.main_metric, "value": -math.inf, "epoch": -1}, [], {}
        if self.resume:  # checked before anything is written: a refused resume leaves the run as it was
            ckpt = load_checkpoint(self.ckpt_dir / "last.pt")
            meta = obj.model_meta(model, self.data.num_classes)
            check_compatible(ckpt, self.ckpt_dir / "last.pt", kind=obj.kind, **meta)
            bad = non_finite_tensors(ckpt["state_dict"])
            if bad:
                raise CheckpointError(f"cannot resume: {self.ckpt_dir / 'last.pt'} holds non-finite weights ({bad[0]}); start the run again")
            done = int(ckpt["epoch"])
            if cfg.train.epochs <= done:
                raise ConfigError(
                    f"run {self.run_dir} has already trained {done} epoch{'s' if done != 1 else ''}; to continue it pass --epochs "
                    f"(train.epochs) larger than {done} (got {cfg.train.epochs})"
                )
            load_state_dict_checked(model, ckpt["state_dict"], self.ckpt_dir / "last.pt")
            for m, sd in zip(obj.extra_modules(), ckpt.get("extra_state_dicts", [])):
                m.load_state_dict(sd)
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["schedule"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            start_epoch, best, history, notes = ckpt["epoch"], ckpt["best"], ckpt["history"], ckpt.get("notes", {})
            self.sittings = [dict(x) for x in ckpt.get("sittings", [])]
            for sitting in self.sittings:
                if sitting.get("end") == "running":  # its process died after writing last.pt
                    sitting["end"] = "did not finish (crash, error or Ctrl-C); times up to its last checkpoint"
            self._saved_epoch = start_epoch
        self._create_run_dir()
        if self.is_main:
            runtime.note_in_config(self.run_dir / "config.yaml", self.runtime)
        if self.resume:
            log.info("resuming %s from epoch %d%s", self.run_dir, start_epoch,
                     "".join(f"; {k}: {a!r} -> {b!r}" for k, (a, b) in self.changes.items()))
        if self.world_size > 1:
            # wrapped after a resume's weights are in, so every rank starts from rank 0's copy
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        log.info(
            "training %s (%s) on %s: %d train / %d val images, %d epochs, device %s, %d threads",
            obj.kind, cfg.model.name, self.data.name, len(self.data["train"]), len(self.data["val"]),
            cfg.train.epochs, self.device, torch.get_num_threads(),
        )
        log.info("precision %s (asked: %s), torch.compile %s (asked: %s), channels_last %s",
                 precision, cfg.train.precision, self.runtime["compile"], cfg.train.compile, channels_last)
        # the step's model, compiled or not (parameters shared with `model`, which checkpoints and validation use)
        stepper = runtime.StepCompiler(model, cfg.train.compile, self.device,
                                       steps_per_epoch * (cfg.train.epochs - start_epoch), cfg.train.time_budget_minutes * 60)
        t_start = time.time()
        self._sitting_start(start_epoch)
        # a bar's carriage-return updates only make sense on a terminal; a log gets the epoch lines
        bars = not self.quiet and self.is_main and sys.stderr.isatty()
        stopped_early = interrupted = False
        epoch = start_epoch
        bar = None
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                t0 = time.time()
                train_loader.set_epoch(epoch)
                g = make_generator(cfg.seed * 7_919 + epoch)  # objective randomness (mixup, ...)
                model.train()
                loss_sum, correct, seen = 0.0, 0, 0
                bar = tqdm(
                    total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
                    disable=not bars, leave=False, dynamic_ncols=True,
                )
                for step, (x, y, _) in enumerate(train_loader):
                    if step >= steps_per_epoch:
                        break
                    lr = schedule.lr_at(epoch * steps_per_epoch + step)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    x = runtime.to_memory_format(x, channels_last)
                    # parameters, gradients and optimiser state stay fp32; objectives compute losses in fp32
                    t_step = time.perf_counter()
                    with runtime.autocast(self.device, precision):
                        loss, n_correct = obj.training_step(stepper.current, x, y, g)
                    if not torch.isfinite(loss):
                        raise self._stop_diverged(f"the loss became {loss.item()}", f"{epoch + 1}, step {step + 1}")
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        if cfg.train.grad_clip > 0:
                            scaler.unscale_(optimizer)
                            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        if cfg.train.grad_clip > 0:
                            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                        optimizer.step()
                    stepper.step_done(time.perf_counter() - t_step)
                    n = int(y.shape[0])
                    loss_sum += float(loss.detach()) / obj.loss_scale * n
                    seen += n
                    if n_correct is not None:
                        correct += int(n_correct)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}" if n_correct is not None else "-")
                bar.close()
                loop_seconds = time.time() - t0
                if self.world_size > 1:
                    average_buffers(model.module)

                row: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": loss_sum / max(seen, 1),
                    "train_acc": (correct / seen) if seen and n_correct is not None else "",
                    "train_img_per_s": seen / max(loop_seconds, 1e-9),  # the loop alone, without validation
                }
                val = obj.validate(model.module if hasattr(model, "module") else model, self.data, self.device)
                row.update(val)
                epoch_notes = obj.epoch_notes(model, self.data, self.device)
                if epoch_notes:
                    notes[f"epoch_{epoch + 1}"] = epoch_notes
                    row.update({k: v for k, v in epoch_notes.items() if isinstance(v, (int, float, str))})
                row["seconds"] = time.time() - t0
                value = float(row[obj.main_metric])
                raw = model.module if hasattr(model, "module") else model
                bad = non_finite_tensors(raw.state_dict())
                for i, m in enumerate(obj.extra_modules()):
                    bad += [f"objective module {i}: {k}" for k in non_finite_tensors(m.state_dict())]
                if bad:
                    raise self._stop_diverged(f"{len(bad)} weight or buffer tensors are not finite (first: {bad[0]})", epoch + 1)
                bad_val = [k for k, v in val.items() if isinstance(v, float) and not math.isfinite(v)]
                if bad_val:  # finite weights whose outputs overflow: diverged all the same
                    raise self._stop_diverged(f"validation {bad_val[0]} is {val[bad_val[0]]}", epoch + 1)
                history.append(row)
                schedule.end_of_epoch(value)
                improved = value > best["value"] + 1e-9
                if improved:
                    best = {"metric": obj.main_metric, "value": value, "epoch": epoch + 1}
                if stepper.decision is not None and self.runtime["compile"] != stepper.decision:
                    self.runtime["compile"] = stepper.decision  # compile=auto decided this epoch
                    if self.is_main:
                        runtime.note_in_config(self.run_dir / "config.yaml", self.runtime)
                # decided before the checkpoint is written, so that its record of this sitting says how it ended
                stop = ""
                patience = cfg.train.early_stopping_patience
                budget = cfg.train.time_budget_minutes
                if patience > 0 and epoch + 1 - best["epoch"] >= patience:
                    stop = "early stopping"
                elif budget > 0 and (time.time() - t_start) / 60.0 >= budget:
                    stop = "time budget"
                end = "finished" if epoch + 1 == cfg.train.epochs else (f"stopped: {stop}" if stop else "running")
                self._sitting_update(t_start, epoch + 1, end)
                if self.is_main:
                    state = self._state(model, optimizer, schedule, scaler, epoch + 1, best, history, notes)
                    if improved:
                        save_checkpoint(state, self.ckpt_dir / "best.pt")
                    save_checkpoint(state, self.ckpt_dir / "last.pt")
                    write_history(history, self.run_dir / "history.csv")
                self._saved_epoch = epoch + 1
                barrier()
                log.info(
                    "epoch %d/%d  loss %.4f  %s %.4f%s  (%.1f s)",
                    epoch + 1, cfg.train.epochs, row["train_loss"], obj.main_metric, value,
                    "  *best*" if improved else "", row["seconds"],
                )
                if stop == "early stopping":
                    log.info("early stopping: no improvement of %s for %d epochs", obj.main_metric, patience)
                elif stop:
                    log.info("time budget of %.1f min reached after epoch %d", budget, epoch + 1)
                if stop:
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            interrupted = True
            if bar is not None:
                bar.close()
            if self.is_main:
                self._sitting_update(t_start, self._saved_epoch, end="interrupted")
                state = self._state(model, optimizer, schedule, scaler, epoch, best, history, notes)
                save_checkpoint(state, self.ckpt_dir / "interrupted.pt")
                if self._saved_epoch > 0 and (self.ckpt_dir / "last.pt").is_file():
                    then = f"--resume continues from the last completed epoch ({self.ckpt_dir / 'last.pt'}, epoch {self._saved_epoch})"
                else:  # pointing at a last.pt that does not exist would send the user nowhere
                    then = "no epoch finished, so there is nothing to resume: start the run again with the same command"
                log.warning("interrupted during epoch %d: model saved to %s; %s",
                            epoch + 1, self.ckpt_dir / "interrupted.pt", then)
            raise
        finally:
            if bar is not None:
                bar.close()  # before any error message, so that it is not glued onto a bar's last update
            if self.is_main and hasattr(self, "_log_handler"):
                logging.getLogger("fermetric").removeHandler(self._log_handler)
                self._log_handler.close()

        raw = model.module if hasattr(model, "module") else model
        final_state = {k: v.detach().cpu().clone() for k, v in raw.state_dict().items()}
        metrics: dict[str, Any] = {}
        if self.is_main:
            if self.sittings[-1]["end"] == "running":  # no epoch left to train in this sitting
                self._sitting_update(t_start, self._saved_epoch, end="finished")
            metrics = self.finalize(model, history, best, notes, sum(s["seconds"] for s in self.sittings), stopped_early)
        return TrainResult(self.run_dir, metrics, history, stopped_early, interrupted, final_state)

    # ------------------------------------------------------------------------------------------
    def finalize(self, model, history, best, notes, seconds, stopped_early) -> dict[str, Any]:
        """Reload the best checkpoint, evaluate it on val (and test), write metrics and figures."""
        from fermetric.plotting import save_figure
        from fermetric.plotting.confusion import plot_confusion
        from fermetric.plotting.curves import plot_history

        raw = model.module if hasattr(model, "module") else model
        best_path = self.ckpt_dir / "best.pt"
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
        write_json(self.run_dir / "metrics.json", metrics)
        fig = plot_history(history, title=f"{self.cfg.model.name} on {self.data.name}")
        save_figure(fig, self.run_dir / "figures" / "curves.png")
        return metrics
