"""Reading what a run directory (and any extra output folder) holds, without loading a model.

The report is rebuilt from files only (DESIGN.md, run directories): config.yaml, history.csv,
metrics.json, eval/<split>.json, knn_<split>/knn_report.json, ensemble_<split>.json,
explain_eval.json and every PNG under figures/, eval/, knn_*/ and explain*/. Missing pieces are
simply absent from the summary; a file that exists but cannot be parsed raises a DataError
naming it, because a report that silently drops a broken result would mislead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from fermetric.errors import DataError
import fermetric.run_layout as layout

__all__ = [
    "Figure",
    "RunSummary",
    "ExtraSummary",
    "collect_run",
    "collect_extra",
    "read_json_file",
    "FIGURE_FOLDERS",
]

# Folders of a run directory whose PNGs the report shows, in the order it shows them.
FIGURE_FOLDERS = ("figures", "eval", "knn_*", "explain*")


@dataclass
class Figure:
    """A PNG found on disk (or rendered in memory) and the section it belongs to."""

    title: str
    section: str
    path: Optional[Path] = None
    data: Optional[bytes] = None

    def png_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class OutputFolder:
    """What the report reads from one folder: its explanation tables and figures."""

    path: Path
    explain_eval: list[tuple[Path, Any]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)


@dataclass
class RunSummary(OutputFolder):
    """Everything the report shows about one run directory.

    Attributes:
        path: the run directory.
        config_text: config.yaml as written ("" when absent).
        config: config.yaml parsed (empty when absent).
        metrics: metrics.json (empty when absent).
        history: history.csv rows (numbers parsed).
        evals: {name: metrics dict} from eval/<name>.json (e.g. "test", "val_tta").
        knn: {split: report dict} from knn_<split>/knn_report.json.
        explain_eval: explain_eval.json tables found inside the run directory.
        figures: PNGs by section ("curves", "confusion", "knn", "embeddings", "explain", "other").
    """

    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    knn: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.metrics.get("kind") or _kind_from_config(self.config) or "unknown")

    @property
    def model_name(self) -> str:
        return str(self.metrics.get("model") or self.config.get("model", {}).get("name") or "?")

    @property
    def class_names(self) -> list[str]:
        for m in (self.metrics.get("val"), self.metrics.get("test"), *self.evals.values(), *self.knn.values()):
            if isinstance(m, dict) and m.get("class_names"):
                return [str(c) for c in m["class_names"]]
        return []

    def split_metrics(self) -> dict[str, dict[str, Any]]:
        """{label: classification metrics}: metrics.json's val/test, then eval/*.json (an eval
        file of a split metrics.json already has is shown too: it may use TTA or another data)."""
        out: dict[str, dict[str, Any]] = {}
        for split in ("val", "test"):
            m = self.metrics.get(split)
            if isinstance(m, dict) and "accuracy" in m:
                out[f"{split} (best epoch)"] = m
        for name, m in sorted(self.evals.items()):
            out[f"eval/{name}"] = m
        return out

    def figures_in(self, section: str) -> list[Figure]:
        return [f for f in self.figures if f.section == section]


@dataclass
class ExtraSummary(OutputFolder):
    """An extra output folder (--extra): ensemble results, explanation tables and figures."""

    ensembles: dict[str, dict[str, Any]] = field(default_factory=dict)


def _kind_from_config(cfg: dict[str, Any]) -> str:
    # metrics.json carries the kind; older or hand-made runs may only say it in the config
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    return str(kind) if kind else ""


def read_json_file(path: Path) -> Any:
    """json.load with a DataError naming the file and the position of a syntax error."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc


def _read_history(path: Path) -> list[dict[str, Any]]:
    from fermetric.runs.history import read_history

    try:
        return read_history(path)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read history CSV ({exc})") from exc


def _section_of(rel: Path) -> str:
    top = rel.parts[0]
    stem = rel.stem.lower()
    if top.startswith("explain"):
        return "explain"
    if top.startswith("knn_"):
        return "knn"
    if "curve" in stem:
        return "curves"
    if "confusion" in stem:
        return "confusion"
    if stem.startswith("embed") or "umap" in stem or "tsne" in stem or "pca" in stem:
        return "embeddings"
    return "other"


def _title_of(rel: Path) -> str:
    return str(rel.with_suffix("")).replace("\\", "/")


def _pngs_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png" and p.is_file())


def collect_run(path: str | Path) -> RunSummary:
    """Summarise a run directory from its files.

    Raises:
        DataError: the directory does not exist, holds none of config.yaml / metrics.json /
            history.csv, or one of its files cannot be parsed.
    """
    path = Path(path)
    if not path.is_dir():
        from fermetric.zoo import is_pretrained_name

        if is_pretrained_name(str(path)):
            return collect_pretrained(str(path))
        raise DataError(f"run directory {path} does not exist (nor is {str(path)!r} a pretrained model's name: "
                        "fermetric models --pretrained lists them)")
    cfg_p, met_p, hist_p = layout.config_path(path), layout.path_of(path, layout.METRICS), layout.path_of(path, layout.HISTORY)
    if not (cfg_p.is_file() or met_p.is_file() or hist_p.is_file()):
        raise DataError(
            f"{path} is not a fermetric run directory: it has none of config.yaml, metrics.json, history.csv"
        )
    s = RunSummary(path=path)
    if cfg_p.is_file():
        s.config_text = cfg_p.read_text(encoding="utf-8", errors="replace")
        try:
            parsed = yaml.safe_load(s.config_text)
        except yaml.YAMLError as exc:
            raise DataError(f"{cfg_p}: not valid YAML ({exc})") from exc
        s.config = parsed if isinstance(parsed, dict) else {}
    if met_p.is_file():
        m = read_json_file(met_p)
        if not isinstance(m, dict):
            raise DataError(f"{met_p}: expected a JSON object, got {type(m).__name__}")
        s.metrics = m
    s.history = _read_history(hist_p)
    return _read_outputs(s)


def _read_outputs(s: RunSummary) -> RunSummary:
    """What commands wrote into the run folder `s.path`: eval/, knn_*/, figures and explanations."""
    path = s.path
    eval_dir = path / "eval"
    if eval_dir.is_dir():
        for p in sorted(eval_dir.glob("*.json")):
            m = read_json_file(p)
            if isinstance(m, dict) and "accuracy" in m:
                s.evals[p.stem] = m
    for d in sorted(path.glob("knn_*")):
        p = d / "knn_report.json"
        if p.is_file():
            s.knn[d.name[len("knn_"):]] = read_json_file(p)
    seen: set[Path] = set()
    for pattern in FIGURE_FOLDERS:
        for folder in sorted(path.glob(pattern)):
            if not folder.is_dir():
                continue
            for png in _pngs_under(folder):
                if png in seen:
                    continue
                seen.add(png)
                rel = png.relative_to(path)
                s.figures.append(Figure(title=_title_of(rel), section=_section_of(rel), path=png))
    s.explain_eval = _find_explain_eval(path, recursive_in=[d for d in path.glob("explain*") if d.is_dir()])
    return s


def collect_pretrained(name: str) -> RunSummary:
    """Summarise a zoo entry: its card (numbers measured at export on PublicTest) and what commands
    wrote into its cache folder (evaluate, explain, knn-eval outputs), so a report takes a zoo
    name as it takes a run directory.

    Raises:
        ZooError: the entry is incomplete or its weights (an ensemble: its members') do not match.
    """
    from fermetric.zoo import get_entry, zoo_run_dir
    from fermetric.zoo.registry import card_markdown, check_card

    entry = get_entry(name)
    check_card(entry)
    entry.verify()  # a report must not show the card of weights that are not the card's
    cache = zoo_run_dir(name)
    s = _read_outputs(RunSummary(path=cache)) if cache.is_dir() else RunSummary(path=cache)
    card = entry.card
    t = card.get("test") or {}
    split = "val" if str(card.get("split", "")).endswith("PublicTest") else "test"
    s.metrics = {"kind": card.get("kind"), "model": card.get("model"), "data": card.get("data"),
                 "train_seconds": 60.0 * float(card.get("train_minutes") or 0) or None,
                 "epochs_run": card.get("epochs"), "notes": [f"pretrained model {name}: numbers from its card",
                                                            *card.get("notes", [])],
                 split: {"n": t.get("n"), "accuracy": t.get("accuracy"), "macro_f1": t.get("macro_f1"),
                         "class_names": card.get("class_names"),
                         "per_class": {c: {"f1": f} for c, f in (t.get("per_class_f1") or {}).items()}}}
    s.config_text = card_markdown(card)
    s.config = {}
    return s


def _find_explain_eval(root: Path, recursive_in: list[Path]) -> list[tuple[Path, Any]]:
    found: list[Path] = []
    if (root / "explain_eval.json").is_file():
        found.append(root / "explain_eval.json")
    for d in recursive_in:
        found += sorted(d.rglob("explain_eval.json"))
    out, seen = [], set()
    for p in found:
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        out.append((p, read_json_file(p)))
    return out


def collect_extra(path: str | Path) -> ExtraSummary:
    """Summarise an extra output folder: ensemble_*.json, explain_eval.json (anywhere below)
    and every PNG below it. A path to one JSON file is read as that file alone.

    Raises:
        DataError: the path does not exist or a JSON file in it cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"extra folder {path} does not exist")
    e = ExtraSummary(path=path)
    if path.is_file():
        data = read_json_file(path)
        if path.name.startswith("ensemble_"):
            e.ensembles[path.stem] = data
        else:
            e.explain_eval.append((path, data))
        return e
    for p in sorted(path.rglob("ensemble_*.json")):
        data = read_json_file(p)
        if isinstance(data, dict) and "members" in data:
            e.ensembles[str(p.relative_to(path).with_suffix(""))] = data
    e.explain_eval = _find_explain_eval(path, recursive_in=[path])
    for png in _pngs_under(path):
        rel = png.relative_to(path)
        section = "explain" if any(part.startswith("explain") for part in rel.parts) else _section_of(rel)
        e.figures.append(Figure(title=_title_of(rel), section=section, path=png))
    return e
