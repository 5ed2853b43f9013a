"""`fermetric models`: the registered backbones and their options."""
from __future__ import annotations

import click


def register(main: click.Group) -> None:
    @main.command("models")
    def models_cmd() -> None:
        """List the registered models, their options and which have ImageNet weights."""
        from fermetric.models import get_model_entry, list_models

        for name in list_models():
            entry = get_model_entry(name)
            opts = ", ".join(f"{k}={v!r}" for k, v in entry.options().items())
            pre = f"  [ImageNet: {entry.pretrained}]" if entry.pretrained else ""
            click.echo(f"{name:10s} {entry.description}{pre}")
            if opts:
                click.echo(f"{'':10s}   options: {opts}")
