"""The three training families (`train-classifier`, `train-siamese`, `train-triplet`): what each
fixes in the config before the user's file and overrides, and its objective. One home for the
CLI and for studies (fermetric.study), which train the same way."""
from __future__ import annotations

from fermetric.config import RunConfig

# What each family fixes in the config before the user's --config / --set are applied. Both metric
# families train the metric loss jointly with cross-entropy on a linear head over the backbone's
# pre-logits (metric.ce_weight=1, metric.ce_head=linear) on batches with the data's class priors
# (metric.sampler=random), with AdamW at 0.003, and classify by kNN on the backbone's pre-logits
# (metric.embedding_layer=backbone, the config's default): measured on SynthFER and FER2013
# (README), pure metric losses on m-per-class batches at AdamW 1e-3 learn far slower than softmax,
# and these defaults beat its accuracy in kNN at the same epochs, without collapse.
_METRIC_COMMON = ["optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.0005", "metric.sampler=random",
                  "metric.ce_weight=1.0", "metric.ce_head=linear"]
FAMILY_DEFAULTS: dict[str, list[str]] = {
    "classifier": [],
    # contrastive loss on the pairs of each batch: positives pulled together, negatives closer than
    # 0.8 (Euclidean on the unit sphere) pushed past 1.0
    # ... with cross-entropy weighted 2: the contrastive term alone shapes a narrow cone (val mean
    # cosine 0.986 on FER2013) and at weight 1 ended 1.65 points below softmax there; weight 2
    # measured +1.23 points on FER2013 (57.76 % against 58.18 % softmax) and +3.7 on SynthFER
    "siamese": ["metric.loss=ContrastiveLoss", "metric.miner=pairs", *_METRIC_COMMON, "metric.ce_weight=2.0"],
    # all margin-violating triplets ("batch all", Hermans et al. 2017): semi-hard mining stalls with
    # 128-image batches (FaceNet's used ~1,800 images) and hard mining collapses
    "triplet": ["metric.loss=TripletMarginLoss", "metric.miner=all", *_METRIC_COMMON],
}


def objective_for(family: str, cfg: RunConfig):
    """The training objective of `family` ("classifier", "siamese" or "triplet")."""
    if family == "classifier":
        from fermetric.training.classifier import ClassifierObjective

        return ClassifierObjective(cfg)
    from fermetric.training.metric import MetricObjective

    return MetricObjective(cfg)
