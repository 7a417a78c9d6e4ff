"""Orientation of a volume's index axes in patient space: the one "nearest axes" rule of the project.

World axes are LPS (ITK / DICOM: +x toward the patient's Left, +y Posterior, +z Superior); a direction matrix's
column j is the world direction of index axis j (i = x, j = y, k = z). `nearest_axes` matches every index axis to
one world axis without resampling: greedily, the strongest remaining |cosine| first, which is also ITK's rule for
orientation codes. Everything that reorients by permuting and flipping voxel axes uses it: the RAS canonical grid
of segmentation preprocessing, the viewer's radiological display, the plane a classification expert scores and
`orientation_code`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .volume import Volume

# a target's axes in LPS: RAS is LPS with x and y reversed
_TARGET_SIGNS = {"LPS": np.array([1.0, 1.0, 1.0]), "RAS": np.array([-1.0, -1.0, 1.0])}


def _direction_matrix(direction: Any) -> np.ndarray:
    d = np.asarray(direction, dtype=float).ravel()
    if d.size == 4:  # 2D: the in-plane 2x2, the third axis along +z
        d = np.array([d[0], d[1], 0, d[2], d[3], 0, 0, 0, 1], dtype=float)
    if d.size != 9:
        raise ValueError(f"direction needs 9 values (3x3), got {d.size}")
    return d.reshape(3, 3)


def nearest_axes(direction: Any, target: str = "RAS") -> tuple[list[int], list[bool]]:
    """(perm, flips): world axis j of `target` ("RAS": +R, +A, +S; "LPS": +L, +P, +S) is the volume's index axis
    perm[j] (0 = i/x, 1 = j/y, 2 = k/z), which runs against it when flips[j].

    `direction` is 9 values (row-major, LPS, as `Volume.direction`) or a 3x3 matrix (4 values for 2D). Oblique
    directions get the closest axes: the strongest remaining (world axis, index axis) cosine is matched first."""
    if target not in _TARGET_SIGNS:
        raise ValueError(f"target must be one of {sorted(_TARGET_SIGNS)}, got {target!r}")
    d = _TARGET_SIGNS[target][:, None] * _direction_matrix(direction)  # columns: index axes in target coordinates
    weights = np.abs(d)
    perm = [-1, -1, -1]
    for _ in range(3):
        j, i = np.unravel_index(int(np.argmax(weights)), weights.shape)
        perm[int(j)] = int(i)
        weights[j, :] = -1
        weights[:, i] = -1
    flips = [bool(d[j, perm[j]] < 0) for j in range(3)]
    return perm, flips


def orientation_code(direction: Any) -> str:
    """Three-letter code of the axes' directions, ITK/DICOM convention: identity -> "LPS", diag(-1,-1,1) -> "RAS".
    Oblique directions get the closest code. Accepts 9 values (row-major) or a 3x3 matrix (4 values for 2D)."""
    perm, flips = nearest_axes(direction, "LPS")
    letters = [""] * 3
    for j in range(3):
        letters[perm[j]] = ("RAI" if flips[j] else "LPS")[j]
    return "".join(letters)


def display_axes(direction: Any, size_xyz: tuple[int, int, int]) -> tuple[list[int], list[bool]]:
    """(perm, flips) of the radiological display, as DICOM viewers show images: display axis w is index axis
    perm[w], reversed when flips[w], where display x runs from the patient's right to left, y from anterior to
    posterior and z from inferior to superior (LPS, `nearest_axes`), so an axial plane has anterior at the top and
    the patient's right on the left of the screen.

    A single slice (one display axis of size 1) is shown in its own plane as display (x, y) and the slice axis as
    z: a coronal slice with rows superior->inferior and columns right->left, a sagittal slice with rows
    superior->inferior and columns anterior->posterior (the coronal and sagittal views of a volume)."""
    perm, flips = nearest_axes(direction, "LPS")
    sizes = [int(size_xyz[perm[w]]) for w in range(3)]
    if sizes[2] == 1 or min(sizes) > 1:  # a volume, or an axial slice (its direction along z does not matter)
        return perm, [flips[0], flips[1], flips[2] and sizes[2] > 1]
    if sizes[1] == 1:  # coronal: superior -> inferior down the rows is the +S axis reversed
        return [perm[0], perm[2], perm[1]], [flips[0], not flips[2], False]
    return [perm[1], perm[2], perm[0]], [flips[1], not flips[2], False]  # sagittal


def to_display(array: np.ndarray, perm: list[int], flips: list[bool]) -> np.ndarray:
    """View (no copy) of a `(k, j, i[, c])` array indexed `[z, y, x(, c)]` in the display order `(perm, flips)`
    (see `display_axes`)."""
    order = [2 - perm[w] for w in (2, 1, 0)]  # array axis 0 is k (index axis 2), axis 2 is i
    view = np.transpose(array, order + list(range(3, array.ndim)))
    for axis, w in enumerate((2, 1, 0)):
        if flips[w]:
            view = np.flip(view, axis=axis)
    return view


def display_plane(volume: Volume) -> np.ndarray:
    """The plane a viewer shows of `volume` at first sight, in radiological display order (`display_axes`): the
    single slice of a 2D image or one-slice volume, else the middle axial slice. (H, W) or (H, W, 3) in the
    volume's dtype; row 0 is the top of the screen."""
    perm, flips = display_axes(volume.direction, volume.shape_xyz)
    display = to_display(volume.array, perm, flips)
    return np.ascontiguousarray(display[display.shape[0] // 2])
