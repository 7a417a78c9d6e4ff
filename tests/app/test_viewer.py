"""app.viewer.ViewerWidget: loading (NIfTI, DICOM series folder, 2D image, drop, background reads), linked views,
readout, window/level, orientation letters, overlay (offscreen, pytest-qt). What the views draw comes from
app.viewer.model, tested without Qt in test_viewer_model.py."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox

from app.viewer import PRESETS, SeriesDialog, ViewerWidget
from app.workers import active_workers
from core.io import Volume

DICOM_DIR = Path(get_testdata_file("CT_small.dcm")).parent
CT_SERIES = DICOM_DIR / "dicomdirtests" / "98892001" / "CT5N"  # a real 5-slice CT series, 2.5 mm
CT_SMALL = DICOM_DIR / "CT_small.dcm"
NX, NY, NZ = 20, 16, 12
SPACING = (1.0, 1.5, 2.5)


@pytest.fixture
def viewer(qtbot):
    widget = ViewerWidget()
    qtbot.addWidget(widget)
    widget.resize(1100, 800)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def nifti(tmp_path) -> Path:
    """A RAS NIfTI whose voxel values name their index: value = i * NY * NZ + j * NZ + k."""
    data = np.arange(NX * NY * NZ, dtype=np.int16).reshape(NX, NY, NZ)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    path = tmp_path / "ramp.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture(autouse=True)
def no_dialogs(monkeypatch):
    """Any error dialog is recorded instead of blocking the offscreen test."""
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args, **kw: shown.append(args))
    monkeypatch.setattr(QMessageBox, "information", lambda *args, **kw: shown.append(args))
    return shown


def _click(qtbot, view, row: int, col: int, button=Qt.MouseButton.LeftButton) -> None:
    scene = view.pixel_to_scene(row, col)
    pos = view.graphics.mapFromScene(scene)
    QTest.mouseClick(view.graphics.viewport(), button, Qt.KeyboardModifier.NoModifier, pos)
    QApplication.processEvents()


def _wheel(view, steps: int) -> None:
    viewport = view.graphics.viewport()
    centre = QPointF(viewport.width() / 2, viewport.height() / 2)
    event = QWheelEvent(
        centre,
        viewport.mapToGlobal(centre),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(viewport, event)


def test_nifti_slices_letters_and_metadata(viewer, nifti, no_dialogs):
    assert viewer.load_path(nifti), no_dialogs
    volume = viewer.volume
    assert volume.array.shape == (NZ, NY, NX)
    # slider ranges = slice counts: axial through k (z), coronal through j (y), sagittal through i (x)
    assert viewer.views["axial"].slider.maximum() == NZ - 1
    assert viewer.views["coronal"].slider.maximum() == NY - 1
    assert viewer.views["sagittal"].slider.maximum() == NX - 1
    assert all(view.isVisible() for view in viewer.views.values())
    # radiological convention whatever the storage order (RAS here)
    assert viewer.views["axial"].letters() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert viewer.views["coronal"].letters() == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert viewer.views["sagittal"].letters() == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    axial = viewer.current_slice_image()
    assert axial.shape == (NY, NX)
    k = viewer.cursor_voxel()[2]
    # RAS storage: i grows toward the patient's right (shown on the left), j toward anterior (shown on top)
    assert axial[0, 0] == (NX - 1) * NY * NZ + (NY - 1) * NZ + k
    # physical aspect: the axial image spans NX * 1.0 mm by NY * 1.5 mm
    rect = viewer.views["axial"].image.mapRectToParent(viewer.views["axial"].image.boundingRect())
    assert rect.width() == pytest.approx(NX * SPACING[0])
    assert rect.height() == pytest.approx(NY * SPACING[1])
    meta = viewer.metadata_texts()
    assert meta["Size"].startswith(f"{NX} × {NY} × {NZ}")
    assert "1 × 1.5 × 2.5" in meta["Spacing"]
    assert meta["Orientation"] == "RAS"
    assert str(nifti.name) in meta["Source"]


def test_dicom_series_folder(viewer, no_dialogs):
    assert viewer.load_path(CT_SERIES), no_dialogs
    assert viewer.volume.array.shape[0] == 5
    assert viewer.views["axial"].slider.maximum() == 4
    ny, nx = viewer.volume.array.shape[1:]
    assert viewer.views["coronal"].slider.maximum() == ny - 1
    assert viewer.views["sagittal"].slider.maximum() == nx - 1
    assert viewer.metadata_texts()["Modality"] == "CT"
    assert viewer.views["axial"].letters() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}


def test_click_readout_matches_array_and_world(viewer, nifti, qtbot):
    viewer.load_path(nifti)
    axial = viewer.views["axial"]
    row, col = 3, 14
    _click(qtbot, axial, row, col)
    assert axial.cursor_pixel() == (row, col)
    readout = viewer.readout()
    i, j, k = readout["index"]
    volume = viewer.volume
    assert readout["value"] == volume.array[k, j, i] == viewer.current_slice_image()[row, col]
    assert readout["value"] == i * NY * NZ + j * NZ + k
    assert (i, j) == (NX - 1 - col, NY - 1 - row)  # RAS data shown radiologically
    np.testing.assert_allclose(readout["world"], volume.index_to_world((i, j, k)), atol=1e-6)
    assert f"voxel (i, j, k) = ({i}, {j}, {k})" in viewer.readout_label.text()
    assert "LPS (mm)" in viewer.readout_label.text()
    # a click in the coronal view moves the axial slice (superior at the top of the coronal view)
    _click(qtbot, viewer.views["coronal"], 0, col)
    assert viewer.cursor_voxel()[2] == NZ - 1
    assert viewer.views["axial"].slider.value() == NZ - 1
    assert viewer.views["sagittal"].cursor_pixel()[0] == 0


def test_wheel_and_slider_scroll(viewer, nifti, qtbot):
    viewer.load_path(nifti)
    axial = viewer.views["axial"]
    axial.slider.setValue(2)
    assert viewer.cursor_voxel()[2] == 2
    assert axial.slice_label.text() == f"k = 2 (0–{NZ - 1})"
    _wheel(axial, 1)
    assert viewer.cursor_voxel()[2] == 3
    assert axial.slider.value() == 3
    _wheel(axial, -1)
    _wheel(axial, -1)
    assert viewer.cursor_voxel()[2] == 1
    sagittal = viewer.views["sagittal"]
    sagittal.slider.setValue(0)  # the slider gives the voxel index: i = 0, the patient's leftmost column of RAS data
    assert viewer.cursor_voxel()[0] == 0
    assert sagittal.slider.invertedAppearance()  # ...drawn at the right end, where the view's L is
    assert sagittal.slice_label.text() == f"i = 0 (0–{NX - 1})"
    axial.slider.setValue(NZ + 10)
    assert viewer.cursor_voxel()[2] == NZ - 1


def test_window_level_presets_and_drag(viewer):
    viewer.load_path(CT_SERIES)
    image = viewer.views["axial"].image
    lo, hi = np.percentile(viewer.volume.array.astype(np.float64), [1, 99])
    assert image.levels == pytest.approx([lo, hi])  # Auto on load
    for name, preset in PRESETS.items():
        if preset is None:
            continue
        viewer.preset_combo.setCurrentText(name)
        viewer.preset_combo.activated.emit(viewer.preset_combo.currentIndex())
        window, level = preset
        assert viewer.window_level() == (window, level)
        for view in viewer.views.values():
            assert view.image.levels == pytest.approx([level - window / 2, level + window / 2])
    viewer.apply_preset("CT abdomen 400/40")
    assert viewer.window_spin.value() == 400 and viewer.level_spin.value() == 40
    view = viewer.views["axial"]
    rate = viewer.drag_rate()
    view.window_drag(True, False, 0, 0)
    view.window_drag(False, True, 50, -20)  # right/middle drag: right widens, up raises the level
    assert viewer.window_level() == pytest.approx((400 + 50 * rate, 40 + 20 * rate))
    assert viewer.preset_combo.currentText() == "Custom"
    viewer.window_spin.setValue(100)
    assert image.levels == pytest.approx([viewer.level_spin.value() - 50, viewer.level_spin.value() + 50])


def test_overlay_names_toggles_opacity(viewer, nifti, qtbot):
    viewer.load_path(nifti)
    labels = np.zeros((NZ, NY, NX), np.uint8)
    labels[:, :8, :10] = 1
    labels[:, 8:, 10:] = 7
    viewer.set_overlay(labels, {1: "liver", 7: "spleen"}, {1: (255, 0, 0), 7: "#00ff00"})
    assert viewer.label_list.count() == 2
    assert [viewer.label_list.item(r).text() for r in range(2)] == ["1: liver", "7: spleen"]
    viewer.set_cursor_voxel((2, 3, 4))  # labels[4, 3, 2] == 1
    assert viewer.readout()["label"] == 1 and viewer.readout()["label_name"] == "liver"
    assert "liver" in viewer.readout_label.text()
    axial = viewer.views["axial"]
    row, col = axial.cursor_pixel()
    assert axial.overlay.isVisible()
    assert tuple(axial.overlay.image[row, col]) == (255, 0, 0, 255)
    viewer.set_overlay_opacity(0.3)
    assert axial.overlay.opacity() == pytest.approx(0.3)
    item = viewer.label_list.item(0)
    item.setCheckState(Qt.CheckState.Unchecked)  # the check box hides the label in every view
    assert not viewer.label_visible(1)
    assert axial.overlay.image[row, col, 3] == 0
    viewer.set_label_visible(1, True)
    assert item.checkState() == Qt.CheckState.Checked
    assert axial.overlay.image[row, col, 3] == 255
    viewer.set_cursor_voxel((15, 12, 4))
    assert viewer.readout()["label_name"] == "spleen"
    row, col = axial.cursor_pixel()
    assert tuple(axial.overlay.image[row, col][:3]) == (0, 255, 0)
    with pytest.raises(ValueError):
        viewer.set_overlay(labels[:-1], {})
    viewer.clear_overlay()
    assert viewer.overlay_labels is None and viewer.label_list.count() == 0


def test_2d_image_shows_axial_only(viewer, tmp_path):
    grey = np.zeros((30, 44), np.uint8)
    grey[2:10, 30:40] = 200
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    assert viewer.load_path(path)
    assert viewer.views["axial"].isVisible()
    assert not viewer.views["coronal"].isVisible() and not viewer.views["sagittal"].isVisible()
    assert not viewer.views["axial"].slider.isVisible()
    np.testing.assert_array_equal(viewer.current_slice_image(), grey)
    assert viewer.current_slice_image().dtype == np.uint8
    _click(None, viewer.views["axial"], 5, 35)
    assert viewer.readout()["value"] == 200


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_photograph_has_no_plane_name_and_no_letters(viewer, nifti, tmp_path, suffix):
    """Issue 15: a 2D photograph was titled "Axial" with R/L/A/P letters; it has no patient orientation."""
    photo = np.zeros((30, 44, 3), np.uint8)
    photo[..., 0] = 180
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(photo).save(path)
    assert viewer.load_path(path)
    axial = viewer.views["axial"]
    assert axial.title.text() == "2D image"
    assert set(axial.letters().values()) == {""}
    assert not any(label.isVisible() for label in axial.graphics.letters.values())
    assert "LPS" not in viewer.readout_label.text() and "voxel (i, j, k)" in viewer.readout_label.text()
    assert viewer.metadata_texts()["Orientation"].startswith("none")
    assert viewer.load_path(nifti)  # a volume again: plane names and letters back
    assert axial.title.text() == "Axial" and axial.letters()["left"] == "R"
    assert axial.graphics.letters["left"].isVisible()


def test_orientation_letters_stay_readable_over_a_bright_image(viewer, nifti):
    """Issue 15: the yellow letters vanished over bright areas; they sit on a dark plate now."""
    assert viewer.load_path(nifti)
    viewer.set_window_level(1.0, -10.0)  # every voxel above the window: a white image
    view = viewer.views["axial"]
    view.box.setRange(xRange=(9.0, 11.0), yRange=(11.0, 13.0), padding=0.0)  # zoomed in: white to every edge
    QApplication.processEvents()
    shot = view.graphics.grab().toImage()
    for side in ("top", "left"):
        rect = view.graphics.letters[side].geometry()
        pixels = [shot.pixelColor(x, y) for x in range(rect.left(), rect.right() + 1)
                  for y in range(rect.top(), rect.bottom() + 1)]
        dark = sum(1 for c in pixels if c.lightness() < 90)
        yellow = sum(1 for c in pixels if c.red() > 200 and c.green() > 170 and c.blue() < 150)
        assert dark > len(pixels) // 3, (side, dark, len(pixels))  # the plate behind the letter
        assert yellow > 0  # the letter itself


def test_corrupt_file_shows_dialog_and_viewer_keeps_working(viewer, nifti, tmp_path, no_dialogs):
    assert viewer.load_path(nifti)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 10)
    assert viewer.load_path(bad) is False
    assert len(no_dialogs) == 1
    assert "broken.nii.gz" in no_dialogs[0][2]
    assert viewer.volume.array.shape == (NZ, NY, NX)  # the previous image stays
    assert viewer.load_path(tmp_path / "missing.dcm") is False
    assert len(no_dialogs) == 2
    assert viewer.load_path(CT_SERIES)
    assert viewer.views["axial"].slider.maximum() == 4


def test_folder_with_several_series_asks(viewer, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    shutil.copytree(CT_SERIES, folder)
    shutil.copyfile(CT_SMALL, folder / "ct_small.dcm")
    offered = []

    def choose(series):
        offered.extend(series)
        return max(series, key=lambda s: len(s.files))

    monkeypatch.setattr(viewer, "_choose_series", choose)
    assert viewer.load_path(folder)
    assert len(offered) == 2
    assert viewer.views["axial"].slider.maximum() == 4
    dialog = SeriesDialog(offered, viewer)
    texts = [[dialog.table.item(r, c).text() for c in range(dialog.table.columnCount())] for r in range(2)]
    assert {t[1] for t in texts} == {"CT"}
    assert sorted(t[4] for t in texts) == ["1", "5"]
    assert dialog.selected() is offered[0]
    dialog.table.selectRow(1)
    assert dialog.selected() is offered[1]
    monkeypatch.setattr(viewer, "_choose_series", lambda series: None)  # Cancel keeps the current image
    assert viewer.load_path(folder) is False


def test_drop_a_file(qtbot, viewer, nifti):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(nifti))])
    event = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    with qtbot.waitSignal(viewer.volumeLoaded, timeout=20000):  # read in the background
        viewer.dropEvent(event)
    assert viewer.volume is not None and viewer.volume.array.shape == (NZ, NY, NX)


def _gated_reader(monkeypatch):
    """Replace the viewer's read_volume by one that records its thread and waits for `gate`."""
    import app.viewer.widget as viewer_module

    gate, threads = threading.Event(), []
    real = viewer_module.read_volume

    def read(*args, **kwargs):
        threads.append(threading.current_thread())
        assert gate.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(viewer_module, "read_volume", read)
    return gate, threads


def test_open_button_reads_off_the_gui_thread(qtbot, viewer, nifti, monkeypatch, no_dialogs):
    gate, threads = _gated_reader(monkeypatch)
    monkeypatch.setattr(viewer, "_ask_open_file", lambda: str(nifti))
    qtbot.mouseClick(viewer.open_file_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(threads) == 1)
    # the read blocks in its thread while the GUI thread keeps running: busy state shown, no second open
    assert threads[0] is not threading.main_thread()
    assert viewer.is_loading() and viewer.volume is None
    assert not viewer.open_file_button.isEnabled() and not viewer.open_folder_button.isEnabled()
    assert viewer.hint.text() == "Reading ramp.nii.gz…"
    assert viewer.open_path(nifti) is False
    qtbot.wait(100)  # the event loop runs meanwhile
    with qtbot.waitSignal(viewer.volumeLoaded, timeout=20000):
        gate.set()
    assert viewer.volume.array.shape == (NZ, NY, NX) and not viewer.is_loading()
    assert viewer.open_file_button.isEnabled() and viewer.open_folder_button.isEnabled()
    assert not viewer.hint.isVisible() and not no_dialogs


def test_open_folder_in_background_asks_for_the_series(qtbot, viewer, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    shutil.copytree(CT_SERIES, folder)
    shutil.copyfile(CT_SMALL, folder / "ct_small.dcm")
    monkeypatch.setattr(viewer, "_ask_open_folder", lambda: str(folder))
    offered = []
    monkeypatch.setattr(viewer, "_choose_series", lambda series: offered.append(series) or None)  # Cancel
    qtbot.mouseClick(viewer.open_folder_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(offered) and not viewer.is_loading())
    assert viewer.volume is None and viewer.open_folder_button.isEnabled()
    monkeypatch.setattr(viewer, "_choose_series", lambda series: max(series, key=lambda s: len(s.files)))
    with qtbot.waitSignal(viewer.volumeLoaded, timeout=20000):
        qtbot.mouseClick(viewer.open_folder_button, Qt.MouseButton.LeftButton)
    assert viewer.views["axial"].slider.maximum() == 4


def test_background_read_failure_gives_a_dialog_and_keeps_the_image(qtbot, viewer, nifti, tmp_path, no_dialogs):
    assert viewer.load_path(nifti)
    shown = viewer.volume
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 10)
    assert viewer.open_path(bad)
    qtbot.waitUntil(lambda: not viewer.is_loading() and bool(no_dialogs), timeout=20000)
    assert "broken.nii.gz" in no_dialogs[0][2] and "Traceback" not in no_dialogs[0][2]
    assert viewer.volume is shown and viewer.open_file_button.isEnabled()


def test_shutdown_during_a_read_drops_its_result(qtbot, viewer, nifti, monkeypatch):
    gate, threads = _gated_reader(monkeypatch)
    loaded = []
    viewer.volumeLoaded.connect(loaded.append)
    assert viewer.open_path(nifti)
    qtbot.waitUntil(lambda: len(threads) == 1)
    gate.set()
    viewer.shutdown()  # waits for the thread
    assert not viewer.is_loading() and not active_workers(viewer)
    qtbot.wait(50)  # whatever the thread emitted is delivered now, and dropped
    assert loaded == [] and viewer.volume is None


def test_metadata_panel_shows_the_models_texts_and_warnings(viewer):
    """The panel shows what the model formats (formatting: test_viewer_model.test_metadata_panel_shows_warnings)."""
    volume = Volume(
        np.zeros((3, 4, 5), np.float32),
        spacing=(0.7, 0.7, 3.0),
        metadata={"modality": "MR", "description": "T1 axial", "source": "scan/"},
        warnings=["non-uniform slice spacing (3.0 to 3.5 mm)", "gantry tilt"],
    )
    viewer.load_volume(volume)
    meta = viewer.metadata_texts()
    assert meta == viewer.model.metadata_texts()
    assert meta["Modality"] == "MR" and "gantry tilt" in meta["Warnings"]
    assert viewer.window_level()[0] > 0  # a constant image still gets a usable window
    assert _ink(viewer.warnings_label) == pytest.approx((200, 120, 0), abs=12)  # warnings: orange
    volume.warnings = []
    viewer.load_volume(volume)
    assert viewer.metadata_texts()["Warnings"] == "none"
    # Issue 15: "Warnings: none" was orange; now it is in the colour of the other fields
    assert _ink(viewer.warnings_label) == _ink(viewer.meta_labels["Modality"])


def _ink(label) -> tuple[int, int, int]:
    """The colour a label's text is drawn in (rendered, style sheets included): its pixel furthest from the
    background."""
    image = label.grab().toImage()
    back = label.palette().color(label.backgroundRole())
    colours = [image.pixelColor(x, y) for x in range(image.width()) for y in range(image.height())]
    ink = max(colours, key=lambda c: abs(c.red() - back.red()) + abs(c.green() - back.green())
              + abs(c.blue() - back.blue()))
    return ink.red(), ink.green(), ink.blue()
