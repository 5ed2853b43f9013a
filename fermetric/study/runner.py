"""`run_study`: train the study's models (skipping finished runs, resuming interrupted ones),
evaluate each on val and test, vote the ensemble, explain, and write the figures, the results
tables and one HTML report.

Layout of a study directory:

    OUT/runs/<model>-seed<k>/     one run directory per model and seed (train-* layout)
    OUT/ensemble/                 ensemble_<split>.json / .md per seed
    OUT/figures/                  confusion grid, explanation rows, LIME, filters (PNG)
    OUT/explain_eval/             faithfulness table (explain_eval.json / .md)
    OUT/results.csv, results.md   every run's numbers (mean ± std when several seeds)
    OUT/report.html               everything above in one page

A run is reused when it finished (metrics.json written after its history.csv's last epoch) and
its config.yaml is the one the study resolves now (how it computes aside: threads, precision,
compile, device, eval batch size). A run with checkpoints but no metrics.json was interrupted:
it is resumed (the trainer's --resume, which refuses other settings). A finished run with another
config is never overwritten: the study stops and names the keys that differ.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fermetric.config import RunConfig, apply_overrides, check_config, config_to_dict, load_config, load_run_config
from fermetric.errors import ConfigError, FermetricError
from fermetric.study.config import StudyConfig, load_study, run_dir_of
from fermetric.utils.outputs import output_dir
import fermetric.run_layout as layout

log = logging.getLogger("fermetric.study")

# Keys that say how a run computed, not what it learnt: a finished run is reused whatever they are.
RUNTIME_KEYS = ("train.threads", "train.precision", "train.compile", "train.eval_batch_size", "device")


@dataclass
class ModelRun:
    """One trained model of a study (one seed)."""

    name: str
    family: str
    seed: int
    path: Path
    status: str = ""  # "trained", "resumed", "reused"
    seconds: float = 0.0  # wall time spent on it in this call


@dataclass
class StudyResult:
    out: Path
    runs: list[ModelRun] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)


def resolve_model_config(study: StudyConfig, name: str, seed: int, data: Optional[str] = None,
                         device: Optional[str] = None) -> RunConfig:
    """The run config of one model of the study, as `train-<family>` would resolve it: the
    family's defaults <- the model's config file <- the study's `set` <- the model's `set` <-
    data, seed and device; data paths absolute."""
    from fermetric.data.sources import is_synth
    from fermetric.training.families import FAMILY_DEFAULTS

    entry = study.models[name]
    path = None
    if entry.config:
        path = Path(entry.config)
        if not path.is_absolute():
            path = Path(study.base_dir) / path
    try:
        cfg = load_config(path, tuple(study.set) + tuple(entry.set),
                          base=apply_overrides({}, FAMILY_DEFAULTS[entry.family]), check=False)
    except ConfigError as exc:
        raise ConfigError(f"study model {name!r}: {exc}") from None
    source = data if data is not None else study.data
    cfg.data.source = source if is_synth(source) else str(Path(source).expanduser().absolute())
    if cfg.data.ferplus:
        cfg.data.ferplus = str(Path(cfg.data.ferplus).expanduser().absolute())
    cfg.seed = int(seed)
    if device is not None:
        cfg.device = str(device)
    try:
        return check_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"study model {name!r}: {exc}") from None


def config_differences(have: RunConfig, want: RunConfig, ignore: Sequence[str] = RUNTIME_KEYS,
                       family: Optional[str] = None) -> list[str]:
    """'key: run value != study value' for every key that differs (except `ignore`), compared as
    --resume compares them (fermetric.training.resume.differing_keys: for a classifier not the
    metric.* section, which it never reads, so a default changed there by a newer fermetric does
    not make a finished classifier look like another run)."""
    from fermetric.training.resume import differing_keys

    return [f"{k}: {a!r} in the run, {b!r} in the study" for k, a, b in differing_keys(have, want, family, ignore)]


def run_state(run_dir: Path, cfg: RunConfig, family: Optional[str] = None) -> str:
    """"new" (nothing to keep), "finished" (reuse), or "interrupted" (resume).

    Raises:
        FermetricError: the directory holds a run with another config (finished or not): the
            study never overwrites it.
    """
    from fermetric.runs.history import read_history
    from fermetric.utils.io import read_json

    cfg_path, metrics_path = layout.config_path(run_dir), layout.path_of(run_dir, layout.METRICS)
    last = layout.checkpoint_path(run_dir, layout.LAST)
    if not last.is_file():
        return "new"  # nothing trained to keep (a run that failed before its first checkpoint)
    if not cfg_path.is_file():
        raise FermetricError(f"{run_dir} holds checkpoints but no config.yaml; move it away or choose another --out")
    diffs = config_differences(load_run_config(cfg_path), cfg, family=family)
    if metrics_path.is_file():
        metrics = read_json(metrics_path)
        history = read_history(layout.path_of(run_dir, layout.HISTORY))
        finished = isinstance(metrics, dict) and metrics.get("epochs_run") == len(history) and len(history) > 0
        if finished:
            if diffs:
                raise FermetricError(
                    f"{run_dir} holds a finished run with another configuration ({'; '.join(diffs)}). "
                    "The study does not overwrite it: move it away, or give the study another --out")
            return "finished"
    # interrupted: --resume checks what may change (train.epochs, optim.lr, ...) and refuses the rest
    return "interrupted"


class _DataCache:
    """Loaded data sets, shared by the models that read the same data (FER2013 is read once)."""

    def __init__(self):
        self._cache: dict[str, Any] = {}

    def get(self, cfg: RunConfig):
        import json

        from fermetric.data.sources import is_synth, load_data

        d = config_to_dict(cfg.data)
        d.pop("augment", None)
        d.pop("ferplus_mode", None)
        key = json.dumps([d, cfg.seed if is_synth(cfg.data.source) else None], sort_keys=True)
        if key not in self._cache:
            self._cache[key] = load_data(None, cfg.data, seed=cfg.seed)
        return self._cache[key]


def train_model(study: StudyConfig, name: str, seed: int, out: Path, data_cache: _DataCache,
                data: Optional[str] = None, device: Optional[str] = None, quiet: bool = True) -> ModelRun:
    """Train (or reuse, or resume) one model of the study."""
    from fermetric.training.families import objective_for
    from fermetric.training.resume import resume_config
    from fermetric.training.trainer import Trainer

    entry = study.models[name]
    cfg = resolve_model_config(study, name, seed, data, device)
    run_dir = run_dir_of(out, name, seed)
    state = run_state(run_dir, cfg, entry.family)
    mr = ModelRun(name, entry.family, seed, run_dir)
    t0 = time.time()
    if state == "finished":
        mr.status = "reused"
        log.info("%s (seed %d): finished run %s reused", name, seed, run_dir)
        return mr
    changes: dict = {}
    if state == "interrupted":
        cfg, changes = resume_config(load_run_config(layout.config_path(run_dir)), cfg, run_dir, entry.family)
        log.info("%s (seed %d): resuming the interrupted run %s", name, seed, run_dir)
    else:
        log.info("%s (seed %d): training %s (%s) into %s", name, seed, cfg.model.name, entry.family, run_dir)
    splits = data_cache.get(cfg)
    Trainer(cfg, objective_for(entry.family, cfg), splits, run_dir, resume=state == "interrupted", quiet=quiet,
            changes=changes, command=["fermetric", "study", study.name, name]).fit()
    mr.status = "resumed" if state == "interrupted" else "trained"
    mr.seconds = time.time() - t0
    return mr


def _finished_seeds(study: StudyConfig, name: str, out: Path, data: Optional[str], device: Optional[str]) -> list[int]:
    """Seeds of `name` with a finished run of this study's config in OUT/runs (earlier calls
    with other --seed values count: their runs join the mean ± std)."""
    seeds = []
    for d in sorted((out / "runs").glob(f"{name}-seed*")):
        tail = d.name[len(name) + len("-seed"):]
        if not tail.isdigit():
            continue
        try:
            if run_state(d, resolve_model_config(study, name, int(tail), data, device),
                         study.models[name].family) == "finished":
                seeds.append(int(tail))
        except FermetricError:
            continue  # another configuration: not this study's
    return seeds


def run_study(
    config: str | Path | StudyConfig | None = None,
    *,
    data: Optional[str] = None,
    out: Optional[str | Path] = None,
    seeds: Optional[Sequence[int]] = None,
    only: Optional[Sequence[str]] = None,
    skip: Optional[Sequence[str]] = None,
    tta: Optional[bool | str] = None,
    device: Optional[str] = None,
    explain: bool = True,
    quiet: bool = True,
    echo: Optional[Callable[[str], None]] = None,
) -> StudyResult:
    """Run a whole study: train, evaluate, ensemble, explain, tabulate, report.

    Args:
        config: a study file (configs/study/*.yaml), a StudyConfig, or None for DEFAULT_STUDY.
        data: the data source for every model (default: the study's `data`).
        out: the study directory (default: studies/<name>).
        seeds: seeds to train (default: the study's `seeds`); finished runs of other seeds in
            OUT are reported too, so a second call with another seed adds mean ± std.
        only, skip: model names to train (the others' finished runs are still reported).
        tta: also evaluate classifiers with TTA: "shift" or "tencrop" (default: the study's).
        device: the device of every model (default: each config's, "auto").
        explain: make the explanation figures and the faithfulness table.
        quiet: no progress bars while training.
        echo: called with one line per step (the CLI prints them).

    Returns:
        StudyResult with the runs, the results rows and the paths written.

    Raises:
        ConfigError / FermetricError: a bad study file, an unknown model in only / skip, a
            run directory holding a run of another configuration.
    """
    from fermetric.scoring.tta import resolve_tta

    say = echo or (lambda s: log.info("%s", s))
    study = config if isinstance(config, StudyConfig) else load_study(config)
    out = Path(out) if out is not None else Path("studies") / study.name
    seeds = [int(s) for s in (seeds or study.seeds)]
    for label, names in (("--only", only), ("--skip", skip)):
        bad = [n for n in names or () if n not in study.models]
        if bad:
            raise ConfigError(f"{label} names {', '.join(bad)}, not a model of the study; models: {', '.join(study.models)}")
    tta_mode = resolve_tta(study.tta if tta is None else tta)
    chosen = [n for n, e in study.models.items() if not e.skip and (not only or n in only) and n not in (skip or ())]
    # every model config is resolved (and checked) before anything trains: a typo in the last
    # model's overrides must not surface after an hour of training the first
    for n in study.models:
        for s in seeds if not study.models[n].pretrained else ():
            resolve_model_config(study, n, s, data, device)
    result = StudyResult(out=out)
    # a study folder of an earlier version is recognised by its runs/ or results table
    output_dir(out, "study", legacy=("runs", "results.csv", "report.html"))
    cache = _DataCache()
    t_all = time.time()
    for seed in seeds:
        for name in chosen:
            if study.models[name].pretrained:  # a zoo entry: nothing to train
                continue
            t = time.time()
            say(f"== {name} (seed {seed})")
            mr = train_model(study, name, seed, out, cache, data, device, quiet)
            say(f"   {mr.status}: {mr.path} ({time.time() - t:.0f} s)")
            result.runs.append(mr)
            result.steps.append((f"{mr.status} {name} seed {seed}", time.time() - t))
    from fermetric.study.outputs import write_outputs

    write_outputs(study, result, seeds, data, device, tta_mode, explain, say,
                  finished_seeds=lambda n: _finished_seeds(study, n, out, data, device))
    result.steps.append(("study", time.time() - t_all))
    return result
