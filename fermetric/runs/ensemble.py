"""A weighted soft vote of runs, opened as one run: what every command that takes RUN takes for
an ensemble (the zoo's `fer2013-ensemble`).

An `EnsembleRun` answers the questions commands ask a run (its data, class probabilities of a
split or of any images, predictions, its scorer) by asking its members and taking the weighted
mean of their probabilities. Its scorer is an `EnsembleScorer` over the members' own scorers
(each as the ensemble votes it: a classifier's softmax with its TTA, an embedding model's kNN
vote), so evaluation, predict and the explanations go through the same path as for one model.
What only a single network has (an embedding, a kNN index, a layer for Grad-CAM or filters) is
refused with the member to ask instead."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch import nn

from fermetric.config import RunConfig
from fermetric.data.dataset import DataSplits
from fermetric.errors import FermetricError

# how a member votes: a classifier's softmax (optionally with TTA) or an embedding model's kNN vote
MEMBER_SCORERS = ("classifier", "knn")


@dataclass(frozen=True)
class Member:
    """One voter: a run, the scorer it votes with, its TTA (classifiers) and its weight."""

    run: Any  # fermetric.runs.Run
    scorer: str = "classifier"
    tta: Optional[str] = None
    weight: float = 1.0
    label: str = ""

    def __post_init__(self):
        if self.scorer not in MEMBER_SCORERS:
            raise FermetricError(f"ensemble member {self.label or self.run.path}: scorer {self.scorer!r}; "
                                 f"expected one of {', '.join(MEMBER_SCORERS)}")
        want = "classifier" if self.scorer == "classifier" else "embedding"
        if self.run.kind != want:
            raise FermetricError(f"ensemble member {self.label or self.run.path} is a {self.run.kind} run; "
                                 f"the {self.scorer} scorer needs a{'n' if want == 'embedding' else ''} {want} run")
        if self.tta and self.scorer != "classifier":
            raise FermetricError(f"ensemble member {self.label or self.run.path}: TTA is for classifiers; "
                                 "an embedding member votes through its kNN index")


@dataclass
class EnsembleRun:
    """Runs voting as one (see the module docstring); weights are normalised to sum to 1."""

    path: Path
    members: Sequence[Member]
    pretrained: str = ""
    precision: str = "auto"
    card: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = field(default="ensemble", init=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, init=False)

    def __post_init__(self):
        if not self.members:
            raise FermetricError("an ensemble needs at least one member")
        names = {tuple(m.run.class_names) for m in self.members}
        if len(names) != 1:
            raise FermetricError(f"ensemble members disagree on the classes: {sorted(map(list, names))}")
        w = np.asarray([m.weight for m in self.members], dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise FermetricError(f"ensemble weights must be finite, non-negative and not all 0; got {w.tolist()}")
        self.weights = (w / w.sum()).tolist()
        self.class_names = tuple(self.members[0].run.class_names)
        self.device = self.members[0].run.device
        # the config commands read (seed, data, model name): the first member's, named as the ensemble
        self.cfg: RunConfig = copy.deepcopy(self.members[0].run.cfg)
        self.cfg.model.name = "ensemble"
        self.model = nn.ModuleList([m.run.model for m in self.members])

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> dict[str, Any]:
        return {}

    @property
    def history(self) -> list[dict[str, Any]]:
        return []

    @property
    def labels(self) -> list[str]:
        return [m.label or m.run.name for m in self.members]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The members' weights and how each votes: what the ensemble's numbers come from."""
        return {"run": str(self.path), "members": [
            {"member": lab, "checkpoint_sha256": m.run.checkpoint_sha256, "scorer": m.scorer, "tta": m.tta or False,
             "weight": w} for lab, m, w in zip(self.labels, self.members, self.weights)]}

    # -- data ------------------------------------------------------------------------------------
    def load_data(self, source: Optional[str] = None) -> DataSplits:
        return self.members[0].run.load_data(source)

    def use_data(self, source: str | Path | DataSplits, source_path: str | Path | None = None) -> DataSplits:
        """Every member reads `source` from now on (loaded once, shared; see Run.use_data)."""
        first = self.members[0].run
        data = first.use_data(source, source_path)
        for m in self.members[1:]:
            m.run.use_data(data, first.cfg.data.source)
        self.cfg.data.source = first.cfg.data.source
        self._cache.clear()
        return data

    # -- class scores ----------------------------------------------------------------------------
    def _no_tta(self, tta: Any) -> None:
        from fermetric.evaluation.predict import resolve_tta

        if resolve_tta(tta):
            per_member = ", ".join(f"{lab}: {m.tta or 'none'}" for lab, m in zip(self.labels, self.members))
            raise FermetricError(f"{self.pretrained or self.path}: an ensemble's TTA is set per member ({per_member}); "
                                 "score it without --tta")

    def _vote(self, member_probs: Sequence[np.ndarray]) -> np.ndarray:
        from fermetric.evaluation.ensemble import soft_vote

        return soft_vote(member_probs, self.weights).astype(np.float32)

    def predict_proba(self, split: str, tta: bool | str = False, batch_size: int = 512) -> np.ndarray:
        """(N, C) weighted mean of the members' probabilities of a split (each member as it votes)."""
        self._no_tta(tta)
        key = f"proba:{split}"
        if key not in self._cache:
            self._cache[key] = self._vote([m.run.predict_proba(split, tta=m.tta or False, batch_size=batch_size)
                                           for m in self.members])
        return self._cache[key]

    def predict(self, split: str, tta: bool | str = False) -> np.ndarray:
        return self.predict_proba(split, tta).argmax(1)

    def predict_images(self, dataset, tta: bool | str = False, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class ids (N,) and probabilities (N, C) of any FERDataset."""
        self._no_tta(tta)
        probs = self._vote([m.run.predict_images(dataset, tta=m.tta or False, batch_size=batch_size)[1]
                            for m in self.members])
        return probs.argmax(1), probs

    def member_scorers(self, batch_size: int = 256, compile: Any = "auto") -> list:
        """Each member's scorer, as it votes (its probabilities)."""
        return [m.run.scorer(m.scorer, output="softmax", batch_size=batch_size, tta=m.tta or False, compile=compile)
                for m in self.members]

    def scorer(self, kind: str = "auto", output: str = "softmax", batch_size: int = 256, tta: bool | str = False,
               compile: Any = "auto"):
        """The ensemble as one Scorer: an EnsembleScorer over `member_scorers` (probabilities
        whatever `output` asks: a vote has no logits). Gradient methods take it when every member
        is differentiable (a kNN member makes it a black box: occlusion and LIME)."""
        from fermetric.analysis import EnsembleScorer

        if kind not in ("auto", "ensemble"):
            raise FermetricError(f"{self.pretrained or self.path} is an ensemble: its scorer is 'auto' (the weighted vote), "
                                 f"not {kind!r}; to score one member, give that member's name")
        self._no_tta(tta)
        return EnsembleScorer(self.member_scorers(batch_size, compile), self.weights, names=self.labels)

    def scorers(self, knn: bool = True, **kwargs: Any) -> dict[str, Any]:
        return {f"{self.name} (ensemble)": self.scorer("auto", **kwargs)}

    # -- what only one network has -----------------------------------------------------------------
    def _single(self, what: str):
        raise FermetricError(f"{self.pretrained or self.path} is an ensemble of {', '.join(self.labels)}: it has no "
                             f"single {what}; ask a member")

    def embeddings(self, split: str, batch_size: int = 512):
        self._single("embedding")

    def embed(self, split: str, batch_size: int = 512):
        self._single("embedding")

    def knn(self):
        self._single("kNN index")

    @property
    def checkpoint_path(self) -> None:
        return None

    @property
    def checkpoint(self) -> dict[str, Any]:
        return {}
