"""The entries of the model zoo: pretrained runs stored inside the package.

An entry is a folder fermetric/zoo/models/<name>/ holding

    weights.pt   a fermetric checkpoint without optimizer state (read with weights_only=True);
                 floating tensors stored as fp16 to keep the wheel small, loaded back as fp32
    config.yaml  the run's config (data.source reduced to the file name it was trained on)
    card.json    the model card: data, recipe, seed, PublicTest numbers, training time and
                 machine, the retrain command, and the SHA-256 of weights.pt
    card.md      the same card for people (rendered from card.json at export)
    gallery.npz  (embedding models) the training embeddings (fp16) and labels: the kNN gallery and
                 the class prototypes, so an embedding entry classifies without the training data

An ensemble entry (kind "ensemble") holds only card.json and card.md: its members are other
entries, named in the card with how each votes (scorer, TTA), its weight and the SHA-256 its
weights had when the ensemble was measured; a member retrained since is refused.

The SHA-256 in the card is checked every time an entry is opened, so a truncated download or an
edited file is refused with the entry's name instead of giving silently wrong predictions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fermetric.errors import FermetricError
from fermetric.utils.checks import is_path_name
from fermetric.utils.io import read_json, sha256_file, write_json

ZOO_ROOT = Path(__file__).resolve().parent / "models"
# what `fermetric predict IMAGE...` uses when no RUN or --model is given
DEFAULT_CLASSIFIER = "fer2013-baseline"
CARD_FILES = ("weights.pt", "config.yaml", "card.json")
KINDS = ("classifier", "embedding", "ensemble")


class ZooError(FermetricError):
    """A pretrained model that is unknown, missing or damaged."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    path: Path
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.card.get("kind", ""))

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def gallery(self) -> Optional[Path]:
        p = self.path / "gallery.npz"
        return p if p.is_file() else None

    @property
    def members(self) -> list[dict[str, Any]]:
        """An ensemble's members as the card lists them ({name, scorer, tta, weight, sha256}); [] otherwise."""
        return list(self.card.get("members", [])) if self.kind == "ensemble" else []

    def verify(self, root: str | os.PathLike | None = None) -> str:
        """Check every file of the entry against its manifest (`_verify_files`), weights.pt against
        the card's SHA-256 (an ensemble: every member's weights against the digest they had when
        the ensemble was measured); returns the weights' digest.

        Raises:
            ZooError naming the entry, the file, both digests and how to repair it.
        """
        fix = f"reinstall fermetric (pip install --force-reinstall fermetric) or retrain it: {self.card.get('retrain', '(see card.md)')}"
        self._verify_files(fix)
        if self.kind == "ensemble":
            return self._verify_members(root)
        want = str(self.card.get("sha256", ""))
        if not self.weights.is_file():
            raise ZooError(f"pretrained model {self.name!r}: {self.weights} is missing; {fix}")
        got = sha256_file(self.weights)
        if got != want:
            size = self.weights.stat().st_size
            expected = self.card.get("size_bytes")
            raise ZooError(
                f"pretrained model {self.name!r}: {self.weights} is damaged or modified (SHA-256 {got[:16]}..., "
                f"{size} bytes; the card expects {want[:16]}...{f', {expected} bytes' if expected else ''}); {fix}"
            )
        return got

    def _verify_files(self, fix: str) -> None:
        """Every file of the entry against manifest.json (written at export): a changed, missing or
        added file names itself. Weights alone are not enough: a gallery whose labels were edited,
        or a config with another kNN k, would give other predictions under a verified name."""
        where = f"pretrained model {self.name!r}"
        try:
            listed = read_json(self.path / MANIFEST)["sha256"]
            assert isinstance(listed, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise ZooError(f"{where}: {self.path / MANIFEST} is missing or unreadable, so its files cannot be checked; "
                           f"{fix}") from None
        present = set(entry_files(self.path))
        for name in sorted(set(listed) | present):
            if name not in listed:
                raise ZooError(f"{where}: {self.path / name} is not one of the entry's files (manifest.json); "
                               "move it out of the entry")
            if name not in present:
                raise ZooError(f"{where}: {self.path / name} is missing; {fix}")
            got = sha256_file(self.path / name)
            if got != listed[name]:
                raise ZooError(f"{where}: {self.path / name} has been modified since the entry was exported (SHA-256 "
                               f"{got[:16]}..., the manifest expects {str(listed[name])[:16]}...); {fix}")
        need = {"card.json"} | ({"weights.pt", "config.yaml"} if self.kind != "ensemble" else set()) | (
            {"gallery.npz"} if self.kind == "embedding" else set())
        if need - set(listed):
            raise ZooError(f"{where}: {', '.join(sorted(need - set(listed)))} missing from the entry; {fix}")

    def _verify_members(self, root) -> str:
        import hashlib

        digests = []
        for spec in self.members:
            member = get_entry(str(spec.get("name", "")), root if root is not None else self.path.parent)
            digests.append(self.check_member(spec, member.verify()))
        return hashlib.sha256("".join(digests).encode()).hexdigest()

    def check_member(self, spec: dict[str, Any], got: str) -> str:
        """An ensemble member's weights digest `got`, checked against the one the card recorded.

        Raises:
            ZooError: the member was retrained or re-exported after the ensemble was measured.
        """
        if got != spec.get("sha256"):
            raise ZooError(
                f"pretrained ensemble {self.name!r}: its member {spec.get('name')!r} has changed since the ensemble was "
                f"measured (weights SHA-256 {got[:16]}..., the card expects {str(spec.get('sha256'))[:16]}...); "
                f"re-export the ensemble: {self.card.get('retrain', '(see card.md)')}")
        return got


MANIFEST = "manifest.json"  # {"sha256": {file name: digest}} of every other file of an entry


def entry_files(folder: Path) -> list[str]:
    """The files of an entry folder that its manifest covers: every visible regular file but the manifest."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)


def write_manifest(folder: Path) -> Path:
    """Write folder/manifest.json: the SHA-256 of every file of the entry (the last step of an export)."""
    return write_json(folder / MANIFEST, {"sha256": {name: sha256_file(folder / name) for name in entry_files(folder)}})


def zoo_root(root: str | os.PathLike | None = None) -> Path:
    """Where the entries live: `root`, else $FERMETRIC_ZOO (for tests and private zoos), else the package's."""
    if root is not None:
        return Path(root)
    env = os.environ.get("FERMETRIC_ZOO")
    return Path(env) if env else ZOO_ROOT


def list_pretrained(root: str | os.PathLike | None = None) -> list[ZooEntry]:
    """Every entry of the zoo, sorted by name (entries with an unreadable card are reported, not skipped)."""
    base = zoo_root(root)
    if not base.is_dir():
        return []
    return [get_entry(p.name, base) for p in sorted(base.iterdir()) if (p / "card.json").is_file()]


def is_pretrained_name(name: str, root: str | os.PathLike | None = None) -> bool:
    """True when `name` (not a path) names a zoo entry."""
    return is_path_name(name) and (zoo_root(root) / name / "card.json").is_file()


def get_entry(name: str, root: str | os.PathLike | None = None) -> ZooEntry:
    """The zoo entry `name`.

    Raises:
        ZooError for an unknown name (listing the known ones) or an unreadable card.
    """
    base = zoo_root(root)
    path = base / str(name)
    # hidden names too: export stages an entry in a hidden sibling folder and checks it by loading it
    if not is_path_name(name, hidden_ok=True) or not (path / "card.json").is_file():
        known = [p.name for p in sorted(base.iterdir()) if (p / "card.json").is_file()] if base.is_dir() else []
        raise ZooError(f"no pretrained model named {name!r}; known: {', '.join(known) or '(none installed)'} "
                       "(fermetric models --pretrained lists them)")
    try:
        card = read_json(path / "card.json")
    except (OSError, ValueError) as e:
        raise ZooError(f"pretrained model {name!r}: cannot read {path / 'card.json'} ({e})") from e
    if not isinstance(card, dict) or card.get("kind") not in KINDS:
        raise ZooError(f"pretrained model {name!r}: {path / 'card.json'} is not a model card "
                       f"(expected a JSON object with kind {', '.join(KINDS)})")
    if card["kind"] == "ensemble" and (not isinstance(card.get("members"), list) or not card["members"]
                                       or not all(isinstance(m, dict) and m.get("name") for m in card["members"])):
        raise ZooError(f"pretrained ensemble {name!r}: {path / 'card.json'} lists no members "
                       "(expected members: a list of {name, scorer, tta, weight, sha256})")
    return ZooEntry(name=str(name), path=path, card=card)


def card_markdown(card: dict[str, Any]) -> str:
    """The model card for people: what it is, how good, how it was made, how to remake it."""
    t = card.get("test", {})
    lines = [
        f"# {card['name']}", "",
        card.get("description", ""), "",
        "| | |", "|---|---|",
        f"| kind | {card['kind']} ({card.get('model', '')}, {card.get('parameters', 0):,} parameters) |",
        f"| data | {card.get('data', '')} |",
        f"| selected and reported on | {card.get('split', '')} |",
        f"| accuracy | {t.get('accuracy', float('nan')) * 100:.2f} % |",
    ]
    if t.get("accuracy_tta") is not None:
        lines.append(f"| accuracy, TTA (5 shifted crops x flip; what predict uses) | {t['accuracy_tta'] * 100:.2f} % |")
    if t.get("knn_accuracy") is not None:
        lines.append(f"| kNN accuracy (train gallery) | {t['knn_accuracy'] * 100:.2f} % |")
    if t.get("accuracy_other_layer"):
        for layer, acc in t["accuracy_other_layer"].items():
            lines.append(f"| kNN accuracy with the {layer} embedding (not what it ships) | {acc * 100:.2f} % |")
    lines.append(f"| macro-F1 | {t.get('macro_f1', float('nan')) * 100:.2f} % |")
    for key, what in (("calibration", ""), ("calibration_tta", ", TTA")):
        c = t.get(key)
        if c:
            lines.append(f"| calibration{what} (ECE over {c.get('binning', '15 bins')}; NLL; Brier) | "
                         f"{c['ece'] * 100:.2f} %; {c['nll']:.3f}; {c['brier']:.3f} |")
    if t.get("seconds_per_face") is not None:
        lines.append(f"| cost | {t['seconds_per_face'] * 1e3:.1f} ms per 48x48 face ({card.get('cost_machine', '')}) |")
    if card["kind"] == "ensemble":
        lines += [f"| recipe | `{card.get('recipe', '')}`: {card.get('weights_rule', '')} |", "",
                  "| member | votes with | weight | accuracy alone | SHA-256 of its weights |", "|---|---|---:|---:|---|"]
        lines += [f"| {m['name']} | {m['scorer']}{' + TTA ' + m['tta'] if m.get('tta') else ''} | {m['weight']:.3f} | "
                  f"{m.get('accuracy', float('nan')) * 100:.2f} % | `{str(m.get('sha256', ''))[:16]}...` |"
                  for m in card.get("members", [])]
    else:
        lines += [
            f"| recipe | `{card.get('recipe', '')}`, seed {card.get('seed', '')} |",
            f"| training | {card.get('train_minutes', 0):.0f} min, {card.get('epochs', '')} epochs on {card.get('machine', '')} |",
            f"| weights | weights.pt, {card.get('size_bytes', 0) / 1e6:.1f} MB, SHA-256 `{card.get('sha256', '')}` |",
        ]
    lines += [
        "", "Per-class F1:", "",
        "| " + " | ".join(t.get("per_class_f1", {})) + " |",
        "|" + "---|" * len(t.get("per_class_f1", {})),
        "| " + " | ".join(f"{v * 100:.1f}" for v in t.get("per_class_f1", {}).values()) + " |",
        "", "Retrain:", "", "```bash", card.get("retrain", ""), "```", "",
    ]
    for note in card.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def check_card(entry: ZooEntry) -> None:
    """Every file an entry needs is there (a partial copy is refused before anything loads)."""
    needs = ("card.json",) if entry.kind == "ensemble" else CARD_FILES
    missing = [f for f in needs if not (entry.path / f).is_file()]
    if entry.kind == "embedding" and entry.gallery is None:
        missing.append("gallery.npz")
    if missing:
        raise ZooError(f"pretrained model {entry.name!r} in {entry.path} lacks {', '.join(missing)}; "
                              f"reinstall fermetric or retrain it: {entry.card.get('retrain', '(see card.md)')}")
