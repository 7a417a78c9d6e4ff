"""Crash-safe file writing and safe weight loading, used by every part of the engine.

Writes go to a temp file in the same folder, are flushed and fsync'ed, then renamed over the target
(and the folder fsync'ed), so a crash leaves either the old file or the new one, never half of one.
Loads use `torch.load(weights_only=True)`: tensors and plain containers only, never code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from core.errors import CheckpointError


def _atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def write_bytes_atomic(path: str | os.PathLike, write: Callable[[IO], None]) -> None:
    """Create `path` atomically from `write(binary file handle)` (temp file, fsync, rename)."""
    _atomic_write(path, "wb", write)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` into `path` atomically."""
    _atomic_write(path, "wb", lambda fh: torch.save(obj, fh))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    _atomic_write(path, "w", lambda fh: fh.write(text))


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
