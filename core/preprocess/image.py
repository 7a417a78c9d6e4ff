"""2D/3D image preprocessing of classification inputs: intensity to [0, 1], channels, resize, normalisation."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize

MEAN = 0.5


STD = 0.5


def intensity_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images are divided by 255; any other dtype is min-max scaled per image between its
    0.5th and 99.5th percentiles (CT in HU, MR in arbitrary units), clipped to [0, 1]."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    out = images.astype(np.float32)
    flat = out.reshape(out.shape[0], -1)
    lo = np.percentile(flat, 0.5, axis=1)
    hi = np.percentile(flat, 99.5, axis=1)
    scale = np.where(hi > lo, hi - lo, 1.0)
    shape = (-1,) + (1,) * (out.ndim - 1)
    return np.clip((out - lo.reshape(shape)) / scale.reshape(shape), 0.0, 1.0)


def prepare(images: np.ndarray, image_size: int, in_channels: int, spatial_dims: int = 2) -> torch.Tensor:
    """Turn N images into the network's input.

    images: (N, H, W) grey or (N, H, W, 3) RGB for 2D; (N, D, H, W) for 3D. Any dtype.
    Returns float32 (N, in_channels, S, S[, S]) with S = image_size: intensity to [0, 1] (see
    `intensity_to_unit`), grey repeated to 3 channels or RGB averaged to grey as `in_channels`
    asks, resized with MONAI `Resize` (bilinear/trilinear, anti-aliased), then (x - 0.5) / 0.5.
    """
    images = np.asarray(images)
    rgb = images.ndim == spatial_dims + 2
    if images.ndim not in (spatial_dims + 1, spatial_dims + 2) or (rgb and images.shape[-1] not in (3, 4)):
        raise ValueError(f"expected (N, spatial...) or (N, spatial..., 3) images, got shape {images.shape}")
    unit = intensity_to_unit(images)
    if rgb:
        unit = unit[..., :3]
        chw = np.moveaxis(unit, -1, 1)  # (N, 3, spatial...)
        if in_channels == 1:
            chw = chw.mean(axis=1, keepdims=True)
    else:
        chw = unit[:, None]
        if in_channels == 3:
            chw = np.repeat(chw, 3, axis=1)
    n, c = chw.shape[:2]
    size = (image_size,) * spatial_dims
    if tuple(chw.shape[2:]) != size:
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        resize = Resize(spatial_size=size, mode=mode, anti_aliasing=True)
        # Resize treats the leading axis as channels: resize all N*C planes in one call.
        flat = resize(chw.reshape(n * c, *chw.shape[2:]))
        chw = np.asarray(flat, dtype=np.float32).reshape(n, c, *size)
    tensor = torch.as_tensor(np.ascontiguousarray(chw), dtype=torch.float32)
    return (tensor - MEAN) / STD


