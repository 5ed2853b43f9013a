"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash mid-write leaves the old file (or none), never half a file. Also the one safe way to
read a torch file (`read_torch_file`: weights_only, and a message that names the real cause).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from fermetric.utils.outputs import FULL_DISK, disk_full_error


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, not on every write
    # (it is process-wide, so toggling it per write could race with other threads)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _default_mode() -> int:
    """The permission bits a plain open() would give a new file (0o666 less the umask)."""
    return 0o666 & ~_UMASK


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Write `path` through a temporary sibling renamed over it, so a reader never sees half a file
    and a failed write (a full disk, a crash) leaves the earlier file as it was.

    Raises:
        DiskFullError: the device is full (or the quota used up); nothing was replaced.
    """
    path = Path(path)
    try:
        return _write_and_replace(path, write, mode)
    except OSError as exc:
        if exc.errno in FULL_DISK:
            raise disk_full_error(path, exc) from None
        raise


def _write_and_replace(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def replace_folder(tmp: Path, final: Path) -> Path:
    """Put the complete folder `tmp` in place as `final` (a sibling), replacing an earlier `final`
    only now: a reader sees the old folder or the new one, never a mix."""
    import shutil

    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep other users of a shared install out
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, lambda fh: fh.write(text), "w")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def cache_dir() -> Path:
    """Where fermetric keeps derived files that are not a run's (a zoo model's caches and default
    outputs, ONNX graphs): $FERMETRIC_CACHE, else $XDG_CACHE_HOME/fermetric, else
    ~/.cache/fermetric (the package folder is never written)."""
    env = os.environ.get("FERMETRIC_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fermetric"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically; NumPy and torch values are converted."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file and a rename."""
    return _atomic_write(path, lambda fh: torch.save(obj, fh), "wb")


def file_kind(path: str | os.PathLike) -> str:
    """"regular", "directory", "FIFO", "socket" or "device or special file", from a stat that
    never opens the file (opening a FIFO blocks forever).

    Raises:
        OSError: from stat (FileNotFoundError when missing).
    """
    import stat

    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return "regular"
    if stat.S_ISDIR(mode):
        return "directory"
    return "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device or special file"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """np.save atomically (no pickles)."""
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def torch_load_error(path: str | os.PathLike, exc: BaseException, map_location: Any = "cpu") -> str:
    """Why `torch.load(path, weights_only=True)` failed, in words: empty, not a torch file at
    all, a damaged archive, Python objects refused by weights_only, or a device this machine
    lacks. torch's own messages are long and name other causes (random bytes come back as a
    weights_only refusal), so the cause is read from the file's first bytes where it can be."""
    import pickle
    import zipfile

    from fermetric.errors import clip

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = path.stat().st_size
    except OSError as oserr:
        return f"{path} could not be read ({oserr.strerror or oserr})"
    is_zip = zipfile.is_zipfile(path)
    if size == 0:
        return f"{path} is empty (0 bytes)"
    if head.startswith(b"PK") and not is_zip:
        return f"{path} is truncated or damaged: a zip archive without its end (size {size} bytes); copy it again"
    if not is_zip and not head.startswith(b"\x80"):
        return f"{path} is not a torch file (neither a torch zip archive nor a pickle: its first bytes are {head!r})"
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        return (f"refusing to load {path}: it holds arbitrary Python objects (not only tensors, numbers, strings, lists and "
                f"dicts), which could run code when unpickled (weights_only=True refused: {clip(text.split('WeightsUnpickler error:')[-1], 120)})")
    if "CUDA device" in text or "restore data location" in text or "device" in text.lower() and "map_location" in text:
        return (f"{path} cannot be loaded onto device {str(map_location)!r}, which this machine does not have "
                f"({clip(text, 100)}); load it onto the CPU (--device cpu, map_location='cpu')")
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "zip archive" in text or "central directory" in text:
        return f"{path} is truncated or damaged ({type(exc).__name__}: {clip(text, 120)}); copy it again"
    return f"{path} could not be read as a torch file ({type(exc).__name__}: {clip(text, 160)})"


def read_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`, with a CheckpointError that names the cause.

    Only regular files are opened (a FIFO would block forever).

    Raises:
        CheckpointError: missing, not a regular file, empty, not a torch file, damaged, refused
            by weights_only, or saved on a device this machine lacks.
    """
    return _read_torch(path, map_location, digest=False)[0]


def read_torch_file_sha256(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Any, str]:
    """`read_torch_file`, and the hex SHA-256 of the very bytes it loaded: the file is read once,
    so the fingerprint is the loaded object's even if the file is replaced meanwhile.

    Raises:
        CheckpointError: as read_torch_file.
    """
    return _read_torch(path, map_location, digest=True)


def _read_torch(path: str | os.PathLike, map_location: Any, digest: bool) -> tuple[Any, Optional[str]]:
    import io

    from fermetric.errors import CheckpointError

    path = Path(path)
    try:
        kind = file_kind(path)
    except OSError:
        raise CheckpointError(f"{path} does not exist") from None
    if kind != "regular":
        raise CheckpointError(f"{path} is not a regular file (a folder, FIFO or device); expected a torch .pt file")
    try:
        data = path.read_bytes()
        return (torch.load(io.BytesIO(data), map_location=map_location, weights_only=True),
                hashlib.sha256(data).hexdigest() if digest else None)
    except Exception as exc:  # every failure of a load is the file's fault, or the device's
        raise CheckpointError(torch_load_error(path, exc, map_location)) from None
