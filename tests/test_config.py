import pytest
import yaml

from fermetric.config import RunConfig, config_to_dict, load_config, save_config
from fermetric.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "data.augment.rotation=5", "optim.name=adamw", "model.weights=null"])
    assert cfg.train.epochs == 3
    assert cfg.data.augment.rotation == 5.0
    assert cfg.optim.name == "adamw"
    assert cfg.model.weights is None


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  batch_size: 32\nmodel:\n  name: resnet18\n")
    cfg = load_config(p, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.name) == (2, 32, "resnet18")


@pytest.mark.parametrize(
    "text, key",
    [("train:\n  epoch: 3\n", "train.epoch"), ("trian:\n  epochs: 3\n", "trian"), ("data:\n  augment:\n    flip: 0.5\n", "data.augment.flip")],
)
def test_unknown_key_named(tmp_path, text, key):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert key in str(err.value) and str(p) in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("train.epochs=many", "train.epochs"),
    ("train.epochs", "section.key=value"),
    ("train.amp=3", "true or false"),
    ("optim.betas=[0.9]", "list of 2"),
    ("nosuch.key=1", "nosuch"),
])
def test_bad_overrides(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)


def test_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_round_trip(tmp_path):
    cfg = load_config(None, ["seed=5", "metric.loss_kwargs={pos_margin: 0.1}"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load(path.read_text())["seed"] == 5


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    # configs/study/ holds study files (fermetric.study), checked in tests/test_study.py
    files = sorted(p for p in root.rglob("*.yaml") if p.relative_to(root).parts[0] != "study")
    assert files
    # the zoo's ensemble specs name zoo entries, not a run's settings
    ensembles = [f for f in files if f.name.endswith("-ensemble.yaml")]
    assert ensembles == [root / "zoo" / "fer2013-ensemble.yaml"]
    for f in files:
        if f in ensembles:
            from fermetric.zoo.export import read_ensemble_spec

            assert read_ensemble_spec(f)["members"], f
        else:
            assert isinstance(load_config(f), RunConfig), f


def _numeric_fields(cls, prefix=""):
    import dataclasses
    import typing

    from fermetric.config import _strip_optional

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, key + ".")
        elif tp in (int, float) or (typing.get_origin(tp) is tuple and all(a in (int, float) for a in typing.get_args(tp))):
            yield key, f


def test_every_numeric_field_declares_its_range():
    fields = dict(_numeric_fields(RunConfig))
    assert len(fields) >= 35  # the walk reaches every section
    missing = [k for k, f in fields.items() if "range" not in f.metadata]
    assert not missing, f"numeric config keys without a declared range (use fermetric.config.num): {missing}"
    # and every default is inside its own range
    cfg = RunConfig()
    for key, f in fields.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        for v in value if isinstance(value, tuple) else (value,):
            assert f.metadata["range"].contains(float(v)), key


@pytest.mark.parametrize("override", ["optim.lr=3e-3", "optim.lr='0.003'"])
def test_floats_written_without_a_dot_are_numbers(override):
    assert load_config(None, [override]).optim.lr == pytest.approx(0.003)


def test_ranges_are_checked_after_flags_too():
    from fermetric.config import resolve_config

    with pytest.raises(ConfigError, match="data.ferplus_mode=crossentropy"):
        resolve_config(None, ("data.ferplus_mode=crossentropy",))
    # the --ferplus flag, applied after --set, satisfies the same check
    cfg = resolve_config(None, ("data.ferplus_mode=crossentropy",), data="fer.csv", ferplus="new.csv")
    assert cfg.data.ferplus_mode == "crossentropy"


def test_paths_are_stored_absolute(tmp_path, monkeypatch):
    from pathlib import Path

    from fermetric.config import resolve_config

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(None, ("model.weights=w/x.pt",), data="data/fer.csv", ferplus="~/new.csv")
    assert cfg.data.source == str(tmp_path / "data" / "fer.csv")
    assert cfg.model.weights == str(tmp_path / "w" / "x.pt")
    assert cfg.data.ferplus == str(Path("~/new.csv").expanduser())
    assert resolve_config(None, ()).data.source == "synth"
