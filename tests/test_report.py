"""The HTML report: self-contained, escaped, complete, and rendered without broken images."""
from __future__ import annotations

import base64
import html.parser
import importlib.util
import io
import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from click.testing import CliRunner

from fermetric.cli import main
from fermetric.errors import DataError
from fermetric.evaluation.metrics import classification_metrics
from fermetric.report import build_report, collect_run

REPO = Path(__file__).resolve().parents[1]
RENDER_SCRIPT = REPO / "scripts" / "render_report.py"

# A class name that breaks the page if anything is left unescaped.
EVIL = '<b>Happy & "glad"</b>'
CLASSES = ["Angry", EVIL, "Neutral"]


def _load_render_script():
    spec = importlib.util.spec_from_file_location("render_report", RENDER_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _png(path: Path, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0])
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def make_run(root: Path, name: str, kind: str, seed: int, with_curves: bool = False) -> dict:
    """A run directory written by hand, the way the trainer and evaluate/knn-eval lay it out."""
    run = root / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 40)
    pred = np.where(rng.random(40) < 0.6, y, rng.integers(0, 3, 40))
    val = classification_metrics(y, pred, CLASSES)
    test = classification_metrics(y[:30], pred[:30], CLASSES)
    metrics = {"kind": kind, "model": f"model-{name}", "data": "SynthFER(seed=0)", "best_epoch": 2,
               "best_metric": "val_acc", "epochs_run": 3, "stopped_early": False, "train_seconds": 12.5,
               "seed": 0, "val": val, "test": test}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text(f"seed: 0\nmodel:\n  name: model-{name}\n  note: '<script>x</script>'\ntrain:\n  epochs: 3\n")
    (run / "history.csv").write_text(
        "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_macro_f1,seconds\n"
        "1,0.1,1.9,0.2,1.8,0.25,0.2,4\n2,0.05,1.5,0.4,1.6,0.4,0.35,4\n3,0.01,1.2,0.5,1.7,0.38,0.33,4\n"
    )
    pngs = {}
    if with_curves:
        pngs["figures/curves"] = _png(run / "figures" / "curves.png", "curves")
    pngs["figures/confusion_val"] = _png(run / "figures" / "confusion_val.png", "confusion")
    pngs["figures/embed_umap_val"] = _png(run / "figures" / "embed_umap_val.png", "umap")
    knn = dict(classification_metrics(y, y, CLASSES), k=5, weighting="distance", index="flat", n_query=40,
               n_gallery=100, dimension=16, precision_at_1=0.5, r_precision=0.4,
               mean_average_precision_at_r=0.3125, accuracy_vs_k={"k": [1, 5], "accuracy": [0.5, 0.6], "macro_f1": [0.4, 0.5]})
    (run / "knn_val").mkdir()
    (run / "knn_val" / "knn_report.json").write_text(json.dumps(knn))
    pngs["knn_val/knn_confusion"] = _png(run / "knn_val" / "knn_confusion.png", "knn")
    pngs["explain/gradcam/grid"] = _png(run / "explain" / "gradcam" / "grid.png", "gradcam grid")
    (run / "explain" / "explain_eval.json").write_text(json.dumps([
        {"method": "gradcam", "model": name, "deletion_auc": 0.123456, "insertion_auc": 0.7, "mask_mass_ratio": 0.4,
         "pointing_game": 0.9, "randomisation_rank_corr": 0.05, "seconds_per_image": 0.01},
    ]))
    return {"path": run, "val": val, "test": test, "pngs": pngs}


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_is_self_contained_escaped_and_complete(tmp_path):
    r = make_run(tmp_path, "run_a", "classifier", seed=0)
    out = build_report([r["path"]], tmp_path / "out" / "report.html")
    assert out == tmp_path / "out" / "report.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    page = _parse(out)

    # nothing external, no scripts: the render script's static check finds no problem
    n_img, problems = _load_render_script().static_check(text)
    assert problems == []
    assert "script" not in page.tags and "link" not in page.tags

    # every PNG of the run is embedded byte for byte; the curves are drawn from history.csv
    embedded = {img["alt"]: base64.b64decode(img["src"].split(",", 1)[1]) for img in page.imgs}
    for title, data in r["pngs"].items():
        assert embedded[title] == data, title
    assert "training curves (from history.csv)" in embedded
    assert embedded["training curves (from history.csv)"].startswith(b"\x89PNG")
    assert n_img == len(r["pngs"]) + 1

    # text from files is escaped, and it reads back as the original after parsing
    assert EVIL not in text and "<script>x</script>" not in text
    joined = "".join(page.text)
    assert EVIL in joined and "<script>x</script>" in joined

    # headline numbers, per-class and confusion tables, kNN and explanation tables
    assert f"accuracy {r['val']['accuracy'] * 100:.2f} %" in joined
    assert f"macro-F1 {r['test']['macro_f1'] * 100:.2f} %" in joined
    f1 = r["val"]["per_class"][EVIL]["f1"]
    assert f"{f1:.3f}" in joined
    assert "31.25 %" in joined  # MAP@R of the kNN report
    assert "0.1235" in joined  # deletion AUC of explain_eval.json, 4 significant digits
    assert "resolved config" in joined


def test_report_compares_runs_and_shows_the_ensemble(tmp_path):
    a = make_run(tmp_path, "run_a", "classifier", seed=0, with_curves=True)
    b = make_run(tmp_path, "run_b", "embedding", seed=1)
    ens = tmp_path / "ens"
    ens.mkdir()
    votes = classification_metrics([0, 1, 2, 1], [0, 1, 2, 2], CLASSES)
    (ens / "ensemble_test.json").write_text(json.dumps({
        "members": [{"member": str(a["path"]), "kind": "classifier", "model": "m", "val_acc": 0.5, "test_acc": 0.25},
                    {"member": str(b["path"]), "kind": "embedding", "model": "m", "val_acc": 0.5, "test_acc": 0.5}],
        "split": "test", "tta": False, "soft_vote": votes, "val_weighted_vote": votes}))
    out = build_report([a["path"], b["path"]], tmp_path / "r.html", title="A & B", extra_dirs=[ens])
    text = out.read_text(encoding="utf-8")
    assert "<title>A &amp; B</title>" in text
    comp = text[text.index('id="comparison"'):text.index('id="run-0-run-a"')]
    for r in (a, b):
        assert f"{r['val']['accuracy'] * 100:.2f} %" in comp
    # the higher val accuracy is the one marked best
    best = max((a, b), key=lambda r: r["val"]["accuracy"])["val"]["accuracy"]
    assert re.search(rf'<td class="best">{best * 100:.2f} %</td>', comp)
    assert "embedding" in comp and "classifier" in comp
    assert "Ensemble: ensemble_test on test" in text
    assert "75.00 %" in text  # soft-vote accuracy: 3 of 4


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        collect_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a fermetric run directory"):
        collect_run(tmp_path / "empty")
    r = make_run(tmp_path, "run_a", "classifier", seed=0)
    (r["path"] / "metrics.json").write_text('{"kind": "classifier", ')
    with pytest.raises(DataError, match=r"metrics\.json: not valid JSON"):
        collect_run(r["path"])
    res = CliRunner().invoke(main, ["report", str(r["path"]), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2
    assert "not valid JSON" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["report"])
    assert res.exit_code == 2 and "at least one RUN" in res.output


def test_invalid_png_is_left_out_with_a_note(tmp_path):
    r = make_run(tmp_path, "run_a", "classifier", seed=0)
    (r["path"] / "figures" / "broken.png").write_bytes(b"not a png at all")
    out = build_report([r["path"]], tmp_path / "r.html")
    page = _parse(out)
    assert all(base64.b64decode(i["src"].split(",", 1)[1]).startswith(b"\x89PNG") for i in page.imgs)
    assert "figures/broken" not in {i["alt"] for i in page.imgs}
    assert "broken.png is not a valid PNG" in "".join(page.text)


def test_cli_report_of_a_trained_run(classifier_run, tmp_path):
    """End to end: conftest's tiny classifier run (trained by the CLI) reported by the CLI."""
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", str(classifier_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    text = out.read_text(encoding="utf-8")
    metrics = json.loads((classifier_run / "metrics.json").read_text())
    assert f"accuracy {metrics['val']['accuracy'] * 100:.2f} %" in text
    n_png = sum(1 for _ in classifier_run.rglob("*.png"))
    assert text.count("<img ") == n_png and n_png >= 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_without_broken_images(tmp_path):
    import subprocess
    import sys

    a = make_run(tmp_path, "run_a", "classifier", seed=0)
    out = build_report([a["path"]], tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(RENDER_SCRIPT), str(out), "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert f"{len(a['pngs']) + 1} images rendered, 0 broken" in proc.stdout

    # the checker must be able to fail: corrupt one embedded image
    text = out.read_text(encoding="utf-8")
    bad = tmp_path / "bad.html"
    bad.write_text(re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', text, count=1))
    proc = subprocess.run([sys.executable, str(RENDER_SCRIPT), str(bad)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 broken image(s)" in proc.stdout


def test_explain_eval_layouts_and_extra_json_file(tmp_path):
    from fermetric.report.html import explain_rows

    row = {"deletion_auc": 0.25, "pointing_game": 0.75}
    assert explain_rows([{"method": "m", **row}]) == [{"method": "m", **row}]
    assert explain_rows({"rows": [{"method": "m", **row}]}) == [{"method": "m", **row}]
    assert explain_rows({"occlusion": {"resnet18": row}}) == [{"method": "occlusion", "model": "resnet18", **row}]
    assert explain_rows({"lime": row}) == [{"method": "lime", **row}]
    # an explain_eval.json given on its own with --extra is shown as a table
    f = tmp_path / "explain_eval.json"
    f.write_text(json.dumps({"occlusion": {"resnet18 <x>": row}}))
    r = make_run(tmp_path, "run_a", "classifier", seed=0)
    out = build_report([r["path"]], tmp_path / "r.html", extra_dirs=[f])
    text = out.read_text(encoding="utf-8")
    assert "resnet18 &lt;x&gt;" in text and "<td>0.75</td>" in text and "occlusion" in text
