"""The one factory of a run's model: the untrained model a run of a given kind trains, from its
config. Training builds its model here and the run reader (fermetric.runs) rebuilds the same
architecture here before loading a checkpoint, so the two can never drift apart.

    from fermetric.models import build_model
    model = build_model("classifier", cfg, num_classes=7)   # registry backbone + its head
    model = build_model("embedding", cfg, num_classes=7)    # backbone -> projection -> unit vector
"""
from __future__ import annotations

from typing import Any

from torch import nn

from fermetric.errors import ModelError
from fermetric.models.embedding import embedding_model_from_config
from fermetric.models.registry import model_from_config

RUN_KINDS = ("classifier", "embedding")


def build_model(kind: str, cfg: Any, num_classes: int) -> nn.Module:
    """The untrained model of a run of `kind`.

    Args:
        kind: "classifier" (the registry model of cfg.model with a num_classes head) or
            "embedding" (EmbeddingModel on that backbone; with joint cross-entropy,
            cfg.metric.ce_weight > 0, a classifier: cfg.metric.ce_head "linear" on the backbone's
            pre-logits or "cosine" on the embedding; embedding with cfg.metric.embedding_layer).
        cfg: a fermetric.config.RunConfig.
        num_classes: classes of the data.

    Raises:
        ModelError: unknown kind, model name or option.
    """
    if kind == "classifier":
        return model_from_config(cfg.model, num_classes)
    if kind == "embedding":
        return embedding_model_from_config(cfg.model, num_classes, joint=cfg.metric.ce_weight > 0,
                                           projection=cfg.metric.projection, logit_scale=cfg.metric.logit_scale,
                                           head=cfg.metric.ce_head, embedding_layer=cfg.metric.embedding_layer)
    raise ModelError(f"unknown run kind {kind!r}; expected one of {', '.join(map(repr, RUN_KINDS))}")
