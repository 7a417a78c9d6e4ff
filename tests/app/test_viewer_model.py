"""app.viewer.model without Qt (no qtbot): it imports no Qt; display geometry, slicing and slice counters against
voxel indices, the voxel readout, window/level and presets, the overlay's lookup table, metadata texts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.viewer.model import (
    CUSTOM,
    PALETTE,
    PLANES,
    PRESETS,
    Overlay,
    ViewerModel,
    direction_letters,
    plane_image,
    rgba,
)
from core.errors import DataError
from core.io import Volume, display_plane

NX, NY, NZ = 20, 16, 12
SPACING = (1.0, 1.5, 2.5)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
AXIAL, CORONAL, SAGITTAL = PLANES["axial"], PLANES["coronal"], PLANES["sagittal"]


def ramp_volume() -> Volume:
    """A RAS volume whose voxel values name their index: value = i * NY * NZ + j * NZ + k (as the GUI tests'
    NIfTI, made without a file)."""
    k, j, i = np.meshgrid(np.arange(NZ), np.arange(NY), np.arange(NX), indexing="ij")
    array = (i * NY * NZ + j * NZ + k).astype(np.int16)
    return Volume(array, spacing=SPACING, origin=(10.0, -20.0, 5.0), direction=RAS, metadata={"source": "ramp.nii"})


def loaded(volume: Volume) -> ViewerModel:
    model = ViewerModel()
    model.load(volume)
    return model


def test_the_model_module_imports_no_qt():
    code = (
        "import sys, app.viewer.model;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'PyQt5', 'PyQt6')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]  # this checkout's app/, wherever pytest was started
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    "direction",
    [
        (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS
        (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS
        (0, 0, -1, 1, 0, 0, 0, -1, 0),  # a sagittal acquisition: i -> P, j -> I, k -> R
        (0.8, 0.6, 0, -0.6, 0.8, 0, 0, 0, -1),  # oblique in-plane, k toward inferior
    ],
)
def test_display_mapping_round_trips(direction):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 10_000, (5, 6, 7)).astype(np.int32)
    volume = Volume(array, spacing=(0.5, 1.0, 2.0), direction=direction, metadata={"modality": "MR"})
    model = loaded(volume)
    axes = model.axes
    display = model.display
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        d = axes.to_display_index(ijk)
        assert axes.to_index(d) == ijk
        assert display[d[2], d[1], d[0]] == array[ijk[2], ijk[1], ijk[0]]
    # the display axes point (mostly) to L, P and S whatever the storage order
    assert np.argmax(np.abs(axes.vectors), axis=0).tolist() == [0, 1, 2]
    assert (np.diag(axes.vectors) > 0).all()
    letters = model.letters(AXIAL)
    assert letters["right"][0] == "L" and letters["top"][0] == "A"
    if direction[0] == 0.8:
        assert len(letters["right"]) == 2  # oblique: "LA"-style two-letter sides
    model.set_cursor(model.cursor_for_voxel((3, 1, 2)))
    assert model.cursor_voxel() == (3, 1, 2)
    assert model.readout()["value"] == array[2, 1, 3]
    np.testing.assert_allclose(model.readout()["world"], volume.index_to_world((3, 1, 2)))


def test_ras_volume_is_shown_radiologically_with_its_letters():
    model = loaded(ramp_volume())
    assert model.letters(AXIAL) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert model.letters(CORONAL) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert model.letters(SAGITTAL) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    assert model.plane_size(AXIAL) == (NY, NX) and model.pixel_size(AXIAL) == (1.0, 1.5)
    assert model.plane_size(SAGITTAL) == (NZ, NY) and model.pixel_size(SAGITTAL) == (1.5, 2.5)
    assert model.cursor == (NX // 2, NY // 2, NZ // 2) and not model.planar


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_first_axial_view_is_what_a_classification_expert_scores(sign):
    """The viewer's axial view at the centre equals core.io.display_plane (what load_image gives for the same
    file): a volume's middle axial slice, and a single coronal slice shown in its own plane with superior at the
    top and the patient's right on the left, whichever way its axes are stored."""
    model = loaded(ramp_volume())
    np.testing.assert_array_equal(model.current_slice_image(), display_plane(model.volume))
    rng = np.random.default_rng(2)
    coronal = Volume(rng.integers(0, 1000, (1, 7, 9)).astype(np.int16),  # i along L/R, j along I/S, normal A/P
                     direction=(sign, 0, 0, 0, 0, 1, 0, -sign, 0))
    model = loaded(coronal)
    assert model.planar and model.plane_size(AXIAL) == (7, 9)
    assert model.letters(AXIAL) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    np.testing.assert_array_equal(model.current_slice_image(), display_plane(coronal))
    expected = coronal.array[0] if sign > 0 else coronal.array[0, ::-1, ::-1]
    np.testing.assert_array_equal(model.current_slice_image(), expected)


def test_direction_letters_and_plane_image():
    assert direction_letters(np.array([1.0, 0.0, 0.0])) == "L"
    assert direction_letters(np.array([0.0, 0.0, -1.0])) == "I"
    assert direction_letters(np.array([0.6, -0.8, 0.0])) == "AL"  # strongest first
    assert direction_letters(np.array([0.99, 0.1, 0.0])) == "L"  # below the threshold: left out
    display = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # [z, y, x]
    np.testing.assert_array_equal(plane_image(display, AXIAL, (1, 2, 1)), display[1])
    np.testing.assert_array_equal(plane_image(display, CORONAL, (1, 2, 1)), display[::-1, 2, :])  # superior on top
    np.testing.assert_array_equal(plane_image(display, SAGITTAL, (3, 2, 1)), display[::-1, :, 3])


# ------------------------------------------------------------------------------------- slices, counters
def test_slices_and_counters_against_voxel_indices():
    model = loaded(ramp_volume())
    assert [model.slice_count(p) for p in (AXIAL, CORONAL, SAGITTAL)] == [NZ, NY, NX]
    k = model.cursor_voxel()[2]
    axial = model.slice_image(AXIAL)
    assert axial.shape == (NY, NX)
    # RAS storage: i grows toward the patient's right (shown on the left), j toward anterior (shown on top)
    assert axial[0, 0] == (NX - 1) * NY * NZ + (NY - 1) * NZ + k
    # axial slices run along k (not flipped here): slice index 2 is voxel k = 2, counter "k = 2 (0–NZ-1)"
    model.set_cursor(model.cursor_for_slice(AXIAL, 2))
    assert model.cursor_voxel()[2] == 2 and model.slice_index(AXIAL) == 2
    assert model.slice_text(AXIAL) == f"k = 2 (0–{NZ - 1})"
    # sagittal slices run from the patient's right: display slice 0 is the last i of RAS data, and the counter says
    # so (the readout's i, not the position on screen)
    model.set_cursor(model.cursor_for_slice(SAGITTAL, 0))
    assert model.cursor_voxel()[0] == NX - 1 and model.slice_text(SAGITTAL) == f"i = {NX - 1} (0–{NX - 1})"
    # coronal slices run from anterior: slice 0 is the last j of RAS data
    model.set_cursor(model.cursor_for_slice(CORONAL, 0))
    assert model.cursor_voxel()[1] == NY - 1
    # out of range: clipped
    assert model.cursor_for_slice(AXIAL, NZ + 10)[2] == NZ - 1
    assert model.cursor_for_slice(AXIAL, -3)[2] == 0
    assert model.set_cursor((-5, 99, 3)) == (0, NY - 1, 3)


@pytest.mark.parametrize("direction", [RAS, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, -1, 1, 0, 0, 0, -1, 0),
                                       (-1, 0, 0, 0, 0, 1, 0, -1, 0)])
def test_slice_counters_name_the_readouts_voxel_index(direction):
    """Issue 15: the coronal counter said "79 / 233" while the readout said j = 154 (a flipped axis). Every view's
    counter is now the readout's index along the axis its slices run along, whatever the storage order."""
    model = loaded(Volume(np.zeros((NZ, NY, NX), np.int16), direction=direction))
    model.set_cursor(model.cursor_for_voxel((3, 5, 7)))
    readout = model.readout()["index"]
    for plane in (AXIAL, CORONAL, SAGITTAL):
        axis = model.slice_axis(plane)
        n = model.slice_count(plane)
        assert model.slice_voxel(plane) == readout[axis]
        assert model.slice_text(plane) == f"{'ijk'[axis]} = {readout[axis]} (0–{n - 1})"
        # the counter's index takes the crosshair back to the same slice
        assert model.cursor_for_slice_voxel(plane, readout[axis]) == model.cursor
        moved = model.cursor_for_slice_voxel(plane, 0)
        assert model.axes.to_index(moved)[axis] == 0
    assert {model.slice_axis(p) for p in (AXIAL, CORONAL, SAGITTAL)} == {0, 1, 2}


def test_pixels_map_to_the_cursor_and_back():
    model = loaded(ramp_volume())
    row, col = 3, 14
    model.set_cursor(model.cursor_for_pixel(AXIAL, row, col))
    assert model.cursor_pixel(AXIAL) == (row, col)
    i, j, k = model.cursor_voxel()
    assert (i, j) == (NX - 1 - col, NY - 1 - row)  # RAS data shown radiologically
    assert model.slice_image(AXIAL)[row, col] == model.readout()["value"]
    # the coronal view has superior at the top: its row 0 is the last axial slice
    model.set_cursor(model.cursor_for_pixel(CORONAL, 0, col))
    assert model.cursor_voxel()[2] == NZ - 1 and model.cursor_pixel(SAGITTAL)[0] == 0
    # mm position in a view -> pixel, clipped to the image
    assert model.pixel_at(AXIAL, 14.5, 3 * 1.5 + 0.7) == (3, 14)
    assert model.pixel_at(AXIAL, -4.0, 1e6) == (NY - 1, 0)


# ------------------------------------------------------------------------------------------------ readout
def test_readout_value_index_world_and_text():
    volume = ramp_volume()
    model = ViewerModel()
    assert model.readout() is None and model.readout_text() == "No image loaded"
    assert model.current_slice_image() is None and model.current_slice_description() == ""
    model.load(volume)
    model.set_cursor(model.cursor_for_voxel((2, 3, 4)))
    readout = model.readout()
    assert readout["index"] == (2, 3, 4) and readout["label"] is None
    assert readout["value"] == volume.array[4, 3, 2] == 2 * NY * NZ + 3 * NZ + 4
    np.testing.assert_allclose(readout["world"], volume.index_to_world((2, 3, 4)), atol=1e-6)
    text = model.readout_text()
    assert "voxel (i, j, k) = (2, 3, 4)" in text and "LPS (mm) = (" in text and f"value = {readout['value']}" in text
    assert model.current_slice_description() == f"ramp.nii (axial slice 5 of {NZ})"
    np.testing.assert_array_equal(model.current_slice_image(), model.slice_image(AXIAL))
    rgb = Volume(np.full((1, 4, 5, 3), (10, 20, 30), np.uint8))
    model.load(rgb)
    assert model.is_rgb and model.planar and model.readout()["value"] == (10, 20, 30)
    assert "value = (10, 20, 30)" in model.readout_text()
    assert model.current_slice_description() == "image"  # one slice: no slice number
    assert model.current_slice_image().shape == (4, 5, 3)


def test_load_refuses_arrays_it_cannot_show():
    model = ViewerModel()
    for shape in ((4, 5, 6, 2), (0, 3, 3)):
        volume = Volume(np.zeros((2, 3, 3), np.float32))
        volume.array = np.zeros(shape, np.float32)  # past Volume's own checks: the model checks again
        with pytest.raises(DataError, match="cannot show an array"):
            model.load(volume)
    assert model.volume is None


# ----------------------------------------------------------------------------------------- window / level
def test_window_level_auto_presets_and_drag():
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 300.0, (6, 20, 24)).astype(np.float32)
    model = loaded(Volume(array))
    lo, hi = np.percentile(array.astype(np.float64), [1, 99])
    assert model.image_levels() == pytest.approx((lo, hi))  # Auto on load
    assert model.preset == next(iter(PRESETS))
    for name, preset in PRESETS.items():
        if preset is None:
            continue
        model.apply_preset(name)
        window, level = preset
        assert model.window_level() == (window, level) and model.preset == name
        assert model.image_levels() == pytest.approx((level - window / 2, level + window / 2))
    model.apply_preset("CT abdomen 400/40")
    with pytest.raises(ValueError, match="unknown window/level preset"):
        model.apply_preset("CT elbow")
    model.apply_preset(CUSTOM)  # keeps what is shown
    assert model.window_level() == (400.0, 40.0) and model.preset == CUSTOM
    rate = model.drag_rate()
    assert rate == pytest.approx((array.max() - array.min()) / 500.0)
    # right/middle drag: right widens, up raises the level; the window never drops below one step
    assert model.window_for_drag((400.0, 40.0), 50, -20) == pytest.approx((400 + 50 * rate, 40 + 20 * rate))
    assert model.window_for_drag((400.0, 40.0), -1e9, 0)[0] == pytest.approx(rate)
    model.set_window_level(0.0, 7.0)
    assert model.window_level() == (1e-6, 7.0) and model.preset == CUSTOM


def test_rgb_levels_and_constant_images():
    model = loaded(Volume(np.zeros((1, 4, 5, 3), np.uint8)))
    assert model.image_levels() == (0.0, 255.0)
    model = loaded(Volume(np.full((2, 3, 4), 5.0, np.float32)))
    low, high = model.image_levels()
    assert high > low and model.window_level()[0] > 0  # a constant image still gets a usable window


def test_metadata_panel_shows_warnings():
    volume = Volume(
        np.zeros((3, 4, 5), np.float32),
        spacing=(0.7, 0.7, 3.0),
        origin=(1.0, 2.0, 3.0),
        metadata={"modality": "MR", "description": "T1 axial", "source": "scan/"},
        warnings=["non-uniform slice spacing (3.0 to 3.5 mm)", "gantry tilt"],
    )
    model = loaded(volume)
    meta = model.metadata_texts()
    assert meta["Modality"] == "MR" and meta["Description"] == "T1 axial"
    assert meta["Size"].startswith("5 × 4 × 3")
    assert meta["Spacing"] == "0.7 × 0.7 × 3 mm"
    assert meta["Origin"] == "(1.00, 2.00, 3.00) mm LPS"
    assert meta["Orientation"] == "LPS"
    assert "non-uniform slice spacing" in meta["Warnings"] and "gantry tilt" in meta["Warnings"]
    assert model.window_level()[0] > 0  # a constant image still gets a usable window
    assert loaded(ramp_volume()).metadata_texts()["Warnings"] == "none"


# ------------------------------------------------------------------------------------------------ overlay
def test_overlay_table_names_colours_and_visibility():
    model = loaded(ramp_volume())
    labels = np.zeros((NZ, NY, NX), np.uint8)
    labels[:, :8, :10] = 1
    labels[:, 8:, 10:] = 7
    model.set_overlay(labels, {1: "liver", 7: "spleen"}, {1: (255, 0, 0), 7: (0.0, 1.0, 0.0)})
    assert model.overlay_names == {1: "liver", 7: "spleen"}
    assert model.overlay.keys.tolist() == [0, 1, 7]
    np.testing.assert_array_equal(model.overlay.table(), [[0, 0, 0, 0], [255, 0, 0, 255], [0, 255, 0, 255]])
    model.set_cursor(model.cursor_for_voxel((2, 3, 4)))  # labels[4, 3, 2] == 1
    assert model.readout()["label"] == 1 and model.readout()["label_name"] == "liver"
    assert "label = 1 liver" in model.readout_text()
    row, col = model.cursor_pixel(AXIAL)
    assert tuple(model.overlay_image(AXIAL)[row, col]) == (255, 0, 0, 255)
    model.set_label_visible(1, False)  # hidden: transparent in every view
    assert not model.label_visible(1) and model.overlay_image(AXIAL)[row, col, 3] == 0
    model.set_label_visible(1, True)
    assert model.overlay_image(AXIAL)[row, col, 3] == 255
    model.set_cursor(model.cursor_for_voxel((15, 12, 4)))
    assert model.readout()["label_name"] == "spleen"
    row, col = model.cursor_pixel(AXIAL)
    assert tuple(model.overlay_image(AXIAL)[row, col][:3]) == (0, 255, 0)
    model.set_cursor(model.cursor_for_voxel((15, 3, 4)))  # background
    assert model.readout()["label"] == 0 and "(background)" in model.readout_text()
    with pytest.raises(KeyError):
        model.set_label_visible(3, False)
    with pytest.raises(ValueError, match="differs from the image"):
        model.set_overlay(labels[:-1], {})
    with pytest.raises(ValueError, match="must be integers"):
        model.set_overlay(labels.astype(np.float32))
    model.set_opacity(1.7)
    assert model.opacity == 1.0
    model.clear_overlay()
    assert model.overlay_labels is None and model.overlay_image(AXIAL) is None and model.overlay_names == {}
    assert model.readout()["label"] is None
    with pytest.raises(RuntimeError, match="load an image"):
        ViewerModel().set_overlay(labels)


def test_overlay_defaults_lists_and_wide_label_types():
    shape = (2, 3, 4)
    labels = np.zeros(shape, np.int64)
    labels[0, 0, :3] = [2, 300, 5]
    overlay = Overlay.from_labels(labels, shape, {300: "big"}, [(1, 2, 3), (4, 5, 6, 7)])
    assert overlay.keys.tolist() == [0, 2, 5, 300]
    assert overlay.names == {2: "label 2", 5: "label 5", 300: "big"}
    assert overlay.colours[2] == (1, 2, 3, 255) and overlay.colours[5] == (4, 5, 6, 7)  # a list: sorted label order
    assert overlay.colours[300] == (*PALETTE[299 % len(PALETTE)], 255)  # none given: the palette
    np.testing.assert_array_equal(overlay.keys[overlay.index], labels)
    many = np.arange(2 * 3 * 50, dtype=np.int64).reshape(2, 3, 50) * 3  # 300 labels: wider index type
    wide = Overlay.from_labels(many, many.shape)
    assert wide.index.dtype == np.int32 and len(wide.keys) == 300
    np.testing.assert_array_equal(wide.keys[wide.index], many)
    mask = Overlay.from_labels(np.ones(shape, bool), shape)
    assert mask.labels.dtype == np.uint8 and mask.keys.tolist() == [0, 1] and mask.names == {1: "label 1"}


def test_rgba_colours():
    assert rgba((255, 0, 0)) == (255, 0, 0, 255)
    assert rgba((0.0, 0.5, 1.0, 0.25)) == (0, 128, 255, 64)
    assert rgba((300, -4, 7, 9)) == (255, 0, 7, 9)
    with pytest.raises(ValueError, match="3 or 4 components"):
        rgba((1, 2))
