"""One path from images to class scores: Run.predict_proba, Run.scorer, evaluation.predict_proba,
the face predictor and TTA all give the same numbers, the numbers of the pre-Scorer loops."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fermetric.scoring import ClassifierScorer, model_proba as predict_proba, tta_views, TTAScorer
from fermetric.inference import FacePredictor
from fermetric.runs import load_run
from fermetric.scoring.run import run_scorer, split_predictions, split_proba
from fermetric.retrieval.index import run_knn
from fermetric.retrieval.embeddings import embed_split


def _reference_softmax(model, images_u8, tta, batch_size=7):
    """The loop evaluate used before the Scorer (softmax of each view, mean over views)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images_u8), batch_size):
            x = images_u8[i:i + batch_size].float().div(255.0)
            views = tta_views(x) if tta else [x]
            out.append(torch.stack([F.softmax(model(v).float(), dim=1) for v in views]).mean(0))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("tta", [False, True])
def test_classifier_paths_agree(classifier_run, tta):
    run = load_run(classifier_run, device="cpu", precision="fp32")
    val = run.load_data()["val"]
    ref = _reference_softmax(run.model, val.images, tta)
    np.testing.assert_allclose(split_proba(run, "val", tta=tta), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_proba(run.model, val, 5, tta=tta, precision="fp32"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_scorer(run, "classifier", tta=tta).scores(val.float_images()).numpy(), ref,
                               rtol=1e-5, atol=1e-6)
    if not tta:
        crops = val.images[:, 0].numpy()  # uint8 (N, 48, 48), as the face predictor takes them
        np.testing.assert_allclose(FacePredictor(run).predict_proba(crops), ref, rtol=1e-5, atol=1e-6)
    assert (split_predictions(run, "val", tta=tta) == ref.argmax(1)).all()


def test_embedding_paths_agree(triplet_run):
    run = load_run(triplet_run, device="cpu", precision="fp32")
    val = run.load_data()["val"]
    cached = split_proba(run, "val")  # votes of the cached val embeddings
    ref = run_knn(run).predict_proba(embed_split(run, "val"))
    np.testing.assert_array_equal(cached, ref)
    fresh = run_scorer(run, "knn").scores(val.images).numpy()  # images -> embeddings -> votes
    np.testing.assert_allclose(fresh, ref, atol=1e-6)
    np.testing.assert_allclose(FacePredictor(run).predict_proba(val.images[:, 0].numpy()), ref, atol=1e-6)
    with pytest.raises(Exception, match="TTA is for classifier runs"):
        split_proba(run, "val", tta=True)


def test_tta_scorer_is_the_mean_over_views_of_any_scorer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 3))
    inner = ClassifierScorer(model, output="logits", batch_size=2)
    x = torch.rand(5, 1, 48, 48)

    def views(b):
        return [b, b.flip(-1), 1.0 - b]

    tta = TTAScorer(inner, views=views)
    with torch.no_grad():
        want = (model(x) + model(x.flip(-1)) + model(1.0 - x)) / 3
    torch.testing.assert_close(tta.scores(x), want)
    assert tta.differentiable and tta.model is model and tta.num_classes == 3
    # gradient methods take it like any differentiable scorer
    from fermetric.analysis import explain

    maps = explain(tta, x[:2], "saliency")
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()
    # the default views are evaluate's: 5 crops x flip
    assert TTAScorer(inner).views is tta_views


def test_scorer_scores_uint8_without_a_float_copy_of_the_whole_input():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 2))
    sc = ClassifierScorer(model, output="softmax", batch_size=3)
    u8 = torch.randint(0, 256, (7, 1, 48, 48), dtype=torch.uint8)
    before = u8.clone()
    torch.testing.assert_close(sc.scores(u8), sc.scores(u8.float() / 255.0))
    assert torch.equal(u8, before)
