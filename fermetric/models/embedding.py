"""The embedding model: any registered backbone, a projection head, an L2-normalised vector.

    images (N, 1, 48, 48) -> backbone pre-logits (N, F) -> projection -> normalise -> (N, D)
                                                             optional cosine classifier -> (N, K)

What the model embeds with (`embed`, and `forward` without flags: kNN, prototypes, similarity,
plots), `embedding_layer`: "projection", the unit vector (N, D) the metric loss trains, or
"backbone", the backbone's pre-logits (N, F), L2-normalised. The metric loss reaches the backbone
through the head, and the representation before the head is the one to use downstream (SimCLR,
Chen et al. 2020; SupCon, Khosla et al. 2020): measured on FER2013 (triplet + cross-entropy, 4
epochs) kNN 59.3 % on the backbone's pre-logits against 58.2 % on the projection (README).
Training asks for the projection explicitly (`forward(x, projected=True)` or `with_logits`).

Projection head: Linear(F, 512) -> BN -> ReLU -> Linear(512, D) by default ("mlp"), as in
Hermans et al. 2017 (triplet loss, 1024-BN-ReLU-128) and SimCLR: the non-linear head lets the
metric loss shape the embedding without forcing the backbone's pre-logits onto the unit
sphere, which keeps them useful for the classifier and for kNN on a classifier run. "linear"
(one Linear) is the choice for tiny backbones or batch size 1 in training (BN needs 2+).

Optional classifier (joint cross-entropy + metric loss), `head`:

- "linear": a linear layer on the backbone's pre-logits, exactly the softmax classifier's head,
  so the backbone gets the classifier's own training signal while the metric loss shapes the
  embedding. Measured on SynthFER and FER2013 (see the README), kNN on such an embedding
  matches or beats the softmax classifier at the same budget; this is the default.
- "cosine": a cosine classifier on the embedding, logits = scale * cos(embedding, w_k). The embedding is unit-norm, so a plain linear layer could only
reach large logits by growing its weights, which weight decay resists; normalising the weights
too (NormFace, Wang et al. 2017) fixes the logit range with `logit_scale` and makes each w_k a
class prototype on the same sphere the kNN index and PrototypeScorer work on.
"""
from __future__ import annotations

import inspect

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fermetric.errors import ModelError
from fermetric.models.base import FERModel
from fermetric.models.common import check_choice, check_int
from fermetric.models.registry import create_model, get_model_entry

PROJECTIONS = ("mlp", "linear")
HEADS = ("linear", "cosine")
EMBEDDING_LAYERS = ("projection", "backbone")


class CosineClassifier(nn.Module):
    """logits = scale * normalise(e) @ normalise(W).T; input (N, D), output (N, K)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = float(scale)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(e, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, scale={self.scale}"


class EmbeddingModel(nn.Module):
    """Backbone + projection head -> L2-normalised embedding (N, embedding_dim).

    Args:
        backbone: a FERModel; its classifier head is removed when it has `reset_classifier`
            (so every parameter takes part in training).
        embedding_dim: size D of the embedding.
        num_classes: adds a cosine classifier on the embedding (`forward_logits`) when given.
        projection: "mlp" (Linear-BN-ReLU-Linear) or "linear".
        hidden_dim: width of the MLP's hidden layer.
        logit_scale: the cosine classifier's scale (inverse temperature).
        head: the classifier, when num_classes is given: "linear" on the backbone's pre-logits
            or "cosine" on the embedding (see the module docstring).
        embedding_layer: what `embed` returns: "projection" (N, embedding_dim) or "backbone"
            (the backbone's L2-normalised pre-logits, (N, backbone.num_features)).

    Attributes:
        gradcam_layer: "backbone." + the backbone's, for Grad-CAM on the embedding model.
        num_features: the size of what `embed` returns.
    """

    def __init__(
        self,
        backbone: FERModel,
        embedding_dim: int = 128,
        num_classes: Optional[int] = None,
        *,
        projection: str = "mlp",
        hidden_dim: int = 512,
        logit_scale: float = 16.0,
        head: str = "cosine",
        embedding_layer: str = "projection",
    ) -> None:
        super().__init__()
        if not isinstance(backbone, FERModel):
            raise ModelError(f"EmbeddingModel needs a FERModel backbone, got {type(backbone).__name__}")
        name = f"{getattr(backbone, 'model_name', '') or type(backbone).__name__}-embedding"
        check_int(name, "embedding_dim", embedding_dim, 1)
        check_int(name, "hidden_dim", hidden_dim, 1)
        check_choice(name, "projection", projection, PROJECTIONS)
        check_choice(name, "head", head, HEADS)
        check_choice(name, "embedding_layer", embedding_layer, EMBEDDING_LAYERS)
        if num_classes is not None:
            check_int(name, "num_classes", num_classes, 1)
        if hasattr(backbone, "reset_classifier"):
            backbone.reset_classifier(0)
        self.backbone = backbone
        feats = backbone.num_features
        if projection == "mlp":
            self.projection: nn.Module = nn.Sequential(
                nn.Linear(feats, hidden_dim, bias=False),  # bias is redundant before BN
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, embedding_dim),
            )
        else:
            self.projection = nn.Linear(feats, embedding_dim)
        self.classifier: Optional[nn.Module] = None
        if num_classes:
            self.classifier = (nn.Linear(feats, num_classes) if head == "linear"
                               else CosineClassifier(embedding_dim, num_classes, logit_scale))
        self.head_type = head
        self.embedding_dim = embedding_dim
        self.embedding_layer = embedding_layer
        self.num_features = embedding_dim if embedding_layer == "projection" else feats
        self.num_classes = num_classes
        self.projection_type = projection
        self.model_name = name
        self.gradcam_layer = "backbone." + backbone.gradcam_layer

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, H, W) in [0, 1] -> the backbone's feature map (N, C, h, w)."""
        return self.backbone.forward_features(x)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (N, C, h, w) -> unit-norm embedding (N, embedding_dim)."""
        z = self.backbone.pre_logits(feats)
        return F.normalize(self.projection(z), dim=1)

    def forward(self, x: torch.Tensor, with_logits: bool = False, projected: bool = False):
        """Images (N, 1, H, W) in [0, 1] -> the embedding `embed` gives (N, num_features).

        Training's outputs, through whatever wraps the model (DDP, torch.compile): `projected`
        gives the projection's unit vector (N, embedding_dim) the metric loss trains;
        `with_logits` gives (projection, logits (N, num_classes)) from one pass (joint training)."""
        if with_logits:
            return self.forward_with_logits(x)
        if projected:
            return self.project(self.forward_features(x))
        return self.embed(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> the unit-norm embedding of `embedding_layer` (N, num_features)."""
        feats = self.forward_features(x)
        if self.embedding_layer == "backbone":
            return F.normalize(self.backbone.pre_logits(feats), dim=1)
        return self.project(feats)

    def _check_classifier(self) -> nn.Module:
        if self.classifier is None:
            raise ModelError(f"{self.model_name} has no classifier; build it with num_classes=K for joint training")
        return self.classifier

    def logits_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        """Embedding (N, embedding_dim) -> logits (N, num_classes) of the cosine classifier."""
        if self.head_type != "cosine":
            raise ModelError(f"{self.model_name}'s classifier reads the backbone's pre-logits, not the embedding; "
                             "use forward_with_logits")
        return self._check_classifier()(e)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, H, W) -> logits (N, num_classes); needs num_classes at construction."""
        return self.forward_with_logits(x)[1]

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding (N, D), logits (N, K)) in one pass, for joint metric + cross-entropy training."""
        clf = self._check_classifier()
        z = self.backbone.pre_logits(self.forward_features(x))
        e = F.normalize(self.projection(z), dim=1)
        return e, clf(z if self.head_type == "linear" else e)


# EmbeddingModel's head options (its keyword-only arguments): create_embedding_model passes
# these to the EmbeddingModel and every other keyword to the backbone
_HEAD_OPTIONS = tuple(p.name for p in inspect.signature(EmbeddingModel.__init__).parameters.values()
                      if p.kind is inspect.Parameter.KEYWORD_ONLY)


def create_embedding_model(name: str, embedding_dim: int = 128, num_classes: Optional[int] = None,
                           **options: Any) -> EmbeddingModel:
    """An EmbeddingModel on the registered backbone `name`.

    Args:
        name: a registered model name.
        embedding_dim, num_classes: see EmbeddingModel.
        **options: EmbeddingModel's head options (projection, hidden_dim, logit_scale, head,
            embedding_layer); the rest go to `create_model` for the backbone (in_chans, stem,
            width, dropout, pretrained, weights; a classifier's weights file loads with its head
            skipped).

    Raises:
        ModelError: unknown name or option.
    """
    get_model_entry(name)
    head = {key: options.pop(key) for key in _HEAD_OPTIONS if key in options}
    # No classifier head on the backbone: the embedding reads its pre-logits.
    backbone = create_model(name, num_classes=0, **options)
    return EmbeddingModel(backbone, embedding_dim, num_classes, **head)


def embedding_model_from_config(model_cfg: Any, num_classes: Optional[int] = None, *, joint: bool = True,
                                **head_kwargs: Any) -> EmbeddingModel:
    """The EmbeddingModel a ModelConfig describes (backbone as `model_from_config`, D = embedding_dim).

    The backbone is built with its `num_classes` head (so a classifier's weights file of the same
    classes loads whole) and the head is then removed by EmbeddingModel; training and the run
    reader build embedding runs through here (see fermetric.models.factory.build_model).

    Args:
        model_cfg: `RunConfig.model`.
        num_classes: classes of the data.
        joint: add the classifier (joint cross-entropy training) when num_classes is given.
        **head_kwargs: EmbeddingModel's projection, hidden_dim, logit_scale, head, embedding_layer.
    """
    from fermetric.models.registry import model_from_config

    backbone = model_from_config(model_cfg, num_classes=num_classes or 0)
    return EmbeddingModel(backbone, model_cfg.embedding_dim, num_classes if joint else None, **head_kwargs)
