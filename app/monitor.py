"""Monitor: live loss curves per task, validation metrics of the foundation model and the experts,
learning rate, throughput, progress with ETA and a log. Also shows a past run from its metrics.jsonl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, QTimer
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
from app.run_controller import StepCount, Timed
from app.run_progress import RunProgress, format_duration, phase_group, phase_title
from core.events import EvalEvent, PhaseEvent, RunInfo, StepEvent, metrics_line, repeats_its_metric
from core.kinds import KINDS
from core.train.metrics_log import read_metrics

MODEL_NAMES = {"teacher": "Foundation model", "student": "Experts"}
COLUMN_NAMES = {"teacher": "Foundation", "student": "Experts"}
METRIC_NAMES = {"acc": "accuracy", "auc": "AUC", "dice": "Dice", "hd95": "HD95"}
MAX_LOG_LINES = 5000


def where_of(event: EvalEvent) -> str:
    """What an evaluation's values are: "test" or "validation, <phase> epoch N"."""
    if event.phase == "test":
        return "test"
    return f"validation, {phase_title(event.phase)} epoch {event.epoch + 1}"


def short_where(where: str) -> str:
    """A column header's second line: "test", "validation ep. 2"."""
    if where.startswith("validation"):
        return f"validation ep. {where.rsplit(' ', 1)[-1]}"
    return where


class MetricsTable(QTableWidget):
    """One row per (task, metric); columns: the foundation model and the experts, each with the latest values of
    its latest evaluation (its header says which: validation epoch N or test). A metric's per-structure values
    ("dice/grey matter") are indented rows under it, shown only when there are several (with one structure they
    repeat the metric); units come from the run's task kind ("HD95 (mm)")."""

    MODELS = ("teacher", "student")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        header = self.horizontalHeader()
        for col in (0, 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        for col in (2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        self.values: dict[tuple[str, str], dict[str, float]] = {}  # (task, model) -> metric -> value
        self.where: dict[str, str] = {}  # model -> what its values are ("validation, decomposition epoch 2")
        self.units: dict[str, str] = {}
        self.clear_values([])

    def clear_values(self, tasks: list[str]) -> None:
        self.values.clear()
        self.where.clear()
        self._tasks = list(tasks)
        self._refresh()

    def set_units(self, units: dict[str, str]) -> None:
        """metric -> unit of the run's task kind (`TaskKind.units`)."""
        self.units = dict(units)
        self._refresh()

    def update_eval(self, model: str, metrics: dict[str, dict[str, float]], where: str) -> None:
        """The values of one evaluation (`where`: e.g. "validation, decomposition epoch 2" or "test"); they
        replace the model's earlier values of each task they hold."""
        if self.where.get(model) != where:  # another evaluation: no value of an older one stays beside it
            self.values = {key: v for key, v in self.values.items() if key[1] != model}
            self.where[model] = where
        for task, values in metrics.items():
            if task not in self._tasks:
                self._tasks.append(task)
            self.values[(task, model)] = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        self._refresh()

    def value(self, task: str, model: str, metric: str) -> float | None:
        return self.values.get((task, model), {}).get(metric)

    def title(self) -> str:
        """What the values are: "Validation metrics", "Test metrics", or "Metrics" when the columns differ."""
        kinds = {"test" if w == "test" else "validation" for w in self.where.values()}
        if kinds == {"test"}:
            return "Test metrics"
        if kinds == {"validation"}:
            return "Validation metrics"
        return "Metrics"

    def metric_label(self, metric: str) -> str:
        base, _, part = metric.partition("/")
        if part:
            return f"    {part}"
        unit = self.units.get(base)
        return METRIC_NAMES.get(base, base) + (f" ({unit})" if unit else "")

    def rows(self) -> list[tuple[str, str]]:
        """(task, metric) in display order: each task's metrics, a metric's per-structure values under it."""
        rows = []
        for task in self._tasks:
            names: list[str] = []
            for model in self.MODELS:
                names += [m for m in self.values.get((task, model), {}) if m not in names]
            heads = [m for m in names if "/" not in m]
            heads += [m.split("/")[0] for m in names if "/" in m and m.split("/")[0] not in heads]
            for head in heads:
                rows.append((task, head))
                rows += [(task, m) for m in names if m.startswith(head + "/") and not repeats_its_metric(m, names)]
        return rows

    def _format(self, metric: str, value: float) -> str:
        if value != value:  # NaN: undefined (an HD95 where a structure is missing)
            return "n/a"
        return f"{value:.2f}" if metric.split("/")[0] in self.units else f"{value:.3f}"

    def _refresh(self) -> None:
        for col, model in enumerate(self.MODELS, start=2):
            where = self.where.get(model)
            text = COLUMN_NAMES[model] + (f"\n{short_where(where)}" if where else "")
            item = QTableWidgetItem(text)
            item.setToolTip(f"{MODEL_NAMES[model]}: {where}" if where else MODEL_NAMES[model])
            self.setHorizontalHeaderItem(col, item)
        self.setHorizontalHeaderItem(0, QTableWidgetItem("Task"))
        self.setHorizontalHeaderItem(1, QTableWidgetItem("Metric"))
        rows = self.rows()
        self.setRowCount(len(rows))
        previous = None
        for row, (task, metric) in enumerate(rows):
            item = QTableWidgetItem(task if task != previous else "")
            item.setToolTip(task)
            self.setItem(row, 0, item)
            previous = task
            base, _, part = metric.partition("/")
            full = METRIC_NAMES.get(base, base) + (f" of {part}" if part else "")
            item = QTableWidgetItem(self.metric_label(metric))
            item.setToolTip(full + (f" ({self.units[base]})" if base in self.units else ""))
            self.setItem(row, 1, item)
            for col, model in enumerate(self.MODELS, start=2):
                value = self.value(task, model, metric)
                item = QTableWidgetItem("–" if value is None else self._format(metric, value))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if value is not None:
                    item.setToolTip(f"{MODEL_NAMES[model]}, {full} on {task}: {value:.4f} ({self.where[model]})")
                self.setItem(row, col, item)


class MonitorPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = LossPlot()
        self.metrics = MetricsTable()
        self.metrics_title = QLabel("Metrics")
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
        self.run_progress = RunProgress()
        self._clock = QTimer(self)  # the elapsed time also moves while no event comes (reading the data)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick_clock)
        self.reset()

    # ------------------------------------------------------------------------------ state
    def reset(self, tasks: list[str] | None = None, phases: list[str] | None = None, title: str = "") -> None:
        """Empty the monitor for a run about to start (`title`: its folder) or for a past run (no title)."""
        note = "Reading and preprocessing the data…" if title else ""
        self.plot.clear(note)
        self.plot.set_tasks(tasks or [])
        self.metrics.clear_values(tasks or [])
        self.metrics.set_units({})
        self.metrics_title.setText("Metrics")
        self.lr_label.setText("–")
        self.speed_label.setText("–")
        self.elapsed_label.setText("–")
        self.run_label.setText(title)
        self.phase: str | None = None
        self._started = time.monotonic()
        self._paused_s = 0.0
        self.run_progress.reset(note)
        self.run_progress.phases = list(phases or [])
        if title:
            self._render()
            self._clock.start()
        else:
            self._clock.stop()
            self.phase_label.setText("No run yet")
            self._set_bar(0, 1, "")

    def _tick_clock(self) -> None:
        self.elapsed_label.setText(format_duration(time.monotonic() - self._started))

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self.log_view.appendPlainText(f"{stamp}  {line}")

    def log_text(self) -> str:
        return self.log_view.toPlainText()

    def _set_bar(self, value: int, maximum: int, text: str) -> None:
        if self.progress.maximum() != maximum:
            self.progress.setRange(0, maximum)
        self.progress.setValue(value)
        self.progress.setFormat(text)

    def _render(self) -> None:
        shown = self.run_progress.display()
        self.phase_label.setText(shown.label)
        self._set_bar(shown.value, shown.maximum, shown.text)
        self.elapsed_label.setText(format_duration(time.monotonic() - self._started))

    # ------------------------------------------------------------------------------ live
    def run_started(self, info: RunInfo) -> None:
        self.plot.set_tasks(info.tasks)
        # a panel for each phase that trains (those with planned steps), laid out now: a boundary then draws at once
        groups: dict[str, float] = {}
        for phase, steps in ((info.extra or {}).get("steps") or {}).items():
            group = phase_group(phase)  # the single-task baselines share a panel (each its own steps)
            groups[group] = max(groups.get(group, 0), float(steps))
        self.plot.prepare([(group, phase_title(group), steps) for group, steps in groups.items()])
        self.run_progress.started(info)
        self.plot.set_message(self.run_progress.note)
        kind = (info.extra or {}).get("kind")
        if kind in KINDS:
            self.metrics.set_units(KINDS[kind].units)
        self.log(f"run {info.run_dir}: tasks {', '.join(info.tasks)} on {info.device}; "
                 f"phases {' → '.join(info.phases)}")
        self._render()

    def add_steps(self, batch: list[Timed | PhaseEvent | StepCount]) -> None:
        """The run's progress since the last batch (throttled by the controller): logged steps (one redraw per
        phase and task), stages without steps, the step counter between logged steps."""
        points: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        speed = None
        for item in batch:
            if isinstance(item, StepCount):
                self.run_progress.count(item.time, item.ticks, item.paused)
                continue
            if isinstance(item, PhaseEvent):
                self.run_progress.stage(item)
                self.log(f"{item.text}…")
                continue
            event: StepEvent = item.event
            self.phase = event.phase
            self.run_progress.step(event, item.time, item.ticks)
            panel = phase_group(event.phase)  # the single-task baselines share one panel
            for task, loss in event.task_losses.items():
                xs, ys = points.setdefault(panel, {}).setdefault(task, ([], []))
                xs.append(event.step)
                ys.append(loss)
            self.plot.add_panel(panel, phase_title(panel))
            self.plot.set_planned_steps(panel, event.steps_total)
            self.lr_label.setText(f"{event.lr:.3g}")
            # a window the engine waited paused in: its samples/s counts the pause; keep the last value
            if item.paused_s <= self._paused_s + 0.05:
                speed = event.samples_per_s
            self._paused_s = item.paused_s
        for phase, tasks in points.items():
            self.plot.add_points(tasks, phase, phase_title(phase))
        if speed is not None:
            self.speed_label.setText(f"{speed:,.0f}")
        self._render()

    def add_eval(self, event: EvalEvent) -> None:
        where = where_of(event)
        self.run_progress.evaluated(event)
        model = MODEL_NAMES.get(event.model, event.model).lower()
        if event.phase.startswith("single_task/"):
            model = "single-task baseline"  # not the experts' column: logged only
        else:
            self.metrics.update_eval(event.model, event.metrics, where)
            self.metrics_title.setText(self.metrics.title())
        self.log(f"[{model}, {where}] {metrics_line(event.metrics)}")
        self._render()

    def run_ended(self, summary: dict[str, Any]) -> None:
        status = summary.get("status", "?")
        self._clock.stop()
        self.run_progress.stage_text = None
        if status == "completed":
            self.phase_label.setText("Finished")
            self._set_bar(1, 1, "done")
        else:
            self.phase_label.setText(f"Run {status}")
            if self.progress.maximum() == 0:  # no busy bar once nothing runs
                self._set_bar(0, 1, "")
        self.elapsed_label.setText(format_duration(time.monotonic() - self._started))

    # ------------------------------------------------------------------------- past run
    def load_run(self, run_dir: str | Path) -> int:
        """Show a run folder's curves and metrics from its metrics.jsonl; returns the record count."""
        run_dir = Path(run_dir)
        records = read_metrics(run_dir / "metrics.jsonl")
        tasks, kind = run_tasks(run_dir)
        self.reset(tasks)
        self.run_label.setText(str(run_dir))
        if kind in KINDS:
            self.metrics.set_units(KINDS[kind].units)
        self.show_records(records)
        self.phase_label.setText(f"Run folder: {len(records)} records")
        summary = run_dir / "summary.json"
        self.log(f"opened run {run_dir} ({len(records)} records"
                 f"{', finished' if summary.is_file() else ', unfinished'})")
        return len(records)

    def show_records(self, records: list[dict[str, Any]]) -> None:
        """Curves (a panel per phase) and the latest metrics from metrics.jsonl records."""
        points: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        last_all = None
        for r in records:
            if r.get("kind") != "train":
                continue
            if r.get("task") == "all":
                last_all = r
                continue
            if not isinstance(r.get("loss"), int | float) or not isinstance(r.get("step"), int | float):
                continue
            panel = phase_group(str(r.get("phase", "?")))
            xs, ys = points.setdefault(panel, {}).setdefault(str(r.get("task")), ([], []))
            xs.append(int(r["step"]))
            ys.append(float(r["loss"]))
        for phase, tasks in points.items():
            self.plot.add_points(tasks, phase, phase_title(phase))
        if last_all is not None:
            if isinstance(last_all.get("lr"), int | float):
                self.lr_label.setText(f"{last_all['lr']:.3g}")
            if isinstance(last_all.get("samples_per_s"), int | float):
                self.speed_label.setText(f"{last_all['samples_per_s']:,.0f}")
        for r in records:
            if r.get("kind") != "eval" or str(r.get("phase", "")).startswith("single_task/"):
                continue
            metrics = {k: v for k, v in r.items()
                       if k not in ("phase", "kind", "model", "epoch", "step", "task") and isinstance(v, int | float)}
            event = EvalEvent(phase=str(r.get("phase", "?")), epoch=int(r.get("epoch", 0) or 0),
                              metrics={str(r.get("task", "?")): metrics}, model=str(r.get("model", "student")))
            if event.model in MetricsTable.MODELS:
                self.metrics.update_eval(event.model, event.metrics, where_of(event))
        self.metrics_title.setText(self.metrics.title())


def run_tasks(run_dir: Path) -> tuple[list[str], str | None]:
    """The task names (in the run's order) and the kind of a run folder's config.yaml; ([], None) when unreadable."""
    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], None
    if not isinstance(raw, dict):
        return [], None
    tasks = [str(t["name"]) for t in raw.get("tasks") or [] if isinstance(t, dict) and "name" in t]
    return tasks, str(raw.get("kind", "classification"))
