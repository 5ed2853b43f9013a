"""The `fermetric` command line (click).

Thin by design: commands parse options, resolve the config and call library functions. Each
command lives in a module of this package and is found automatically: a module defines
`register(main)` and adds its commands to the group. Errors fermetric raises on purpose
(FermetricError) become one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from fermetric.version import __version__
from fermetric.errors import FermetricError


class FermetricGroup(click.Group):
    """A click group that turns expected errors into a clear message and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FermetricError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except FileNotFoundError as exc:
            click.echo(f"error: file not found: {exc.filename or exc}", err=True)
            ctx.exit(2)
        except PermissionError as exc:
            click.echo(f"error: permission denied: {exc.filename or exc}", err=True)
            ctx.exit(2)
        except OSError as exc:  # a full disk, a read-only file system, ...: one line, never a traceback
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # -q quietens the console only: fermetric's own records still reach a run's train.log, so the
    # console handler filters by level and fermetric's logger passes INFO on
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    logging.getLogger("fermetric").setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    # faiss and pytorch-metric-learning log routine steps at INFO; keep them for -v
    for name in ("faiss", "faiss.loader", "PML"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 0 else logging.WARNING)


@click.group(cls=FermetricGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fermetric")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (no progress bars).")
@click.option("--threads", type=int, default=None, metavar="N",
              help="CPU threads for torch (and FAISS) in any command; training records it as train.threads. "
                   "0 or unset: the config's train.threads when training, else torch's default (all cores). "
                   "Set it on a shared machine: an oversubscribed CPU runs many times slower.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime"]), default=None,
              help="Where forward-only work (evaluation, TTA, predict, LIME, occlusion, kNN) runs the network: "
                   "onnxruntime (fp32 ONNX Runtime on the CPU; pip install 'fermetric[fast]'), torch, or auto "
                   "(default: ONNX Runtime where installed and the CPU has no native bf16). Gradients stay in torch.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, threads: int | None, backend: str | None) -> None:
    """fermetric: facial expression recognition with classifiers and metric-learning models,
    explained by one toolkit. Without --data, every command uses the built-in SynthFER data."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose
    ctx.obj["threads"] = threads
    _setup_logging(verbose, quiet)
    from fermetric.utils.heap import retain_freed_memory

    retain_freed_memory()  # batches reuse freed heap memory: 1.35x faster TTA evaluation (utils.heap)
    if backend is not None:
        import os

        from fermetric.models.onnx import ENV_BACKEND, require_onnxruntime

        if backend == "onnxruntime":
            try:
                require_onnxruntime()
            except Exception as e:  # a FermetricError with the install command
                raise click.UsageError(str(e)) from e
        os.environ[ENV_BACKEND] = backend  # every scorer's "auto" follows it
    if threads is not None:
        if threads < 0:
            raise click.BadParameter(f"must be >= 0 (0 = the default), got {threads}", param_hint="'--threads'")
        from fermetric.utils.runtime import cpu_count

        if threads > cpu_count():
            raise click.BadParameter(f"this machine has {cpu_count()} CPUs, so at most {cpu_count()} threads; "
                                     f"got {threads}", param_hint="'--threads'")
        if threads > 0:
            set_threads(threads)
        else:
            ctx.obj["threads"] = None


def set_threads(n: int) -> None:
    """Use `n` CPU threads from now on (before any work of the command)."""
    import os

    import torch

    torch.set_num_threads(n)
    # FAISS runs its own OpenMP pool: the variable reaches it when it loads later in the command
    os.environ["OMP_NUM_THREADS"] = str(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "options":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(main)


_register_commands()
