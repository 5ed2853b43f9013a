"""Model zoo: registry, backbones (baseline, resnet18/50, vgg16, senet50), embedding model, weights.

    from fermetric.models import create_model, list_models, create_embedding_model
    model = create_model("resnet18", num_classes=7)          # (N, 1, 48, 48) in [0, 1] -> (N, 7)
    emb = create_embedding_model("resnet18", embedding_dim=128)  # -> (N, 128), unit norm
    model = build_model("embedding", run_cfg, num_classes=7)  # the model a run of that kind trains

`list_models()` / `get_model_entry(name)` register the built-in models on first use.
"""
from fermetric.models.base import FERModel
from fermetric.models.registry import (
    ModelEntry,
    create_model,
    get_model_entry,
    list_models,
    model_from_config,
    register_model,
)

# The built-in models (baseline, resnet18 / resnet50, vgg16, senet50) register themselves when their
# module is first needed (registry._BUILTIN): torchvision loads only for the models built on it.
from fermetric.models.embedding import (  # noqa: E402
    EmbeddingModel,
    create_embedding_model,
    embedding_model_from_config,
)
from fermetric.models.factory import RUN_KINDS, build_model  # noqa: E402
from fermetric.models.weights import WeightsReport, load_pretrained, load_weights_file  # noqa: E402

__all__ = [
    "FERModel",
    "ModelEntry",
    "EmbeddingModel",
    "WeightsReport",
    "RUN_KINDS",
    "build_model",
    "create_model",
    "create_embedding_model",
    "embedding_model_from_config",
    "get_model_entry",
    "list_models",
    "load_pretrained",
    "load_weights_file",
    "model_from_config",
    "register_model",
]
