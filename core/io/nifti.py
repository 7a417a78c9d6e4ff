"""NIfTI-1/2 header facts and stored values that SimpleITK's reader does not report, through nibabel (imported
inside the functions, so reading other formats never needs it).

ITK reads a truncated NIfTI file without complaint (the missing voxels become zeros) and turns NaN/Inf voxels into
0, so the reader checks the header against the file size and counts the non-finite voxels here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class NiftiHeader:
    """What the reader needs from a NIfTI header to know the file's full size."""

    dims: tuple[int, ...]  # dim[0] (the number of dimensions) then dim[1..7]
    bitpix: int
    vox_offset: float
    single: bool  # voxels in the same file (.nii), not in an .img beside a .hdr
    pixdim: tuple[float, ...] = ()  # pixdim[0] (qfac) then the voxel size of each dimension


def nifti_header(block: bytes) -> NiftiHeader | None:
    """The NIfTI-2 or NIfTI-1 header at the start of `block`, parsed by nibabel (either byte order); None when
    `block` does not start with one (too short, wrong header size or magic)."""
    import nibabel as nib

    for klass, magics in ((nib.Nifti2Header, (b"n+2", b"ni2")), (nib.Nifti1Header, (b"n+1", b"ni1"))):
        size = klass.sizeof_hdr
        if len(block) < size or not klass.may_contain_header(block):
            continue
        header = klass(block[:size], check=False)  # the byte order is guessed from sizeof_hdr
        magic = header["magic"].item()
        if int(header["sizeof_hdr"]) != size or magic not in magics:
            continue
        return NiftiHeader(
            dims=tuple(int(d) for d in header["dim"]),
            bitpix=int(header["bitpix"]),
            vox_offset=float(header["vox_offset"]),
            single=magic == magics[0],
            pixdim=tuple(float(v) for v in header["pixdim"]),
        )
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
