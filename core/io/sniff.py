"""What a file is: its extension, what its first bytes say, and whether its content is whole.

`read_volume` checks the content before handing a file to a reader, so a PNG renamed `.nii.gz` or a NIfTI file cut
short gives a one-line `DataError` naming the file instead of an ITK traceback or silently zero-filled voxels.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

from ..errors import DataError
from .nifti import nifti_header

# the sizes of the BMP info headers (BITMAPCOREHEADER ... BITMAPV5HEADER): "BM" alone is too weak a magic
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


def extension(p: Path) -> str:
    """The lower-case extension of `p`, `.nii.gz` counted as one."""
    name = p.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return p.suffix.lower()


def head(p: Path, n: int = 4096) -> bytes:
    """The first `n` bytes of `p`."""
    with open(p, "rb") as fh:
        return fh.read(n)


def describe_bytes(data: bytes) -> str:
    """What a file's first bytes look like, for error messages."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if data.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "a DICOM file"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if data.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive (e.g. .npz)"
    if data.startswith(b"NRRD"):
        return "an NRRD image"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "a TIFF image"
    if data.startswith(b"BM") and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "a BMP image"
    if nifti_header(data) is not None:
        return "a NIfTI image"
    if b"DimSize" in data and b"ElementType" in data:
        return "a MetaImage"
    if not data:
        return "empty"
    try:
        data.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def sniff(p: Path) -> str:
    """What the content of `p` looks like (see `describe_bytes`), "unreadable" when it cannot be opened."""
    try:
        return describe_bytes(head(p, 1024))
    except OSError:
        return "unreadable"


def check_content(p: Path, ext: str) -> None:
    """Reject files whose content does not match their extension, and truncated NIfTI files (ITK reads those
    silently, filling the missing voxels with zeros)."""
    data = head(p)
    looks = describe_bytes(data)
    if ext in (".nii", ".nii.gz"):
        _check_nifti(p, data, looks)
    elif ext in (".nrrd", ".nhdr") and looks != "an NRRD image":
        raise DataError(f"{p}: not an NRRD file (the content is {looks})")
    elif ext in (".mha", ".mhd") and looks != "a MetaImage":
        raise DataError(f"{p}: not a MetaImage file (the content is {looks})")
    elif ext == ".png" and looks != "a PNG image":
        raise DataError(f"{p}: not a PNG file (the content is {looks})")
    elif ext in (".jpg", ".jpeg") and looks != "a JPEG image":
        raise DataError(f"{p}: not a JPEG file (the content is {looks})")
    elif ext == ".bmp" and looks != "a BMP image":
        raise DataError(f"{p}: not a BMP file (the content is {looks})")
    elif ext in (".tif", ".tiff") and looks != "a TIFF image":
        raise DataError(f"{p}: not a TIFF file (the content is {looks})")
    elif ext == ".npy" and looks != "a NumPy .npy array":
        raise DataError(f"{p}: not a NumPy .npy file (the content is {looks})")


def _check_nifti(p: Path, data: bytes, looks: str) -> None:
    compressed = data.startswith(b"\x1f\x8b")
    if compressed:
        try:
            with gzip.open(p, "rb") as fh:
                inner = fh.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{p}: damaged gzip-compressed NIfTI file ({exc})") from None
        header = nifti_header(inner)
        if header is None:
            raise DataError(f"{p}: not a NIfTI file (gzip-compressed, but the content is {describe_bytes(inner)})")
    else:
        header = nifti_header(data)
        if header is None:
            if len(data) < 348 and looks in ("unrecognised binary data", "text"):
                raise DataError(f"{p}: truncated NIfTI file ({len(data)} bytes, shorter than a NIfTI header)")
            raise DataError(f"{p}: not a NIfTI file (the content is {looks})")
    dims = header.dims
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise DataError(f"{p}: damaged NIfTI header (dim[0] = {ndim})")
    for i in range(1, min(ndim, 3) + 1):  # readers would silently take 1 mm: results placed with invented geometry
        size = header.pixdim[i] if len(header.pixdim) > i else math.nan
        if not math.isfinite(size) or size == 0:
            raise DataError(f"{p}: invalid voxel size in the NIfTI header (pixdim[{i}] = {size:g}); without a "
                            "real voxel size every distance and the written label map would be wrong — fix the header")
    if not header.single:
        return  # .hdr/.img pair: the voxels are in another file
    nvox = math.prod(max(int(d), 1) for d in dims[1 : ndim + 1])
    needed = int(header.vox_offset) + nvox * max(header.bitpix, 1) // 8
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
