"""`fermetric models`: the registered backbones and their options; --pretrained: the model zoo."""
from __future__ import annotations

import click


def register(main: click.Group) -> None:
    @main.command("models")
    @click.option("--pretrained", is_flag=True, help="List the pretrained FER models shipped with fermetric, with their cards.")
    @click.option("--verify", is_flag=True, help="With --pretrained: check every entry's weights against its SHA-256.")
    def models_cmd(pretrained: bool, verify: bool) -> None:
        """List the registered models, their options and which have ImageNet weights."""
        from fermetric.models import get_model_entry, list_models

        if pretrained:
            _list_pretrained(verify)
            return
        for name in list_models():
            entry = get_model_entry(name)
            opts = ", ".join(f"{k}={v!r}" for k, v in entry.options().items())
            pre = f"  [ImageNet: {entry.pretrained}]" if entry.pretrained else ""
            click.echo(f"{name:10s} {entry.description}{pre}")
            if opts:
                click.echo(f"{'':10s}   options: {opts}")


def _list_pretrained(verify: bool) -> None:
    from fermetric.zoo import DEFAULT_CLASSIFIER, card_markdown, list_pretrained

    entries = list_pretrained()
    if not entries:
        click.echo("no pretrained models are installed (fermetric/zoo/models is empty)")
        return
    for e in entries:
        if verify:
            e.verify()
        default = " (the default of fermetric predict)" if e.name == DEFAULT_CLASSIFIER else ""
        checked = ", every file matches its manifest (SHA-256)" if verify else ""
        click.echo(f"== {e.name}{default}{checked}: {e.path}\n{card_markdown(e.card)}")
