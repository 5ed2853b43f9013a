"""Plotting: arrays in, matplotlib Figure out; nothing is recomputed here and nothing calls plt.show().

One module per kind of figure (samples, confusion, curves, knn, embeddings, explanations, filters).
"""
import matplotlib

matplotlib.use("Agg")

from fermetric.plotting.save import FIGURE_DPI, figure_png, save_figure  # noqa: E402  (after the backend)

__all__ = ["FIGURE_DPI", "figure_png", "save_figure"]
