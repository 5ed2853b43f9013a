"""Similarity maps (issue 24): which regions of two faces make them similar."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from conftest import run_cli
from fermetric.analysis.similarity_maps import similarity_map_scores, similarity_maps


def test_maps_are_gradient_times_input_of_the_cosine():
    """By hand: an embedding that reads two pixels; only those pixels can change the cosine."""
    def embed(x):
        return torch.stack([x[:, 0, 10, 10], x[:, 0, 30, 30] + 0.5], dim=1)

    a = torch.rand(2, 1, 48, 48)
    b = torch.rand(2, 1, 48, 48)
    ma, mb, cos = similarity_maps(embed, a, b)
    assert ma.shape == (2, 48, 48) and np.count_nonzero(ma[0]) <= 2 and np.count_nonzero(mb[1]) <= 2
    ea, eb = embed(a), embed(b)
    assert np.allclose(cos, torch.nn.functional.cosine_similarity(ea, eb).numpy(), atol=1e-6)
    # numerically: a small step on pixel (10, 10) of face A changes the cosine by its gradient
    eps = 1e-3
    a2 = a.clone()
    a2[0, 0, 10, 10] += eps
    grad = (torch.nn.functional.cosine_similarity(embed(a2), eb)[0] - torch.from_numpy(cos)[0]) / eps
    assert abs(float(grad * a[0, 0, 10, 10]) - ma[0, 10, 10]) < 1e-2


def test_cli_draws_the_maps_and_scores_them_on_evidence_masks(tmp_path: Path, triplet_run: Path):
    from PIL import Image

    from fermetric.runs import load_run

    faces = []
    run = load_run(triplet_run, device="cpu")
    val = run.load_data()["val"]
    for k in range(2):
        faces.append(tmp_path / f"f{k}.png")
        Image.fromarray(val.images[k, 0].numpy()).save(faces[-1])
    out = run_cli(["similarity", str(triplet_run), str(faces[0]), str(faces[1]), "--maps", str(tmp_path / "m.png"),
                   "--json"]).output
    assert json.loads(out)["maps"].endswith("m.png") and (tmp_path / "m.png").is_file()
    s = similarity_map_scores(run.model.embed, val.float_images(np.arange(len(val))), val.labels.numpy(),
                              val.masks.numpy(), n_pairs=16)
    assert s["pairs"] == 16 and np.isfinite(s["mask_mass"]) and 0 <= s["pointing_game"] <= 1


def test_vote_maps_by_hand():
    """The vote map is gradient x input of the vote-weighted cosine to the neighbours that voted
    for the predicted class: a neighbour of another class, or of weight 0, changes nothing."""
    from fermetric.analysis.neighbours import Neighbours, vote_maps

    def embed(x):
        return torch.stack([x[:, 0, 10, 10], x[:, 0, 30, 30] + 0.5], dim=1)

    q = torch.rand(1, 1, 48, 48)
    gallery = torch.rand(3, 1, 48, 48)
    nb = Neighbours(index=np.array([[0, 1, 2]]), labels=np.array([[4, 4, 2]]), similarity=np.zeros((1, 3)),
                    weight=np.array([[0.5, 0.3, 0.2]]), proba=np.zeros((1, 7)), predicted=np.array([4]))
    got = vote_maps(embed, q, gallery, nb)[0]
    want = 0.5 * similarity_maps(embed, q, gallery[:1])[0][0] + 0.3 * similarity_maps(embed, q, gallery[1:2])[0][0]
    assert np.allclose(got, want, atol=1e-6) and np.count_nonzero(got) <= 2
    other = gallery.clone()
    other[2] = torch.rand(1, 48, 48)  # the Sad neighbour voted for another class: it does not count
    assert np.allclose(vote_maps(embed, q, other, nb)[0], got, atol=1e-7)


def test_vote_map_scores_on_evidence_masks(triplet_run: Path):
    from fermetric.analysis.neighbours import vote_map_scores
    from fermetric.runs import load_run

    run = load_run(triplet_run, device="cpu")
    val = run.load_data()["val"]
    s = vote_map_scores(run, val.subset(np.arange(12)))
    assert s["queries"] == 12 and s["k"] > 0 and np.isfinite(s["mask_mass"])
    assert 0 <= s["pointing_game"] <= 1 and 0 < s["pointing_chance"] < 1 and 0 <= s["label_agreement"] <= 1
