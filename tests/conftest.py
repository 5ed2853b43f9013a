"""Shared fixtures. Tests use tiny models and SynthFER; real-data tests skip where ../shared is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests use tiny models, for which one intra-op thread is faster than two (and far faster than
# two competing with other processes on a 2-core machine).
torch.set_num_threads(1)
# precision "auto" resolves to fp32 in tests on every machine, so results (batched vs unbatched,
# resume equality) do not depend on whether the CI CPU has native bf16; tests of bf16 ask for it.
os.environ.setdefault("FERMETRIC_CPU_BF16", "0")
# compile "auto" never compiles in tests (a compile takes a minute); tests of compile ask for it
os.environ.setdefault("FERMETRIC_COMPILE", "0")
# scorers' backend "auto" stays on PyTorch in tests (numbers compared across tests are PyTorch's);
# tests/test_onnx_backend.py asks for ONNX Runtime by name
os.environ.setdefault("FERMETRIC_BACKEND", "torch")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FERMETRIC_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_sigint() -> None:
    """`preexec_fn` for the Ctrl-C tests' children: a process started from a background shell job
    (`cmd &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt, so the
    child would train on through the test's SIGINT. The default disposition is what a user's
    terminal gives."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: the project must not need it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set FERMETRIC_SHARED_DATA to point elsewhere)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fer2013_dev_csv(shared_data: Path) -> Path:
    p = shared_data / "fer2013" / "fer2013-dev.csv.gz"
    if not p.is_file():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="session")
def ferplus_csv(shared_data: Path) -> Path:
    p = shared_data / "ferplus" / "fer2013new.csv"
    if not p.is_file():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="session")
def folder_sample(shared_data: Path) -> Path:
    p = shared_data / "fer2013" / "folder-sample"
    if not p.is_dir():
        pytest.skip(f"{p} is absent")
    return p


# ---------------------------------------------------------------------------------------------
# Tiny trained runs on SynthFER, shared by every test that reads runs back (trained once a session).

TINY_TRAIN_ARGS = [
    "--set", "data.synth_train=280", "--set", "data.synth_val=70", "--set", "data.synth_test=70",
    "--set", "model.width=8", "--set", "train.batch_size=32", "--set", "train.eval_batch_size=128",
]


def run_cli(args, expect: int = 0):
    """Invoke the fermetric CLI in-process (quiet) and check its exit code."""
    from click.testing import CliRunner

    from fermetric.cli import main

    res = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "clf"
    run_cli(["train-classifier", "--model", "baseline", "--epochs", "2", "--out", str(out), *TINY_TRAIN_ARGS])
    return out


@pytest.fixture(scope="session")
def triplet_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tri"
    run_cli(["train-triplet", "--model", "baseline", "--epochs", "1", "--out", str(out), *TINY_TRAIN_ARGS,
             "--set", "metric.m_per_class=4"])
    return out


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, classifier_run, triplet_run) -> Path:
    """A zoo folder (for $FERMETRIC_ZOO or root=) with entries made from the tiny runs: tiny-clf
    (classifier) and tiny-tri (triplet embedding model with its gallery). Tests must not change it."""
    from fermetric.zoo import export_run

    root = tmp_path_factory.mktemp("zoo")
    common = dict(description="tiny test model", retrain="fermetric train-classifier ...", recipe="configs/test.yaml",
                  split="val", split_name="SynthFER val", data_name="SynthFER", root=root)
    export_run(classifier_run, "tiny-clf", **common)
    export_run(triplet_run, "tiny-tri", **common)
    return root


@pytest.fixture(scope="session")
def tiny_ensemble_zoo(tiny_zoo, tmp_path_factory) -> Path:
    """A copy of the tiny zoo with tiny-ens, the vote of tiny-clf (softmax + shift TTA, weight 2)
    and tiny-tri (kNN, weight 1). Tests must not change it."""
    import shutil

    from fermetric.zoo.export import export_ensemble

    root = tmp_path_factory.mktemp("ens-zoo") / "zoo"
    shutil.copytree(tiny_zoo, root)
    spec = root.parent / "spec.yaml"
    spec.write_text("description: tiny ensemble\nweights_rule: 2 to 1\nmembers:\n"
                    "  - {name: tiny-clf, scorer: classifier, tta: shift, weight: 2}\n"
                    "  - {name: tiny-tri, scorer: knn, weight: 1}\n")
    export_ensemble(spec, "tiny-ens", data="synth", retrain="python scripts/export_zoo.py --ensemble ...", root=root)
    return root


# ---------------------------------------------------------------------------------------------
# Helpers for tests that check runs are left intact, and that a run held by another process is refused.

def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to check that nothing was changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hold_run_lock(run_dir: Path):
    """A child process holding `run_dir`'s lock (fermetric.utils.runlock) until killed."""
    import subprocess
    import sys

    code = ("import sys, time\nfrom fermetric.utils.runlock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc
