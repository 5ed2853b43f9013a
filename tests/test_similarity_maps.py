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
