"""Checkpoints: written atomically, loaded with `weights_only=True`, checked before use.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing that needs
unpickling code), so loading a file someone shared cannot run code:

    {"format": "fermetric-checkpoint", "version": 1, "kind": "classifier" | "embedding",
     "model": {"name", "num_classes", "embedding_dim", ...}, "class_names": [...],
     "state_dict": ..., "optimizer": ..., "scheduler": ..., "epoch": completed epochs,
     "best": {"metric", "value", "epoch"}, "history": [...], "config": {...}, "rng": {...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from fermetric.config import RunConfig
from fermetric.errors import CheckpointError
import fermetric.run_layout as layout
from fermetric.utils.io import atomic_torch_save, read_json, read_torch_file, read_torch_file_sha256

FORMAT = "fermetric-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` (plus the format tag) atomically: a crash never leaves half a file."""
    state = {"format": FORMAT, "version": VERSION, **state}
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a fermetric checkpoint safely.

    Raises:
        CheckpointError: missing, truncated or not a checkpoint; holds arbitrary pickled objects
            (refused, never unpickled); saved on a device this machine lacks; or not written by
            fermetric (see fermetric.utils.io.read_torch_file).
    """
    return _load(path, map_location, digest=False)[0]


def load_checkpoint_sha256(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """`load_checkpoint`, and the hex SHA-256 of the bytes it was loaded from (the file is read
    once: the fingerprint that keys a run's caches is that of the weights in memory).

    Raises:
        CheckpointError: as load_checkpoint.
    """
    return _load(path, map_location, digest=True)


def _load(path: str | Path, map_location: str | torch.device, digest: bool) -> tuple[dict[str, Any], Optional[str]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if digest:
        ckpt, sha = read_torch_file_sha256(path, map_location)
    else:
        ckpt, sha = read_torch_file(path, map_location), None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a fermetric checkpoint (no format tag {FORMAT!r}); "
            "a plain state dict is a starting point for training (train-classifier --weights FILE, "
            "config model.weights), not a run's checkpoint"
        )
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer fermetric (format version {ckpt['version']} > {VERSION})")
    return ckpt, sha


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors (weights and buffers, BatchNorm statistics included)
    holding a NaN or an infinity; empty when all are finite."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]


def check_compatible(ckpt: dict[str, Any], path: str | Path, *, kind: Optional[str] = None, **expected: Any) -> None:
    """Compare a checkpoint's model description with what the caller is about to build.

    Args:
        kind: "classifier" or "embedding".
        expected: model fields, e.g. name="resnet18", num_classes=7, embedding_dim=128; None skips.

    Raises:
        CheckpointError naming each field that differs.
    """
    problems = []
    if kind is not None and ckpt.get("kind") != kind:
        problems.append(f"it is a {ckpt.get('kind')} checkpoint, not a {kind}")
    model = ckpt.get("model", {})
    for key, want in expected.items():
        if want is None:
            continue
        have = model.get(key)
        if have != want:
            problems.append(f"{key} is {have!r} there but {want!r} here")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match this model: " + "; ".join(problems))


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """load_state_dict with a readable error instead of a shape-mismatch traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        from fermetric.models.weights import state_dict_mismatch

        raise CheckpointError(f"weights in {path} do not fit this model (tensors differ in shape or name): "
                              + state_dict_mismatch(mismatched, missing, unexpected))
    module.load_state_dict(state_dict)


def as_fp32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16-stored floating tensors back to fp32 (integer buffers such as num_batches_tracked kept):
    the zoo ships fp16 weights, and every run computes in fp32 or autocasts from it."""
    return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in state_dict.items()}


def check_finite(state_dict: dict[str, Any], ckpt_path: Path, cfg: Optional[RunConfig] = None) -> None:
    """Refuse weights with NaN or inf: they score like a random guess, never like a model.

    Raises:
        CheckpointError naming the file and the first non-finite tensor.
    """
    for name in non_finite_tensors(state_dict)[:1]:
        t = state_dict[name]
        bad = int((~torch.isfinite(t)).sum())
        lr = f" (e.g. --set optim.lr={cfg.optim.lr / 10:g})" if cfg is not None else ""
        raise CheckpointError(
            f"{ckpt_path}: tensor {name!r} has {bad} NaN/inf value(s) of {t.numel()}: training diverged. "
            f"Retrain, or --resume from an earlier checkpoint, with a lower learning rate{lr}"
        )


# config.yaml keys that fix the weights' shapes (or the data they were trained on)
_ARCH_KEYS = ("name", "stem", "width", "embedding_dim")
_DATA_KEYS = ("source", "ferplus", "class_map")


def check_belongs(ckpt: dict[str, Any], ckpt_path: Path, cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a checkpoint that is not this run's: of another kind than metrics.json records,
    or with another architecture or data than config.yaml.

    Raises:
        CheckpointError naming the checkpoint, the run's file and both values.
    """
    kind = ckpt.get("kind")
    metrics_path = layout.path_of(run_dir, layout.METRICS)
    run_kind = None
    if metrics_path.is_file():
        try:
            run_kind = read_json(metrics_path).get("kind")
        except (OSError, ValueError, AttributeError):
            run_kind = None
    if run_kind is not None and kind != run_kind:
        raise CheckpointError(
            f"{ckpt_path} is a {kind} checkpoint but {metrics_path} says the run is a {run_kind} run: "
            "the checkpoint comes from another run; put back this run's own checkpoint"
        )
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return  # checkpoints that predate the stored config: the shape check still applies
    problems = []
    for section, keys, own in (("model", _ARCH_KEYS, cfg.model), ("data", _DATA_KEYS, cfg.data)):
        have = saved.get(section) or {}
        for key in keys:
            if key == "embedding_dim" and kind != "embedding":
                continue
            if key in have and have[key] != getattr(own, key):
                problems.append(f"{section}.{key} is {have[key]!r} in the checkpoint but {getattr(own, key)!r} in config.yaml")
    n = (ckpt.get("model") or {}).get("num_classes")
    names = ckpt.get("class_names")
    if n is not None and names is not None and n != len(names):
        problems.append(f"model.num_classes is {n} but the checkpoint names {len(names)} classes")
    if problems:
        raise CheckpointError(f"{ckpt_path} does not belong to the run {layout.config_path(run_dir)}: " + "; ".join(problems)
                              + ". Put back this run's own checkpoint or retrain")
