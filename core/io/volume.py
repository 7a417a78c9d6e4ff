"""The `Volume` type: voxels and their physical geometry, never one without the other.

Conventions (those of SimpleITK / ITK / DICOM):
- `Volume.array` is indexed `[z, y, x]` (SimpleITK's index order reversed); RGB adds a last axis of 3.
- `spacing`, `origin` and `direction` are SimpleITK's: spacing `(x, y, z)` in mm, origin in LPS mm (patient Left,
  Posterior, Superior are +), direction the 3x3 matrix of axis cosines in row-major order (column j is the world
  direction of index axis j). NIfTI files store RAS; ITK converts on read and write, so a NIfTI affine equals
  `diag(-1, -1, 1, 1) @ [[D * spacing, origin], [0, 1]]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

_SITK_DICOM_TAGS = {
    "modality": "0008|0060",
    "description": "0008|103e",
    "series_uid": "0020|000e",
    "patient_id": "0010|0020",
    "study_date": "0008|0020",
}


@dataclass(eq=False)
class Volume:
    """Voxels plus physical geometry. `array` is `(Z, Y, X)` (2D images `(1, Y, X)`, RGB `(..., 3)`)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
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
        """An RGB volume (a last axis of 3)."""
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
        """The volume as a SimpleITK image with its geometry (bool stored as uint8, float16 as float32)."""
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


def _float_tuple(values: Any, n: int, name: str) -> tuple[float, ...]:
    flat = np.asarray(values, dtype=float).ravel()
    if flat.size != n or not np.all(np.isfinite(flat)):
        raise ValueError(f"Volume.{name} needs {n} finite numbers, got {values!r}")
    return tuple(float(v) for v in flat)


def _sitk_dicom_metadata(image: sitk.Image) -> dict[str, str]:
    md = {}
    for key, tag in _SITK_DICOM_TAGS.items():
        if image.HasMetaDataKey(tag):
            value = image.GetMetaData(tag).strip()
            if value:
                md[key] = value
    return md
