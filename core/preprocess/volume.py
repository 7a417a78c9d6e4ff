"""Volume preprocessing of 3D inputs (what volume experts see) and its exact inverse.

Geometry: a volume is an array in (Z, Y, X) order (SimpleITK / DICOM convention) with spacing (x, y, z),
and a 3x3 direction matrix (row-major 9 floats; its columns are the index axes in LPS world coordinates).
1. reorient to RAS canonical by a pure permutation + flips of the voxel axes (the array becomes (X, Y, Z)
   with axis j running along RAS world axis j; oblique volumes use the closest axes, `io.nearest_axes`), undone
   exactly;
2. resample to the target spacing (trilinear for images, nearest for labels) on a grid of
   round(size * spacing / target) voxels whose outer edges coincide with the original ones;
3. intensity to [0, 1]: `percentile` clips to the volume's [low, high] percentiles, `ct_window` to [low, high]
   (e.g. HU), then scales linearly.
`restore_labels` takes working-grid logits back (trilinear) to the canonical grid of the input, argmax, then the
inverse permutation/flips: the label map has the input's exact voxel grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io import nearest_axes


def canonical_axes(direction: Sequence[float]) -> tuple[list[int], list[bool]]:
    """(perm, flips): canonical axis j is the volume's index axis perm[j] (x=0, y=1, z=2), flipped when
    flips[j], so that it runs along RAS world axis j (+R, +A, +S): `io.nearest_axes` towards RAS."""
    return nearest_axes(direction, "RAS")


def to_canonical(array_zyx: np.ndarray, perm: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """(Z, Y, X) array -> canonical (X', Y', Z') RAS array (a view where possible)."""
    if array_zyx.ndim != 3:
        raise ValueError(f"expected a 3D (Z, Y, X) array, got shape {array_zyx.shape}")
    a = np.transpose(np.transpose(array_zyx, (2, 1, 0)), tuple(perm))
    for j, flip in enumerate(flips):
        if flip:
            a = np.flip(a, axis=j)
    return a


def from_canonical(array: np.ndarray, perm: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """Exact inverse of `to_canonical` (for a 3D input)."""
    a = array
    for j, flip in enumerate(flips):
        if flip:
            a = np.flip(a, axis=j)
    a = np.transpose(a, tuple(int(i) for i in np.argsort(perm)))
    return np.ascontiguousarray(np.transpose(a, (2, 1, 0)))


def canonical_spacing(spacing_xyz: Sequence[float], perm: Sequence[int]) -> list[float]:
    return [float(spacing_xyz[perm[j]]) for j in range(3)]


def working_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Grid size after resampling `shape` voxels of `spacing` mm to about `target` mm."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(array: np.ndarray | torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """(X, Y, Z) or (C, X, Y, Z) -> same with spatial size `shape` (mode trilinear or nearest; voxel edges
    aligned, i.e. align_corners=False)."""
    x = torch.as_tensor(np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array)
    squeeze = x.ndim == 3
    x = x[None, None] if squeeze else x[None]
    if tuple(x.shape[2:]) != tuple(shape):
        if mode == "nearest":
            x = F.interpolate(x.float(), size=tuple(shape), mode="nearest-exact").to(x.dtype)
        else:
            x = F.interpolate(x.float(), size=tuple(shape), mode="trilinear", align_corners=False)
    return x[0, 0] if squeeze else x[0]


INTENSITY_MODES = ("percentile", "ct_window", "range", "zscore", "minmax", "none")


def normalise_intensity(array: np.ndarray, mode: str, low: float = 0.0, high: float = 1.0,
                        **spec) -> np.ndarray:
    """float32 intensities. Our experts' modes give [0, 1]: `percentile` clips to the array's [low, high]
    percentiles, `ct_window` to [low, high] (e.g. HU), then scales linearly. A foundation model's own (MONAI's
    transforms, `core.models.foundation`): `range` (ScaleIntensityRange: a_min..a_max -> b_min..b_max, `clip`),
    `percentile` with b_min/b_max/clip (ScaleIntensityRangePercentiles), `zscore` (NormalizeIntensity; `nonzero`:
    statistics of, and changes to, the non-zero voxels only), `minmax` (ScaleIntensity to b_min..b_max), `none`."""
    a = np.asarray(array, dtype=np.float32)
    b_min, b_max, clip = float(spec.get("b_min", 0.0)), float(spec.get("b_max", 1.0)), bool(spec.get("clip", True))
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(a, [low, high]))
    elif mode == "ct_window":
        lo, hi = float(low), float(high)
    elif mode == "range":
        lo, hi = float(spec["a_min"]), float(spec["a_max"])
    elif mode == "minmax":
        lo, hi, clip = float(a.min()), float(a.max()), False
    elif mode == "zscore":
        keep = a != 0 if spec.get("nonzero") else np.ones(a.shape, bool)
        values = a[keep]
        mean, std = (float(values.mean()), float(values.std())) if values.size else (0.0, 1.0)
        out = a.copy()
        out[keep] = (values - mean) / (std if std > 0 else 1.0)
        return out
    elif mode == "none":
        return a
    else:
        raise ValueError(f"intensity mode must be one of {', '.join(INTENSITY_MODES)}, got {mode!r}")
    scale = hi - lo if hi != lo else 1.0
    out = (a - lo) / scale * (b_max - b_min) + b_min
    return (np.clip(out, min(b_min, b_max), max(b_min, b_max)) if clip else out).astype(np.float32)


def orientation(direction: Sequence[float], axcodes: str | None) -> tuple[list[int], list[bool]]:
    """(perm, flips) that put a volume's axes along `axcodes` (e.g. "RAS"); None: the file's own index order."""
    if axcodes is None:
        return [0, 1, 2], [False, False, False]
    return nearest_axes(direction, axcodes)


def reorient_grid(x: torch.Tensor, source: tuple[Sequence[int], Sequence[bool]],
                  target: tuple[Sequence[int], Sequence[bool]]) -> torch.Tensor:
    """(C, ...) values on a grid in orientation `source` (perm, flips of one volume) -> the same values in
    orientation `target` of that volume. Permutations and flips commute with edge-aligned resampling, so this
    holds on any resampled grid of the volume."""
    out = [torch.from_numpy(to_canonical(from_canonical(c.numpy(), *source), *target).copy()) for c in x]
    return torch.stack(out)


def working_grid(shape_zyx: Sequence[int], spacing_xyz: Sequence[float], direction: Sequence[float], pre: dict
                 ) -> tuple[list[int], list[bool], tuple[int, ...], tuple[int, ...]]:
    """(perm, flips, canonical shape, working-grid shape) of a volume of `shape_zyx` under `pre` (axcodes,
    spacing): the grid `prepare_volume` puts it on, known without reading its voxels."""
    perm, flips = orientation(direction, pre.get("axcodes", "RAS"))
    canon = tuple(int(shape_zyx[::-1][p]) for p in perm)
    if pre.get("spacing") is None:
        return perm, flips, canon, canon
    return perm, flips, canon, working_shape(canon, canonical_spacing(spacing_xyz, perm), pre["spacing"])


def prepare_volume(
    array_zyx: np.ndarray, spacing_xyz: Sequence[float], direction: Sequence[float], pre: dict
) -> tuple[torch.Tensor, dict]:
    """Input array -> network input (1, X', Y', Z') float32 on the working grid, and what `restore` needs.
    `pre`: spacing (None: not resampled), intensity ({"mode": ..., ...}: `normalise_intensity`), axcodes (default
    RAS canonical; None: the file's own index order)."""
    array_zyx = np.asarray(array_zyx)
    perm, flips, _, shape = working_grid(array_zyx.shape, spacing_xyz, direction, pre)
    canon = to_canonical(array_zyx, perm, flips)
    unit = normalise_intensity(canon, **pre["intensity"])
    image = resample(unit, shape, "trilinear")[None]
    return image, {"perm": perm, "flips": flips, "canonical_shape": tuple(canon.shape)}


def restore_labels(logits: torch.Tensor, info: dict) -> np.ndarray:
    """Working-grid logits (C, X', Y', Z') -> uint8 label map (Z, Y, X) on the input's voxel grid."""
    full = resample(logits, info["canonical_shape"], "trilinear")
    return from_canonical(channel_argmax(full).numpy(), info["perm"], info["flips"])


def channel_argmax(x: torch.Tensor) -> torch.Tensor:
    """`torch.argmax(x, dim=0)` as uint8 (the first channel wins a tie), by a pass over the channels: CPU argmax
    along a leading axis of a large volume is about 50 times slower."""
    best, labels = x[0], torch.zeros(x.shape[1:], dtype=torch.uint8)
    for c in range(1, x.shape[0]):
        better = x[c] > best
        best = torch.where(better, x[c], best)
        labels[better] = c
    return labels


