"""Saving figures: one dpi for every PNG fermetric writes, written atomically (a reader never sees
half a PNG, an interrupted run leaves the previous figure in place), and the figure always closed
so that long studies do not accumulate open figures."""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from fermetric.utils.io import atomic_write_bytes
from fermetric.utils.outputs import PNG_SOFTWARE

FIGURE_DPI = 120


def figure_png(fig: Figure, dpi: int = FIGURE_DPI) -> bytes:
    """The figure as PNG bytes (for the HTML report); closes the figure."""
    buf = io.BytesIO()
    try:
        # the Software text chunk marks it as ours: a later --out may replace it (utils.outputs)
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": PNG_SOFTWARE})
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = FIGURE_DPI) -> Path:
    """Write the figure to `path` as PNG atomically (parents created) and close it; returns the path."""
    return atomic_write_bytes(path, figure_png(fig, dpi))
