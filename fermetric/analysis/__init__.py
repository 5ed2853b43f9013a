"""One explanation toolkit for both model families.

Every method takes a *scorer* (images (N, 1, 48, 48) in [0, 1] -> class scores (N, C)):

    from fermetric.analysis import explain
    from fermetric.scoring import ClassifierScorer, KNNScorer, PrototypeScorer
    maps = explain(ClassifierScorer(model), images, "gradcam")              # (N, 48, 48)
    maps = explain(PrototypeScorer.from_dataset(emb_model, train), images, "saliency")
    maps = explain(KNNScorer(emb_model, knn), images, "occlusion", patch_size=8, stride=4)

Gradient methods (saliency, smoothgrad, gradcam) need a differentiable scorer; black-box methods
(occlusion, lime) take any. Faithfulness metrics live in `fermetric.analysis.faithfulness`.
"""
from fermetric.analysis.activations import ActivationMaps, layer_activations
from fermetric.analysis.faithfulness import (
    PerturbationCurve,
    RandomizationResult,
    deletion_curve,
    evaluate_explanations,
    evidence_table_markdown,
    insertion_curve,
    mask_mass_ratio,
    perturbation_curve,
    pointing_game,
    randomization_check,
    randomized_copy,
    table_to_markdown,
)
from fermetric.analysis.filters import FilterImages, visualize_filters
from fermetric.analysis.gradcam import gradcam
from fermetric.models.layers import conv_layer_names, get_layer
from fermetric.analysis.lime_explainer import LimeResult, lime_explanation, segment_image
from fermetric.analysis.methods import (
    BLACK_BOX_METHODS,
    GRADIENT_METHODS,
    METHODS,
    explain,
    method_options,
    normalize_maps,
    one_per_class,
    pick_per_class,
    supports,
    top_attribution_mask,
)
from fermetric.analysis.occlusion import occlusion_saliency
from fermetric.analysis.saliency import gradient_saliency, smoothgrad

__all__ = [
    "explain", "METHODS", "GRADIENT_METHODS", "BLACK_BOX_METHODS", "method_options", "supports", "normalize_maps", "one_per_class", "pick_per_class", "top_attribution_mask",
    "gradient_saliency", "smoothgrad", "occlusion_saliency", "gradcam", "lime_explanation", "LimeResult", "segment_image",
    "visualize_filters", "FilterImages", "layer_activations", "ActivationMaps", "conv_layer_names", "get_layer",
    "perturbation_curve", "deletion_curve", "insertion_curve", "PerturbationCurve", "mask_mass_ratio", "pointing_game",
    "randomized_copy", "randomization_check", "RandomizationResult", "evaluate_explanations", "table_to_markdown",
    "evidence_table_markdown",
]

# The scorers moved to fermetric.scoring (a layer below): still importable from here for one
# release, with a DeprecationWarning.
_SCORERS = ("Scorer", "ClassifierScorer", "PrototypeScorer", "KNNScorer", "TTAScorer", "EnsembleScorer")


def __getattr__(name: str):
    if name in _SCORERS:
        import warnings

        from fermetric import scoring

        warnings.warn(f"fermetric.analysis.{name} is deprecated; import it from fermetric.scoring",
                      DeprecationWarning, stacklevel=2)
        return getattr(scoring, name)
    raise AttributeError(f"module 'fermetric.analysis' has no attribute {name!r}")
