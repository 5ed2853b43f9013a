"""Opening a zoo entry as a Run, and `open_run`: the one way every command and the Python API
open what the user names, a run directory or a pretrained model's name
(`fermetric.load_run("fer2013-baseline")`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fermetric.config import load_run_config
from fermetric.runs.checkpoint import load_checkpoint
from fermetric.runs.ensemble import EnsembleRun, Member
from fermetric.runs.reader import Run, load_run, make_run
from fermetric.utils import runtime
from fermetric.utils.io import cache_dir
from fermetric.utils.device import resolve_device
from fermetric.errors import FermetricError
from fermetric.zoo.registry import ZooEntry, ZooError, check_card, get_entry, is_pretrained_name


def zoo_run_dir(name: str) -> Path:
    """The folder that stands for a pretrained model's run directory (caches, default outputs)."""
    return cache_dir() / "zoo" / name


def read_gallery(entry: ZooEntry) -> tuple[np.ndarray, np.ndarray]:
    """The entry's training embeddings (float32, unit length) and labels."""
    try:
        with np.load(entry.gallery, allow_pickle=False) as z:
            emb, labels = z["embeddings"].astype(np.float32), z["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise ZooError(f"pretrained model {entry.name!r}: cannot read {entry.gallery} ({e})") from e
    if emb.ndim != 2 or labels.shape != (len(emb),):
        raise ZooError(f"pretrained model {entry.name!r}: {entry.gallery} holds embeddings {emb.shape} "
                       f"and labels {labels.shape}; expected (N, D) and (N,)")
    return emb, labels


def load_pretrained(name: str, device: str | None = "auto", precision: str = "auto", root=None,
                    opened: dict[str, Run] | None = None):
    """The zoo entry `name` as a Run (fermetric.runs.Run; an ensemble entry as a
    fermetric.runs.ensemble.EnsembleRun of its members), its weights checked against the card.

    `opened`: entries the caller has open already (name -> Run, same device and precision): an
    ensemble's member found there is that very Run, so predictions it has cached (a study's TTA
    pass over PublicTest) are not computed again for the vote.

    The Run's folder (for caches and default outputs) is cache_dir()/zoo/<name>; its data is the
    data set named in the card, which commands that need data take with --data.

    Raises:
        ZooError: unknown name, missing file, or weights that do not match the card's SHA-256.
    """
    entry = get_entry(name, root)
    check_card(entry)
    if entry.kind == "ensemble":
        return load_ensemble(entry, device=device, precision=precision, root=root, opened=opened)
    sha = entry.verify()
    cfg = load_run_config(entry.config)
    dev = resolve_device(device)
    runtime.resolve_precision(precision, dev)  # a bad value or one this device cannot run fails here
    ckpt = load_checkpoint(entry.weights, map_location=dev)
    kind = ckpt.get("kind", "")
    if kind != entry.kind:
        raise ZooError(f"pretrained model {name!r}: {entry.weights} holds a {kind} model but card.json says {entry.kind}")
    # the shipped gallery stands in for the train split: kNN and prototypes need no data
    gallery = read_gallery(entry) if entry.gallery is not None else None
    return make_run(zoo_run_dir(entry.name), cfg, ckpt, entry.weights, sha, device=dev, precision=precision,
                    pretrained=entry.name, gallery=gallery)


def load_ensemble(entry: ZooEntry, device: str | None = "auto", precision: str = "auto", root=None,
                  opened: dict[str, Run] | None = None):
    """An ensemble entry as an EnsembleRun: each member opened (and checked) as its own entry, or
    taken from `opened` (see load_pretrained), voting with the scorer, TTA and weight the card gives it."""
    members = []
    for spec in entry.members:
        run = (opened or {}).get(str(spec["name"])) or load_pretrained(str(spec["name"]), device=device,
                                                                      precision=precision, root=root)
        entry.check_member(spec, getattr(run, "checkpoint_sha256", ""))  # the weights it was measured with
        members.append(Member(run=run, scorer=str(spec.get("scorer", "classifier")), tta=spec.get("tta") or None,
                              weight=float(spec.get("weight", 1.0)), label=str(spec["name"])))
    return EnsembleRun(path=zoo_run_dir(entry.name), members=members, pretrained=entry.name, precision=precision,
                       card=entry.card)


def open_run(path: str | Path, device: str | None = "auto", checkpoint: str = "best",
             precision: str = "auto") -> Run | EnsembleRun:
    """A run directory (fermetric.runs.load_run), or, where no directory of that name exists, the
    zoo entry of that name (`load_pretrained`): a directory always comes first.

    Raises:
        FermetricError / CheckpointError / ZooError naming what is missing or wrong.
    """
    p = Path(path)
    if not p.is_dir():
        if checkpoint == "best" and is_pretrained_name(str(path)):
            return load_pretrained(str(path), device=device, precision=precision)
        raise FermetricError(f"run directory {p} does not exist (nor is {str(path)!r} a pretrained model: "
                             "fermetric models --pretrained lists them)")
    return load_run(p, device=device, checkpoint=checkpoint, precision=precision)
