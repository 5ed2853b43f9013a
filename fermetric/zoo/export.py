"""Turning a finished run into a zoo entry: compact weights, the config, the model card with the
numbers measured on the stored (fp16) weights themselves, and the SHA-256 that guards them."""
from __future__ import annotations

import copy
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fermetric.version import __version__
from fermetric.config import config_to_dict, save_config
from fermetric.evaluation.metrics import classification_metrics
from fermetric.runs import load_run
from fermetric.runs.checkpoint import save_checkpoint
from fermetric.utils.checks import check_path_name
from fermetric.utils.io import atomic_write_text, replace_folder, sha256_file, write_json
from fermetric.zoo.registry import ZooError, card_markdown, write_manifest, zoo_root
from fermetric.retrieval.embeddings import split_embeddings
from fermetric.scoring.run import run_scorer, split_predictions, split_proba
import fermetric.run_layout as layout


def _fp16(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in state_dict.items()}


def _train_minutes_and_machine(m: dict[str, Any], threads: int = 0) -> tuple[float, str, int]:
    """Training minutes, the machine (this CPU, the run's threads and precision, its host names)
    and epochs from a run's metrics.json (Run.metrics); export runs where the training ran."""
    sittings = m.get("sittings") or []
    hosts = sorted({str(s.get("host", "")) for s in sittings if s.get("host")})
    precision = (m.get("runtime") or {}).get("precision")
    # the CPU each sitting recorded (a run resumed on another machine names both); a sitting of a
    # version that did not record it is named as such, not as this machine
    cpus = [s.get("cpu") for s in sittings]
    if not sittings:
        where = cpu_name(threads)
    elif all(c == cpus[0] for c in cpus) and cpus[0]:
        where = cpu_name(threads, cpus[0])
    else:
        where = cpu_name(threads, "; ".join(
            f"epochs {s.get('epoch_from', 0) + 1}-{s.get('epoch_to', 0)} on {s.get('cpu') or 'an unrecorded CPU'}"
            for s in sittings if s.get("epoch_to", 0) > s.get("epoch_from", 0)))
    machine = f"{where}{f', {precision}' if precision else ''}; host {', '.join(hosts) or platform.node()}"
    return float(m.get("train_seconds", 0.0)) / 60.0, machine, int(m.get("epochs_run", 0))


def _stage_records(earlier: str) -> list[dict[str, Any]]:
    """The stage(s) of training a run was warm-started from: one record from a run directory
    (its metrics.json); from a zoo entry (an earlier stage shipped before this one; found where
    `--init-from NAME` finds it, the installed zoo or $FERMETRIC_ZOO), its card's own `stages`
    where it was itself trained in stages, else the entry as one stage."""
    path = Path(earlier).expanduser()
    if path.is_dir():
        run = load_run(path, device="cpu", precision="fp32")
        minutes, machine, epochs = _train_minutes_and_machine(run.metrics, run.cfg.train.threads)
        return [{"run": path.name, "epochs": epochs, "train_minutes": round(minutes, 1), "machine": machine}]
    from fermetric.zoo.registry import get_entry

    card = get_entry(earlier).card
    shipped = {"entry": earlier, "sha256": card.get("sha256")}
    if card.get("stages"):  # the entry's last stage is the weights this run started from
        return [*card["stages"][:-1], {**card["stages"][-1], **shipped}]
    return [{**shipped, **{key: card[key] for key in ("epochs", "train_minutes", "machine")}}]


def _card_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The numbers a card keeps of classification_metrics output."""
    return {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}}


def _card_calibration(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ECE (15 equal-width bins), NLL and Brier score of the probabilities the card's accuracy
    comes from."""
    from fermetric.evaluation.calibration import calibration_metrics

    c = calibration_metrics(probs, y)
    return {"ece": c["ece"], "nll": c["nll"], "brier": c["brier"], "binning": c["binning"]}


def _other_layer_accuracy(src, split: str) -> dict[str, float]:
    """{layer: kNN accuracy} of an embedding run embedding with the layer it does not ship
    (backbone vs projection), so the card reports both; measured on the run's own weights."""
    shipped = src.embedding_layer
    other = "projection" if shipped == "backbone" else "backbone"
    src.cfg.metric.embedding_layer = src.model.embedding_layer = other
    src.derived.clear()
    try:
        acc = float((split_predictions(src, split) == src.load_data()[split].labels.numpy()).mean())
    finally:
        src.cfg.metric.embedding_layer = src.model.embedding_layer = shipped
        src.derived.clear()
    return {other: acc}


def export_run(run_dir: str | os.PathLike, name: str, *, description: str, retrain: str, recipe: str,
               split: str = "val", split_name: str = "FER2013 PublicTest", data_name: str = "FER2013 Training",
               machine: Optional[str] = None, notes: Sequence[str] = (), root: str | os.PathLike | None = None,
               device: str = "cpu", earlier: Sequence[str] = ()) -> Path:
    """Write the zoo entry `name` from the finished run `run_dir` and return its folder.

    The card's numbers are measured here on the stored fp16 weights (evaluated on `split` of the
    run's own data), so what the card says is what a user gets. An existing entry is replaced
    only once the new one is complete. `earlier`: the run directories or zoo entries of the earlier
    stages of training, in order (the run was warm-started from the last; `recipe` then names every
    stage's config): the card's minutes and epochs are the sum of all stages, and its `stages` list
    says where each one ran.
    """
    from fermetric.zoo.load import load_pretrained

    stages = [record for stage in earlier for record in _stage_records(stage)]
    src = load_run(run_dir, device=device, precision="fp32")
    base, tmp = _new_entry_dir(name, root)
    try:
        data = src.load_data()  # before the stored config drops this machine's path to the data
        cfg = copy.deepcopy(src.cfg)
        source = Path(str(cfg.data.source)).name if cfg.data.source else None
        cfg.data.source = source  # the file name the model was trained on, not this machine's path
        cfg.train.threads = 0
        ckpt = {"kind": src.kind, "model": src.checkpoint.get("model", {}), "class_names": list(src.class_names),
                "state_dict": _fp16(src.model.state_dict()), "config": config_to_dict(cfg),
                "epoch": src.checkpoint.get("epoch"), "best": src.checkpoint.get("best")}
        save_checkpoint(ckpt, tmp / "weights.pt")
        save_config(cfg, tmp / "config.yaml")
        if src.kind == "embedding":
            emb, labels = split_embeddings(src, "train")
            np.savez_compressed(tmp / "gallery.npz", embeddings=emb.astype(np.float16), labels=labels.astype(np.int16))
        minutes, trained_on, epochs = _train_minutes_and_machine(src.metrics, src.cfg.train.threads)
        card: dict[str, Any] = {
            "name": name, "kind": src.kind, "model": cfg.model.name, "description": description,
            "parameters": sum(p.numel() for p in src.model.parameters()), "data": data_name, "split": split_name,
            "class_names": list(src.class_names), "recipe": recipe, "seed": cfg.seed, "epochs": epochs,
            "train_minutes": round(minutes, 1), "machine": machine or trained_on,
            "retrain": retrain, "fermetric_version": __version__, "notes": list(notes),
            "sha256": sha256_file(tmp / "weights.pt"), "size_bytes": (tmp / "weights.pt").stat().st_size,
        }
        write_json(tmp / "card.json", card)
        write_manifest(tmp)  # provisional (the card changes below), so that the entry loads to be measured
        # measure the stored weights, not the run's fp32 ones
        entry_run = load_pretrained(tmp.name, device=device, precision="fp32", root=base)
        y = entry_run.use_data(data)[split].labels.numpy()
        pred = split_predictions(entry_run, split)
        m = classification_metrics(y, pred, list(src.class_names))
        test = {**_card_metrics(m), "calibration": _card_calibration(split_proba(entry_run, split), y)}
        if src.kind == "classifier":
            probs_tta = split_proba(entry_run, split, tta=True)
            test["accuracy_tta"] = float((probs_tta.argmax(1) == y).mean())
            test["calibration_tta"] = _card_calibration(probs_tta, y)
        else:
            test["knn_accuracy"] = m["accuracy"]
            test["embedding_layer"] = src.embedding_layer
            test["accuracy_other_layer"] = _other_layer_accuracy(src, split)
        card["test"] = test
        if stages:
            stages.append({"run": Path(run_dir).name, "epochs": epochs, "train_minutes": card["train_minutes"],
                           "machine": card["machine"]})
            card["epochs"] = sum(s["epochs"] for s in stages)
            card["train_minutes"] = round(sum(s["train_minutes"] for s in stages), 1)
            card["machine"] = "; ".join(f"stage {i}: {s['machine']}" for i, s in enumerate(stages, 1))
            card["stages"] = stages
        return _install(tmp, base, name, card)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, base: Path, name: str, card: dict[str, Any]) -> Path:
    """Write the card (card.json, card.md) into the entry `tmp` and put it in place as base/name
    (an existing entry is replaced only now, when the new one is complete)."""
    write_json(tmp / "card.json", card)
    atomic_write_text(tmp / "card.md", card_markdown(card))
    write_manifest(tmp)
    return replace_folder(tmp, base / name)


def _new_entry_dir(name: str, root) -> tuple[Path, Path]:
    """(zoo folder, a fresh hidden folder in it to build the entry `name` in)."""
    check_path_name("zoo entry name", name, error=ZooError, example="fer2013-baseline")
    base = zoo_root(root)
    base.mkdir(parents=True, exist_ok=True)
    return base, Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))


def cpu_name(threads: int = 0, cpu: str = "") -> str:
    """A CPU (default: this machine's model) and the threads used (default: torch's), for the
    cards' timings."""
    from fermetric.utils.runtime import cpu_model

    return f"{cpu or cpu_model()}, {threads or torch.get_num_threads()} threads"


def seconds_per_face(scorer, images: torch.Tensor, repeats: int = 2) -> float:
    """Wall seconds per face of `scorer.scores` over `images` in one batch (best of `repeats`,
    after a warm-up pass)."""
    import time

    scorer.scores(images[:8])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.scores(images)
        best = min(best, time.perf_counter() - t0)
    return best / len(images)


ENSEMBLE_SPEC_KEYS = ("description", "weights_rule", "members")
MEMBER_KEYS = ("name", "scorer", "tta", "weight")


def read_ensemble_spec(path: str | os.PathLike) -> dict[str, Any]:
    """An ensemble spec (configs/zoo/*-ensemble.yaml), checked: description, weights_rule and
    members, a list of {name, scorer: classifier|knn, tta: shift|tencrop (classifiers), weight >= 0}.

    Raises:
        ZooError naming the file, the member and the key that is wrong.
    """
    from fermetric.config import read_yaml
    from fermetric.scoring.tta import TTA_MODES
    from fermetric.runs.ensemble import MEMBER_SCORERS

    spec = read_yaml(path)
    if not isinstance(spec, dict) or set(spec) - set(ENSEMBLE_SPEC_KEYS):
        raise ZooError(f"{path}: an ensemble spec has the keys {', '.join(ENSEMBLE_SPEC_KEYS)}; got "
                       f"{sorted(spec) if isinstance(spec, dict) else type(spec).__name__}")
    members = spec.get("members")
    if not isinstance(members, list) or not members:
        raise ZooError(f"{path}: expected 'members:' a list of {{{', '.join(MEMBER_KEYS)}}}")
    for i, m in enumerate(members):
        where = f"{path}: members[{i}]"
        if not isinstance(m, dict) or not m.get("name") or set(m) - set(MEMBER_KEYS):
            raise ZooError(f"{where}: expected a mapping with a name and only {', '.join(MEMBER_KEYS)}; got {m!r}")
        if m.get("scorer", "classifier") not in MEMBER_SCORERS:
            raise ZooError(f"{where}: scorer {m.get('scorer')!r}; expected one of {', '.join(MEMBER_SCORERS)}")
        if m.get("tta") not in (None, *TTA_MODES):
            raise ZooError(f"{where}: tta {m.get('tta')!r}; expected one of {', '.join(TTA_MODES)} or none")
        w = m.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ZooError(f"{where}: weight {w!r}; expected a number >= 0")
    return spec


def export_ensemble(spec_path: str | os.PathLike, name: str, *, data: str, retrain: str,
                    root: str | os.PathLike | None = None, device: str = "cpu", notes: Sequence[str] = ()) -> Path:
    """Write the ensemble entry `name` from the spec file `spec_path` (YAML: description, members
    [{name, scorer: classifier|knn, tta: shift|none, weight}]) over entries already in the zoo.

    The weights are the spec's (default equal): nothing is fitted here, so the accuracy the card
    reports on `data`'s val split (FER2013 PublicTest) comes from weights no PublicTest label
    chose. For comparison the card notes what a vote with weights searched on the simplex reaches
    when cross-fitted on halves of PublicTest (each half voted with weights fitted on the other).
    """
    from fermetric.evaluation.ensemble import cross_fitted_vote
    from fermetric.runs.ensemble import EnsembleRun, Member
    from fermetric.zoo.load import load_pretrained, zoo_run_dir

    spec = read_ensemble_spec(spec_path)
    specs = spec["members"]
    base, tmp = _new_entry_dir(name, root)
    try:
        members = [Member(run=load_pretrained(str(m["name"]), device=device, precision="fp32", root=base),
                          scorer=str(m.get("scorer", "classifier")), tta=(m.get("tta") or None),
                          weight=float(m.get("weight", 1.0)), label=str(m["name"])) for m in specs]
        ens = EnsembleRun(path=zoo_run_dir(name), members=members, pretrained=name, precision="fp32")
        ds = ens.use_data(data)["val"]
        y = ds.labels.numpy()
        probs = split_proba(ens, "val")
        m = classification_metrics(y, probs.argmax(1), list(ens.class_names))
        member_probs = [split_proba(mb.run, "val", tta=mb.tta or False) for mb in members]
        searched, _ = cross_fitted_vote(member_probs, y, fit="search")
        idx = torch.arange(min(256, len(ds)))
        cost = seconds_per_face(run_scorer(ens, compile=False), ds.float_images(idx))
        card: dict[str, Any] = {
            "name": name, "kind": "ensemble", "model": "ensemble", "description": str(spec.get("description", "")),
            "parameters": sum(p.numel() for p in ens.model.parameters()), "data": "FER2013 Training (its members')",
            "split": "FER2013 PublicTest", "class_names": list(ens.class_names), "recipe": str(spec_path),
            "weights_rule": str(spec.get("weights_rule", "the spec's weights, fitted on no image")),
            "members": [{"name": mb.label, "scorer": mb.scorer, "tta": mb.tta, "weight": w,
                         "sha256": mb.run.checkpoint_sha256, "accuracy": float((p.argmax(1) == y).mean())}
                        for mb, w, p in zip(members, ens.weights, member_probs)],
            "retrain": retrain, "fermetric_version": __version__, "cost_machine": cpu_name(),
            "notes": [*notes, f"For comparison (not shipped): weights searched on the simplex, cross-fitted on halves of "
                              f"PublicTest, reach {float((searched.argmax(1) == y).mean()) * 100:.2f} %."],
            "test": {**_card_metrics(m), "calibration": _card_calibration(probs, y), "seconds_per_face": cost},
        }
        return _install(tmp, base, name, card)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_entry(name: str, *, data: str, overrides: Sequence[str], retrain: str, recipe: str,
                 notes: Sequence[str] = (), root: str | os.PathLike | None = None, device: str = "cpu") -> Path:
    """Re-export the shipped entry `name` with config `overrides` (e.g. metric.embedding_layer=backbone):
    its stored weights become a run again (in a temporary folder, with the card's training time and
    machine) and `export_run` writes the entry anew, measured on `data` (the gallery of an
    embedding model is embedded again)."""
    from fermetric.config import apply_overrides, config_from_dict, load_run_config
    from fermetric.runs.checkpoint import as_fp32, load_checkpoint
    from fermetric.zoo.registry import get_entry

    entry = get_entry(name, root)
    entry.verify()
    with tempfile.TemporaryDirectory(prefix=f"fermetric-reexport-{name}-") as d:
        run = Path(d) / name
        layout.checkpoints_dir(run).mkdir(parents=True)
        cfg = config_from_dict(apply_overrides(config_to_dict(load_run_config(entry.config)), list(overrides)))
        cfg.data.source = str(data)
        ckpt = load_checkpoint(entry.weights, map_location="cpu")
        ckpt["state_dict"] = as_fp32(ckpt["state_dict"])
        ckpt["config"] = config_to_dict(cfg)
        save_checkpoint(ckpt, layout.checkpoint_path(run, layout.BEST))
        save_config(cfg, layout.config_path(run))
        card = entry.card
        write_json(layout.path_of(run, layout.METRICS), {
            "kind": entry.kind, "epochs_run": card.get("epochs", 0), "train_seconds": 60.0 * float(card.get("train_minutes", 0)),
            "sittings": []})
        return export_run(run, name, description=str(card.get("description", "")), retrain=retrain, recipe=recipe,
                          machine=str(card.get("machine", "")), notes=[*card.get("notes", []), *notes], root=root,
                          device=device)
