"""Reading a run directory back: its config, its model (from best.pt), its data, and what its
derived files must be keyed to. Every command that takes RUN opens it here, and so does the zoo
(a pretrained entry hands its config, weights and gallery to the same constructor, `make_run`).

A Run only reads. What is computed from its weights lives in the layers above and is kept in
`Run.derived`: embeddings and the kNN index (fermetric.retrieval), class scores, probabilities and
predictions (fermetric.scoring). Those layers key their files to `Run.fingerprint` (the checkpoint's
SHA-256 and the embedding layer), so no command votes with a stale gallery after --resume or
retraining into the same directory."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from fermetric.config import RunConfig, load_run_config
from fermetric.data.dataset import DataSplits
from fermetric.data.sources import is_synth, load_data
from fermetric.errors import CheckpointError, DataError, FermetricError
from fermetric.models.factory import RUN_KINDS, build_model
import fermetric.run_layout as layout
from fermetric.runs.checkpoint import (
    as_fp32, check_belongs, check_compatible, check_finite, load_checkpoint_sha256, load_state_dict_checked,
)
from fermetric.runs.history import read_history
from fermetric.utils import runtime
from fermetric.utils.device import resolve_device
from fermetric.utils.io import read_json

log = logging.getLogger(__name__)

# Methods a Run had before its computing moved up the layers (after 0.1.0): name -> (where it lives now,
# the function once that layer is imported). Still callable on a Run for one release, with a
# DeprecationWarning; the layers above register their functions here (`register_moved`).
_MOVED: dict[str, tuple[str, Optional[Callable[..., Any]]]] = {
    "embeddings": ("fermetric.retrieval.embeddings.split_embeddings(run, split)", None),
    "embed": ("fermetric.retrieval.embeddings.embed_split(run, split)", None),
    "embed_images": ("fermetric.retrieval.embeddings.embed_images(run, dataset)", None),
    "knn": ("fermetric.retrieval.index.run_knn(run)", None),
    "build_index": ("fermetric.retrieval.index.build_run_index(run, ...)", None),
    "scorer": ("fermetric.scoring.run_scorer(run, kind, ...)", None),
    "scorers": ("fermetric.scoring.run_scorers(run, ...)", None),
    "predict_proba": ("fermetric.scoring.split_proba(run, split, tta)", None),
    "predict": ("fermetric.scoring.split_predictions(run, split, tta)", None),
    "predict_images": ("fermetric.scoring.dataset_predictions(run, dataset, tta)", None),
    "knn_report": ("fermetric.evaluation.knn_report.run_knn_report(run, split)", None),
}


def register_moved(name: str, fn: Callable[..., Any]) -> None:
    """Called by the layer a Run method moved to: `run.<name>(...)` calls `fn(run, ...)` (deprecated)."""
    _MOVED[name] = (_MOVED[name][0], fn)


class _MovedMethods:
    """Deprecated forwarding of the methods in `_MOVED` (shared by Run and EnsembleRun)."""

    def __getattr__(self, name: str):
        if name.startswith("__") or name not in _MOVED:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        where, fn = _MOVED[name]
        if fn is None:
            raise AttributeError(f"Run.{name} moved to {where}; import that module")
        warnings.warn(f"Run.{name}() is deprecated and will be removed in the next release; use {where}",
                      DeprecationWarning, stacklevel=2)
        return lambda *args, **kwargs: fn(self, *args, **kwargs)


def _source_string(source: str | Path) -> str:
    """A data source as a run's config records it: SynthFER's spec as given, a path absolute."""
    return str(source) if is_synth(str(source)) else str(Path(source).expanduser().absolute())


@dataclass
class Run(_MovedMethods):
    path: Path
    cfg: RunConfig
    kind: str
    class_names: tuple[str, ...]
    model: nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    precision: str = "auto"  # forward passes: auto, fp32, bf16, fp16 (fermetric.utils.runtime)
    checkpoint_path: Optional[Path] = None
    checkpoint_sha256: str = ""  # fingerprint of the weights: keys the embedding cache and the index
    pretrained: str = ""  # the zoo entry's name when the run is a pretrained model (fermetric.zoo)
    # a pretrained embedding model's shipped train embeddings and labels: kNN and prototypes without the data
    gallery: Optional[tuple[np.ndarray, np.ndarray]] = field(default=None, repr=False)
    _data: Optional[DataSplits] = field(default=None, repr=False)
    # what the layers above computed from the weights and data (embeddings, kNN index, class
    # probabilities), keyed by them; dropped when the data changes (`use_data`)
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> dict[str, Any]:
        p = layout.path_of(self.path, layout.METRICS)
        return read_json(p) if p.is_file() else {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of RUN/history.csv (one per epoch); [] before the first epoch ends."""
        return read_history(layout.path_of(self.path, layout.HISTORY))

    def load_data(self, source: Optional[str] = None) -> DataSplits:
        """The run's data (SynthFER is regenerated from the run's seed: the same images)."""
        if source is not None:
            return load_data(source, self.cfg.data, seed=self.cfg.seed)
        if self._data is None:
            try:
                data = load_data(None, self.cfg.data, seed=self.cfg.seed)
            except DataError as e:
                if not self.pretrained:
                    raise
                raise DataError(f"the pretrained model {self.pretrained!r} was trained on {self.cfg.data.source}, "
                                f"which is not here ({e}); give this machine's copy with --data PATH "
                                "(Python: run.use_data(PATH))") from None
            self._check_classes(data, f"its data {self.cfg.data.source}")
            self._data = data
        return self._data

    def use_data(self, source: str | Path | DataSplits, source_path: str | Path | None = None) -> DataSplits:
        """Read the run's own data from `source` from now on: a path (the copy of FER2013 a
        pretrained model was trained on, a run's data that moved) or loaded DataSplits (with
        `source_path`, the path they were read from, so that runs sharing them key their caches
        to it). The classes must be the run's; another data set is for `evaluate --data` (classes
        mapped). In-memory caches are dropped; the disk cache of embeddings is keyed to the source."""
        if isinstance(source, DataSplits):
            if source is self._data and (source_path is None or self.cfg.data.source == _source_string(source_path)):
                return source  # what it reads already (a member shared by an ensemble): its caches stay valid
            data = source
            if source_path is not None:
                self.cfg.data.source = _source_string(source_path)
        else:
            data = load_data(source, self.cfg.data, seed=self.cfg.seed)
            self.cfg.data.source = _source_string(source)
        self._check_classes(data, f"--data {data.name}")
        self._data = data
        self.derived.clear()
        return data

    def _check_classes(self, data: DataSplits, where: str) -> None:
        if tuple(data.class_names) != tuple(self.class_names):
            raise DataError(
                f"run {self.path} was trained on classes {list(self.class_names)} but {where} has "
                f"{list(data.class_names)}; to score another data set use evaluate / knn-eval --data "
                "(classes matched by name)"
            )

    @property
    def embedding_layer(self) -> str:
        """What the run embeds with: "pre-logits" (classifiers) or the embedding model's
        metric.embedding_layer ("backbone" or "projection")."""
        return "pre-logits" if self.kind == "classifier" else self.cfg.metric.embedding_layer

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Which weights and layer this run's derived files (embeddings, index, calibration) must come from."""
        return {"run": str(self.path), "checkpoint": self.checkpoint_path.name if self.checkpoint_path else None,
                "epoch": self.checkpoint.get("epoch"), "checkpoint_sha256": self.checkpoint_sha256,
                "embedding_layer": self.embedding_layer}

    def made_here(self, record: dict[str, Any]) -> bool:
        """Whether a derived file's record (its `fingerprint`) names this run's weights and layer;
        records from before the layer was recorded were all made with the projection (embedding
        runs) or the pre-logits (classifiers)."""
        legacy = "pre-logits" if self.kind == "classifier" else "projection"
        return (record.get("checkpoint_sha256") == self.checkpoint_sha256
                and record.get("embedding_layer", legacy) == self.embedding_layer)

    @property
    def crop_padding(self) -> int:
        """The padding of the random crops the model was trained on (0 without augmentation):
        where a ten-crop TTA takes its corner crops."""
        aug = self.cfg.data.augment
        return int(aug.crop_padding) if aug.enabled else 0

    @property
    def data_key(self) -> str:
        """The data the run reads (what derived files of its splits are keyed to)."""
        return str(self.cfg.data.source)

    def stored_calibration(self, tta: Any = None) -> Optional[dict[str, Any]]:
        """What `fermetric calibrate` fitted for these weights and this TTA (RUN/temperature.json):
        {"method": "temperature", "temperature": T} (classifiers) or {"method": "vote_smoothing",
        "alpha": a} (embedding runs' kNN vote); None when not calibrated, or for other weights,
        another TTA or an unreadable record."""
        path = layout.path_of(self.path, layout.TEMPERATURE)
        if self.kind not in ("classifier", "embedding") or not path.is_file():
            return None
        try:
            record = read_json(path)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not self.made_here(record) or (record.get("tta") or None) != (tta or None):
            return None
        method = record.get("method", "temperature")  # records before vote smoothing were temperatures
        key = layout.CALIBRATION_PARAMS.get(method)
        if key is None or (method == "temperature") != (self.kind == "classifier"):
            return None
        value = record.get(key)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
              and (value > 0 if method == "temperature" else value >= 0))
        return {"method": method, key: float(value)} if ok else None

    def single_network(self, what: str) -> None:
        """Nothing: a run is one network (an EnsembleRun refuses, naming its members)."""

    @property
    def index_dir(self) -> Path:
        return layout.path_of(self.path, layout.INDEX)


def load_run(path: str | Path, device: str | None = "auto", checkpoint: str = "best", precision: str = "auto") -> Run:
    """Open a run directory written by train-classifier / train-siamese / train-triplet (a zoo
    name is opened by fermetric.zoo.open_run, which the top-level fermetric.load_run is).

    `precision` (auto, fp32, bf16, fp16) sets the autocast of every forward pass through the run:
    evaluation, TTA, embeddings, kNN and the scorers. Checkpoints hold fp32 weights whatever the
    precision they were trained in.

    Raises:
        FermetricError / CheckpointError naming what is missing or wrong.
    """
    path = Path(path)
    if not path.is_dir():
        raise FermetricError(f"run directory {path} does not exist (a pretrained model's name is opened by "
                             "fermetric.load_run, i.e. fermetric.zoo.open_run)")
    cfg_path = layout.config_path(path)
    if not cfg_path.is_file():
        raise FermetricError(f"{path} is not a fermetric run directory (no {layout.CONFIG})")
    ckpt_path = layout.checkpoint_path(path, checkpoint)
    if not ckpt_path.is_file():
        fallback = layout.checkpoint_path(path, layout.LAST)
        if checkpoint == layout.BEST and fallback.is_file():
            ckpt_path = fallback
        else:
            raise CheckpointError(f"{ckpt_path} does not exist; has the run finished an epoch?")
    cfg = load_run_config(cfg_path)
    dev = resolve_device(device)
    runtime.resolve_precision(precision, dev)  # a bad value or one this device cannot run fails here
    ckpt, ckpt_sha256 = load_checkpoint_sha256(ckpt_path, map_location=dev)  # one read: hashed and loaded
    check_belongs(ckpt, ckpt_path, cfg, path)
    return make_run(path, cfg, ckpt, ckpt_path, ckpt_sha256, device=dev, precision=precision)


def make_run(path: Path, cfg: RunConfig, ckpt: dict[str, Any], ckpt_path: Path, ckpt_sha256: str, *,
             device: torch.device, precision: str = "auto", pretrained: str = "",
             gallery: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Run:
    """The one constructor of a Run from a config and a loaded checkpoint (a run directory's, or a
    zoo entry's with its shipped gallery): checks the weights, builds the model and loads them.

    Raises:
        CheckpointError: non-finite weights, an unknown run kind, or weights of another shape.
    """
    check_finite(ckpt.get("state_dict", {}), ckpt_path, cfg)
    kind = ckpt.get("kind", "")
    if kind not in RUN_KINDS:
        raise CheckpointError(f"{ckpt_path} is of unknown run kind {kind!r}; expected one of {', '.join(RUN_KINDS)}")
    class_names = tuple(ckpt.get("class_names", ()))
    # the checkpoint holds the trained weights: do not re-apply the run's starting weights
    cfg.model.weights, cfg.model.pretrained, cfg.model.init_from = None, False, None
    model = build_model(kind, cfg, len(class_names))
    check_compatible(ckpt, ckpt_path, name=cfg.model.name, num_classes=len(class_names))
    load_state_dict_checked(model, as_fp32(ckpt["state_dict"]), ckpt_path)
    model.to(device).eval()
    runtime.prepare_for_inference(model, device, runtime.resolve_precision(precision, device))
    return Run(path=path, cfg=cfg, kind=kind, class_names=class_names, model=model, checkpoint=ckpt, device=device,
               checkpoint_path=ckpt_path, checkpoint_sha256=ckpt_sha256, precision=precision, pretrained=pretrained,
               gallery=gallery)
