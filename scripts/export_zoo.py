"""Write a finished run into the model zoo (fermetric/zoo/models/NAME): fp16 weights, config,
model card with the numbers measured on the stored weights, SHA-256.

    python scripts/export_zoo.py RUN NAME --recipe configs/zoo/NAME.yaml \
        --description "..." --retrain "bash scripts/train_zoo.sh fer2013.csv" [--machine "..."]
"""
from __future__ import annotations

import argparse
import sys

from fermetric.errors import FermetricError
from fermetric.zoo import export_run, get_entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--recipe", required=True, help="the config file the run was trained with")
    ap.add_argument("--description", required=True)
    ap.add_argument("--retrain", required=True, help="the one command that retrains it from fer2013.csv")
    ap.add_argument("--machine", default=None, help="where it was trained (default: the run's host names)")
    ap.add_argument("--note", action="append", default=[], help="a line for the card (repeatable)")
    ap.add_argument("--split", default="val", help="split the card reports (val = FER2013 PublicTest)")
    ap.add_argument("--root", default=None, help="zoo folder (default: the package's)")
    a = ap.parse_args()
    try:
        path = export_run(a.run, a.name, description=a.description, retrain=a.retrain, recipe=a.recipe,
                          split=a.split, machine=a.machine, notes=a.note, root=a.root)
    except FermetricError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((path / "card.md").read_text())
    print(f"wrote {path} ({get_entry(a.name, a.root).card['size_bytes'] / 1e6:.1f} MB weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
