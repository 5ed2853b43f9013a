"""Nothing lost, nothing wrong reported as right, on the training side: one writer per run
directory, no non-finite checkpoint, resume refusing what it cannot honour and keeping the
history of sittings, Ctrl-C messages that point at real files, logs without progress-bar
fragments, and the thread count applied."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, TINY_TRAIN_ARGS as TINY, default_sigint, hold_run_lock, run_cli, snapshot
from fermetric.runs.checkpoint import non_finite_tensors
from fermetric.utils.runlock import LOCK_NAME

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
SMALL = ["--device", "cpu", "--set", "data.synth_train=70", "--set", "data.synth_val=14", "--set", "data.synth_test=0",
         "--set", "model.width=4", "--set", "train.batch_size=16"]


def _all_finite(path: Path) -> bool:
    return not non_finite_tensors(torch.load(path, weights_only=True)["state_dict"])


# --- one writer per run directory -----------------------------------------------------------------

def test_second_training_into_a_locked_run_is_refused_and_a_killed_holder_releases_it(tmp_path, classifier_run):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    before = snapshot(run)
    holder = hold_run_lock(run)
    try:
        for args in (["--out", str(run), *TINY, "--epochs", "1"], ["--resume", "--out", str(run), "--epochs", "3"]):
            res = run_cli(["train-classifier", *args], expect=2)
            assert f"run directory {run} is in use by another fermetric process (PID {holder.pid})" in res.output
            assert "choose another --out" in res.output and "Traceback" not in res.output
        assert snapshot(run) == {**before, LOCK_NAME: f"{holder.pid}\n".encode()}  # nothing else touched
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
        holder.wait(timeout=30)
    run_cli(["train-classifier", "--resume", "--out", str(run), "--epochs", "3"])
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3
    assert not (run / LOCK_NAME).exists()  # released and removed: the run's layout is unchanged


def test_lock_on_a_new_run_directory_leaves_nothing_behind(tmp_path):
    from fermetric.errors import FermetricError
    from fermetric.utils.runlock import RunLockedError, run_lock

    run = tmp_path / "new"
    with run_lock(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
        with run_lock(run):  # the same process may nest (CLI and Trainer.fit)
            pass
        assert (run / LOCK_NAME).is_file()
    assert not run.exists()  # created for the lock, left empty: removed
    holder = hold_run_lock(run)
    try:
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            with run_lock(run):
                pass
        assert issubclass(RunLockedError, FermetricError)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with run_lock(run):
        pass


# --- divergence ----------------------------------------------------------------------------------

def test_absurd_learning_rate_fails_without_writing_non_finite_checkpoints(tmp_path):
    out = tmp_path / "diverged"
    res = run_cli(["train-classifier", "--out", str(out), "--epochs", "2", *SMALL,
                   "--set", "optim.lr=1000000.0", "--set", "schedule.warmup_epochs=0"], expect=2)
    assert "training diverged" in res.output and "epoch 1" in res.output, res.output
    assert "No epoch ended with finite weights" in res.output and "optim.lr" in res.output
    assert "last.pt" not in res.output and "--resume" not in res.output  # nothing to resume from
    assert not (out / "checkpoints" / "best.pt").exists() and not (out / "checkpoints" / "last.pt").exists()
    assert not (out / "metrics.json").exists()  # no result reported


def test_divergence_after_a_good_epoch_names_the_finite_last_checkpoint(tmp_path, monkeypatch):
    """Batch-norm statistics blow up while the loss stays finite: caught at the end of the epoch."""
    from fermetric.training import classifier as clf

    real = clf.ClassifierObjective.training_step
    calls = {"n": 0}

    def poisoned(self, model, images, labels, g):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, step 2 (4 steps an epoch)
            bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return real(self, model, images, labels, g)

    monkeypatch.setattr(clf.ClassifierObjective, "training_step", poisoned)
    out = tmp_path / "bn"
    res = run_cli(["train-classifier", "--out", str(out), "--epochs", "3", *TINY,
                   "--set", "train.max_steps_per_epoch=4"], expect=2)
    assert "running_var" in res.output and "at epoch 2" in res.output, res.output
    assert f"{out / 'checkpoints' / 'last.pt'} (epoch 1)" in res.output and "--resume" in res.output
    for name in ("last", "best"):
        path = out / "checkpoints" / f"{name}.pt"
        assert _all_finite(path), name
        assert torch.load(path, weights_only=True)["epoch"] == 1
    # what the message advises: a lower learning rate, then --resume; the failed sitting stays on record
    run_cli(["train-classifier", "--resume", "--out", str(out), "--set", "optim.lr=0.01"])
    sittings = json.loads((out / "metrics.json").read_text())["sittings"]
    assert [(x["epoch_from"], x["epoch_to"]) for x in sittings] == [(0, 1), (1, 3)]
    assert sittings[0]["end"].startswith("did not finish") and sittings[1]["end"] == "finished"
    assert sittings[1]["changes"] == {"optim.lr": [0.05, 0.01]}


def test_non_finite_validation_is_divergence_not_improvement(tmp_path, monkeypatch):
    from fermetric.training import classifier as clf

    real = clf.ClassifierObjective.validate
    calls = {"n": 0}

    def validate(self, model, data, device):
        calls["n"] += 1
        val = real(self, model, data, device)
        return {**val, "val_loss": float("nan")} if calls["n"] == 2 else val

    monkeypatch.setattr(clf.ClassifierObjective, "validate", validate)
    out = tmp_path / "nanval"
    res = run_cli(["train-classifier", "--out", str(out), "--epochs", "3", *TINY,
                   "--set", "train.max_steps_per_epoch=2"], expect=2)
    assert "validation val_loss is nan at epoch 2" in res.output
    assert torch.load(out / "checkpoints" / "best.pt", weights_only=True)["best"]["epoch"] == 1


# --- resume ------------------------------------------------------------------------------------------

def test_resume_applies_allowed_changes_and_keeps_every_sitting(tmp_path, classifier_run):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    first = json.loads((run / "metrics.json").read_text())
    assert len(first["sittings"]) == 1 and first["sittings"][0]["epoch_from"] == 0
    assert first["sittings"][0]["epoch_to"] == 2 and first["sittings"][0]["end"] == "finished"
    run_cli(["train-classifier", "--resume", "--out", str(run), "--epochs", "3", "--set", "optim.lr=0.01",
             "--set", "model.width=8"])  # a key given with the run's own value is no change
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["optim"]["lr"] == 0.01 and cfg["model"]["width"] == 8
    m = json.loads((run / "metrics.json").read_text())
    s1, s2 = m["sittings"]
    assert s1 == first["sittings"][0]  # the first sitting's record is kept as it was
    assert (s2["epoch_from"], s2["epoch_to"]) == (2, 3)
    assert s2["changes"] == {"optim.lr": [0.05, 0.01], "train.epochs": [2, 3]}
    assert m["train_seconds"] == pytest.approx(s1["seconds"] + s2["seconds"], abs=0.02)
    assert m["train_seconds"] > first["train_seconds"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["sittings"][0] == s1
    # each sitting names its CPU, and a card of a run resumed on another CPU names both
    from fermetric.utils.runtime import cpu_model
    from fermetric.zoo.export import _train_minutes_and_machine

    assert s1["cpu"] == s2["cpu"] == cpu_model()
    _, machine, _ = _train_minutes_and_machine(m, 2)
    assert machine.startswith(f"{cpu_model()}, 2 threads")
    other = {**m, "sittings": [{**s1, "cpu": "Some Other CPU (AVX2)"}, s2]}
    _, machine, _ = _train_minutes_and_machine(other, 2)
    assert "epochs 1-2 on Some Other CPU (AVX2); epochs 3-3 on " + cpu_model() in machine


def test_refused_resume_leaves_the_run_as_it_was(tmp_path, classifier_run):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    before = snapshot(run)
    res = run_cli(["train-classifier", "--resume", "--out", str(run), "--epochs", "1"], expect=2)
    assert "already trained 2 epochs" in res.output and "larger than 2" in res.output
    res = run_cli(["train-classifier", "--resume", "--out", str(run), "--set", "train.batch_size=64",
                   "--data", "synth", "--seed", "9"], expect=2)
    assert "train.batch_size is 32 in the run but 64 was given" in res.output
    assert "seed is 0 in the run but 9 was given" in res.output
    assert "data.source" not in res.output  # the same data, given again, is no change
    assert snapshot(run) == before


def test_resume_lets_a_classifier_change_only_what_it_never_reads_in_training():
    """--resume compares configs by family: a classifier's metric.* may change (recorded as
    changes), an embedding run's may not; everything else stays refused for both."""
    from fermetric.config import RunConfig
    from fermetric.errors import ConfigError
    from fermetric.training.resume import resume_config

    run, given = RunConfig(), RunConfig()
    given.metric.knn_k, given.train.epochs = run.metric.knn_k + 5, run.train.epochs + 1
    cfg, changes = resume_config(run, given, "RUN", "classifier")
    assert changes == {"metric.knn_k": [run.metric.knn_k, given.metric.knn_k],
                       "train.epochs": [run.train.epochs, given.train.epochs]}
    assert cfg.metric.knn_k == given.metric.knn_k
    for family in ("triplet", "siamese", None):
        with pytest.raises(ConfigError, match=rf"metric.knn_k is {run.metric.knn_k} in the run"):
            resume_config(run, given, "RUN", family)
    given.train.batch_size = run.train.batch_size * 2
    with pytest.raises(ConfigError, match=r"train.batch_size is .*\(and metric\.\*, which a classifier does not read\)"):
        resume_config(run, given, "RUN", "classifier")


# --- interruption ------------------------------------------------------------------------------------

def test_ctrl_c_in_the_first_epoch_does_not_point_at_a_missing_checkpoint(tmp_path):
    out = tmp_path / "early"
    cmd = [sys.executable, "-m", "fermetric", "-q", "train-classifier", "--out", str(out), "--device", "cpu",
           "--epochs", "2", "--set", "data.synth_train=1280", "--set", "data.synth_val=32", "--set", "data.synth_test=0",
           "--set", "model.width=16", "--set", "train.batch_size=32"]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    t0 = time.time()
    while not (out / "config.yaml").exists():  # written just before the first epoch starts
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not (out / "checkpoints" / "last.pt").exists(), "the epoch finished before the signal: test too fast"
    assert (out / "checkpoints" / "interrupted.pt").is_file()
    assert "no epoch finished" in err and "start the run again" in err
    assert "last.pt" not in err and "--resume" not in err and "Traceback" not in err


# --- logs ----------------------------------------------------------------------------------------------

def test_redirected_output_gets_one_line_per_epoch_and_no_carriage_returns(tmp_path):
    from click.testing import CliRunner

    from fermetric.cli import main

    res = CliRunner().invoke(main, ["train-classifier", "--out", str(tmp_path / "r"), "--epochs", "2", *TINY,
                                    "--set", "train.max_steps_per_epoch=3"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output
    lines = res.output.splitlines()
    assert [sum(line.startswith(f"epoch {e}/2 ") for line in lines) for e in (1, 2)] == [1, 1], res.output


def test_quiet_console_still_writes_the_runs_log(tmp_path):
    """-q quietens the console, not the run's record: train.log keeps the epoch lines."""
    from click.testing import CliRunner

    from fermetric.cli import main

    res = CliRunner().invoke(main, ["-q", "train-classifier", "--out", str(tmp_path / "r"), "--epochs", "2", *TINY,
                                    "--set", "train.max_steps_per_epoch=2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1/2 " not in res.output  # the console stays quiet
    log_text = (tmp_path / "r" / "train.log").read_text()
    assert "epoch 1/2 " in log_text and "epoch 2/2 " in log_text, log_text


# --- threads -------------------------------------------------------------------------------------------

def test_global_threads_option_is_applied_and_recorded(tmp_path):
    try:
        run_cli(["--threads", "2", "models"])
        assert torch.get_num_threads() == 2
        run_cli(["--threads", "1", "train-classifier", "--out", str(tmp_path / "r"), "--epochs", "1", *TINY,
                 "--set", "train.max_steps_per_epoch=1", "--set", "train.threads=2"])
        assert torch.get_num_threads() == 1  # the flag wins over the config
        assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["train"]["threads"] == 1
    finally:
        torch.set_num_threads(1)


def test_commands_writing_into_a_run_wait_for_no_one(tmp_path, classifier_run):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    holder = hold_run_lock(run)
    try:
        for args in (["evaluate", str(run)], ["build-index", str(run)], ["knn-eval", str(run)]):
            res = run_cli(args, expect=2)
            assert f"in use by another fermetric process (PID {holder.pid})" in res.output, args
        run_cli(["evaluate", str(run), "--out", str(tmp_path / "elsewhere")])  # reading a run is not refused
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not (run / "eval").exists() and not (run / "index").exists()
    run_cli(["evaluate", str(run)])
    assert (run / "eval" / "val.json").is_file() and not (run / LOCK_NAME).exists()
