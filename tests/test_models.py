"""Model zoo: every registered model's contract, the embedding model, the registry and weights."""
from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from fermetric.config import ModelConfig, load_config
from fermetric.errors import CheckpointError, ModelError
from fermetric.models import (
    EmbeddingModel,
    FERModel,
    create_embedding_model,
    create_model,
    embedding_model_from_config,
    get_model_entry,
    list_models,
    load_weights_file,
    model_from_config,
)
from fermetric.models.resnet import STEMS

REPO = Path(__file__).resolve().parents[1]

# (name, options) for every registered model: every stem on resnet18; the 50-layer models with
# their default stem (the stem code is the one resnet18 runs).
CASES = [
    ("baseline", {"width": 8}),
    *[("resnet18", {"stem": s}) for s in STEMS],
    ("resnet50", {"stem": "small"}),
    ("senet50", {"stem": "small"}),
    ("vgg16", {}),
]


def _ids(case: tuple[str, dict]) -> str:
    name, kw = case
    return "-".join([name, *map(str, kw.values())])


def test_cases_cover_every_registered_model() -> None:
    assert {name for name, _ in CASES} == set(list_models())
    assert set(list_models()) >= {"baseline", "resnet18", "resnet50", "vgg16", "senet50"}


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_model_contract(case: tuple[str, dict]) -> None:
    name, kw = case
    torch.manual_seed(0)
    model = create_model(name, **kw)
    assert isinstance(model, FERModel) and model.model_name == name and model.num_classes == 7
    x = torch.rand(2, 1, 48, 48)
    x_before = x.clone()

    captured: list[torch.Tensor] = []
    layer = model.get_submodule(model.gradcam_layer)
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    feats = model.forward_features(x)
    logits = model.forward_head(feats)
    handle.remove()
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    # Grad-CAM's layer yields the trunk's last spatial map, the one the head pools.
    assert captured[-1].ndim == 4 and captured[-1].shape == feats.shape
    assert torch.equal(captured[-1], feats.detach())
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    # Another class count: only the head changes (its trunk would give the same shapes).
    assert create_model(name, num_classes=8, **kw).forward_head(feats).shape == (2, 8)

    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    assert torch.equal(x, x_before)

    model.eval()
    with torch.no_grad():
        feats_a, feats_b = model.forward_features(x), model.forward_features(x)
        assert torch.equal(feats_a, feats_b)
        assert torch.equal(model.forward_head(feats_a), model.forward_head(feats_b))
        z = model.forward_head(feats_a, pre_logits=True)
        assert z.shape == (2, model.num_features) and torch.isfinite(z).all()


@pytest.mark.parametrize("name, kw", [("baseline", {"width": 8}), ("resnet18", {"stem": "imagenet"})])
def test_other_class_counts_end_to_end(name: str, kw: dict) -> None:
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert create_model(name, num_classes=8, **kw).eval()(x).shape == (2, 8)
        headless = create_model(name, num_classes=0, **kw).eval()
        assert headless(x).shape == (2, headless.num_features)


def test_default_options_are_documented() -> None:
    for name in list_models():
        entry = get_model_entry(name)
        assert entry.description, f"{name}'s factory has no docstring"
        assert "dropout" in entry.options()
    assert get_model_entry("resnet18").options()["stem"] in STEMS


# ------------------------------------------------------------------------------------ errors


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet19'; available: .*resnet18"):
        create_model("resnet19")


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"'resnet18' has no option 'widht'; it accepts: .*stem"):
        create_model("resnet18", widht=32)


@pytest.mark.parametrize(
    "name, kw, pattern",
    [
        ("resnet18", {"stem": "tiny"}, r"unknown stem 'tiny'; expected one of: small"),
        ("baseline", {"width": 0}, r"width must be an integer >= 1"),
        ("vgg16", {"dropout": 1.5}, r"dropout must be a probability"),
        ("baseline", {"num_classes": -1}, r"num_classes must be an integer >= 0"),
    ],
)
def test_bad_option_values(name: str, kw: dict, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        create_model(name, **kw)


def test_pretrained_refused_where_torchvision_has_none() -> None:
    assert "senet50" not in list_models(pretrained=True)
    with pytest.raises(ModelError, match=r"senet50' has no torchvision ImageNet weights.*--weights FILE"):
        create_model("senet50", pretrained=True)


def test_pretrained_and_weights_file_together_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not both"):
        create_model("resnet18", pretrained=True, weights=tmp_path / "w.pt")


# ---------------------------------------------------------------------------------- config


def test_model_from_config_passes_the_options_the_model_takes(caplog: pytest.LogCaptureFixture) -> None:
    model = model_from_config(ModelConfig(name="baseline", width=8, dropout=0.1), num_classes=5)
    assert model.num_classes == 5 and model.num_features == 64 and model.head_drop.p == 0.1
    with caplog.at_level(logging.WARNING):
        resnet = model_from_config(ModelConfig(name="resnet18", stem="imagenet", width=16), num_classes=7)
        vgg = model_from_config(ModelConfig(name="vgg16", stem="pool"), num_classes=7)
    assert resnet.stem == "imagenet" and resnet.num_features == 128
    assert vgg.num_features == 512
    assert "model.stem='pool' is ignored: vgg16 has no stem option" in caplog.text


@pytest.mark.parametrize("name, features_per_width", [("resnet18", 8), ("resnet50", 32), ("senet50", 32), ("vgg16", 8)])
def test_deep_backbones_scale_with_width(name: str, features_per_width: int) -> None:
    """width 64 is torchvision's network (same keys and shapes, so its weights load); a narrower
    one has the same keys with fewer channels and ~width**2 fewer parameters."""
    wide, narrow = create_model(name, width=64), create_model(name, width=16)
    assert wide.num_features == 64 * features_per_width and narrow.num_features == 16 * features_per_width
    assert wide.state_dict().keys() == narrow.state_dict().keys()
    n_wide, n_narrow = (sum(p.numel() for p in m.parameters()) for m in (wide, narrow))
    assert 10 < n_wide / n_narrow < 17
    with torch.no_grad():
        assert narrow.eval()(torch.rand(2, 1, 48, 48)).shape == (2, 7)


def test_deep_backbone_width_is_checked() -> None:
    with pytest.raises(ModelError, match="resnet50: width must be an integer >= 1"):
        create_model("resnet50", width=0)


def test_model_from_config_unknown_name() -> None:
    with pytest.raises(ModelError, match="unknown model 'alexnet'"):
        model_from_config(ModelConfig(name="alexnet"), num_classes=7)


def test_classifier_configs_load_and_build() -> None:
    paths = sorted((REPO / "configs" / "classifier").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert names >= set(list_models()), f"configs/classifier lacks {set(list_models()) - names}"
    for path in paths:
        if path.stem not in list_models():
            continue
        cfg = load_config(path)
        assert cfg.model.name == path.stem
        assert 0 < cfg.optim.lr <= 0.1 and cfg.train.epochs > 0
        model = model_from_config(cfg.model, num_classes=7)
        assert model.model_name == path.stem


# ------------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("projection", ["mlp", "linear"])
def test_embedding_model(projection: str) -> None:
    torch.manual_seed(0)
    model = create_embedding_model("baseline", embedding_dim=16, num_classes=5, projection=projection, width=8)
    assert isinstance(model, EmbeddingModel) and model.num_features == 16
    x = torch.rand(4, 1, 48, 48)
    emb, logits = model.forward_with_logits(x)
    assert emb.shape == (4, 16) and logits.shape == (4, 5)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    (logits.logsumexp(1).mean() + emb[:, 0].sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    assert model.gradcam_layer == "backbone.features"
    assert model.get_submodule(model.gradcam_layer) is model.backbone.features
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.embed(x), model(x))
        torch.testing.assert_close(model.forward_logits(x), model.classifier(model(x)))
        # Cosine logits are bounded by the scale.
        assert model.forward_logits(x).abs().max() <= model.classifier.scale + 1e-4


def test_embedding_model_without_classifier_and_on_a_resnet() -> None:
    model = create_embedding_model("resnet18", embedding_dim=32, stem="imagenet").eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert model.gradcam_layer == "backbone.layer4"
    assert model.backbone.num_classes == 0  # the backbone's own head is removed
    with pytest.raises(ModelError, match="no classifier"):
        model.forward_logits(x)


def test_embedding_model_from_config() -> None:
    cfg = ModelConfig(name="baseline", width=8, embedding_dim=24)
    model = embedding_model_from_config(cfg, num_classes=7)
    assert model.embedding_dim == 24 and model.num_classes == 7
    with pytest.raises(ModelError, match="unknown model"):
        create_embedding_model("nope")


def test_embedding_rejects_bad_arguments() -> None:
    with pytest.raises(ModelError, match="projection"):
        create_embedding_model("baseline", projection="deep", width=8)
    with pytest.raises(ModelError, match="embedding_dim"):
        create_embedding_model("baseline", embedding_dim=0, width=8)


# --------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def tv_resnet18_state() -> dict[str, torch.Tensor]:
    """A 3-channel, 1000-class torchvision resnet18 state dict (random weights, no download)."""
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_weights_file_round_trip_folds_rgb_conv(tmp_path: Path, tv_resnet18_state: dict) -> None:
    path = tmp_path / "tv_resnet18.pt"
    torch.save(tv_resnet18_state, path)
    model = create_model("resnet18", stem="imagenet")
    fc_before = model.fc.weight.detach().clone()
    report = load_weights_file(model, path)
    sd = model.state_dict()
    torch.testing.assert_close(sd["conv1.weight"], tv_resnet18_state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(sd["layer3.1.conv2.weight"], tv_resnet18_state["layer3.1.conv2.weight"])
    assert torch.equal(sd["bn1.running_var"], tv_resnet18_state["bn1.running_var"])
    assert report.folded == ["conv1.weight"]
    assert any(s.startswith("fc.weight") for s in report.skipped)  # 1000 classes vs 7
    assert torch.equal(model.fc.weight, fc_before)


def test_folded_conv_sees_gray_as_the_rgb_conv_sees_replicated_gray(tv_resnet18_state: dict) -> None:
    model = create_model("resnet18", stem="imagenet")
    from fermetric.models.weights import fit_state_dict

    fit_state_dict(model, tv_resnet18_state, source="test")
    x = torch.rand(2, 1, 48, 48)
    rgb = torch.nn.functional.conv2d(x.expand(-1, 3, -1, -1), tv_resnet18_state["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(model.conv1(x), rgb, rtol=1e-4, atol=1e-5)


def test_weights_file_checkpoint_dict_and_wrapper_prefix(tmp_path: Path) -> None:
    torch.manual_seed(2)
    src = create_model("baseline", width=8, num_classes=5)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = create_model("baseline", width=8, num_classes=5)
    report = load_weights_file(dst, path)
    assert not report.skipped and not report.folded
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_embedding_weights_load_into_a_plain_backbone(tmp_path: Path) -> None:
    torch.manual_seed(3)
    emb = create_embedding_model("baseline", embedding_dim=8, width=8)
    path = tmp_path / "emb.pt"
    torch.save({"model": emb.state_dict()}, path)
    model = create_model("baseline", width=8, weights=path)
    assert torch.equal(model.features[0][0].weight, emb.backbone.features[0][0].weight)


def test_mismatched_architecture_weights_error(tmp_path: Path, tv_resnet18_state: dict) -> None:
    path = tmp_path / "tv_resnet18.pt"
    torch.save(tv_resnet18_state, path)
    # Same family, other stem: the message names the key and both shapes.
    with pytest.raises(ModelError, match=r"does not fit resnet18 \(stem 'small'\).*1 of other shape: conv1\.weight \(64, 3, 7, 7\) vs model \(64, 1, 3, 3\)\. Were"):
        create_model("resnet18", stem="small", weights=path)
    # Another architecture: missing and unexpected keys are listed.
    with pytest.raises(ModelError, match=r"does not fit vgg16: .*missing from the weights: features\.0\.weight.*not in the model: conv1\.weight"):
        load_weights_file(create_model("vgg16"), path)


@pytest.mark.parametrize(
    "content, pattern",
    [
        (None, "does not exist"),
        (b"not a torch file", "is not a torch file"),
        ({"epoch": 1, "optimizer": {"lr": 0.1}}, "no state dict found; .*top-level keys are: epoch, optimizer"),
    ],
)
def test_unreadable_weights_files(tmp_path: Path, content: object, pattern: str) -> None:
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=pattern):
        create_model("baseline", width=8, weights=path)


def test_pretrained_download_folds_and_skips_the_imagenet_stem(monkeypatch: pytest.MonkeyPatch, tv_resnet18_state: dict) -> None:
    urls: list[str] = []

    def fake_download(url: str, *args, **kwargs) -> dict:
        urls.append(url)
        return dict(tv_resnet18_state)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    small = create_model("resnet18", stem="small", pretrained=True)
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    assert torch.equal(small.layer4[1].conv2.weight, tv_resnet18_state["layer4.1.conv2.weight"])
    assert small.conv1.weight.shape == (64, 1, 3, 3)  # the 3x3 stem stays freshly initialised
    imagenet = create_model("resnet18", stem="imagenet", pretrained=True)
    torch.testing.assert_close(imagenet.conv1.weight, tv_resnet18_state["conv1.weight"].sum(1, keepdim=True))


def test_pretrained_vgg_skips_torchvision_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("vgg16")
    fake = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items() if k.startswith("features.")}
    fake["features.0.weight"] = torch.randn(64, 3, 3, 3)
    fake["classifier.0.weight"] = torch.randn(16, 32)  # stands in for the 4096x25088 ImageNet head
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, *a, **k: dict(fake))
    from fermetric.models.weights import load_pretrained

    report = load_pretrained(model, get_model_entry("vgg16").pretrained)
    assert report.folded == ["features.0.weight"]
    assert torch.equal(model.features[40].weight, fake["features.40.weight"])
    assert any(s.startswith("classifier.0.weight") for s in report.skipped)


@pytest.mark.parametrize("error", [urllib.error.URLError("no network"), OSError("Network is unreachable")])
def test_pretrained_offline_says_to_pass_a_weights_file(monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    def offline(url: str, *args, **kwargs):
        raise error

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"could not download torchvision's ResNet18_Weights.IMAGENET1K_V1.*--weights FILE"):
        create_model("resnet18", pretrained=True)


def test_embedding_model_linear_head_reads_pre_logits() -> None:
    """head="linear": the joint classifier is a linear layer on the backbone's pre-logits (the
    softmax classifier's head), and forward(with_logits=True) gives both outputs in one pass."""
    torch.manual_seed(0)
    model = create_embedding_model("baseline", embedding_dim=16, num_classes=5, head="linear", width=8).eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        emb, logits = model(x, with_logits=True)
        z = model.backbone.embed(x)
        torch.testing.assert_close(logits, model.classifier(z))
        torch.testing.assert_close(emb, model(x))
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.in_features == model.backbone.num_features
    with pytest.raises(ModelError, match="pre-logits"):
        model.logits_from_embedding(emb)
    with pytest.raises(ModelError, match="head"):
        create_embedding_model("baseline", num_classes=5, head="softmax", width=8)


def test_embedding_model_embeds_with_the_backbone_when_asked() -> None:
    """embedding_layer="backbone": embed and plain forward give the backbone's L2-normalised
    pre-logits (what kNN, prototypes and similarity read); training still gets the projection
    (projected=True, with_logits=True); the default stays the projection."""
    torch.manual_seed(0)
    model = create_embedding_model("baseline", embedding_dim=16, num_classes=5, head="linear", width=8,
                                   embedding_layer="backbone").eval()
    assert model.num_features == model.backbone.num_features != 16
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        z = model.backbone.embed(x)
        torch.testing.assert_close(model.embed(x), torch.nn.functional.normalize(z, dim=1))
        assert torch.equal(model(x), model.embed(x))
        proj = model(x, projected=True)
        assert proj.shape == (3, 16)
        torch.testing.assert_close(proj, model.project(model.forward_features(x)))
        emb, logits = model(x, with_logits=True)
        torch.testing.assert_close(emb, proj)
        torch.testing.assert_close(logits, model.classifier(z))
    default = create_embedding_model("baseline", embedding_dim=16, width=8)
    assert default.embedding_layer == "projection" and default.num_features == 16
    with pytest.raises(ModelError, match="embedding_layer"):
        create_embedding_model("baseline", width=8, embedding_layer="head")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "senet50"])
def test_zero_init_residual_starts_every_block_as_the_identity(name):
    """model.zero_init_residual: the last BN of each residual block starts at zero (off by default)."""
    from fermetric.config import load_config
    from fermetric.models.registry import model_from_config

    def last_bn_mass(model):
        blocks = [m for m in model.modules() if hasattr(m, "bn3") or (hasattr(m, "bn2") and not hasattr(m, "bn3")
                                                                          and hasattr(m, "conv2"))]
        last = [m.bn3 if hasattr(m, "bn3") else m.bn2 for m in blocks]
        assert last, "no residual block found"
        return float(sum(b.weight.detach().abs().sum() for b in last))

    on = model_from_config(load_config(None, [f"model.name={name}", "model.width=4", "model.zero_init_residual=true"]).model, 7)
    off = model_from_config(load_config(None, [f"model.name={name}", "model.width=4"]).model, 7)
    assert last_bn_mass(on) == 0.0 and last_bn_mass(off) > 0.0
