"""A weighted soft vote of runs, opened as one run: what every command that takes RUN takes for
an ensemble (the zoo's `fer2013-ensemble`).

An `EnsembleRun` holds its members, how each votes (a classifier's softmax with its TTA, an
embedding model's kNN vote) and their weights; fermetric.scoring turns it into an EnsembleScorer
over the members' own scorers, so evaluation, predict and the explanations go through the same
path as for one model. What only a single network has (an embedding, a kNN index, a layer for
Grad-CAM or filters) is refused with the member to ask instead."""
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
from fermetric.runs.reader import _MovedMethods

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
class EnsembleRun(_MovedMethods):
    """Runs voting as one (see the module docstring); weights are normalised to sum to 1."""

    path: Path
    members: Sequence[Member]
    pretrained: str = ""
    precision: str = "auto"
    card: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = field(default="ensemble", init=False)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, init=False)  # as Run.derived

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
        """The members' weights and how each votes (scorer, TTA, calibration): what the ensemble's
        numbers come from."""
        return {"run": str(self.path), "members": [
            {"member": lab, "checkpoint_sha256": m.run.checkpoint_sha256, "scorer": m.scorer, "tta": m.tta or False,
             "weight": w, "calibration": m.run.stored_calibration(m.tta)}
            for lab, m, w in zip(self.labels, self.members, self.weights)]}

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
        self.derived.clear()
        return data

    @property
    def data_key(self) -> str:
        return str(self.cfg.data.source)

    # -- what only one network has -----------------------------------------------------------------
    def refuse_tta(self, tta: Any) -> None:
        """An ensemble's TTA is its members' (set per member in its card): refuse one asked of the whole."""
        if tta and not (isinstance(tta, str) and tta.lower() in ("none", "off", "false", "")):
            per_member = ", ".join(f"{lab}: {m.tta or 'none'}" for lab, m in zip(self.labels, self.members))
            raise FermetricError(f"{self.pretrained or self.path}: an ensemble's TTA is set per member ({per_member}); "
                                 "score it without --tta")

    def stored_calibration(self, tta: Any = None) -> None:
        """None: an ensemble is calibrated through its members (each votes calibrated where
        `fermetric calibrate` fitted it), never as a whole."""
        return None

    def single_network(self, what: str) -> None:
        """Refuse what only a single network has (an embedding, a kNN index), naming the members."""
        raise FermetricError(f"{self.pretrained or self.path} is an ensemble of {', '.join(self.labels)}: it has no "
                             f"single {what}; ask a member")

    @property
    def checkpoint_path(self) -> None:
        return None

    @property
    def checkpoint(self) -> dict[str, Any]:
        return {}
