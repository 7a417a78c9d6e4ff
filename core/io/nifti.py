"""NIfTI-1/2 header facts and stored values that SimpleITK's reader does not report.

ITK reads a truncated NIfTI file without complaint (the missing voxels become zeros) and turns NaN/Inf voxels into
0, so the reader checks the header against the file size and counts the non-finite voxels here.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np


def nifti_header(head: bytes) -> dict[str, Any] | None:
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


def nifti_nonfinite(p: Path) -> int:
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
