"""The Scorer: images in, class scores out, the one path every prediction takes.

A scorer maps images (N, 1, 48, 48) float in [0, 1] (or uint8) to class scores (N, C). Every
prediction of class scores in fermetric -- evaluate, ensembles, predict, the face predictor, the
kNN report, validation during training, every explanation -- goes through a scorer, so the two
model families are scored, compared and explained the same way. The kinds live beside this module:

- ClassifierScorer (classifier.py): a classifier's logits or softmax; differentiable.
- PrototypeScorer (prototype.py): cosine of an embedding to each class centroid of a gallery;
  differentiable, so gradient methods work on metric models.
- KNNScorer (knn.py): vote fractions of a FAISS kNN classifier; a black box.
- TTAScorer (tta.py): the mean of any scorer over test-time-augmentation views.
- EnsembleScorer (ensemble.py): a weighted soft vote of scorers.

Scorers run the model in eval mode, in batches, without gradients unless a method asks, and leave
the model's train/eval flags, the caller's tensors and every .grad as they found them.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import DataError, ModelError
from fermetric.models.layers import default_gradcam_layer, eval_mode
from fermetric.utils import runtime
from fermetric.utils.checks import check_int

log = logging.getLogger(__name__)


# Measured on CPU (1 thread): resnet18 with the 48x48 "small" stem is fastest at 32-64 images a
# batch (activations outgrow the caches beyond), the "imagenet" stem at 64-128.
DEFAULT_BATCH_SIZE = 64


def model_device(model: nn.Module) -> torch.device:
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
    # where `scores` runs the network: "auto", "torch" or "onnxruntime" (fermetric.models.onnx:
    # fp32 ONNX Runtime on the CPU, for no-grad batches only); set on an instance to change it
    backend: str = "auto"

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
        other.__dict__.pop("_onnx", None)
        other.__dict__.pop("_onnx_missing", None)
        return other

    # -- shared -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return model_device(self.model)

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
        fast = self._backend_forward(prec, dev)
        if fast is not None:
            prec = "fp32"  # ONNX Runtime runs fp32; what follows the network (softmax, cosines) too
        cl = runtime.use_channels_last(dev, prec)
        out = []
        with self.evaluating(), runtime.inference(dev, prec):
            fwd = fast or self._scores_forward(bs, prec, dev)
            eager = fwd == self.forward  # (a new bound-method object on every attribute access: not `is`)
            t0 = time.perf_counter()
            for i in range(0, x.shape[0], bs):
                xb = x[i:i + bs]
                if xb.dtype == torch.uint8:
                    xb = xb.float().div_(255.0)
                n = xb.shape[0]
                if isinstance(fwd, runtime.CompiledWithFallback) and n < bs:  # one batch shape: no recompile for the last batch
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

    # -- the ONNX Runtime backend --------------------------------------------------------------
    def _graph(self) -> Optional[tuple[nn.Module, Any]]:
        """(the network to export, what turns its output into scores), or None where the scorer's
        no-grad forward has no ONNX path. Subclasses with a network define it."""
        return None

    def _fast_forward(self, export: bool = True):
        """The no-grad forward through ONNX Runtime (images -> scores), or None (no ONNX path, or
        the graph not cached and `export` False). Wrapping scorers compose their inner ones'."""
        from fermetric.models import onnx

        graph = self._graph()
        if graph is None:
            return None
        network, post = graph
        key = ("onnx", id(network), tuple((p.data_ptr(), p._version) for p in network.parameters()))
        cached = self.__dict__.get("_onnx")
        if cached is not None and cached[0] == key:
            return cached[1]
        if not export and self.__dict__.get("_onnx_missing") == key:
            return None  # looked for these weights' graph already: not hashed again on every call
        session = onnx.graph_for(network, export=export)
        if session is None:
            self._onnx_missing = key
            return None
        fn = (lambda x: post(session(x))) if post is not None else session
        self._onnx = (key, fn)
        return fn

    def _backend_forward(self, prec: str, dev: torch.device):
        """The ONNX Runtime forward where `backend` resolves to it, else None (PyTorch)."""
        from fermetric.models import onnx

        decision = onnx.resolve_backend(self.backend, dev, self.precision, prec)
        if decision == "torch":
            return None
        if decision == "onnxruntime":
            fn = self._fast_forward()
            if fn is None:
                raise ModelError(f"{self!r} has no ONNX Runtime path; use backend torch")
            return fn
        # auto: a graph already cached is used at once; a new one is exported once eager passes
        # have taken longer than the export would
        slow = getattr(self, "_eager_seconds", 0.0) >= onnx.EXPORT_AFTER_SECONDS
        try:
            return self._fast_forward(export=slow)
        except Exception as e:  # noqa: BLE001 - an export that fails leaves auto on PyTorch
            log.warning("ONNX Runtime backend unavailable for %r (%s: %s); scoring with PyTorch", self, type(e).__name__, e)
            self.backend = "torch"
            return None

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
