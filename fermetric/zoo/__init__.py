"""The model zoo: pretrained FER models stored inside the package, each with a model card and a
SHA-256 checked at load (registry), opened as a Run by name (load), made from a finished run
(export)."""
from fermetric.zoo.load import cache_dir, load_pretrained, open_run, zoo_run_dir
from fermetric.zoo.registry import (
    DEFAULT_CLASSIFIER,
    ZooEntry,
    ZooError,
    card_markdown,
    get_entry,
    is_pretrained_name,
    list_pretrained,
)

__all__ = ["DEFAULT_CLASSIFIER", "ZooEntry", "ZooError", "cache_dir", "card_markdown", "export_run", "get_entry",
           "is_pretrained_name", "list_pretrained", "load_pretrained", "open_run", "zoo_run_dir"]


def __getattr__(name: str):
    # the export (scikit-learn's metrics, 1.4 s to import) loads only when a model is exported
    if name == "export_run":
        from fermetric.zoo.export import export_run

        return export_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
