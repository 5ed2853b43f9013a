"""The ONNX Runtime backend of forward-only scoring (issue 26): every scorer kind gives PyTorch's
scores (max abs difference <= 1e-4, the same arg-max on 1,000 faces), a stale or edited graph is
refused, "auto" picks it only where it pays, and a missing onnxruntime gets a one-line message."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fermetric.errors import ConfigError, FermetricError
from fermetric.runs import load_run
from fermetric.models import onnx
from fermetric.scoring.calibration import CalibratedScorer
from fermetric.scoring.ensemble import EnsembleScorer
from fermetric.scoring.run import run_scorer

pytest.importorskip("onnxruntime", reason="the ONNX backend is optional: pip install 'fermetric[fast]'")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def faces(classifier_run) -> torch.Tensor:
    """1,000 faces: the tiny run's SynthFER images, flipped and shifted copies to make up the count."""
    data = load_run(classifier_run, device="cpu").load_data()
    x = torch.cat([data["train"].images, data["val"].images])
    while len(x) < 1000:
        x = torch.cat([x, x.flip(-1).roll(1, -1)])
    return x[:1000]


def both(scorer, x):
    scorer.backend = "torch"
    a = scorer.scores(x)
    scorer.backend = "onnxruntime"
    b = scorer.scores(x)
    return a, b


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_classifier_scores_equal_pytorch(classifier_run, faces, output):
    run = load_run(classifier_run, device="cpu", precision="fp32")
    assert_same(*both(run_scorer(run, "classifier", output=output), faces))


@pytest.mark.parametrize("kind", ["knn", "prototype"])
def test_embedding_scores_equal_pytorch(triplet_run, faces, kind):
    run = load_run(triplet_run, device="cpu", precision="fp32")
    assert_same(*both(run_scorer(run, kind), faces))


def test_tta_calibrated_and_ensemble_scorers_equal_pytorch(classifier_run, triplet_run, faces):
    clf = load_run(classifier_run, device="cpu", precision="fp32")
    tri = load_run(triplet_run, device="cpu", precision="fp32")
    tta = run_scorer(clf, "classifier", tta="shift")
    calibrated = CalibratedScorer(run_scorer(clf, "classifier"), {"method": "temperature", "temperature": 0.8})
    ensemble = EnsembleScorer([run_scorer(clf, "classifier", tta="shift"), run_scorer(tri, "knn")], [2.0, 1.0])
    for sc in (tta, calibrated):
        assert_same(*both(sc, faces[:300]))
    ensemble.backend = "torch"
    a = ensemble.scores(faces[:300])
    for m in ensemble.members:
        m.backend = "onnxruntime"
    ensemble.backend = "onnxruntime"
    assert_same(a, ensemble.scores(faces[:300]))


def test_graph_is_cached_by_weights_and_a_stale_one_refused(classifier_run, faces, onnx_cache):
    run = load_run(classifier_run, device="cpu", precision="fp32")
    sc = run_scorer(run, "classifier")
    sc.backend = "onnxruntime"
    first = sc.scores(faces[:64])
    graphs = sorted(onnx_cache.glob("*.onnx"))
    assert len(graphs) == 1 and graphs[0].stem == onnx.weights_digest(run.model)
    # new weights: a new graph (the old one is for other weights), and scores that follow them
    with torch.no_grad():
        list(run.model.parameters())[-1][0] += 2.0  # the first class's bias
    sc.backend = "torch"
    want = sc.scores(faces[:64])
    sc.backend = "onnxruntime"
    assert_same(want, sc.scores(faces[:64]))
    assert not torch.allclose(first, want) and len(list(onnx_cache.glob("*.onnx"))) == 2
    # a graph used for weights it was not exported for, or edited, is refused
    digest = onnx.weights_digest(run.model)
    with pytest.raises(onnx.StaleGraphError, match="other weights"):
        onnx.OnnxGraph(graphs[0], digest)
    path = onnx.cached_graph_path(run.model, digest)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(onnx.StaleGraphError, match="edited or truncated"):
        onnx.OnnxGraph(path, digest)
    # ... and graph_for exports it again instead of using it
    fresh = run_scorer(run, "classifier")
    fresh.backend = "onnxruntime"
    assert_same(want, fresh.scores(faces[:64]))


def test_auto_uses_onnxruntime_only_where_it_pays(classifier_run, faces, monkeypatch, onnx_cache):
    monkeypatch.delenv(onnx.ENV_BACKEND, raising=False)
    run = load_run(classifier_run, device="cpu", precision="fp32")
    sc = run_scorer(run, "classifier")
    sc.scores(faces[:32])
    assert not list(onnx_cache.glob("*.onnx"))  # a short job: no export
    sc._eager_seconds = onnx.EXPORT_AFTER_SECONDS  # as after a few seconds of eager passes
    sc.scores(faces[:32])
    assert len(list(onnx_cache.glob("*.onnx"))) == 1 and sc.__dict__.get("_onnx") is not None
    other = run_scorer(run, "classifier")  # a new scorer of the same weights: the cached graph at once
    other.scores(faces[:32])
    assert other.__dict__.get("_onnx") is not None
    # where precision resolves to bf16 (native on the CPU), PyTorch's bf16 is faster: auto stays on it
    assert onnx.resolve_backend("auto", torch.device("cpu"), "auto", "bf16") == "torch"
    assert onnx.resolve_backend("auto", torch.device("cpu"), "auto", "fp32") is None
    monkeypatch.setenv(onnx.ENV_BACKEND, "torch")
    assert onnx.resolve_backend("auto", torch.device("cpu"), "auto", "fp32") == "torch"


def test_bad_settings_and_missing_onnxruntime(monkeypatch):
    with pytest.raises(ConfigError, match="backend must be one of"):
        onnx.resolve_backend("tensorrt", torch.device("cpu"), "auto", "fp32")
    with pytest.raises(ConfigError, match="runs in fp32"):
        onnx.resolve_backend("onnxruntime", torch.device("cpu"), "bf16", "bf16")
    import builtins

    real = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(FermetricError, match=r"pip install 'fermetric\[fast\]'"):
        onnx.resolve_backend("onnxruntime", torch.device("cpu"), "auto", "fp32")
    monkeypatch.delenv(onnx.ENV_BACKEND, raising=False)
    monkeypatch.setattr(onnx, "onnxruntime_available", lambda: False)
    assert onnx.resolve_backend("auto", torch.device("cpu"), "auto", "fp32") == "torch"  # auto: no error, PyTorch


def test_cli_backend_option(classifier_run, tmp_path, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv(onnx.ENV_BACKEND, "torch")  # restored after the test: the option sets it

    out = tmp_path / "ev"
    run_cli(["--backend", "onnxruntime", "evaluate", str(classifier_run), "--split", "val", "--out", str(out)])
    assert list(out.glob("*.json"))
    res = run_cli(["--backend", "tensorrt", "evaluate", str(classifier_run)], expect=2)
    assert "tensorrt" in res.output


def test_embeddings_through_onnxruntime_equal_pytorch(triplet_run, classifier_run, monkeypatch, onnx_cache):
    """A run's embeddings (a gallery, the kNN report's queries) through the backend; the graph of
    an embedding model is keyed to its embedding layer too (one state dict, two graphs)."""
    from fermetric.retrieval.embeddings import embed_images

    for path in (triplet_run, classifier_run):
        run = load_run(path, device="cpu", precision="fp32")
        ds = run.load_data()["val"]
        monkeypatch.setenv(onnx.ENV_BACKEND, "torch")
        a = embed_images(run, ds)
        monkeypatch.setenv(onnx.ENV_BACKEND, "onnxruntime")
        b = embed_images(run, ds)
        assert a.shape == b.shape and abs(a - b).max() <= 1e-4
    run = load_run(triplet_run, device="cpu", precision="fp32")
    digests = set()
    for layer in ("backbone", "projection"):
        run.model.embedding_layer = layer
        digests.add(onnx.weights_digest(run.model))
    assert len(digests) == 2
