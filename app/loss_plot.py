"""Per-task loss curves: raw (thin) and smoothed (EMA, thick) in one colour per task, a log-scale
toggle, a smoothing control and a hover readout of task / step / loss."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)
from scipy.signal import lfilter

# Okabe-Ito (colour-blind safe) first, then pyqtgraph's hue wheel
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D00", "#000000"]
HOVER_PIXELS = 25  # the readout shows the nearest point within this distance of the cursor


def task_colour(index: int) -> QColor:
    if index < len(PALETTE):
        return QColor(PALETTE[index])
    return pg.intColor(index, hues=12, values=1, maxValue=200)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style smoothing: exponential moving average with bias correction."""
    values = np.asarray(values, dtype=np.float64)
    if weight <= 0 or values.size == 0:
        return values
    # last_i = w * last_{i-1} + (1 - w) * v_i from last_{-1} = 0, divided by its weight sum 1 - w^(i+1)
    running = lfilter([1.0 - weight], [1.0, -weight], values)
    return running / (1.0 - weight ** np.arange(1, values.size + 1))


class _Series:
    def __init__(self, name: str, colour: QColor, plot: pg.PlotItem) -> None:
        self.name = name
        self.x: list[float] = []
        self.y: list[float] = []
        faint = QColor(colour)
        faint.setAlpha(70)
        self.raw = plot.plot([], [], pen=pg.mkPen(faint, width=1))
        self.smooth = plot.plot([], [], pen=pg.mkPen(colour, width=2.2), name=name)
        for item in (self.raw, self.smooth):
            item.setClipToView(True)
            item.setDownsampling(auto=True, method="peak")
        self.smoothed = np.zeros(0)


class LossPlot(QWidget):
    """Loss curves of every task against the step, across phases (foundation, then decomposition)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget(background="w")
        self.plot: pg.PlotItem = self.plot_widget.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "loss")
        for axis in ("bottom", "left"):
            item = self.plot.getAxis(axis)
            item.setTextPen("#333333")
            item.setPen("#888888")
            # the axes (with their grid lines) are the costliest part of a repaint: cache them as pixmaps,
            # redrawn only when the range changes (halves the time the GUI thread spends per redraw)
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor="#222222", brush=(255, 255, 255, 200))
        self.series: dict[str, _Series] = {}
        self._markers: list[pg.InfiniteLine] = []
        self._hover_dot = pg.ScatterPlotItem(size=9, pen=pg.mkPen("#222222", width=1.5), brush=None)
        self._hover_dot.setZValue(100)
        self.plot.addItem(self._hover_dot)

        self.log_box = QCheckBox("log scale")
        self.log_box.toggled.connect(self.set_log)
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 0.99)
        self.smoothing.setSingleStep(0.05)
        self.smoothing.setValue(0.6)
        self.smoothing.setToolTip("exponential moving average weight of the thick curves (0: none)")
        self.smoothing.valueChanged.connect(self._resmooth)
        self.readout = QLabel(" ")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setMinimumWidth(260)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Loss per task"))
        bar.addStretch(1)
        bar.addWidget(self.readout)
        bar.addStretch(1)
        bar.addWidget(QLabel("smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.log_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.plot_widget, 1)
        self.plot_widget.scene().sigMouseMoved.connect(self._mouse_moved)

    # ------------------------------------------------------------------------------- data
    def clear(self) -> None:
        self._planned = None
        self.plot.vb.enableAutoRange(x=True, y=True)
        for s in self.series.values():
            self.plot.removeItem(s.raw)
            self.plot.removeItem(s.smooth)
        for line in self._markers:
            self.plot.removeItem(line)
        self.legend.clear()
        self.series.clear()
        self._markers.clear()
        self._hover_dot.clear()
        self.readout.setText(" ")

    def add_task(self, name: str) -> None:
        if name not in self.series:
            self.series[name] = _Series(name, task_colour(len(self.series)), self.plot)

    def add_points(self, points: dict[str, tuple[list[float], list[float]]]) -> None:
        """Append (steps, losses) per task and redraw those tasks once."""
        for name, (xs, ys) in points.items():
            self.add_task(name)
            series = self.series[name]
            series.x.extend(xs)
            series.y.extend(ys)
            self._redraw(series)

    def set_planned_steps(self, end: float) -> None:
        """Fix the x range to the steps planned so far while a run is live: the curves fill the plot as
        the run progresses, and the axes are not re-rendered at every update (they are the costly part)."""
        vb = self.plot.vb
        if vb.state["autoRange"][0] is False and getattr(self, "_planned", None) is None:
            return  # the user zoomed or panned: leave the view alone
        if end != getattr(self, "_planned", None):
            self._planned = end
            vb.enableAutoRange(x=False)
            vb.setXRange(0, end, padding=0.02)

    def add_marker(self, x: float, text: str) -> None:
        """A vertical line where a phase starts."""
        line = pg.InfiniteLine(pos=x, angle=90, pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine),
                               label=text, labelOpts={"position": 0.95, "color": "#555555"})
        self.plot.addItem(line)
        self._markers.append(line)

    def point_count(self, name: str) -> int:
        return len(self.series[name].x) if name in self.series else 0

    def _redraw(self, series: _Series) -> None:
        x = np.asarray(series.x, dtype=np.float64)
        y = np.asarray(series.y, dtype=np.float64)
        series.smoothed = ema(y, self.smoothing.value())
        series.raw.setData(x, y)
        series.smooth.setData(x, series.smoothed)

    def _resmooth(self) -> None:
        for series in self.series.values():
            self._redraw(series)

    def set_log(self, on: bool) -> None:
        if self.log_box.isChecked() != on:
            self.log_box.setChecked(on)
            return
        self.plot.setLogMode(x=False, y=on)
        self.plot.setLabel("left", "loss (log scale)" if on else "loss")
        self._hover_dot.clear()

    # ------------------------------------------------------------------------------ hover
    def _mouse_moved(self, scene_pos) -> None:
        if not self.plot.sceneBoundingRect().contains(scene_pos):
            return
        view = self.plot.vb.mapSceneToView(scene_pos)
        self.readout.setText(self.readout_at(view.x(), view.y()) or " ")

    def nearest(self, x: float, y: float) -> tuple[str, int] | None:
        """(task, index) of the raw point nearest to view coordinates (x, y), within HOVER_PIXELS."""
        pixel_w, pixel_h = self.plot.vb.viewPixelSize()
        pixel_w, pixel_h = pixel_w or 1.0, pixel_h or 1.0
        log = self.log_box.isChecked()
        best: tuple[float, str, int] | None = None
        for name, series in self.series.items():
            if not series.x:
                continue
            xs = np.asarray(series.x)
            i = int(np.searchsorted(xs, x))
            for j in (i - 1, i):
                if not 0 <= j < len(xs):
                    continue
                yj = series.y[j]
                if log:
                    if yj <= 0:
                        continue
                    yj = math.log10(yj)
                d = math.hypot((xs[j] - x) / pixel_w, (yj - y) / pixel_h)
                if best is None or d < best[0]:
                    best = (d, name, j)
        if best is None or best[0] > HOVER_PIXELS:
            return None
        return best[1], best[2]

    def readout_at(self, x: float, y: float) -> str:
        """Text for the cursor at view coordinates (x, y): task, step, raw and smoothed loss."""
        hit = self.nearest(x, y)
        if hit is None:
            self._hover_dot.clear()
            return ""
        name, j = hit
        series = self.series[name]
        step, loss = series.x[j], series.y[j]
        shown = math.log10(loss) if self.log_box.isChecked() and loss > 0 else loss
        self._hover_dot.setData([step], [shown])
        smooth = series.smoothed[j] if j < len(series.smoothed) else loss
        return f"{name} · step {int(step)} · loss {loss:.4g} (smoothed {smooth:.4g})"
