"""Crash-safe file writing and safe weight loading, used by every part of the engine (and by bundle scripts).

One mechanism for every writer: the content goes to a temp file in the target's folder, is flushed and fsync'ed,
gets the normal permissions of a new file (0666 minus the umask, so 0644 usually; a bare `mkstemp` would leave
0600), then is renamed over the target and the folder fsync'ed. A crash leaves either the old file or the new
one, never half of one. Writers that produce several files (SimpleITK's .mhd + .raw) write into a temp folder
with `atomic_files` and have each file renamed into place.

When the operating system refuses a write for a reason the user can fix (no permission, a read-only file system,
a full disk, a folder where a file should be, a name too long), every writer here raises `WriteError`: one line
naming the target path and the reason in words; the target keeps its previous content and no temp file is left.

Loads use `torch.load(weights_only=True)`: tensors and plain containers only, never code.

Bundle-portable (standard library, torch and the project's `errors`): export copies this file into bundles.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError, DataError, LorkdError


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
NAME_MAX = 255  # bytes in one file or folder name on the usual file systems (ext4, XFS, APFS, NTFS)


class WriteError(LorkdError):
    """The operating system refused to write a file or create a folder for a reason the user can fix; the message
    names the path and says why in words ("RUN/checkpoints/last.pt: cannot write: no space left on the device")."""


# errno -> the reason in words, for the refusals that come from where the user writes, not from a bug
_REFUSALS = {getattr(errno, name): words for name, words in (
    ("EACCES", "permission denied"),
    ("EPERM", "operation not permitted"),
    ("EROFS", "read-only file system"),
    ("ENOSPC", "no space left on the device (disk full)"),
    ("EDQUOT", "disk quota exceeded"),
    ("EFBIG", "file too large for this file system"),
    ("EISDIR", "it is a folder, not a file"),
    ("ENOTDIR", "a part of the path is a file, not a folder"),
    ("EEXIST", "it exists and is a file, not a folder"),
    ("ENOTEMPTY", "it is a folder that is not empty"),
    ("ENAMETOOLONG", f"a name in the path is too long (at most {NAME_MAX} bytes per name)"),
    ("ELOOP", "too many levels of symbolic links"),
    ("EIO", "input/output error (a failing disk, or a drive or network share that went away?)"),
) if hasattr(errno, name)}
# refusals that say enough without a path (a write() on a full disk names no file)
_PATHLESS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO") if hasattr(errno, name)}


def refusal(exc: BaseException | None) -> OSError | None:
    """The operating system's refusal behind `exc` (itself, or what it was raised from or while handling: torch
    wraps a failed write in a RuntimeError), or None when `exc` is no such refusal (a bug keeps its traceback)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _REFUSALS:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def refusal_reason(exc: OSError) -> str:
    """Why the operating system refused, in words."""
    return _REFUSALS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__)


def describe_refusal(exc: OSError) -> str | None:
    """"PATH: reason in words" for an OSError of the operating system refusing a write or a folder (the path it
    names: the target of a rename), "cannot write: reason" for a full or read-only disk that names no path, and
    None for any other OSError (a bug, whose traceback is kept)."""
    if exc.errno not in _REFUSALS:
        return None
    path = exc.filename2 or exc.filename
    if path is None or path == "":
        return f"cannot write: {refusal_reason(exc)}" if exc.errno in _PATHLESS else None
    return f"{os.fsdecode(path)}: {refusal_reason(exc)}"


def _refused(exc: BaseException, target: str | os.PathLike, action: str = "cannot write") -> WriteError | None:
    """The WriteError for `exc` when the operating system refused writing `target` (or its temp file): "TARGET:
    ACTION: reason"; a refusal about another file (an input a writer reads) names that file. None for anything
    else: an error of the user's that already says what (a LorkdError), an interrupt, a bug."""
    if not isinstance(exc, Exception) or isinstance(exc, LorkdError):
        return None
    found = refusal(exc)
    if found is None:
        return None
    target = Path(target)
    named = [Path(os.fsdecode(n)) for n in (found.filename, found.filename2) if n not in (None, "")]
    ours = [n for n in named if n == target or n in target.parents  # the target, a folder made for it, a temp
            or any(part.startswith(f".{target.name}.") for part in n.parts)]
    if named and not ours:
        return WriteError(describe_refusal(found))
    return WriteError(f"{target}: {action}: {refusal_reason(found)}")


@contextlib.contextmanager
def _refusals(target: str | os.PathLike, action: str = "cannot write") -> Iterator[None]:
    """Turn a refusal of the operating system inside the block into a WriteError about `target`."""
    try:
        yield
    except Exception as exc:
        error = _refused(exc, target, action)
        if error is None:
            raise
        raise error from exc


def writing(target: str | os.PathLike) -> contextlib.AbstractContextManager[None]:
    """A block that writes `target` (not atomically: an append, say): the operating system's refusals inside it
    become a WriteError naming `target`."""
    return _refusals(target)


def make_folder(folder: str | os.PathLike) -> Path:
    """`folder` and its parents created where missing (WriteError when the system refuses)."""
    folder = Path(folder)
    with _refusals(folder, "cannot create the folder"):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raise WriteError, before any work, when `folder` could not be created or written into: it is a file, a name
    in it is too long, a part of its path is a file, or the nearest existing folder on its path is read-only or
    not writable by this user. Creates nothing."""
    folder = Path(folder)
    for name in folder.parts:
        if len(os.fsencode(name)) > NAME_MAX:
            raise WriteError(f"{folder}: cannot create the folder: the name {name[:40]!r}... is "
                             f"{len(os.fsencode(name))} bytes long (at most {NAME_MAX} bytes per name)")
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "it exists and is" if existing == folder else f"{existing} is"
        raise WriteError(f"{folder}: cannot create the folder: {what} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = _REFUSALS[errno.EROFS] if _read_only(existing) else _REFUSALS[errno.EACCES]
        where = "" if existing == folder else f" {existing}"
        raise WriteError(f"{folder}: cannot write into the folder{where}: {reason}")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def _disk_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail == 0 or stats.f_bfree == 0


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
    permissions, rename, folder fsync. On any error the temp file is removed and an existing `path` is untouched;
    when the operating system refused (disk full, read-only, no permission, `path` a folder...) the error is a
    `WriteError` naming `path`."""
    path = Path(path)
    make_folder(path.parent)
    with _refusals(path):
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
    nothing is renamed. The temp folder is always removed. A refusal of the operating system (also one a library
    writer reports in its own words, when the disk is then full) is a `WriteError` naming `path`."""
    path = Path(path)
    make_folder(path.parent)
    with _refusals(path):
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
    except Exception as exc:  # not GeneratorExit / KeyboardInterrupt: those pass unchanged
        error = _refused(exc, path)
        if error is None and not isinstance(exc, LorkdError) and _disk_full(tmp):
            # SimpleITK reports a full disk as a RuntimeError of its own ("could not write")
            error = WriteError(f"{path}: cannot write: {_REFUSALS[errno.ENOSPC]}")
        if error is None:
            raise
        raise error from exc
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
