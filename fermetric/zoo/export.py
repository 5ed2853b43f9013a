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

from fermetric import __version__
from fermetric.config import config_to_dict, save_config
from fermetric.evaluation.metrics import classification_metrics
from fermetric.runs import load_run
from fermetric.runs.checkpoint import save_checkpoint
from fermetric.utils.io import atomic_write_text, sha256_file, write_json
from fermetric.zoo.registry import ZooError, card_markdown, zoo_root


def _fp16(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in state_dict.items()}


def _train_minutes_and_machine(m: dict[str, Any]) -> tuple[float, str, int]:
    """Training minutes, host names and epochs from a run's metrics.json (Run.metrics)."""
    sittings = m.get("sittings") or []
    hosts = sorted({str(s.get("host", "")) for s in sittings if s.get("host")})
    return float(m.get("train_seconds", 0.0)) / 60.0, ", ".join(hosts), int(m.get("epochs_run", 0))


def export_run(run_dir: str | os.PathLike, name: str, *, description: str, retrain: str, recipe: str,
               split: str = "val", split_name: str = "FER2013 PublicTest", data_name: str = "FER2013 Training",
               machine: Optional[str] = None, notes: Sequence[str] = (), root: str | os.PathLike | None = None,
               device: str = "cpu") -> Path:
    """Write the zoo entry `name` from the finished run `run_dir` and return its folder.

    The card's numbers are measured here on the stored fp16 weights (evaluated on `split` of the
    run's own data), so what the card says is what a user gets. An existing entry is replaced
    only once the new one is complete.
    """
    from fermetric.zoo.load import load_pretrained

    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ZooError(f"zoo entry name {name!r} must be a plain name such as fer2013-baseline")
    src = load_run(run_dir, device=device, precision="fp32")
    base = zoo_root(root)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
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
            emb, labels = src.embeddings("train")
            np.savez_compressed(tmp / "gallery.npz", embeddings=emb.astype(np.float16), labels=labels.astype(np.int16))
        minutes, hosts, epochs = _train_minutes_and_machine(src.metrics)
        card: dict[str, Any] = {
            "name": name, "kind": src.kind, "model": cfg.model.name, "description": description,
            "parameters": sum(p.numel() for p in src.model.parameters()), "data": data_name, "split": split_name,
            "class_names": list(src.class_names), "recipe": recipe, "seed": cfg.seed, "epochs": epochs,
            "train_minutes": round(minutes, 1), "machine": machine or hosts or platform.node(),
            "retrain": retrain, "fermetric_version": __version__, "notes": list(notes),
            "sha256": sha256_file(tmp / "weights.pt"), "size_bytes": (tmp / "weights.pt").stat().st_size,
        }
        write_json(tmp / "card.json", card)
        # measure the stored weights, not the run's fp32 ones
        entry_run = load_pretrained(tmp.name, device=device, precision="fp32", root=base)
        y = entry_run.use_data(data)[split].labels.numpy()
        pred = entry_run.predict(split)
        m = classification_metrics(y, pred, list(src.class_names))
        test: dict[str, Any] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}}
        if src.kind == "classifier":
            test["accuracy_tta"] = float((entry_run.predict(split, tta=True) == y).mean())
        else:
            test["knn_accuracy"] = m["accuracy"]
        card["test"] = test
        write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "card.md", card_markdown(card))
        final = base / name
        old = None
        if final.exists():
            old = base / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep other users of a shared install out
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
