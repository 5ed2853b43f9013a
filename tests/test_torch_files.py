"""Reading torch files safely: the hub cache is read with weights_only=True, and every failed
load names its real cause (empty, random bytes, damaged zip, refused objects, missing device)."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
import torchvision

from fermetric.errors import CheckpointError, ModelError
from fermetric.models import create_model
from fermetric.runs.checkpoint import load_checkpoint
from fermetric.utils.io import read_torch_file


class Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(d))

    def no_network(url, dst, *a, **k):  # a cache miss must never reach the network in a test
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return d


def test_malicious_file_in_the_hub_cache_is_refused(hub_dir: Path, tmp_path: Path):
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = hub_dir / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": Evil(tmp_path / "pwned.txt")}, cached)
    with pytest.raises(ModelError, match=r"ResNet18_Weights.IMAGENET1K_V1.*arbitrary Python objects.*--weights FILE") as err:
        create_model("resnet18", pretrained=True)
    assert not (tmp_path / "pwned.txt").exists()  # never unpickled
    assert str(cached) in str(err.value)


def test_offline_message_points_at_a_safe_path(hub_dir: Path):
    with pytest.raises(ModelError) as err:
        create_model("resnet18", pretrained=True)
    msg = str(err.value)
    assert "model.weights=FILE" in msg and "weights_only" in msg
    assert "checkpoints" not in msg  # no advice to drop files into the hub cache


def _ok(path: Path) -> Path:
    torch.save({"w": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize(
    "make, map_location, pattern",
    [
        (lambda p: p.write_bytes(b""), "cpu", r"is empty \(0 bytes\)"),
        (lambda p: p.write_bytes(b"\x00" + os.urandom(1999)), "cpu", r"is not a torch file \(neither"),
        (lambda p: p.write_bytes(_ok(p).read_bytes()[:300]), "cpu", r"truncated or damaged"),
        (lambda p: torch.save({"x": Evil(p.parent / "pwned")}, p), "cpu", r"arbitrary Python objects"),
        (lambda p: _ok(p), "nodevice", r"cannot be loaded onto device 'nodevice'.*--device cpu"),
        (lambda p: os.mkfifo(p), "cpu", r"not a regular file"),
    ],
    ids=["empty", "random-bytes", "truncated", "objects", "device", "fifo"],
)
def test_read_torch_file_names_the_cause(tmp_path: Path, make, map_location, pattern):
    path = tmp_path / "f.pt"
    make(path)
    with pytest.raises(CheckpointError, match=pattern) as err:
        read_torch_file(path, map_location)
    assert len(str(err.value)) < 500
    assert "arbitrary" not in str(err.value) or "objects" in pattern
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_on_a_missing_device_is_not_called_truncated(tmp_path: Path):
    path = tmp_path / "best.pt"
    torch.save({"format": "fermetric-checkpoint", "w": torch.zeros(2)}, path)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, map_location="cuda")
    assert "truncated" not in str(err.value) and "device 'cuda'" in str(err.value)
