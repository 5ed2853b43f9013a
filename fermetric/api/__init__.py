"""Every command's work as one Python call. The CLI (fermetric.cli) parses options, calls one of
these and prints what it returns; Python users call the same functions:

    import fermetric
    metrics, paths = fermetric.evaluate_run("runs/clf", split="test", tta=True)
    rep, paths = fermetric.knn_eval("runs/tri", split="val")

Each function opens the run(s) (fermetric.zoo.open_run: a directory or a zoo name), calls the library
(evaluation, retrieval, analysis, plotting) and writes its files. A function that writes into a
run directory holds that run's lock (fermetric.utils.runlock) while it works, so it is refused,
not interleaved, while a training or another command writes the same run. Training is `train`
(fermetric.training.launch: the train-* commands), a study `run_study` (fermetric.study).
"""
from fermetric.api.data import data_audit, data_info
from fermetric.api.evaluate import calibrate, ensemble, evaluate_run
from fermetric.api.explain import explain_eval, explain_run, filters_run
from fermetric.api.export import export_model
from fermetric.api.predict import DEMO_METHODS, demo_pretrained, predict
from fermetric.api.retrieval import build_index, embed_plot, knn_eval, similarity
from fermetric.api.train import train, write_report

__all__ = ["train", "export_model", "similarity", "calibrate", "evaluate_run", "demo_pretrained", "ensemble", "build_index", "knn_eval",
           "embed_plot", "explain_run", "filters_run", "explain_eval", "data_info", "data_audit", "predict",
           "write_report", "DEMO_METHODS"]
