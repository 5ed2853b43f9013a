"""Every RUN argument takes a zoo name, and every message names an option that exists: each
command that takes a RUN is walked (click's own parameter list) and run on a zoo entry whose data
is not on this machine; the options its message tells the user to give must be its own
(issue 25: `similarity`, `ensemble`, `build-index` and `explain-eval` told users to pass --data,
which they did not have)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from fermetric.cli import main
from fermetric.cli.options import RunPath


def _run_commands() -> dict[str, object]:
    """Commands with a RUN argument (type RunPath), by name."""
    return {name: cmd for name, cmd in main.commands.items()
            if any(isinstance(p.type, RunPath) and p.param_type_name == "argument" for p in cmd.params)}


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", []) if o.startswith("--")}


def test_the_walk_finds_the_run_commands():
    names = set(_run_commands())
    assert {"evaluate", "calibrate", "ensemble", "explain", "filters", "explain-eval", "report", "build-index",
            "knn-eval", "similarity", "embed-plot"} <= names


@pytest.fixture(scope="module")
def zoo_without_data(tiny_zoo, tmp_path_factory) -> Path:
    """The tiny zoo, its entries trained (so their configs say) on a CSV that is not here."""
    from fermetric.zoo.registry import write_manifest

    root = tmp_path_factory.mktemp("nodata") / "zoo"
    shutil.copytree(tiny_zoo, root)
    for name in ("tiny-clf", "tiny-tri"):
        cfg = root / name / "config.yaml"
        text = cfg.read_text()
        assert "source: synth" in text or "source: null" in text, text[:400]
        cfg.write_text(re.sub(r"source: (synth|null)", "source: fer2013-not-here.csv", text, count=1))
        write_manifest(root / name)
    return root


def _hinted_options(message: str) -> list[tuple[str, str]]:
    """(option, the word before it) for every --option a message names."""
    return [(m.group(2), m.group(1) or "") for m in re.finditer(r"(?:(\b[a-z][a-z-]*) )?(--[a-z][a-z-]*)", message)]


@pytest.mark.parametrize("command", sorted(_run_commands()))
def test_every_hint_names_an_option_of_its_own_command(command: str, zoo_without_data: Path, tmp_path: Path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo_without_data))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    commands = _run_commands()
    cmd = commands[command]
    entry = "tiny-tri" if command in ("build-index", "knn-eval", "similarity", "embed-plot") else "tiny-clf"
    args = [command, entry]
    if command == "similarity":
        for name in ("a.png", "b.png"):
            Image.fromarray(np.full((48, 48), 100, np.uint8)).save(tmp_path / name)
        args += [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    if command in ("ensemble", "explain-eval", "report", "embed-plot", "export"):
        args += ["--out", str(tmp_path / ("out.html" if command == "report" else "out.png" if command == "embed-plot" else "out"))]
    from click.testing import CliRunner

    res = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    assert "Traceback" not in res.output
    if res.exit_code == 0:
        return  # a command that needs no data (report reads the card) has nothing to hint
    assert res.exit_code == 2, res.output
    assert "fer2013-not-here.csv" in res.output, res.output  # the missing data is named
    own = _options(cmd)
    for option, before in _hinted_options(res.output):
        if before in commands or before in main.commands:  # "evaluate --data": another command's option
            assert option in _options(main.commands[before]), f"{command}: {before} has no {option}: {res.output}"
        else:
            assert option in own, f"{command}: the message names {option}, which {command} does not have: {res.output}"
    assert "--data" in res.output


def test_data_option_opens_a_zoo_entry_on_this_machines_copy(zoo_without_data: Path, tmp_path: Path, monkeypatch):
    """What the hint says works: --data PATH gives the entry its data (SynthFER here)."""
    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo_without_data))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    out = run_cli(["similarity", "tiny-tri", "--data", "synth", "--json",
                   *[str(p) for p in _faces(tmp_path)]]).output
    assert 0.0 <= json.loads(out)["probability"] <= 1.0


def _faces(tmp: Path) -> list[Path]:
    from PIL import Image

    paths = []
    for i, level in enumerate((80, 170)):
        paths.append(tmp / f"face{i}.png")
        Image.fromarray(np.full((48, 48), level, np.uint8)).save(paths[-1])
    return paths
