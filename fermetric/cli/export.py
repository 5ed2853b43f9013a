"""`fermetric export RUN --format onnx`."""
from __future__ import annotations

from typing import Optional

import click

from fermetric.cli.options import OutPath, RUN, run_data_option


def register(main: click.Group) -> None:
    @main.command("export")
    @click.argument("run", type=RUN)
    @click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
                  help="onnx: a graph ONNX Runtime runs alone (pip install 'fermetric[fast]' to export).")
    @click.option("--out", type=OutPath(file_okay=False), default=None,
                  help="A new or empty folder. Default: <RUN name>-onnx.")
    @run_data_option
    def export(run: str, fmt: str, out: Optional[str], data: Optional[str]) -> None:
        """Export a classifier or embedding model (a run or a zoo name) for deployment: OUT/model.onnx
        gives the probabilities `fermetric predict` gives (a classifier: its TTA and calibration inside
        the graph) or the embedding its kNN votes with (OUT/gallery.npz beside it), OUT/card.json says
        the input, the output, the vote and where the model came from. The graph is checked against
        PyTorch before it is written."""
        from fermetric.api.export import export_model

        paths = export_model(run, fmt, out, data=data)
        card = next(p for p in paths if p.name == "card.json")
        import json

        checked = json.loads(card.read_text())["checked"]
        click.echo(f"exported {run} as ONNX (largest difference from PyTorch {checked['max_abs_diff']:.1e} on "
                   f"{checked['faces']} faces)")
        for p in paths:
            click.echo(f"  {p}")
