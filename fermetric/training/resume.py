"""What a `--resume` may change in a run's config, and the refusal of everything else.

A resumed run must end where an uninterrupted one with the same settings would, and its
config.yaml must describe the weights it holds. So only keys that set how long to train, how fast
or where to run, or that the divergence message tells the user to change, may differ from the
run's own config; the rest (model, data, seed, objective, batch size, augmentation, ...) is
refused with the key, the run's value and the given one.

Changing optim.lr or train.grad_clip changes the rest of the run (that is the point, after a
divergence); train.epochs stretches or shortens the cosine schedule from the resumed epoch on,
and must stay above the epochs already trained (checked by the Trainer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def resume_config(run_cfg: RunConfig, given: RunConfig, run_dir: str | Path) -> tuple[RunConfig, dict[str, list]]:
    """The config to resume with: the run's, with the allowed changes of `given` applied.

    Args:
        run_cfg: the run's config (from RUN/config.yaml).
        given: the run's config with the command line's options applied to it.

    Returns:
        (config, changes) where changes maps each changed key to [run's value, new value].

    Raises:
        ConfigError naming every key that may not change on resume.
    """
    have, want = _flat(config_to_dict(run_cfg)), _flat(config_to_dict(given))
    changes: dict[str, list] = {}
    refused = []
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if _same(key, a, b):
            continue
        if key in RESUME_CHANGEABLE:
            changes[key] = [a, b]
        else:
            refused.append(f"{key} is {a!r} in the run but {b!r} was given")
    if refused:
        raise ConfigError(
            f"cannot resume {run_dir} with another configuration: " + "; ".join(refused)
            + f". A resumed run keeps its config; only {', '.join(k for k in RESUME_CHANGEABLE if k in have)} "
            "may change. Train into another --out to change the rest."
        )
    merged = config_to_dict(run_cfg)
    for key, (_, new) in changes.items():
        node = merged
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = new
    return config_from_dict(merged), changes
