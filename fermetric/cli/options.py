"""Options shared by many commands (the config they feed is resolved by fermetric.config.resolve_config)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

# numpy and torch take seeds in [0, 2**32); config key `seed` has the same range
SEED = click.IntRange(0, 2**32 - 1)


class OutPath(click.Path):
    """A path that fermetric will create (an --out folder or file): refused at parse time when a
    part of it above is an existing file, which would otherwise fail deep inside a command with
    NotADirectoryError, after work was done."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        p = Path(value).expanduser().absolute()
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    self.fail(f"{value}: {parent} is a file, not a folder, so nothing can be created below it; "
                              "choose another path", param, ctx)
                break
        return value


class RunPath(click.ParamType):
    """RUN: a run directory, or the name of a pretrained model of the zoo (fermetric models
    --pretrained), checked at parse time so that a typo fails before any work."""

    name = "run"

    def convert(self, value, param, ctx):
        if isinstance(value, Path):
            value = str(value)
        if Path(value).is_dir():
            return value
        from fermetric.zoo import is_pretrained_name

        if is_pretrained_name(value):
            return value
        if Path(value).exists():
            self.fail(f"{value} is a file; expected a run directory or a pretrained model's name", param, ctx)
        self.fail(f"{value}: no such run directory, and no pretrained model of that name "
                  "(fermetric models --pretrained lists them)", param, ctx)


RUN = RunPath()


RUN_DATA_HELP = ("The run's own data at another path (same classes), e.g. the fer2013.csv a pretrained model "
                 "was trained on. Another data set: evaluate --data.")


def run_data_option(f: Callable) -> Callable:
    """--data for a command on a RUN: the run's own data where it lies on this machine (Run.use_data)."""
    return click.option("--data", default=None, metavar="PATH", help=RUN_DATA_HELP)(f)


def other_data_options(action: str) -> Callable[[Callable], Callable]:
    """--data (another data set, classes matched by name) and --class-map, for the commands that
    score a run on other faces (evaluate, knn-eval); `action` starts the --data help."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--class-map", "class_map", multiple=True, metavar="DATA_CLASS=MODEL_CLASS",
                         help="With --data: map a data class to a model class (DATA_CLASS= leaves it out). Repeatable.")(f)
        return click.option("--data", default=None, metavar="PATH",
                            help=f"{action} (folder, fer2013.csv, synth): classes matched by name.")(f)
    return decorate


def echo_class_mapping(result: dict) -> None:
    """Print how another data set's classes were matched to the run's (a result of --data)."""
    if "cross_data" in result:
        from fermetric.evaluation.crossdata import mapping_lines

        for line in mapping_lines(result["cross_data"], result["class_names"]):
            click.echo(f"  {line}")


def data_option(f: Callable) -> Callable:
    return click.option(
        "--data", "data", default=None, metavar="PATH",
        help="fer2013.csv(.gz), an image folder, or 'synth' (default: SynthFER).",
    )(f)


def ferplus_option(f: Callable) -> Callable:
    return click.option(
        "--ferplus", default=None, metavar="CSV", type=click.Path(dir_okay=False),
        help="fer2013new.csv: train and evaluate on FER+ plurality labels (data.ferplus_mode picks the training target).",
    )(f)


def config_options(f: Callable) -> Callable:
    f = click.option(
        "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config value (repeatable), e.g. --set train.epochs=5.",
    )(f)
    f = click.option(
        "--config", "config_path", default=None, type=click.Path(dir_okay=False), metavar="YAML",
        help="A YAML config (see configs/).",
    )(f)
    return f


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=SEED, default=None, help="Random seed (default: the config's, 0).")(f)


def device_option(f: Callable) -> Callable:
    return click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:N.")(f)


def precision_option(f: Callable) -> Callable:
    return click.option(
        "--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
        help="Autocast of the forward passes. auto (default): bf16 on CPUs with native bf16 "
             "(avx512_bf16/amx_bf16), fp16 on CUDA, else fp32.",
    )(f)


def compile_option(f: Callable) -> Callable:
    return click.option(
        "--compile", "compile_", type=click.Choice(["auto", "true", "false"]), default=None,
        help="torch.compile the training step. auto (default): only for runs long enough to repay "
             "the compile time; a compile failure falls back to eager with a warning.",
    )(f)


