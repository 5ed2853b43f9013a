"""What a `--resume` may change in a run's config, and the refusal of everything else.

A resumed run must end where an uninterrupted one with the same settings would, and its
config.yaml must describe the weights it holds. So only keys that set how long to train, how fast
or where to run, or that the divergence message tells the user to change, may differ from the
run's own config; the rest (model, data, seed, objective, batch size, augmentation, ...) is
refused with the key, the run's value and the given one.

Changing optim.lr or train.grad_clip changes the rest of the run (that is the point, after a
divergence); train.epochs stretches or shortens the cosine schedule from the resumed epoch on,
and must stay above the epochs already trained (checked by the Trainer).

The comparison knows the training family (`unread_in_training`): a classifier never reads the
metric.* section in training, so a metric.* default changed by a newer fermetric (or a metric.*
key given on the command line) does not make an interrupted classifier another configuration: the
new values are applied and recorded with the sitting's other changes. Studies
(fermetric.study.runner) use the same comparison, `differing_keys`, to decide whether a finished
run is reused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from fermetric.config import RunConfig, config_from_dict, config_to_dict
from fermetric.errors import ConfigError

RESUME_CHANGEABLE = (
    "train.epochs",
    "train.time_budget_minutes",
    "train.early_stopping_patience",
    "train.threads",
    "train.eval_batch_size",
    "train.grad_clip",
    "train.precision",
    "train.compile",
    "optim.lr",
    "device",
)
_PATH_KEYS = ("data.source", "data.ferplus")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("class_map", "loss_kwargs", "miner_kwargs"):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def unread_in_training(key: str, family: Optional[str]) -> bool:
    """Whether training a run of `family` never reads the flattened config `key`: for a
    classifier, the metric.* section (embedding losses, miners, heads; kNN settings are read
    only when a kNN is fitted on the finished run's features, from its config.yaml)."""
    return family == "classifier" and key.startswith("metric.")


def differing_keys(have: RunConfig, want: RunConfig, family: Optional[str] = None,
                   ignore: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """(key, value in `have`, value in `want`) for every flattened key whose values differ, in
    key order; keys in `ignore` and keys that training a run of `family` never reads are skipped.

    Args:
        have: the run's config; want: the config it is compared with.
        family: "classifier", "siamese" or "triplet"; None compares every key.
    """
    a, b = _flat(config_to_dict(have)), _flat(config_to_dict(want))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in ignore and not unread_in_training(k, family) and not _same(k, a.get(k), b.get(k))]


def resume_config(run_cfg: RunConfig, given: RunConfig, run_dir: str | Path,
                  family: Optional[str] = None) -> tuple[RunConfig, dict[str, list]]:
    """The config to resume with: the run's, with the allowed changes of `given` applied.

    Args:
        run_cfg: the run's config (from RUN/config.yaml).
        given: the run's config with the command line's options applied to it.
        family: the run's training family; a key it never reads in training (a classifier's
            metric.*, `unread_in_training`) may change too.

    Returns:
        (config, changes) where changes maps each changed key to [run's value, new value].

    Raises:
        ConfigError naming every key that may not change on resume.
    """
    changes: dict[str, list] = {}
    refused = []
    for key, a, b in differing_keys(run_cfg, given):
        if key in RESUME_CHANGEABLE or unread_in_training(key, family):
            changes[key] = [a, b]
        else:
            refused.append(f"{key} is {a!r} in the run but {b!r} was given")
    if refused:
        raise ConfigError(
            f"cannot resume {run_dir} with another configuration: " + "; ".join(refused)
            + f". A resumed run keeps its config; only {', '.join(RESUME_CHANGEABLE)} "
            + ("(and metric.*, which a classifier does not read) " if family == "classifier" else "")
            + "may change. Train into another --out to change the rest."
        )
    merged = config_to_dict(run_cfg)
    for key, (_, new) in changes.items():
        node = merged
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = new
    return config_from_dict(merged), changes
