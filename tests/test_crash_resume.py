"""Crash and resume in real processes: SIGKILL mid-epoch then --resume ends where an uninterrupted
run ends; Ctrl-C (SIGINT) saves a checkpoint and exits cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import default_sigint

ARGS = ["train-classifier", "--model", "baseline", "--device", "cpu", "--seed", "5", "--epochs", "3",
        "--set", "data.synth_train=640", "--set", "data.synth_val=64", "--set", "data.synth_test=0",
        "--set", "model.width=8", "--set", "train.batch_size=32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fermetric", "-q", *ARGS, "--out", str(out), *extra]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path} appeared"
        assert time.time() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def test_sigkill_mid_epoch_then_resume_matches(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    subprocess.run(_cmd(straight), check=True, env=ENV, timeout=600)

    proc = subprocess.Popen(_cmd(crashed), env=ENV)
    _wait_for(crashed / "checkpoints" / "last.pt", proc)  # epoch 1 done, epoch 2 under way
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ck = torch.load(crashed / "checkpoints" / "last.pt", weights_only=True)  # intact despite the kill
    assert 1 <= ck["epoch"] < 3
    assert not list((crashed / "checkpoints").glob("*.tmp"))

    subprocess.run([sys.executable, "-m", "fermetric", "-q", "train-classifier", "--resume", "--out", str(crashed)],
                   check=True, env=ENV, timeout=600)
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]
    sa = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    sb = torch.load(crashed / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_cmd(out), env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    _wait_for(out / "checkpoints" / "last.pt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert (out / "checkpoints" / "interrupted.pt").is_file()
    assert "interrupted" in err
    # the resumed run finishes and the partial epoch's leftover goes (issue 25)
    done = subprocess.run(_cmd(out, "--resume"), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (out / "checkpoints" / "interrupted.pt").exists()
    assert (out / "metrics.json").is_file()
