"""Everything a study writes after training: TTA evaluations, the ensemble, the figures of the
studies (confusion grid, image / saliency / mask rows, LIME regions, filters and layer outputs),
the faithfulness table, the results tables and the HTML report."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from fermetric.errors import FermetricError
from fermetric.plotting import save_figure
from fermetric.study.config import StudyConfig

log = logging.getLogger("fermetric.study")


def _report_split(metrics: dict[str, Any]) -> str:
    """test where the data has one (metrics.json then holds it), else val (FER2013 without
    PrivateTest: selection and report both on PublicTest, said in the tables)."""
    return "test" if isinstance(metrics.get("test"), dict) else "val"


def _parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def write_outputs(study: StudyConfig, result: Any, seeds: Sequence[int], data: Optional[str], device: Optional[str],
                  tta: Optional[str], explain: bool, say: Callable[[str], None],
                  finished_seeds: Callable[[str], list[int]]) -> None:
    """Evaluate, ensemble, explain, tabulate and report (see fermetric.study.runner)."""
    import time

    from fermetric.runs import load_run
    from fermetric.study.runner import run_dir_of
    from fermetric.study.results import result_row, write_results

    out = result.out
    runs: dict[tuple[str, int], Any] = {}
    t = time.time()
    for name in study.models:
        for seed in finished_seeds(name):
            runs[(name, seed)] = load_run(run_dir_of(out, name, seed), device=device or "auto")
    if not runs:
        raise FermetricError(f"{out} holds no finished run of this study; nothing to evaluate")
    class_names = next(iter(runs.values())).class_names
    rows, ensembles = [], {}
    first_seed = seeds[0] if any(s == seeds[0] for _, s in runs) else min(s for _, s in runs)
    for (name, seed), run in runs.items():
        m = run.metrics
        split = _report_split(m)
        tta_m = None
        if tta and run.kind == "classifier":
            from fermetric.api import evaluate_run

            tta_m = evaluate_run(run.path, split=split, tta=tta, device=device)[0]
        rows.append(result_row(name, study.models[name].family, run.cfg.model.name, seed, str(m.get("data")), split,
                               m[split], val_metrics=m.get("val"), tta=tta if tta_m else None, tta_metrics=tta_m,
                               parameters=_parameters(run.model), train_seconds=m.get("train_seconds"),
                               epochs_run=m.get("epochs_run"), best_epoch=m.get("best_epoch"), run=str(run.path)))
    result.steps.append(("evaluate", time.time() - t))
    t = time.time()
    members_of = study.ensemble or [n for n, e in study.models.items() if e.family == "classifier"]
    for seed in sorted({s for _, s in runs}):
        members = [runs[(n, seed)] for n in members_of if (n, seed) in runs]
        if len(members) < 2:
            continue
        from fermetric.evaluation.ensemble import ensemble_report
        from fermetric.utils.io import write_json

        split = _report_split(members[0].metrics)
        rep = ensemble_report(members, split, tta or False)
        write_json(out / "ensemble" / f"seed{seed}" / f"ensemble_{split}.json", rep)
        ensembles[seed] = rep
        names = "+".join(n for n in members_of if (n, seed) in runs)
        # the plain mean, then the vote with weights searched on val (cross-fitted when val is the
        # split reported), which can drop near-chance members that drag the mean down
        for row_name, vote, how in (("ensemble (soft vote)", "soft_vote", "soft vote of "),
                                    ("ensemble (fitted)", "fitted_vote", "val-fitted vote of ")):
            rows.append(result_row(row_name, "ensemble", how + names, seed, str(members[0].metrics.get("data")),
                                   split, rep[vote], parameters=sum(_parameters(r.model) for r in members),
                                   train_seconds=sum(r.metrics.get("train_seconds") or 0 for r in members)))
    result.steps.append(("ensemble", time.time() - t))
    result.rows = rows
    result.paths.update(write_results(out, rows, class_names))
    fig_dir = out / "figures"
    panels = [{"name": n, "confusion": r.metrics[_report_split(r.metrics)]["confusion"],
               "accuracy": r.metrics[_report_split(r.metrics)]["accuracy"]}
              for (n, s), r in runs.items() if s == first_seed]
    if first_seed in ensembles:
        panels.append({"name": "ensemble (fitted)", "confusion": ensembles[first_seed]["fitted_vote"]["confusion"],
                       "accuracy": ensembles[first_seed]["fitted_vote"]["accuracy"]})
    from fermetric.plotting.confusion import plot_confusion_grid

    split = _report_split(next(iter(runs.values())).metrics)
    result.figures.append(save_figure(plot_confusion_grid(
        panels, class_names, title=f"{study.name}: row-normalised confusion on {split} (seed {first_seed})"),
        fig_dir / "confusion_grid.png"))
    say(f"== figures and tables in {out}")
    if explain:
        t = time.time()
        from fermetric.study.explain import explain_study

        everyone = {n: runs[(n, first_seed)] for n in study.models if (n, first_seed) in runs}
        chosen = {n: r for n, r in everyone.items() if not study.explain.models or n in study.explain.models}
        explanations = explain_study(study, chosen, everyone, out, result, say)
        if explanations is not None and explanations["masks"]:
            # results.md again, now with the evidence-mask table (written first so that a failed
            # explanation step still leaves the accuracy table)
            result.paths.update(write_results(out, rows, class_names, explanations))
        result.steps.append(("explain", time.time() - t))
    else:
        explanations = None
    result.paths["report.html"] = write_study_report(study, out, [r.path for (n, s), r in runs.items() if s == first_seed],
                                                     rows, class_names, explanations)


def write_study_report(study: StudyConfig, out: Path, run_dirs: Sequence[Path], rows: Sequence[dict[str, Any]],
                       class_names: Sequence[str], explanations: Optional[dict[str, Any]] = None) -> Path:
    """report.html: the results tables (results.md's text) first, then the study's figures,
    ensemble and faithfulness table, then every run (fermetric.report)."""
    import html

    from fermetric.report import build_report
    from fermetric.study.results import rows_to_markdown

    table = rows_to_markdown(rows, class_names, explanations)
    preface = ("<section id=\"study\"><h2>Study results</h2><pre>" + html.escape(table) + "</pre></section>")
    extras = [p for p in (out / "figures", out / "ensemble", out / "explain_eval") if p.exists()]
    return build_report(list(run_dirs), out / "report.html", title=f"fermetric study: {study.name}",
                        extra_dirs=extras, preface_html=preface)
