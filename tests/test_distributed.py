"""Two CPU processes with gloo: DistributedDataParallel keeps the ranks' weights identical and the
loss goes down, for a classifier and for a triplet model (distributed m-per-class batches and
pml's cross-process miner and loss)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, family: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from fermetric.config import load_config
    from fermetric.data.sources import load_data
    from fermetric.training.distributed import init_distributed, shutdown
    from fermetric.training.trainer import Trainer

    overrides = ["device=cpu", "data.synth_train=448", "data.synth_val=64", "data.synth_test=0",
                 "model.width=8", "train.epochs=3", "train.batch_size=32", "data.augment.enabled=false"]
    if family == "classifier":
        from fermetric.training.classifier import ClassifierObjective as Obj
        overrides += ["optim.lr=0.05"]
    else:
        from fermetric.training.metric import MetricObjective as Obj
        overrides += ["metric.m_per_class=4", "metric.miner=all", "optim.name=adamw", "optim.lr=0.003"]
    cfg = load_config(None, overrides)
    info = init_distributed(torch.device("cpu"))
    data = load_data(None, cfg.data, seed=cfg.seed)
    data.splits.pop("test", None)
    result = Trainer(cfg, Obj(cfg), data, out, quiet=True, rank=info.rank, world_size=info.world_size).fit()
    torch.save({"state": result.final_state, "history": result.history}, os.path.join(out, f"rank{rank}.pt"))
    shutdown()


@pytest.mark.parametrize("family", ["classifier", "triplet"])
def test_two_processes_gloo(tmp_path, family):
    out = str(tmp_path / family)
    mp.spawn(_worker, args=(2, _free_port(), family, out), nprocs=2, join=True)
    r0 = torch.load(os.path.join(out, "rank0.pt"), weights_only=True)
    r1 = torch.load(os.path.join(out, "rank1.pt"), weights_only=True)
    for k, v in r0["state"].items():
        assert torch.allclose(v.float(), r1["state"][k].float(), atol=1e-6), f"rank weights differ at {k}"
    losses = [row["train_loss"] for row in r0["history"]]
    assert losses[-1] < losses[0], losses
    assert os.path.isfile(os.path.join(out, "metrics.json"))  # one run directory, written by rank 0


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    """The documented command line: torchrun -m fermetric train-classifier ..."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           "-m", "fermetric", "-q", "train-classifier", "--device", "cpu", "--epochs", "2", "--out", str(out),
           "--set", "data.synth_train=256", "--set", "data.synth_val=64", "--set", "model.width=8",
           "--set", "train.batch_size=32"]
    subprocess.run(cmd, check=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (out / "metrics.json").is_file()
