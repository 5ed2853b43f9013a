"""Model registry and factory (after timm's `_registry.py` / `_factory.py`).

    @register_model("resnet18", pretrained="ResNet18_Weights.IMAGENET1K_V1")
    def resnet18(num_classes: int = 7, in_chans: int = 1, stem: str = "small", dropout: float = 0.3): ...

    model = create_model("resnet18", num_classes=7, stem="imagenet")
    model = model_from_config(cfg.model, num_classes=7)

A factory's keyword arguments are its public options: `create_model` checks the ones it is
given against the factory's signature, so a typo fails with the list of valid names instead
of a TypeError deep inside a constructor.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from fermetric.errors import ModelError
from fermetric.models.base import FERModel

log = logging.getLogger(__name__)

# Handled by create_model itself, not passed to the factory.
_FACTORY_COMMON = ("num_classes", "in_chans")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: registry name, e.g. "resnet18".
        factory: callable(num_classes=, in_chans=, **options) -> FERModel.
        pretrained: torchvision weights name (e.g. "ResNet18_Weights.IMAGENET1K_V1"), or None.
        description: first line of the factory's docstring.
    """

    name: str
    factory: Callable[..., FERModel]
    pretrained: Optional[str] = None
    description: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword options of the factory (num_classes and in_chans excluded) -> defaults."""
        params = inspect.signature(self.factory).parameters
        return {
            n: (None if p.default is inspect.Parameter.empty else p.default)
            for n, p in params.items()
            if n not in _FACTORY_COMMON and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }


_REGISTRY: dict[str, ModelEntry] = {}
# fermetric's own models, registered when their module is first needed: the torchvision-based ones
# import torchvision (2-3 s on 2 cores), which the baseline CNN, and so `predict` with the default
# model, does not need
_BUILTIN = {"baseline": "fermetric.models.baseline", "resnet18": "fermetric.models.resnet",
            "resnet50": "fermetric.models.resnet", "vgg16": "fermetric.models.vgg", "senet50": "fermetric.models.senet"}


def _load_builtin(name: Optional[str] = None) -> None:
    """Import the module of the built-in model `name` (None: of every built-in model)."""
    import importlib

    for module in sorted(set(_BUILTIN.values()) if name is None else {_BUILTIN[name]} if name in _BUILTIN else set()):
        importlib.import_module(module)


def register_model(name: str, *, pretrained: Optional[str] = None) -> Callable:
    """Decorator that registers a model factory under `name`.

    Args:
        name: registry name (lower case, unique).
        pretrained: torchvision weights name the model can start from with `pretrained=True`.
    """

    def decorator(factory: Callable[..., FERModel]) -> Callable[..., FERModel]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ModelError(f"model name {name!r} is registered twice ({_REGISTRY[name].factory.__module__} and {factory.__module__})")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, factory, pretrained, doc[0] if doc else "")
        return factory

    return decorator


def list_models(pretrained: bool = False) -> list[str]:
    """Sorted registered names; with pretrained=True only those with torchvision ImageNet weights."""
    _load_builtin()
    return sorted(n for n, e in _REGISTRY.items() if e.pretrained or not pretrained)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`.

    Raises:
        ModelError: "unknown model 'x'; available: ..." for an unregistered name.
    """
    if isinstance(name, str) and name not in _REGISTRY:
        _load_builtin(name)
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(
    name: str,
    num_classes: int = 7,
    in_chans: int = 1,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> FERModel:
    """Build a registered model.

    Args:
        name: a name from `list_models()`.
        num_classes: size of the logit vector (0: no head, the model returns pre-logits).
        in_chans: input channels (1 for FER2013's grayscale).
        pretrained: start from torchvision's ImageNet weights (downloads them once; the first
            conv is folded to `in_chans` = 1).
        weights: a state-dict or checkpoint file to start from (see `load_weights_file`).
        **kwargs: the model's own options (see `get_model_entry(name).options()`), e.g. `stem`,
            `width`, `dropout`.

    Returns:
        The model, in training mode; input (N, in_chans, 48, 48) float in [0, 1].

    Raises:
        ModelError: unknown name, unknown or invalid option, weights that do not fit.
    """
    entry = get_model_entry(name)
    options = entry.options()
    unknown = [k for k in kwargs if k not in options]
    if unknown:
        accepted = ", ".join([*_FACTORY_COMMON, *options, "pretrained", "weights"])
        raise ModelError(f"model {name!r} has no option {unknown[0]!r}; it accepts: {accepted}")
    if pretrained and weights is not None:
        raise ModelError(
            f"model {name!r}: give either pretrained=True (torchvision ImageNet weights) or a weights file, not both"
        )
    model = entry.factory(num_classes=num_classes, in_chans=in_chans, **kwargs)
    _check_contract(model, name)
    if pretrained:
        if entry.pretrained is None:
            raise ModelError(
                f"model {name!r} has no torchvision ImageNet weights (models with them: "
                f"{', '.join(list_models(pretrained=True))}); train from scratch or pass --weights FILE"
            )
        from fermetric.models.weights import load_pretrained

        load_pretrained(model, entry.pretrained)
    if weights is not None:
        from fermetric.models.weights import load_weights_file

        load_weights_file(model, weights)
    return model


def _check_contract(model: Any, name: str) -> None:
    """Catch a factory that forgets part of the FERModel contract, at build time."""
    if not isinstance(model, FERModel):
        raise ModelError(f"factory of {name!r} returned {type(model).__name__}, not a FERModel")
    for attr in ("num_features", "num_classes", "gradcam_layer"):
        if not hasattr(model, attr):
            raise ModelError(f"model {name!r} does not set {attr} (see fermetric/models/base.py)")
    model.model_name = model.model_name or name


def model_from_config(model_cfg: Any, num_classes: int) -> FERModel:
    """Build the model a `fermetric.config.ModelConfig` describes.

    `stem`, `width`, `dropout` and `zero_init_residual` are passed to the models that take them; a value another
    model would use but this one does not is logged as ignored (never dropped silently) when it
    differs from the config default.

    Args:
        model_cfg: `RunConfig.model`.
        num_classes: number of classes of the data.
    """
    entry = get_model_entry(model_cfg.name)
    options = entry.options()
    defaults = {f.name: f.default for f in dataclasses.fields(model_cfg)}
    kwargs: dict[str, Any] = {}
    for key in ("stem", "width", "dropout", "zero_init_residual"):
        value = getattr(model_cfg, key, None)
        if value is None:
            continue  # None: keep the model's own default
        if key in options:
            kwargs[key] = value
        elif value != defaults.get(key):
            log.warning("model.%s=%r is ignored: %s has no %s option", key, value, entry.name, key)
    return create_model(
        entry.name,
        num_classes=num_classes,
        pretrained=bool(getattr(model_cfg, "pretrained", False)),
        weights=getattr(model_cfg, "weights", None),
        **kwargs,
    )
