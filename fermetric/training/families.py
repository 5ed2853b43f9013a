"""The three training families (`train-classifier`, `train-siamese`, `train-triplet`): what each
fixes in the config before the user's file and overrides, and its objective. One home for the
CLI and for studies (fermetric.study), which train the same way."""
from __future__ import annotations

from fermetric.config import RunConfig

# What each family fixes in the config before the user's --config / --set are applied.
FAMILY_DEFAULTS: dict[str, list[str]] = {
    "classifier": [],
    # AdamW at 1e-3 suits metric losses better than the classifiers' SGD at 0.05
    "siamese": ["metric.loss=ContrastiveLoss", "metric.miner=pairs", "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.0001"],
    # all margin-violating triplets ("batch all", Hermans et al. 2017): measured on SynthFER, semi-hard
    # mining stalls with 7 x m-image batches (FaceNet's used ~1,800 images) and hard mining collapses
    "triplet": ["metric.loss=TripletMarginLoss", "metric.miner=all", "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.0001"],
}


def objective_for(family: str, cfg: RunConfig):
    """The training objective of `family` ("classifier", "siamese" or "triplet")."""
    if family == "classifier":
        from fermetric.training.classifier import ClassifierObjective

        return ClassifierObjective(cfg)
    from fermetric.training.metric import MetricObjective

    return MetricObjective(cfg)
