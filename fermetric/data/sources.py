"""One entry point, `load_data`, that turns a `--data` value into DataSplits.

- None, "synth", "synthfer"           -> SynthFER, generated in memory (the default everywhere)
- a .csv / .csv.gz with emotion,pixels,Usage -> FER2013 (optionally relabelled by FER+)
- a folder with train/ (and test/)    -> the Kaggle FER2013 image-folder layout
- any other folder of class folders   -> a generic face-image folder (CK+, JAFFE, RAF-DB, ...)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fermetric.config import SYNTH_NAMES, DataConfig, is_synth
from fermetric.data.dataset import DataSplits
from fermetric.errors import DataError

__all__ = ["SYNTH_NAMES", "is_synth", "load_data"]  # is_synth lives with the config it reads


def load_data(source: Optional[str | Path] = None, cfg: Optional[DataConfig] = None, seed: int = 0) -> DataSplits:
    """Load any supported data source.

    Args:
        source: overrides `cfg.source` when given.
        cfg: loader options (FER+ file, class map, val fraction, SynthFER sizes, ...).
        seed: seeds SynthFER and any val split carved out of train.

    Raises:
        DataError: the path does not exist or is not a format fermetric reads (the message says
            which formats are accepted).
    """
    cfg = cfg or DataConfig()
    source = cfg.source if source is None else source
    if is_synth(None if source is None else str(source)):
        if cfg.ferplus:
            # FER+ relabels fer2013.csv rows; on SynthFER it would be ignored and the run would
            # silently train on synthetic faces
            raise DataError(
                f"--ferplus {cfg.ferplus} (data.ferplus) relabels FER2013, but the data source is SynthFER; "
                "pass --data fer2013.csv as well"
            )
        from fermetric.data.synthetic import load_synthfer

        return load_synthfer(
            n_train=cfg.synth_train, n_val=cfg.synth_val, n_test=cfg.synth_test,
            seed=seed, difficulty=cfg.synth_difficulty,
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {str(source)!r} does not exist; pass a fer2013.csv(.gz), an image folder, or 'synth'"
        )
    if not path.is_file() and not path.is_dir():
        raise DataError(f"data source {path} is a FIFO, socket or device, not a regular file or folder; "
                        "pass a fer2013.csv(.gz), an image folder, or 'synth'")
    if path.is_file():
        name = path.name.lower()
        if not (name.endswith(".csv") or name.endswith(".csv.gz")):
            raise DataError(f"{path}: not a CSV file; expected fer2013.csv or fer2013.csv.gz, or an image folder")
        from fermetric.data.fer2013 import load_fer2013_csv

        splits = load_fer2013_csv(path, skip_bad_rows=cfg.skip_bad_rows)
        if cfg.ferplus:
            from fermetric.data.ferplus import apply_ferplus

            splits = apply_ferplus(splits, cfg.ferplus)
        return splits
    if cfg.ferplus:
        raise DataError("FER+ labels need the fer2013.csv they relabel (same row order); pass --data fer2013.csv")
    from fermetric.data.folders import load_folder

    return load_folder(path, class_map=cfg.class_map, val_fraction=cfg.val_fraction, seed=seed)
