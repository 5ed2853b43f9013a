"""Dataclass configs loaded from YAML, with unknown keys rejected and `--set a.b=c` overrides.

A run's whole configuration is one `RunConfig`. YAML files in `configs/` give sections to
override; anything not given keeps the dataclass default. The resolved config is written into
every run directory as `config.yaml`, so a run can be rebuilt from its folder.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from fermetric.errors import ConfigError


# ---------------------------------------------------------------------------------------------
# Declared ranges: every numeric field says which values make sense, and `check_config` refuses
# the others (naming key, value and range) before any work starts: a zero learning rate or a
# negative batch size would otherwise surface as a traceback deep in training, or as a run that
# "succeeds" with nonsense.

INF = math.inf


@dataclass(frozen=True)
class Range:
    """A closed or open interval for a numeric config value (each element of a tuple value)."""

    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def describe(self) -> str:
        def fmt(x: float) -> str:
            return str(int(x)) if x.is_integer() else f"{x:g}"

        if self.hi == INF:
            return f"{'>' if self.lo_open else '>='} {fmt(self.lo)}"
        return f"in {'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}{')' if self.hi_open else ']'}"


def num(default: Any, lo: float = -INF, hi: float = INF, *, lo_open: bool = False, hi_open: bool = False) -> Any:
    """A numeric dataclass field with its allowed range (checked by `check_config`)."""
    return field(default=default, metadata={"range": Range(float(lo), float(hi), lo_open, hi_open)})


def choice(default: str, *choices: str) -> Any:
    """A string field restricted to `choices` (checked by `check_config`)."""
    return field(default=default, metadata={"choices": (default, *[c for c in choices if c != default])})


PROBABILITY = dict(lo=0.0, hi=1.0)


@dataclass
class AugmentConfig:
    """Batched, seeded tensor augmentation (applied to training batches only)."""

    enabled: bool = True
    crop_padding: int = num(4, 0, 24)  # random crop of 48x48 out of the image zero-padded by this many pixels
    hflip: float = num(0.5, **PROBABILITY)  # probability of a horizontal flip
    rotation: float = num(10.0, 0, 180)  # max rotation in degrees (uniform in [-r, r])
    scale: float = num(0.1, 0, 1, hi_open=True)  # max relative zoom (uniform in [1-s, 1+s])
    shift: float = num(0.05, 0, 0.5)  # max shift as a fraction of the image side
    erasing: float = num(0.25, **PROBABILITY)  # probability of random erasing of one rectangle
    erasing_area: tuple[float, float] = num((0.02, 0.15), 0, 1, lo_open=True)  # (min, max) fraction of the image


@dataclass
class DataConfig:
    source: str = "synth"  # "synth", a fer2013.csv(.gz), an image folder
    ferplus: Optional[str] = None  # fer2013new.csv: use FER+ plurality labels instead of FER2013's
    # FER+ training target (Barsoum et al. 2016): "majority" one-hot plurality label, "probability"
    # a label drawn from the votes each step, "crossentropy" the vote distribution (soft targets)
    ferplus_mode: str = choice("majority", "probability", "crossentropy")
    class_map: Optional[dict[str, str]] = None  # generic folders: folder name -> class name
    val_fraction: float = num(0.1, 0, 1, hi_open=True)  # carved out of train when the data has no val split
    skip_bad_rows: bool = False
    synth_train: int = num(4000, 1)
    synth_val: int = num(1000, 1)
    synth_test: int = num(1000, 0)
    synth_difficulty: float = num(1.0, 0, 10)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    name: str = "baseline"
    stem: str = "small"  # ResNets/SENet: "small" 3x3 stride-1, no pool (6x6 last map); "pool" 3x3 + max-pool (~3.5x faster on CPU); "imagenet" 7x7/2 + max-pool
    width: int = num(64, 1, 4096)  # channels of the first stage (every backbone; 64 = torchvision's ResNets / VGG)
    dropout: float = num(0.3, 0, 1, hi_open=True)
    # ResNets / SENet: the last BN of each residual block starts at zero, so every block starts as
    # the identity (Goyal et al. 2017): deep bottleneck nets then learn from the first steps
    zero_init_residual: bool = False
    weights: Optional[str] = None  # a state-dict file to start from
    # a run directory (classifier or embedding) whose trained backbone this run starts from
    # (fermetric.training.warmstart); applied at the start of a run, not on --resume
    init_from: Optional[str] = None
    pretrained: bool = False  # torchvision ImageNet weights (needs a download)
    embedding_dim: int = num(128, 1, 65536)  # embedding models only


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" or "adamw"
    lr: float = num(0.05, 0, lo_open=True)
    momentum: float = num(0.9, 0, 1, hi_open=True)
    nesterov: bool = True
    weight_decay: float = num(5e-4, 0, 1)
    betas: tuple[float, float] = num((0.9, 0.999), 0, 1, hi_open=True)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # "cosine", "plateau" or "none"
    warmup_epochs: float = num(1.0, 0)
    min_lr: float = num(1e-5, 0)
    plateau_patience: int = num(3, 0)
    plateau_factor: float = num(0.5, 0, 1, lo_open=True, hi_open=True)


@dataclass
class TrainConfig:
    epochs: int = num(30, 1)
    batch_size: int = num(128, 1)
    eval_batch_size: int = num(512, 1)
    label_smoothing: float = num(0.0, 0, 1, hi_open=True)
    class_weights: bool = False  # weights inverse to class frequency (cs230's weighted cross-entropy)
    mixup_alpha: float = num(0.0, 0)  # 0 disables mixup
    early_stopping_patience: int = num(0, 0)  # epochs without val improvement before stopping; 0 disables
    grad_clip: float = num(0.0, 0)  # 0 disables
    # auto | fp32 | bf16 | fp16. auto: bf16 autocast on CPUs with native bf16 (avx512_bf16 / amx_bf16),
    # fp16 AMP on CUDA (when amp is true), fp32 elsewhere; resolved again on each machine (resume too)
    precision: str = "auto"
    compile: Union[bool, str] = "auto"  # torch.compile the training step: auto (long runs only), true, false
    amp: bool = True  # CUDA: false keeps precision "auto" at fp32 (older configs)
    channels_last: bool = True  # NHWC weights and activations (CUDA and CPU: measured faster on both)
    max_steps_per_epoch: int = num(0, 0)  # 0 = full epoch; a cap for smoke tests and budgets
    time_budget_minutes: float = num(0.0, 0)  # stop after the epoch that crosses this; 0 = none
    threads: int = num(0, 0)  # torch intra-op threads on CPU; 0 = torch's default


@dataclass
class MetricConfig:
    """Embedding models (train-siamese, train-triplet)."""

    loss: str = "triplet"  # pytorch-metric-learning loss name, e.g. TripletMarginLoss, ContrastiveLoss, MultiSimilarityLoss
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    miner: Optional[str] = "all"  # "all", "semihard", "hard", "pairs", a pml miner name, or null
    miner_kwargs: dict[str, Any] = field(default_factory=dict)
    margin: float = num(0.2, 0, 10)
    m_per_class: int = num(16, 2)  # MPerClassSampler: images per class in each batch (batch = m x classes)
    # "random": shuffled batches of train.batch_size with the data's class priors (what the kNN
    # gallery has; measured better, see the README); "m_per_class": balanced batches of
    # m_per_class x classes images (every class in every batch, rare ones oversampled)
    sampler: str = choice("random", "m_per_class")
    projection: str = choice("mlp", "linear")  # embedding head on the backbone's pre-logits
    # joint cross-entropy (ce_weight > 0): "linear" head on the backbone's pre-logits (the softmax
    # classifier's) or "cosine" classifier on the embedding, with scale logit_scale
    ce_head: str = choice("linear", "cosine")
    # the vector kNN, prototypes, similarity and plots read: "backbone" = the backbone's pre-logits
    # (L2-normalised), shaped by the metric loss through the projection head and by cross-entropy,
    # or "projection" = the projection head's output that the metric loss sees. As in SimCLR and
    # SupCon (the representation before the head transfers better), measured better on FER2013
    # and SynthFER (README); the loss always trains the projection
    embedding_layer: str = choice("backbone", "projection")
    logit_scale: float = num(16.0, 0, lo_open=True)
    # > 0 adds cross-entropy (joint training): the metric loss alone learns far slower than
    # softmax at the same budget; with it, kNN on the embedding matches or beats softmax (README)
    ce_weight: float = num(1.0, 0)
    knn_k: int = num(20, 1)
    knn_weighting: str = "distance"  # "majority" or "distance"
    # each epoch's validation votes from this many train images (a seeded sample, the same every
    # epoch; 0 = all): it ranks epochs and checks collapse at a quarter of the cost on FER2013.
    # The final metrics (metrics.json, evaluate, knn-eval) always use the whole train gallery
    val_gallery: int = num(5000, 0)
    # warn (and with stop_on_collapse stop; the best checkpoint so far is kept) once the embeddings
    # have collapsed (fermetric.training.collapse) in this many consecutive epochs: a slow start
    # looks like collapse for an epoch or two (measured on SynthFER: 2 epochs at the majority share
    # with mean cosine 0.98, then learning)
    stop_on_collapse: bool = False
    collapse_patience: int = num(3, 1)


@dataclass
class RunConfig:
    seed: int = num(0, 0, 2**32 - 1)  # NumPy seeds must be non-negative 32-bit
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
        if isinstance(value, str):
            # YAML 1.1 reads 3e-3 (no dot) as a string; people write numbers that way
            try:
                value = float(value.strip())
            except ValueError:
                pass
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


def config_from_dict(data: dict[str, Any], cls: type = RunConfig, check: bool = True) -> Any:
    cfg = _from_dict(cls, data or {})
    return check_config(cfg) if check else cfg


def _check_fields(cfg: Any, where: str) -> None:
    for f in dataclasses.fields(cfg):
        key = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, key)
            continue
        rng: Optional[Range] = f.metadata.get("range")
        if rng is not None:
            items = value if isinstance(value, tuple) else (value,)
            for i, v in enumerate(items):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not rng.contains(float(v)):
                    shown = f"{key}[{i}]" if isinstance(value, tuple) else key
                    raise ConfigError(f"{shown}={v!r} is out of range; expected a finite number {rng.describe()}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r} is not allowed; expected one of: {', '.join(choices)}")


def check_config(cfg: Any) -> Any:
    """Refuse values outside their declared range (`num`, `choice`) and contradicting settings,
    naming the key, the value and what is allowed. Returns `cfg` unchanged.

    Raises:
        ConfigError: the first offending key.
    """
    _check_fields(cfg, "")
    if not isinstance(cfg, RunConfig):
        return cfg
    lo, hi = cfg.data.augment.erasing_area
    if lo > hi:
        raise ConfigError(f"data.augment.erasing_area={[lo, hi]}: the minimum {lo:g} exceeds the maximum {hi:g}")
    if cfg.schedule.name != "none" and cfg.schedule.min_lr > cfg.optim.lr:
        raise ConfigError(
            f"schedule.min_lr={cfg.schedule.min_lr:g} exceeds optim.lr={cfg.optim.lr:g}; "
            "the schedule would raise the learning rate. Lower schedule.min_lr or raise optim.lr"
        )
    if cfg.data.ferplus_mode != "majority" and not cfg.data.ferplus:
        raise ConfigError(
            f"data.ferplus_mode={cfg.data.ferplus_mode} trains on FER+ vote distributions; "
            "give --ferplus fer2013new.csv (data.ferplus) or leave data.ferplus_mode=majority"
        )
    return cfg


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


def _check_override_target(text: str, path: list[str], value: Any, cls: type) -> None:
    """Refuse an override that addresses a whole section (`train=5`) or a key below a value
    (`train.epochs.x=1`): either would replace what the user meant to change, and a later
    `section.key=` override would silently drop it. Unknown keys are left to `_from_dict`."""
    node: Any = cls
    for i, part in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else None
        if fields is None:
            where = ".".join(path[:i])
            raise ConfigError(f"override {text!r}: {where} is a value, not a section, so it has no key {part!r}; "
                              f"write {where}=VALUE")
        if part not in fields:
            return
        node = _strip_optional(typing.get_type_hints(node)[part])[0]
    if dataclasses.is_dataclass(node) and not isinstance(value, dict):
        keys = ", ".join(f.name for f in dataclasses.fields(node))
        raise ConfigError(f"override {text!r} addresses the section {'.'.join(path)}, not one of its keys; "
                          f"write {'.'.join(path)}.KEY=VALUE with KEY one of: {keys}")


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...],
                    cls: type = RunConfig) -> dict[str, Any]:
    """`data` with each `section.key=value` of `overrides` set, checked against `cls`'s sections."""
    data = dict(data)
    for text in overrides or ():
        path, value = parse_override(text)
        _check_override_target(text, path, value, cls)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping that repeats a key is an error (PyYAML keeps the last
    silently: two study models of one name would be one model)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    problem=f"the key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """YAML text read safely, a repeated key refused (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    except RecursionError:  # thousands of nested [ or {: PyYAML's parser recurses per level
        raise ConfigError(f"config file {path} is nested too deeply to be a fermetric config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    check: bool = True,
) -> RunConfig:
    """Resolve a RunConfig: dataclass defaults <- `base` <- YAML file <- `--set` overrides.

    `check=False` leaves `check_config` to a caller that still changes the config (CLI flags).

    Raises:
        ConfigError: naming the file and the unknown key or bad value.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(data, check=check)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    from fermetric.utils.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def resolve_config(
    config_path: Optional[str],
    overrides: tuple[str, ...],
    *,
    data: Optional[str] = None,
    ferplus: Optional[str] = None,
    seed: Optional[int] = None,
    device: Optional[str] = None,
    base: Optional[dict] = None,
) -> RunConfig:
    """defaults <- `base` (a command's own defaults) <- config file <- --set overrides <- explicit
    flags (flags win: they are the most specific); then file paths made absolute and every
    value checked against its declared range (fermetric.config.check_config).

    Flag values are set as given, not parsed as YAML, so any path works.
    """
    cfg = load_config(Path(config_path) if config_path else None, tuple(overrides), base=base, check=False)
    if data is not None:
        cfg.data.source = str(data)
    if ferplus is not None:
        cfg.data.ferplus = str(ferplus)
    if seed is not None:
        cfg.seed = int(seed)
    if device is not None:
        cfg.device = str(device)
    absolute_paths(cfg)
    return check_config(cfg)


# The data-source names that mean SynthFER (the default): a name, not a path
SYNTH_NAMES = {"", "synth", "synthfer", "synthetic"}


def is_synth(source: Optional[str]) -> bool:
    """Whether a data source names SynthFER rather than a file or folder."""
    return source is None or str(source).strip().lower() in SYNTH_NAMES


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Make the config's file paths (data.source, data.ferplus, model.weights) absolute, in place:
    a run's config.yaml must find its data from any working directory (evaluate, explain,
    report), not only from the one it was trained in."""
    if not is_synth(cfg.data.source):
        cfg.data.source = str(Path(cfg.data.source).expanduser().absolute())
    if cfg.data.ferplus:
        cfg.data.ferplus = str(Path(cfg.data.ferplus).expanduser().absolute())
    if cfg.model.weights:
        cfg.model.weights = str(Path(cfg.model.weights).expanduser().absolute())
    if cfg.model.init_from and Path(cfg.model.init_from).expanduser().exists():
        # a run directory; anything else stays as given: a zoo name is a name (fermetric.zoo.open_run's
        # rule: a directory of that name comes first), and a missing path is refused by name when used
        cfg.model.init_from = str(Path(cfg.model.init_from).expanduser().absolute())
    return cfg


# Keys added after runs were already written, with the value that runs written before them used
# (their config.yaml lacks the key). A run's config is read with these, so that an older run is
# rebuilt, evaluated and resumed exactly as it was trained, not with a newer default.
KEYS_ADDED_LATER: dict[str, Any] = {
    "metric.sampler": "m_per_class",
    "metric.ce_head": "cosine",
    "metric.embedding_layer": "projection",
    "metric.val_gallery": 0,  # an old run resumed keeps ranking its epochs on the whole gallery
}


def load_run_config(path: str | Path) -> RunConfig:
    """A run directory's config.yaml, with `KEYS_ADDED_LATER` filled in where it lacks them."""
    raw = read_yaml(path)
    missing = []
    for key, value in KEYS_ADDED_LATER.items():
        section, name = key.split(".")
        if name not in (raw.get(section) or {}):
            missing.append(f"{key}={value}")
    return load_config(path, tuple(missing)) if missing else load_config(path)
