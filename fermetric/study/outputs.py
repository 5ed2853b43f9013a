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
from fermetric.evaluation.calibration import brief_calibration
from fermetric.scoring.run import split_predictions, split_proba

log = logging.getLogger("fermetric.study")


def _report_split(metrics: dict[str, Any]) -> str:
    """test where the data has one (metrics.json then holds it), else val (FER2013 without
    PrivateTest: selection and report both on PublicTest, said in the tables)."""
    return "test" if isinstance(metrics.get("test"), dict) else "val"


def _parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _open_pretrained(name: str, data: str, device: Optional[str], shared: dict[str, Any]) -> Any:
    """The zoo entry `name` as a run reading the study's data (parsed once for every entry). An
    ensemble entry votes with the study's own runs of its members where the study has them open,
    so their TTA predictions are computed once for both (the zoo ensemble cost as much again)."""
    from fermetric.zoo import load_pretrained

    opened = shared.setdefault("opened", {})
    run = opened.get(name) or load_pretrained(name, device=device or "auto", opened=opened)
    if "splits" in shared:
        run.use_data(shared["splits"], data)
    else:
        shared["splits"] = run.use_data(data)
    opened[name] = run
    for m in getattr(run, "members", ()):  # an ensemble listed before its members: they share its runs
        opened.setdefault(m.label, m.run)
    return run


def _pretrained_metrics(run: Any) -> dict[str, Any]:
    """What a trained run's metrics.json holds, measured for a zoo entry on the study's data: the
    metrics of val (FER2013 PublicTest) and of test where the data has one, the training time
    and epochs from its card (an ensemble: its members')."""
    from fermetric.zoo import get_entry

    data = run.load_data()
    m: dict[str, Any] = {"data": str(run.cfg.data.source)}
    for split in ("val", "test"):
        if split in data and len(data[split]):
            m[split] = _measured(run, split)
    trained = [mb.run for mb in run.members] if run.kind == "ensemble" else [run]
    cards = [get_entry(r.pretrained).card for r in trained]
    m["train_seconds"] = 60.0 * sum(c.get("train_minutes") or 0 for c in cards)
    if run.kind != "ensemble":
        m["epochs_run"] = cards[0].get("epochs")
    return m


def _tta_metrics(run: Any, split: str, tta: str, device: Optional[str], pretrained: bool) -> dict[str, Any]:
    """A classifier's metrics on `split` with TTA: `fermetric evaluate` of a trained run (its
    files in RUN/eval), measured in memory for a zoo entry (whose folder is a cache)."""
    if not pretrained:
        from fermetric.api import evaluate_run

        return evaluate_run(run.path, split=split, tta=tta, device=device)[0]
    return _measured(run, split, tta)


def _measured(run: Any, split: str, tta: Any = False) -> dict[str, Any]:
    """classification_metrics of a run's predictions (with `tta`) on a split of its data."""
    from fermetric.evaluation.metrics import classification_metrics

    return classification_metrics(run.load_data()[split].labels.numpy(), split_predictions(run, split, tta=tta), run.class_names)


def write_outputs(study: StudyConfig, result: Any, seeds: Sequence[int], data: Optional[str], device: Optional[str],
                  tta: Optional[str], explain: bool, say: Callable[[str], None],
                  finished_seeds: Callable[[str], list[int]]) -> None:
    """Evaluate, ensemble, explain, tabulate and report (see fermetric.study.runner)."""
    import time

    from fermetric.zoo.load import open_run as load_run
    from fermetric.study.config import run_dir_of
    from fermetric.study.results import result_row, write_results

    out = result.out
    runs: dict[tuple[str, int], Any] = {}
    metrics: dict[tuple[str, int], dict[str, Any]] = {}  # metrics.json of a trained run; measured for a zoo entry
    t = time.time()
    shared: dict[str, Any] = {}
    for name, entry in study.models.items():
        if entry.pretrained:  # reported under the first seed, beside that seed's trained runs
            say(f"== {name}: pretrained {entry.pretrained}, on {data or study.data}")
            run = _open_pretrained(entry.pretrained, data or study.data, device, shared)
            runs[(name, seeds[0])], metrics[(name, seeds[0])] = run, _pretrained_metrics(run)
            continue
        for seed in finished_seeds(name):
            runs[(name, seed)] = load_run(run_dir_of(out, name, seed), device=device or "auto")
            metrics[(name, seed)] = runs[(name, seed)].metrics
    if not runs:
        raise FermetricError(f"{out} holds no finished run of this study; nothing to evaluate")
    class_names = next(iter(runs.values())).class_names
    rows, ensembles = [], {}
    first_seed = seeds[0] if any(s == seeds[0] for _, s in runs) else min(s for _, s in runs)
    for (name, seed), run in runs.items():
        m = metrics[(name, seed)]
        split = _report_split(m)
        tta_m = None
        if tta and run.kind == "classifier":
            tta_m = _tta_metrics(run, split, tta, device, bool(study.models[name].pretrained))
        y = run.load_data()[split].labels.numpy()
        rows.append(result_row(name, study.models[name].family, run.cfg.model.name, seed, str(m.get("data")), split,
                               m[split], val_metrics=m.get("val"), tta=tta if tta_m else None, tta_metrics=tta_m,
                               calibration=brief_calibration(split_proba(run, split), y),
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

        member_metrics = [metrics[(n, seed)] for n in members_of if (n, seed) in runs]
        split = _report_split(member_metrics[0])
        rep = ensemble_report(members, split, tta or False)
        write_json(out / "ensemble" / f"seed{seed}" / f"ensemble_{split}.json", rep)
        ensembles[seed] = rep
        names = "+".join(n for n in members_of if (n, seed) in runs)
        # the plain mean, then the vote with weights searched on val (cross-fitted when val is the
        # split reported), which can drop near-chance members that drag the mean down
        for row_name, vote, how in (("ensemble (soft vote)", "soft_vote", "soft vote of "),
                                    ("ensemble (fitted)", "fitted_vote", "val-fitted vote of ")):
            rows.append(result_row(row_name, "ensemble", how + names, seed, str(member_metrics[0].get("data")),
                                   split, rep[vote], calibration=rep[vote].get("calibration"),
                                   parameters=sum(_parameters(r.model) for r in members),
                                   train_seconds=sum(mm.get("train_seconds") or 0 for mm in member_metrics)))
    result.steps.append(("ensemble", time.time() - t))
    if study.retrieval.knn or study.retrieval.embed_plot:
        t = time.time()
        _retrieval_outputs(study, [r for (n, s), r in runs.items() if s == first_seed and not study.models[n].pretrained],
                           result, say)
        result.steps.append(("kNN and embeddings", time.time() - t))
    result.rows = rows
    result.paths.update(write_results(out, rows, class_names))
    fig_dir = out / "figures"
    panels = [{"name": n, "confusion": m[_report_split(m)]["confusion"], "accuracy": m[_report_split(m)]["accuracy"]}
              for (n, s), m in metrics.items() if s == first_seed]
    if first_seed in ensembles:
        panels.append({"name": "ensemble (fitted)", "confusion": ensembles[first_seed]["fitted_vote"]["confusion"],
                       "accuracy": ensembles[first_seed]["fitted_vote"]["accuracy"]})
    from fermetric.plotting.confusion import plot_confusion_grid

    split = _report_split(next(iter(metrics.values())))
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
    # a zoo entry has no run directory to show: the study's tables and figures stand for it
    result.paths["report.html"] = write_study_report(
        study, out, [r.path for (n, s), r in runs.items() if s == first_seed and not study.models[n].pretrained],
        rows, class_names, explanations)


def _retrieval_outputs(study: StudyConfig, runs: Sequence[Any], result: Any, say: Callable[[str], None]) -> None:
    """The kNN report (RUN/knn_<split>) and the 2-D embedding map (RUN/embed_<split>_umap.png) of
    each trained run, as `fermetric knn-eval` and `fermetric embed-plot` write them."""
    from fermetric.api import embed_plot, knn_eval

    split = study.retrieval.split
    for run in runs:
        if study.retrieval.knn:
            rep, paths = knn_eval(run.path, split)
            say(f"== kNN {run.name} on {split}: accuracy {rep['accuracy'] * 100:.2f} %, MAP@R "
                f"{rep.get('mean_average_precision_at_r', float('nan')):.4f}")
            result.figures += [p for p in paths if p.suffix == ".png"]
        if study.retrieval.embed_plot:
            _, paths = embed_plot(run.path, split)
            say(f"== embeddings of {run.name}: {paths[0]}")
            result.figures.append(paths[0])


def write_study_report(study: StudyConfig, out: Path, run_dirs: Sequence[Path], rows: Sequence[dict[str, Any]],
                       class_names: Sequence[str], explanations: Optional[dict[str, Any]] = None) -> Path:
    """report.html: the results tables (results.md's text) first, then the study's figures,
    ensemble and faithfulness table, then every run (fermetric.report)."""
    from fermetric.report import build_report
    from fermetric.report.html import study_section
    from fermetric.study.results import rows_to_markdown

    preface = study_section(rows_to_markdown(rows, class_names, explanations))
    extras = [p for p in (out / "figures", out / "ensemble", out / "explain_eval") if p.exists()]
    return build_report(list(run_dirs), out / "report.html", title=f"fermetric study: {study.name}",
                        extra_dirs=extras, preface_html=preface)
