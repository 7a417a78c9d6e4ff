"""Experts tab: the run's task experts (summary.json), applying one to the viewer's image, saving the
prediction and exporting a bundle.

Written once against the task-kind interface (`core.kinds`): an expert's kind says what it is applied to
(`viewer_input`: the slice the viewer's axial view shows, or the whole volume) and what it gives (`result`: class
scores, shown as a bar chart and saved as .json/.csv, or a label map, shown as the viewer's overlay with per-label
colours, names, visibility and opacity and saved as NIfTI or DICOM SEG in the input's geometry). The kind's
`apply_loaded` is the same computation as `lorkd apply` on the file. The work runs on a `Worker` (app.workers) with
progress and a Cancel button (also the engine's `Control` token, checked between steps); a cancelled result is
dropped, and the GUI thread never waits on inference.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFontMetrics
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.errors import plain_message, worker_message
from app.settings import remember_dir, start_dir
from app.workers import Worker, active_workers, await_workers
from core.errors import DataError
from core.events import Control
from core.export.bundle import bundle_kind
from core.export.model_card import evidence_sentence
from core.export.weights import read_bundle_metadata
from core.io import write_label_map
from core.kinds import KINDS

__all__ = ["ExpertsPanel"]

SCORE_FILTER = "Scores JSON (*.json);;Scores CSV (*.csv);;Label map NIfTI (*.nii.gz *.nii)"
LABEL_FILTER = "Label map NIfTI (*.nii.gz *.nii);;DICOM SEG (*.dcm)"
SCORE_SUFFIXES = (".json", ".csv")
# label colours of a label-map overlay (label 1, 2, ...): distinct, readable on a grey MRI/CT
LABEL_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _count(value) -> str:
    """11234567 -> '11.2 M'."""
    if value is None:
        return "—"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def _versus(expert, teacher) -> str:
    """'1.2 M / 11.2 M (9.3× smaller)'."""
    text = f"{_count(expert)} / {_count(teacher)}"
    try:
        if expert and teacher:
            text += f" ({float(teacher) / float(expert):.3g}× smaller)"
    except (TypeError, ValueError):
        pass
    return text


def _difference(record: dict) -> str:
    """'+0.021 (−0.010 to +0.050)': expert minus foundation model and its 95 % interval."""
    value, ci = record.get("expert_minus_teacher"), record.get("expert_minus_teacher_ci")
    if value is None:
        return "—"
    text = f"{value:+.3f}"
    if ci and None not in ci:
        text += f" ({ci[0]:+.3f} to {ci[1]:+.3f})"
    return text


def _expert_line(record: dict) -> str:
    """The first line of a shown result: which expert gave it, and that it is for research only."""
    name = html.escape(str(record.get("expert") or record.get("task") or "expert"))
    return f"<span style='color:#555'>Expert: {name} · research use only</span><br>"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


class ExpertsPanel(QWidget):
    """Table of a run's experts; apply one to the viewer's image; save the prediction; export a bundle.

    Signals: `applied(record)` after an expert was applied (the kind's `apply_loaded` record without arrays: a
    scores record has task, image, kind, scores {label: p} and prediction; a label-map record has task, image, kind,
    labels {value: name} and voxels {name: count}), `exported(path)` after an export.
    """

    COLUMNS = (
        "Task",
        "Kind",
        "Metric",
        "Foundation",
        "Expert",
        "Single-task",
        "Expert − foundation (95% CI)",
        "Parameters (expert / foundation)",
        "MACs (expert / foundation)",
        "Bundle",
    )
    applied = Signal(dict)
    exported = Signal(str)

    def __init__(self, viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.run_dir: Path | None = None
        self.summary: dict | None = None
        self.experts: list[dict] = []
        self.result: dict | None = None
        self.map_result: dict | None = None  # the last label map: expert, record, labels (Z, Y, X) uint8, volume
        self._worker: Worker | None = None  # the job whose result the panel shows (None: idle or cancelled)
        self._build()
        self._update_buttons()
        viewer.volumeLoaded.connect(self._volume_changed)
        viewer.overlayChanged.connect(self._update_buttons)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # ------------------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        self.run_label = QLabel("No run loaded")
        self.run_label.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.evidence_label = QLabel("")
        self.evidence_label.setWordWrap(True)
        self.evidence_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.apply_button = QPushButton("Apply to the loaded image")
        self.apply_button.clicked.connect(self.apply_to_image)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save prediction…")
        self.save_button.clicked.connect(self.save_prediction)
        self.export_button = QPushButton("Export bundle…")
        self.export_button.clicked.connect(self.export_bundle)
        buttons = QHBoxLayout()
        for button in (self.apply_button, self.cancel_button, self.save_button, self.export_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        self.prediction_label = QLabel("No prediction yet")
        self.prediction_label.setWordWrap(True)
        self.prediction_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # the input lies outside what the expert was trained on (`core.preprocess.applicability`)
        self.applicability_banner = QLabel("")
        self.applicability_banner.setWordWrap(True)
        self.applicability_banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.applicability_banner.setStyleSheet(
            "QLabel { background: #fff3cd; color: #664d03; border: 1px solid #e0b000; padding: 6px; }")
        self.applicability_banner.setVisible(False)
        self.caveat_label = QLabel("")
        self.caveat_label.setWordWrap(True)
        self.caveat_label.setStyleSheet("QLabel { color: #555; }")
        self.caveat_label.setVisible(False)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setXRange(0.0, 1.0, padding=0.02)
        self.plot.setLabel("bottom", "probability")
        self.plot.getViewBox().invertY(True)
        self.plot.setMinimumHeight(160)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setTextPen("k")
            self.plot.getAxis(name).setPen("k")
        self.bars: pg.BarGraphItem | None = None

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.run_label)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.evidence_label)
        top_layout.addLayout(buttons)
        top_layout.addWidget(self.progress)
        top_layout.addWidget(self.status_label)
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.applicability_banner)
        bottom_layout.addWidget(self.prediction_label)
        bottom_layout.addWidget(self.plot, 1)
        bottom_layout.addWidget(self.caveat_label)
        bottom_layout.addStretch(0)
        self.plot.setVisible(False)  # shown with class probabilities only
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        bottom.setMinimumHeight(170)  # the banner and the result's lines stay readable beside a long table
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    # ------------------------------------------------------------------------------ dialogs (patchable)
    def _ask_save_path(self, suggested: str) -> str | None:
        """Save dialog for a prediction (tests monkeypatch this)."""
        filters = LABEL_FILTER if self.map_result is not None else SCORE_FILTER
        path, _ = QFileDialog.getSaveFileName(self, "Save prediction", start_dir("predictions", suggested,
                                                                                 self.run_dir), filters)
        remember_dir("predictions", path)
        return path or None

    def _ask_export_folder(self) -> str | None:
        """Folder dialog for an export (tests monkeypatch this)."""
        path = QFileDialog.getExistingDirectory(self, "Export the expert bundle into folder",
                                                start_dir("bundles", default=self.run_dir))
        remember_dir("bundles", path)
        return path or None

    def _show_error(self, message: str, title: str = "Experts") -> None:
        QMessageBox.critical(self, title, message)

    def _show_info(self, message: str, title: str = "Experts") -> None:
        QMessageBox.information(self, title, message)

    # ---------------------------------------------------------------------------------------- the run
    def set_run(self, run_dir: str | Path | None) -> bool:
        """Show the experts of a run folder (from its summary.json). Returns False when there are none yet."""
        self.run_dir = Path(run_dir) if run_dir else None
        self.summary = None
        self.experts = []
        self.table.setRowCount(0)
        self.clear_prediction()
        if self.run_dir is None:
            self.run_label.setText("No run loaded")
            self._update_buttons()
            return False
        summary_path = self.run_dir / "summary.json"
        if not summary_path.is_file():
            self.run_label.setText(
                f"Run {self.run_dir}: no summary.json yet (the experts appear here when the run has finished)."
            )
            self._update_buttons()
            return False
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), list):
                raise ValueError("no 'tasks' list")
            self.experts = [self._expert_row(summary, task) for task in summary["tasks"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            self.experts = []
            self.run_label.setText(f"Run {self.run_dir}: unreadable summary.json")
            self._update_buttons()
            self._show_error(f"{summary_path}: cannot read the run summary ({' '.join(str(error).split())})")
            return False
        self.summary = summary
        name = summary.get("name") or self.run_dir.name
        self.run_label.setText(f"Run <b>{name}</b> — {self.run_dir} — {len(self.experts)} task expert(s)")
        self._fill_table()
        if self.experts:
            self.table.selectRow(0)
        self._update_buttons()
        return True

    def _expert_row(self, summary: dict, task: dict) -> dict:
        teacher = summary.get("teacher") or {}
        name = str(task["name"])
        bundle = self.run_dir / "experts" / name
        row = {
            "name": name,
            "run_kind": str(summary.get("kind") or "classification"),
            "kind": str(task.get("kind", "?")),
            "metric": task.get("metric"),
            "teacher": task.get("teacher"),
            "expert": task.get("expert"),
            "params": (task.get("params") or {}).get("expert_model"),
            "teacher_params": teacher.get("params"),
            "macs": (task.get("macs") or {}).get("expert_model"),
            "teacher_macs": teacher.get("macs"),
            "bundle": bundle if bundle.is_dir() else None,
            "record": task,
            "spatial_dims": task.get("spatial_dims"),
            "labels": task.get("labels"),
        }
        if row["bundle"] is not None:
            try:
                lorkd = read_bundle_metadata(bundle)["lorkd"]
                row["spatial_dims"] = int(lorkd["preprocessing"]["spatial_dims"])
                row["kind"] = str(lorkd.get("kind", row["kind"]))
                row["labels"] = lorkd.get("label_names", row["labels"])
                row["run_kind"] = bundle_kind(bundle) or row["run_kind"]
            except (ValueError, KeyError, TypeError):
                row["bundle_problem"] = "bundle metadata unreadable"
        return row

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.experts))
        for r, e in enumerate(self.experts):
            dims = f" · {e['spatial_dims']}D" if e["spatial_dims"] else ""
            if e["bundle"] is None:
                bundle = "not exported"
            else:
                bundle = e.get("bundle_problem") or str(e["bundle"])
            cells = (
                e["name"],
                e["kind"] + dims,
                str(e["metric"] or "—"),
                _number(e["teacher"]),
                _number(e["expert"]),
                _number(e["record"].get("single_task")),
                _difference(e["record"]),
                _versus(e["params"], e["teacher_params"]),
                _versus(e["macs"], e["teacher_macs"]),
                bundle,
            )
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if c in (3, 4, 5, 6):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 6 and e["record"].get("flags"):
                    item.setForeground(QBrush(QColor("#c0392b")))
                    item.setToolTip("; ".join(e["record"]["flags"]))
                self.table.setItem(r, c, item)

    def selected_expert(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        return self.experts[rows[0].row()] if rows else None

    def select_task(self, name: str) -> None:
        for r, e in enumerate(self.experts):
            if e["name"] == name:
                self.table.selectRow(r)
                return
        raise KeyError(f"no task {name!r} in this run")

    def _selection_changed(self) -> None:
        self._show_evidence(self.selected_expert())
        self._update_buttons()

    def _show_evidence(self, expert: dict | None) -> None:
        """The selected expert's test evidence in words: against its foundation model and the single-task
        baseline, with intervals, and its warnings in red."""
        if expert is None:
            self.evidence_label.setText("")
            return
        record = expert["record"]
        parts = [html.escape(s[0].upper() + s[1:]) for s in (evidence_sentence(record, "teacher"),
                                                              evidence_sentence(record, "single_task")) if s]
        if record.get("test"):
            parts.append(html.escape(f"Test: {record['test']}."))
        parts += [f'<span style="color:#c0392b"><b>Warning:</b> {html.escape(flag)}</span>'
                  for flag in record.get("flags") or []]
        self.evidence_label.setText(f"<b>{html.escape(expert['name'])}</b>: " + "<br>".join(parts) if parts
                                    else f"<b>{html.escape(expert['name'])}</b>: no test results recorded")

    # --------------------------------------------------------------------------------------- state
    def is_busy(self) -> bool:
        """True while an apply or export runs (and was not cancelled)."""
        return self._worker is not None

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        expert = self.selected_expert()
        self.apply_button.setEnabled(not busy and expert is not None)
        self.export_button.setEnabled(not busy and expert is not None)
        self.cancel_button.setEnabled(busy)
        has_overlay = getattr(self.viewer, "overlay_labels", None) is not None
        self.save_button.setEnabled(not busy and (self.result is not None or has_overlay))
        self.progress.setVisible(busy)

    def _start(self, fn, what: str, on_success, control: Control | None = None) -> None:
        worker = Worker(fn, control=control, owner=self, name="lorkd-experts")
        worker.progressed.connect(self._progressed)
        worker.returned.connect(lambda result, w=worker: self._finished(w, on_success, result))
        worker.errored.connect(lambda message, _details, user_error, w=worker:
                               self._failed(w, worker_message(message, user_error, what)))
        worker.cancelled.connect(lambda w=worker: self._cancelled(w))
        self._worker = worker
        self.progress.setValue(0)
        self.status_label.setText(what + "…")
        self._update_buttons()
        worker.start()

    def _progressed(self, percent: int, message: str) -> None:
        if self._worker is not None:
            self.progress.setValue(percent)
            self.status_label.setText(message + "…")

    def _finished(self, worker: Worker, on_success, result) -> None:
        if worker is not self._worker:  # not the job the panel waits for
            return
        self._worker = None
        try:
            on_success(result)
        except Exception as error:  # a failure while showing the result is still only a dialog
            self.status_label.setText("failed")
            self._show_error(plain_message(error, "showing the result"))
        self._update_buttons()

    def _failed(self, worker: Worker, message: str) -> None:
        if worker is not self._worker:
            return
        self._worker = None
        self.status_label.setText("failed")
        self._update_buttons()
        self._show_error(message)

    def _cancelled(self, worker: Worker) -> None:
        if worker is self._worker:
            self._worker = None
            self.status_label.setText("cancelled")
            self._update_buttons()

    def cancel(self) -> None:
        """Stop the running job at its next step; its result is dropped."""
        worker = self._worker
        if worker is None:
            return
        worker.abort()
        self._worker = None
        self.status_label.setText("cancelled")
        self._update_buttons()

    def wait_idle(self, timeout_ms: int = 30000) -> bool:
        """Block until every job this panel started (also cancelled ones) has ended (tests, shutdown)."""
        return await_workers(timeout_ms, owner=self)

    def shutdown(self) -> None:
        """Cancel and wait for the panel's jobs (the app is quitting)."""
        for worker in active_workers(owner=self):
            worker.abort()
        self.wait_idle(10000)

    # ------------------------------------------------------------------------------------------ apply
    def apply_to_image(self) -> None:
        """Apply the selected expert in a worker thread to what its kind takes: the slice the viewer's axial
        view shows, or the whole volume (a label map becomes the viewer's overlay)."""
        expert = self.selected_expert()
        if expert is None or self.is_busy():
            return
        kind = KINDS.get(expert["run_kind"])
        if kind is None:
            self._show_info(f"Expert '{expert['name']}' was made by a kind of run this version does not know "
                            f"({expert['run_kind']!r}).", "Expert not supported here")
            return
        if not self._has_bundle(expert):
            return
        if kind.viewer_input == "slice":
            if (expert["spatial_dims"] or 2) != 2:
                self._show_info(
                    f"Expert '{expert['name']}' is a {expert['spatial_dims']}D {kind.title} expert. The viewer applies "
                    f"{kind.title} experts to the 2D slice shown in the axial view; run `lorkd apply` on the file "
                    "instead.", "Expert not supported here")
                return
            loaded = self.viewer.current_slice_image()
            if loaded is None:
                self._show_info("Load an image in the viewer first (a file, a DICOM folder, or drop one there).")
                return
            source = self.viewer.current_slice_description()
            volume = getattr(self.viewer, "volume", None)
            modality = (volume.metadata or {}).get("modality") if volume is not None else None
        else:
            modality = None
            loaded = self.viewer.volume
            if loaded is None:
                self._show_info("Load a volume in the viewer first (a NIfTI/NRRD/MHA file or a DICOM series folder).")
                return
            shape = np.asarray(loaded.array).shape
            if loaded.is_rgb or len(shape) != 3 or min(shape) < 2:
                self._show_info(
                    f"Expert '{expert['name']}' works on 3D single-channel volumes; the viewer shows "
                    f"{'an RGB image' if loaded.is_rgb else 'an image of shape ' + 'x'.join(map(str, shape))}. "
                    "Load a NIfTI/NRRD/MHA volume or a DICOM series.",
                    "Expert not supported here",
                )
                return
            source = str((loaded.metadata or {}).get("source") or "volume")
        bundle, control = expert["bundle"], Control()

        def work(progress):
            return kind.apply_loaded(bundle, loaded, source, progress, control.checkpoint, modality=modality or None)

        if kind.result == "label_map":
            self._start(work, f"applying {expert['name']} to the volume",
                        lambda record: self._show_label_map(expert, record, loaded), control=control)
        else:
            self._start(work, f"applying {expert['name']}", lambda record: self._show_result(expert, record),
                        control=control)

    def _has_bundle(self, expert: dict) -> bool:
        if expert["bundle"] is None:
            self._show_error(
                f"Expert '{expert['name']}' has no bundle in {self.run_dir / 'experts' / expert['name']}: "
                "export the run's experts first (Export bundle… or `lorkd export RUN`)."
            )
            return False
        return True

    def _show_label_map(self, expert: dict, result: dict, volume) -> None:
        if self.viewer.volume is not volume:  # another image was loaded meanwhile: the labels belong to the old one
            self.status_label.setText(f"dropped the result of {expert['name']}: the viewer shows another image now")
            return
        labels = result["labels_array"]
        record = {k: v for k, v in result.items() if k != "labels_array"}
        names = {int(k): v for k, v in record["labels"].items() if int(k) != 0}
        colours = {k: LABEL_COLOURS[(k - 1) % len(LABEL_COLOURS)] for k in names}
        self.result = None
        self.map_result = {"expert": expert, "record": record, "labels": labels, "volume": volume}
        self.viewer.set_overlay(labels, names, colours)
        self._clear_plot()
        spacing = np.prod(np.asarray(volume.spacing, dtype=float))
        parts = [f"{name}: {record['voxels'].get(name, 0) * spacing / 1000.0:.1f} ml"
                 for k, name in sorted(names.items())]
        self.prediction_label.setText(
            f"{_expert_line(record)}<b>{record['task']}</b> ({record['kind']}) on {record['image']}: "
            + ", ".join(parts) + " — shown as the viewer's overlay (Viewer tab: opacity, per-label visibility)"
        )
        self._show_applicability(record)
        self.caveat_label.setVisible(False)
        self.status_label.setText(f"applied {expert['name']}")
        self._update_buttons()
        self.applied.emit(record)

    def _clear_plot(self) -> None:
        self.plot.clear()
        self.plot.setVisible(False)
        self.bars = None

    def clear_prediction(self) -> None:
        """Forget the shown prediction (another run or image): text, chart, banner; the overlay a label map put
        in the viewer goes with it."""
        if self.map_result is not None and getattr(self.viewer, "overlay_labels", None) is not None:
            self.viewer.clear_overlay()
        self.result = None
        self.map_result = None
        self._clear_plot()
        self.prediction_label.setText("No prediction yet")
        self.applicability_banner.setVisible(False)
        self.caveat_label.setVisible(False)
        self._update_buttons()

    def _show_applicability(self, record: dict) -> None:
        """The banner beside the result: how the input lies outside what the expert was trained on (hidden when
        it does not)."""
        outside = record.get("applicability") or []
        self.applicability_banner.setText(
            "<b>⚠ Outside what this expert was trained on</b> — its result may be meaningless here:<br>"
            + "<br>".join(f"• {html.escape(m)}" for m in outside))
        self.applicability_banner.setVisible(bool(outside))

    def _volume_changed(self, _volume) -> None:
        self.map_result = None  # the viewer dropped the overlay with the old image
        if self.result is not None or self.applicability_banner.isVisible():  # the old image's result
            self.clear_prediction()
        self._update_buttons()

    def _show_result(self, expert: dict, record: dict) -> None:
        labels = list(record["scores"])
        probs = np.array([record["scores"][k] for k in labels], dtype=np.float64)
        self.map_result = None
        self.result = {"expert": expert, "record": record, "labels": labels, "probs": probs}
        prediction = record["prediction"]
        if isinstance(prediction, str):
            shown = f"{prediction} (p = {record['scores'][prediction]:.3f})"
        else:
            shown = ", ".join(prediction) if prediction else "no label above 0.5"
        self.prediction_label.setText(
            f"{_expert_line(record)}<b>{record['task']}</b> ({record['kind']}) on {record['image']}: <b>{shown}</b>"
        )
        self._show_applicability(record)
        self.caveat_label.setText(f"Note: {record['calibration']}." if record.get("calibration") else "")
        self.caveat_label.setVisible(bool(record.get("calibration")))
        self.plot.setVisible(True)
        self._plot(labels, probs, record)
        self.status_label.setText(f"applied {expert['name']}")
        self.applied.emit(record)

    def _plot(self, labels: list[str], probs: np.ndarray, record: dict) -> None:
        plot = self.plot
        plot.clear()
        positions = np.arange(len(labels), dtype=float)
        prediction = record["prediction"]
        chosen = {prediction} if isinstance(prediction, str) else set(prediction)
        brushes = [pg.mkBrush(220, 90, 40) if name in chosen else pg.mkBrush(70, 130, 200) for name in labels]
        self.bars = pg.BarGraphItem(x0=0.0, y=positions, height=0.7, width=probs, brushes=brushes)
        plot.addItem(self.bars)
        if record.get("threshold") is not None:  # independent labels: each is predicted above the threshold
            pen = pg.mkPen("k", style=Qt.PenStyle.DashLine)
            plot.addItem(pg.InfiniteLine(pos=float(record["threshold"]), angle=90, pen=pen))
        for y, p in zip(positions, probs, strict=True):
            text = pg.TextItem(f"{p:.3f}", color="k", anchor=(0, 0.5))
            text.setPos(min(float(p), 0.85) + 0.01, y)
            plot.addItem(text)
        axis = plot.getAxis("left")
        axis.setTicks([[(float(i), name) for i, name in enumerate(labels)]])
        metrics = QFontMetrics(axis.font() if hasattr(axis, "font") else self.font())
        axis.setWidth(min(240, max(40, max(metrics.horizontalAdvance(n) for n in labels) + 16)))
        plot.setXRange(0.0, 1.0, padding=0.02)
        plot.setYRange(-0.6, len(labels) - 0.4, padding=0.0)

    def shown_probabilities(self) -> dict[str, float]:
        """Label -> probability as the bar chart shows it (empty before any prediction)."""
        if self.bars is None or self.result is None:
            return {}
        widths = self.bars.opts["width"]
        return {name: float(w) for name, w in zip(self.result["labels"], np.atleast_1d(widths), strict=True)}

    # ------------------------------------------------------------------------------------------- save
    def save_prediction(self) -> Path | None:
        """Save the scores (.json/.csv) or the viewer's overlay as a label map: NIfTI (.nii/.nii.gz) in the
        image's exact geometry, or DICOM SEG (.dcm) when the image came from DICOM files."""
        overlay = getattr(self.viewer, "overlay_labels", None)
        if self.result is None and overlay is None:
            self._show_info("Nothing to save yet: apply an expert first.")
            return None
        if self.map_result is not None and overlay is not None:
            suggested = f"{self.map_result['record']['task'] or 'prediction'}_labels.nii.gz"
        elif self.result is not None:
            suggested = f"{self.result['record']['task'] or 'prediction'}_scores.json"
        else:
            suggested = "labels.nii.gz"
        path = self._ask_save_path(suggested)
        if not path:
            return None
        path = Path(path)
        suffix = _suffix(path)
        try:
            if suffix in (".nii", ".nii.gz"):
                if overlay is None:
                    raise DataError("there is no label map to save (no overlay is shown); save scores as .json/.csv")
                written = write_label_map(np.asarray(overlay), self.viewer.volume, path)
            elif suffix == ".dcm":
                if overlay is None:
                    raise DataError("there is no label map to save (no overlay is shown)")
                written = self._write_dicom_seg(np.asarray(overlay), path)
            elif suffix in SCORE_SUFFIXES:
                if self.result is None:
                    raise DataError("there are no scores to save yet: apply an expert that gives scores first")
                written = KINDS[self.result["expert"]["run_kind"]].write_record(self.result["record"], path)
            else:
                raise DataError(f"{path}: unsupported extension (use .json, .csv, .nii, .nii.gz or .dcm)")
        except Exception as error:  # a dialog; the panel keeps working
            self._show_error(f"Cannot save {path}: {plain_message(error, 'saving the prediction')}")
            return None
        self.status_label.setText(f"saved {written}")
        return Path(written)

    def _write_dicom_seg(self, labels: np.ndarray, path: Path) -> Path:
        from core.export.weights import read_bundle_metadata
        from core.io.dicom_seg import dicom_source_files, write_dicom_seg

        volume = self.viewer.volume
        files = dicom_source_files(volume)
        names = self.viewer.overlay_names
        label_names = [names.get(k, f"label {k}") for k in range(1, int(labels.max(initial=0)) + 1)]
        label_codes = None
        if self.map_result is not None:
            given = [str(v) for k, v in sorted(self.map_result["record"]["labels"].items(), key=lambda kv: int(kv[0]))]
            label_names = given[1:] if len(given) > 1 else label_names
            bundle = self.map_result["expert"].get("bundle")
            if bundle is not None:  # the codes the task's config gave its labels (else the table by name)
                label_codes = read_bundle_metadata(bundle)["lorkd"].get("label_codes")
        return write_dicom_seg(labels, volume, files, path, label_names, label_codes=label_codes)

    # ----------------------------------------------------------------------------------------- export
    def export_bundle(self) -> None:
        """Copy the selected expert's bundle into a folder the user picks (as FOLDER/<task>/); when the run
        has no exported bundles yet, export them all from its checkpoint (`open_run(run).export`)."""
        expert = self.selected_expert()
        if expert is None or self.is_busy():
            return
        folder = self._ask_export_folder()
        if not folder:
            return
        target = Path(folder) / expert["name"]
        if target.exists():
            self._show_error(f"{target} already exists; choose another folder.")
            return
        source = expert["bundle"]
        run_dir = self.run_dir

        if source is not None:
            def work(progress):
                progress(0.0, f"copying {source.name}")
                Path(folder).mkdir(parents=True, exist_ok=True)
                shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))
                progress(1.0, "copied")
                return target
        else:
            def work(progress):
                from core.train.pipeline import open_run  # heavy (training stack): only when needed

                progress(0.0, "loading the run's checkpoint")
                run = open_run(run_dir)
                progress(0.3, "exporting every expert of the run")
                run.export(folder)
                if not target.is_dir():
                    raise FileNotFoundError(f"the export did not write {target}")
                progress(1.0, "exported")
                return target

        self._start(work, f"exporting {expert['name']}", self._exported)

    def _exported(self, target: Path) -> None:
        self.status_label.setText(f"exported the bundle to {target}")
        self.exported.emit(str(target))
