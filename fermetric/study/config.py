"""The study file (configs/study/*.yaml): which models a study trains, on what, and what it
explains. Read into dataclasses with unknown keys refused, like run configs (fermetric.config).

    name: synth
    data: synth                  # default --data
    seeds: [0]                   # --seed replaces them
    set: [model.width=16]        # overrides for every model (run-config keys)
    tta: tencrop                 # also evaluate classifiers with TTA: false, shift, tencrop
    models:                      # in training order; the name is the run directory's
      baseline: {family: classifier, config: ../classifier/baseline.yaml, set: [train.epochs=3]}
      triplet:  {family: triplet, set: [model.name=baseline]}
      resnet18: {pretrained: fer2013-resnet18}   # a zoo entry: evaluated and explained, never trained
    ensemble: [baseline]         # default: every classifier
    explain: {split: val, methods: [saliency, occlusion, gradcam, lime], filters: {model: baseline}}

`config` paths are relative to the study file. A model's config is resolved as `train-<family>`
resolves it: the family's defaults, then `config`, then the study's `set`, then the model's `set`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from fermetric.config import _from_dict, check_config, choice, num, read_yaml
from fermetric.errors import ConfigError
from fermetric.utils.checks import check_path_name

FAMILIES = ("classifier", "siamese", "triplet")
# the family a pretrained model stands in the study for, by its zoo kind (an embedding model is
# tabulated with the metric families; an ensemble entry is a row of its own)
PRETRAINED_FAMILY = {"classifier": "classifier", "embedding": "triplet", "ensemble": "ensemble"}


@dataclass
class ModelEntry:
    """One model of a study: trained by the study, or a pretrained zoo entry (`pretrained`)."""

    family: str = choice("classifier", "siamese", "triplet", "ensemble")
    config: Optional[str] = None  # a run-config YAML (relative to the study file)
    set: list = field(default_factory=list)  # run-config overrides, section.key=value
    skip: bool = False  # left out (its finished runs are still reported)
    # a zoo entry's name (fermetric models --pretrained): evaluated and explained on the study's
    # data as shipped, never trained; its family comes from the entry's kind
    pretrained: Optional[str] = None


@dataclass
class FiltersSpec:
    """Figure (d): filters of one layer by gradient ascent, and its outputs per emotion."""

    model: Optional[str] = None  # default: the first classifier
    layer: Optional[str] = None  # default: the model's Grad-CAM layer
    channels: int = num(16, 1, 512)
    steps: int = num(60, 1, 10000)


@dataclass
class ExplainSpec:
    split: str = choice("val", "test")
    methods: list = field(default_factory=lambda: ["saliency", "occlusion", "gradcam", "lime"])
    models: Optional[list] = None  # models whose figures are made (default: every model); the faithfulness table has all
    mask_fraction: float = num(0.1, 0, 1, lo_open=True)  # the mask column: this share of top pixels
    lime_samples: int = num(300, 10, 100000)
    faithfulness: bool = True  # deletion / insertion, and mask mass / pointing game where the data has masks
    faithfulness_per_class: int = num(2, 1, 1000)
    neighbours: bool = True  # embedding models: the nearest training faces of each explained face
    filters: FiltersSpec = field(default_factory=FiltersSpec)


@dataclass
class RetrievalSpec:
    """What a study adds from each trained run's embeddings (pre-logit features of classifiers):
    the kNN report (knn-eval) and the 2-D map (embed-plot), on `split`."""

    knn: bool = False
    embed_plot: bool = False
    split: str = choice("val", "test")


@dataclass
class StudyConfig:
    name: str = "study"
    data: str = "synth"
    seeds: list = field(default_factory=lambda: [0])
    set: list = field(default_factory=list)
    tta: Union[bool, str] = False  # false, shift (or true), tencrop
    models: dict = field(default_factory=dict)  # name -> ModelEntry
    ensemble: Optional[list] = None  # model names; default: every classifier
    explain: ExplainSpec = field(default_factory=ExplainSpec)
    retrieval: RetrievalSpec = field(default_factory=RetrievalSpec)
    base_dir: str = "."  # where relative `config` paths start (the study file's folder)


# The built-in study (`fermetric study` without --config); configs/study/synth.yaml is this, written
# out as a template to edit (tests check that both resolve to the same runs). Sized so that every
# model learns on SynthFER within ~20 minutes on 2 CPU cores (measured: README): every model at
# width 16, 15 epochs (20 for the slower-learning resnet50 / senet50), batches of 64, AdamW 3e-3.
DEFAULT_STUDY: dict[str, Any] = {
    "name": "default",
    "data": "synth",
    "set": ["data.synth_train=2000", "data.synth_val=350", "data.synth_test=350", "train.eval_batch_size=256",
            "optim.name=adamw", "optim.weight_decay=0.0005", "schedule.warmup_epochs=0"],
    "models": {
        "baseline": {"family": "classifier", "set": ["model.name=baseline", "model.width=16", "train.epochs=15",
                                                    "train.batch_size=64", "optim.lr=0.003"]},
        # the deep backbones at width 16 (~1/16 of the FLOPs): at full width and 3 epochs they
        # stayed at the majority share; the bottleneck nets learn slower, so 20 epochs
        **{name: {"family": "classifier", "set": [f"model.name={name}", *stem, "model.width=16", f"train.epochs={epochs}",
                                                  "train.batch_size=64", "optim.lr=0.003"]}
           for name, stem, epochs in (("resnet18", ["model.stem=pool"], 15), ("vgg16", [], 15),
                                      ("resnet50", ["model.stem=pool"], 20), ("senet50", ["model.stem=pool"], 20))},
        # the metric families' own defaults (metric loss jointly with cross-entropy, AdamW 3e-3)
        "triplet": {"family": "triplet", "set": ["model.name=baseline", "model.width=16", "train.epochs=15",
                                                 "train.batch_size=64"]},
        "siamese": {"family": "siamese", "set": ["model.name=baseline", "model.width=16", "train.epochs=15",
                                                 "train.batch_size=64"]},
    },
    "explain": {"lime_samples": 150},
}


# `fermetric demo`: a baseline classifier and a triplet model on SynthFER, evaluated (with TTA),
# searched by kNN, mapped by UMAP, explained, voted and reported, sized for ~3 minutes on 2 CPU
# cores (README: Benchmarks). The CLI adds --epochs, --model and --set to `set`.
DEMO_EPOCHS = 5
DEMO_STUDY: dict[str, Any] = {
    "name": "demo",
    "data": "synth",
    "set": ["data.synth_train=3000", "data.synth_val=700", "data.synth_test=700", "model.width=16",
            "train.eval_batch_size=256", "optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.0005"],
    "tta": "shift",
    "models": {
        "classifier": {"family": "classifier", "set": ["train.batch_size=64"]},
        # train-triplet's own defaults (triplet loss jointly with cross-entropy on a linear head,
        # batches with the data's class priors): what a user gets
        "triplet": {"family": "triplet"},
    },
    "ensemble": ["classifier", "triplet"],
    "explain": {"split": "val", "lime_samples": 200, "faithfulness_per_class": 1, "filters": {"model": "classifier"}},
    "retrieval": {"knn": True, "embed_plot": True, "split": "val"},
}


def _entry(name: str, value: Any, where: str) -> ModelEntry:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}models.{name}: expected a mapping (family, config, set, skip); got {value!r}")
    entry = _from_dict(ModelEntry, value, f"models.{name}")
    if not isinstance(entry.set, list) or not all(isinstance(s, str) for s in entry.set):
        raise ConfigError(f"{where}models.{name}.set: expected a list of section.key=value strings; got {entry.set!r}")
    try:
        check_config(entry)
    except ConfigError as exc:
        raise ConfigError(f"{where}models.{name}.{exc}") from None
    if entry.pretrained is not None:
        from fermetric.zoo import ZooError, get_entry

        if entry.config or entry.set or "family" in value:
            raise ConfigError(f"{where}models.{name}: a pretrained model is not trained, so it takes no family, config "
                              f"or set (its family comes from the zoo entry); got {sorted(k for k in value if k != 'pretrained')}")
        try:
            entry.family = PRETRAINED_FAMILY[get_entry(str(entry.pretrained)).kind]
        except ZooError as exc:
            raise ConfigError(f"{where}models.{name}.pretrained: {exc}") from None
    elif entry.family == "ensemble":
        raise ConfigError(f"{where}models.{name}: family ensemble is for pretrained ensembles "
                          "(pretrained: fer2013-ensemble); a study votes its own classifiers through `ensemble:`")
    return entry


def study_from_dict(data: dict[str, Any], base_dir: str | Path = ".", where: str = "") -> StudyConfig:
    """A checked StudyConfig from a parsed study file.

    Raises:
        ConfigError: unknown keys, bad values, no models, an ensemble or explain list naming a
            model the study does not have, an unknown explanation method.
    """
    from fermetric.analysis.methods import METHODS
    from fermetric.scoring.tta import resolve_tta

    data = dict(data or {})
    models = data.pop("models", None)
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{where}a study needs `models:`, a mapping of run names to {{family, config, set}}")
    try:
        cfg = _from_dict(StudyConfig, data)
        check_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    for k in models:
        if not isinstance(k, str):  # YAML reads `1:` or `true:` as a number or a bool
            raise ConfigError(f"{where}models: the model name {k!r} is not a string; quote it or choose a name")
        check_path_name(f"{where}models: the model name", k, example="resnet18")
    cfg.models = {k: _entry(k, v, where) for k, v in models.items()}
    cfg.base_dir = str(base_dir)
    check_path_name(f"{where}name: the study name", cfg.name, example="cpu_fer2013")  # default --out studies/<name>
    if not isinstance(cfg.seeds, list) or not cfg.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in cfg.seeds):
        raise ConfigError(f"{where}seeds: expected a list of integers in [0, 2**32); got {cfg.seeds!r}")
    if not all(isinstance(s, str) for s in cfg.set):
        raise ConfigError(f"{where}set: expected a list of section.key=value strings; got {cfg.set!r}")
    try:
        resolve_tta(cfg.tta)
    except ConfigError as exc:
        raise ConfigError(f"{where}tta: {exc}") from None
    for key, names in (("ensemble", cfg.ensemble), ("explain.models", cfg.explain.models),
                       ("explain.filters.model", None if cfg.explain.filters.model is None else [cfg.explain.filters.model])):
        bad = [n for n in names or () if n not in cfg.models]
        if bad:
            raise ConfigError(f"{where}{key} names {', '.join(map(str, bad))}, not a model of this study; "
                              f"models: {', '.join(cfg.models)}")
    bad = [m for m in cfg.explain.methods if m not in METHODS]
    if bad:
        raise ConfigError(f"{where}explain.methods: unknown method(s) {', '.join(map(str, bad))}; valid: {', '.join(METHODS)}")
    return cfg


def load_study(path: str | Path | None = None) -> StudyConfig:
    """The study file at `path`, or DEFAULT_STUDY when None."""
    if path is None:
        return study_from_dict(copy.deepcopy(DEFAULT_STUDY))
    path = Path(path)
    return study_from_dict(read_yaml(path), base_dir=path.resolve().parent, where=f"{path}: ")


def run_dir_of(out: Path, name: str, seed: int) -> Path:
    """Where a study writes the run of model `name` with `seed`: OUT/runs/<name>-seed<seed>."""
    return Path(out) / "runs" / f"{name}-seed{seed}"
