"""Dataclass configs loaded from YAML, with unknown keys rejected and `--set a.b=c` overrides.

A run's whole configuration is one `RunConfig`. YAML files in `configs/` give sections to
override; anything not given keeps the dataclass default. The resolved config is written into
every run directory as `config.yaml`, so a run can be rebuilt from its folder.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from fermetric.errors import ConfigError


@dataclass
class AugmentConfig:
    """Batched, seeded tensor augmentation (applied to training batches only)."""

    enabled: bool = True
    crop_padding: int = 4  # random crop of 48x48 out of the image zero-padded by this many pixels
    hflip: float = 0.5  # probability of a horizontal flip
    rotation: float = 10.0  # max rotation in degrees (uniform in [-r, r])
    scale: float = 0.1  # max relative zoom (uniform in [1-s, 1+s])
    shift: float = 0.05  # max shift as a fraction of the image side
    erasing: float = 0.25  # probability of random erasing of one rectangle
    erasing_area: tuple[float, float] = (0.02, 0.15)


@dataclass
class DataConfig:
    source: str = "synth"  # "synth", a fer2013.csv(.gz), an image folder
    ferplus: Optional[str] = None  # fer2013new.csv: use FER+ majority labels instead of FER2013's
    class_map: Optional[dict[str, str]] = None  # generic folders: folder name -> class name
    val_fraction: float = 0.1  # carved out of train when the data has no val split
    skip_bad_rows: bool = False
    synth_train: int = 4000
    synth_val: int = 1000
    synth_test: int = 1000
    synth_difficulty: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    name: str = "baseline"
    stem: str = "small"  # ResNets/SENet: "small" 3x3 stride-1, no pool (6x6 last map); "pool" 3x3 + max-pool (~3.5x faster on CPU); "imagenet" 7x7/2 + max-pool
    width: int = 64  # baseline: channels of the first block
    dropout: float = 0.3
    weights: Optional[str] = None  # a state-dict file to start from
    pretrained: bool = False  # torchvision ImageNet weights (needs a download)
    embedding_dim: int = 128  # embedding models only


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # "cosine", "plateau" or "none"
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    plateau_patience: int = 3
    plateau_factor: float = 0.5


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 512
    label_smoothing: float = 0.0
    class_weights: bool = False  # weights inverse to class frequency (cs230's weighted cross-entropy)
    mixup_alpha: float = 0.0  # 0 disables mixup
    early_stopping_patience: int = 0  # epochs without val improvement before stopping; 0 disables
    grad_clip: float = 0.0  # 0 disables
    # auto | fp32 | bf16 | fp16. auto: bf16 autocast on CPUs with native bf16 (avx512_bf16 / amx_bf16),
    # fp16 AMP on CUDA (when amp is true), fp32 elsewhere; resolved again on each machine (resume too)
    precision: str = "auto"
    compile: Union[bool, str] = "auto"  # torch.compile the training step: auto (long runs only), true, false
    amp: bool = True  # CUDA: false keeps precision "auto" at fp32 (older configs)
    channels_last: bool = True  # NHWC weights and activations (CUDA and CPU: measured faster on both)
    max_steps_per_epoch: int = 0  # 0 = full epoch; a cap for smoke tests and budgets
    time_budget_minutes: float = 0.0  # stop after the epoch that crosses this; 0 = none
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default


@dataclass
class MetricConfig:
    """Embedding models (train-siamese, train-triplet)."""

    loss: str = "triplet"  # pytorch-metric-learning loss name, e.g. TripletMarginLoss, ContrastiveLoss, MultiSimilarityLoss
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    miner: Optional[str] = "all"  # "all", "semihard", "hard", "pairs", a pml miner name, or null
    miner_kwargs: dict[str, Any] = field(default_factory=dict)
    margin: float = 0.2
    m_per_class: int = 16  # MPerClassSampler: images per class in each batch (batch = m x classes)
    ce_weight: float = 0.0  # > 0 adds cross-entropy on a linear head (joint training)
    knn_k: int = 10
    knn_weighting: str = "distance"  # "majority" or "distance"


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert one YAML value to the field's declared type."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed; expected {getattr(tp, '__name__', tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return _from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys{(' of ' + where) if where else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], cls: type = RunConfig) -> Any:
    return _from_dict(cls, data or {})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def convert(v: Any) -> Any:
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(dataclasses.asdict(cfg))


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key; expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    data = dict(data)
    for text in overrides or ():
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a RunConfig: dataclass defaults <- `base` <- YAML file <- `--set` overrides.

    Raises:
        ConfigError: naming the file and the unknown key or bad value.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    from fermetric.utils.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
