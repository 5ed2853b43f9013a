"""Embeddings of a run's splits (pre-logit features for classifiers), cached on disk keyed to the
checkpoint, and of any other images.

RUN/embeddings/<split>.npy, <split>_labels.npy and <split>.json: the JSON records the weights
(`Run.fingerprint`) and data they came from, and a cache made by other weights, another layer or
other data (or without a record) is recomputed and overwritten, so that nothing derived from
stale weights is ever voted with after --resume or retraining into the same directory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from fermetric.data.dataset import FERDataset
from fermetric.models import onnx
from fermetric.models.layers import PreLogits
import fermetric.run_layout as layout
from fermetric.runs.reader import register_moved
from fermetric.utils import runtime
from fermetric.utils.io import read_json, save_npy, write_json
from fermetric.utils.runlock import known_read_only

log = logging.getLogger(__name__)


def embed_dataset(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    network: Optional[nn.Module] = None,
    backend: str = "auto",
) -> np.ndarray:
    """Apply `embed` (images -> (B, D)) to a whole split in batches; returns float32 (N, D).

    `precision` (auto, fp32, bf16, fp16; see utils.runtime) sets the autocast of the forward
    passes; the embeddings come back fp32. With `network` (an nn.Module whose forward is `embed`),
    `backend` may run it through ONNX Runtime (fermetric.models.onnx; "auto": where precision
    resolves to fp32 and the graph is cached or the data set is a gallery's size).
    """
    prec = runtime.resolve_precision(precision, device)
    if network is not None:
        decision = onnx.resolve_backend(backend, torch.device(device), precision, prec)
        if decision == "onnxruntime":
            embed = onnx.graph_for(network)
        elif decision is None and len(dataset) >= onnx.EXPORT_FOR_IMAGES:
            try:
                embed = onnx.graph_for(network)
            except Exception as e:  # noqa: BLE001 - an export that fails leaves auto on PyTorch
                log.warning("ONNX Runtime backend unavailable (%s: %s); embedding with PyTorch", type(e).__name__, e)
        elif decision is None:
            embed = onnx.graph_for(network, export=False) or embed
        prec = "fp32" if isinstance(embed, onnx.OnnxGraph) else prec
    cl = runtime.use_channels_last(device, prec)
    out = []
    with runtime.inference(device, prec):
        for start in range(0, len(dataset), batch_size):
            x = dataset.float_images(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
            out.append(embed(runtime.to_memory_format(x, cl)).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def embedding_function(model: Any):
    """What a run's model embeds with: its `embed` (a classifier's pre-logit features, an embedding
    model's chosen layer), else the model itself. The caller sets the train/eval mode."""
    return model.embed if hasattr(model, "embed") else model


def _embed_fn(run: Any):
    run.model.eval()
    return embedding_function(run.model)


def _embed_run(run: Any, dataset: FERDataset, batch_size: int) -> np.ndarray:
    """embed_dataset with the run's embedding (and its network, for the ONNX backend)."""
    return embed_dataset(_embed_fn(run), dataset, batch_size, run.device, precision=run.precision,
                         network=PreLogits(run.model))


def embed_images(run: Any, dataset: FERDataset, batch_size: int = 512) -> np.ndarray:
    """(N, D) float32 embeddings (pre-logit features for classifiers) of any FERDataset, e.g.
    another data set's images (not cached: only the run's own splits are)."""
    run.single_network("embedding")
    return _embed_run(run, dataset, batch_size)


def split_embeddings(run: Any, split: str, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 embeddings (pre-logit features for classifiers) and (N,) labels of a split
    of the run's data; a pretrained embedding model's train split is its shipped gallery.

    Cached in `run.derived` and on disk (see the module docstring).
    """
    run.single_network("embedding")
    if split == "train" and run.gallery is not None:
        return run.gallery
    key = f"embed:{split}"
    if key not in run.derived:
        folder = layout.path_of(run.path, layout.EMBEDDINGS)
        emb_path, lab_path, meta_path = folder / f"{split}.npy", folder / f"{split}_labels.npy", folder / f"{split}.json"
        cached = _read_cache(run, emb_path, lab_path, meta_path)
        if cached is None:
            ds = run.load_data()[split]
            cached = _embed_run(run, ds, batch_size), ds.labels.numpy()
            try:
                if known_read_only(run.path):  # not even tried: the run stays as it is
                    raise OSError("the run is read-only")
                folder.mkdir(parents=True, exist_ok=True)
                save_npy(emb_path, cached[0])
                save_npy(lab_path, cached[1])
                # written last: arrays without a matching record are never trusted
                write_json(meta_path, {**run.fingerprint, "split": split, "data": run.data_key,
                                       "shape": list(cached[0].shape)})
            except OSError as e:  # a read-only run still evaluates, just without the disk cache
                log.warning("could not cache embeddings in %s (%s); they are recomputed next time", folder, e)
        run.derived[key] = cached
    return run.derived[key]


def embed_split(run: Any, split: str, batch_size: int = 512) -> np.ndarray:
    """(N, D) float32: the embeddings of `split_embeddings` without the labels."""
    return split_embeddings(run, split, batch_size)[0]


def _read_cache(run: Any, emb_path: Path, lab_path: Path, meta_path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if not (emb_path.is_file() and lab_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or not run.made_here(meta):
            log.info("embedding cache %s was made by other weights or another layer; recomputing it", emb_path)
            return None
        if meta.get("data", run.data_key) != run.data_key:  # records without "data" predate use_data
            log.info("embedding cache %s was made from other data (%s); recomputing it", emb_path, meta.get("data"))
            return None
        emb, labels = np.load(emb_path, allow_pickle=False), np.load(lab_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        log.warning("embedding cache %s is unreadable (%s); recomputing it", emb_path, e)
        return None
    if emb.ndim != 2 or labels.shape != (emb.shape[0],) or list(emb.shape) != meta.get("shape"):
        log.warning("embedding cache %s does not match its record %s; recomputing it", emb_path, meta_path)
        return None
    return emb.astype(np.float32, copy=False), labels


register_moved("embeddings", split_embeddings)
register_moved("embed", embed_split)
register_moved("embed_images", embed_images)
