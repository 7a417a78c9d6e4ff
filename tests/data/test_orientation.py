"""core.io.orientation: the one nearest-axes rule (ITK's orientation codes, the RAS canonical grid, the radiological
display of the viewer and of classification inputs)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from core.io import Volume, display_axes, display_plane, nearest_axes, orientation_code, to_display


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix (proper or improper)


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for c in range(3):
                m[perm[c], c] = signs[c]
            yield m


def test_orientation_code_is_itks_code():
    """The code comes from nearest_axes; ITK's DICOMOrientImageFilter gives the same letters for every signed axis
    permutation and for random oblique directions (both match the strongest cosine first)."""
    rng = np.random.default_rng(0)
    matrices = list(_signed_permutations()) + [_rotation(rng) for _ in range(500)]
    for m in matrices:
        itk = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in m.ravel()])
        assert orientation_code(m) == itk, m
    assert orientation_code((0.0, 1.0, 1.0, 0.0)) == "PLS"  # 2D: the in-plane 2x2
    with pytest.raises(ValueError, match="9 values"):
        orientation_code((1.0, 0.0, 0.0))


def test_nearest_axes_towards_ras_and_lps():
    identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert nearest_axes(identity, "RAS") == ([0, 1, 2], [True, True, False])
    assert nearest_axes(identity, "LPS") == ([0, 1, 2], [False, False, False])
    sagittal = (0, 0, -1, 1, 0, 0, 0, -1, 0)  # i -> P, j -> I, k -> R
    assert nearest_axes(sagittal, "LPS") == ([2, 0, 1], [True, False, True])
    assert nearest_axes(sagittal, "RAS") == ([2, 0, 1], [False, True, True])
    rng = np.random.default_rng(1)
    for _ in range(200):  # same axes whatever the target; x and y flip
        m = _rotation(rng)
        (p_ras, f_ras), (p_lps, f_lps) = nearest_axes(m, "RAS"), nearest_axes(m, "LPS")
        assert p_ras == p_lps and f_ras == [not f_lps[0], not f_lps[1], f_lps[2]]
    with pytest.raises(ValueError, match="target"):
        nearest_axes(identity, "RAI")


def _labelled(direction, shape=(4, 5, 6)) -> Volume:
    """A volume whose voxel value names its index: i + 100 j + 10000 k."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return Volume((i + 100 * j + 10000 * k).astype(np.int32), spacing=(0.7, 0.9, 1.3), direction=direction)


def _world_step(volume: Volume, plane: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
    """LPS direction from plane pixel a to plane pixel b."""

    def world(pixel):
        value = int(plane[pixel])
        return volume.index_to_world([value % 100, value // 100 % 100, value // 10000])

    step = world(b) - world(a)
    return step / np.linalg.norm(step)


DIRECTIONS = {
    "lps": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "sagittal": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),
    "oblique": np.array([[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, -1]], float),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_display_plane_of_a_volume_is_the_middle_axial_slice_radiologically(name):
    volume = _labelled(tuple(DIRECTIONS[name].ravel()))
    plane = display_plane(volume)
    perm, flips = display_axes(volume.direction, volume.shape_xyz)
    display = to_display(volume.array, perm, flips)
    np.testing.assert_array_equal(plane, display[display.shape[0] // 2])
    assert np.argmax(_world_step(volume, plane, (0, 0), (1, 0))) == 1  # down the rows: mostly posterior
    assert _world_step(volume, plane, (0, 0), (1, 0))[1] > 0.7
    assert _world_step(volume, plane, (0, 0), (0, 1))[0] > 0.7  # along the columns: toward the patient's left
    # an axial plane, the middle one counted from inferior to superior
    assert abs(_world_step(volume, plane, (0, 0), (1, 1))[2]) < 1e-9
    heights = sorted({round(float(volume.index_to_world([i, j, k])[2]), 9)
                      for k in range(4) for j in range(5) for i in range(6)})
    value = int(plane[0, 0])
    height = volume.index_to_world([value % 100, value // 100 % 100, value // 10000])[2]
    assert height == pytest.approx(heights[len(heights) // 2])


@pytest.mark.parametrize("flipped", [False, True])
def test_single_coronal_and_sagittal_slices_are_shown_in_their_own_plane(flipped):
    sign = -1.0 if flipped else 1.0
    # a coronal slice: i along L (or R), j along I (or S), the slice normal along P
    coronal = _labelled(tuple(np.array([[sign, 0, 0], [0, 0, 1], [0, -sign, 0]]).ravel()), shape=(1, 5, 6))
    plane = display_plane(coronal)
    assert plane.shape == (5, 6)
    assert _world_step(coronal, plane, (0, 0), (1, 0))[2] == pytest.approx(-1.0)  # rows: superior -> inferior
    assert _world_step(coronal, plane, (0, 0), (0, 1))[0] == pytest.approx(1.0)  # columns: right -> left
    # a sagittal slice stored with j as the normal: (i, k) in the plane
    sagittal = _labelled(tuple(np.array([[0, sign, 0], [sign, 0, 0], [0, 0, -1]]).ravel()), shape=(4, 1, 6))
    plane = display_plane(sagittal)
    assert plane.shape == (4, 6)
    assert _world_step(sagittal, plane, (0, 0), (1, 0))[2] == pytest.approx(-1.0)  # rows: superior -> inferior
    assert _world_step(sagittal, plane, (0, 0), (0, 1))[1] == pytest.approx(1.0)  # columns: anterior -> posterior


def test_display_plane_of_2d_images_and_rgb_is_the_array_itself():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(display_plane(Volume(grey)), grey)
    rgb = np.arange(36, dtype=np.uint8).reshape(1, 3, 4, 3)
    np.testing.assert_array_equal(display_plane(Volume(rgb)), rgb[0])
    stack = np.arange(5 * 3 * 4).reshape(5, 3, 4)
    np.testing.assert_array_equal(display_plane(Volume(stack)), stack[2])  # LPS identity: k runs I -> S
    down = Volume(stack, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    np.testing.assert_array_equal(display_plane(down), stack[::-1][2])
