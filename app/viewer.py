"""Image viewer: axial, coronal and sagittal views of one volume linked by a crosshair, window/level, orientation
letters, a voxel readout, a metadata panel and a label-map overlay.

Display convention (radiological, as DICOM viewers show it): the volume's index axes (i, j, k) are matched
to the nearest patient axes through the direction cosines and shown without resampling, so the axial view
has anterior at the top and the patient's right on the left of the screen; coronal and sagittal views have
superior at the top (sagittal: anterior on the left). The letters on each side come from the direction
cosines of what is shown (an oblique volume gets two letters, e.g. "LA"). World coordinates are LPS
millimetres (the DICOM / ITK convention), labelled so in the readout.

Mouse: left click or drag sets the crosshair in all three views; right or middle drag changes window
(horizontal) and level (vertical); the wheel scrolls slices (Ctrl+wheel zooms, Shift+left drag pans).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.workers import Worker, await_workers, error_message
from core.data.volume import SeriesInfo, Volume, list_series, orientation_code, read_volume

__all__ = ["PRESETS", "SeriesDialog", "SliceView", "ViewerWidget"]

# name -> (window, level); None = 1st-99th percentile of the volume
PRESETS: dict[str, tuple[float, float] | None] = {
    "Auto (1-99 %)": None,
    "CT brain 80/40": (80.0, 40.0),
    "CT abdomen 400/40": (400.0, 40.0),
    "CT lung 1500/-600": (1500.0, -600.0),
    "CT bone 1800/400": (1800.0, 400.0),
}
CUSTOM = "Custom"

# ITK-SNAP-like label colours for labels without a given colour (label value -> colour, cycled)
PALETTE = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 239, 213),
    (0, 0, 205), (205, 133, 63), (210, 180, 140), (102, 205, 170), (0, 0, 128), (0, 139, 139),
    (46, 139, 87), (255, 228, 225), (106, 90, 205), (221, 160, 221), (233, 150, 122), (165, 42, 42),
]
_POSITIVE = "LPS"  # LPS: +x toward the patient's left, +y posterior, +z superior
_NEGATIVE = "RAI"
_CROSSHAIR = (255, 200, 0, 160)


# --------------------------------------------------------------------------------------------- geometry
def direction_letters(vector: np.ndarray, threshold: float = 0.25) -> str:
    """Patient side a direction (LPS) points to: "L", "P", ... or two/three letters for an oblique one,
    strongest first (components below `threshold` of a unit vector are left out)."""
    v = np.asarray(vector, dtype=float)
    order = np.argsort(-np.abs(v))
    letters = [(_POSITIVE if v[a] > 0 else _NEGATIVE)[a] for a in order if abs(v[a]) >= threshold]
    return "".join(letters) or "?"


@dataclass(frozen=True)
class DisplayAxes:
    """How the volume's index axes (i, j, k) map to the display axes x (R->L), y (A->P), z (I->S).

    `world_of[c]`: the patient axis (0 x, 1 y, 2 z) index axis c is shown along; `flip[c]`: index axis c runs
    against it; `sizes`: (n_i, n_j, n_k); `vectors[:, w]`: LPS direction of increasing display index along
    display axis w. The display array is a view (no copy) indexed [z, y, x].
    """

    world_of: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    sizes: tuple[int, int, int]
    spacing: tuple[float, float, float]
    vectors: np.ndarray

    @classmethod
    def from_volume(cls, volume: Volume) -> DisplayAxes:
        array = volume.array
        sizes = (int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
        m = np.asarray(volume.direction, dtype=float).reshape(3, 3)  # m[world, index axis]
        if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-6:
            m = np.eye(3)
        perm = max(itertools.permutations(range(3)), key=lambda p: sum(abs(m[p[c], c]) for c in range(3)))
        flip = [bool(m[perm[c], c] < 0) for c in range(3)]
        if sizes[2] == 1:  # one slice: reorient in-plane only, and only when the slice is axial
            if perm[2] != 2:
                perm, flip = (0, 1, 2), [False, False, False]
            flip[2] = False
        vectors = np.zeros((3, 3))
        for c in range(3):
            vectors[:, perm[c]] = m[:, c] * (-1.0 if flip[c] else 1.0)
        spacing = tuple(float(s) for s in volume.spacing)
        return cls(tuple(perm), tuple(flip), sizes, spacing, vectors)

    def index_axis(self, w: int) -> int:
        """The index axis (0 i, 1 j, 2 k) shown along display axis w."""
        return self.world_of.index(w)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Display sizes along (x, y, z)."""
        return tuple(self.sizes[self.index_axis(w)] for w in range(3))

    @property
    def display_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along display (x, y, z)."""
        return tuple(abs(self.spacing[self.index_axis(w)]) or 1.0 for w in range(3))

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """View of a (k, j, i[, c]) array indexed [z, y, x(, c)] in display order."""
        order = [2 - self.index_axis(w) for w in (2, 1, 0)]
        view = np.transpose(array, order + list(range(3, array.ndim)))
        for a, w in enumerate((2, 1, 0)):
            if self.flip[self.index_axis(w)]:
                view = np.flip(view, axis=a)
        return view

    def to_index(self, display: tuple[int, int, int]) -> tuple[int, int, int]:
        """Display (x, y, z) -> voxel index (i, j, k)."""
        ijk = [0, 0, 0]
        for w in range(3):
            c = self.index_axis(w)
            ijk[c] = self.sizes[c] - 1 - int(display[w]) if self.flip[c] else int(display[w])
        return tuple(ijk)

    def to_display_index(self, ijk: tuple[int, int, int]) -> tuple[int, int, int]:
        """Voxel index (i, j, k) -> display (x, y, z)."""
        d = [0, 0, 0]
        for c in range(3):
            w = self.world_of[c]
            d[w] = self.sizes[c] - 1 - int(ijk[c]) if self.flip[c] else int(ijk[c])
        return tuple(d)


@dataclass(frozen=True)
class Plane:
    """One view: the display axis it cuts across, the axes shown as rows and columns, rows flipped (so that
    superior is at the top)."""

    name: str
    normal: int
    rows: int
    cols: int
    flip_rows: bool


PLANES = {
    "axial": Plane("axial", normal=2, rows=1, cols=0, flip_rows=False),
    "coronal": Plane("coronal", normal=1, rows=2, cols=0, flip_rows=True),
    "sagittal": Plane("sagittal", normal=0, rows=2, cols=1, flip_rows=True),
}


def plane_image(display: np.ndarray, plane: Plane, cursor: tuple[int, int, int]) -> np.ndarray:
    """The 2D (rows, cols[, c]) image a plane shows through `cursor` (display x, y, z) of a [z, y, x] array."""
    index: list = [slice(None)] * 3
    index[2 - plane.normal] = int(cursor[plane.normal])
    image = display[tuple(index)]  # the two remaining axes are (rows, cols) for every plane
    return image[::-1] if plane.flip_rows else image


# ------------------------------------------------------------------------------------------------ views
class _SliceViewBox(pg.ViewBox):
    """ViewBox with viewer mouse bindings (see the module docstring)."""

    def __init__(self, view: SliceView) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._view = view

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt API
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        if delta:
            self._view.scroll(1 if delta > 0 else -1)
        ev.accept()

    def mouseClickEvent(self, ev):  # noqa: N802 - Qt API
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._view.point_at(self.mapSceneToView(ev.scenePos()))
        else:
            ev.ignore()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt API
        button = ev.button()
        if button in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            ev.accept()
            delta = ev.screenPos() - ev.buttonDownScreenPos()
            self._view.window_drag(ev.isStart(), ev.isFinish(), delta.x(), delta.y())
        elif button == Qt.MouseButton.LeftButton and not ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            ev.accept()
            self._view.point_at(self.mapSceneToView(ev.scenePos()))
        else:
            super().mouseDragEvent(ev, axis)


class _LetteredView(pg.GraphicsView):
    """GraphicsView with orientation letters fixed at the middle of each side (they do not pan or zoom)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.letters: dict[str, QLabel] = {}
        for side in ("top", "bottom", "left", "right"):
            label = QLabel("", self)
            label.setStyleSheet("color: rgb(255, 220, 80); font-weight: bold; background: transparent;")
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self.letters[side] = label

    def resizeEvent(self, ev):  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self.place_letters()

    def place_letters(self) -> None:
        w, h = self.width(), self.height()
        for side, label in getattr(self, "letters", {}).items():  # resizeEvent runs inside __init__
            label.adjustSize()
            lw, lh = label.width(), label.height()
            x = {"left": 4, "right": w - lw - 4}.get(side, (w - lw) // 2)
            y = {"top": 2, "bottom": h - lh - 2}.get(side, (h - lh) // 2)
            label.move(x, y)


class SliceView(QWidget):
    """One plane of the viewer: image + overlay + crosshair in a ViewBox (mm coordinates), a slice slider."""

    def __init__(self, viewer: ViewerWidget, plane: Plane) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.plane = plane
        self.title = QLabel(plane.name.capitalize())
        self.graphics = _LetteredView(self)
        self.graphics.setMinimumSize(160, 160)
        self.box = _SliceViewBox(self)
        self.graphics.setCentralItem(self.box)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(5)
        self.box.addItem(self.image)
        self.box.addItem(self.overlay)
        pen = pg.mkPen(_CROSSHAIR, width=1)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        for line in (self.vline, self.hline):
            line.setZValue(10)
            self.box.addItem(line, ignoreBounds=True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._slider_moved)
        self.slice_label = QLabel("")
        self.slice_label.setMinimumWidth(60)
        self.slice_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bottom = QHBoxLayout()
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.slice_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(bottom)
        self._shape: tuple[int, int] | None = None
        self._wl_start: tuple[float, float] | None = None

    # geometry of the plane in the current volume
    def _pixel_size(self) -> tuple[float, float]:
        sp = self.viewer.axes.display_spacing
        return sp[self.plane.cols], sp[self.plane.rows]

    def _n(self, w: int) -> int:
        return self.viewer.axes.shape[w]

    def reset(self) -> None:
        """A new volume: slider range, letters, image rectangle, zoom to fit."""
        axes = self.viewer.axes
        n = self._n(self.plane.normal)
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.blockSignals(False)
        self.slider.setEnabled(n > 1)
        plane = self.plane
        col_vec = axes.vectors[:, plane.cols]
        row_vec = axes.vectors[:, plane.rows] * (-1.0 if plane.flip_rows else 1.0)
        letters = self.graphics.letters
        letters["right"].setText(direction_letters(col_vec))
        letters["left"].setText(direction_letters(-col_vec))
        letters["bottom"].setText(direction_letters(row_vec))
        letters["top"].setText(direction_letters(-row_vec))
        self.graphics.place_letters()
        self._shape = None
        self.overlay.clear()

    def letters(self) -> dict[str, str]:
        """Orientation letters shown on each side: {"top", "bottom", "left", "right"}."""
        return {side: label.text() for side, label in self.graphics.letters.items()}

    def refresh(self) -> None:
        """Redraw image, overlay and crosshair for the viewer's cursor."""
        viewer = self.viewer
        cursor = viewer.cursor
        image = plane_image(viewer.display, self.plane, cursor)
        self.image.setImage(image, autoLevels=False, levels=viewer.image_levels())
        rows, cols = image.shape[:2]
        sx, sy = self._pixel_size()
        if self._shape != (rows, cols):
            self._shape = (rows, cols)
            self.image.setRect(QRectF(0, 0, cols * sx, rows * sy))
            self.box.setLimits(xMin=-cols * sx, xMax=2 * cols * sx, yMin=-rows * sy, yMax=2 * rows * sy)
            self.box.autoRange(padding=0.0)
        self.refresh_overlay()
        row, col = self.cursor_pixel()
        self.vline.setPos((col + 0.5) * sx)
        self.hline.setPos((row + 0.5) * sy)
        n = self._n(self.plane.normal)
        k = int(cursor[self.plane.normal])
        self.slider.blockSignals(True)
        self.slider.setValue(k)
        self.slider.blockSignals(False)
        self.slice_label.setText(f"{k + 1} / {n}")

    def refresh_overlay(self) -> None:
        overlay = self.viewer.overlay_display()
        if overlay is None:
            self.overlay.clear()
            self.overlay.setVisible(False)
            return
        index, table = overlay
        rgba = table[plane_image(index, self.plane, self.viewer.cursor)]
        self.overlay.setImage(rgba, autoLevels=False, levels=(0, 255))
        rows, cols = rgba.shape[:2]
        sx, sy = self._pixel_size()
        self.overlay.setRect(QRectF(0, 0, cols * sx, rows * sy))
        self.overlay.setOpacity(self.viewer.overlay_opacity())
        self.overlay.setVisible(True)

    def cursor_pixel(self) -> tuple[int, int]:
        """(row, column) of the crosshair in this view's image."""
        cursor = self.viewer.cursor
        row = int(cursor[self.plane.rows])
        if self.plane.flip_rows:
            row = self._n(self.plane.rows) - 1 - row
        return row, int(cursor[self.plane.cols])

    def pixel_to_scene(self, row: int, col: int) -> QPointF:
        """Scene position of the centre of image pixel (row, col) (tests click there)."""
        sx, sy = self._pixel_size()
        return self.box.mapViewToScene(QPointF((col + 0.5) * sx, (row + 0.5) * sy))

    # interaction
    def point_at(self, pos: QPointF) -> None:
        """Move the crosshair to the pixel under view position `pos` (mm)."""
        if self.viewer.volume is None:
            return
        sx, sy = self._pixel_size()
        n_rows, n_cols = self._n(self.plane.rows), self._n(self.plane.cols)
        col = int(np.clip(np.floor(pos.x() / sx), 0, n_cols - 1))
        row = int(np.clip(np.floor(pos.y() / sy), 0, n_rows - 1))
        cursor = list(self.viewer.cursor)
        cursor[self.plane.cols] = col
        cursor[self.plane.rows] = n_rows - 1 - row if self.plane.flip_rows else row
        self.viewer.set_cursor(tuple(cursor))

    def scroll(self, steps: int) -> None:
        """Move `steps` slices (wheel up = +1)."""
        if self.viewer.volume is None:
            return
        self.set_slice(int(self.viewer.cursor[self.plane.normal]) + steps)

    def set_slice(self, index: int) -> None:
        if self.viewer.volume is None:
            return
        cursor = list(self.viewer.cursor)
        cursor[self.plane.normal] = int(np.clip(index, 0, self._n(self.plane.normal) - 1))
        self.viewer.set_cursor(tuple(cursor))

    def _slider_moved(self, value: int) -> None:
        self.set_slice(value)

    def window_drag(self, start: bool, finish: bool, dx: float, dy: float) -> None:
        viewer = self.viewer
        if viewer.volume is None or viewer.volume.is_rgb:
            return
        if start or self._wl_start is None:
            self._wl_start = viewer.window_level()
        w0, l0 = self._wl_start
        rate = viewer.drag_rate()
        viewer.set_window_level(max(w0 + dx * rate, rate), l0 - dy * rate, preset=CUSTOM)
        if finish:
            self._wl_start = None


# ------------------------------------------------------------------------------------------- dialogs
class SeriesDialog(QDialog):
    """Pick one of the DICOM series in a folder (description, modality, size, spacing, files)."""

    HEADERS = ("Description", "Modality", "Size", "Spacing (mm)", "Files")

    def __init__(self, series: list[SeriesInfo], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a DICOM series")
        self.series = list(series)
        self.table = QTableWidget(len(self.series), len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(self.HEADERS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for row, info in enumerate(self.series):
            for col, text in enumerate(self.row_texts(info)):
                self.table.setItem(row, col, QTableWidgetItem(text))
        if self.series:
            self.table.selectRow(0)
        self.table.doubleClicked.connect(self.accept)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"This folder holds {len(self.series)} series; choose one to view:"))
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(640, 300)

    @staticmethod
    def row_texts(info: SeriesInfo) -> list[str]:
        def join(values) -> str:
            try:
                return " × ".join(str(int(v)) if float(v).is_integer() else f"{float(v):.3g}" for v in values)
            except (TypeError, ValueError):  # a scalar, None or text
                return "—" if values is None else str(values)

        size, spacing = join(info.size), join(info.spacing)
        files = len(info.files) if info.files is not None else 0
        return [info.description or "(no description)", info.modality or "?", size, spacing, str(files)]

    def selected(self) -> SeriesInfo | None:
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None


# --------------------------------------------------------------------------------------------- overlay
@dataclass
class _Overlay:
    labels: np.ndarray  # (k, j, i) as given
    keys: np.ndarray  # sorted distinct values present
    index: np.ndarray  # labels -> position in keys (small int type), same shape
    names: dict[int, str]
    colours: dict[int, tuple[int, int, int, int]]
    visible: dict[int, bool]

    def table(self) -> np.ndarray:
        """RGBA lookup (len(keys), 4) uint8: background (0) and hidden labels transparent."""
        table = np.zeros((len(self.keys), 4), dtype=np.uint8)
        for pos, key in enumerate(self.keys.tolist()):
            if key != 0 and self.visible.get(key, True):
                table[pos] = self.colours[key]
        return table


def _to_rgba(colour) -> tuple[int, int, int, int]:
    if isinstance(colour, QColor):
        return colour.red(), colour.green(), colour.blue(), colour.alpha()
    if isinstance(colour, str):
        return _to_rgba(QColor(colour))
    values = [int(round(float(v) * 255)) if isinstance(v, float) and v <= 1.0 else int(v) for v in colour]
    if len(values) == 3:
        values.append(255)
    if len(values) != 4:
        raise ValueError(f"a colour needs 3 or 4 components, got {colour!r}")
    return tuple(int(np.clip(v, 0, 255)) for v in values)


# ---------------------------------------------------------------------------------------------- viewer
class ViewerWidget(QWidget):
    """The image viewer tab. Load with `open_path` (file or DICOM folder, read off the GUI thread: the open
    buttons and drag and drop use it), `load_path` (the same, blocking) or `load_volume`.

    Signals: `volumeLoaded(Volume)`, `cursorChanged((i, j, k))`, `overlayChanged()`.
    """

    volumeLoaded = Signal(object)
    cursorChanged = Signal(object)
    overlayChanged = Signal()

    HINT = "Drop a DICOM folder or an image file (NIfTI, NRRD, MHA, DICOM, PNG, JPEG, .npy) here"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.volume: Volume | None = None
        self.axes: DisplayAxes | None = None
        self.display: np.ndarray | None = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        self._window = (1.0, 0.5)
        self._auto_range = (0.0, 1.0)
        self._data_range = (0.0, 1.0)
        self._overlay: _Overlay | None = None
        self._overlay_display: tuple[np.ndarray, np.ndarray] | None = None
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
        self.opacity_slider.setValue(50)
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

    META_FIELDS = ("Modality", "Description", "Source", "Size", "Spacing", "Origin", "Orientation", "Values")

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
        self.warnings_label.setStyleSheet("color: rgb(200, 120, 0);")
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
            "",
            "Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.dcm *.png *.jpg *.jpeg *.npy);;All files (*)",
        )
        return path or None

    def _ask_open_folder(self) -> str | None:
        """Folder dialog (tests monkeypatch this)."""
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        return path or None

    def _choose_series(self, series: list[SeriesInfo]) -> SeriesInfo | None:
        """Series picker for a folder with several series (tests monkeypatch this)."""
        dialog = SeriesDialog(series, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.selected()

    def _show_error(self, message: str) -> None:
        QMessageBox.critical(self, "Cannot open image", message)

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
            raise ValueError(f"{path}: no DICOM image series in this folder")
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
            self._show_error(error_message(error))
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
        worker.errored.connect(lambda message, _details, _user_error, w=worker: self._reader_done(w, None, message))
        self._reader = worker
        self._show_reading(what + "…")
        worker.start()

    def _reader_done(self, worker: Worker, on_success, result) -> None:
        """`on_success(result)` on the GUI thread; on_success None: the read failed, result is the message."""
        if worker is not self._reader:  # dropped at shutdown
            return
        self._reader = None
        self._show_reading(None)
        if on_success is None:
            self._show_error(result)
            return
        try:
            on_success(result)
        except Exception as error:  # e.g. an array that cannot be shown: a dialog, the app keeps running
            self._show_error(error_message(error))

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
        """Closing: drop the result of a read in flight and wait for its thread (a QThread must not be
        destroyed while it runs)."""
        if self._reader is not None:
            self._reader.abort()
            self._reader = None
        self.wait_idle(None)

    def load_volume(self, volume: Volume) -> None:
        """Show `volume` (any previous overlay is removed); the crosshair goes to the centre."""
        array = np.asarray(volume.array)
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (3, 4)) or min(array.shape[:3]) < 1:
            raise ValueError(f"cannot show an array of shape {array.shape}: expected (Z, Y, X) or (Z, Y, X, 3)")
        self.volume = volume
        self.axes = DisplayAxes.from_volume(volume)
        self.display = self.axes.to_display(array[..., :3] if array.ndim == 4 else array)
        self._overlay = None
        self._overlay_display = None
        self._fill_label_list()
        self._compute_ranges(array)
        span = self._data_range[1] - self._data_range[0]
        for spin in (self.window_spin, self.level_spin):
            spin.setDecimals(1 if span >= 100 else 3 if span >= 1 else 6)
            spin.setSingleStep(max(span / 100.0, 10.0 ** -spin.decimals()))
        planar = self.axes.sizes[2] == 1
        self._arrange_views(planar)
        for view in self.views.values():
            view.reset()
        self.views["axial"].slider.setVisible(not planar)
        self.views["axial"].slice_label.setVisible(not planar)
        self.hint.setVisible(False)
        self._set_enabled(not self.is_rgb)
        self._fill_metadata()
        self.cursor = tuple(n // 2 for n in self.axes.shape)
        if self.is_rgb:
            lo, hi = self.image_levels()
            self._window = (hi - lo, (hi + lo) / 2.0)
        else:
            self.apply_preset(next(iter(PRESETS)), refresh=False)
        self.set_cursor(self.cursor)
        self.volumeLoaded.emit(volume)

    @property
    def is_rgb(self) -> bool:
        return self.volume is not None and np.asarray(self.volume.array).ndim == 4

    def _compute_ranges(self, array: np.ndarray) -> None:
        flat = np.asarray(array).reshape(-1)
        step = max(1, flat.size // 2_000_000)  # percentiles of a sample: fast on big volumes
        sample = flat[::step].astype(np.float64)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            sample = np.zeros(1)
        lo, hi = np.percentile(sample, [1.0, 99.0])
        if hi <= lo:
            lo, hi = float(sample.min()), float(sample.max())
        if hi <= lo:
            hi = lo + 1.0
        self._auto_range = (float(lo), float(hi))
        full = np.asarray(array)
        finite = full if full.dtype.kind in "biu" else full[np.isfinite(full)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        self._data_range = (low, max(high, low + 1e-6))

    def _fill_metadata(self) -> None:
        volume = self.volume
        meta = dict(volume.metadata or {})
        array = np.asarray(volume.array)
        size = (array.shape[2], array.shape[1], array.shape[0])
        texts = {
            "Modality": str(meta.get("modality") or "—"),
            "Description": str(meta.get("description") or "—"),
            "Source": str(meta.get("source") or "—"),
            "Size": " × ".join(map(str, size)) + (" (RGB)" if self.is_rgb else "") + "  (i × j × k)",
            "Spacing": " × ".join(f"{float(s):.4g}" for s in volume.spacing) + " mm",
            "Origin": "(" + ", ".join(f"{float(v):.2f}" for v in volume.origin) + ") mm LPS",
            "Orientation": self._orientation_text(),
            "Values": f"{array.dtype}, {self._data_range[0]:.6g} … {self._data_range[1]:.6g}",
        }
        for name, text in texts.items():
            self.meta_labels[name].setText(text)
            self.meta_labels[name].setToolTip(text)
        warnings = [str(w) for w in (volume.warnings or [])]
        self.warnings_label.setText("\n".join(f"• {w}" for w in warnings) if warnings else "none")

    def _orientation_text(self) -> str:
        try:
            return str(orientation_code(tuple(float(v) for v in self.volume.direction)))
        except Exception:  # an odd direction must not stop the image from showing
            return "?"

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
        if self.volume is None:
            return
        shape = self.axes.shape
        self.cursor = tuple(int(np.clip(int(v), 0, shape[w] - 1)) for w, v in enumerate(display))
        for view in self.views.values():
            if view.isVisibleTo(self) or view.plane.name == "axial":
                view.refresh()
        self._update_readout()
        self.cursorChanged.emit(self.cursor_voxel())

    def set_cursor_voxel(self, ijk: tuple[int, int, int]) -> None:
        """Move the crosshair to voxel index (i, j, k)."""
        if self.volume is not None:
            self.set_cursor(self.axes.to_display_index(ijk))

    def cursor_voxel(self) -> tuple[int, int, int] | None:
        """Voxel index (i, j, k) under the crosshair."""
        return None if self.volume is None else self.axes.to_index(self.cursor)

    def readout(self) -> dict | None:
        """Voxel index (i, j, k), world position (LPS mm), value and overlay label under the crosshair."""
        if self.volume is None:
            return None
        i, j, k = self.cursor_voxel()
        value = np.asarray(self.volume.array)[k, j, i]
        value = tuple(v.item() for v in value) if np.ndim(value) else value.item()
        world = tuple(float(v) for v in np.asarray(self.volume.index_to_world((i, j, k)), dtype=float))
        label = None
        label_name = ""
        if self._overlay is not None:
            label = int(self._overlay.labels[k, j, i])
            label_name = self._overlay.names.get(label, f"label {label}") if label != 0 else ""
        return {"index": (i, j, k), "world": world, "value": value, "label": label, "label_name": label_name}

    def _update_readout(self) -> None:
        r = self.readout()
        value = r["value"]
        if isinstance(value, tuple):
            shown = "(" + ", ".join(f"{v:.6g}" for v in value) + ")"
        else:
            shown = f"{value:.6g}"
        text = (
            f"voxel (i, j, k) = ({r['index'][0]}, {r['index'][1]}, {r['index'][2]})    "
            f"LPS (mm) = ({r['world'][0]:.2f}, {r['world'][1]:.2f}, {r['world'][2]:.2f})    value = {shown}"
        )
        if r["label"] is not None:
            text += f"    label = {r['label']} {r['label_name'] or '(background)'}"
        self.readout_label.setText(text)

    def fit_views(self) -> None:
        for view in self.views.values():
            view.box.autoRange(padding=0.0)

    # --------------------------------------------------------------------------------- window / level
    def window_level(self) -> tuple[float, float]:
        """(window width, level) now shown."""
        return self._window

    def image_levels(self) -> tuple[float, float]:
        """(low, high) display levels of the greyscale image."""
        if self.is_rgb:
            return (0.0, 255.0) if self.volume.array.dtype == np.uint8 else self._data_range
        w, c = self._window
        return (c - w / 2.0, c + w / 2.0)

    def drag_rate(self) -> float:
        """Window/level change per screen pixel of a right/middle drag."""
        lo, hi = self._data_range
        return max((hi - lo) / 500.0, 1e-6)

    def apply_preset(self, name: str, refresh: bool = True) -> None:
        """Apply a preset of `PRESETS` (Auto = 1st-99th percentile of the volume)."""
        if name == CUSTOM:
            return
        if name not in PRESETS:
            raise ValueError(f"unknown window/level preset {name!r}; choose from {list(PRESETS)}")
        preset = PRESETS[name]
        if preset is None:
            lo, hi = self._auto_range
            preset = (hi - lo, (hi + lo) / 2.0)
        self.set_window_level(*preset, preset=name, refresh=refresh)

    def set_window_level(self, window: float, level: float, preset: str = CUSTOM, refresh: bool = True) -> None:
        """Show intensities level ± window / 2 (from black to white)."""
        self._window = (max(float(window), 1e-6), float(level))
        for widget, value in ((self.preset_combo, None), (self.window_spin, self._window[0]),
                              (self.level_spin, self._window[1])):
            widget.blockSignals(True)
            if value is None:
                widget.setCurrentText(preset)
            else:
                widget.setValue(value)
            widget.blockSignals(False)
        if refresh and self.volume is not None:
            levels = self.image_levels()
            for view in self.views.values():
                view.image.setLevels(levels)

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
        if self.volume is None:
            raise RuntimeError("load an image before setting an overlay")
        labels = np.asarray(labels)
        shape = np.asarray(self.volume.array).shape[:3]
        if labels.shape != shape:
            raise ValueError(f"overlay shape {labels.shape} differs from the image's {shape}")
        if labels.dtype.kind not in "biu":
            raise ValueError(f"overlay labels must be integers, got {labels.dtype}")
        if labels.dtype.kind == "b":
            labels = labels.astype(np.uint8)
        if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
            # a whole-brain label map has ~10 M voxels: counting is O(n), np.unique sorts (~10x slower)
            counts = np.bincount(labels.reshape(-1))
            counts[0] = 1  # background is always a key
            keys = np.flatnonzero(counts).astype(np.int64)
            lut = np.zeros(len(counts), dtype=np.uint8 if len(keys) <= 256 else np.int32)
            lut[keys] = np.arange(len(keys))
            index = lut[labels]
        else:
            keys = np.unique(labels)
            if not (keys == 0).any():
                keys = np.unique(np.concatenate([keys, [0]]))
            keys = keys.astype(np.int64)
            index = np.searchsorted(keys, labels).astype(np.uint8 if len(keys) <= 256 else np.int32)
        present = [int(k) for k in keys if k != 0]
        names = {int(k): str(v) for k, v in (names or {}).items()}
        if isinstance(colours, (list, tuple)):
            colours = dict(zip(present, colours, strict=False))
        given = {int(k): _to_rgba(v) for k, v in (colours or {}).items()}
        table = {k: given.get(k, (*PALETTE[(k - 1) % len(PALETTE)], 255)) for k in present}
        self._overlay = _Overlay(
            labels=labels,
            keys=keys,
            index=index,
            names={k: names.get(k, f"label {k}") for k in present} | names,
            colours=table,
            visible={k: True for k in present},
        )
        self._refresh_overlay_table()
        self._fill_label_list()
        self.overlayChanged.emit()

    def clear_overlay(self) -> None:
        self._overlay = None
        self._overlay_display = None
        self._fill_label_list()
        for view in self.views.values():
            view.refresh_overlay()
        if self.volume is not None:
            self._update_readout()
        self.overlayChanged.emit()

    @property
    def overlay_labels(self) -> np.ndarray | None:
        """The label map (Z, Y, X) shown, or None."""
        return None if self._overlay is None else self._overlay.labels

    @property
    def overlay_names(self) -> dict[int, str]:
        return {} if self._overlay is None else dict(self._overlay.names)

    def overlay_display(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(label positions in display order [z, y, x], RGBA table) for the views; None without overlay."""
        return self._overlay_display

    def overlay_opacity(self) -> float:
        return self.opacity_slider.value() / 100.0

    def set_overlay_opacity(self, opacity: float) -> None:
        self.opacity_slider.setValue(int(round(100 * float(np.clip(opacity, 0.0, 1.0)))))

    def set_label_visible(self, label: int, visible: bool) -> None:
        """Show or hide one label of the overlay (its check box follows)."""
        if self._overlay is None or int(label) not in self._overlay.visible:
            raise KeyError(f"no label {label} in the overlay")
        for row in range(self.label_list.count()):
            item = self.label_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == int(label):
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
                return

    def label_visible(self, label: int) -> bool:
        return bool(self._overlay is not None and self._overlay.visible.get(int(label), False))

    def _refresh_overlay_table(self) -> None:
        overlay = self._overlay
        if overlay is None or self.axes is None:
            self._overlay_display = None
        else:
            self._overlay_display = (self.axes.to_display(overlay.index), overlay.table())
        for view in self.views.values():
            view.refresh_overlay()
        if self.volume is not None:
            self._update_readout()

    def _fill_label_list(self) -> None:
        self.label_list.blockSignals(True)
        self.label_list.clear()
        overlay = self._overlay
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
        if self._overlay is None:
            return
        key = int(item.data(Qt.ItemDataRole.UserRole))
        self._overlay.visible[key] = item.checkState() == Qt.CheckState.Checked
        self._refresh_overlay_table()

    def _opacity_changed(self, _value: int) -> None:
        for view in self.views.values():
            view.overlay.setOpacity(self.overlay_opacity())

    # ----------------------------------------------------------------------------------- for experts
    def current_slice_image(self) -> np.ndarray | None:
        """The 2D array the axial view shows, (H, W) or (H, W, 3), in the image's own dtype (row 0 at the
        top, patient's right on the left); None when nothing is loaded."""
        if self.volume is None:
            return None
        return np.ascontiguousarray(plane_image(self.display, PLANES["axial"], self.cursor))

    def current_slice_description(self) -> str:
        """Where the axial slice comes from, e.g. 'ct.nii.gz (axial slice 12 of 40)'."""
        if self.volume is None:
            return ""
        source = str((self.volume.metadata or {}).get("source") or "image")
        n = self.axes.shape[2]
        return source if n == 1 else f"{source} (axial slice {self.cursor[2] + 1} of {n})"
