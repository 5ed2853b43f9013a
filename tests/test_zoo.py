"""The model zoo: entries made from tiny SynthFER runs in a temporary zoo (the shipped entries
are tested on FER2013 faces in test_zoo_shipped)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fermetric.runs import load_run
from fermetric.zoo import ZooError, export_run, get_entry, is_pretrained_name, list_pretrained, load_pretrained
from fermetric.scoring.run import run_scorer, split_proba
from fermetric.retrieval.embeddings import embed_split


@pytest.fixture(scope="module")
def zoo(tiny_zoo):
    return tiny_zoo  # conftest: tiny-clf and tiny-tri exported from the tiny runs


def test_entries_are_listed_with_their_cards(zoo):
    names = [e.name for e in list_pretrained(zoo)]
    assert names == ["tiny-clf", "tiny-tri"]
    card = get_entry("tiny-clf", zoo).card
    assert card["kind"] == "classifier" and 0.0 <= card["test"]["accuracy"] <= 1.0
    assert set(card["test"]["per_class_f1"]) == set(card["class_names"])
    assert (zoo / "tiny-clf" / "card.md").read_text().startswith("# tiny-clf")
    assert is_pretrained_name("tiny-tri", zoo) and not is_pretrained_name("nope", zoo)
    assert not is_pretrained_name("../tiny-clf", zoo)


def test_stored_fp16_weights_predict_like_the_run(zoo, classifier_run):
    """The card's accuracy is measured on the stored fp16 weights and matches the fp32 run closely."""
    run = load_run(classifier_run, device="cpu", precision="fp32")
    entry = load_pretrained("tiny-clf", device="cpu", precision="fp32", root=zoo)
    entry.use_data(run.load_data())
    p_run, p_zoo = split_proba(run, "val"), split_proba(entry, "val")
    assert np.abs(p_run - p_zoo).max() < 0.02
    assert (p_run.argmax(1) == p_zoo.argmax(1)).mean() > 0.98
    card = get_entry("tiny-clf", zoo).card
    assert card["test"]["accuracy"] == pytest.approx(float((p_zoo.argmax(1) == entry.load_data()["val"].labels.numpy()).mean()))


def test_embedding_entry_classifies_without_the_training_data(zoo, triplet_run):
    """The shipped gallery stands in for the train split: kNN and prototype scores need no data."""
    entry = load_pretrained("tiny-tri", device="cpu", root=zoo)
    run = load_run(triplet_run, device="cpu")
    val = run.load_data()["val"]
    x = val.images[:16].float() / 255.0
    scores = run_scorer(entry, "prototype").scores(x)
    assert scores.shape == (16, len(entry.class_names))
    knn_scores = run_scorer(entry, "knn").scores(x).numpy()
    assert np.allclose(knn_scores.sum(1), 1.0, atol=1e-5)
    assert entry._data is None  # nothing loaded the training data


def test_modified_or_truncated_weights_are_refused(zoo, tmp_path):
    import shutil

    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    w = copy / "tiny-clf" / "weights.pt"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"'tiny-clf'.*weights.pt has been modified"):
        load_pretrained("tiny-clf", device="cpu", root=copy)
    w.write_bytes(bytes(data[:100]))
    with pytest.raises(ZooError, match="weights.pt has been modified"):
        load_pretrained("tiny-clf", device="cpu", root=copy)
    (copy / "tiny-tri" / "gallery.npz").unlink()
    with pytest.raises(ZooError, match="lacks gallery.npz"):
        load_pretrained("tiny-tri", device="cpu", root=copy)


def test_unknown_name_lists_the_known_ones(zoo):
    with pytest.raises(ZooError, match="known: tiny-clf, tiny-tri"):
        get_entry("fer2013-nothing", zoo)


def test_load_run_takes_a_zoo_name(zoo, monkeypatch, tmp_path):
    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    import fermetric

    run = fermetric.load_run("tiny-clf", device="cpu")  # the top level opens directories and zoo names
    assert run.kind == "classifier" and run.path == tmp_path / "cache" / "zoo" / "tiny-clf"
    with pytest.raises(Exception, match="nor is 'not-a-model' a pretrained model"):
        fermetric.load_run("not-a-model")
    with pytest.raises(Exception, match="run directory tiny-clf does not exist"):
        load_run("tiny-clf")  # fermetric.runs reads directories only: names are resolved above it


def test_card_json_is_plain_json(zoo):
    card = json.loads((zoo / "tiny-tri" / "card.json").read_text())
    assert card["kind"] == "embedding" and card["sha256"] and card["test"]["knn_accuracy"] >= 0


def test_cli_uses_a_zoo_model_by_name_and_by_default(zoo, monkeypatch, tmp_path, classifier_run):
    """predict without RUN uses the default classifier; --model NAME and RUN = a name work; every
    RUN argument takes a name; models --pretrained lists the cards."""
    from PIL import Image

    from conftest import run_cli

    import fermetric.zoo.registry as registry

    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "DEFAULT_CLASSIFIER", "tiny-clf")
    import fermetric.zoo as zoo_pkg
    monkeypatch.setattr(zoo_pkg, "DEFAULT_CLASSIFIER", "tiny-clf")
    face = tmp_path / "face.png"
    img = load_run(classifier_run, device="cpu").load_data()["val"].images[0, 0].numpy()
    Image.fromarray(img).save(face)
    res = run_cli(["predict", str(face), "--out", str(tmp_path / "p1")])
    assert "model: tiny-clf" in res.output and "1 image(s) predicted" in res.output
    res = run_cli(["predict", "--model", "tiny-tri", str(face), "--out", str(tmp_path / "p2")])
    assert "model: tiny-tri" in res.output
    res = run_cli(["predict", "tiny-clf", str(face), "--out", str(tmp_path / "p3")])
    assert "model: tiny-clf" in res.output
    res = run_cli(["predict", "tiny-clf", "--model", "tiny-tri", str(face)], expect=2)
    assert "not both" in res.output
    res = run_cli(["models", "--pretrained", "--verify"])
    assert "== tiny-clf" in res.output and "SHA-256" in res.output and "Retrain:" in res.output
    res = run_cli(["evaluate", "no-such-model"], expect=2)
    assert "no pretrained model of that name" in res.output


def test_zoo_model_names_its_data_and_explains_with_data(zoo, monkeypatch, tmp_path, classifier_run):
    """A pretrained model's data is not on the user's machine: the error says to pass --data;
    with --data (the same classes) explain and filters work; other classes are refused."""
    from conftest import run_cli
    from fermetric.errors import DataError

    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    entry = load_pretrained("tiny-clf", device="cpu")
    entry.cfg.data.source = str(tmp_path / "gone" / "fer2013.csv")  # as on a machine without the data
    with pytest.raises(DataError, match=r"pretrained model 'tiny-clf' was trained on .*--data PATH"):
        entry.load_data()
    res = run_cli(["explain", "tiny-clf", "--data", "synth", "--per-class", "1", "--method", "saliency",
                   "--out", str(tmp_path / "ex")])
    assert (tmp_path / "ex" / "saliency_val.png").is_file(), res.output
    res = run_cli(["filters", "tiny-clf", "--data", "synth", "--num", "2", "--steps", "2", "--out", str(tmp_path / "fi")])
    assert len(list((tmp_path / "fi").glob("*.png"))) == 2, res.output


def test_use_data_keys_the_embedding_cache_to_the_data(classifier_run, tmp_path):
    import shutil

    run_dir = Path(shutil.copytree(classifier_run, tmp_path / "clf"))
    run = load_run(run_dir, device="cpu")
    a = embed_split(run, "val")
    run.use_data(run.load_data())  # same data: the disk cache is used again
    assert np.array_equal(embed_split(run, "val"), a)
    meta = json.loads((run_dir / "embeddings" / "val.json").read_text())
    assert meta["data"] == str(run.cfg.data.source)
    meta["data"] = "/elsewhere/fer2013.csv"
    (run_dir / "embeddings" / "val.json").write_text(json.dumps(meta))
    fresh = load_run(run_dir, device="cpu")
    assert np.allclose(embed_split(fresh, "val"), a, atol=1e-5)  # recomputed, not trusted
    assert json.loads((run_dir / "embeddings" / "val.json").read_text())["data"] == str(run.cfg.data.source)


def test_predict_without_run_and_without_a_zoo_says_what_to_do(monkeypatch, tmp_path):
    from conftest import run_cli

    monkeypatch.setenv("FERMETRIC_ZOO", str(tmp_path / "empty-zoo"))
    res = run_cli(["predict", str(tmp_path / "face.png")], expect=2)
    assert "default pretrained model 'fer2013-baseline' is not installed" in res.output
    assert "fermetric predict RUN IMAGE" in res.output


def test_export_of_a_run_trained_on_a_csv_file(tmp_path):
    """The card is measured on the run's own data file (found through the run's full path) while the
    stored config keeps only its file name; exporting once measured on a path it had just cut down."""
    from conftest import run_cli

    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"] + [f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},{u}"
                                       for i, u in enumerate(["Training"] * 56 + ["PublicTest"] * 14)]
    csv = tmp_path / "tiny_fer.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    run_cli(["train-classifier", "--model", "baseline", "--epochs", "1", "--data", str(csv), "--out", str(run),
             "--set", "model.width=8", "--set", "train.batch_size=32"])
    entry = export_run(run, "csv-clf", description="d", retrain="r", recipe="c.yaml", root=tmp_path / "zoo")
    card = json.loads((entry / "card.json").read_text())
    assert card["test"]["n"] == 14
    assert "tiny_fer.csv" in (entry / "config.yaml").read_text() and str(tmp_path) not in (entry / "config.yaml").read_text()
    assert load_run(run).cfg.data.source == str(csv)  # the run itself is untouched


def test_evaluate_and_init_from_take_a_zoo_name(zoo, monkeypatch, tmp_path):
    """evaluate NAME --data and train-* --init-from NAME work with a pretrained model's name
    (explain and filters: test_zoo_model_names_its_data_and_explains_with_data)."""
    import yaml

    from conftest import TINY_TRAIN_ARGS, run_cli

    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    res = run_cli(["evaluate", "tiny-clf", "--data", "synth", "--split", "val", "--out", str(tmp_path / "ev")])
    m = json.loads(next((tmp_path / "ev").glob("*.json")).read_text())
    assert 0.0 <= m["accuracy"] <= 1.0 and m["run"].endswith("tiny-clf"), res.output
    monkeypatch.chdir(tmp_path)  # the name must stay a name, not become <cwd>/tiny-clf
    out = tmp_path / "warm"
    run_cli(["train-triplet", "--epochs", "1", "--init-from", "tiny-clf", "--out", str(out), *TINY_TRAIN_ARGS,
             "--set", "metric.m_per_class=4", "--set", "train.max_steps_per_epoch=1"])
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_from"] == "tiny-clf"
    assert "initialised from run" in (out / "train.log").read_text()
    res = run_cli(["train-classifier", "--epochs", "1", "--init-from", "no-such-model", "--out", str(tmp_path / "x"),
                   *TINY_TRAIN_ARGS], expect=2)
    assert "no pretrained model of that name" in res.output and not (tmp_path / "x").exists()


def test_staged_export_sums_every_stage(zoo, classifier_run, tmp_path, monkeypatch):
    """A warm restart from a shipped entry (train_zoo.sh's stage 2), exported with --stage: the
    card's epochs and minutes are both stages', its `stages` name where each ran; a third stage
    from that (two-stage) entry carries all three."""
    from conftest import TINY_TRAIN_ARGS, run_cli

    monkeypatch.setenv("FERMETRIC_ZOO", str(zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    second = tmp_path / "stage2"
    run_cli(["train-classifier", "--epochs", "1", "--init-from", "tiny-clf", "--out", str(second), *TINY_TRAIN_ARGS])
    first = get_entry("tiny-clf", zoo).card
    entry = export_run(second, "two-stage", description="d", retrain="r", recipe="a.yaml, then b.yaml",
                       split_name="SynthFER val", data_name="SynthFER", root=tmp_path / "zoo", earlier=["tiny-clf"])
    card = json.loads((entry / "card.json").read_text())
    assert card["recipe"] == "a.yaml, then b.yaml" and card["epochs"] == first["epochs"] + 1
    assert [s.get("entry") for s in card["stages"]] == ["tiny-clf", None] and card["stages"][1]["run"] == "stage2"
    assert card["train_minutes"] == pytest.approx(first["train_minutes"] + card["stages"][1]["train_minutes"], abs=0.11)
    assert card["machine"].startswith("stage 1: ") and "; stage 2: " in card["machine"]
    assert card["stages"][0]["sha256"] == first["sha256"]
    # stage 1 as a run directory (a retrain from scratch: train_zoo.sh passes OUT/<name>)
    entry = export_run(second, "two-stage-runs", description="d", retrain="r", recipe="a.yaml, then b.yaml",
                       split_name="SynthFER val", data_name="SynthFER", root=tmp_path / "zoo", earlier=[str(classifier_run)])
    card = json.loads((entry / "card.json").read_text())
    assert card["stages"][0]["run"] == classifier_run.name and card["epochs"] == load_run(classifier_run).metrics["epochs_run"] + 1
    # stage 3, warm-started from the shipped two-stage entry (here the same run stands in for it)
    two = json.loads((tmp_path / "zoo" / "two-stage" / "card.json").read_text())
    monkeypatch.setenv("FERMETRIC_ZOO", str(tmp_path / "zoo"))
    entry = export_run(second, "three-stage", description="d", retrain="r", recipe="a.yaml, then b.yaml, then c.yaml",
                       split_name="SynthFER val", data_name="SynthFER", root=tmp_path / "zoo", earlier=["two-stage"])
    card = json.loads((entry / "card.json").read_text())
    assert [s.get("entry") for s in card["stages"]] == ["tiny-clf", "two-stage", None]
    assert card["stages"][1]["sha256"] == two["sha256"] and card["stages"][1]["run"] == "stage2"
    assert card["epochs"] == two["epochs"] + 1 and card["machine"].count("; stage ") == 2
    assert card["train_minutes"] == pytest.approx(two["train_minutes"] + card["stages"][2]["train_minutes"], abs=0.11)
