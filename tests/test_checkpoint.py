import os

import pytest
import torch

from fermetric.errors import CheckpointError
from fermetric.runs.checkpoint import check_compatible, load_checkpoint, load_state_dict_checked, save_checkpoint


def test_round_trip(tmp_path):
    p = save_checkpoint({"kind": "classifier", "model": {"name": "x", "num_classes": 7}, "state_dict": {"w": torch.ones(2)}}, tmp_path / "c.pt")
    ck = load_checkpoint(p)
    assert ck["kind"] == "classifier" and torch.equal(ck["state_dict"]["w"], torch.ones(2))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "fermetric-checkpoint", "payload": _Evil(str(marker))}, bad, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_truncated_and_foreign(tmp_path):
    p = save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "c.pt")
    data = p.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a fermetric checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_compatibility_and_shapes(tmp_path):
    ck = {"kind": "classifier", "model": {"name": "resnet18", "num_classes": 7}}
    with pytest.raises(CheckpointError, match="name is 'resnet18' there but 'baseline' here"):
        check_compatible(ck, "x.pt", kind="classifier", name="baseline", num_classes=7)
    with pytest.raises(CheckpointError, match="num_classes is 7 there but 8 here"):
        check_compatible(ck, "x.pt", name="resnet18", num_classes=8)
    with pytest.raises(CheckpointError, match="embedding"):
        check_compatible(ck, "x.pt", kind="embedding")
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match="differ in shape"):
        load_state_dict_checked(lin, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "x.pt")


def test_atomic_files_get_normal_permissions(tmp_path):
    import stat

    from fermetric.utils.io import write_json

    from fermetric.utils import io as fio

    p = write_json(tmp_path / "m.json", {"a": 1})
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~fio._UMASK  # as a plain open() would make it
    assert stat.S_IMODE(p.stat().st_mode) & 0o044  # readable by others under the usual umask
