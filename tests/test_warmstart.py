"""--init-from RUN: an embedding model from a classifier's backbone, a classifier from an
embedding run's backbone, and a refusal when the backbones differ."""
from __future__ import annotations

import torch
import yaml

from conftest import TINY_TRAIN_ARGS, run_cli
from fermetric.config import load_config
from fermetric.runs import load_run
from fermetric.training.warmstart import init_from_run

TINY = {"data.synth_train": 280, "model.width": 8}


def _cfg(*extra: str):
    return load_config(overrides=[f"{k}={v}" for k, v in TINY.items()] + list(extra))


def _same(a: dict, b: dict, prefix_a: str = "", prefix_b: str = "") -> int:
    """Number of backbone tensors equal in a and b (asserting each shared one is equal)."""
    n = 0
    for k, v in a.items():
        if not k.startswith(prefix_a):
            continue
        other = b.get(prefix_b + k[len(prefix_a):])
        if other is not None and other.shape == v.shape:
            assert torch.equal(v, other), k
            n += 1
    return n


def test_embedding_model_from_classifier_and_back(classifier_run, triplet_run):
    from fermetric.models.factory import build_model

    clf = load_run(classifier_run, device="cpu").model.state_dict()
    emb_model = build_model("embedding", _cfg(), 7)
    init_from_run(emb_model, classifier_run)
    conv = [k for k in clf if k.endswith("weight") and clf[k].ndim == 4]
    assert conv and _same(clf, emb_model.state_dict(), "", "backbone.") >= len(conv)

    tri = load_run(triplet_run, device="cpu").model.state_dict()
    clf_model = build_model("classifier", _cfg(), 7)
    init_from_run(clf_model, triplet_run)
    assert _same(tri, clf_model.state_dict(), "backbone.", "") >= len(conv)

    # embedding <- embedding takes the projection head too
    emb2 = build_model("embedding", _cfg(), 7)
    init_from_run(emb2, triplet_run)
    assert _same(tri, emb2.state_dict()) == len([k for k in tri if not k.endswith("num_batches_tracked")]) or \
        torch.equal(emb2.state_dict()["projection.0.weight"], tri["projection.0.weight"])


def test_init_from_cli_records_and_refuses_other_width(classifier_run, tmp_path):
    out = tmp_path / "tri"
    run_cli(["train-triplet", "--epochs", "1", "--init-from", str(classifier_run), "--out", str(out), *TINY_TRAIN_ARGS,
             "--set", "metric.m_per_class=4", "--set", "train.max_steps_per_epoch=1"])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["init_from"] == str(classifier_run)
    assert "initialised from run" in (out / "train.log").read_text()
    # a run's own model is rebuilt from its checkpoint, never from the source run again
    load_run(out, device="cpu")

    bad = tmp_path / "bad"
    res = run_cli(["train-triplet", "--epochs", "1", "--init-from", str(classifier_run), "--out", str(bad),
                   *TINY_TRAIN_ARGS, "--set", "model.width=16", "--set", "metric.m_per_class=4"], expect=2)
    assert "does not fit" in res.output and not (bad / "checkpoints").exists()
