"""Small MedMNIST-format files with learnable class-dependent content, for tests and benchmarks.

`write_fake_medmnist` writes exactly the MedMNIST `.npz` layout (six arrays, uint8 images, (N, 1)
integer or (N, C) 0/1 labels). Each class (or each present label, for multi-label files) adds a bright
Gaussian blob at its own position on a circle around the image centre, on top of a noisy background, so
a small network learns the task in a few epochs while the images are not trivially identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.files import write_atomic
from core.kinds.classification.medmnist import SPLITS


def _centres(count: int, spatial_dims: int, size: int) -> np.ndarray:
    """(count, spatial_dims) blob centres in pixels: a circle of radius 0.3*S around the centre
    (in 3D the circle is tilted so the centres also differ along the first axis)."""
    angles = 2 * np.pi * np.arange(count) / max(count, 1)
    c = (size - 1) / 2
    r = 0.3 * size
    if spatial_dims == 2:
        return np.stack([c + r * np.sin(angles), c + r * np.cos(angles)], axis=1)
    return np.stack([c + 0.6 * r * np.cos(angles), c + r * np.sin(angles), c + r * np.cos(angles)], axis=1)


def _images(present: np.ndarray, size: int, spatial_dims: int, rgb: bool, rng: np.random.Generator) -> np.ndarray:
    """uint8 images for a (n, K) 0/1 matrix of present blobs."""
    n, k = present.shape
    grid = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32),) * spatial_dims, indexing="ij"))
    centres = _centres(k, spatial_dims, size).astype(np.float32)
    sigma = 0.1 * size
    img = rng.normal(40.0, 12.0, size=(n,) + (size,) * spatial_dims).astype(np.float32)
    for j in range(k):
        idx = np.flatnonzero(present[:, j])
        if idx.size == 0:
            continue
        jitter = rng.uniform(-0.04 * size, 0.04 * size, size=(idx.size, spatial_dims)).astype(np.float32)
        centre = centres[j][None] + jitter  # (m, dims)
        shape = (idx.size, spatial_dims) + (1,) * spatial_dims
        d2 = ((grid[None] - centre.reshape(shape)) ** 2).sum(axis=1)
        amplitude = rng.uniform(150.0, 200.0, size=(idx.size,) + (1,) * spatial_dims).astype(np.float32)
        img[idx] += amplitude * np.exp(-d2 / (2 * sigma**2))
    if rgb:
        # class-dependent tint on top of the blob positions: channel gains vary with the first present blob
        first = np.argmax(present, axis=1).astype(np.float32) / max(k - 1, 1)
        gains = np.stack([np.ones(n), 0.6 + 0.4 * first, 1.0 - 0.4 * first], axis=1).astype(np.float32)
        img = img[..., None] * gains.reshape(n, *(1,) * spatial_dims, 3)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_fake_medmnist(
    path: str | os.PathLike,
    n: int = 64,
    size: int = 28,
    rgb: bool = False,
    num_classes: int = 3,
    multilabel: bool = False,
    flat_labels: bool = False,
    spatial_dims: int = 2,
    seed: int = 0,
    n_eval: int | None = None,
) -> Path:
    """Write a MedMNIST-format `.npz` with learnable content and return its path.

    n: training samples; n_eval: samples in each of val and test (default max(4, n // 4)).
    Images: (N, size, size) grey, (N, size, size, 3) when `rgb`, (N, size, size, size) when
    `spatial_dims == 3`. Labels: (N, 1) uint8 class indices (every class appears in every split when
    the split has at least `num_classes` samples), (N,) when `flat_labels`, or (N, num_classes) 0/1
    columns when `multilabel`.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if rgb and spatial_dims == 3:
        raise ValueError("MedMNIST 3D images are grey; rgb needs spatial_dims=2")
    if num_classes < 2 and not multilabel:
        raise ValueError("a multi-class file needs num_classes >= 2")
    rng = np.random.default_rng(seed)
    n_eval = max(4, n // 4) if n_eval is None else n_eval
    arrays: dict[str, np.ndarray] = {}
    for split, count in zip(SPLITS, (n, n_eval, n_eval), strict=True):
        if multilabel:
            present = (rng.random((count, num_classes)) < 0.5).astype(np.uint8)
            labels = present
        else:
            classes = rng.permutation(np.arange(count) % num_classes)
            present = np.eye(num_classes, dtype=np.uint8)[classes]
            labels = classes.astype(np.uint8) if flat_labels else classes.astype(np.uint8)[:, None]
        arrays[f"{split}_images"] = _images(present, size, spatial_dims, rgb, rng)
        arrays[f"{split}_labels"] = labels
    path = Path(path)
    return write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))
