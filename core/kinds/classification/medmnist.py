"""Reader for MedMNIST `.npz` files (the paper's benchmark format; users bring their own copies).

A file holds exactly six arrays: `train_images`, `train_labels`, `val_images`, `val_labels`,
`test_images`, `test_labels`. Images are uint8: 2D grey `(N, S, S)`, 2D RGB `(N, S, S, 3)` or 3D
`(N, S, S, S)`. Labels are `(N, 1)` integers (multi-class), `(N, C)` 0/1 columns (multi-label, e.g.
chestmnist) or flat `(N,)` integers.

`inspect_medmnist` checks a file without reading its images (array headers only, plus the small
label arrays); `read_split` returns one split. Every problem raises `DataError` with a one-line
message that starts with the file's path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import DataError
from core.files import write_atomic

SPLITS = ("train", "val", "test")
ARRAYS = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))

# Class (or label-column) counts of the official MedMNIST v2 subsets, keyed by flag.
MEDMNIST_CLASSES: dict[str, int] = {
    "pathmnist": 9,
    "chestmnist": 14,
    "dermamnist": 7,
    "octmnist": 4,
    "pneumoniamnist": 2,
    "retinamnist": 5,
    "breastmnist": 2,
    "bloodmnist": 8,
    "tissuemnist": 8,
    "organamnist": 11,
    "organcmnist": 11,
    "organsmnist": 11,
    "organmnist3d": 11,
    "nodulemnist3d": 2,
    "adrenalmnist3d": 2,
    "fracturemnist3d": 3,
    "vesselmnist3d": 2,
    "synapsemnist3d": 2,
}


@dataclass
class MedMNISTInfo:
    """What `inspect_medmnist` found in a file.

    kind: "multiclass" or "multilabel"; num_classes: classes (multiclass) or label columns
    (multilabel); rgb: 2D colour images; spatial_dims: 2 or 3; size: the side S of the images;
    counts: number of samples per split; flag: the MedMNIST subset the file name starts with, if any.
    """

    path: str
    kind: str
    num_classes: int
    rgb: bool
    spatial_dims: int
    size: int
    counts: dict[str, int] = field(default_factory=dict)
    flag: str | None = None


def medmnist_flag(path: str | Path) -> str | None:
    """The MedMNIST flag the file name starts with (`pathmnist_64.npz` -> "pathmnist"), or None."""
    name = Path(path).name.lower()
    for flag in sorted(MEDMNIST_CLASSES, key=len, reverse=True):
        if name.startswith(flag):
            return flag
    return None


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {' '.join(problem.split())}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_archive(path: Path) -> None:
    if not path.exists():
        raise _fail(path, "no such file")
    if not path.is_file():
        raise _fail(path, "not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes); not a MedMNIST .npz file")
    if not zipfile.is_zipfile(path):
        raise _fail(path, "not a MedMNIST .npz file (not a zip archive)")


def _read_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every `.npy` member, read from the headers only (no array data)."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    shape, _, dtype = _npy_header(f)
                headers[member[: -len(".npy")]] = (shape, dtype)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as error:
        # zlib.error: a damaged compressed member (np.savez_compressed files)
        raise _fail(path, f"corrupt .npz archive ({_one_line(error)})") from error
    return headers


def _load(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read the named arrays (never unpickling anything)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False, mmap_mode="r") as npz:
            for name in names:
                arrays[name] = np.asarray(npz[name])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
        raise _fail(path, f"cannot read its arrays ({_one_line(error)})") from error
    except Exception as error:  # zlib.error and friends from a damaged member
        raise _fail(path, f"cannot read its arrays ({_one_line(error)})") from error
    return arrays


def cache_dir() -> Path:
    """Where compressed MedMNIST members are unpacked for memory mapping ($LORKD_CACHE or ~/.cache/lorkd-studio)."""
    root = os.environ.get("LORKD_CACHE") or Path.home() / ".cache" / "lorkd-studio"
    return Path(root) / "medmnist"


def open_array(path: str | Path, name: str) -> np.ndarray:
    """A read-only memory map of the `name` array of an .npz file; its data never has to fit in RAM.

    An uncompressed member (np.savez) is mapped in place inside the archive. A compressed one
    (np.savez_compressed, as the MedMNIST downloads) is unpacked once into a `.npy` file in
    `cache_dir()`, keyed by the archive's path, size and modification time, and mapped from there.
    """
    path = Path(path).resolve()
    member = f"{name}.npy"
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            if info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)
                    if local[:4] != b"PK\x03\x04":
                        raise ValueError(f"bad local header for {member}")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    f.seek(start)
                    shape, fortran, dtype = _npy_header(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise ValueError(f"{member} holds Python objects")
                order = "F" if fortran else "C"
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            stat = path.stat()
            key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{member}".encode()).hexdigest()[:20]
            target = cache_dir() / f"{path.stem}-{name}-{key}.npy"
            if not target.is_file():
                with archive.open(member) as src:
                    write_atomic(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 22))
        return np.load(target, mmap_mode="r", allow_pickle=False)
    except KeyError as error:
        raise _fail(path, f"has no array {name!r}") from error
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as error:
        raise _fail(path, f"cannot map array {name!r} ({_one_line(error)})") from error


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # (3, 0): utf-8 field names; same header layout as 2.0
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype)


def _image_geometry(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[bool, int, int]:
    """(rgb, spatial_dims, size) of an images array, checked."""
    if dtype != np.uint8:
        raise _fail(path, f"{name} has dtype {dtype}, expected uint8 images")
    if len(shape) == 3 and shape[1] == shape[2]:
        return False, 2, shape[1]
    if len(shape) == 4 and shape[3] == 3 and shape[1] == shape[2] and shape[1] != 3:
        return True, 2, shape[1]
    if len(shape) == 4 and shape[1] == shape[2] == shape[3]:
        return False, 3, shape[1]
    raise _fail(
        path,
        f"{name} has shape {shape}; expected (N, S, S) grey, (N, S, S, 3) RGB or (N, S, S, S) 3D images",
    )


def _labels_2d(path: Path, name: str, labels: np.ndarray) -> np.ndarray:
    """Labels as an (N, C) int64 array; flat (N,) becomes (N, 1)."""
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[1] < 1:
        raise _fail(path, f"{name} has shape {labels.shape}; expected (N,), (N, 1) or (N, C) labels")
    if labels.dtype == np.bool_:
        return labels.astype(np.int64)
    if labels.dtype.kind in "iu":
        if labels.dtype.kind == "u" and labels.size and int(labels.max()) > np.iinfo(np.int64).max:
            raise _fail(path, f"{name} holds label {int(labels.max())}, too large for a class index")
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        if labels.size and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise _fail(path, f"{name} holds non-integer values; expected integer class labels")
        return labels.astype(np.int64)
    raise _fail(path, f"{name} has dtype {labels.dtype}; expected integer labels")


def inspect_medmnist(path: str | Path, num_classes: int | None = None) -> MedMNISTInfo:
    """Check a MedMNIST `.npz` file and describe it, without reading its images.

    The class count is the MedMNIST table's when the file name starts with a known flag
    (`pathmnist.npz`, `organmnist3d_64.npz`), else `num_classes` when given, else the largest
    label + 1 over all splits. Multi-label files (labels (N, C) with C > 1) have C labels (and a given
    `num_classes` must equal C).
    Raises `DataError` naming the file for anything that does not fit the format.
    """
    path = Path(path)
    _check_archive(path)
    headers = _read_headers(path)
    missing = [name for name in ARRAYS if name not in headers]
    if missing:
        raise _fail(path, f"missing arrays {', '.join(missing)} (a MedMNIST file has {', '.join(ARRAYS)})")
    for name in ARRAYS:
        if headers[name][1].hasobject:
            raise _fail(path, f"{name} is a pickled object array; only plain numeric arrays are accepted")
    geometry = None
    counts: dict[str, int] = {}
    for split in SPLITS:
        name = f"{split}_images"
        shape, dtype = headers[name]
        if not shape or shape[0] == 0:
            raise _fail(path, f"the {split} split is empty ({name} has shape {shape})")
        split_geometry = _image_geometry(path, name, shape, dtype)
        if geometry is None:
            geometry = split_geometry
        elif split_geometry != geometry:
            raise _fail(path, f"{name} has shape {shape}, which does not match train_images "
                        f"{headers['train_images'][0]}")
        counts[split] = shape[0]
    assert geometry is not None
    rgb, spatial_dims, size = geometry

    labels = _load(path, [f"{split}_labels" for split in SPLITS])
    columns = None
    for split in SPLITS:
        name = f"{split}_labels"
        lab = _labels_2d(path, name, labels[name])
        labels[name] = lab
        if lab.shape[0] != counts[split]:
            raise _fail(path, f"{split}_images has {counts[split]} images but {name} has {lab.shape[0]} labels")
        if columns is None:
            columns = lab.shape[1]
        elif lab.shape[1] != columns:
            raise _fail(path, f"{name} has {lab.shape[1]} label columns but train_labels has {columns}")
    assert columns is not None
    kind = "multilabel" if columns > 1 else "multiclass"
    flag = medmnist_flag(path)

    if kind == "multilabel":
        for name, lab in labels.items():
            bad = lab[(lab != 0) & (lab != 1)]
            if bad.size:
                raise _fail(path, f"multi-label values must be 0 or 1, found {int(bad[0])} in {name}")
        if flag is not None and columns != MEDMNIST_CLASSES[flag]:
            raise _fail(path, f"{columns} label columns, but {flag} has {MEDMNIST_CLASSES[flag]} labels")
        if num_classes is not None and columns != int(num_classes):
            raise _fail(path, f"{columns} label columns, but {int(num_classes)} labels are configured")
        classes = columns
    else:
        for name, lab in labels.items():
            if lab.min() < 0:
                raise _fail(path, f"negative label {int(lab.min())} in {name}")
        top = max(int(lab.max()) for lab in labels.values())
        if flag is not None:
            classes, owner = MEDMNIST_CLASSES[flag], flag
        elif num_classes is not None:
            classes, owner = int(num_classes), "the configured labels"
        else:
            classes, owner = top + 1, ""
        if top >= classes:
            name = next(n for n, lab in labels.items() if int(lab.max()) == top)
            raise _fail(path, f"label {top} out of range 0..{classes - 1} for {owner} (in {name})")
        if classes < 2:
            raise _fail(path, "all labels are 0; a classification task needs at least 2 classes")
    return MedMNISTInfo(
        path=str(path),
        kind=kind,
        num_classes=classes,
        rgb=rgb,
        spatial_dims=spatial_dims,
        size=size,
        counts=counts,
        flag=flag,
    )


def read_split(
    path: str | Path, split: str, num_classes: int | None = None, stream: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split (`train`, `val` or `test`), checked as in `inspect_medmnist`.

    Returns the uint8 images as stored ((N, S, S), (N, S, S, 3) or (N, S, S, S)) and the labels:
    int64 (N,) class indices for a multi-class file, float32 (N, C) 0/1 for a multi-label one.
    stream: the images come back as a read-only memory map (`open_array`) instead of in RAM.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    info = inspect_medmnist(path, num_classes)
    if stream:
        arrays = _load(path, [f"{split}_labels"])
        images = open_array(path, f"{split}_images")
    else:
        arrays = _load(path, [f"{split}_images", f"{split}_labels"])
        images = arrays[f"{split}_images"]
    labels = _labels_2d(path, f"{split}_labels", arrays[f"{split}_labels"])
    if info.kind == "multiclass":
        return images, labels[:, 0].astype(np.int64)
    return images, labels.astype(np.float32)
