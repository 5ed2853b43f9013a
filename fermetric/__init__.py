"""fermetric: facial expression recognition with classifiers and metric-learning models,
explained by one toolkit.

Images everywhere are 48x48 grayscale; in memory they are uint8 tensors of shape (N, 1, 48, 48),
and models take float tensors in [0, 1] of the same shape (normalisation lives inside the model).
"""
from fermetric.version import __version__

# Every command's work as one call (fermetric.api), imported on first use so that `import
# fermetric` stays light (no torch until a function is called)
_API = ("train", "export_model", "similarity", "calibrate", "evaluate_run", "ensemble", "build_index", "knn_eval", "embed_plot", "explain_run", "filters_run",
        "explain_eval", "data_info", "predict", "write_report", "demo_pretrained")


def __getattr__(name: str):
    if name in _API:
        from fermetric import api

        return getattr(api, name)
    if name == "load_run":  # a run directory or a zoo name: the one way to open what a user names
        from fermetric.zoo.load import open_run

        return open_run
    if name == "Run":
        from fermetric.runs import Run

        return Run
    raise AttributeError(f"module 'fermetric' has no attribute {name!r}")


__all__ = ["__version__", "load_run", "Run", *_API]
