"""NIfTI, NRRD and MetaImage files through SimpleITK, and ITK's error messages made readable.

NIfTI headers hold geometry as float32, so geometry written to NIfTI round-trips to float32 precision (about 1e-7
relative); NRRD and MetaImage round-trip exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import SimpleITK as sitk

from ..errors import DataError
from .nifti import nifti_nonfinite
from .volume import Volume

# extension -> (ITK ImageIO, human name)
ITK_READERS = {
    ".nii": ("NiftiImageIO", "NIfTI"),
    ".nii.gz": ("NiftiImageIO", "NIfTI"),
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".nhdr": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
}


def itk_message(exc: BaseException) -> str:
    """The useful line of an ITK exception (they span several lines with source locations)."""
    text = str(exc)
    for line in text.splitlines():
        if "ITK ERROR" in line:
            msg = line.split("):", 1)[-1].strip() if "):" in line else line.strip()
            return msg[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "sitk::ERROR" not in ln]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def read_itk_file(p: Path, io: str, kind: str) -> Volume:
    """Read `p` with the ITK ImageIO `io` (`kind` names the format in messages): a 4D+ file keeps its first volume
    (with a warning), metadata record the description, the number of volumes and the stored size, and NIfTI
    NaN/Inf voxels (read as 0) are counted."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io)
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{p}: unreadable {kind} header ({itk_message(exc)})") from None
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
        raise DataError(f"{p}: damaged or truncated {kind} file ({itk_message(exc)})") from None
    description = ""
    for key in ("descrip", "content", "ITK_FileNotes"):
        if image.HasMetaDataKey(key) and image.GetMetaData(key).strip():
            description = image.GetMetaData(key).strip()
            break
    metadata = {"source": str(p), "description": description, "modality": "", "volumes": str(volumes),
                "stored_size": " x ".join(map(str, size[:3]))}
    nonfinite = nifti_nonfinite(p) if kind == "NIfTI" else 0
    if nonfinite:
        metadata["nonfinite_voxels"] = str(nonfinite)
        warnings.append(f"{p}: {nonfinite} NaN or infinite voxel(s), read as 0")
    return Volume.from_sitk(image, metadata, warnings)
