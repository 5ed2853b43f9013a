"""Face-image folders: Kaggle's FER2013 image layout, and any folder of class sub-folders
(CK+, JAFFE, RAF-DB, a user's own pictures).

Accepted layouts (class folders hold the images; other files are ignored with a warning):

    root/train/<class>/*.jpg, root/test/<class>/*.jpg [, root/val/<class>/*.jpg]
    root/<class>/*.jpg                               (everything is "train")
    root/masks/<same relative path>.png              (optional evidence masks, e.g. SynthFER's)

Splits: a `val/` folder is the val split. Without one, test files all named `PublicTest_*` /
`PrivateTest_*` (Kaggle's FER2013 names) become val and test, as in fer2013.csv; otherwise a
seeded, stratified `val_fraction` of train becomes val and test stays test.

Classes: folder names that differ only in case, spaces, '-' or '_' are one class (`class_key`):
across splits they are merged (with a warning), and two such folders in one split are an error.
Folder names that are all FER2013 names (case-insensitive, after `class_map`) take FER2013's
ids and all seven FER2013_CLASSES; other names are sorted alphabetically.
Every image is read with `read_face_image` (48x48 grayscale, centre crop, antialiased resize).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from fermetric.data.classes import FER2013_CLASSES, FER2013_FOLDER_NAMES, class_key
from fermetric.data.dataset import SPLITS, DataSplits, FERDataset, stratified_split
from fermetric.data.images import IMAGE_EXTENSIONS, is_image_file, read_face_image, read_mask_image
from fermetric.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_FOLDERS: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
MASKS_FOLDER = "masks"
KAGGLE_TEST_PREFIXES: dict[str, str] = {"PublicTest_": "val", "PrivateTest_": "test"}
_SHOW = 5  # example file names in messages
_PARALLEL_MIN = 64  # fewer files than this are read in the calling thread


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith("."))


def _special(path: Path) -> bool:
    """A FIFO, socket or device (or a dangling link): never opened, only reported."""
    return not path.is_file()


def _unify_class_folders(found: dict[str, dict[str, list[Path]]], split_dirs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Give folders of the same class (see `class_key`) one name in every split, in place.

    Returns:
        split -> unified name -> the folder's real name (for messages).

    Raises:
        DataError: two folders of one split name the same class, naming both.
    """
    spelling: dict[str, str] = {}  # key -> the name used (train's spelling first, then sorted)
    for split in found:
        for cname in sorted(found[split]):
            spelling.setdefault(class_key(cname), cname)
    real: dict[str, dict[str, str]] = {}
    for split, classes in found.items():
        seen: dict[str, str] = {}
        unified: dict[str, list[Path]] = {}
        real[split] = {}
        for cname in sorted(classes):
            key = class_key(cname)
            if key in seen:
                raise DataError(
                    f"{split_dirs[split]}: class folders {seen[key]!r} and {cname!r} differ only in case, spaces, "
                    "'-' or '_', so they would be one class; merge them or rename one"
                )
            seen[key] = cname
            name = spelling[key]
            if name != cname:
                logger.warning("%s: class folder %r taken as class %r (same name but for case, spaces, '-' or '_')",
                               split_dirs[split], cname, name)
            unified[name] = classes[cname]
            real[split][name] = cname
        found[split] = unified
    return real


def _resolve_classes(
    folder_names: Iterable[str], class_map: Optional[Mapping[str, Optional[str]]], root: Path
) -> tuple[tuple[str, ...], dict[str, Optional[int]]]:
    """Class names, and folder name -> class id (None: skipped by class_map)."""
    folder_names = sorted(set(folder_names))
    target: dict[str, Optional[str]] = {}
    if class_map is not None:
        lower_map = {str(k).lower(): v for k, v in class_map.items()}
        unknown_keys = sorted(set(lower_map) - {f.lower() for f in folder_names})
        if unknown_keys:
            raise DataError(
                f"{root}: class_map names folders that do not exist: {', '.join(unknown_keys)}; "
                f"class folders found: {', '.join(folder_names)}"
            )
        unmapped = [f for f in folder_names if f not in class_map and f.lower() not in lower_map]
        if unmapped:
            raise DataError(
                f"{root}: class folders not in class_map: {', '.join(unmapped)}; map each to a class name, "
                "or to null to skip it"
            )
        for f in folder_names:
            v = class_map[f] if f in class_map else lower_map[f.lower()]
            target[f] = None if v is None else str(v)
    else:
        target = {f: f for f in folder_names}
    names = sorted({v for v in target.values() if v is not None})
    if not names:
        raise DataError(f"{root}: class_map skips every class folder; nothing to load")
    if all(n.lower() in FER2013_FOLDER_NAMES for n in names):
        ids = {f: (None if v is None else FER2013_FOLDER_NAMES[v.lower()]) for f, v in target.items()}
        return FER2013_CLASSES, ids
    return tuple(names), {f: (None if v is None else names.index(v)) for f, v in target.items()}


def _read_all(files: list[Path], reader, workers: int, desc: str) -> list[np.ndarray]:
    """Read every file with `reader`, in a thread pool when there are many (PIL decodes without
    the GIL), keeping the order."""
    # A bar for long reads only, not when quiet (the CLI's -q sets WARNING); tqdm's None: TTY only.
    disable = True if len(files) < 1000 or not logger.isEnabledFor(logging.INFO) else None
    if len(files) < _PARALLEL_MIN or workers <= 1:
        return [reader(f) for f in tqdm(files, desc=desc, unit="img", disable=disable)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(reader, files)
        return list(tqdm(it, total=len(files), desc=desc, unit="img", disable=disable))


def _find_split_dirs(root: Path) -> tuple[dict[str, Path], str, list[str]]:
    """The split folders of `root`, or `root` itself as the train split.

    Returns:
        (split -> folder, layout "split folders" / "class folders", ignored top-level folders).
    """
    top = [d for d in _subdirs(root) if d.name != MASKS_FOLDER]
    split_dirs: dict[str, Path] = {}
    for d in (d for d in top if d.name.lower() in SPLIT_FOLDERS):
        split = SPLIT_FOLDERS[d.name.lower()]
        if split in split_dirs:
            raise DataError(f"{root}: both {split_dirs[split].name}/ and {d.name}/ would be the {split} split; keep one")
        split_dirs[split] = d
    ignored: list[str] = []
    if split_dirs:
        layout = "split folders"
        ignored += [f"{d.name}/" for d in top if d.name.lower() not in SPLIT_FOLDERS]
    else:
        layout = "class folders"
        split_dirs = {"train": root}
    if not top:
        raise DataError(f"{root}: no class folders; expected train/<class>/ and test/<class>/ folders, or <class>/ folders")
    return split_dirs, layout, ignored


def _find_class_files(root: Path, split_dirs: dict[str, Path], ignored: list[str]) -> dict[str, dict[str, list[Path]]]:
    """split -> class folder name -> its image files; what is not an image goes to `ignored`."""
    found: dict[str, dict[str, list[Path]]] = {}
    for split in (s for s in SPLITS if s in split_dirs):
        sdir = split_dirs[split]
        classes = [d for d in _subdirs(sdir) if not (sdir == root and d.name == MASKS_FOLDER)]
        if not classes:
            raise DataError(f"{sdir}: no class folders; expected one sub-folder per class (e.g. {sdir}/happy/)")
        if sdir != root:
            ignored += [str(f.relative_to(root)) for f in _files(sdir)]
        found[split] = {}
        for cdir in classes:
            files = _files(cdir)
            images = [f for f in files if is_image_file(f) and not _special(f)]
            ignored += [str(f.relative_to(root)) for f in files if not is_image_file(f)]
            ignored += [f"{f.relative_to(root)} (not a regular file)" for f in files if is_image_file(f) and _special(f)]
            ignored += [f"{d.relative_to(root)}/" for d in _subdirs(cdir)]
            found[split][cdir.name] = images
    return found


def _check_empty_classes(found: dict[str, dict[str, list[Path]]], folder_ids: dict[str, Optional[int]],
                         split_dirs: dict[str, Path], real_names: dict[str, dict[str, str]]) -> None:
    """An empty class folder is an error when the class has no images anywhere (a failed copy, a
    wrong path); when another split has the class (a small test split), it is only a warning."""
    filled = {folder_ids[c] for classes in found.values() for c, files in classes.items() if files}
    for split, classes in found.items():
        for cname, files in classes.items():
            if files or folder_ids[cname] is None:
                continue
            if folder_ids[cname] not in filled:
                raise DataError(
                    f"{split_dirs[split] / real_names[split][cname]}: empty class folder; expected images "
                    f"({' '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})"
                )
            logger.warning("%s: empty class folder (the class has images in other splits)", split_dirs[split] / real_names[split][cname])


def _split_items(found: dict[str, dict[str, list[Path]]],
                 folder_ids: dict[str, Optional[int]]) -> tuple[dict[str, list[tuple[Path, int]]], Optional[str]]:
    """split -> [(file, class id)] in class-id order (skipped classes left out), and where val
    came from. Kaggle's FER2013 folders name test files PublicTest_* / PrivateTest_*: val and test."""
    val_from = "val folder" if "val" in found else None
    items: dict[str, list[tuple[Path, int]]] = {}
    for split, classes in found.items():
        kept = sorted((folder_ids[c], c) for c in classes if folder_ids[c] is not None)
        entries = [(f, cid) for cid, c in kept for f in classes[c]]
        if entries:
            items[split] = entries
    if "test" in items and "val" not in items and items["test"]:
        prefix = [next((s for p, s in KAGGLE_TEST_PREFIXES.items() if f.name.startswith(p)), None) for f, _ in items["test"]]
        if all(prefix):
            test = items.pop("test")
            for split in ("val", "test"):
                chosen = [it for it, s in zip(test, prefix) if s == split]
                if chosen:
                    items[split] = chosen
            val_from = "PublicTest_* files of test/"
    return items, val_from


def _read_masks(root: Path, entries: list[tuple[Path, int]], rel: list[Path], workers: int) -> Optional[torch.Tensor]:
    """(N, 48, 48) bool masks of one split where root/masks/ mirrors it (None where it has no
    masks folder); every image of a mirrored split must have its mask."""
    masks_root = root / MASKS_FOLDER
    if not (masks_root.is_dir() and (masks_root / rel[0].parts[0]).is_dir()):
        return None
    mask_files = []
    for f, r in zip((f for f, _ in entries), rel):
        m = masks_root / r.with_suffix(".png")
        if not m.is_file() and (masks_root / r).is_file():
            m = masks_root / r
        if not m.is_file():
            raise DataError(f"{f}: no mask {m} (the masks/ folder must mirror every image of {rel[0].parts[0]}/)")
        mask_files.append(m)
    return torch.from_numpy(np.stack(_read_all(mask_files, read_mask_image, workers, "reading masks")))


def _build_splits(root: Path, items: dict[str, list[tuple[Path, int]]], pixels: list[np.ndarray],
                  class_names: tuple[str, ...], workers: int) -> dict[str, FERDataset]:
    """One FERDataset a split from the images read (in SPLITS order, as `pixels` is)."""
    splits: dict[str, FERDataset] = {}
    start = 0
    for split in (s for s in SPLITS if s in items):
        entries = items[split]
        imgs = pixels[start:start + len(entries)]
        start += len(entries)
        rel = [f.relative_to(root) for f, _ in entries]
        splits[split] = FERDataset(
            images=torch.from_numpy(np.stack(imgs)).unsqueeze(1),
            labels=torch.tensor([c for _, c in entries], dtype=torch.long),
            class_names=class_names,
            masks=_read_masks(root, entries, rel, workers),
            sources=[r.as_posix() for r in rel],
        )
    return splits


def _hold_out_val(splits: dict[str, FERDataset], val_fraction: float, seed: int) -> tuple[dict[str, FERDataset], bool]:
    """Without a val split, a seeded, stratified `val_fraction` of train per class becomes val.

    Returns:
        (the splits in SPLITS order, whether val was held out).
    """
    if "val" in splits or "train" not in splits or val_fraction <= 0:
        return splits, False
    keep, held = stratified_split(splits["train"].labels, val_fraction, seed)
    if not len(held):
        return splits, False
    train = splits["train"]
    ordered = {}
    for s in SPLITS:
        if s == "train":
            ordered["train"] = train.subset(keep)
        elif s == "val":
            ordered["val"] = train.subset(held)
        elif s in splits:
            ordered[s] = splits[s]
    return ordered, True


def load_folder(
    path: str | os.PathLike,
    class_map: Optional[Mapping[str, Optional[str]]] = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    workers: Optional[int] = None,
) -> DataSplits:
    """Load a folder of face images (see the module docstring for the layouts).

    Args:
        path: the root folder.
        class_map: folder name -> class name (null skips the folder); every class folder must be
            mapped when given.
        val_fraction: held out of train, per class, when there is no val split; 0 disables.
        seed: seeds that split.
        workers: image-reading threads (default: min(8, CPU count)).

    Returns:
        DataSplits: images (N, 1, 48, 48) uint8, sources relative to `path` ("train/happy/x.jpg"),
        masks (N, 48, 48) bool where `masks/` mirrors the split; info has source, layout, files,
        ignored (files skipped: not images), val_from, masks, load_seconds, images_per_second.

    Raises:
        DataError: missing folder, no class folders, an empty class folder, unmapped class
            folders, or a file with an image extension that is corrupt or not an image (naming it).
    """
    t0 = time.perf_counter()
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder; expected an image folder (train/<class>/*.jpg or <class>/*.jpg)")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected an image folder (train/<class>/*.jpg or <class>/*.jpg)")

    # 1. what is there: split folders, class folders and their files (everything else is ignored)
    split_dirs, layout, ignored = _find_split_dirs(root)
    found = _find_class_files(root, split_dirs, ignored)
    real_names = _unify_class_folders(found, split_dirs)
    class_names, folder_ids = _resolve_classes((c for s in found.values() for c in s), class_map, root)
    _check_empty_classes(found, folder_ids, split_dirs, real_names)
    if ignored:
        logger.warning(
            "%s: ignored %d entries that are not images in class folders: %s%s", root, len(ignored),
            ", ".join(ignored[:_SHOW]), ", ..." if len(ignored) > _SHOW else "",
        )

    # 2. which file goes to which split, then read them all at once
    items, val_from = _split_items(found, folder_ids)
    all_files = [f for split in SPLITS if split in items for f, _ in items[split]]
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    t_read = time.perf_counter()
    pixels = _read_all(all_files, read_face_image, workers, "reading images")
    read_seconds = time.perf_counter() - t_read

    # 3. datasets (with their masks), and val held out of train where there is none
    splits = _build_splits(root, items, pixels, class_names, workers)
    if not splits:
        raise DataError(f"{root}: no images found")
    has_masks = any(ds.masks is not None for ds in splits.values())
    splits, held_out = _hold_out_val(splits, val_fraction, seed)
    if held_out:
        val_from = f"{val_fraction:g} of train per class (seed {seed})"

    info = {
        "source": str(root),
        "format": "image folder",
        "layout": layout,
        "files": len(all_files),
        "ignored": {"count": len(ignored), "examples": ignored[:_SHOW]},
        "val_from": val_from,
        "masks": has_masks,
        "load_seconds": round(time.perf_counter() - t0, 3),
        "images_per_second": round(len(all_files) / read_seconds, 1) if read_seconds > 0 else None,
    }
    return DataSplits(name=root.name or str(root), splits=splits, info=info)
