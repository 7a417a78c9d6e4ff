"""Crash-safe file writing and safe weight loading, used by every part of the engine (and by bundle scripts).

One mechanism for every writer: the content goes to a temp file in the target's folder, is flushed and fsync'ed,
gets the normal permissions of a new file (0666 minus the umask, so 0644 usually; a bare `mkstemp` would leave
0600), then is renamed over the target and the folder fsync'ed. A crash leaves either the old file or the new
one, never half of one. Writers that produce several files (SimpleITK's .mhd + .raw) write into a temp folder
with `atomic_files` and have each file renamed into place.

Loads use `torch.load(weights_only=True)`: tensors and plain containers only, never code.

Bundle-portable (standard library, torch and the project's `errors`): export copies this file into bundles.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError, DataError


def _umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open(path, "w") would give a new file


def refuse_overwriting_inputs(out: str | os.PathLike, inputs: Any) -> None:
    """Raise DataError when writing `out` would destroy an input: `out` is (links resolved) one of `inputs`, or
    lies inside an input folder (a DICOM series folder: the output would also join the series). `inputs`: paths,
    empty ones ignored. Every writer of results calls this before writing, whatever asked for the write."""
    target = Path(out).expanduser().resolve()
    for source in inputs:
        if not source or not str(source):
            continue
        src = Path(source).expanduser().resolve()
        if target == src or (src.is_dir() and src in target.parents):
            where = "is" if target == src else "is inside"
            raise DataError(f"{out}: the output {where} the input {source}; it would be overwritten — choose "
                            "another output path")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames into `folder` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Create or replace `path` atomically from `write(binary file handle)`: temp file beside it, fsync, normal
    permissions, rename, folder fsync. On any error the temp file is removed and an existing `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files `write_atomic` leaves in `folder` when its process was killed mid-write (`.NAME.*.tmp`,
    not recursive). Only for a folder no other process is writing into (a held run folder). Returns them."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return write_atomic(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` into `path` atomically."""
    return write_atomic(path, lambda fh: torch.save(obj, fh))


@contextlib.contextmanager
def atomic_files(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that produce several files: yields a temp folder beside `path`; write `tmp / path.name` (and
    any companion files) there. On success every produced file is fsync'ed, given normal permissions and renamed
    into `path`'s folder (companions before `path` itself, so a header never points at missing data); on error
    nothing is renamed. The temp folder is always removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        produced = sorted(tmp.iterdir(), key=lambda f: (f.name == path.name, f.name))
        for f in produced:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, FILE_MODE)
        for f in produced:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(path.parent)


def safe_load(path: str | os.PathLike) -> Any:
    """torch.load(path, map_location="cpu", weights_only=True) with a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        text = str(exc).strip()
        if "Unsupported global" in text:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects besides tensors; only plain weight files are "
                f"loaded (torch.load weights_only=True), save a state_dict instead"
            ) from None
        if "Weights only load failed" in text or not text:
            reason = "damaged, or not written by torch.save"
        else:
            reason = f"{type(exc).__name__}: {text.splitlines()[0][:200]}"
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch weights file ({reason})") from None
