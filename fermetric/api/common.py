"""What every command of fermetric.api shares: opening a run, holding its lock while writing,
claiming an output folder."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

PathLike = str | Path
log = logging.getLogger("fermetric.api")


@contextlib.contextmanager
def writing_to(run: PathLike, *, only_caches: bool = False, hint: str = "give --out elsewhere"):
    """Hold the run's lock while a command writes into the run directory. A pretrained model's
    name (fermetric.zoo) writes into its cache folder, which is locked instead.

    `only_caches`: the command's output goes elsewhere and it keeps nothing in the run but caches
    (embeddings, calibrations, written atomically). Such a command also reads a run that another
    process holds (a training in progress), and a read-only run (an archive, a read-only mount),
    whose caches it then skips. A command that must write into a read-only run is refused in one
    line, with `hint`.
    """
    from fermetric.utils.runlock import RunLockedError, RunReadOnlyError, run_lock

    run_dir = Path(run)
    if not run_dir.is_dir():
        from fermetric.zoo import zoo_run_dir

        run_dir = zoo_run_dir(str(run))
        run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
        except RunReadOnlyError as e:
            if not only_caches:
                raise RunReadOnlyError(f"{e}, and this command writes into it; {hint}") from None
            log.info("%s: reading it without the lock; caches are not kept", e)
        except RunLockedError:
            if not only_caches:
                raise
        yield


def claim_output(out: Optional[PathLike], kind: str, *legacy: str) -> None:
    """Refuse an --out folder that holds what fermetric did not write, before any work (the
    default folders inside a run need no check: out None). Nothing is created here, so a command
    that fails leaves no folder; the files this output always has (`legacy` glob patterns) mark
    the folder as ours for the next command (fermetric.utils.outputs)."""
    from fermetric.utils.outputs import output_dir

    if out is not None:
        output_dir(out, kind, legacy=legacy, create=False)


def open_for_command(run: PathLike, device: Optional[str], precision: Optional[str], data: Optional[PathLike] = None):
    """The run (or zoo entry); `data`: its own data at another path (Run.use_data), e.g. the
    fer2013.csv a pretrained model was trained on."""
    from fermetric.zoo.load import open_run as load_run

    r = load_run(run, device=device or "auto", precision=precision or "auto")
    if data is not None:
        r.use_data(str(data))
    return r


def data_tag(data: str) -> str:
    """A file-name-safe tag of a data source ("/data/CK+" -> "CK")."""
    import re

    tag = re.sub(r"[^A-Za-z0-9]+", "_", Path(str(data)).name.split(".")[0]).strip("_")
    return tag or "data"
