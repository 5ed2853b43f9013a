"""Precision, torch.compile and memory format (fermetric.utils.runtime), and their numerics:
auto resolution on machines with and without native bf16, bf16 explanations that agree with
fp32, bf16 checkpoints that load in fp32, resume across precisions, compile failures that fall
back to eager, losses in fp32."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr

from fermetric.analysis import gradcam, gradient_saliency
from fermetric.scoring import ClassifierScorer
from fermetric.config import load_config
from fermetric.errors import ConfigError
from fermetric.models import create_model
from fermetric.utils import runtime

from conftest import TINY_TRAIN_ARGS, run_cli
from fermetric.scoring.run import split_proba


# --- resolution --------------------------------------------------------------------------------

def test_auto_precision_follows_the_cpu_capability(monkeypatch):
    monkeypatch.setenv(runtime.ENV_CPU_BF16, "1")
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(runtime.ENV_CPU_BF16, "0")
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"  # emulated, allowed (with a warning)
    # CUDA keeps AMP as before; train.amp: false (older configs) keeps auto at fp32
    assert runtime.resolve_precision("auto", "cuda", amp=True) == "fp16"
    assert runtime.resolve_precision("auto", "cuda", amp=False) == "fp32"
    with pytest.raises(ConfigError, match="train.precision must be one of auto, fp32, bf16, fp16"):
        runtime.resolve_precision("half", "cpu")


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(runtime.ENV_CPU_BF16, raising=False)
    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    # AVX-512 without avx512_bf16: oneDNN emulates bf16 (slower than fp32), so not native
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))
    assert not runtime.cpu_has_native_bf16()
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert runtime.cpu_has_native_bf16()
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert runtime.cpu_has_native_bf16()
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"asimd", "bf16"}))
    assert runtime.cpu_has_native_bf16()
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset())  # macOS, Windows: unknown -> fp32
    assert not runtime.cpu_has_native_bf16()


def test_compile_auto_only_for_long_runs(monkeypatch):
    monkeypatch.setattr(runtime, "_compiler_available", lambda: True)
    monkeypatch.setenv(runtime.ENV_COMPILE, "0")  # what the test suite runs with: auto never compiles
    assert runtime.resolve_compile("auto", "cpu", 10.0 ** 6) is False
    assert runtime.resolve_compile("true", "cpu") is True
    monkeypatch.delenv(runtime.ENV_COMPILE)
    assert runtime.resolve_compile("auto", "cpu") is None  # decided after timing eager steps
    assert runtime.resolve_compile("auto", "cpu", 20.0) is False
    assert runtime.resolve_compile("auto", "cpu", runtime.COMPILE_MIN_SECONDS) is True
    assert runtime.resolve_compile(True, "cpu") is True
    assert runtime.resolve_compile("false", "cpu") is False
    with pytest.raises(ConfigError, match="train.compile must be auto, true or false"):
        runtime.resolve_compile("sometimes", "cpu")
    monkeypatch.setattr(runtime, "_compiler_available", lambda: False)  # no C++ compiler for inductor
    assert runtime.resolve_compile("auto", "cpu") is False
    assert runtime.resolve_compile("auto", "cpu", 10.0 ** 6) is False


def test_step_compiler_times_eager_steps_then_decides(monkeypatch):
    monkeypatch.delenv(runtime.ENV_COMPILE, raising=False)
    monkeypatch.setattr(runtime, "_compiler_available", lambda: True)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    model = torch.nn.Linear(2, 2)
    # 1,000 steps of 0.1 s: 100 s left, not worth a compile
    short = runtime.StepCompiler(model, "auto", "cpu", planned_steps=1000)
    for _ in range(runtime.PROBE_STEPS + 1):
        assert short.current is model
        short.step_done(0.1)
    assert short.decision is False and short.current is model and not calls
    # 1,000 steps of 5 s (the first, a slow warm-up, not counted): compiled from the next step on
    long = runtime.StepCompiler(model, "auto", "cpu", planned_steps=1000)
    for i in range(runtime.PROBE_STEPS + 1):
        long.step_done(30.0 if i == 0 else 5.0)
    assert long.decision is True and isinstance(long.current, runtime.CompiledWithFallback) and calls == [{"dynamic": False}]
    # a time budget caps the estimate
    capped = runtime.StepCompiler(model, "auto", "cpu", planned_steps=1000, budget_seconds=60)
    for _ in range(runtime.PROBE_STEPS + 1):
        capped.step_done(5.0)
    assert capped.decision is False
    assert runtime.StepCompiler(model, "false", "cpu", 10 ** 6).decision is False


def test_unknown_precision_in_config_fails_before_a_run_dir_is_made(tmp_path):
    out = tmp_path / "run"
    res = run_cli(["train-classifier", "--model", "baseline", "--epochs", "1", "--out", str(out), *TINY_TRAIN_ARGS,
                   "--set", "train.precision=half"], expect=2)
    assert "train.precision must be one of" in res.output
    assert not (out / "checkpoints").exists()


# --- numerics ----------------------------------------------------------------------------------

def _faces(n: int = 6) -> torch.Tensor:
    from fermetric.data.synthetic import generate_synthfer

    return generate_synthfer(n, seed=3).images[:n].float().div(255.0)


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)]))


def test_bf16_saliency_and_gradcam_agree_with_fp32():
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=7, width=8).eval()
    x = _faces()
    maps = {}
    for prec in ("fp32", "bf16"):
        scorer = ClassifierScorer(model, precision=prec)
        maps[prec] = (gradient_saliency(scorer, x, target=0), gradcam(scorer, x, target=0),
                      gradient_saliency(scorer, x, target=0, smooth_samples=4))
    # a plain gradient is taken in fp32 whatever the scorer's precision (bf16 measured 0.87-0.96)
    np.testing.assert_array_equal(maps["bf16"][0], maps["fp32"][0])
    for f32, b16 in zip(maps["fp32"][1:], maps["bf16"][1:]):  # Grad-CAM, SmoothGrad in bf16
        assert b16.dtype == np.float32 and np.isfinite(b16).all()
        assert not np.array_equal(f32, b16)  # bf16 really ran
        assert _rank_corr(f32, b16) >= 0.95
    # the scores themselves come back fp32 under bf16 autocast
    assert ClassifierScorer(model, precision="bf16").scores(x).dtype == torch.float32


def test_losses_are_fp32_under_bf16_autocast():
    from fermetric.training.classifier import ClassifierObjective
    from fermetric.training.metric import MetricObjective

    cfg = load_config(overrides=["model.width=8", "metric.ce_weight=0.5"])
    x, y = torch.rand(14, 1, 48, 48), torch.arange(14) % 7
    g = torch.Generator().manual_seed(0)
    for obj in (ClassifierObjective(cfg), MetricObjective(cfg)):
        model = obj.build_model(7)
        with runtime.autocast("cpu", "bf16"):
            loss, _ = obj.training_step(model, x, y, g)
        assert loss.dtype == torch.float32, type(obj).__name__
        loss.backward()
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_bf16_run_loads_in_fp32_and_resumes_in_fp32(tmp_path):
    from fermetric.runs import load_run

    out = tmp_path / "run"
    run_cli(["train-classifier", "--model", "baseline", "--epochs", "1", "--out", str(out), *TINY_TRAIN_ARGS,
             "--precision", "bf16"])
    text = (out / "config.yaml").read_text()
    # a tiny run stays eager under compile=auto too; the comment records what ran
    assert text.startswith("# resolved on this machine: precision bf16, compile False")
    assert yaml.safe_load(text)["train"]["precision"] == "bf16"
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["runtime"]["precision"] == "bf16"
    assert json.loads((out / "metrics.json").read_text())["runtime"] == ckpt["runtime"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["state_dict"].values())
    run = load_run(out, device="cpu", precision="fp32")
    probs = split_proba(run, "val")
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # the same run evaluated in bf16 agrees with fp32 on (nearly) every prediction
    probs_bf16 = split_proba(load_run(out, device="cpu", precision="bf16"), "val")
    assert (probs_bf16.argmax(1) == probs.argmax(1)).mean() >= 0.9
    # resume the bf16 run in fp32 (e.g. on a machine without bf16)
    run_cli(["train-classifier", "--model", "baseline", "--epochs", "2", "--out", str(out), "--resume",
             "--precision", "fp32"])
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["runtime"]["precision"] == "fp32"
    assert (out / "config.yaml").read_text().startswith("# resolved on this machine: precision fp32")
    assert np.isfinite([h["train_loss"] for h in ckpt["history"]]).all()


# --- compile fallback --------------------------------------------------------------------------

def _broken_compile(fn, **_kwargs):
    def compiled(*_a, **_k):
        raise RuntimeError("inductor: C++ compile failed (simulated)")

    return compiled


def test_compile_failure_warns_once_and_runs_eager(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", _broken_compile)
    model = torch.nn.Linear(3, 2)
    wrapped = runtime.CompiledWithFallback(model, "test model")
    x = torch.rand(4, 3)
    with caplog.at_level(logging.WARNING, logger="fermetric.runtime"):
        for _ in range(3):
            assert torch.equal(wrapped(x), model(x))
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "simulated" in warnings[0].getMessage()
    # an error eager execution raises too is the caller's, and propagates
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied|mat1 and mat2"):
        wrapped(torch.rand(4, 5))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_training_with_a_failing_compile_falls_back_and_trains(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", _broken_compile)
    out = tmp_path / "run"
    records = _Records()  # the CLI resets the root logger's handlers (caplog's too)
    logger = logging.getLogger("fermetric.runtime")
    logger.addHandler(records)
    try:
        run_cli(["train-classifier", "--model", "baseline", "--epochs", "1", "--out", str(out), *TINY_TRAIN_ARGS,
                 "--compile", "true", "--precision", "fp32"])
    finally:
        logger.removeHandler(records)
    assert sum("torch.compile failed" in m for m in records.messages) == 1
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["runtime"]["compile"] is True
    assert np.isfinite(ckpt["history"][0]["train_loss"])


def test_scorer_compiles_after_enough_images_and_recompiles_when_weights_change(monkeypatch):
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append(fn)
        return fn  # runs the (fresh copy of the) forward eagerly

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(runtime, "COMPILE_INFERENCE_AFTER_SECONDS", 1e-9)
    monkeypatch.delenv(runtime.ENV_COMPILE, raising=False)
    monkeypatch.setattr(runtime, "_compiler_available", lambda: True)
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=7, width=8).eval()
    scorer = ClassifierScorer(model, batch_size=16, precision="fp32")
    x = torch.rand(30, 1, 48, 48)
    eager = ClassifierScorer(model, batch_size=16, precision="fp32")
    eager.compile = False
    assert torch.allclose(scorer.scores(x), eager.scores(x))  # no eager time spent yet: eager
    assert not compiled
    s = scorer.scores(x)  # eager time spent: compiled from here, the last batch padded to 16
    assert len(compiled) == 1 and torch.allclose(s, eager.scores(x), atol=1e-6)
    scorer.scores(x)
    assert len(compiled) == 1  # same weights, same batch size: the compiled forward is reused
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)  # an in-place weight change (an optimiser step)
    for _ in range(2):  # eager once with the new weights, then compiled again
        s = scorer.scores(x)
    assert len(compiled) == 2 and torch.allclose(s, eager.scores(x), atol=1e-6)
    # every compile gets a code object of its own: torch.compile never shares a frozen graph
    assert compiled[0].__code__ is not compiled[1].__code__
    other = scorer.with_model(create_model("baseline", num_classes=7, width=8).eval())
    assert "_compiled" not in other.__dict__
    scorer.compile = False
    scorer.scores(x)
    assert len(compiled) == 2
