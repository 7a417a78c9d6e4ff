"""`read_volume`: one entry point for every format the project reads, chosen by extension and checked by content."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .dicom import DICOM_EXTS, read_dicom_file, read_dicom_folder
from .images import IMAGE_2D, read_2d_image, read_npy
from .itk import ITK_READERS, read_itk_file
from .sniff import check_content, extension, sniff
from .volume import Volume

# what read_volume opens (plus DICOM files without extension and DICOM folders), e.g. for file-dialog filters
READ_EXTENSIONS = tuple(ITK_READERS) + (".dcm",) + IMAGE_2D + (".npy",)


def read_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read a file (NIfTI, NRRD, MetaImage, DICOM, PNG/JPEG/BMP/TIFF, .npy) or a folder of DICOM files.

    For a folder, `series_uid` chooses the series (default: the largest, with a warning naming the others).
    It is ignored for files.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return read_dicom_folder(p, series_uid)
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    ext = extension(p)
    if ext in ITK_READERS:
        io, kind = ITK_READERS[ext]
        check_content(p, ext)
        return read_itk_file(p, io, kind)
    if ext in IMAGE_2D:
        check_content(p, ext)
        return read_2d_image(p)
    if ext == ".npy":
        check_content(p, ext)
        return read_npy(p)
    if ext in DICOM_EXTS or sniff(p) == "a DICOM file":
        return read_dicom_file(p)
    raise DataError(
        f"{p}: unsupported file type '{ext or p.name}' (readable: {', '.join(READ_EXTENSIONS)}, DICOM files without "
        f"extension and DICOM folders)"
    )
