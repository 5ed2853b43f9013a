"""`fermetric export`: a run or zoo model as a folder another runtime can predict with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fermetric.api.common import PathLike, claim_output, open_for_command
from fermetric.errors import ConfigError

FORMATS = ("onnx",)


def export_model(run: PathLike, format: str = "onnx", out: Optional[PathLike] = None,
                 data: Optional[PathLike] = None) -> list[Path]:
    """`fermetric export RUN --format onnx`: OUT/model.onnx, OUT/card.json (and OUT/gallery.npz for an
    embedding model); see fermetric.inference.onnx_export. OUT (default `<run name>-onnx`) must be
    new or empty; nothing is left there when the export fails.

    Returns:
        The paths written.
    """
    from fermetric.inference.onnx_export import export_onnx
    from fermetric.models.onnx import require_onnxruntime
    from fermetric.utils.outputs import final_path, output_dir, staged_outputs

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    require_onnxruntime()  # the export is checked by running it
    out = Path(out) if out is not None else Path(f"{Path(str(run)).name}-onnx")
    claim_output(out, "export", "model.onnx")
    r = open_for_command(run, "cpu", "fp32", data)
    with staged_outputs(out) as tmp:
        paths = [final_path(p, tmp, out) for p in export_onnx(r, tmp, str(run))]
    output_dir(out, "export", legacy=("model.onnx",))  # marks the folder as ours
    return paths
