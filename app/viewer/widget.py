"""The image viewer tab: axial, coronal and sagittal `SliceView`s of one volume linked by a crosshair,
window/level, orientation letters, a voxel readout, a metadata panel and a label-map overlay.

The state and arithmetic live in `ViewerModel` (app.viewer.model, no Qt); this widget lays out the views and
controls, loads images (a background `Worker` for the open buttons and drag and drop), forwards input to the
model and redraws what changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.errors import details_of, plain_message, worker_message
from app.settings import remember_dir, start_dir
from app.viewer.model import CUSTOM, META_FIELDS, PLANES, PRESETS, DisplayAxes, ViewerModel
from app.viewer.series_dialog import SeriesDialog
from app.viewer.slice_view import SliceView
from app.workers import Worker, await_workers
from core.errors import DataError, LorkdError
from core.io import SeriesInfo, Volume, list_series, read_volume

__all__ = ["ViewerWidget"]

WARNING_STYLE = "color: rgb(200, 120, 0);"


def _qt_colour(colour):
    """A colour name ("red", "#00ff00") or QColor as an (r, g, b, a) tuple; anything else unchanged (the model
    reads tuples of ints or 0-1 floats)."""
    if isinstance(colour, str):
        colour = QColor(colour)
    if isinstance(colour, QColor):
        return colour.red(), colour.green(), colour.blue(), colour.alpha()
    return colour


class ViewerWidget(QWidget):
    """The image viewer tab. Load with `open_path` (file or DICOM folder, read off the GUI thread: the open
    buttons and drag and drop use it), `load_path` (the same, blocking) or `load_volume`.

    Signals: `volumeLoaded(Volume)`, `cursorChanged((i, j, k))`, `overlayChanged()`, `logged(text)` (what the
    app's log should keep: an unexpected error's traceback; the main window writes it to the Monitor log).
    """

    volumeLoaded = Signal(object)
    logged = Signal(str)
    cursorChanged = Signal(object)
    overlayChanged = Signal()

    HINT = "Drop a DICOM folder or an image file (NIfTI, NRRD, MHA, DICOM, PNG, JPEG, .npy) here"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.model = ViewerModel()
        self._reader: Worker | None = None  # the read in flight (open_path) whose result is shown
        self._build()
        self._set_enabled(False)

    # ------------------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        self.open_file_button = QPushButton("Open image…")
        self.open_file_button.clicked.connect(self._open_file_clicked)
        self.open_folder_button = QPushButton("Open DICOM folder…")
        self.open_folder_button.clicked.connect(self._open_folder_clicked)
        self.hint = QLabel(self.HINT)
        self.hint.setStyleSheet("color: gray;")
        top = QHBoxLayout()
        top.addWidget(self.open_file_button)
        top.addWidget(self.open_folder_button)
        top.addWidget(self.hint)
        top.addStretch(1)

        self.views = {name: SliceView(self, plane) for name, plane in PLANES.items()}
        self.metadata_box = self._build_metadata()
        self.grid = grid = QGridLayout()
        grid.setSpacing(4)
        for i in range(2):
            grid.setColumnStretch(i, 1)
            grid.setRowStretch(i, 1)
        self._arrange_views(planar=False)

        side = QVBoxLayout()
        side.addWidget(self._build_window_level())
        side.addWidget(self._build_overlay())
        side.addStretch(1)
        side_widget = QWidget()
        side_widget.setLayout(side)
        side_widget.setFixedWidth(270)

        middle = QHBoxLayout()
        middle.addLayout(grid, 1)
        middle.addWidget(side_widget)

        self.readout_label = QLabel("No image loaded")
        self.readout_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(middle, 1)
        layout.addWidget(self.readout_label)

    def _arrange_views(self, planar: bool) -> None:
        """2x2 grid (axial, coronal / sagittal, metadata); one slice: the axial view and the metadata only."""
        grid = self.grid
        widgets = [*self.views.values(), self.metadata_box]
        for widget in widgets:
            grid.removeWidget(widget)
        if planar:
            grid.addWidget(self.views["axial"], 0, 0, 2, 1)
            grid.addWidget(self.metadata_box, 0, 1, 2, 1)
        else:
            grid.addWidget(self.views["axial"], 0, 0)
            grid.addWidget(self.views["coronal"], 0, 1)
            grid.addWidget(self.views["sagittal"], 1, 0)
            grid.addWidget(self.metadata_box, 1, 1)
        for name in ("coronal", "sagittal"):
            self.views[name].setVisible(not planar)
        grid.setColumnStretch(0, 2 if planar else 1)

    def _build_window_level(self) -> QGroupBox:
        box = QGroupBox("Window / level")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([*PRESETS, CUSTOM])
        self.preset_combo.activated.connect(lambda _i: self.apply_preset(self.preset_combo.currentText()))
        self.window_spin = QDoubleSpinBox()
        self.level_spin = QDoubleSpinBox()
        for spin in (self.window_spin, self.level_spin):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._spins_changed)
        self.window_spin.setMinimum(1e-6)
        form = QFormLayout(box)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Window", self.window_spin)
        form.addRow("Level", self.level_spin)
        hint = QLabel(
            "Right/middle drag: window ↔, level ↕\nWheel: slices · Ctrl+wheel: zoom\nLeft: crosshair · Shift+drag: pan"
        )
        hint.setStyleSheet("color: gray; font-size: 9pt;")
        form.addRow(hint)
        self.fit_button = QPushButton("Fit views")
        self.fit_button.clicked.connect(self.fit_views)
        form.addRow(self.fit_button)
        return box

    def _build_overlay(self) -> QGroupBox:
        box = QGroupBox("Overlay")
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(round(100 * self.model.opacity)))
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        self.label_list = QListWidget()
        self.label_list.setMinimumHeight(120)
        self.label_list.itemChanged.connect(self._label_item_changed)
        self.overlay_info = QLabel("No overlay")
        self.overlay_info.setStyleSheet("color: gray;")
        layout = QFormLayout(box)
        layout.addRow("Opacity", self.opacity_slider)
        layout.addRow(self.overlay_info)
        layout.addRow(self.label_list)
        return box

    META_FIELDS = META_FIELDS

    def _build_metadata(self) -> QGroupBox:
        box = QGroupBox("Image")
        form = QFormLayout(box)
        self.meta_labels: dict[str, QLabel] = {}
        for name in self.META_FIELDS:
            label = QLabel("—")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.meta_labels[name] = label
            form.addRow(name, label)
        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        form.addRow("Warnings", self.warnings_label)
        return box

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.preset_combo, self.window_spin, self.level_spin, self.fit_button):
            widget.setEnabled(enabled)

    # ------------------------------------------------------------------------------------ file dialogs
    def _ask_open_file(self) -> str | None:
        """File dialog (tests monkeypatch this)."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open image",
            start_dir("images"),
            "Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.dcm *.png *.jpg *.jpeg *.npy);;All files (*)",
        )
        remember_dir("images", path)
        return path or None

    def _ask_open_folder(self) -> str | None:
        """Folder dialog (tests monkeypatch this)."""
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder", start_dir("images"))
        if path:
            remember_dir("images", Path(path).parent)  # the next series folder is likely a sibling
        return path or None

    def _choose_series(self, series: list[SeriesInfo]) -> SeriesInfo | None:
        """Series picker for a folder with several series (tests monkeypatch this)."""
        dialog = SeriesDialog(series, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.selected()

    def _show_error(self, message: str) -> None:
        QMessageBox.critical(self, "Cannot open image", message)

    def _report(self, error: BaseException) -> None:
        """An error dialog in plain words; an unexpected error's type and traceback go to the log."""
        if not isinstance(error, LorkdError | OSError):
            self._log_details(details_of(error))
        self._show_error(plain_message(error, "opening the image"))

    def _log_details(self, details: str) -> None:
        print(details, file=sys.stderr)
        self.logged.emit(details.rstrip())

    def _open_file_clicked(self) -> None:
        path = self._ask_open_file()
        if path:
            self.open_path(path)

    def _open_folder_clicked(self) -> None:
        path = self._ask_open_folder()
        if path:
            self.open_path(path)

    # ---------------------------------------------------------------------------------------- loading
    def _pick_series(self, path: Path, series: list[SeriesInfo]) -> str | None:
        """The series UID to read from a DICOM folder (the user picks when there are several); None when the
        user cancelled the choice."""
        if not series:
            raise DataError(f"{path}: no DICOM image series in this folder")
        if len(series) == 1:
            return series[0].uid
        chosen = self._choose_series(series)
        return None if chosen is None else chosen.uid

    def load_path(self, path: str | Path) -> bool:
        """Load an image file or a DICOM folder (asking which series when it holds several), blocking.

        Returns True when an image was loaded; problems are shown in a dialog and return False (the
        previous image stays).
        """
        path = Path(path)
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            uid = None
            if path.is_dir():
                series = list_series(path)
                QApplication.restoreOverrideCursor()
                try:
                    uid = self._pick_series(path, series)
                finally:
                    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
                if uid is None:
                    return False
            volume = read_volume(path, series_uid=uid) if uid else read_volume(path)
            self.load_volume(volume)
        except Exception as error:  # LorkdError or a reader bug: a dialog, the app keeps running
            QApplication.restoreOverrideCursor()
            self._report(error)
            return False
        QApplication.restoreOverrideCursor()
        return True

    def open_path(self, path: str | Path) -> bool:
        """Read an image file or a DICOM folder in a background thread, then show it.

        The window stays responsive while a large series is scanned and read; the open buttons are off and
        the hint line says what is being read. Afterwards `volumeLoaded` is emitted, or an error dialog is
        shown (the previous image stays). Returns False when a read is already in flight (nothing started).
        """
        if self.is_loading():
            return False
        path = Path(path)
        if path.is_dir():
            self._start_reader(lambda _progress: list_series(path), f"Scanning {path.name} for DICOM series",
                               lambda series: self._read_series(path, series))
        else:
            self._start_reader(lambda _progress: read_volume(path), f"Reading {path.name}", self.load_volume)
        return True

    def _read_series(self, path: Path, series: list[SeriesInfo]) -> None:
        uid = self._pick_series(path, series)
        if uid is not None:
            self._start_reader(lambda _progress: read_volume(path, series_uid=uid), f"Reading {path.name}",
                               self.load_volume)

    def _start_reader(self, fn, what: str, on_success) -> None:
        worker = Worker(fn, owner=self, name="lorkd-read")
        worker.returned.connect(lambda result, w=worker: self._reader_done(w, on_success, result))
        worker.errored.connect(lambda message, details, user_error, w=worker:
                               self._reader_done(w, None, (message, details, user_error)))
        self._reader = worker
        self._show_reading(what + "…")
        worker.start()

    def _reader_done(self, worker: Worker, on_success, result) -> None:
        """`on_success(result)` on the GUI thread; on_success None: the read failed, result is the worker's
        (message, details, user error)."""
        if worker is not self._reader:  # dropped at shutdown
            return
        self._reader = None
        self._show_reading(None)
        if on_success is None:
            message, details, user_error = result
            if not user_error:
                self.logged.emit(details.rstrip())  # the worker printed it to stderr already
            self._show_error(worker_message(message, user_error, "opening the image"))
            return
        try:
            on_success(result)
        except Exception as error:  # e.g. an array that cannot be shown: a dialog, the app keeps running
            self._report(error)

    def _show_reading(self, text: str | None) -> None:
        """Busy state while a background read runs: open buttons off, the hint line says what is read."""
        for button in (self.open_file_button, self.open_folder_button):
            button.setEnabled(text is None)
        if text is not None:
            self.hint.setText(text)
            self.hint.setVisible(True)
        else:
            self.hint.setText(self.HINT)
            self.hint.setVisible(self.volume is None)

    def is_loading(self) -> bool:
        """True while `open_path` is reading."""
        return self._reader is not None

    def wait_idle(self, timeout_ms: int | None = 30000) -> bool:
        """Block until every background read has finished (None: however long it takes) and delivered its
        result."""
        return await_workers(timeout_ms, owner=self)

    def shutdown(self) -> None:
        """Closing: drop the result of a read in flight and wait until its thread has ended."""
        if self._reader is not None:
            self._reader.abort()
            self._reader = None
        self.wait_idle(None)

    def load_volume(self, volume: Volume) -> None:
        """Show `volume` (any previous overlay is removed); the crosshair goes to the centre."""
        model = self.model
        model.load(volume)
        self._fill_label_list()
        span = model.data_range[1] - model.data_range[0]
        for spin in (self.window_spin, self.level_spin):
            spin.setDecimals(1 if span >= 100 else 3 if span >= 1 else 6)
            spin.setSingleStep(max(span / 100.0, 10.0 ** -spin.decimals()))
        planar = model.planar
        self._arrange_views(planar)
        for view in self.views.values():
            view.reset()
        self.views["axial"].slider.setVisible(not planar)
        self.views["axial"].slice_label.setVisible(not planar)
        self.hint.setVisible(False)
        self._set_enabled(not model.is_rgb)
        self._fill_metadata()
        if not model.is_rgb:
            self._show_window_level()
        self.set_cursor(model.cursor)
        self.volumeLoaded.emit(volume)

    # the model's state, read-only here (change it through the methods below so that the views follow)
    @property
    def volume(self) -> Volume | None:
        """The volume shown, or None."""
        return self.model.volume

    @property
    def axes(self) -> DisplayAxes | None:
        """How the volume's index axes map to the display axes (see `DisplayAxes`)."""
        return self.model.axes

    @property
    def display(self) -> np.ndarray | None:
        """The volume as a [z, y, x] view in display order."""
        return self.model.display

    @property
    def cursor(self) -> tuple[int, int, int]:
        """The crosshair's display index (x, y, z)."""
        return self.model.cursor

    @property
    def is_rgb(self) -> bool:
        """An RGB image is shown (no window/level)."""
        return self.model.is_rgb

    def _fill_metadata(self) -> None:
        texts = self.model.metadata_texts()
        for name in META_FIELDS:
            self.meta_labels[name].setText(texts[name])
            self.meta_labels[name].setToolTip(texts[name])
        self.warnings_label.setText(texts["Warnings"])
        # orange only when there is something to heed; "none" in the panel's normal colour
        self.warnings_label.setStyleSheet(WARNING_STYLE if self.model.volume.warnings else "")

    def metadata_texts(self) -> dict[str, str]:
        """What the metadata panel shows, by field (plus "Warnings")."""
        texts = {name: label.text() for name, label in self.meta_labels.items()}
        texts["Warnings"] = self.warnings_label.text()
        return texts

    # ------------------------------------------------------------------------------------- drag & drop
    def dragEnterEvent(self, event):  # noqa: N802 - Qt API
        if not self.is_loading() and self._dropped_path(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event):  # noqa: N802 - Qt API
        self.dragEnterEvent(event)

    def dropEvent(self, event):  # noqa: N802 - Qt API
        path = self._dropped_path(event.mimeData())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_path(path)

    @staticmethod
    def _dropped_path(mime) -> str | None:
        if mime is None or not mime.hasUrls():
            return None
        for url in mime.urls():
            if url.isLocalFile():
                return url.toLocalFile()
        return None

    # ------------------------------------------------------------------------------------ crosshair
    def set_cursor(self, display: tuple[int, int, int]) -> None:
        """Move the crosshair to display index (x, y, z) (see `DisplayAxes`) and redraw every view."""
        if self.model.volume is None:
            return
        self.model.set_cursor(display)
        for view in self.views.values():
            if view.isVisibleTo(self) or view.plane.name == "axial":
                view.refresh()
        self._update_readout()
        self.cursorChanged.emit(self.cursor_voxel())

    def set_cursor_voxel(self, ijk: tuple[int, int, int]) -> None:
        """Move the crosshair to voxel index (i, j, k)."""
        if self.model.volume is not None:
            self.set_cursor(self.model.cursor_for_voxel(ijk))

    def cursor_voxel(self) -> tuple[int, int, int] | None:
        """Voxel index (i, j, k) under the crosshair."""
        return self.model.cursor_voxel()

    def readout(self) -> dict | None:
        """Voxel index (i, j, k), world position (LPS mm), value and overlay label under the crosshair."""
        return self.model.readout()

    def _update_readout(self) -> None:
        self.readout_label.setText(self.model.readout_text())

    def fit_views(self) -> None:
        """Zoom every view to show its whole image."""
        for view in self.views.values():
            view.box.autoRange(padding=0.0)

    # --------------------------------------------------------------------------------- window / level
    def window_level(self) -> tuple[float, float]:
        """(window width, level) now shown."""
        return self.model.window_level()

    def image_levels(self) -> tuple[float, float]:
        """(low, high) display levels of the greyscale image."""
        return self.model.image_levels()

    def drag_rate(self) -> float:
        """Window/level change per screen pixel of a right/middle drag."""
        return self.model.drag_rate()

    def apply_preset(self, name: str, refresh: bool = True) -> None:
        """Apply a preset of `PRESETS` (Auto = 1st-99th percentile of the volume)."""
        self.model.apply_preset(name)
        if name != CUSTOM:  # "Custom" keeps the window/level shown
            self._window_level_changed(refresh)

    def set_window_level(self, window: float, level: float, preset: str = CUSTOM, refresh: bool = True) -> None:
        """Show intensities level ± window / 2 (from black to white)."""
        self.model.set_window_level(window, level, preset)
        self._window_level_changed(refresh)

    def _window_level_changed(self, refresh: bool) -> None:
        self._show_window_level()
        if refresh and self.model.volume is not None:
            for view in self.views.values():
                view.refresh_levels()

    def _show_window_level(self) -> None:
        """The preset box and spin boxes show the model's window/level (without feeding back)."""
        window, level = self.model.window_level()
        for widget, value in ((self.preset_combo, None), (self.window_spin, window), (self.level_spin, level)):
            widget.blockSignals(True)
            if value is None:
                widget.setCurrentText(self.model.preset)
            else:
                widget.setValue(value)
            widget.blockSignals(False)

    def _spins_changed(self, _value: float) -> None:
        self.set_window_level(self.window_spin.value(), self.level_spin.value(), preset=CUSTOM)

    # -------------------------------------------------------------------------------------- overlay
    def set_overlay(
        self,
        labels: np.ndarray,
        names: dict[int, str] | None = None,
        colours: dict[int, object] | list | None = None,
    ) -> None:
        """Show a label map (Z, Y, X) ints on the same grid as the image.

        names: label value -> name (others are called "label N"); colours: label value -> (r, g, b[, a])
        0-255 ints, 0-1 floats, a colour name or QColor; or a list in the order of the sorted non-zero labels.
        Label 0 is background (transparent).
        """
        if isinstance(colours, (list, tuple)):
            colours = [_qt_colour(c) for c in colours]
        elif colours is not None:
            colours = {k: _qt_colour(c) for k, c in colours.items()}
        self.model.set_overlay(labels, names, colours)
        self._overlay_changed()
        self._fill_label_list()
        self.overlayChanged.emit()

    def clear_overlay(self) -> None:
        """Remove the overlay."""
        self.model.clear_overlay()
        self._fill_label_list()
        self._overlay_changed()
        self.overlayChanged.emit()

    @property
    def overlay_labels(self) -> np.ndarray | None:
        """The label map (Z, Y, X) shown, or None."""
        return self.model.overlay_labels

    @property
    def overlay_names(self) -> dict[int, str]:
        """Label value -> name of the overlay's labels."""
        return self.model.overlay_names

    def overlay_display(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(label positions in display order [z, y, x], RGBA table) for the views; None without overlay."""
        return self.model.overlay_display

    def overlay_opacity(self) -> float:
        """Opacity of the overlay, 0-1."""
        return self.model.opacity

    def set_overlay_opacity(self, opacity: float) -> None:
        """Set the overlay's opacity, 0-1 (its slider follows)."""
        self.opacity_slider.setValue(int(round(100 * float(np.clip(opacity, 0.0, 1.0)))))

    def set_label_visible(self, label: int, visible: bool) -> None:
        """Show or hide one label of the overlay (its check box follows)."""
        if self.model.overlay is None or int(label) not in self.model.overlay.visible:
            raise KeyError(f"no label {label} in the overlay")
        for row in range(self.label_list.count()):
            item = self.label_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == int(label):
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
                return

    def label_visible(self, label: int) -> bool:
        """Whether a label of the overlay is shown."""
        return self.model.label_visible(label)

    def _overlay_changed(self) -> None:
        """Redraw the overlay in every view and the readout (its label)."""
        for view in self.views.values():
            view.refresh_overlay()
        if self.model.volume is not None:
            self._update_readout()

    def _fill_label_list(self) -> None:
        self.label_list.blockSignals(True)
        self.label_list.clear()
        overlay = self.model.overlay
        if overlay is None:
            self.overlay_info.setText("No overlay")
        else:
            self.overlay_info.setText(f"{len(overlay.visible)} labels (uncheck to hide)")
            for key in overlay.visible:
                r, g, b, _a = overlay.colours[key]
                pixmap = QPixmap(12, 12)
                pixmap.fill(QColor(r, g, b))
                item = QListWidgetItem(QIcon(pixmap), f"{key}: {overlay.names[key]}")
                item.setData(Qt.ItemDataRole.UserRole, key)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if overlay.visible[key] else Qt.CheckState.Unchecked)
                self.label_list.addItem(item)
        self.label_list.blockSignals(False)

    def _label_item_changed(self, item: QListWidgetItem) -> None:
        if self.model.overlay is None:
            return
        key = int(item.data(Qt.ItemDataRole.UserRole))
        self.model.set_label_visible(key, item.checkState() == Qt.CheckState.Checked)
        self._overlay_changed()

    def _opacity_changed(self, value: int) -> None:
        self.model.set_opacity(value / 100.0)
        for view in self.views.values():
            view.refresh_opacity()

    # ----------------------------------------------------------------------------------- for experts
    def current_slice_image(self) -> np.ndarray | None:
        """The 2D array the axial view shows, (H, W) or (H, W, 3), in the image's own dtype (row 0 at the
        top, patient's right on the left); None when nothing is loaded."""
        return self.model.current_slice_image()

    def current_slice_description(self) -> str:
        """Where the axial slice comes from, e.g. 'ct.nii.gz (axial slice 12 of 40)'."""
        return self.model.current_slice_description()
