"""`fermetric evaluate RUN` and `fermetric ensemble RUN RUN ...`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from fermetric.cli.options import OutPath, RUN, device_option, lock_run, precision_option


def _write_eval(out: Path, name: str, metrics: dict, title: str) -> list[Path]:
    from fermetric.plotting import save_figure

    from fermetric.evaluation.metrics import metrics_to_markdown
    from fermetric.plotting.confusion import plot_confusion
    from fermetric.utils.io import atomic_write_text, write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / f"{name}.json", metrics)]
    paths.append(atomic_write_text(out / f"{name}.md", metrics_to_markdown(metrics, title)))
    fig = plot_confusion(metrics["confusion"], metrics["class_names"], normalize=True, title=title)
    paths.append(save_figure(fig, out / f"{name}_confusion.png"))
    return paths


def register(main: click.Group) -> None:
    @main.command("evaluate")
    @click.argument("run", type=RUN)
    @click.option("--split", type=click.Choice(["val", "test", "train"]), default="val", show_default=True)
    @click.option("--tta", is_flag=True, help="Test-time augmentation: mean softmax over 5 crops x flip.")
    @click.option("--out", type=OutPath(file_okay=False), default=None, help="Default: RUN/eval.")
    @device_option
    @precision_option
    def evaluate(run: str, split: str, tta: bool, out: Optional[str], device: Optional[str], precision: Optional[str] = None) -> None:
        """Evaluate a trained run on a split: accuracy, macro-F1, per-class scores, confusion matrix."""
        from fermetric.evaluation.metrics import classification_metrics
        from fermetric.runs import load_run

        if out is None:
            lock_run(run)
        r = load_run(run, device=device or "auto", precision=precision or "auto")
        ds = r.load_data()[split]
        m = classification_metrics(ds.labels.numpy(), r.predict(split, tta=tta), r.class_names)
        m.update({"run": str(r.path), "split": split, "tta": tta, "kind": r.kind, "checkpoint": r.fingerprint})
        if r.kind == "embedding":
            knn = r.knn()
            m["knn"] = {"k": knn.k, "weighting": knn.weighting, "index": knn.index_type,
                        "index_source": str(r.index_dir) if r.index_dir.exists() else "exact index fitted on train",
                        "self_matches_excluded": split == "train"}
        name = f"{split}{'_tta' if tta else ''}"
        paths = _write_eval(Path(out) if out else r.path / "eval", name, m,
                            f"{r.cfg.model.name} on {split}{' + TTA' if tta else ''}")
        click.echo(f"{r.name} {split}{' (TTA)' if tta else ''}: accuracy {m['accuracy'] * 100:.2f} %, "
                   f"macro-F1 {m['macro_f1'] * 100:.2f} %")
        for p in paths:
            click.echo(f"  {p}")

    @main.command("ensemble")
    @click.argument("runs", nargs=-1, required=True, type=RUN)
    @click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
    @click.option("--tta", is_flag=True, help="TTA for the classifier members.")
    @click.option("--out", type=OutPath(file_okay=False), default="ensemble", show_default=True)
    @device_option
    @precision_option
    def ensemble(runs: tuple[str, ...], split: str, tta: bool, out: str, device: Optional[str], precision: Optional[str] = None) -> None:
        """Soft-vote and val-accuracy-weighted ensembles of classifier and embedding (kNN) runs.

        With --split test the weights are the members' val accuracies; with --split val they are
        cross-fitted (each half of val voted with accuracies on the other half), never fitted on
        the images they score. The output says which."""
        from fermetric.evaluation.ensemble import ensemble_report
        from fermetric.runs import load_run
        from fermetric.utils.io import atomic_write_text, write_json

        members = [load_run(r, device=device or "auto", precision=precision or "auto") for r in runs]
        results = ensemble_report(members, split, tta)
        rows = results["members"]
        outp = Path(out)
        lines = [f"| member | kind | {split} accuracy |", "|---|---|---:|"]
        for r in rows:
            lines.append(f"| {Path(r['member']).name} ({r['model']}) | {r['kind']} | {r[f'{split}_acc'] * 100:.2f} % |")
        for vote in ("soft_vote", "val_weighted_vote"):
            lines.append(f"| **{vote.replace('_', ' ')}** | ensemble | **{results[vote]['accuracy'] * 100:.2f} %** |")
        table = "\n".join(lines) + f"\n\nval-weighted vote: weights fitted on {results['weights_fitted_on']}.\n"
        outp.mkdir(parents=True, exist_ok=True)
        write_json(outp / f"ensemble_{split}.json", results)
        atomic_write_text(outp / f"ensemble_{split}.md", table)
        click.echo(table)
        click.echo(f"  {outp / f'ensemble_{split}.json'}\n  {outp / f'ensemble_{split}.md'}")
