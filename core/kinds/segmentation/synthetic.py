"""Tiny synthetic segmentation data in real file formats (NIfTI written by SimpleITK): volumes with bright
spheres or dark cubes and their label maps. For tests and smoke runs only."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_volume(shape=(24, 28, 32), shape_kind: str = "sphere", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (Z, Y, X), label uint8): one or two objects on a noisy background.

    sphere: bright balls (label 1); cube: a dark box (label 1) with a bright core (label 2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    image = rng.normal(100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for _ in range(2):
        centre = [rng.uniform(0.3, 0.7) * n for n in shape]
        radius = rng.uniform(0.12, 0.2) * min(shape)
        if shape_kind == "sphere":
            inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
            image[inside] += 120
            label[inside] = 1
        else:
            half = radius
            dist = np.maximum(np.maximum(abs(z - centre[0]), abs(y - centre[1])), abs(x - centre[2]))
            inside = dist <= half
            core = dist <= half / 2
            image[inside] -= 60
            image[core] += 180
            label[inside] = 1
            label[core] = 2
    return image, label


def write_synthetic_task(folder: str | Path, n: int, shape_kind: str, shape=(24, 28, 32), seed: int = 0,
                         spacing=(1.5, 1.5, 2.0)) -> tuple[Path, Path]:
    """Write n image/label NIfTI pairs into folder/images and folder/labels; return the two folders."""
    import SimpleITK as sitk

    folder = Path(folder)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, label = synthetic_volume(shape, shape_kind, seed * 1000 + i)
        for array, out in ((image, images / f"case{i:02d}.nii.gz"), (label, labels / f"case{i:02d}.nii.gz")):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing(spacing)
            img.SetOrigin((-10.0, 5.0, 2.0))
            sitk.WriteImage(img, str(out))
    return images, labels
