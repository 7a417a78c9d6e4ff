"""Monitor: live loss curves per task, validation metrics of the foundation model and the experts,
learning rate, throughput, progress with ETA and a log. Also shows a past run from its metrics.jsonl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.loss_plot import LossPlot
from app.run_controller import Timed
from core.events import EvalEvent, RunInfo, StepEvent
from core.train.metrics_log import read_metrics

MODEL_NAMES = {"teacher": "Foundation model", "student": "Experts"}
PHASE_TITLES = {"foundation": "foundation pre-training", "decompose": "decomposition", "evaluate": "evaluation",
                "export": "export"}
MAX_LOG_LINES = 5000


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class MetricsTable(QTableWidget):
    """One row per (task, metric); columns: the foundation model and the experts (latest values)."""

    MODELS = ("teacher", "student")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.setHorizontalHeaderLabels(["Task", "Metric", "Foundation", "Expert"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.values: dict[tuple[str, str], dict[str, tuple[float, str]]] = {}  # (task, model) -> metric
        self.clear_values([])

    def clear_values(self, tasks: list[str]) -> None:
        self.values.clear()
        self._tasks = list(tasks)
        self._metrics: dict[str, list[str]] = {}
        self._refresh()

    def update_eval(self, model: str, metrics: dict[str, dict[str, float]], where: str) -> None:
        """Latest values of one evaluation (`where`: e.g. "validation, epoch 2" or "test")."""
        for task, values in metrics.items():
            if task not in self._tasks:
                self._tasks.append(task)
            names = self._metrics.setdefault(task, [])
            for metric, value in values.items():
                if not isinstance(value, int | float):
                    continue
                self.values.setdefault((task, model), {})[metric] = (float(value), where)
                if metric not in names:
                    names.append(metric)
        self._refresh()

    def value(self, task: str, model: str, metric: str) -> float | None:
        entry = self.values.get((task, model), {}).get(metric)
        return None if entry is None else entry[0]

    def _refresh(self) -> None:
        rows = [(task, metric) for task in self._tasks for metric in sorted(self._metrics.get(task, []))]
        self.setRowCount(len(rows))
        previous = None
        for row, (task, metric) in enumerate(rows):
            self.setItem(row, 0, QTableWidgetItem(task if task != previous else ""))
            previous = task
            self.setItem(row, 1, QTableWidgetItem(metric))
            for col, model in enumerate(self.MODELS, start=2):
                entry = self.values.get((task, model), {}).get(metric)
                item = QTableWidgetItem("–" if entry is None else f"{entry[0]:.3f}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if entry is not None:
                    item.setToolTip(f"{MODEL_NAMES[model]} {metric} on {task}: {entry[0]:.4f} ({entry[1]})")
                self.setItem(row, col, item)


class MonitorPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = LossPlot()
        self.metrics = MetricsTable()
        self.metrics_title = QLabel("Validation metrics")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(MAX_LOG_LINES)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.log_view.setFont(mono)
        self.phase_label = QLabel("No run yet")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.lr_label = QLabel("–")
        self.speed_label = QLabel("–")
        self.elapsed_label = QLabel("–")
        self.run_label = QLabel("")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        stats = QGridLayout()
        stats.addWidget(self.phase_label, 0, 0)
        stats.addWidget(self.progress, 0, 1, 1, 5)
        for col, (name, label) in enumerate(
            (("learning rate", self.lr_label), ("samples/s", self.speed_label), ("elapsed", self.elapsed_label))
        ):
            caption = QLabel(name + ":")
            caption.setStyleSheet("color: #555555;")
            stats.addWidget(caption, 1, 2 * col)
            stats.addWidget(label, 1, 2 * col + 1)
        stats.setColumnStretch(5, 1)
        stats.addWidget(self.run_label, 2, 0, 1, 6)

        right = QWidget()
        rlayout = QVBoxLayout(right)
        rlayout.setContentsMargins(0, 0, 0, 0)
        rlayout.addWidget(self.metrics_title)
        rlayout.addWidget(self.metrics, 1)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.plot)
        top.addWidget(right)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 1)
        top.setSizes([800, 330])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(top)
        vertical.addWidget(self.log_view)
        vertical.setStretchFactor(0, 4)
        vertical.setStretchFactor(1, 1)
        vertical.setSizes([520, 150])
        layout = QVBoxLayout(self)
        layout.addLayout(stats)
        layout.addWidget(vertical, 1)
        self._reset_state([])

    # ------------------------------------------------------------------------------ state
    def _reset_state(self, phases: list[str]) -> None:
        self.phases = list(phases)
        self.phase: str | None = None
        self.offsets: dict[str, float] = {}  # phase -> x offset, so phases follow each other on one axis
        self._phase_end = 0.0
        self._eta_ref: tuple[float, int] | None = None  # (worker time, step) the rate is measured from
        self._sec_per_step: float | None = None
        self._started = time.monotonic()
        self._last_step: StepEvent | None = None

    def reset(self, tasks: list[str] | None = None, phases: list[str] | None = None, title: str = "") -> None:
        self.plot.clear()
        for task in tasks or []:
            self.plot.add_task(task)
        self.metrics.clear_values(tasks or [])
        self.metrics_title.setText("Validation metrics")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.lr_label.setText("–")
        self.speed_label.setText("–")
        self.elapsed_label.setText("–")
        self.phase_label.setText("Starting…" if title else "No run yet")
        self.run_label.setText(title)
        self._reset_state(phases or [])

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self.log_view.appendPlainText(f"{stamp}  {line}")

    def log_text(self) -> str:
        return self.log_view.toPlainText()

    # ------------------------------------------------------------------------------ live
    def run_started(self, info: RunInfo) -> None:
        for task in info.tasks:
            self.plot.add_task(task)
        self.phases = list(info.phases)
        self.log(f"run {info.run_dir}: tasks {', '.join(info.tasks)} on {info.device}; "
                 f"phases {' → '.join(info.phases)}")

    def _offset(self, phase: str) -> float:
        if phase not in self.offsets:
            self.offsets[phase] = self._phase_end
            if self._phase_end > 0:
                self.plot.add_marker(self._phase_end, PHASE_TITLES.get(phase, phase))
        return self.offsets[phase]

    def add_steps(self, batch: list[Timed]) -> None:
        """A batch of step events (already throttled): one redraw per task."""
        points: dict[str, tuple[list[float], list[float]]] = {}
        for timed in batch:
            event: StepEvent = timed.event
            if event.phase != self.phase:
                self.phase = event.phase
                self._eta_ref, self._sec_per_step = None, None
            offset = self._offset(event.phase)
            if offset + event.steps_total > self._phase_end:
                self._phase_end = offset + event.steps_total
                self.plot.set_planned_steps(self._phase_end)
            for task, loss in event.task_losses.items():
                xs, ys = points.setdefault(task, ([], []))
                xs.append(offset + event.step)
                ys.append(loss)
            self._measure(timed.time, event.step)
            self._last_step = event
        if points:
            self.plot.add_points(points)
        if self._last_step is not None:
            self._show_progress(self._last_step)

    def _measure(self, now: float, step: int) -> None:
        if self._eta_ref is None:
            self._eta_ref = (now, step)
            return
        t0, s0 = self._eta_ref
        if step > s0 and now > t0:
            self._sec_per_step = (now - t0) / (step - s0)

    def restart_rate(self) -> None:
        """After a pause: measure the speed again from the next step (the pause is not work)."""
        self._eta_ref, self._sec_per_step = None, None

    def _show_progress(self, event: StepEvent) -> None:
        index = self.phases.index(event.phase) + 1 if event.phase in self.phases else 0
        of = f" ({index}/{len(self.phases)})" if index else ""
        self.phase_label.setText(f"{PHASE_TITLES.get(event.phase, event.phase).capitalize()}{of}, "
                                 f"epoch {event.epoch + 1}")
        self.progress.setRange(0, max(1, event.steps_total))
        self.progress.setValue(min(event.step, event.steps_total))
        eta = ""
        if self._sec_per_step is not None:
            eta = f" · ETA {format_duration((event.steps_total - event.step) * self._sec_per_step)}"
        self.progress.setFormat(f"step {event.step}/{event.steps_total} (%p%){eta}")
        self.lr_label.setText(f"{event.lr:.3g}")
        self.speed_label.setText(f"{event.samples_per_s:,.0f}")
        self.elapsed_label.setText(format_duration(time.monotonic() - self._started))

    def add_eval(self, event: EvalEvent) -> None:
        where = "test" if event.phase == "test" else f"validation, epoch {event.epoch + 1}"
        self.metrics.update_eval(event.model, event.metrics, where)
        self.metrics_title.setText("Test metrics" if event.phase == "test" else
                                   f"Validation metrics (epoch {event.epoch + 1})")
        parts = [f"{task} " + " ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, int | float))
                 for task, m in event.metrics.items()]
        self.log(f"[{MODEL_NAMES.get(event.model, event.model).lower()}, {where}] " + " | ".join(parts))

    def run_ended(self, summary: dict[str, Any]) -> None:
        status = summary.get("status", "?")
        if status == "completed":
            self.phase_label.setText("Finished")
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("done")
        else:
            self.phase_label.setText(f"Run {status}")
        self.elapsed_label.setText(format_duration(time.monotonic() - self._started))

    # ------------------------------------------------------------------------- past run
    def load_run(self, run_dir: str | Path) -> int:
        """Show a run folder's curves and metrics from its metrics.jsonl; returns the record count."""
        run_dir = Path(run_dir)
        records = read_metrics(run_dir / "metrics.jsonl")
        self.reset(title=str(run_dir))
        self.show_records(records)
        self.phase_label.setText(f"Run folder: {len(records)} records")
        summary = run_dir / "summary.json"
        self.log(f"opened run {run_dir} ({len(records)} records"
                 f"{', finished' if summary.is_file() else ', unfinished'})")
        return len(records)

    def show_records(self, records: list[dict[str, Any]]) -> None:
        """Curves and latest metrics from metrics.jsonl records (phases in file order)."""
        train = [r for r in records if r.get("kind") == "train"]
        phase_order: list[str] = []
        phase_max: dict[str, int] = {}
        for r in train:
            phase = r.get("phase", "?")
            if phase not in phase_order:
                phase_order.append(phase)
            phase_max[phase] = max(phase_max.get(phase, 0), int(r.get("step", 0)))
        offset = 0.0
        for phase in phase_order:
            if phase in self.offsets:
                offset = self.offsets[phase]
            else:
                if offset > 0:
                    self.plot.add_marker(offset, PHASE_TITLES.get(phase, phase))
                self.offsets[phase] = offset
            offset = self.offsets[phase] + phase_max[phase]
        self._phase_end = max(self._phase_end, offset)
        points: dict[str, tuple[list[float], list[float]]] = {}
        last_all = None
        for r in train:
            if r.get("task") == "all":
                last_all = r
                continue
            if not isinstance(r.get("loss"), int | float):
                continue
            xs, ys = points.setdefault(r["task"], ([], []))
            xs.append(self.offsets[r.get("phase", "?")] + int(r.get("step", 0)))
            ys.append(float(r["loss"]))
        self.plot.add_points(points)
        if last_all is not None:
            if isinstance(last_all.get("lr"), int | float):
                self.lr_label.setText(f"{last_all['lr']:.3g}")
            if isinstance(last_all.get("samples_per_s"), int | float):
                self.speed_label.setText(f"{last_all['samples_per_s']:,.0f}")
        for r in records:
            if r.get("kind") != "eval":
                continue
            metrics = {k: v for k, v in r.items()
                       if k not in ("phase", "kind", "model", "epoch", "step", "task") and isinstance(v, int | float)}
            event = EvalEvent(phase=r.get("phase", "?"), epoch=int(r.get("epoch", 0)),
                              metrics={r.get("task", "?"): metrics}, model=r.get("model", "student"))
            where = "test" if event.phase == "test" else f"validation, epoch {event.epoch + 1}"
            self.metrics.update_eval(event.model, event.metrics, where)
