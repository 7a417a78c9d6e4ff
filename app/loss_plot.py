"""Per-task loss curves: raw (thin) and smoothed (EMA, thick) in one colour per task, one panel per training phase
side by side (foundation pre-training, decomposition, ...: each with its own loss axis, since their losses differ in
scale, and its own smoothing, which restarts at the phase boundary), a log-scale toggle, a smoothing control and a
hover readout of phase / task / step / loss."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetrics
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
    def __init__(self, name: str, colour: QColor, plot: pg.PlotItem, legend: bool = True) -> None:
        """A task's raw and smoothed curve in `plot`; listed in its legend now, or (`legend=False`, a series made
        ahead of its data) by `show_in_legend`."""
        self.name = name
        self.x: list[float] = []
        self.y: list[float] = []
        faint = QColor(colour)
        faint.setAlpha(70)
        self.raw = plot.plot([], [], pen=pg.mkPen(faint, width=1))
        self.smooth = plot.plot([], [], pen=pg.mkPen(colour, width=2.2), name=name if legend else None)
        for item in (self.raw, self.smooth):
            item.setClipToView(True)
            item.setDownsampling(auto=True, method="peak")
        self.smoothed = np.zeros(0)

    def show_in_legend(self, legend: pg.LegendItem) -> None:
        self.smooth.opts["name"] = self.name
        legend.addItem(self.smooth, self.name)


class Panel:
    """One phase's plot: its curves per task against the phase's own step, on its own loss axis."""

    def __init__(self, phase: str, title: str, plot: pg.PlotItem) -> None:
        self.phase = phase
        self.plot = plot
        self.title = title
        plot.setTitle(title, color="#333333", size="9pt")
        plot.showGrid(x=True, y=True, alpha=0.25)
        plot.setLabel("bottom", "step")
        plot.setLabel("left", "loss")
        for axis in ("bottom", "left"):
            item = plot.getAxis(axis)
            item.setTextPen("#333333")
            item.setPen("#888888")
            # the axes (with their grid lines) are the costliest part of a repaint: cache them as pixmaps,
            # redrawn only when the range changes (halves the time the GUI thread spends per redraw)
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # room for the widest loss label from the start: an axis that widens to fit new labels moves every panel
        # beside it, and each move re-renders all their axes (a 35 ms repaint at every update instead of 10 ms)
        left = plot.getAxis("left")
        left.setStyle(autoExpandTextSpace=False,
                      tickTextWidth=QFontMetrics(left.style["tickFont"] or QFont()).horizontalAdvance("-0.00000"))
        self.legend = plot.addLegend(offset=(-10, 10), labelTextColor="#222222", brush=(255, 255, 255, 200))
        self.series: dict[str, _Series] = {}  # the tasks with points here
        self.spare: dict[str, _Series] = {}  # series made ahead, for tasks whose points have not come yet
        self.planned: float | None = None
        self.hover_dot = pg.ScatterPlotItem(size=9, pen=pg.mkPen("#222222", width=1.5), brush=None)
        self.hover_dot.setZValue(100)
        plot.addItem(self.hover_dot)

    def set_planned_steps(self, end: float) -> None:
        """Fix the x range to the phase's planned steps while a run is live: the curves fill the panel as the
        phase progresses, and the axes are not re-rendered at every update (they are the costly part)."""
        vb = self.plot.vb
        if vb.state["autoRange"][0] is False and self.planned is None:
            return  # the user zoomed or panned: leave the view alone
        if end != self.planned:
            self.planned = end
            vb.enableAutoRange(x=False)
            vb.setXRange(0, end, padding=0.02)

    def set_waiting(self, waiting: bool) -> None:
        """A panel laid out before its phase began: a grey title and no loss values (its axis has no data yet).
        Colours only: a title's text sets its panel's minimum width, and a change of that would move the other
        panels (the phase's start must repaint only this one)."""
        self.plot.setTitle(self.title, color="#999999" if waiting else "#333333", size="9pt")
        self.plot.getAxis("left").setTextPen(QColor(0, 0, 0, 0) if waiting else QColor("#333333"))


class LossPlot(QWidget):
    """Loss curves of every task against the step: one panel per phase (foundation, then decomposition, ...)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.GraphicsLayoutWidget()
        self.plot_widget.setBackground("w")
        self.panels: dict[str, Panel] = {}
        self.tasks: list[str] = []  # the run's task list: a task's colour is its index here
        # panels of the phases still to come, built ahead (see `prepare`), and what is left to build
        self._ready: dict[str, Panel] = {}
        self._to_build: list[tuple[str, str, str]] = []  # (phase, title, "panel" | a task's series | "place")
        self._columns: list[str] = []  # the phases of the panels in the layout, left to right
        self._planned: dict[str, float | None] = {}  # planned steps of the phases `prepare` lays out
        self._builder = QTimer(self)
        self._builder.setSingleShot(True)
        self._builder.setInterval(0)
        self._builder.timeout.connect(self._build_next)

        self.log_box = QCheckBox("log scale")
        self.log_box.toggled.connect(self.set_log)
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 0.99)
        self.smoothing.setSingleStep(0.05)
        self.smoothing.setValue(0.6)
        self.smoothing.setToolTip("exponential moving average weight of the thick curves (0: none); it restarts "
                                  "at every phase")
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
        self.clear()

    # ------------------------------------------------------------------------------- data
    @property
    def series(self) -> dict[str, _Series]:
        """The series of the latest panel (the phase running now, or the last one of a past run)."""
        return self.panel.series if self.panel is not None else {}

    @property
    def panel(self) -> Panel | None:
        return next(reversed(self.panels.values()), None)

    def clear(self, message: str = "") -> None:
        """Remove every panel (and the axes of a previous run); `message` is shown until the run's panels are
        laid out."""
        self.plot_widget.clear()
        self.panels.clear()
        self._ready.clear()
        self._columns.clear()
        self._planned.clear()
        self._to_build.clear()
        self._builder.stop()
        self.tasks = []
        self.readout.setText(" ")
        self._empty = self.plot_widget.addPlot(row=0, col=0)
        self._empty.hideAxis("bottom")
        self._empty.hideAxis("left")
        self._empty.setMouseEnabled(False, False)
        self._empty.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.placeholder = pg.TextItem(message, color="#555555", anchor=(0.5, 0.5))
        self.placeholder.setPos(0.5, 0.5)
        self._empty.addItem(self.placeholder)

    def set_message(self, message: str) -> None:
        """What the empty plot says before the first steps (e.g. that the data are being read); nothing once a
        panel shows curves (a resumed run's earlier ones)."""
        if self._empty is not None:
            self.placeholder.setText(message)

    def set_tasks(self, tasks: list[str]) -> None:
        """The run's task list, in its order: task i always gets colour i (live and when a run is reopened)."""
        for task in tasks:
            if task not in self.tasks:
                self.tasks.append(task)

    def colour(self, task: str) -> QColor:
        if task not in self.tasks:
            self.tasks.append(task)
        return task_colour(self.tasks.index(task))

    def prepare(self, phases: list[tuple[str, str, float | None]]) -> None:
        """Lay out the panels of a starting run's phases ((phase, title, planned steps), in order), empty, beside
        the panels already shown: a panel, a series per task in it, then its place in the layout, one piece per
        turn of the event loop. A phase boundary then only starts drawing into its panel. Made there, a pyqtgraph
        plot and its series cost ~35 ms, and the relayout a repaint of every panel's axes (~30 ms): together the
        GUI thread's longest stall during a run."""
        for phase, title, steps in phases:
            if phase in self.panels or phase in self._ready or any(job[0] == phase for job in self._to_build):
                continue
            self._planned[phase] = steps
            self._to_build.append((phase, title, "panel"))
            self._to_build.extend((phase, title, task) for task in self.tasks)
            self._to_build.append((phase, title, "place"))
        if self._to_build:
            self._builder.start()

    def _build_next(self) -> None:
        """One piece of `prepare`."""
        while self._to_build:
            phase, title, job = self._to_build.pop(0)
            if phase in self.panels:
                continue  # the phase began before its panel was ready: made the usual way
            if job == "panel":
                panel = self._ready[phase] = self._new_panel(phase, title)
                panel.set_waiting(True)
                if self._planned.get(phase):
                    panel.set_planned_steps(self._planned[phase])
            elif job == "place":
                self._place(self._ready[phase])
            else:
                panel = self._ready[phase]
                panel.spare[job] = _Series(job, self.colour(job), panel.plot, legend=False)
            break
        if self._to_build:
            self._builder.start()

    def _place(self, panel: Panel) -> None:
        """Put `panel` into the layout, right of the others (once)."""
        if panel.phase in self._columns:
            return
        if self._empty is not None:
            self.plot_widget.removeItem(self._empty)
            self._empty = None
        self.plot_widget.addItem(panel.plot, row=0, col=len(self._columns))
        self._columns.append(panel.phase)

    def add_panel(self, phase: str, title: str) -> Panel:
        """The panel of `phase` (laid out by `prepare`, else made now right of the others)."""
        if phase in self.panels:
            return self.panels[phase]
        panel = self._ready.pop(phase, None)
        if panel is not None:
            panel.set_waiting(False)
        else:
            panel = self._new_panel(phase, title)
        self._place(panel)
        self.panels[phase] = panel
        return panel

    def _new_panel(self, phase: str, title: str) -> Panel:
        panel = Panel(phase, title, pg.PlotItem())
        if self.log_box.isChecked():
            self._apply_log(panel, True)
        return panel

    @staticmethod
    def _apply_log(panel: Panel, on: bool) -> None:
        panel.plot.setLogMode(x=False, y=on)
        panel.plot.setLabel("left", "loss (log scale)" if on else "loss")
        panel.hover_dot.clear()

    def add_points(self, points: dict[str, tuple[list[float], list[float]]], phase: str = "",
                   title: str = "") -> None:
        """Append (steps of the phase, losses) per task to `phase`'s panel and redraw those tasks once."""
        panel = self.add_panel(phase, title or phase)
        for name, (xs, ys) in points.items():
            series = panel.series.get(name)
            if series is None:
                series = panel.spare.pop(name, None)
                if series is not None:
                    series.show_in_legend(panel.legend)
                else:
                    series = _Series(name, self.colour(name), panel.plot)
                panel.series[name] = series
            series.x.extend(xs)
            series.y.extend(ys)
            self._redraw(series)

    def set_planned_steps(self, phase: str, end: float) -> None:
        if phase in self.panels:
            self.panels[phase].set_planned_steps(end)

    def point_count(self, name: str) -> int:
        """Points of task `name` in all panels."""
        return sum(len(p.series[name].x) for p in self.panels.values() if name in p.series)

    def _redraw(self, series: _Series) -> None:
        x = np.asarray(series.x, dtype=np.float64)
        y = np.asarray(series.y, dtype=np.float64)
        series.smoothed = ema(y, self.smoothing.value())
        series.raw.setData(x, y)
        series.smooth.setData(x, series.smoothed)

    def _resmooth(self) -> None:
        for panel in self.panels.values():
            for series in panel.series.values():
                self._redraw(series)

    def set_log(self, on: bool) -> None:
        if self.log_box.isChecked() != on:
            self.log_box.setChecked(on)
            return
        for panel in [*self.panels.values(), *self._ready.values()]:
            self._apply_log(panel, on)

    # ------------------------------------------------------------------------------ hover
    def _mouse_moved(self, scene_pos) -> None:
        for panel in self.panels.values():
            if panel.plot.sceneBoundingRect().contains(scene_pos):
                view = panel.plot.vb.mapSceneToView(scene_pos)
                self.readout.setText(self.readout_at(view.x(), view.y(), panel.phase) or " ")
                return

    def nearest(self, x: float, y: float, phase: str | None = None) -> tuple[str, int] | None:
        """(task, index) of the raw point of `phase`'s panel (default: the latest) nearest to view coordinates
        (x, y), within HOVER_PIXELS."""
        panel = self.panels.get(phase) if phase is not None else self.panel
        if panel is None:
            return None
        pixel_w, pixel_h = panel.plot.vb.viewPixelSize()
        pixel_w, pixel_h = pixel_w or 1.0, pixel_h or 1.0
        log = self.log_box.isChecked()
        best: tuple[float, str, int] | None = None
        for name, series in panel.series.items():
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

    def readout_at(self, x: float, y: float, phase: str | None = None) -> str:
        """Text for the cursor at view coordinates (x, y) of `phase`'s panel (default: the latest): task, phase,
        step, raw and smoothed loss."""
        panel = self.panels.get(phase) if phase is not None else self.panel
        for other in self.panels.values():
            other.hover_dot.clear()
        hit = self.nearest(x, y, phase)
        if panel is None or hit is None:
            return ""
        name, j = hit
        series = panel.series[name]
        step, loss = series.x[j], series.y[j]
        shown = math.log10(loss) if self.log_box.isChecked() and loss > 0 else loss
        panel.hover_dot.setData([step], [shown])
        smooth = series.smoothed[j] if j < len(series.smoothed) else loss
        return f"{name} · {panel.plot.titleLabel.text}, step {int(step)} · loss {loss:.4g} (smoothed {smooth:.4g})"
