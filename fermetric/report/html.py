"""One self-contained HTML report for one or more run directories.

Self-contained means: figures are embedded as base64 PNG data URIs, the CSS is inline, and the
page loads nothing else (no scripts, fonts, stylesheets or network). Every piece of text that
comes from a file (class names, config values, paths) goes through `html.escape`.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import struct
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from fermetric.errors import DataError
from fermetric.report.collect import ExtraSummary, Figure, RunSummary, collect_extra, collect_run
from fermetric.utils.io import atomic_write_text
from fermetric.utils.outputs import file_starts_with, replaceable_file

GENERATOR_META = '<meta name="generator" content="fermetric '  # marks the HTML as a fermetric report

__all__ = ["build_report", "render_report", "explain_rows"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Columns of the explanation-faithfulness table, in display order, with which direction is better.
EXPLAIN_COLUMNS: dict[str, str] = {
    "deletion_auc": "lower is better",
    "insertion_auc": "higher is better",
    "mask_mass_ratio": "higher is better",
    "pointing_game": "higher is better",
    "randomisation_rank_corr": "lower is better (map depends on the weights)",
    "seconds_per_image": "lower is better",
}

CSS = """
:root { --fg:#1d2433; --muted:#5b6475; --line:#d8dce4; --bg:#ffffff; --panel:#f6f7f9; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 22px; margin: 40px 0 8px; padding-top: 12px; border-top: 3px solid var(--accent); }
h3 { font-size: 18px; margin: 28px 0 8px; color: var(--accent); }
h4 { font-size: 15px; margin: 18px 0 6px; }
p.meta, .muted { color: var(--muted); font-size: 13px; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: var(--panel); border: 1px solid var(--line); padding: 10px 12px; overflow-x: auto;
      max-height: 560px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; vertical-align: middle; }
th { background: var(--panel); font-weight: 600; }
td.l, th.l { text-align: left; }
tr.ens td { background: #eef4fb; font-weight: 600; }
td.best { font-weight: 700; color: #0b6b2f; }
table.kv td:first-child { text-align: left; color: var(--muted); }
table.kv td:last-child { text-align: left; }
table.cm td { min-width: 58px; text-align: center; }
table.cm th.rot { font-size: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         background: #e3ecf8; color: var(--accent); vertical-align: middle; }
.badge.embedding { background: #f3e8fa; color: #7a2c9e; }
.warn { background: #fff4e0; border: 1px solid #f0c36d; padding: 6px 10px; border-radius: 4px; }
.row { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 18px; }
.grid.wide { grid-template-columns: 1fr; }
.grid.wide img { max-width: min(100%, 1000px); }
figure { margin: 0; background: var(--panel); border: 1px solid var(--line); padding: 8px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; background: #fff; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 4px; text-align: center; word-break: break-all; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; color: var(--accent); }
nav ul { columns: 2; margin: 6px 0; }
section.run { margin-top: 12px; }
"""


# -- small formatting helpers -------------------------------------------------------------------

def e(x: Any) -> str:
    """Escaped text of any value."""
    return html.escape("" if x is None else str(x), quote=True)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def pct(x: Any) -> str:
    return f"{float(x) * 100:.2f} %" if _is_num(x) else "–"


def num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if _is_num(x):
        return f"{float(x):.{digits}g}"
    return e(x) if x is not None else "–"


def fixed(x: Any, digits: int = 3) -> str:
    return f"{float(x):.{digits}f}" if _is_num(x) else "–"


def seconds(x: Any) -> str:
    if not _is_num(x):
        return "–"
    s = float(x)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _anchor(*parts: str) -> str:
    raw = "-".join(parts)
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-").lower() or "x"


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the IHDR chunk, or None when the bytes are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return (w, h) if w > 0 and h > 0 else None


def _kind_badge(kind: str) -> str:
    cls = "badge embedding" if kind == "embedding" else "badge"
    return f'<span class="{cls}">{e(kind)}</span>'


# -- building blocks ----------------------------------------------------------------------------

def figure_html(fig: Figure, notes: list[str]) -> str:
    """<figure> with the PNG embedded; a file that is not a PNG becomes a note, not a broken image."""
    try:
        data = fig.png_bytes()
    except OSError as exc:
        notes.append(f"could not read {fig.path}: {exc}")
        return ""
    size = _png_size(data)
    if size is None:
        notes.append(f"{fig.path or fig.title} is not a valid PNG; left out")
        return ""
    w, h = size
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{b64}" width="{w}" height="{h}" alt="{e(fig.title)}">'
        f"<figcaption>{e(fig.title)}</figcaption></figure>"
    )


def figures_html(figs: Sequence[Figure], notes: list[str], wide: bool = False) -> str:
    items = [figure_html(f, notes) for f in figs]
    items = [i for i in items if i]
    if not items:
        return ""
    return f'<div class="grid{" wide" if wide else ""}">' + "".join(items) + "</div>"


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def per_class_table(m: dict[str, Any]) -> str:
    per = m.get("per_class") or {}
    if not isinstance(per, dict) or not per:
        return ""
    head = '<tr><th class="l">class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>'
    rows = []
    for name, v in per.items():
        v = v if isinstance(v, dict) else {}
        rows.append(
            f'<tr><td class="l">{e(name)}</td><td>{fixed(v.get("precision"))}</td><td>{fixed(v.get("recall"))}</td>'
            f'<td>{fixed(v.get("f1"))}</td><td>{num(v.get("support"))}</td></tr>'
        )
    return f"<table>{head}{''.join(rows)}</table>"


def confusion_table(m: dict[str, Any]) -> str:
    """The confusion matrix as an HTML table: counts, shaded by the row-normalised rate."""
    cm = m.get("confusion")
    names = m.get("class_names") or list((m.get("per_class") or {}).keys())
    if not isinstance(cm, list) or not cm or len(names) != len(cm):
        return ""
    norm = m.get("confusion_normalized")
    if not isinstance(norm, list) or len(norm) != len(cm):
        norm = []
        for row in cm:
            s = sum(float(v) for v in row)
            norm.append([float(v) / s if s else 0.0 for v in row])
    head = '<tr><th class="l">true \\ predicted</th>' + "".join(f'<th class="rot">{e(n)}</th>' for n in names) + "</tr>"
    rows = []
    for name, row, nrow in zip(names, cm, norm):
        cells = []
        for v, r in zip(row, nrow):
            r = float(r) if _is_num(r) else 0.0
            colour = "#fff" if r > 0.55 else "#1d2433"
            cells.append(
                f'<td style="background: rgba(31, 95, 168, {r:.3f}); color: {colour}" '
                f'title="{r * 100:.1f} % of true {e(name)}">{num(v)}</td>'
            )
        rows.append(f'<tr><th class="l">{e(name)}</th>{"".join(cells)}</tr>')
    return f'<table class="cm">{head}{"".join(rows)}</table>'


def calibration_text(cal: Any) -> str:
    """", ECE x % (NLL y, Brier z)" of a calibration record, or "" without one."""
    if not isinstance(cal, dict) or cal.get("ece") is None:
        return ""
    return f", ECE {pct(cal.get('ece'))} (NLL {num(cal.get('nll'), 3)}, Brier {num(cal.get('brier'), 3)})"


def metrics_block(label: str, m: dict[str, Any]) -> str:
    head = (
        f"<h4>{e(label)}: accuracy {pct(m.get('accuracy'))}, macro-F1 {pct(m.get('macro_f1'))}"
        f"{calibration_text(m.get('calibration'))} <span class=\"muted\">(n = {num(m.get('n'))})</span></h4>"
    )
    extra = []
    if m.get("tta"):
        extra.append("test-time augmentation")
    if m.get("collapsed"):
        reason = (m.get("collapse") or {}).get("reason") or f"mean pairwise cosine {num(m.get('mean_pairwise_cosine'), 3)}"
        extra.append(f"embeddings collapsed ({reason})")
    note = f'<p class="warn">{e("; ".join(extra))}</p>' if extra else ""
    return head + note + f'<div class="row"><div>{per_class_table(m)}</div><div>{confusion_table(m)}</div></div>'


# -- explanation tables ---------------------------------------------------------------------------

def explain_rows(data: Any) -> list[dict[str, Any]]:
    """Rows (method x model) of an explain_eval.json, whatever its layout:

    a list of row dicts; {"rows": [...]}; {method: {model: {metric: value}}}; or
    {method: {metric: value}}.
    """
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if not isinstance(data, dict):
        return []
    rows: list[dict[str, Any]] = []
    for method, v in data.items():
        if not isinstance(v, dict):
            continue
        if v and all(isinstance(x, dict) for x in v.values()):
            for model, metrics in v.items():
                rows.append({"method": method, "model": model, **metrics})
        else:
            rows.append({"method": method, **v})
    return rows


def explain_table(data: Any, source: str) -> str:
    rows = explain_rows(data)
    if not rows:
        return f'<p class="warn">{e(source)}: no rows found</p>'
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    lead = [k for k in ("method", "model", "family", "kind", "scorer") if k in keys]
    known = [k for k in EXPLAIN_COLUMNS if k in keys]
    rest = [k for k in keys if k not in lead and k not in known and not isinstance(rows[0].get(k), (dict, list))]
    cols = lead + known + rest
    head = "".join(
        f'<th class="{"l" if c in lead else ""}" title="{e(EXPLAIN_COLUMNS.get(c, ""))}">{e(c.replace("_", " "))}'
        + (f'<br><span class="muted">{"↓" if "lower" in EXPLAIN_COLUMNS[c] else "↑"}</span>' if c in EXPLAIN_COLUMNS else "")
        + "</th>"
        for c in cols
    )
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f'<td class="l">{e(v)}</td>' if c in lead else f"<td>{num(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<p class="muted">{e(source)} (↓ lower is better, ↑ higher is better)</p>'
        f"<table><tr>{head}</tr>{''.join(body)}</table>"
    )


# -- per run ----------------------------------------------------------------------------------------

def _curves_figures(run: RunSummary, notes: list[str]) -> list[Figure]:
    figs = run.figures_in("curves")
    if figs or not run.history:
        return figs
    # No curves.png (an interrupted or hand-made run): draw them from history.csv in memory;
    # the report never writes into the run directory.
    from fermetric.plotting import figure_png
    from fermetric.plotting.curves import plot_history

    try:
        fig = plot_history(run.history, title=f"{run.name}: training curves")
    except (KeyError, TypeError, ValueError) as exc:
        notes.append(f"{run.path / 'history.csv'}: cannot plot the curves ({exc})")
        return []
    return [Figure(title="training curves (from history.csv)", section="curves", data=figure_png(fig))]


def _history_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = [c for c in rows[0].keys() if any(r.get(c) not in (None, "") for r in rows)]
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{num(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return (f"<details><summary>history.csv ({len(rows)} epochs)</summary>"
            f"<table><tr>{head}</tr>{body}</table></details>")


def _config_summary(cfg: dict[str, Any]) -> list[tuple[str, Any]]:
    def get(*keys: str) -> Any:
        v: Any = cfg
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    out = []
    for label, keys in (
        ("data source", ("data", "source")), ("FER+ labels", ("data", "ferplus")), ("model", ("model", "name")),
        ("optimiser", ("optim", "name")), ("learning rate", ("optim", "lr")), ("schedule", ("schedule", "name")),
        ("epochs", ("train", "epochs")), ("batch size", ("train", "batch_size")), ("seed", ("seed",)),
    ):
        v = get(*keys)
        if v is not None:
            out.append((label, e(v)))
    return out


def knn_block(split: str, rep: dict[str, Any], figs: list[Figure], notes: list[str]) -> str:
    parts = [
        f"<h4>kNN on {e(split)}: accuracy {pct(rep.get('accuracy'))}, macro-F1 {pct(rep.get('macro_f1'))}"
        f"{calibration_text(rep.get('calibration'))}</h4>",
        '<div class="row"><div>',
        kv_table([
            ("k", num(rep.get("k"))), ("weighting", e(rep.get("weighting"))), ("index", e(rep.get("index"))),
            ("queries / gallery", f"{num(rep.get('n_query'))} / {num(rep.get('n_gallery'))}"),
            ("dimension", num(rep.get("dimension"))), ("precision@1", pct(rep.get("precision_at_1"))),
            ("R-precision", pct(rep.get("r_precision"))), ("MAP@R", pct(rep.get("mean_average_precision_at_r"))),
        ]),
        "</div>",
    ]
    curve = rep.get("accuracy_vs_k") or {}
    if isinstance(curve, dict) and curve.get("k"):
        rows = "".join(
            f"<tr><td>{num(k)}</td><td>{pct(a)}</td><td>{pct(f)}</td></tr>"
            for k, a, f in zip(curve.get("k", []), curve.get("accuracy", []), curve.get("macro_f1", []))
        )
        parts.append(f"<div><table><tr><th>k</th><th>accuracy</th><th>macro-F1</th></tr>{rows}</table></div>")
    parts.append("</div>")
    parts.append(f'<div class="row"><div>{per_class_table(rep)}</div><div>{confusion_table(rep)}</div></div>')
    parts.append(figures_html(figs, notes))
    return "".join(parts)


def _notes_text(notes: Any) -> str:
    """metrics.json notes (a string, a list, or {epoch: {key: value}}) as one line."""
    if isinstance(notes, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {_notes_text(v)}" for k, v in notes.items())
    if isinstance(notes, list):
        return ", ".join(_notes_text(v) for v in notes)
    return num(notes) if _is_num(notes) else str(notes)


def run_section(run: RunSummary, idx: int, notes: list[str]) -> str:
    m = run.metrics
    aid = _anchor("run", str(idx), run.name)
    out = [f'<section class="run" id="{aid}"><h2>{e(run.name)} {_kind_badge(run.kind)}</h2>',
           f'<p class="meta">{e(run.path.resolve())}</p>']
    summary = [("kind", e(run.kind)), ("model", e(run.model_name))]
    if m.get("data"):
        summary.append(("data", e(m["data"])))
    if run.class_names:
        summary.append(("classes", e(", ".join(run.class_names))))
    if m.get("best_epoch") is not None:
        summary.append(("best epoch", f"{num(m.get('best_epoch'))} of {num(m.get('epochs_run'))} "
                                      f"({e(m.get('best_metric', ''))})"))
    if "stopped_early" in m:
        summary.append(("stopped early", num(m.get("stopped_early"))))
    if m.get("train_seconds") is not None:
        summary.append(("train time", seconds(m.get("train_seconds"))))
    if m.get("notes"):
        summary.append(("notes", e(_notes_text(m["notes"]))))
    out.append('<div class="row"><div>' + kv_table(summary) + "</div>")
    if run.config:
        out.append("<div>" + kv_table(_config_summary(run.config)) + "</div>")
    out.append("</div>")
    if run.config_text:
        out.append(f"<details><summary>resolved config (config.yaml)</summary><pre>{e(run.config_text)}</pre></details>")

    curves = _curves_figures(run, notes)
    if curves or run.history:
        out.append("<h3>Training curves</h3>" + figures_html(curves, notes, wide=True) + _history_table(run.history))

    splits = run.split_metrics()
    if splits:
        out.append("<h3>Metrics</h3>")
        for label, sm in splits.items():
            out.append(metrics_block(label, sm))
    conf = run.figures_in("confusion")
    if conf:
        out.append(f"<details open><summary>confusion matrix figures ({len(conf)})</summary>"
                   + figures_html(conf, notes) + "</details>")

    knn_figs = run.figures_in("knn")
    if run.knn or knn_figs:
        out.append("<h3>kNN report</h3>")
        used: set[int] = set()
        for split, rep in sorted(run.knn.items()):
            figs = [f for f in knn_figs if f.path is not None and f.path.parent.name == f"knn_{split}"]
            used.update(id(f) for f in figs)
            out.append(knn_block(split, rep, figs, notes))
        out.append(figures_html([f for f in knn_figs if id(f) not in used], notes))

    emb = run.figures_in("embeddings")
    if emb:
        out.append("<h3>Embeddings</h3>" + figures_html(emb, notes))

    expl = run.figures_in("explain")
    if expl or run.explain_eval:
        out.append("<h3>Explanations</h3>")
        for path, data in run.explain_eval:
            out.append(explain_table(data, str(path.relative_to(run.path))))
        out.append(figures_html(expl, notes, wide=True))

    other = run.figures_in("other")
    if other:
        out.append("<h3>Other figures</h3>" + figures_html(other, notes))
    out.append("</section>")
    return "".join(out)


# -- across runs ------------------------------------------------------------------------------------

def _split_value(run: RunSummary, split: str, key: str) -> Any:
    m = run.metrics.get(split)
    if isinstance(m, dict) and key in m:
        return m[key]
    ev = run.evals.get(split)
    return ev.get(key) if ev else None


def comparison_table(runs: Sequence[RunSummary]) -> str:
    """Classifiers and embedding models side by side; the best value of each metric in bold."""
    specs: list[tuple[str, Any, str]] = [
        ("val accuracy", lambda r: _split_value(r, "val", "accuracy"), "pct"),
        ("val macro-F1", lambda r: _split_value(r, "val", "macro_f1"), "pct"),
        ("test accuracy", lambda r: _split_value(r, "test", "accuracy"), "pct"),
        ("test macro-F1", lambda r: _split_value(r, "test", "macro_f1"), "pct"),
    ]
    for split in sorted({s for r in runs for s in r.knn}):
        specs.append((f"kNN accuracy ({split})", lambda r, s=split: (r.knn.get(s) or {}).get("accuracy"), "pct"))
        specs.append((f"MAP@R ({split})", lambda r, s=split: (r.knn.get(s) or {}).get("mean_average_precision_at_r"), "pct"))
    specs = [s for s in specs if any(_is_num(s[1](r)) for r in runs)]
    head = ('<tr><th class="l">run</th><th class="l">kind</th><th class="l">model</th>'
            + "".join(f"<th>{e(label)}</th>" for label, _, _ in specs)
            + "<th>best epoch</th><th>train time</th></tr>")
    best = {}
    for label, get, _ in specs:
        vals = [get(r) for r in runs if _is_num(get(r))]
        best[label] = max(vals) if vals else None
    body = []
    for i, r in enumerate(runs):
        cells = [
            f'<td class="l"><a href="#{_anchor("run", str(i), r.name)}">{e(r.name)}</a></td>',
            f'<td class="l">{_kind_badge(r.kind)}</td><td class="l">{e(r.model_name)}</td>',
        ]
        for label, get, _ in specs:
            v = get(r)
            cls = ' class="best"' if _is_num(v) and len(runs) > 1 and v == best[label] else ""
            cells.append(f"<td{cls}>{pct(v)}</td>")
        be, er = r.metrics.get("best_epoch"), r.metrics.get("epochs_run")
        cells.append(f"<td>{num(be)}{(' / ' + num(er)) if er is not None else ''}</td>")
        cells.append(f"<td>{seconds(r.metrics.get('train_seconds'))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def ensemble_block(name: str, data: dict[str, Any]) -> str:
    split = data.get("split", "?")
    members = data.get("members") or []
    key = f"{split}_acc"
    # members carry their val accuracy (the vote weights) and, on another split, that split's too
    val_col = split != "val"
    head = ('<tr><th class="l">member</th><th class="l">kind</th><th class="l">model</th>'
            + ("<th>val accuracy</th>" if val_col else "")
            + f"<th>{e(split)} accuracy</th><th>{e(split)} macro-F1</th><th>ECE / NLL / Brier</th></tr>")
    rows = []

    def cal(c: Any) -> str:
        return "–" if not isinstance(c, dict) else f"{pct(c.get('ece'))} / {num(c.get('nll'), 3)} / {num(c.get('brier'), 3)}"

    for m in members:
        if not isinstance(m, dict):
            continue
        rows.append(
            f'<tr><td class="l">{e(Path(str(m.get("member", "?"))).name)}</td><td class="l">{_kind_badge(str(m.get("kind", "?")))}</td>'
            f'<td class="l">{e(m.get("model", "?"))}</td>' + (f'<td>{pct(m.get("val_acc"))}</td>' if val_col else "")
            + f"<td>{pct(m.get(key))}</td><td>–</td><td>{cal(m.get('calibration'))}</td></tr>"
        )
    for vote in ("soft_vote", "val_weighted_vote", "fitted_vote"):
        v = data.get(vote)
        if isinstance(v, dict):
            rows.append(
                f'<tr class="ens"><td class="l">{e(vote.replace("_", " "))}</td><td class="l">ensemble</td><td class="l">'
                f"{len(members)} members</td>" + ("<td>–</td>" if val_col else "")
                + f"<td>{pct(v.get('accuracy'))}</td><td>{pct(v.get('macro_f1'))}</td><td>{cal(v.get('calibration'))}</td></tr>"
            )
    tta = " (TTA for classifier members)" if data.get("tta") else ""
    out = [f"<h3>Ensemble: {e(name)} on {e(split)}{e(tta)}</h3>", f"<table>{head}{''.join(rows)}</table>"]
    if data.get("weights_fitted_on"):
        out.append(f"<p>val-weighted and fitted votes: weights fitted on {e(data['weights_fitted_on'])}.</p>")
    best_vote = next((data[v] for v in ("soft_vote", "val_weighted_vote") if isinstance(data.get(v), dict)), None)
    if best_vote:
        out.append(f"<details><summary>soft vote per class and confusion</summary>{metrics_block('soft vote', best_vote)}</details>")
    return "".join(out)


def extra_section(extra: ExtraSummary, notes: list[str]) -> str:
    out = [f'<section id="{_anchor("extra", extra.name)}"><h2>{e(extra.name)}</h2>',
           f'<p class="meta">{e(extra.path.resolve())}</p>']
    for name, data in extra.ensembles.items():
        out.append(ensemble_block(name, data))
    for path, data in extra.explain_eval:
        rel = path.relative_to(extra.path) if extra.path.is_dir() else path.name
        out.append("<h3>Explanation faithfulness</h3>" + explain_table(data, str(rel)))
    expl = [f for f in extra.figures if f.section == "explain"]
    other = [f for f in extra.figures if f.section != "explain"]
    if expl:
        out.append("<h3>Explanation figures</h3>" + figures_html(expl, notes, wide=True))
    if other:
        out.append("<h3>Figures</h3>" + figures_html(other, notes))
    if len(out) == 2:
        out.append('<p class="muted">nothing the report can show (no ensemble_*.json, explain_eval.json or PNG)</p>')
    out.append("</section>")
    return "".join(out)


# -- the page ---------------------------------------------------------------------------------------

def render_report(runs: Sequence[RunSummary], extras: Sequence[ExtraSummary] = (), title: Optional[str] = None,
                  preface_html: str = "") -> str:
    """The HTML page as a string; `preface_html` (trusted HTML, e.g. a study's results) comes
    right after the table of contents."""
    from fermetric.version import __version__

    if title is None:
        title = "fermetric report: " + ", ".join(r.name for r in runs) if runs else "fermetric report"
    notes: list[str] = []
    body_runs = [run_section(r, i, notes) for i, r in enumerate(runs)]
    body_extra = [extra_section(x, notes) for x in extras]
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    toc = ["<nav><ul>"]
    if len(runs) > 1:
        toc.append('<li><a href="#comparison">comparison</a></li>')
    toc += [f'<li><a href="#{_anchor("run", str(i), r.name)}">{e(r.name)}</a> ({e(r.kind)}, {e(r.model_name)})</li>'
            for i, r in enumerate(runs)]
    toc += [f'<li><a href="#{_anchor("extra", x.name)}">{e(x.name)}</a> (extra)</li>' for x in extras]
    toc.append("</ul></nav>")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'{GENERATOR_META}{e(__version__)}">',  # what lets a later report replace this file (is_fermetric_report)
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">generated {e(now)} by fermetric {e(__version__)}; {len(runs)} run(s)'
        f"{', ' + str(len(extras)) + ' extra folder(s)' if extras else ''}</p>",
        "".join(toc),
        preface_html,
    ]
    if len(runs) > 1:
        parts.append('<section id="comparison"><h2>Comparison</h2>' + comparison_table(runs) + "</section>")
    parts += body_runs + body_extra
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def is_fermetric_report(path: Path) -> bool:
    """An HTML report fermetric wrote (its generator meta; reports of versions before it carry
    "by fermetric" in their first paragraph), which a new report may replace."""
    return file_starts_with(path, [GENERATOR_META.encode(), b'<p class="meta">generated '], head=1 << 16)


def build_report(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    title: Optional[str] = None,
    extra_dirs: Sequence[str | Path] = (),
    preface_html: str = "",
) -> Path:
    """Write one self-contained HTML report of run directories (and extra output folders).

    Args:
        run_dirs: run directories (train-classifier / train-siamese / train-triplet outputs).
        out_path: the HTML file to write (parent folders are created).
        title: page title (default: "fermetric report: <run names>").
        extra_dirs: folders (or single JSON files) with ensemble_*.json, explain_eval.json, PNGs.
        preface_html: HTML shown before the runs (built by fermetric, never from file contents).

    Returns:
        The path written.

    Raises:
        DataError: no run and no extra folder given, a run directory is not one, or a file in
            it cannot be parsed.
    """
    if not run_dirs and not extra_dirs:
        raise DataError("build_report needs at least one run directory or extra folder")
    runs = [collect_run(p) for p in run_dirs]
    extras = [collect_extra(p) for p in extra_dirs]
    out = replaceable_file(out_path, "report", is_fermetric_report)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, render_report(runs, extras, title, preface_html))


def pretrained_demo_section(record: dict[str, Any]) -> str:
    """The pretrained demo's model card and prediction table, as HTML for the report."""
    t = record["card"].get("test") or {}
    rows = "".join(
        f"<tr><td>{e(group)}</td><td>{e(f['name'])}</td><td>{e(f['label'] or '?')}</td><td>{e(f['prediction'])}</td>"
        f"<td>{pct(f['probability'])}</td></tr>"
        for group, g in record["groups"].items() for f in g["faces"])
    return (f"<section><h2>Pretrained model {e(record['model'])}</h2>"
            f"<p>{e(record['kind'])} ({e(record['architecture'])}), trained on {e(record['card'].get('data'))}; "
            f"accuracy {pct(t.get('accuracy'))}, macro-F1 {pct(t.get('macro_f1'))} on {e(record['card'].get('split'))} "
            f"(model card). Explained with {e(record['scorer'])}: {e(', '.join(record['methods']))}.</p>"
            "<table><tr><th>group</th><th>face</th><th>known class</th><th>predicted</th><th>probability</th></tr>"
            f"{rows}</table></section>")


def study_section(results_markdown: str) -> str:
    """A study's results tables (results.md's text), as the first section of its report."""
    return "<section id=\"study\"><h2>Study results</h2><pre>" + e(results_markdown) + "</pre></section>"
