"""Scorers: the one interface every explanation and faithfulness method takes.

A scorer maps images (N, 1, 48, 48) float in [0, 1] to class scores (N, C). Because methods
only ever see a scorer, each of them works on both model families:

- ClassifierScorer: a classifier's logits (or softmax); differentiable.
- PrototypeScorer: cosine similarity of an embedding model's (L2-normalised) output to each class
  centroid of a training gallery; differentiable, so gradient methods work on metric models.
- KNNScorer: vote probabilities of a FAISS k-nearest-neighbour classifier; a black box, for
  occlusion and LIME only.

Scorers run the model in eval mode, in batches, without gradients unless a method asks, and leave
the model's train/eval flags, the caller's tensors and every .grad as they found them.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.analysis.layers import default_gradcam_layer, eval_mode
from fermetric.data.classes import FER2013_CLASSES, IMAGE_SIZE
from fermetric.errors import ConfigError, DataError, ModelError
from fermetric.utils import runtime
from fermetric.utils.checks import check_int

log = logging.getLogger(__name__)

# Measured on CPU (1 thread): resnet18 with the 48x48 "small" stem is fastest at 32-64 images a
# batch (activations outgrow the caches beyond), the "imagenet" stem at 64-128.
DEFAULT_BATCH_SIZE = 64


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


class Scorer:
    """Base class. Subclasses implement `forward` (device tensors in, (B, C) scores out).

    Attributes:
        model: the nn.Module whose layers Grad-CAM, filters and activations look into.
        differentiable: whether gradient methods may use `forward`.
        batch_size: images per forward pass in `scores` (methods accept their own override).
        class_names: names of the C classes, or None.
        precision: "auto", "fp32", "bf16" or "fp16": the autocast of the model's forward passes
            (see fermetric.utils.runtime; auto: bf16 on CPUs with native bf16, fp16 on CUDA, else
            fp32). Scores, gradients and maps are returned in fp32 whatever it is.
    """

    differentiable: bool = True
    kind: str = "scorer"
    # torch.compile of `scores` (no-grad batches): "auto" (after COMPILE_INFERENCE_AFTER_SECONDS
    # of eager forward passes with unchanged weights), True or False; set on an instance to change it
    compile: Any = "auto"
    _compilable: bool = True

    def __init__(self, model: nn.Module, batch_size: int = DEFAULT_BATCH_SIZE, class_names: Optional[Sequence[str]] = None,
                 precision: str = "auto"):
        if not isinstance(model, nn.Module):
            raise ModelError(f"{type(self).__name__} needs an nn.Module; got {type(model).__name__}")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.class_names = None if class_names is None else tuple(class_names)
        self.precision = runtime.check_precision(precision, "precision")
        self._num_classes: Optional[int] = None

    # -- to implement -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 48, 48) on `self.device` -> scores (B, C). Gradients follow the caller's
        grad mode; the caller has put the model in eval mode (see `evaluating`)."""
        raise NotImplementedError

    def with_model(self, model: nn.Module) -> "Scorer":
        """The same scorer around another model (e.g. a randomised copy): everything else shared."""
        other = copy.copy(self)
        other.model = model
        other.__dict__.pop("_compiled", None)
        return other

    # -- shared -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            probe = torch.full((1, 1, IMAGE_SIZE, IMAGE_SIZE), 0.5)
            self._num_classes = int(self.scores(probe).shape[1])
        return self._num_classes

    def evaluating(self):
        """Context manager: model in eval mode inside, every submodule's own flag restored after."""
        return eval_mode(self.model)

    @property
    def resolved_precision(self) -> str:
        """"fp32", "bf16" or "fp16": `precision` resolved for the model's device."""
        return runtime.resolve_precision(self.precision, self.device)

    def autocast(self):
        """The autocast context of `precision` for `forward` calls (gradient methods use it too;
        they cast the scores to fp32 before taking gradients)."""
        return runtime.autocast(self.device, self.resolved_precision)

    def scores(self, images: Any, batch_size: Optional[int] = None) -> torch.Tensor:
        """Class scores (N, C) float32 on the CPU, computed in batches without gradients.

        Args:
            images: (N, 1, 48, 48) float in [0, 1] or uint8 (tensor or NumPy array).
            batch_size: images per forward pass (default: the scorer's).
        """
        # uint8 stays uint8 until its batch is scored: a whole split is never copied as float
        x = as_image_batch(images, keep_uint8=True)
        bs = check_batch_size(batch_size or self.batch_size)
        dev = self.device
        prec = self.resolved_precision
        cl = runtime.use_channels_last(dev, prec)
        out = []
        with self.evaluating(), runtime.inference(dev, prec):
            fwd = self._scores_forward(bs, prec, dev)
            eager = fwd == self.forward  # (a new bound-method object on every attribute access: not `is`)
            t0 = time.perf_counter()
            for i in range(0, x.shape[0], bs):
                xb = x[i:i + bs]
                if xb.dtype == torch.uint8:
                    xb = xb.float().div_(255.0)
                n = xb.shape[0]
                if not eager and n < bs:  # one batch shape: no recompile for the last batch
                    xb = torch.cat([xb, xb[-1:].expand(bs - n, *xb.shape[1:])])
                xb = runtime.to_memory_format(xb.to(dev), cl)
                out.append(check_scores(fwd(xb), xb.shape[0], self)[:n].float().cpu())
            if eager:
                self._eager_seconds = getattr(self, "_eager_seconds", 0.0) + time.perf_counter() - t0
        # concatenated outside inference mode: callers get an ordinary tensor
        if not out:
            return torch.zeros(0, self._num_classes or 0)
        res = torch.cat(out)
        self._num_classes = int(res.shape[1])
        return res

    __call__ = scores

    def _scores_forward(self, bs: int, prec: str, dev: torch.device):
        """`forward`, or its compiled version (see `compile`). The compiled graph holds the weights
        as constants, so it is keyed to the model, its parameters' version counters (any in-place
        update, optimiser step or load_state_dict, moves them), the batch size and precision."""
        decision = runtime.resolve_compile(self.compile, dev) if self._compilable else False
        if decision is False:
            return self.forward
        key = (id(self.model), bs, prec, tuple((p.data_ptr(), p._version) for p in self.model.parameters()))
        cached = self.__dict__.get("_compiled")
        if cached is not None and cached[0] == key:
            return cached[1]
        if self.__dict__.get("_eager_key") != key:
            self._eager_key, self._eager_seconds = key, 0.0
        if decision is None and self._eager_seconds < runtime.COMPILE_INFERENCE_AFTER_SECONDS:
            return self.forward
        # a function with its own code object: torch.compile caches graphs per code object and does
        # not guard on weight values, so a frozen graph must never be shared between keys
        compiled = runtime.CompiledWithFallback(runtime.fresh_method(self.forward), f"{type(self).__name__}",
                                                freeze=True, dynamic=False)
        self._compiled = (key, compiled)
        return compiled

    def predict(self, images: Any, batch_size: Optional[int] = None) -> torch.Tensor:
        """Predicted class ids (N,) int64: the arg-max score."""
        return self.scores(images, batch_size).argmax(dim=1)

    def class_name(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None and 0 <= c < len(self.class_names) else str(c)

    @property
    def gradcam_layer(self) -> str:
        """Dotted name (in `self.model`) of the layer Grad-CAM uses by default."""
        return default_gradcam_layer(self.model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class ClassifierScorer(Scorer):
    """A classifier's logits or softmax probabilities (differentiable).

    Args:
        model: maps (N, 1, 48, 48) [0, 1] images to logits (N, C) (a fermetric FERModel or any
            module); for an EmbeddingModel built with num_classes, its cosine-classifier logits.
        output: "logits" or "softmax".
        class_names: names of the C classes; default: the model's `class_names`, or FER2013's
            when the model has 7 classes.
        batch_size: images per forward pass.
    """

    kind = "classifier"

    def __init__(self, model: nn.Module, output: str = "logits", class_names: Optional[Sequence[str]] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto"):
        if output not in ("logits", "softmax"):
            raise ConfigError(f"ClassifierScorer output must be 'logits' or 'softmax'; got {output!r}")
        # An embedding model's forward returns embeddings, not logits: use its cosine classifier.
        self._use_logits_method = hasattr(model, "embedding_dim") and callable(getattr(model, "forward_logits", None))
        if self._use_logits_method and getattr(model, "classifier", None) is None:
            raise ModelError(
                f"{type(model).__name__} returns embeddings and has no classifier head; "
                "use PrototypeScorer (cosine to class centroids) or KNNScorer (kNN vote) for it"
            )
        n = getattr(model, "num_classes", None)
        if class_names is None:
            class_names = getattr(model, "class_names", None)
        if class_names is None and n == len(FER2013_CLASSES):
            class_names = FER2013_CLASSES
        super().__init__(model, batch_size, class_names, precision)
        self.output = output
        if isinstance(n, int):
            self._num_classes = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_logits(x) if self._use_logits_method else self.model(x)
        return out.float().softmax(dim=1) if self.output == "softmax" else out


class PrototypeScorer(Scorer):
    """Cosine similarity of the embedding to each class centroid of a gallery (differentiable).

    score_c(x) = <e(x)/|e(x)|, m_c/|m_c|>, m_c the mean gallery embedding of class c. Classes
    absent from the gallery score -1 (the lowest cosine) and a warning is logged.

    Args:
        embedding_model: maps images (N, 1, 48, 48) to embeddings (N, D).
        gallery_embeddings: (G, D) embeddings of the training gallery (tensor or array).
        gallery_labels: (G,) class ids.
        num_classes: C (default: max label + 1).
        class_names: names of the C classes (default FER2013's when C is 7).
        batch_size: images per forward pass.
    """

    kind = "prototype"

    def __init__(self, embedding_model: nn.Module, gallery_embeddings: Any, gallery_labels: Any,
                 num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto"):
        emb = torch.as_tensor(np.asarray(gallery_embeddings) if not isinstance(gallery_embeddings, torch.Tensor) else gallery_embeddings)
        lab = torch.as_tensor(np.asarray(gallery_labels) if not isinstance(gallery_labels, torch.Tensor) else gallery_labels)
        emb = emb.detach().float().cpu()
        lab = lab.detach().long().cpu()
        if emb.dim() != 2 or lab.dim() != 1 or emb.shape[0] != lab.shape[0] or emb.shape[0] == 0:
            raise DataError(
                f"gallery embeddings must be (G, D) and labels (G,) with G > 0; got {tuple(emb.shape)} and {tuple(lab.shape)}"
            )
        if int(lab.min()) < 0:
            raise DataError(f"gallery labels must be class ids >= 0; got min {int(lab.min())}")
        c = int(lab.max()) + 1 if num_classes is None else int(num_classes)
        if int(lab.max()) >= c:
            raise DataError(f"gallery labels must lie in 0..{c - 1} for num_classes={c}; got max {int(lab.max())}")
        if class_names is None and c == len(FER2013_CLASSES):
            class_names = FER2013_CLASSES
        super().__init__(embedding_model, batch_size, class_names, precision)
        sums = torch.zeros(c, emb.shape[1]).index_add_(0, lab, F.normalize(emb, dim=1))
        counts = torch.bincount(lab, minlength=c)
        self.present = counts > 0
        if not bool(self.present.all()):
            missing = [self.class_name(i) for i in torch.nonzero(~self.present).flatten().tolist()]
            log.warning("PrototypeScorer: no gallery embedding for class(es) %s; they score -1", ", ".join(missing))
        self.centroids = F.normalize(sums, dim=1)  # (C, D); zero rows for absent classes
        self.embedding_dim = int(emb.shape[1])
        self._num_classes = c

    @classmethod
    def from_dataset(cls, embedding_model: nn.Module, dataset, batch_size: int = DEFAULT_BATCH_SIZE, **kwargs) -> "PrototypeScorer":
        """Embed a FERDataset (the training gallery) in batches and build the scorer from it."""
        model_dev = _model_device(embedding_model)
        prec = runtime.resolve_precision(kwargs.get("precision", "auto"), model_dev)
        x = dataset.images
        chunks = []
        with eval_mode(embedding_model), runtime.inference(model_dev, prec):
            for i in range(0, x.shape[0], batch_size):
                chunks.append(embedding_model(x[i:i + batch_size].float().div(255.0).to(model_dev)).float().cpu())
        kwargs.setdefault("num_classes", dataset.num_classes)
        kwargs.setdefault("class_names", dataset.class_names)
        return cls(embedding_model, torch.cat(chunks), dataset.labels, batch_size=batch_size, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.model(x).float(), dim=1)  # cosines in fp32 under any autocast
        cent = self.centroids.to(device=e.device, dtype=e.dtype)
        s = e @ cent.T
        if not bool(self.present.all()):
            s = torch.where(self.present.to(e.device)[None, :], s, torch.full_like(s, -1.0))
        return s


class KNNScorer(Scorer):
    """Vote probabilities of a kNN classifier over embeddings (black box: no gradients).

    Args:
        embedding_model: maps images (N, 1, 48, 48) to embeddings (N, D).
        knn_classifier: fitted, with `predict_proba(embeddings (M, D) float32) -> (M, C)`
            (fermetric.retrieval.knn.KNNClassifier).
        num_classes: C (default: the classifier's `num_classes`, else found on the first call).
        class_names: names of the C classes.
        batch_size: images per forward pass.
    """

    differentiable = False
    kind = "knn"
    _compilable = False  # the FAISS search is outside torch

    def __init__(self, embedding_model: nn.Module, knn_classifier: Any, num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str = "auto"):
        if not callable(getattr(knn_classifier, "predict_proba", None)):
            raise ModelError(f"KNNScorer needs a classifier with predict_proba; got {type(knn_classifier).__name__}")
        c = num_classes
        for attr in ("num_classes_", "num_classes"):  # fitted count first, then the declared one
            if c is None and isinstance(getattr(knn_classifier, attr, None), (int, np.integer)):
                c = int(getattr(knn_classifier, attr))
        if class_names is None:
            class_names = getattr(knn_classifier, "class_names", None)
        super().__init__(embedding_model, batch_size, class_names, precision)
        self.knn = knn_classifier
        if c is not None:
            self._num_classes = int(c)
        if self.class_names is None and self.num_classes == len(FER2013_CLASSES):  # num_classes probes if unknown
            self.class_names = FER2013_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb = self.model(x).float().cpu().numpy()
        return torch.as_tensor(self.vote(emb), dtype=torch.float32, device=x.device)

    def vote(self, embeddings: Any, exclude: Optional[np.ndarray] = None) -> np.ndarray:
        """(M, C) vote fractions of embeddings already computed (M, D), e.g. a run's cached split.

        Args:
            exclude: (M,) gallery index each query must not match (its own, when the queries are
                the gallery's images), or None.
        """
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        proba = self.knn.predict_proba(emb) if exclude is None else self.knn.predict_proba(emb, exclude=exclude)
        return np.asarray(proba)


class TTAScorer(Scorer):
    """Test-time augmentation of any scorer: the mean of its scores over views of each image.

    With a softmax ClassifierScorer this is the TTA softmax `evaluate --tta` reports (views:
    fermetric.evaluation.predict.tta_views, 5 shifted crops x {as is, flipped}).

    Args:
        scorer: the scorer whose scores are averaged (its model, precision, batch size and class
            names are this scorer's).
        views: images (B, 1, 48, 48) -> list of V batches of the same shape (default: tta_views).
    """

    kind = "tta"

    def __init__(self, scorer: Scorer, views: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = None):
        if not isinstance(scorer, Scorer):
            raise ModelError(f"TTAScorer wraps a fermetric scorer; got {type(scorer).__name__}")
        if views is None:
            from fermetric.evaluation.predict import tta_views as views
        super().__init__(scorer.model, scorer.batch_size, scorer.class_names, scorer.precision)
        self.inner, self.views = scorer, views
        self.differentiable = scorer.differentiable
        self._compilable = scorer._compilable
        self.compile = scorer.compile
        self._num_classes = scorer._num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.inner.forward(v).float() for v in self.views(x)]).mean(0)

    def with_model(self, model: nn.Module) -> "TTAScorer":
        other = super().with_model(model)
        other.inner = self.inner.with_model(model)
        return other

    def __repr__(self) -> str:
        return f"TTAScorer({self.inner!r})"


def gives_probabilities(scorer: Scorer) -> bool:
    """Whether a scorer's scores are class probabilities (rows summing to 1): a softmax
    classifier, a kNN vote, or a TTA mean of either. Logits and prototype cosines are not."""
    if isinstance(scorer, TTAScorer):
        return gives_probabilities(scorer.inner)
    if isinstance(scorer, EnsembleScorer):
        return True
    if isinstance(scorer, ClassifierScorer):
        return scorer.output == "softmax"
    return isinstance(scorer, KNNScorer)


class EnsembleScorer(Scorer):
    """A weighted soft vote: the weighted mean of its members' class probabilities.

    scores(x) = sum_i w_i * p_i(x), with the weights normalised to sum to 1, so the scores of an
    ensemble are probabilities like its members'. It is a scorer like every other: evaluation,
    predict and the black-box explanations (occlusion, LIME) take it as they take one model, and
    gradient methods too when every member is differentiable (softmax classifiers; a kNN member
    makes the vote a black box).

    Args:
        members: scorers of the same classes whose scores are probabilities (see
            `gives_probabilities`), on one device.
        weights: one non-negative weight per member (default: equal); normalised to sum to 1.
        names: a label per member (for reports), default "member0", ...
    """

    kind = "ensemble"
    _compilable = False  # members compile (or not) themselves; a kNN member is outside torch

    def __init__(self, members: Sequence[Scorer], weights: Optional[Sequence[float]] = None,
                 names: Optional[Sequence[str]] = None):
        members = list(members)
        if not members:
            raise ModelError("an EnsembleScorer needs at least one member scorer")
        for i, m in enumerate(members):
            if not isinstance(m, Scorer):
                raise ModelError(f"ensemble member {i} must be a fermetric scorer; got {type(m).__name__}")
            if not gives_probabilities(m):
                raise ModelError(f"ensemble member {i} ({m!r}) scores {getattr(m, 'output', m.kind)}, not probabilities: "
                                 "vote softmax classifiers (output='softmax') and kNN scorers")
        names = [f"member{i}" for i in range(len(members))] if names is None else [str(n) for n in names]
        if len(names) != len(members):
            raise ModelError(f"{len(names)} names for {len(members)} ensemble members")
        w = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ModelError(f"ensemble weights must be {len(members)} finite non-negative numbers with a positive sum; "
                             f"got {list(np.atleast_1d(w))}")
        class_sets = {m.class_names for m in members if m.class_names is not None}
        if len(class_sets) > 1:
            raise ModelError(f"ensemble members score different classes: {sorted(map(list, class_sets))}")
        devices = {str(m.device) for m in members}
        if len(devices) > 1:
            raise ModelError(f"ensemble members are on different devices ({', '.join(sorted(devices))}); load them on one")
        super().__init__(nn.ModuleList([m.model for m in members]), min(m.batch_size for m in members),
                         next(iter(class_sets), None), members[0].precision)
        self.members, self.names = members, names
        self.weights = (w / w.sum()).tolist()
        self.differentiable = all(m.differentiable for m in members)
        counts = {m._num_classes for m in members if m._num_classes is not None}
        if len(counts) > 1:
            raise ModelError(f"ensemble members score different numbers of classes: {sorted(counts)}")
        self._num_classes = next(iter(counts), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for w, m in zip(self.weights, self.members):
            s = w * m.forward(x).float()
            out = s if out is None else out + s
        return out

    def with_model(self, model: nn.Module) -> "EnsembleScorer":
        """The same vote over other member models: `model` is a ModuleList like `self.model`."""
        if not isinstance(model, nn.ModuleList) or len(model) != len(self.members):
            raise ModelError(f"an ensemble of {len(self.members)} members takes an nn.ModuleList of "
                             f"{len(self.members)} models; got {type(model).__name__}")
        other = super().with_model(model)
        other.members = [m.with_model(sub) for m, sub in zip(self.members, model)]
        return other

    @property
    def gradcam_layer(self) -> str:
        raise ModelError("Grad-CAM looks into one network's layer, and an ensemble has "
                         f"{len(self.members)} ({', '.join(self.names)}); explain a member, or use "
                         "saliency, occlusion or LIME on the ensemble")

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {w:.3g}" for n, w in zip(self.names, self.weights))
        return f"EnsembleScorer({parts})"


# -- input checks shared by every method --------------------------------------------------------

def check_scores(out: Any, n: int, scorer: Any = None) -> torch.Tensor:
    """The scorer's output, checked to be (n, C) scores."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        what = type(out).__name__ if not isinstance(out, torch.Tensor) else tuple(out.shape)
        who = type(getattr(scorer, "model", None)).__name__
        raise ModelError(f"{who} must map a batch of {n} images to scores of shape ({n}, C); got {what}")
    return out


def check_batch_size(batch_size: Any) -> int:
    return check_int("batch_size", batch_size, 1)


def as_image_batch(images: Any, keep_uint8: bool = False) -> torch.Tensor:
    """A float32 CPU copy (N, 1, 48, 48) in [0, 1] of `images`; the caller's tensor is never touched.

    Accepts a torch tensor or NumPy array, uint8 (0..255) or float in [0, 1]. With `keep_uint8`,
    uint8 images come back as they are (on the CPU, not copied) for the caller to convert batch by
    batch (`Scorer.scores` over a whole split).
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a tensor or array of shape (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}); got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1] != 1 or shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        hint = " (add the channel axis: images[:, None])" if images.dim() == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE) else ""
        raise DataError(f"images must have shape (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) (grayscale batch); got {shape}{hint}")
    x = images.detach()
    if x.dtype == torch.uint8:
        return x.cpu() if keep_uint8 else x.cpu().float().div_(255.0)
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 (0..255) or float in [0, 1]; got dtype {x.dtype}")
    x = x.to(device="cpu", dtype=torch.float32, copy=True)
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise DataError("images contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise DataError(f"float images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] (divide uint8 values by 255)")
    return x


def resolve_targets(scorer: Scorer, images: torch.Tensor, target: Any = None, batch_size: Optional[int] = None) -> torch.Tensor:
    """Class ids (N,) int64 to explain.

    Args:
        scorer: gives the number of classes and, for target=None, the predictions.
        images: (N, 1, 48, 48) float batch (already checked).
        target: None (the predicted class), an int or class name for every image, or a sequence /
            array / tensor of N ints or names.
    """
    n = images.shape[0]
    if target is None:
        return scorer.predict(images, batch_size)
    c = scorer.num_classes
    valid = f"valid: 0..{c - 1}" + (f" ({', '.join(scorer.class_names)})" if scorer.class_names else "")

    def one(t: Any) -> int:
        if isinstance(t, str):
            names = [s.lower() for s in (scorer.class_names or ())]
            if t.lower() not in names:
                raise ConfigError(f"unknown class name {t!r}; {valid}")
            return names.index(t.lower())
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise ConfigError(f"target class must be an int or class name; got {t!r}; {valid}")
        if not 0 <= int(t) < c:
            raise ConfigError(f"target class {int(t)} is out of range; {valid}")
        return int(t)

    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    if isinstance(target, (str, int, np.integer)) and not isinstance(target, bool):
        return torch.full((n,), one(target), dtype=torch.long)
    seq = list(np.asarray(target, dtype=object).ravel()) if not isinstance(target, (list, tuple)) else list(target)
    if len(seq) != n:
        raise ConfigError(f"target must be one class for all images or one per image ({n}); got {len(seq)} values")
    return torch.tensor([one(t.item() if isinstance(t, np.generic) else t) for t in seq], dtype=torch.long)


def require_differentiable(scorer: Scorer, method: str) -> None:
    """ModelError for gradient methods on a black-box scorer, saying what to use instead."""
    if not isinstance(scorer, Scorer):
        raise ModelError(f"method {method!r} needs a fermetric scorer (ClassifierScorer, PrototypeScorer, KNNScorer); got {type(scorer).__name__}")
    if not getattr(scorer, "differentiable", False):
        if isinstance(scorer, EnsembleScorer):
            black = [n for n, m in zip(scorer.names, scorer.members) if not m.differentiable]
            raise ModelError(
                f"method {method!r} needs gradients, but this EnsembleScorer is a black box: its member(s) "
                f"{', '.join(black)} vote through a kNN index. Use a black-box method on the ensemble (occlusion, "
                "lime), or a gradient method on one member")
        raise ModelError(
            f"method {method!r} needs gradients, but {type(scorer).__name__} is a black box (kNN vote through FAISS). "
            "Use PrototypeScorer (cosine to class centroids, differentiable) for gradient methods, "
            "or a black-box method: occlusion, lime"
        )
