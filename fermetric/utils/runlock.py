"""One writer per run directory: an OS-level lock (flock) on RUN/.fermetric.lock.

The kernel releases a flock when its holder exits, however it exits (SIGKILL included), so a
crashed training never leaves a run locked. The holder writes its PID into the file so that a
refused second process can name it. The lock file is removed on release, so a finished run's
layout is unchanged; removing it is safe because a process that took the lock checks that the
file it locked is still the one at the path (else it retries on the new file).
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from fermetric.errors import FermetricError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then unguarded (documented)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".fermetric.lock"

# run directories this process holds, with a nesting count: the CLI and Trainer.fit both take the
# lock, and two flocks on one file from one process would refuse each other
_HELD: dict[str, list] = {}


class RunLockedError(FermetricError):
    """Another process is writing the run directory."""


class RunReadOnlyError(FermetricError):
    """The run directory cannot be written (a read-only file system, an archive, no permission)."""


# run directories found read-only in this process: commands that only read them go on without
# the lock, and the caches they would keep in the run (embeddings, calibrations) are not written
_READ_ONLY: set[str] = set()
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def known_read_only(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` was found read-only when this process tried to lock it."""
    return os.path.realpath(run_dir) in _READ_ONLY


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "PID unknown"


def _acquire(run_dir: Path) -> int:
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"run directory {run_dir} is in use by another fermetric process ({_holder(path)}); "
                "wait for it to finish or choose another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run directory's lock for the block (creating the folder when needed).

    A folder this call created is removed again if the block leaves nothing in it, so a refused
    bad input leaves no empty run directory behind.

    Raises:
        RunLockedError naming the holder's PID when another process holds it; RunReadOnlyError
        when the folder cannot be written (the run is then remembered as read-only).
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if fcntl is None:
        yield run_dir
        return
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield run_dir
        finally:
            _HELD[key][1] -= 1
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = _acquire(run_dir)
    except OSError as e:
        if created:
            _remove_if_empty(run_dir)
        if e.errno in _NOT_WRITABLE:
            _READ_ONLY.add(key)
            raise RunReadOnlyError(f"run directory {run_dir} is read-only ({e.strerror})") from None
        raise
    except BaseException:
        if created:
            _remove_if_empty(run_dir)
        raise
    _HELD[key] = [fd, 1]
    try:
        yield run_dir
    finally:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_dir / LOCK_NAME)  # still holding it: see the module docstring
        os.close(fd)
        if created:
            _remove_if_empty(run_dir)


def _remove_if_empty(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only succeeds when empty
