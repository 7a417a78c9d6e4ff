"""Volume IO: read DICOM series/files, NIfTI, NRRD, MetaImage and 2D images into one `Volume` type with its
physical geometry, and write volumes and label maps back with exactly that geometry.

Conventions (those of SimpleITK / ITK / DICOM):
- `Volume.array` is indexed `[z, y, x]` (SimpleITK's index order reversed); RGB adds a last axis of 3.
- `spacing`, `origin` and `direction` are SimpleITK's: spacing `(x, y, z)` in mm, origin in LPS mm (patient Left,
  Posterior, Superior are +), direction the 3x3 matrix of axis cosines in row-major order (column j is the world
  direction of index axis j). NIfTI files store RAS; ITK converts on read and write, so a NIfTI affine equals
  `diag(-1, -1, 1, 1) @ [[D * spacing, origin], [0, 1]]`.
- Problems the user can fix (missing, damaged or unsupported files) raise `core.errors.DataError` with one line that
  names the file. Recoverable oddities (non-uniform slice spacing, gantry tilt, several series in a folder, 4D
  inputs) become strings in `Volume.warnings`.

NIfTI headers hold geometry as float32, so geometry written to NIfTI round-trips to float32 precision (about 1e-7
relative); NRRD and MetaImage round-trip exactly.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings as _pywarnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import DataError
from ..files import atomic_files

__all__ = [
    "LABEL_MAP_EXTENSIONS",
    "READ_EXTENSIONS",
    "SeriesInfo",
    "Volume",
    "list_series",
    "orientation_code",
    "read_volume",
    "write_label_map",
    "write_volume",
]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# extension -> (ITK ImageIO, human name)
_ITK_READERS = {
    ".nii": ("NiftiImageIO", "NIfTI"),
    ".nii.gz": ("NiftiImageIO", "NIfTI"),
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".nhdr": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
}
_IMAGE_2D = (".png", ".jpg", ".jpeg")
_DICOM_EXTS = ("", ".dcm", ".dicom", ".ima")
# what read_volume opens (plus DICOM files without extension and DICOM folders), e.g. for file-dialog filters
READ_EXTENSIONS = tuple(_ITK_READERS) + (".dcm",) + _IMAGE_2D + (".npy",)
LABEL_MAP_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")

# files a folder scan never opens as DICOM
_NOT_DICOM_EXTS = {
    ".nii", ".gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".raw", ".zraw", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
    ".tif", ".tiff", ".npy", ".npz", ".txt", ".md", ".json", ".csv", ".xml", ".html", ".htm", ".pdf", ".zip", ".py",
    ".yaml", ".yml", ".pt", ".pth", ".log", ".dump", ".icc", ".ini", ".exe", ".dll", ".so",
}
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


# ----------------------------------------------------------------------------------------------------- data types


@dataclass(eq=False)
class Volume:
    """Voxels plus physical geometry. `array` is `(Z, Y, X)` (2D images `(1, Y, X)`, RGB `(..., 3)`)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 2:
            array = array[None]
        if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
            raise ValueError(f"Volume.array must be (Z, Y, X) or (Z, Y, X, 3), got shape {array.shape}")
        self.array = array
        self.spacing = _float_tuple(self.spacing, 3, "spacing")
        if any(not s > 0 for s in self.spacing):
            raise ValueError(f"Volume.spacing must be positive, got {self.spacing}")
        self.origin = _float_tuple(self.origin, 3, "origin")
        self.direction = _float_tuple(self.direction, 9, "direction")
        if abs(np.linalg.det(self._matrix)) < 1e-6:
            raise ValueError(f"Volume.direction is singular: {self.direction}")
        self.metadata = {str(k): str(v) for k, v in (self.metadata or {}).items()}
        for key in ("modality", "description", "source"):
            self.metadata.setdefault(key, "")
        self.warnings = [str(w) for w in (self.warnings or [])]

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Size in SimpleITK order: (X, Y, Z)."""
        return (int(self.array.shape[2]), int(self.array.shape[1]), int(self.array.shape[0]))

    @property
    def _matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self, ijk: Any) -> np.ndarray:
        """Continuous index `(i, j, k) = (x, y, z)` (shape `(3,)` or `(N, 3)`) -> LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self._matrix.T

    def world_to_index(self, xyz: Any) -> np.ndarray:
        """LPS mm (shape `(3,)` or `(N, 3)`) -> continuous index `(i, j, k) = (x, y, z)` (not rounded)."""
        xyz = np.asarray(xyz, dtype=float)
        return ((xyz - np.asarray(self.origin)) @ np.linalg.inv(self._matrix).T) / np.asarray(self.spacing)

    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        elif array.dtype == np.float16:
            array = array.astype(np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=self.is_rgb)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(
        cls, image: sitk.Image, metadata: dict[str, str] | None = None, warnings: list[str] | None = None
    ) -> Volume:
        """Wrap a SimpleITK image: 2D becomes one slice, 4D+ keeps the first volume (with a warning), RGBA and
        other multi-component pixels keep RGB / the first component (with a warning)."""
        warnings = list(warnings or [])
        name = (metadata or {}).get("source") or "image"
        dim = image.GetDimension()
        if dim == 2:
            image = sitk.JoinSeries(image)
        elif dim > 3:
            size = image.GetSize()
            n = math.prod(size[3:])
            image = sitk.Extract(image, list(size[:3]) + [0] * (dim - 3), [0] * dim)
            if n > 1:
                warnings.append(f"{dim}D image {name}: first of {n} volumes read")
        if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
            image = sitk.ComplexToModulus(image)
            warnings.append(f"complex image {name}: magnitude read")
        md = _sitk_dicom_metadata(image)
        md.update(metadata or {})
        array = sitk.GetArrayFromImage(image)
        components = image.GetNumberOfComponentsPerPixel()
        if components > 1:
            if components == 4:
                array = array[..., :3]
                warnings.append(f"{name}: alpha channel dropped (RGBA read as RGB)")
            elif components != 3:
                array = array[..., 0]
                warnings.append(f"{name}: {components} components per voxel, only the first read")
        return cls(
            array=array,
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            metadata=md,
            warnings=warnings,
        )


@dataclass
class SeriesInfo:
    """One DICOM image series in a folder. `size`/`spacing` are (x, y, z) as `read_volume` will give them, and
    `files` are the files it will read, in physical slice order."""

    uid: str
    description: str
    modality: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    files: list[str]


# ---------------------------------------------------------------------------------------------------- public API


def orientation_code(direction: Any) -> str:
    """Three-letter code of the axes' directions, ITK/DICOM convention: identity -> "LPS", diag(-1,-1,1) -> "RAS".
    Oblique directions get the closest code. Accepts 9 values (row-major) or a 3x3 matrix (4 values for 2D)."""
    d = np.asarray(direction, dtype=float).ravel()
    if d.size == 4:
        d = np.array([d[0], d[1], 0, d[2], d[3], 0, 0, 0, 1], dtype=float)
    if d.size != 9:
        raise ValueError(f"direction needs 9 values (3x3), got {d.size}")
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in d])


def read_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read a file (NIfTI, NRRD, MetaImage, DICOM, PNG/JPEG, .npy) or a folder of DICOM files.

    For a folder, `series_uid` chooses the series (default: the largest, with a warning naming the others).
    It is ignored for files.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return _read_dicom_folder(p, series_uid)
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    ext = _extension(p)
    if ext in _ITK_READERS:
        io, kind = _ITK_READERS[ext]
        _check_content(p, ext, kind)
        return _read_itk_file(p, io, kind)
    if ext in _IMAGE_2D:
        _check_content(p, ext, "PNG" if ext == ".png" else "JPEG")
        return _read_2d_image(p)
    if ext == ".npy":
        _check_content(p, ext, "NumPy .npy")
        return _read_npy(p)
    if ext in _DICOM_EXTS or _sniff(p) == "a DICOM file":
        return _read_dicom_file(p)
    raise DataError(
        f"{p}: unsupported file type '{ext or p.name}' (readable: {', '.join(READ_EXTENSIONS)}, DICOM files without "
        f"extension and DICOM folders)"
    )


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM image series under `folder` (recursive), sorted by description then uid; [] if none."""
    p = Path(folder).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such folder")
    if not p.is_dir():
        raise DataError(f"{p}: not a folder (list_series lists the DICOM series in a folder)")
    series, _ = _scan_dicom_folder(p)
    infos = [_plan_series(uid, slices, p).info for uid, slices in series.items()]
    return sorted(infos, key=lambda s: (s.description.lower(), s.uid))


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write `volume` to any SimpleITK-writable file (.nii.gz, .nrrd, .mha, ...) with its exact geometry, atomically."""
    p = Path(path).expanduser()
    image = volume.to_sitk()
    if _extension(p) in _IMAGE_2D + (".bmp", ".tif", ".tiff") and image.GetSize()[2] == 1:
        image = image[:, :, 0]  # 2D formats take a single slice as a 2D image
    _write_image_atomic(image, p)
    return p


def write_label_map(labels: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write integer labels shaped like `reference.array` (Z, Y, X) as uint8/uint16 with the reference's size,
    spacing, origin and direction, atomically. NIfTI (.nii/.nii.gz); .nrrd and .mha are accepted too."""
    p = Path(path).expanduser()
    if _extension(p) not in LABEL_MAP_EXTENSIONS:
        raise DataError(f"{p}: label maps are written as NIfTI (.nii.gz or .nii), NRRD (.nrrd) or MetaImage (.mha)")
    labels = np.asarray(labels)
    expected = reference.array.shape[:3]
    if labels.shape != expected:
        raise ValueError(f"labels have shape {labels.shape}, the reference volume (Z, Y, X) is {expected}")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    elif labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be whole numbers (got non-integer floats)")
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    low = labels.min() if labels.size else 0
    high = labels.max() if labels.size else 0
    if low < 0:
        raise ValueError(f"labels must be >= 0, got {low}")
    if high > np.iinfo(np.uint16).max:
        raise ValueError(f"labels must be <= 65535 to fit uint16, got {high}")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(dtype, copy=False)))
    image.SetSpacing(reference.spacing)
    image.SetOrigin(reference.origin)
    image.SetDirection(reference.direction)
    _write_image_atomic(image, p)
    return p


# ------------------------------------------------------------------------------------------------ small helpers


def _float_tuple(values: Any, n: int, name: str) -> tuple[float, ...]:
    flat = np.asarray(values, dtype=float).ravel()
    if flat.size != n or not np.all(np.isfinite(flat)):
        raise ValueError(f"Volume.{name} needs {n} finite numbers, got {values!r}")
    return tuple(float(v) for v in flat)


def _extension(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return p.suffix.lower()


def _itk_message(exc: BaseException) -> str:
    """The useful line of an ITK exception (they span several lines with source locations)."""
    text = str(exc)
    for line in text.splitlines():
        if "ITK ERROR" in line:
            msg = line.split("):", 1)[-1].strip() if "):" in line else line.strip()
            return msg[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "sitk::ERROR" not in ln]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _head(p: Path, n: int = 4096) -> bytes:
    with open(p, "rb") as fh:
        return fh.read(n)


def _describe_bytes(head: bytes) -> str:
    """What a file's first bytes look like, for error messages."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (e.g. .npz)"
    if head.startswith(b"NRRD"):
        return "an NRRD image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if _nifti_header(head) is not None:
        return "a NIfTI image"
    if b"DimSize" in head and b"ElementType" in head:
        return "a MetaImage"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _sniff(p: Path) -> str:
    try:
        return _describe_bytes(_head(p, 1024))
    except OSError:
        return "unreadable"


def _nifti_header(head: bytes) -> dict[str, Any] | None:
    """Parse the fields of a NIfTI-1/2 header needed to know the file's full size; None if not NIfTI."""
    if len(head) < 348:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
            dims = struct.unpack(endian + "8h", head[40:56])
            (bitpix,) = struct.unpack(endian + "h", head[72:74])
            (vox_offset,) = struct.unpack(endian + "f", head[108:112])
            return {"dims": dims, "bitpix": bitpix, "vox_offset": vox_offset, "single": head[344:347] == b"n+1"}
        if sizeof_hdr == 540 and len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"):
            (bitpix,) = struct.unpack(endian + "h", head[14:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (vox_offset,) = struct.unpack(endian + "q", head[168:176])
            return {"dims": dims, "bitpix": bitpix, "vox_offset": vox_offset, "single": head[4:7] == b"n+2"}
    return None


def _check_content(p: Path, ext: str, kind: str) -> None:
    """Reject files whose content does not match their extension, and truncated NIfTI files (ITK reads those
    silently, filling the missing voxels with zeros)."""
    head = _head(p)
    looks = _describe_bytes(head)
    if ext in (".nii", ".nii.gz"):
        _check_nifti(p, head, looks)
    elif ext in (".nrrd", ".nhdr") and looks != "an NRRD image":
        raise DataError(f"{p}: not an NRRD file (the content is {looks})")
    elif ext in (".mha", ".mhd") and looks != "a MetaImage":
        raise DataError(f"{p}: not a MetaImage file (the content is {looks})")
    elif ext == ".png" and looks != "a PNG image":
        raise DataError(f"{p}: not a PNG file (the content is {looks})")
    elif ext in (".jpg", ".jpeg") and looks != "a JPEG image":
        raise DataError(f"{p}: not a JPEG file (the content is {looks})")
    elif ext == ".npy" and looks != "a NumPy .npy array":
        raise DataError(f"{p}: not a NumPy .npy file (the content is {looks})")


def _check_nifti(p: Path, head: bytes, looks: str) -> None:
    compressed = head.startswith(b"\x1f\x8b")
    if compressed:
        try:
            with gzip.open(p, "rb") as fh:
                inner = fh.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{p}: damaged gzip-compressed NIfTI file ({exc})") from None
        header = _nifti_header(inner)
        if header is None:
            raise DataError(f"{p}: not a NIfTI file (gzip-compressed, but the content is {_describe_bytes(inner)})")
    else:
        header = _nifti_header(head)
        if header is None:
            if len(head) < 348 and looks in ("unrecognised binary data", "text"):
                raise DataError(f"{p}: truncated NIfTI file ({len(head)} bytes, shorter than a NIfTI header)")
            raise DataError(f"{p}: not a NIfTI file (the content is {looks})")
    if not header["single"]:
        return  # .hdr/.img pair: the voxels are in another file
    dims = header["dims"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise DataError(f"{p}: damaged NIfTI header (dim[0] = {ndim})")
    nvox = math.prod(max(int(d), 1) for d in dims[1 : ndim + 1])
    needed = int(header["vox_offset"]) + nvox * max(int(header["bitpix"]), 1) // 8
    if compressed:
        total = 0
        try:
            with gzip.open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    total += len(chunk)
        except EOFError:
            raise DataError(f"{p}: truncated NIfTI file (the compressed data ends early)") from None
        except (OSError, zlib.error) as exc:
            raise DataError(f"{p}: damaged gzip-compressed NIfTI file ({exc})") from None
    else:
        total = p.stat().st_size
    if total < needed:
        raise DataError(f"{p}: truncated NIfTI file ({total} bytes of data, the header needs {needed})")


# ---------------------------------------------------------------------------------------- ITK, 2D images, npy


def _read_itk_file(p: Path, io: str, kind: str) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io)
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{p}: unreadable {kind} header ({_itk_message(exc)})") from None
    warnings = []
    dim, size = reader.GetDimension(), reader.GetSize()
    volumes = 1
    if dim > 3:
        volumes = math.prod(size[3:])
        reader.SetExtractIndex([0] * dim)
        reader.SetExtractSize(list(size[:3]) + [0] * (dim - 3))
        if volumes > 1:
            warnings.append(f"{dim}D image {p}: first of {volumes} volumes read")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{p}: damaged or truncated {kind} file ({_itk_message(exc)})") from None
    description = ""
    for key in ("descrip", "content", "ITK_FileNotes"):
        if image.HasMetaDataKey(key) and image.GetMetaData(key).strip():
            description = image.GetMetaData(key).strip()
            break
    metadata = {"source": str(p), "description": description, "modality": "", "volumes": str(volumes),
                "stored_size": " x ".join(map(str, size[:3]))}
    nonfinite = _nifti_nonfinite(p) if kind == "NIfTI" else 0
    if nonfinite:
        metadata["nonfinite_voxels"] = str(nonfinite)
        warnings.append(f"{p}: {nonfinite} NaN or infinite voxel(s), read as 0")
    return Volume.from_sitk(image, metadata, warnings)


def _nifti_nonfinite(p: Path) -> int:
    """NaN/Inf voxels of a floating-point NIfTI file. ITK's NIfTI reader silently turns them into 0, so
    they are counted on the stored data (nibabel, read only for float files)."""
    import nibabel as nib

    try:
        image = nib.load(str(p))
        if image.header.get_data_dtype().kind not in "fc":
            return 0
        data = np.asanyarray(image.dataobj)
    except Exception:  # noqa: BLE001 - SimpleITK read the file; an odd header for nibabel is not our problem
        return 0
    return int(np.count_nonzero(~np.isfinite(data)))


def _read_2d_image(p: Path) -> Volume:
    from PIL import Image, ImageOps

    warnings: list[str] = []
    try:
        with Image.open(p) as im:
            if getattr(im, "n_frames", 1) > 1:
                warnings.append(f"{p}: animated image, first of {im.n_frames} frames read")
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info):
                warnings.append(f"{p}: alpha channel dropped")
            if mode in ("1", "LA", "La"):
                im = im.convert("L")
            elif mode not in ("L", "I", "F", "RGB") and not mode.startswith("I;16"):
                im = im.convert("RGB")
            array = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{p}: unreadable or truncated image ({exc})") from None
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return Volume(np.ascontiguousarray(array)[None], metadata={"source": str(p)}, warnings=warnings)


def _read_npy(p: Path) -> Volume:
    try:
        array = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{p}: unreadable .npy file ({exc})") from None
    warnings: list[str] = []
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind not in "iuf":
        raise DataError(f"{p}: .npy array of dtype {array.dtype} is not an image (need numbers)")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):  # (Y, X, 3) RGB / RGBA photo
        if array.shape[-1] == 4:
            warnings.append(f"{p}: alpha channel dropped")
        array = array[None, ..., :3]
    elif array.ndim == 3:
        warnings.append(f"{p}: .npy volume has no geometry; read as (Z, Y, X) with 1 mm spacing")
    elif not (array.ndim == 4 and array.shape[-1] == 3):
        raise DataError(f"{p}: .npy array of shape {array.shape} is not an image ((Y, X), (Y, X, 3) or (Z, Y, X))")
    return Volume(np.ascontiguousarray(array), metadata={"source": str(p)}, warnings=warnings)


def _write_image_atomic(image: sitk.Image, p: Path) -> None:
    """Write with SimpleITK through `files.atomic_files` (a .mhd/.raw pair is renamed data first); a failure leaves
    the old file(s) untouched and is reported as a DataError naming the file."""
    try:
        with atomic_files(p) as tmp:
            try:
                sitk.WriteImage(image, str(tmp / p.name), True)
            except RuntimeError as exc:
                if "Unable to determine ImageIO" in str(exc):
                    raise DataError(
                        f"{p}: cannot write '{_extension(p) or p.name}' files (use .nii.gz, .nrrd or .mha)"
                    ) from None
                raise DataError(f"{p}: cannot write ({_itk_message(exc)})") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot write ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------------------- DICOM


_SITK_DICOM_TAGS = {
    "modality": "0008|0060",
    "description": "0008|103e",
    "series_uid": "0020|000e",
    "patient_id": "0010|0020",
    "study_date": "0008|0020",
}


def _sitk_dicom_metadata(image: sitk.Image) -> dict[str, str]:
    md = {}
    for key, tag in _SITK_DICOM_TAGS.items():
        if image.HasMetaDataKey(tag):
            value = image.GetMetaData(tag).strip()
            if value:
                md[key] = value
    return md


@dataclass
class _Slice:
    path: str
    series_uid: str
    sop_class: str
    sop_name: str
    modality: str
    description: str
    rows: int
    cols: int
    frames: int
    samples: int
    has_pixels: bool
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None  # (row spacing = y, column spacing = x)
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness
    instance: int
    slope: float
    intercept: float
    dose_scaling: float | None
    extra: dict[str, str]


def _ds_float(ds: Any, keyword: str) -> float | None:
    """First value of a numeric attribute as float (multi-valued ones give their first), None if absent/bad."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__"):
            value = value[0]
        value = float(value)
        return value if math.isfinite(value) else None
    except (TypeError, ValueError, IndexError):
        return None


def _ds_floats(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    try:
        value = ds.get(keyword)
        if value is None:
            return None
        arr = np.array([float(v) for v in value], dtype=float)
        return arr if arr.size == n and np.all(np.isfinite(arr)) else None
    except (TypeError, ValueError):
        return None


def _ds_str(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom raises on some malformed values
        return ""
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _read_slice(path: Path, force: bool) -> _Slice | None:
    """Header facts of one DICOM file (pixel data not loaded), or None if it is not DICOM."""
    import pydicom

    with _pywarnings.catch_warnings():
        _pywarnings.simplefilter("ignore")  # pydicom warns about every odd value in foreign files
        try:
            ds = pydicom.dcmread(path, defer_size=1024, force=force)
            return _slice_from_header(path, ds)
        except Exception:  # pydicom raises many types on foreign or malformed files
            return None


def _slice_from_header(path: Path, ds: Any) -> _Slice | None:
    sop_uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    sop = str(sop_uid or "").strip()
    rows = int(_ds_float(ds, "Rows") or 0)
    cols = int(_ds_float(ds, "Columns") or 0)
    if not sop and not (rows and cols) and not _ds_str(ds, "Modality"):
        return None  # force-parsed junk
    sop_name = getattr(sop_uid, "name", "") if sop else ""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    extra = {}
    for key, keyword in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = _ds_float(ds, keyword)
        if value is not None:
            extra[key] = f"{value:g}"
    for key, keyword in (("patient_id", "PatientID"), ("study_date", "StudyDate"),
                         ("study_description", "StudyDescription"), ("series_number", "SeriesNumber")):
        value = _ds_str(ds, keyword)
        if value:
            extra[key] = value
    ps = _ds_floats(ds, "PixelSpacing", 2)
    if ps is None:
        ps = _ds_floats(ds, "ImagerPixelSpacing", 2)
    step = _ds_float(ds, "SpacingBetweenSlices") or _ds_float(ds, "SliceThickness")
    return _Slice(
        path=str(path),
        series_uid=_ds_str(ds, "SeriesInstanceUID"),
        sop_class=sop,
        sop_name=str(sop_name or sop or "unknown SOP class"),
        modality=_ds_str(ds, "Modality"),
        description=_ds_str(ds, "SeriesDescription"),
        rows=rows,
        cols=cols,
        frames=max(int(_ds_float(ds, "NumberOfFrames") or 1), 1),
        samples=max(int(_ds_float(ds, "SamplesPerPixel") or 1), 1),
        has_pixels=has_pixels,
        ipp=_ds_floats(ds, "ImagePositionPatient", 3),
        iop=_ds_floats(ds, "ImageOrientationPatient", 6),
        pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None and np.all(ps > 0) else None,
        slice_step=step if step and step > 0 else None,
        instance=int(_ds_float(ds, "InstanceNumber") or 0),
        slope=_ds_float(ds, "RescaleSlope") or 1.0,
        intercept=_ds_float(ds, "RescaleIntercept") or 0.0,
        dose_scaling=_ds_float(ds, "DoseGridScaling"),
        extra=extra,
    )


def _scan_dicom_folder(folder: Path) -> tuple[dict[str, list[_Slice]], list[_Slice]]:
    """Image slices grouped by series uid, and the non-image DICOM objects found (DICOMDIRs excluded)."""
    series: dict[str, list[_Slice]] = {}
    non_images: list[_Slice] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() in _NOT_DICOM_EXTS:
                continue
            path = Path(root) / name
            try:
                if path.stat().st_size < 132:
                    continue
                has_magic = _head(path, 132)[128:132] == b"DICM"
            except OSError:
                continue
            suffix = Path(name).suffix.lower()
            if not has_magic and suffix not in _DICOM_EXTS and not suffix[1:].isdigit():
                continue
            sl = _read_slice(path, force=not has_magic)
            if sl is None or sl.sop_class == _DICOMDIR_SOP or name.upper().startswith("DICOMDIR"):
                continue
            if sl.has_pixels and sl.rows and sl.cols:
                series.setdefault(sl.series_uid, []).append(sl)
            else:
                non_images.append(sl)
    return series, non_images


@dataclass
class _Plan:
    info: SeriesInfo
    slices: list[_Slice]
    geometry: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None  # spacing, origin, direction
    warnings: list[str]


def _plan_series(uid: str, slices: list[_Slice], folder: Path) -> _Plan:
    """Choose the slices of a series to read, their physical order and the volume geometry (no pixels read)."""
    first = slices[0]
    label = f"series '{first.description or uid}' in {folder}"
    warnings: list[str] = []
    # one consistent stack: same size, samples and orientation
    groups: dict[tuple, list[_Slice]] = {}
    for sl in slices:
        iop_key = tuple(np.round(sl.iop, 4)) if sl.iop is not None else None
        groups.setdefault((sl.rows, sl.cols, sl.samples, iop_key), []).append(sl)
    chosen = max(groups.values(), key=lambda g: (sum(s.frames for s in g), -slices.index(g[0])))
    if len(groups) > 1:
        warnings.append(
            f"{label} mixes {len(groups)} image sizes/orientations; read the largest consistent group "
            f"({_slices(len(chosen))}), {_slices(len(slices) - len(chosen))} skipped"
        )
    chosen = sorted(chosen, key=lambda s: (s.instance, s.path))
    multi = [s for s in chosen if s.frames > 1]
    if multi and len(chosen) > 1:
        chosen = [multi[0]]
        warnings.append(f"{label} has several multi-frame files; read only {multi[0].path}")
    ref = chosen[0]
    ps_y, ps_x = ref.pixel_spacing or (1.0, 1.0)
    if len(chosen) == 1:  # single (possibly multi-frame) file: ITK/GDCM reads its geometry
        info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, ref.frames),
                          (ps_x, ps_y, ref.slice_step or 1.0), [ref.path])
        return _Plan(info, chosen, None, warnings)
    if any(s.ipp is None or s.iop is None for s in chosen):
        warnings.append(f"{label} has no ImagePositionPatient/ImageOrientationPatient: slices stacked by instance "
                        f"number, geometry approximate")
        spacing = (ps_x, ps_y, ref.slice_step or 1.0)
        info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, len(chosen)), spacing,
                          [s.path for s in chosen])
        return _Plan(info, chosen, (spacing, (0.0, 0.0, 0.0), _IDENTITY), warnings)
    row = ref.iop[:3] / np.linalg.norm(ref.iop[:3])
    col = ref.iop[3:] - row * float(row @ ref.iop[3:])
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    chosen = sorted(chosen, key=lambda s: (float(s.ipp @ normal), s.instance, s.path))
    proj = np.array([float(s.ipp @ normal) for s in chosen])
    keep = [0]
    for i in range(1, len(chosen)):
        if proj[i] - proj[keep[-1]] > 1e-3:
            keep.append(i)
    if len(keep) < len(chosen):  # sorted by (position, instance): the lowest instance number at each position
        warnings.append(f"{label}: {len(chosen) - len(keep)} slices share a position with another slice (several "
                        f"acquisitions or echoes?); kept one per position")
        chosen = [chosen[i] for i in keep]
        proj = proj[keep]
    if len(chosen) == 1:
        step = ref.slice_step or 1.0
    else:
        step = float(proj[-1] - proj[0]) / (len(chosen) - 1)
        gaps = np.diff(proj)
        if gaps.max() - gaps.min() > max(0.01, 0.01 * step):
            warnings.append(
                f"{label}: non-uniform slice spacing (gaps {gaps.min():.4g} to {gaps.max():.4g} mm); the volume "
                f"uses the mean {step:.4g} mm, so some slice positions are approximate"
            )
        span = chosen[-1].ipp - chosen[0].ipp
        along = float(span @ normal)
        lateral = float(np.linalg.norm(span - along * normal))
        tilt = math.degrees(math.atan2(lateral, abs(along)))
        if tilt > 0.05:
            warnings.append(
                f"{label}: gantry tilt of {tilt:.2f} degrees (sheared slices); the volume stacks them along the slice "
                f"normal, so in-plane positions drift by up to {lateral:.3g} mm"
            )
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())
    spacing = (ps_x, ps_y, step)
    origin = tuple(float(v) for v in chosen[0].ipp)
    info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, len(chosen)), spacing,
                      [s.path for s in chosen])
    return _Plan(info, chosen, (spacing, origin, direction), warnings)


def _slices(n: int) -> str:
    return f"{n} slice" if n == 1 else f"{n} slices"


def _needs_float(slices: list[_Slice]) -> bool:
    return any(
        s.modality == "CT" or s.slope != 1.0 or s.intercept != 0.0 or (s.modality == "RTDOSE" and s.dose_scaling)
        for s in slices
    )


def _read_dicom_pixels(sl: _Slice, as_float: bool) -> sitk.Image:
    """One DICOM file as a SimpleITK image (rescale applied), GDCM first, pydicom as a fallback."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(sl.path)
    if as_float:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        gdcm_error = _itk_message(exc)
        image = _read_dicom_pixels_pydicom(sl, as_float, gdcm_error)
    if sl.modality == "RTDOSE" and sl.dose_scaling:
        image = sitk.Cast(image, sitk.sitkFloat32) * float(sl.dose_scaling)
    return image


def _read_dicom_pixels_pydicom(sl: _Slice, as_float: bool, gdcm_error: str) -> sitk.Image:
    import pydicom

    try:
        ds = pydicom.dcmread(sl.path, force=True)
        array = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for damaged or unsupported pixel data
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{sl.path}: damaged, truncated or unsupported DICOM pixel data ({reason})") from None
    color = sl.samples > 1
    if not color:
        array = array * sl.slope + sl.intercept if (sl.slope != 1.0 or sl.intercept != 0.0) else array
        if as_float:
            array = array.astype(np.float32)
    if array.ndim == (3 if color else 2):
        array = array[None]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=color)
    ps_y, ps_x = sl.pixel_spacing or (1.0, 1.0)
    image.SetSpacing((ps_x, ps_y, sl.slice_step or 1.0))
    if sl.ipp is not None and sl.iop is not None:
        row = sl.iop[:3] / np.linalg.norm(sl.iop[:3])
        col = sl.iop[3:] / np.linalg.norm(sl.iop[3:])
        image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, np.cross(row, col)]).ravel()))
        image.SetOrigin(tuple(float(v) for v in sl.ipp))
    return image


def _dicom_metadata(sl: _Slice, source: Path) -> dict[str, str]:
    md = {"modality": sl.modality, "description": sl.description, "source": str(source),
          "series_uid": sl.series_uid, "sop_class": sl.sop_name}
    md.update(sl.extra)
    if sl.modality == "CT":
        md["units"] = "HU"
    return md


def _not_an_image_message(sl: _Slice) -> str:
    if "Image" in sl.sop_name or sl.rows:
        return f"{sl.path}: DICOM {sl.sop_name} without pixel data (no image to read)"
    return f"{sl.path}: not an image (DICOM {sl.sop_name}, modality {sl.modality or '?'}, has no pixel data)"


def _read_dicom_file(p: Path) -> Volume:
    sl = _read_slice(p, force=True)
    if sl is None:
        raise DataError(f"{p}: not a DICOM file (the content is {_sniff(p)})")
    if sl.sop_class == _DICOMDIR_SOP:
        raise DataError(f"{p}: a DICOMDIR index, not an image (open the folder that holds it instead)")
    if not sl.has_pixels:
        raise DataError(_not_an_image_message(sl))
    image = _read_dicom_pixels(sl, _needs_float([sl]))
    return Volume.from_sitk(image, _dicom_metadata(sl, p))


def _read_dicom_folder(folder: Path, series_uid: str | None) -> Volume:
    series, non_images = _scan_dicom_folder(folder)
    if not series:
        if non_images:
            kinds = sorted({s.sop_name for s in non_images})
            raise DataError(f"{folder}: no DICOM images (found {len(non_images)} DICOM files without pixel data: "
                            f"{', '.join(kinds[:4])})")
        raise DataError(f"{folder}: no DICOM images found in this folder or its subfolders")
    plans = {uid: _plan_series(uid, slices, folder) for uid, slices in series.items()}
    warnings: list[str] = []
    if series_uid is not None:
        if series_uid not in plans:
            found = ", ".join(f"{uid} ('{pl.info.description}')" for uid, pl in plans.items())
            raise DataError(f"{folder}: no DICOM series with uid {series_uid} (found: {found})")
        plan = plans[series_uid]
    else:
        ordered = sorted(plans.values(), key=lambda pl: (pl.info.description.lower(), pl.info.uid))
        plan = max(ordered, key=lambda pl: math.prod(pl.info.size))
        if len(plans) > 1:
            others = "; ".join(f"'{pl.info.description}' ({_slices(pl.info.size[2])}, uid {pl.info.uid})"
                               for pl in ordered if pl is not plan)
            warnings.append(
                f"{folder} holds {len(plans)} DICOM series; read the largest, '{plan.info.description}' "
                f"({_slices(plan.info.size[2])}, uid {plan.info.uid}); others: {others}"
            )
    warnings += plan.warnings
    if non_images:
        kinds = sorted({s.sop_name for s in non_images})
        n = len(non_images)
        files = "file" if n == 1 else "files"
        warnings.append(f"{folder}: skipped {n} DICOM {files} without pixel data ({', '.join(kinds[:4])})")
    as_float = _needs_float(plan.slices)
    md = _dicom_metadata(plan.slices[0], folder)
    if plan.geometry is None:
        image = _read_dicom_pixels(plan.slices[0], as_float)
        return Volume.from_sitk(image, md, warnings)
    array = None
    for k, sl in enumerate(plan.slices):
        image = _read_dicom_pixels(sl, as_float)  # keep a reference while its array view is used
        pixels = sitk.GetArrayViewFromImage(image)
        if pixels.shape[:3] != (1, sl.rows, sl.cols):
            raise DataError(f"{sl.path}: pixel data of shape {pixels.shape} does not match Rows x Columns "
                            f"{sl.rows} x {sl.cols}")
        if array is None:
            array = np.empty((len(plan.slices),) + pixels.shape[1:], dtype=pixels.dtype)
        elif not np.can_cast(pixels.dtype, array.dtype, "safe"):
            array = array.astype(np.result_type(array.dtype, pixels.dtype))
        array[k] = pixels[0]
    spacing, origin, direction = plan.geometry
    return Volume(array, spacing, origin, direction, md, warnings)
