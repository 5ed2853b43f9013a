"""The ONNX Runtime backend of the scorers' forward-only work (`Scorer.backend`).

A scorer's network (a classifier's logits, an embedding model's embedding) is exported once to an
ONNX graph with a dynamic batch axis and run by ONNX Runtime in fp32; what the scorer does after
the network (softmax, the kNN vote, the cosine to prototypes, the TTA mean, an ensemble's vote)
stays in PyTorch / FAISS. Gradients never go through it: gradient methods call `Scorer.forward`.

Graphs are cached on disk under $FERMETRIC_CACHE/onnx (default ~/.cache/fermetric/onnx), named
by the SHA-256 of the network's weights and buffers, its class, the input shape and the
exporter's versions, with a JSON stamp beside each; a graph whose stamp does not match the
network it is asked for (stale weights, an edited file) is refused and exported again.

Why ONNX Runtime: measured on 2-core CPUs (scripts/bench_inference.py; README, Speed) it is
1.3-2x PyTorch's fp32 forward for these small 48x48 networks; where the CPU has native bf16,
PyTorch's bf16 autocast is faster still, so `auto` uses ONNX Runtime only where the scorer's
precision resolves to fp32 (see `resolve_backend`). OpenVINO was measured too (fp32: within 10 %
of ONNX Runtime) and is not used.

ONNX Runtime is optional (`pip install fermetric[fast]`); without it, backend "onnxruntime"
fails with a one-line message and "auto" stays on PyTorch.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import ConfigError, FermetricError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
ENV_BACKEND = "FERMETRIC_BACKEND"  # overrides "auto" (tests pin it to torch)
OPSET = 17
INPUT, OUTPUT = "images", "scores"
# "auto" exports a graph not yet cached once a scorer has spent this long in eager forward passes
# (an export takes 2-4 s for these networks); a cached graph is used at once
EXPORT_AFTER_SECONDS = 3.0
# ... and embedding a data set of at least this many images (a gallery) exports at once
EXPORT_FOR_IMAGES = 2000


class StaleGraphError(FermetricError):
    """An ONNX graph was made for other weights than the network it is used for."""


def onnxruntime_available() -> bool:
    """Whether the backend can work here: onnxruntime runs the graph, onnx is what torch's exporter
    writes it with (one without the other is a half-installed extra: auto stays on PyTorch)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def require_onnxruntime():
    import importlib

    try:
        importlib.import_module("onnx")  # torch's exporter writes the graph with it
        import onnxruntime
    except ImportError as e:
        raise FermetricError(f"backend onnxruntime needs the onnxruntime and onnx packages ({e.name or e} is missing): "
                             "pip install 'fermetric[fast]', or use --backend torch") from e
    return onnxruntime


def check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return str(backend)


def resolve_backend(backend: str, device: torch.device, requested: str, precision: str) -> Optional[str]:
    """"torch" or "onnxruntime" for a scorer's no-grad scoring; None: "auto" where ONNX Runtime
    would be used once it pays (see EXPORT_AFTER_SECONDS).

    Args:
        backend: the scorer's backend ("auto", "torch", "onnxruntime"); "auto" takes
            $FERMETRIC_BACKEND (`fermetric --backend`) where set.
        device: where the scorer's model is.
        requested: the scorer's precision setting ("auto", "fp32", "bf16", "fp16").
        precision: that setting resolved for the device ("fp32", "bf16", "fp16"): "auto" uses
            ONNX Runtime only where it is fp32 (where bf16 is native, PyTorch's bf16 is faster).
    """
    backend = check_backend(os.environ.get(ENV_BACKEND, "").strip() or backend) if backend == "auto" \
        else check_backend(backend)
    if backend == "onnxruntime":
        require_onnxruntime()
        if torch.device(device).type != "cpu":
            raise ConfigError("backend onnxruntime runs on the CPU; the model is on "
                              f"{torch.device(device).type}: use --device cpu or --backend torch")
        if requested not in ("auto", "fp32"):
            raise ConfigError(f"backend onnxruntime runs in fp32; the scorer asks for {requested}: "
                              "use --precision fp32 (or auto) with it, or --backend torch")
        return "onnxruntime"
    if backend == "torch" or torch.device(device).type != "cpu" or precision != "fp32" or not onnxruntime_available():
        return "torch"
    return None


def cache_root() -> Path:
    from fermetric.utils.io import cache_dir

    return cache_dir() / "onnx"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers (names, shapes, dtypes, values), its class and
    the settings that change its forward without being weights (an embedding model's
    `embedding_layer`: backbone and projection are two graphs of one state dict)."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, m in module.named_modules():
        if isinstance(getattr(m, "embedding_layer", None), str):
            h.update(f"{name}.embedding_layer={m.embedding_layer}".encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _stamp(module: nn.Module, digest: str) -> dict[str, Any]:
    return {"weights_sha256": digest, "network": f"{type(module).__module__}.{type(module).__qualname__}",
            "input": [1, IMAGE_SIZE, IMAGE_SIZE], "opset": OPSET, "torch": torch.__version__}


def export_graph(module: nn.Module, path: Path) -> None:
    """Write `module` (eval mode, fp32, CPU copy) as an ONNX graph with a dynamic batch axis."""
    import copy

    net = copy.deepcopy(module).float().cpu().eval()
    x = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter: 2x faster to export than the dynamo one and silent; both give
        # the same graph for these convolutional networks
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}}, opset_version=OPSET, dynamo=False)
    path.write_bytes(buf.getvalue())


class OnnxGraph:
    """A network's ONNX graph in an ONNX Runtime session: (B, 1, 48, 48) float tensor in, the
    network's fp32 output (a torch tensor) out.

    Args:
        path: the .onnx file; its stamp (path.with_suffix(".json")) must name `digest`.
        digest: weights_digest of the network the caller wants.
        threads: ONNX Runtime's intra-op threads (default: torch's, i.e. `fermetric --threads`).
    """

    def __init__(self, path: Path, digest: str, threads: Optional[int] = None):
        ort = require_onnxruntime()
        stamp_path = path.with_suffix(".json")
        try:
            stamp = json.loads(stamp_path.read_text())
        except (OSError, ValueError) as e:
            raise StaleGraphError(f"{path}: no readable stamp {stamp_path.name} ({e}); export the graph again") from e
        if not isinstance(stamp, dict) or stamp.get("weights_sha256") != digest:
            raise StaleGraphError(f"{path} was exported for other weights (stamp {str(stamp.get('weights_sha256'))[:12]}, "
                                  f"network {digest[:12]}): refused; export the graph again")
        if stamp.get("graph_sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            raise StaleGraphError(f"{path} does not match its stamp (edited or truncated): refused; export it again")
        self.path, self.digest = path, digest
        self.session = cpu_session(str(path), threads, ort)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xn = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: xn})[0])


def cpu_session(model: str | bytes, threads: Optional[int] = None, ort: Any = None):
    """An ONNX Runtime session on the CPU as fermetric runs them: `threads` intra-op threads
    (default: torch's, i.e. `fermetric --threads`), one inter-op thread, warnings silenced.

    Args:
        model: a graph's path or its bytes.
        ort: the onnxruntime module when the caller has imported it (else imported here).
    """
    if ort is None:
        import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def cached_graph_path(module: nn.Module, digest: Optional[str] = None) -> Path:
    return cache_root() / f"{digest or weights_digest(module)}.onnx"


def graph_for(module: nn.Module, digest: Optional[str] = None, export: bool = True) -> Optional[OnnxGraph]:
    """The cached ONNX graph of `module`, exported first when `export` (else None when not cached).
    A cached graph that fails its stamp is exported again."""
    digest = digest or weights_digest(module)
    path = cached_graph_path(module, digest)
    if path.is_file():
        try:
            return OnnxGraph(path, digest)
        except StaleGraphError as e:
            log.warning("%s", e)
    if not export:
        return None
    write_graph(module, path, digest)
    return OnnxGraph(path, digest)


def write_graph(module: nn.Module, path: Path, digest: Optional[str] = None, extra: Optional[dict] = None) -> Path:
    """Export `module` to `path` with its stamp beside it (both written whole or not at all)."""
    from fermetric.utils.io import write_json

    digest = digest or weights_digest(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        export_graph(module, tmp)
        stamp = {**_stamp(module, digest), "graph_sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(), **(extra or {})}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(path.with_suffix(".json"), stamp)
    return path
