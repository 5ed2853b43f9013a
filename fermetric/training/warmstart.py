"""Starting a model from another run's trained weights (`--init-from RUN`, `model.init_from`).

Any direction between the two families works, because both share the backbone contract:

- embedding model <- classifier run: the classifier's backbone (its head is not used);
- embedding model <- embedding run: the backbone, and the projection head (and the cosine
  classifier) where their shapes match;
- classifier <- embedding run: the embedding run's backbone, with a fresh classifier head;
- classifier <- classifier run: the backbone, and the head where the class count matches.

The source run is read through the run reader (its best checkpoint, checked to be finite and
to belong to the run), and the weights go through `fit_state_dict`, so another backbone, stem
or width is refused with the keys and shapes that differ.
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from fermetric.errors import FermetricError
from fermetric.models.weights import WeightsReport, fit_state_dict

log = logging.getLogger("fermetric.train")


def init_from_run(model: nn.Module, run_dir: str | Path) -> WeightsReport:
    """Fill `model` (a classifier or an EmbeddingModel) from the run in `run_dir`.

    Returns:
        The WeightsReport of what was loaded and skipped.

    Raises:
        FermetricError: `run_dir` is not a readable run; ModelError: its backbone is another
            architecture (name, stem or width) than `model`'s.
    """
    from fermetric.models.embedding import EmbeddingModel
    from fermetric.zoo.load import open_run as load_run

    src = load_run(run_dir, device="cpu", precision="fp32")
    source = f"run {src.path} ({src.kind}, {src.checkpoint_path.name})"
    src_model = src.model
    src_backbone = src_model.backbone if isinstance(src_model, EmbeddingModel) else src_model
    target_backbone = model.backbone if isinstance(model, EmbeddingModel) else model
    if getattr(src.cfg.model, "name", None) and hasattr(target_backbone, "model_name") \
            and src.cfg.model.name != getattr(target_backbone, "model_name", src.cfg.model.name):
        raise FermetricError(f"--init-from {run_dir}: the run's backbone is {src.cfg.model.name!r} but this model's is "
                             f"{target_backbone.model_name!r}; pass --model {src.cfg.model.name} (and the same "
                             f"model.width / model.stem)")
    report = fit_state_dict(target_backbone, src_backbone.state_dict(), source=source)
    if isinstance(model, EmbeddingModel) and isinstance(src_model, EmbeddingModel):
        # the head too, where it fits: a warm start of the whole embedding, not only the trunk
        for name in ("projection", "classifier"):
            mine, theirs = getattr(model, name), getattr(src_model, name)
            if mine is None or theirs is None:
                continue
            sd = theirs.state_dict()
            if {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in mine.state_dict().items()}:
                mine.load_state_dict(sd)
                report.loaded += [f"{name}.{k}" for k in sd]
            else:
                report.skipped.append(f"{name}: other shape in {source}; kept at its initial value")
    return report


def describe(report: WeightsReport) -> str:
    """One log line about a warm start."""
    return (f"initialised from {report.source}: {len(report.loaded)} tensors loaded"
            + (f", {len(report.skipped)} left at their initial values" if report.skipped else ""))
