"""Reading a run directory back: its config, its model (from best.pt), its data, and the
class probabilities or embeddings of any split. Every command that takes RUN goes through here,
for classifier and embedding runs alike.

What a run derives from its weights is keyed to the checkpoint it came from (the SHA-256 of the
checkpoint file, `Run.checkpoint_sha256`): the embedding cache RUN/embeddings/ is recomputed when
it was made by other weights, and the kNN index RUN/index/ (built by `fermetric build-index`) is
refused, naming the command that rebuilds it, so that no command votes with a stale gallery after
--resume or retraining into the same directory."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from fermetric.config import RunConfig, load_run_config
from fermetric.data.dataset import DataSplits
from fermetric.data.sources import is_synth, load_data
from fermetric.errors import CheckpointError, DataError, FermetricError
from fermetric.models.factory import RUN_KINDS, build_model
from fermetric.runs.history import read_history
from fermetric.runs.checkpoint import check_compatible, load_checkpoint_sha256, load_state_dict_checked, non_finite_tensors
from fermetric.utils import runtime
from fermetric.utils.device import resolve_device
from fermetric.utils.io import read_json, save_npy, write_json
from fermetric.utils.runlock import known_read_only

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
INDEX_DIR = "index"


@dataclass
class Run:
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
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return read_json(p) if p.is_file() else {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of RUN/history.csv (one per epoch); [] before the first epoch ends."""
        return read_history(self.path / "history.csv")

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
            data = source
            if source_path is not None:
                p = str(source_path)
                self.cfg.data.source = p if is_synth(p) else str(Path(p).expanduser().absolute())
        else:
            data = load_data(source, self.cfg.data, seed=self.cfg.seed)
            self.cfg.data.source = str(source) if is_synth(str(source)) else str(Path(source).expanduser().absolute())
        self._check_classes(data, f"--data {data.name}")
        self._data = data
        self._cache.clear()
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

    def embed(self, split: str, batch_size: int = 512) -> np.ndarray:
        """(N, D) float32: embeddings (embedding runs) or pre-logit features (classifiers)."""
        return self.embeddings(split, batch_size)[0]

    def embeddings(self, split: str, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) float32 embeddings (pre-logit features for classifiers) and (N,) labels of a split.

        Cached in memory and on disk as RUN/embeddings/<split>.npy, <split>_labels.npy and
        <split>.json; the JSON records the checkpoint's SHA-256, and a cache made by other
        weights (or without a record) is recomputed and overwritten.
        """
        if split == "train" and self.gallery is not None:
            return self.gallery
        key = f"embed:{split}"
        if key not in self._cache:
            folder = self.path / EMBEDDINGS_DIR
            emb_path, lab_path, meta_path = folder / f"{split}.npy", folder / f"{split}_labels.npy", folder / f"{split}.json"
            cached = self._read_embedding_cache(emb_path, lab_path, meta_path)
            if cached is None:
                from fermetric.evaluation.predict import embed_dataset

                self.model.eval()
                fn = self.model.embed if hasattr(self.model, "embed") else self.model
                ds = self.load_data()[split]
                cached = embed_dataset(fn, ds, batch_size, self.device, precision=self.precision), ds.labels.numpy()
                try:
                    if known_read_only(self.path):  # not even tried: the run stays as it is
                        raise OSError("the run is read-only")
                    folder.mkdir(parents=True, exist_ok=True)
                    save_npy(emb_path, cached[0])
                    save_npy(lab_path, cached[1])
                    # written last: arrays without a matching record are never trusted
                    write_json(meta_path, {**self.fingerprint, "split": split, "data": self._data_key,
                                           "shape": list(cached[0].shape)})
                except OSError as e:  # a read-only run still evaluates, just without the disk cache
                    log.warning("could not cache embeddings in %s (%s); they are recomputed next time", folder, e)
            self._cache[key] = cached
        return self._cache[key]

    @property
    def _data_key(self) -> str:
        return str(self.cfg.data.source)

    def _read_embedding_cache(self, emb_path: Path, lab_path: Path, meta_path: Path):
        if not (emb_path.is_file() and lab_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = read_json(meta_path)
            if not isinstance(meta, dict) or not self.made_here(meta):
                log.info("embedding cache %s was made by other weights or another layer; recomputing it", emb_path)
                return None
            if meta.get("data", self._data_key) != self._data_key:  # records without "data" predate use_data
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

    def _gallery_exclude(self, split: str) -> Optional[np.ndarray]:
        """Queries from the gallery split (train) must not find themselves: their own indices."""
        if split != "train":
            return None
        n, gallery = len(self.embed(split)), len(self.knn())
        if n != gallery:
            raise CheckpointError(f"the kNN gallery has {gallery} vectors but the train split {n} images; "
                                  f"rebuild the index: fermetric build-index {self.path}")
        return np.arange(n)

    @property
    def crop_padding(self) -> int:
        """The padding of the random crops the model was trained on (0 without augmentation):
        where a ten-crop TTA takes its corner crops."""
        aug = self.cfg.data.augment
        return int(aug.crop_padding) if aug.enabled else 0

    def predict_proba(self, split: str, tta: bool | str = False, batch_size: int = 512) -> np.ndarray:
        """(N, C) class probabilities of a split through the run's scorer: softmax for classifiers
        (TTAScorer with `tta`: True / "shift" or "tencrop"), kNN vote fractions (gallery = the
        train split) for embedding runs, voted from the cached embeddings; train images never
        vote for themselves."""
        from fermetric.evaluation.predict import resolve_tta

        mode = resolve_tta(tta)
        key = f"proba:{split}:{mode}"
        if key in self._cache:
            return self._cache[key]
        if self.kind == "classifier":
            # one pass over a split: a compile (40-90 s) would not repay itself
            sc = self.scorer("classifier", output="softmax", batch_size=batch_size, tta=mode or False, compile=False)
            probs = sc.scores(self.load_data()[split].images).numpy()
        else:
            if mode:
                raise FermetricError("TTA is for classifier runs; embedding runs vote through the kNN index")
            probs = self.scorer("knn").vote(self.embed(split, batch_size), exclude=self._gallery_exclude(split))
        self._cache[key] = probs
        return probs

    def predict(self, split: str, tta: bool | str = False) -> np.ndarray:
        """(N,) predicted class ids of a split: the softmax arg-max for classifiers; for embedding
        runs the kNN prediction (ties to the nearest neighbour's class, as knn-eval counts them)."""
        if self.kind == "classifier" or tta:
            return self.predict_proba(split, tta=tta).argmax(1)
        return self.knn().predict(self.embed(split), exclude=self._gallery_exclude(split))

    def embed_images(self, dataset, batch_size: int = 512) -> np.ndarray:
        """(N, D) float32 embeddings (pre-logit features for classifiers) of any FERDataset,
        e.g. another data set's images (not cached: only the run's own splits are)."""
        from fermetric.evaluation.predict import embed_dataset

        self.model.eval()
        fn = self.model.embed if hasattr(self.model, "embed") else self.model
        return embed_dataset(fn, dataset, batch_size, self.device, precision=self.precision)

    def predict_images(self, dataset, tta: bool | str = False, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class ids (N,) and probabilities (N, C) of any FERDataset (another data
        set's images): the softmax (TTA on request) for classifiers, the kNN vote over the run's
        train gallery for embedding runs (no image of `dataset` is in the gallery)."""
        from fermetric.evaluation.predict import resolve_tta

        mode = resolve_tta(tta)
        if self.kind == "classifier":
            sc = self.scorer("classifier", output="softmax", batch_size=batch_size, tta=mode or False, compile=False)
            probs = sc.scores(dataset.images).numpy()
            return probs.argmax(1), probs
        if mode:
            raise FermetricError("TTA is for classifier runs; embedding runs vote through the kNN index")
        emb = self.embed_images(dataset, batch_size)
        knn = self.knn()
        return knn.predict(emb), knn.predict_proba(emb)

    def scorer(self, kind: str = "auto", output: str = "softmax", batch_size: int = 256, tta: bool | str = False,
               compile: Any = "auto"):
        """The run as a Scorer (images -> class scores): the one path from images to class scores
        that evaluation, ensembles, the face predictor and every analysis method take.

        Args:
            kind: "auto" (classifier runs: "classifier"; embedding runs: "prototype"),
                "classifier", "prototype" (cosine to train-class centroids, differentiable) or
                "knn" (kNN vote fractions through the FAISS index, black box).
            output: classifier scores as "softmax" probabilities or raw "logits".
            batch_size: images per forward pass.
            tta: wrap the scorer in a TTAScorer: True / "shift" (mean scores over 5 crops x flip)
                or "tencrop" (the crops at the run's training crop padding, see
                fermetric.evaluation.predict.tta_views).
            compile: the scorer's torch.compile setting (see Scorer.compile); False for one pass
                over a split or for small batches of varying size.
        """
        from fermetric.analysis import ClassifierScorer, KNNScorer, PrototypeScorer
        from fermetric.evaluation.predict import tta_scorer

        kinds = ("auto", "classifier", "prototype", "knn")
        if kind not in kinds:
            raise FermetricError(f"unknown scorer {kind!r}; valid: {', '.join(kinds)}")
        if kind == "auto":
            kind = "classifier" if self.kind == "classifier" else "prototype"
        if kind == "classifier":
            if self.kind != "classifier":
                raise FermetricError(f"{self.path} is an embedding run; use the 'prototype' or 'knn' scorer")
            sc = ClassifierScorer(self.model, output=output, class_names=self.class_names, batch_size=batch_size,
                                  precision=self.precision)
        else:
            embed_model = self.model if self.kind == "embedding" else _PreLogits(self.model)
            if kind == "prototype":
                gallery, labels = self.embeddings("train")
                sc = PrototypeScorer(embed_model, gallery, labels, num_classes=len(self.class_names),
                                     class_names=self.class_names, batch_size=batch_size, precision=self.precision)
            else:
                sc = KNNScorer(embed_model, self.knn(), num_classes=len(self.class_names),
                               class_names=self.class_names, batch_size=batch_size, precision=self.precision)
        sc.compile = compile
        return tta_scorer(sc, tta, self.crop_padding)

    def scorers(self, knn: bool = True, **kwargs: Any) -> dict[str, Any]:
        """The run's scorers for comparing explanations, labelled "<run> (<model>)": the classifier
        scorer of a classifier run; the prototype scorer of an embedding run and, with `knn`, its
        black-box kNN scorer. `kwargs` go to `scorer`."""
        label = f"{self.name} ({self.cfg.model.name})"
        if self.kind == "classifier":
            return {label: self.scorer("classifier", **kwargs)}
        out = {f"{label} prototype": self.scorer("prototype", **kwargs)}
        if knn:
            out[f"{label} kNN"] = self.scorer("knn", **kwargs)
        return out

    @property
    def index_dir(self) -> Path:
        return self.path / INDEX_DIR

    def knn(self):
        """The run's kNN classifier over the train gallery: RUN/index when `build-index` built
        one (checked to come from this run's current checkpoint), else an exact index fitted
        on the train embeddings with the config's metric.knn_k and metric.knn_weighting.

        Raises:
            CheckpointError: RUN/index is damaged, or was built from other weights (after
                --resume or retraining, or copied from another run); the message gives the
                build-index command that rebuilds it.
        """
        from fermetric.retrieval import KNNClassifier

        if "knn" in self._cache:
            return self._cache["knn"]
        if self.index_dir.exists():
            rebuild = f"fermetric build-index {self.path}"
            try:
                knn = KNNClassifier.load(self.index_dir)
            except CheckpointError as e:
                raise CheckpointError(f"{e}. Rebuild the index: {rebuild}") from None
            rebuild += f" --index {knn.index_type} -k {knn.k} --weighting {knn.weighting}"
            src = knn.source
            if src.get("checkpoint_sha256") == self.checkpoint_sha256 and not self.made_here(src):
                raise CheckpointError(
                    f"the kNN index {self.index_dir} holds embeddings of the {src.get('embedding_layer', 'projection')} "
                    f"layer, but the run now embeds with the {self.embedding_layer} (metric.embedding_layer). "
                    f"Rebuild it: {rebuild}")
            if src.get("checkpoint_sha256") != self.checkpoint_sha256:
                came = (f"{src.get('checkpoint')} (epoch {src.get('epoch')}, sha256 {str(src.get('checkpoint_sha256'))[:12]}) "
                        f"of run {src.get('run')}") if src.get("checkpoint_sha256") else "weights it did not record"
                raise CheckpointError(
                    f"the kNN index {self.index_dir} is stale: its gallery was embedded by {came}, not by this run's "
                    f"{self.checkpoint_path.name} (epoch {self.checkpoint.get('epoch')}, sha256 {self.checkpoint_sha256[:12]}). "
                    f"Rebuild it: {rebuild}"
                )
            if tuple(knn.class_names or ()) != tuple(self.class_names):
                raise CheckpointError(f"the kNN index {self.index_dir} has classes {knn.class_names}, the run "
                                      f"{list(self.class_names)}. Rebuild it: {rebuild}")
        else:
            knn = KNNClassifier(k=self.cfg.metric.knn_k, weighting=self.cfg.metric.knn_weighting,
                                num_classes=len(self.class_names), class_names=list(self.class_names))
            knn.fit(*self.embeddings("train"))
        self._cache["knn"] = knn
        return knn

    def build_index(self, index_type: str = "flat", k: Optional[int] = None, weighting: Optional[str] = None):
        """Build the kNN index over the train embeddings, save it as RUN/index (stamped with the
        checkpoint's fingerprint) and return it."""
        from fermetric.retrieval import KNNClassifier

        emb, labels = self.embeddings("train")
        knn = KNNClassifier(k=k or self.cfg.metric.knn_k, weighting=weighting or self.cfg.metric.knn_weighting,
                            index=index_type, num_classes=len(self.class_names), class_names=list(self.class_names),
                            seed=self.cfg.seed)
        knn.fit(emb, labels)
        knn.save(self.index_dir, source=self.fingerprint)
        self._cache["knn"] = knn
        for key in [key for key in self._cache if key.startswith("proba:")]:
            del self._cache[key]
        return knn

    def knn_report(self, split: str, k: Optional[int] = None, weighting: Optional[str] = None) -> dict[str, Any]:
        """The kNN report (fermetric.retrieval.knn_report) of a split against the train gallery,
        searched through the same index `predict`, `evaluate` and the knn scorer use, so the
        numbers agree. k and weighting default to the index's."""
        from fermetric.retrieval import knn_report

        if split == "train":
            raise FermetricError("knn-eval scores val or test against the train gallery; train would match itself")
        knn = self.knn()
        gallery, g_labels = self.embeddings("train")
        query, q_labels = self.embeddings(split)
        rep = knn_report(query, q_labels, gallery, g_labels, list(self.class_names),
                         k=k or knn.k, weighting=weighting or knn.weighting, classifier=knn)
        rep.update({
            "run": str(self.path), "split": split, "kind": self.kind,
            "index_source": str(self.index_dir) if self.index_dir.exists() else
            "exact (flat) index fitted on the train embeddings (no RUN/index)",
            "checkpoint": self.fingerprint,
        })
        from fermetric.retrieval.similarity import split_verification

        # pairs of the split: same expression or not, by cosine (calibrated on val pairs)
        rep["verification"] = split_verification(self, split)
        return rep


class _PreLogits(nn.Module):
    """A classifier seen as an embedding model (its pre-logit features), for prototype / kNN scorers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.gradcam_layer = "model." + getattr(model, "gradcam_layer", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def load_run(path: str | Path, device: str | None = "auto", checkpoint: str = "best", precision: str = "auto") -> Run:
    """Open a run directory written by train-classifier / train-siamese / train-triplet.

    `precision` (auto, fp32, bf16, fp16) sets the autocast of every forward pass through the run:
    evaluation, TTA, embeddings, kNN and the scorers. Checkpoints hold fp32 weights whatever the
    precision they were trained in.

    Raises:
        FermetricError / CheckpointError naming what is missing or wrong.
    """
    path = Path(path)
    if not path.is_dir():
        from fermetric.zoo import is_pretrained_name, load_pretrained

        if checkpoint == "best" and is_pretrained_name(str(path)):
            return load_pretrained(str(path), device=device, precision=precision)
        raise FermetricError(f"run directory {path} does not exist (nor is {str(path)!r} a pretrained model: "
                             "fermetric models --pretrained lists them)")
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise FermetricError(f"{path} is not a fermetric run directory (no config.yaml)")
    ckpt_path = path / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt_path.is_file():
        fallback = path / "checkpoints" / "last.pt"
        if checkpoint == "best" and fallback.is_file():
            ckpt_path = fallback
        else:
            raise CheckpointError(f"{ckpt_path} does not exist; has the run finished an epoch?")
    cfg = load_run_config(cfg_path)
    dev = resolve_device(device)
    prec = runtime.resolve_precision(precision, dev)  # a bad value or one this device cannot run fails here
    ckpt, ckpt_sha256 = load_checkpoint_sha256(ckpt_path, map_location=dev)  # one read: hashed and loaded
    check_belongs(ckpt, ckpt_path, cfg, path)
    check_finite(ckpt.get("state_dict", {}), ckpt_path, cfg)
    kind = ckpt.get("kind", "")
    class_names = tuple(ckpt.get("class_names", ()))
    # the checkpoint holds the trained weights: do not re-apply the run's starting weights
    cfg.model.weights, cfg.model.pretrained, cfg.model.init_from = None, False, None
    if kind not in RUN_KINDS:
        raise CheckpointError(f"{ckpt_path} is of unknown run kind {kind!r}; expected one of {', '.join(RUN_KINDS)}")
    model = build_model(kind, cfg, len(class_names))
    check_compatible(ckpt, ckpt_path, name=cfg.model.name, num_classes=len(class_names))
    load_state_dict_checked(model, ckpt["state_dict"], ckpt_path)
    model.to(dev).eval()
    runtime.prepare_for_inference(model, dev, prec)
    return Run(path=path, cfg=cfg, kind=kind, class_names=class_names, model=model, checkpoint=ckpt, device=dev,
               checkpoint_path=ckpt_path, checkpoint_sha256=ckpt_sha256, precision=precision)


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
    metrics_path = run_dir / "metrics.json"
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
        raise CheckpointError(f"{ckpt_path} does not belong to the run {run_dir / 'config.yaml'}: " + "; ".join(problems)
                              + ". Put back this run's own checkpoint or retrain")
