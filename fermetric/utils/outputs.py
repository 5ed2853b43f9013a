"""Where fermetric may write: one rule for every output path.

An output folder is used only when it does not exist yet (it is created), is empty, or already
holds fermetric's own output: a folder fermetric made (it carries a `.fermetric-output` marker
naming what was written there), a run directory where the command writes into runs, or a folder
of an earlier fermetric version recognised by the files that kind of output always has. Anything
else is someone else's folder and is refused with a one-line message naming the path, before any
work is done.

An output file (an HTML report, a figure given by --out) replaces an existing file only when that
file is fermetric's output of the same kind (`is_ours`): `report --out RUN/config.yaml` must never
turn a run's config into HTML.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from fermetric.errors import ConfigError, DiskFullError
import fermetric.run_layout as layout

MARKER = ".fermetric-output"

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: str | os.PathLike, exc: OSError) -> DiskFullError:
    """The one-line error of a write that ran out of space (`exc` is ENOSPC or EDQUOT)."""
    return DiskFullError(f"no space left on the device to write {path} ({exc.strerror}); free some space and run "
                         "the command again (what was there before is unchanged)")


def _kinds(path: Path) -> list[str]:
    try:
        kinds = json.loads((path / MARKER).read_text()).get("kinds", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(k) for k in kinds] if isinstance(kinds, list) else []


def _mark(path: Path, kinds: list[str]) -> None:
    try:
        (path / MARKER).write_text(json.dumps({"written_by": "fermetric", "kinds": kinds}) + "\n")
    except OSError:  # a read-only folder that already holds our output: nothing to record
        pass


def output_dir(path: str | os.PathLike, kind: str, *, option: str = "--out", runs_ok: bool = False,
               legacy: Sequence[str] = (), create: bool = True) -> Path:
    """Check that `path` may take fermetric's output of `kind` (e.g. "study", "predictions") and,
    with `create`, make it and mark it as ours. Call before any work, so a refusal costs nothing.

    Args:
        kind: what is written there; recorded in the folder's marker.
        option: the option the user gave the path with, for the message.
        runs_ok: a run directory may take this output (evaluate, explain: outputs beside the run's own).
        legacy: glob patterns of file or folder names whose presence marks an earlier fermetric
            output of this kind (written before markers existed), e.g. ("predictions.json",).

    Raises:
        ConfigError: the path is a file, or a folder that holds something fermetric did not write
            (or a run, where runs are not the place for this output).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p} is a file; give a folder (new or empty) for the {kind} output")
    if p.is_dir():
        entries = [e.name for e in p.iterdir()]
        kinds = _kinds(p)
        if entries and not kinds:
            if layout.is_run_dir(p):
                if not runs_ok:
                    raise ConfigError(f"{option} {p} is a fermetric run directory, not a {kind} folder; "
                                      "choose a new or empty folder (the run is left as it is)")
            elif not any(next(p.glob(pattern), None) is not None for pattern in legacy):
                shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
                raise ConfigError(f"{option} {p} already holds files fermetric did not write ({shown}); "
                                  f"choose a new or empty folder for the {kind} output")
        if create and kind not in kinds and not (entries and not kinds and layout.is_run_dir(p)):  # runs stay unmarked
            _mark(p, kinds + [kind])
        return p
    if create:
        p.mkdir(parents=True, exist_ok=True)
        _mark(p, [kind])
    return p


def replaceable_file(path: str | os.PathLike, what: str, is_ours: Callable[[Path], bool], *,
                     option: str = "--out") -> Path:
    """`path` when it is free or holds an earlier fermetric `what` (`is_ours`), else a refusal.

    Raises:
        ConfigError: the path is a folder, or a file that is not fermetric's `what`.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a folder; give the {what} file to write, e.g. {p / ('report.html' if what == 'report' else 'out.png')}")
    if p.exists() and not is_ours(p):
        raise ConfigError(f"{option} {p} already exists and is not a {what} written by fermetric; it is left as it is: "
                          "choose another file name")
    return p


def file_starts_with(path: Path, markers: Sequence[bytes], head: int = 4096) -> bool:
    """Whether one of `markers` occurs in the first `head` bytes of the file (False when unreadable)."""
    try:
        with open(path, "rb") as f:
            start = f.read(head)
    except OSError:
        return False
    return any(m in start for m in markers)


PNG_SOFTWARE = "fermetric"  # the PNG "Software" text chunk of every figure fermetric saves


def is_fermetric_png(path: Path) -> bool:
    """A PNG whose Software text chunk says fermetric wrote it (plotting.save puts it in)."""
    return file_starts_with(path, [b"\x89PNG"], head=8) and file_starts_with(
        path, [b"Software\x00" + PNG_SOFTWARE.encode()], head=1 << 16)


@contextlib.contextmanager
def staged_outputs(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of the output folder `final` to write a command's files into; only
    when the block ends without an error are they moved into `final` (one rename each), so a
    command that fails half-way (a full disk, a bad input found late) leaves the earlier outputs
    in `final` as they were and adds nothing. Map the paths written with `final_path`."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staged", dir=final.parent))
    except OSError as exc:
        if exc.errno in FULL_DISK:
            raise disk_full_error(final, exc) from None
        raise
    try:
        yield tmp
        final.mkdir(parents=True, exist_ok=True)
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = final / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def final_path(path: str | os.PathLike, staged: Path, final: str | os.PathLike) -> Path:
    """Where a file written into the staging folder `staged` lies once moved into `final`."""
    return Path(final) / Path(path).relative_to(staged)
