"""One plane of the viewer (pyqtgraph): image, overlay and crosshair drawn from the `ViewerModel`, the slice
slider and counter, orientation letters; mouse and wheel input forwarded to the viewer.

Mouse: left click or drag sets the crosshair in all three views; right or middle drag changes window
(horizontal) and level (vertical); the wheel scrolls slices (Ctrl+wheel zooms, Shift+left drag pans).

The slider's value and the counter are the slice's voxel index (the readout's i, j or k); where the display runs
against that index the slider is drawn inverted, so its knob still moves the way the view's letters say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from app.viewer.model import Plane, ViewerModel

if TYPE_CHECKING:
    from app.viewer.widget import ViewerWidget

__all__ = ["SliceView"]

_CROSSHAIR = (255, 200, 0, 160)
# orientation letters: yellow on a dark translucent plate, readable over white bone as over black air
LETTER_STYLE = ("color: rgb(255, 220, 80); font-weight: bold; background: rgba(0, 0, 0, 170); "
                "border-radius: 3px; padding: 0px 3px;")


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
            label.setStyleSheet(LETTER_STYLE)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            label.hide()
            self.letters[side] = label

    def resizeEvent(self, ev):  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self.place_letters()

    def place_letters(self) -> None:
        """Put each letter at the middle of its side."""
        w, h = self.width(), self.height()
        for side, label in getattr(self, "letters", {}).items():  # resizeEvent runs inside __init__
            label.setVisible(bool(label.text()))  # no plate without a letter (a photograph has none)
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
        self.slice_label.setMinimumWidth(110)
        self.slice_label.setToolTip("the slice's voxel index (0-based), as in the readout's voxel (i, j, k)")
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
        self._wl_start: tuple[float, float] | None = None  # (window, level) when a right/middle drag began

    @property
    def model(self) -> ViewerModel:
        """The viewer's model this view draws."""
        return self.viewer.model

    # ------------------------------------------------------------------------------------------ drawing
    def reset(self) -> None:
        """A new volume: title, slider range and direction, letters, zoom to fit at the next refresh."""
        model = self.model
        n = model.slice_count(self.plane)
        self.title.setText(model.plane_title(self.plane))
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.setInvertedAppearance(model.slice_flipped(self.plane))
        self.slider.blockSignals(False)
        self.slider.setEnabled(n > 1)
        for side, text in self.model.letters(self.plane).items():
            self.graphics.letters[side].setText(text)
        self.graphics.place_letters()
        self._shape = None
        self.overlay.clear()

    def letters(self) -> dict[str, str]:
        """Orientation letters shown on each side: {"top", "bottom", "left", "right"}."""
        return {side: label.text() for side, label in self.graphics.letters.items()}

    def refresh(self) -> None:
        """Redraw image, overlay and crosshair for the model's cursor."""
        model = self.model
        image = model.slice_image(self.plane)
        self.image.setImage(image, autoLevels=False, levels=model.image_levels())
        rows, cols = image.shape[:2]
        sx, sy = model.pixel_size(self.plane)
        if self._shape != (rows, cols):
            self._shape = (rows, cols)
            self.image.setRect(QRectF(0, 0, cols * sx, rows * sy))
            self.box.setLimits(xMin=-cols * sx, xMax=2 * cols * sx, yMin=-rows * sy, yMax=2 * rows * sy)
            self.box.autoRange(padding=0.0)
        self.refresh_overlay()
        row, col = model.cursor_pixel(self.plane)
        self.vline.setPos((col + 0.5) * sx)
        self.hline.setPos((row + 0.5) * sy)
        self.slider.blockSignals(True)
        self.slider.setValue(model.slice_voxel(self.plane))
        self.slider.blockSignals(False)
        self.slice_label.setText(model.slice_text(self.plane))

    def refresh_levels(self) -> None:
        """Apply the model's window/level to the shown image."""
        self.image.setLevels(self.model.image_levels())

    def refresh_overlay(self) -> None:
        """Redraw the overlay for the model's cursor, label visibility and opacity."""
        model = self.model
        rgba = model.overlay_image(self.plane)
        if rgba is None:
            self.overlay.clear()
            self.overlay.setVisible(False)
            return
        self.overlay.setImage(rgba, autoLevels=False, levels=(0, 255))
        rows, cols = rgba.shape[:2]
        sx, sy = model.pixel_size(self.plane)
        self.overlay.setRect(QRectF(0, 0, cols * sx, rows * sy))
        self.overlay.setOpacity(model.opacity)
        self.overlay.setVisible(True)

    def refresh_opacity(self) -> None:
        """Apply the model's overlay opacity."""
        self.overlay.setOpacity(self.model.opacity)

    def cursor_pixel(self) -> tuple[int, int]:
        """(row, column) of the crosshair in this view's image."""
        return self.model.cursor_pixel(self.plane)

    def pixel_to_scene(self, row: int, col: int) -> QPointF:
        """Scene position of the centre of image pixel (row, col) (tests click there)."""
        sx, sy = self.model.pixel_size(self.plane)
        return self.box.mapViewToScene(QPointF((col + 0.5) * sx, (row + 0.5) * sy))

    # -------------------------------------------------------------------------------------- interaction
    def point_at(self, pos: QPointF) -> None:
        """Move the crosshair to the pixel under view position `pos` (mm)."""
        model = self.model
        if model.volume is None:
            return
        row, col = model.pixel_at(self.plane, pos.x(), pos.y())
        self.viewer.set_cursor(model.cursor_for_pixel(self.plane, row, col))

    def scroll(self, steps: int) -> None:
        """Move `steps` slices (wheel up = +1)."""
        if self.model.volume is None:
            return
        self.set_slice(self.model.slice_index(self.plane) + steps)

    def set_slice(self, index: int) -> None:
        """Show slice `index` (clipped to the slices there are)."""
        if self.model.volume is None:
            return
        self.viewer.set_cursor(self.model.cursor_for_slice(self.plane, index))

    def _slider_moved(self, value: int) -> None:
        """The slider gives the slice's voxel index."""
        if self.model.volume is not None:
            self.viewer.set_cursor(self.model.cursor_for_slice_voxel(self.plane, value))

    def window_drag(self, start: bool, finish: bool, dx: float, dy: float) -> None:
        """A right/middle drag of (dx, dy) screen pixels since it began changes window and level."""
        model = self.model
        if model.volume is None or model.is_rgb:
            return
        if start or self._wl_start is None:
            self._wl_start = model.window_level()
        self.viewer.set_window_level(*model.window_for_drag(self._wl_start, dx, dy))
        if finish:
            self._wl_start = None
