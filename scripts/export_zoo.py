"""Write a zoo entry (fermetric/zoo/models/NAME): fp16 weights, config, model card with the
numbers measured on the stored weights, SHA-256.

    # a finished run
    python scripts/export_zoo.py RUN NAME --recipe configs/zoo/NAME.yaml \
        --description "..." --retrain "bash scripts/train_zoo.sh fer2013.csv" [--machine "..."]
    # an ensemble of entries already in the zoo (the spec names members, scorers, TTA, weights)
    python scripts/export_zoo.py --ensemble configs/zoo/fer2013-ensemble.yaml fer2013-ensemble \
        --data fer2013.csv --retrain "..."
    # a shipped entry again, with config changes (e.g. the embedding layer its gallery is made with)
    python scripts/export_zoo.py --reexport fer2013-triplet fer2013-triplet --data fer2013.csv \
        --set metric.embedding_layer=backbone --recipe configs/zoo/fer2013-triplet.yaml --retrain "..."
"""
from __future__ import annotations

import argparse
import os
import sys

# A card's numbers are PyTorch fp32's, which tests/test_zoo_shipped.py reproduces to the face; the
# scorers' ONNX Runtime backend (auto picks it in fp32) agrees only to ~1e-6, enough to move a face
# that sits on a tie.
os.environ["FERMETRIC_BACKEND"] = "torch"

from fermetric.errors import FermetricError
from fermetric.utils.heap import retain_freed_memory
from fermetric.zoo import get_entry
from fermetric.zoo.export import export_ensemble, export_entry, export_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="RUN (default), the ensemble spec (--ensemble) or the entry (--reexport)")
    ap.add_argument("name")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--ensemble", action="store_true", help="SOURCE is an ensemble spec over zoo entries")
    mode.add_argument("--reexport", action="store_true", help="SOURCE is a zoo entry, exported again with --set")
    ap.add_argument("--recipe", help="the config file the run was trained with")
    ap.add_argument("--description", help="what the model is (default for --reexport: the entry's)")
    ap.add_argument("--retrain", required=True, help="the one command that retrains it from fer2013.csv")
    ap.add_argument("--data", help="--ensemble / --reexport: the fer2013.csv the card's numbers are measured on")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="--reexport: a config change")
    ap.add_argument("--machine", default=None, help="where it was trained (default: the run's host names)")
    ap.add_argument("--note", action="append", default=[], help="a line for the card (repeatable)")
    ap.add_argument("--stage", "--stage1", dest="earlier", action="append", default=[],
                    help="an earlier stage of a staged recipe, its run directory or zoo entry (repeatable, in "
                    "order; RUN was warm-started from the last): the card adds their minutes and epochs")
    ap.add_argument("--split", default="val", help="split the card reports (val = FER2013 PublicTest)")
    ap.add_argument("--root", default=None, help="zoo folder (default: the package's)")
    a = ap.parse_args()
    if (a.ensemble or a.reexport) and not a.data:
        ap.error("--ensemble and --reexport measure the entry on --data PATH (fer2013.csv)")
    if not a.ensemble and not a.recipe:
        ap.error("--recipe is required (the config file the model was trained with)")
    if not (a.ensemble or a.reexport) and not a.description:
        ap.error("--description is required")
    retain_freed_memory()  # as the CLI does: the card's TTA passes reuse freed heap memory (utils.heap)
    try:
        if a.ensemble:
            path = export_ensemble(a.source, a.name, data=a.data, retrain=a.retrain, root=a.root, notes=a.note)
        elif a.reexport:
            if a.source != a.name:
                ap.error("--reexport writes the entry under its own name: give SOURCE and NAME the same")
            path = export_entry(a.source, data=a.data, overrides=a.overrides, retrain=a.retrain, recipe=a.recipe,
                                notes=a.note, root=a.root)
        else:
            path = export_run(a.source, a.name, description=a.description, retrain=a.retrain, recipe=a.recipe,
                              split=a.split, machine=a.machine, notes=a.note, root=a.root, earlier=a.earlier)
    except FermetricError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((path / "card.md").read_text())
    print(f"wrote {path} ({get_entry(a.name, a.root).card.get('size_bytes', 0) / 1e6:.1f} MB weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
