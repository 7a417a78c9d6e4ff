"""Writing volumes and label maps with exactly their geometry, atomically (`files.atomic_files`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import DataError
from ..files import atomic_files, refuse_overwriting_inputs
from .images import IMAGE_2D
from .itk import itk_message
from .sniff import extension
from .volume import Volume

LABEL_MAP_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write `volume` to any SimpleITK-writable file (.nii.gz, .nrrd, .mha, ...) with its exact geometry, atomically."""
    p = Path(path).expanduser()
    image = volume.to_sitk()
    if extension(p) in IMAGE_2D and image.GetSize()[2] == 1:
        image = image[:, :, 0]  # 2D formats take a single slice as a 2D image
    _write_image_atomic(image, p)
    return p


def write_label_map(labels: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write integer labels shaped like `reference.array` (Z, Y, X) as uint8/uint16 with the reference's size,
    spacing, origin and direction, atomically. NIfTI (.nii/.nii.gz); .nrrd and .mha are accepted too."""
    p = Path(path).expanduser()
    if extension(p) not in LABEL_MAP_EXTENSIONS:
        raise DataError(f"{p}: label maps are written as NIfTI (.nii.gz or .nii), NRRD (.nrrd) or MetaImage (.mha)")
    refuse_overwriting_inputs(p, [reference.metadata.get("source")])
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
                        f"{p}: cannot write '{extension(p) or p.name}' files (use .nii.gz, .nrrd or .mha)"
                    ) from None
                raise DataError(f"{p}: cannot write ({itk_message(exc)})") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot write ({exc.strerror or exc})") from None
