"""Orientation of a volume's index axes in patient space (ITK / DICOM LPS convention)."""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk


def orientation_code(direction: Any) -> str:
    """Three-letter code of the axes' directions, ITK/DICOM convention: identity -> "LPS", diag(-1,-1,1) -> "RAS".
    Oblique directions get the closest code. Accepts 9 values (row-major) or a 3x3 matrix (4 values for 2D)."""
    d = np.asarray(direction, dtype=float).ravel()
    if d.size == 4:
        d = np.array([d[0], d[1], 0, d[2], d[3], 0, 0, 0, 1], dtype=float)
    if d.size != 9:
        raise ValueError(f"direction needs 9 values (3x3), got {d.size}")
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in d])
