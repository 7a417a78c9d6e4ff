"""The volume cache of segmentation runs (`data.stream`): each training volume is preprocessed once (RAS canonical
orientation, `data.spacing`, intensity to [0, 1]: `data.load_pair`, the in-RAM path's own function) and stored on
disk, where patches are read from it with bounded memory.

An entry is a folder named by its key: sha256 of (CACHE_FORMAT, the bytes of the image file, or of every file of a
DICOM folder with its relative name, the same of the label map, the preprocessing settings). A changed file or
setting is a new key, so it is preprocessed again; runs with the same files and settings (and torchrun ranks, and
runs on other machines that share the folder) reuse the entry. Old entries are never removed by the app: delete
the folder to reclaim its space.

Entry files: `image.npy` float32 (1, X, Y, Z) — float32, the in-RAM path's dtype, so a streamed run reads exactly
the values an in-RAM run holds (float16 would halve the size at an error up to 2.4e-4 on [0, 1]); `label.npy` uint8
(X, Y, Z) (absent for a label-free task, whose labels come from the foundation model in RAM); `foreground.npy` the
canonical native grid's foreground mask, bits packed along the last axis (for held-out regions); `fg_index.npy` at
most FOREGROUND_CAP flat indices of label > 0 on the working grid (all of them when fewer, else a sample seeded by
the key), what positive-centred patch sampling draws from; `meta.json` the geometry, the reader's warnings and the
label values. An entry is written into a temporary folder and renamed into place in one step, so a reader sees a
whole entry or none; two processes building the same entry waste work at worst (a lock file lets the second wait
for the first where the file system supports locks), a temporary folder left by a killed process is ignored, and an
entry that fails to open is rebuilt.

`CachedArray` maps its file only while a part of it is read: the pages of a mapping held open stay in the
process's resident memory until the kernel reclaims them, which over an epoch would be the whole cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError

CACHE_FORMAT = 1  # bump when what an entry holds, or how it is computed, changes
CACHE_ENV = "LORKD_CACHE"  # the root of the app's caches (shared storage on a cluster), as for MedMNIST
STREAM_AUTO_BYTES = 2 << 30  # data.stream=auto: stream when the prepared volumes would need more RAM than this
IN_RAM_BYTES_PER_VOXEL = 16  # in-RAM path per working-grid voxel: image 4, label and its training copy 2,
# the index of every trainable voxel 8, foreground indices and the native foreground mask ~2
FOREGROUND_CAP = 20_000  # positive patch centres kept per volume (a sample of them when there are more)
_CHUNK = 1 << 22


def cache_root(cache_dir: str | None = None) -> Path:
    """The volume cache folder: `cache_dir` (data.cache_dir), else $LORKD_CACHE/volumes, else
    ~/.cache/lorkd-studio/volumes (beside the MedMNIST cache, `classification.medmnist.cache_dir`)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lorkd-studio"
    return Path(root).expanduser() / "volumes"


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; of a folder (a DICOM series): of each regular file's relative name and bytes, in
    name order (hidden files skipped)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
        for p in files:
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            _hash_file(h, p)
            h.update(b"\0")
    else:
        _hash_file(h, path)
    return h.hexdigest()


def entry_key(image_path: str | Path, label_path: str | Path | None, settings: dict) -> str:
    """The key of a volume's entry: its files' content and the preprocessing settings (see the module docstring)."""
    record = {"format": CACHE_FORMAT, "image": file_digest(image_path),
              "label": file_digest(label_path) if label_path is not None else None, "settings": settings}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class CachedArray:
    """A read-only array in a .npy file, memory-mapped only while `x[index]` copies a part of it out."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran:
            raise DataError(f"{self.path}: not a C-ordered array")
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        if 0 in self.shape:
            return np.zeros(self.shape, self.dtype)[index]
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        try:
            return np.array(mapped[index])
        finally:
            del mapped

    def read(self) -> np.ndarray:
        """The whole array, in RAM."""
        return self[...]

    def __repr__(self) -> str:
        return f"CachedArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


class PackedMask:
    """A boolean (X, Y, Z) mask stored with its bits packed along Z; `mask[box]` unpacks the box only."""

    def __init__(self, path: str | Path, depth: int) -> None:
        self.packed = CachedArray(path)
        self.shape = (*self.packed.shape[:2], int(depth))

    def __getitem__(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        bits = self.packed[box[0], box[1], :]
        return np.unpackbits(bits, axis=-1, count=self.shape[2]).astype(bool)[..., box[2]]


@dataclass
class CacheEntry:
    """An opened entry: memory-mapped arrays and the metadata (`meta.json`)."""

    key: str
    folder: Path
    image: CachedArray
    label: CachedArray | None
    foreground: PackedMask
    fg_index: np.ndarray
    meta: dict


def foreground_sample(label: np.ndarray, key: str, cap: int = FOREGROUND_CAP) -> np.ndarray:
    """Sorted flat indices of `label > 0`: all of them, or `cap` of them drawn by a generator seeded by `key`."""
    index = np.flatnonzero(np.asarray(label).reshape(-1) > 0)
    if len(index) > cap:
        rng = np.random.default_rng(int(key[:16], 16))
        index = np.sort(rng.choice(index, size=cap, replace=False))
    return index.astype(np.int64)


class VolumeCache:
    """The cache folder of a run; counts the volumes it preprocessed (`prepared`) and found ready (`reused`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.prepared = 0
        self.reused = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the volume cache folder {self.root} ({exc.strerror or exc}); set "
                            f"data.cache_dir or {CACHE_ENV} to a writable folder") from None

    def summary(self) -> str:
        return f"volume cache {self.root}: preprocessed {self.prepared} volume(s), reused {self.reused}"

    def get(self, key: str, build: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> CacheEntry:
        """The entry `key`, built first when missing or unreadable: `build()` gives (arrays by file stem: image,
        label (optional), foreground (packed), fg_index; metadata)."""
        entry = self.open(key)
        if entry is not None:
            self.reused += 1
            return entry
        with self._lock(key):
            entry = self.open(key)  # another process may have built it while this one waited
            if entry is not None:
                self.reused += 1
                return entry
            if (self.root / key).exists():  # an entry that does not open: moved away (under the lock, so never
                self._discard(self.root / key)  # another process's entry written meanwhile)
            arrays, meta = build()
            self._write(key, arrays, meta)
            self.prepared += 1
        entry = self.open(key)
        if entry is None:
            raise DataError(f"the volume cache entry {self.root / key} could not be read back after writing it")
        return entry

    def open(self, key: str) -> CacheEntry | None:
        """The entry `key`, or None when it does not exist or does not open (damaged by hand, a disk error: `get`
        rebuilds it)."""
        folder = self.root / key
        if not (folder / "meta.json").is_file():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError("format")
            image = CachedArray(folder / "image.npy")
            label = CachedArray(folder / "label.npy") if meta.get("has_label") else None
            foreground = PackedMask(folder / "foreground.npy", meta["canonical_shape"][2])
            fg_index = np.load(folder / "fg_index.npy")
            if (image.shape != (1, *meta["work_shape"]) or image.dtype != np.float32
                    or (label is not None and (label.shape != image.shape[1:] or label.dtype != np.uint8))
                    or list(foreground.shape) != list(meta["canonical_shape"])):
                raise ValueError("shape")
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        return CacheEntry(key, folder, image, label, foreground, fg_index, meta)

    def _write(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        tmp = self.root / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            for stem, array in arrays.items():
                with open(tmp / f"{stem}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(array))
                    f.flush()
                    os.fsync(f.fileno())
            with open(tmp / "meta.json", "w") as f:
                json.dump({**meta, "format": CACHE_FORMAT, "key": key}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, self.root / key)
            except OSError:
                if self.open(key) is None:  # not another process's whole entry: a real failure
                    raise
        except OSError as exc:
            raise DataError(f"cannot write the volume cache entry {self.root / key} ({exc.strerror or exc}); "
                            f"check the free space, or set data.cache_dir or {CACHE_ENV}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _discard(self, folder: Path) -> None:
        trash = folder.with_name(f".tmp-discard-{folder.name[:16]}-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(OSError):
            os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on the entry's lock file where the platform and file system have one (else none:
        the atomic rename alone keeps entries whole)."""
        try:
            import fcntl
            handle = open(self.root / f".{key[:32]}.lock", "a")  # noqa: SIM115 (closed below)
        except (ImportError, OSError):
            yield
            return
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()


def size_on_disk(root: str | Path) -> int:
    """Bytes of the cache's entries."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def header_voxels(path: str | Path, spacing: Sequence[float]) -> float:
    """About how many voxels a volume has on a working grid of `spacing` mm, from its header (NIfTI, NRRD,
    MetaImage) without reading its voxels; other files (DICOM) from their size on disk (2 bytes a voxel)."""
    from core.io.itk import ITK_READERS
    from core.io.sniff import extension

    path = Path(path)
    if path.is_file() and extension(path) in ITK_READERS:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetImageIO(ITK_READERS[extension(path)][0])
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
            size, native = reader.GetSize()[:3], reader.GetSpacing()[:3]
            return float(np.prod(size) * np.prod(native) / np.prod(spacing))  # a product: axis order is moot
        except RuntimeError:
            pass  # the reader reports a damaged file properly later
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2
