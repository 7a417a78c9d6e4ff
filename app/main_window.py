"""The main window: run controls, Setup / Monitor / Viewer / Experts tabs, menus, settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.about import about_html
from app.errors import plain_message, worker_message
from app.experts import ExpertsPanel
from app.monitor import MonitorPanel
from app.run_controller import RunController, RunState, choose_run_dir, warm_up_engine
from app.settings import AppSettings, default_data_dir, start_dir
from app.setup_panel import SetupPanel, demo_note, prepare_demo_with_volume
from app.viewer import ViewerWidget
from app.workers import Worker, await_workers
from core.errors import LorkdError
from core.kinds import DEFAULT_DEMO, KINDS
from core.train.metrics_log import read_metrics

STATE_TEXT = {
    RunState.IDLE: ("Idle", "#555555"),
    RunState.RUNNING: ("Running", "#1e7e34"),
    RunState.PAUSED: ("Paused", "#b8860b"),
    RunState.STOPPING: ("Stopping…", "#b8860b"),
    RunState.FINISHED: ("Finished", "#0b5394"),
    RunState.STOPPED: ("Stopped", "#555555"),
    RunState.FAILED: ("Failed", "#c0392b"),
}


class MainWindow(QMainWindow):
    demo_ready = Signal()
    run_finished = Signal(dict)  # the run's summary (status "completed" or "stopped")
    run_failed = Signal(str)

    def __init__(
        self,
        settings: QSettings | None = None,
        *,
        data_dir: str | Path | None = None,
        runs_dir: str | Path | None = None,
        load_demo: bool = True,
        demo_kwargs: dict[str, Any] | None = None,
        demo_overrides: list[str] | None = None,
        demo_kind: str | None = None,
        restore: bool = True,
    ) -> None:
        super().__init__()
        warm_up_engine()  # once per process; keeps lazy imports out of the run (see warm_up_engine)
        self.setWindowTitle("LoRKD Studio")
        self.settings = AppSettings(settings).activate()  # the file dialogs' folders (app.settings.start_dir)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.controller = RunController(self)
        self._close_when_done = False
        self._demo_worker: Worker | None = None
        self.error_box: QMessageBox | None = None
        self.ask_stop_on_close = self._ask_stop_on_close  # replaceable (tests)

        self.setup = SetupPanel()
        self.setup.set_runs_dir(Path(runs_dir) if runs_dir else self.settings.runs_dir)
        self.monitor = MonitorPanel()
        self.viewer = ViewerWidget()
        self.experts = ExpertsPanel(self.viewer)
        self.viewer.logged.connect(lambda text: self.monitor.log(text))  # unexpected errors' tracebacks
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.setup, "Setup")
        self.tabs.addTab(self.monitor, "Monitor")
        self.tabs.addTab(self.viewer, "Viewer")
        self.tabs.addTab(self.experts, "Experts")

        self._build_controls()
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addLayout(self.controls)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self._build_menus()

        self.setup.validity_changed.connect(self._update_actions)
        self.setup.runs_dir_chosen.connect(self._runs_dir_chosen)
        self.setup.load_requested.connect(self.open_config_dialog)
        self.setup.save_requested.connect(self.save_config_dialog)
        c = self.controller
        c.state_changed.connect(self._state_changed)
        c.run_started.connect(self.monitor.run_started)
        c.steps.connect(self.monitor.add_steps)
        c.evaluated.connect(self.monitor.add_eval)
        c.logged.connect(self.monitor.log)
        c.finished.connect(self._finished)
        c.failed.connect(self._failed)

        self.resize(1280, 820)
        if restore:
            geometry, state = self.settings.window()
            if geometry is not None:
                self.restoreGeometry(geometry)
            if state is not None:
                self.restoreState(state)
        self._state_changed(c.state)
        if restore:
            self._reopen_last_run()
        self.setup.demo_requested.connect(lambda kind: self.load_demo(kind=kind))
        if load_demo:
            self.load_demo(demo_kwargs or {}, demo_overrides or [], demo_kind or DEFAULT_DEMO)

    # --------------------------------------------------------------------------- layout
    def _button(self, text: str, icon: QStyle.StandardPixmap, slot, tip: str) -> QPushButton:
        button = QPushButton(self.style().standardIcon(icon), text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        self.controls.addWidget(button)
        return button

    def _build_controls(self) -> None:
        self.controls = QHBoxLayout()
        sp = QStyle.StandardPixmap
        self.start_button = self._button("Start", sp.SP_MediaPlay, self.start_run,
                                         "start the run (an unfinished run of the same config is resumed)")
        self.pause_button = self._button("Pause", sp.SP_MediaPause, self.controller.pause,
                                         "pause at the next step")
        self.resume_button = self._button("Resume", sp.SP_MediaSeekForward, self.controller.resume,
                                          "continue the paused run")
        self.stop_epoch_button = self._button("Stop after this epoch", sp.SP_MediaStop,
                                              self.controller.stop_after_epoch,
                                              "finish, checkpoint and evaluate the current epoch, then stop")
        self.cancel_button = self._button("Cancel", sp.SP_DialogCancelButton, self.controller.cancel,
                                          "stop at the next step; the last finished epoch stays resumable")
        self.controls.addStretch(1)
        self.state_label = QLabel()
        self.state_label.setMinimumWidth(150)
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.controls.addWidget(self.state_label)

    def _action(self, menu, text: str, slot, shortcut: QKeySequence | str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Open config…", self.open_config_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Save config…", self.save_config_dialog, QKeySequence.StandardKey.Save)
        self.recent_configs_menu = file_menu.addMenu("Recent configs")
        self.recent_configs_menu.aboutToShow.connect(lambda: self._fill_recent(self.recent_configs_menu, "configs"))
        file_menu.addSeparator()
        self.open_run_action = self._action(file_menu, "Open run…", self.open_run_dialog, "Ctrl+R")
        self.recent_runs_menu = file_menu.addMenu("Recent runs")
        self.recent_runs_menu.aboutToShow.connect(lambda: self._fill_recent(self.recent_runs_menu, "runs"))
        file_menu.addSeparator()
        self.demo_action = self._action(file_menu, "Load the demo", lambda: self.load_demo())
        self._action(file_menu, "Choose runs folder…", self.setup._choose_runs_dir)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)

        run_menu = bar.addMenu("&Run")
        self.start_action = self._action(run_menu, "Start", self.start_run, "F5")
        self.pause_action = self._action(run_menu, "Pause", self.controller.pause)
        self.resume_action = self._action(run_menu, "Resume", self.controller.resume)
        self.stop_epoch_action = self._action(run_menu, "Stop after this epoch", self.controller.stop_after_epoch)
        self.cancel_action = self._action(run_menu, "Cancel", self.controller.cancel)

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "About LoRKD Studio", self.show_about)

    def _fill_recent(self, menu, kind: str) -> None:
        menu.clear()
        items = self.settings.recent(kind)
        for path in items:
            action = menu.addAction(path)
            if kind == "configs":
                action.triggered.connect(lambda _=False, p=path: self.open_config(p))
            else:
                action.triggered.connect(lambda _=False, p=path: self.open_run(p))
        if not items:
            menu.addAction("(none)").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear").triggered.connect(lambda: self.settings.clear_recent(kind))

    # ---------------------------------------------------------------------------- state
    def _state_changed(self, state: RunState) -> None:
        text, colour = STATE_TEXT[state]
        self.state_label.setText(f"<b style='color:{colour}'>● {text}</b>")
        run_dir = self.controller.run_dir
        if run_dir is not None and state in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING):
            self.statusBar().showMessage(f"{text.rstrip('…')} in {run_dir}")
        self._update_actions()

    def _update_actions(self, *_: Any) -> None:
        c = self.controller
        preparing = self._demo_worker is not None
        can_start = c.allowed("start") and self.setup.is_valid and not preparing
        pairs = (
            (self.start_button, self.start_action, can_start),
            (self.pause_button, self.pause_action, c.allowed("pause")),
            (self.resume_button, self.resume_action, c.allowed("resume")),
            (self.stop_epoch_button, self.stop_epoch_action, c.allowed("stop_after_epoch")),
            (self.cancel_button, self.cancel_action, c.allowed("cancel")),
        )
        for button, action, enabled in pairs:
            button.setEnabled(enabled)
            action.setEnabled(enabled)
        idle = not c.state.active
        self.setup.setEnabled(idle)
        self.open_run_action.setEnabled(idle)
        self.recent_runs_menu.setEnabled(idle)
        self.recent_configs_menu.setEnabled(idle)
        self.demo_action.setEnabled(idle and not preparing)

    # ------------------------------------------------------------------------------ demo
    def load_demo(self, demo_kwargs: dict[str, Any] | None = None, overrides: list[str] | None = None,
                  kind: str = DEFAULT_DEMO) -> None:
        """Generate (or reuse) a kind's embedded demo files in the background and load its config (and the volume
        its experts apply to, if it has one, into the viewer); the same demo as `lorkd demo --kind KIND`."""
        if self._demo_worker is not None or self.controller.state.active:
            return
        self.statusBar().showMessage(f"Preparing the demo data in {self.data_dir}…")
        self.setup.set_pending("Preparing the demo data…")
        data_dir, demo_kwargs, overrides = self.data_dir, demo_kwargs or {}, overrides or []
        worker = Worker(lambda _progress: prepare_demo_with_volume(data_dir, kind, demo_kwargs, overrides), owner=self,
                        name="lorkd-demo")
        worker.returned.connect(self._demo_loaded)
        worker.errored.connect(self._demo_failed)
        worker.cancelled.connect(self._demo_cancelled)
        self._demo_worker = worker
        self._update_actions()
        worker.start()

    def _demo_loaded(self, result: tuple[dict[str, Any], Any]) -> None:
        self._demo_worker = None
        raw, volume = result
        try:
            self.setup.set_mapping(raw, note=demo_note(raw))
        except LorkdError as exc:
            self._demo_failed(plain_message(exc), "")
            return
        if volume is not None:
            self.viewer.load_volume(volume)  # the demo's volume: ready for its experts after the run
        what = KINDS[raw.get("kind", "classification")].demo_title
        self.statusBar().showMessage(f"Demo loaded ({what}) from real images shipped with the installed "
                                     "packages. Press Start.", 10000)
        self.monitor.log(f"demo data in {self.data_dir}")
        self._update_actions()
        self.demo_ready.emit()

    def _demo_failed(self, message: str, details: str, user_error: bool = True) -> None:
        self._demo_worker = None
        self.setup.set_pending(None)
        self._update_actions()
        if not user_error:  # a bug: its type and traceback go to the log, the dialog says it in plain words
            self.monitor.log(f"internal error while preparing the demo: {message}")
            self.monitor.log(details.rstrip())
        self.show_error("The demo could not be prepared", worker_message(message, user_error, "preparing the demo"),
                        details)

    def _demo_cancelled(self) -> None:
        self._demo_worker = None
        self.setup.set_pending(None)
        self._update_actions()

    # ------------------------------------------------------------------------------- run
    def start_run(self) -> None:
        if not self.controller.allowed("start"):
            return
        config = self.setup.validate_now()
        if config is None:
            self.statusBar().showMessage(f"Fix the configuration first: {self.setup.error}", 10000)
            return
        runs_root = self.setup.runs_dir
        try:
            runs_root.mkdir(parents=True, exist_ok=True)
            run_dir, resume = choose_run_dir(runs_root, config)
        except (OSError, LorkdError) as exc:
            self.show_error("Cannot start the run", plain_message(exc))
            return
        self.monitor.reset(config.task_names, title=f"Run folder: {run_dir}")
        if resume:
            self.monitor.show_records(read_metrics(run_dir / "metrics.jsonl"))
            self.monitor.log(f"resuming the unfinished run in {run_dir} from its last epoch checkpoint")
        self.controller.start(config, run_dir)
        self.settings.add_recent("runs", run_dir)
        self.settings.current_run = run_dir
        self.tabs.setCurrentWidget(self.monitor)
        self.statusBar().showMessage(f"Running in {run_dir}")

    def _finished(self, summary: dict[str, Any]) -> None:
        self.monitor.run_ended(summary)
        run_dir = self.controller.run_dir
        if summary.get("status") == "completed":
            seconds = summary.get("seconds")
            took = f" in {seconds:.0f} s" if isinstance(seconds, int | float) else ""
            self.monitor.log(f"run finished{took}: {run_dir}")
            self.statusBar().showMessage(f"Run finished: {run_dir}")
            self.experts.set_run(run_dir)
        else:  # the controller's log line says whether Start resumes it (a checkpoint) or begins again
            resumable = summary.get("resumable")
            self.statusBar().showMessage(f"Run stopped{' (resumable)' if resumable else ''}: {run_dir}")
        self.run_finished.emit(summary)
        if self._close_when_done:
            self.close()

    def _failed(self, message: str, details: str, user_error: bool) -> None:
        self.monitor.log(f"error: {message}")  # the log keeps the exception's type (a bug report needs it)
        if not user_error:
            self.monitor.log(details.rstrip())
        self.monitor.run_ended({"status": "failed"})
        shown = worker_message(message, user_error, "running")
        self.statusBar().showMessage(f"Run failed: {shown}")
        self.run_failed.emit(message)
        if self._close_when_done:
            self.close()
            return
        self.show_error("The run failed", shown, "" if user_error else details)

    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """A non-blocking error dialog (the window stays live; the log keeps the message)."""
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box
        return box

    # ---------------------------------------------------------------------- files, runs
    def open_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open config", start_dir("configs"), "YAML (*.yaml *.yml)")
        if path:
            self.open_config(path)

    def open_config(self, path: str | Path) -> bool:
        try:
            self.setup.load_yaml(path)
        except LorkdError as exc:
            message = " ".join(str(exc).split())
            if str(path) not in message:  # name the file (field errors name only the field)
                message = f"{path}: {message}"
            self.show_error("Cannot open the config", message)
            return False
        self.settings.add_recent("configs", path)
        self.settings.remember_dir("configs", path)
        self.tabs.setCurrentWidget(self.setup)
        self.statusBar().showMessage(f"Config loaded: {path}", 8000)
        return True

    def save_config_dialog(self) -> None:
        name = f"{self.setup.name_edit.text().strip() or 'config'}.yaml"
        path, _ = QFileDialog.getSaveFileName(self, "Save config", start_dir("configs", name), "YAML (*.yaml *.yml)")
        if path:
            if not path.endswith((".yaml", ".yml")):
                path += ".yaml"
            self.save_config(path)

    def save_config(self, path: str | Path) -> bool:
        try:
            self.setup.save_yaml(path)
        except (LorkdError, OSError) as exc:
            self.show_error("Cannot save the config", plain_message(exc))
            return False
        self.settings.add_recent("configs", path)
        self.settings.remember_dir("configs", path)
        self.statusBar().showMessage(f"Config saved: {path}", 8000)
        return True

    def open_run_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open run folder", start_dir("runs", default=self.setup.runs_dir))
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Show a past run's curves and metrics (metrics.jsonl) and its experts."""
        if self.controller.state.active:
            return False
        path = Path(path)
        if not (path / "metrics.jsonl").is_file() and not (path / "config.yaml").is_file():
            self.show_error("Not a run folder", f"{path}: no metrics.jsonl or config.yaml")
            return False
        self.monitor.load_run(path)
        self.experts.set_run(path)
        self.settings.add_recent("runs", path)
        self.settings.remember_dir("runs", path.parent)  # the next Open run starts among its siblings
        self.settings.current_run = path
        self.tabs.setCurrentWidget(self.monitor)
        self.statusBar().showMessage(f"Run opened: {path}", 8000)
        return True

    def _reopen_last_run(self) -> None:
        """After a relaunch the Experts tab shows the most recent run (started or opened) that has experts and is
        still on disk."""
        for path in self.settings.recent("runs"):
            try:  # quietly: a summary that is gone or unreadable now is no reason for a dialog at start
                json.loads((Path(path) / "summary.json").read_text(encoding="utf-8"))["tasks"]
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if self.experts.set_run(path):
                self.settings.current_run = Path(path)
                return

    def _runs_dir_chosen(self, path: str) -> None:
        self.settings.runs_dir = path

    def show_about(self) -> None:
        QMessageBox.about(self, "About LoRKD Studio", about_html())

    # ----------------------------------------------------------------------------- close
    def _ask_stop_on_close(self) -> bool:
        answer = QMessageBox.question(
            self,
            "A run is in progress",
            "Stop the run and close? It stops at the next step; the last finished epoch stays on disk and "
            "the run resumes from there when you start it again.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.controller.state.active and not self._close_when_done:
            if not self.ask_stop_on_close():
                event.ignore()
                return
            self._close_when_done = True
            self.controller.cancel()
            self.statusBar().showMessage("Stopping the run, then closing…")
        if self.controller.state.active:
            # never block the GUI on training: the window closes when the worker thread has ended
            # (see _finished / _failed); the engine stops at its next step
            event.ignore()
            return
        if self._demo_worker is not None:
            # its files are still written (it cannot stop midway); only loading them into a closing window is dropped
            self._demo_worker.abort()
        self.viewer.shutdown()
        self.experts.shutdown()
        await_workers()  # the demo's worker, and anything else still running off the GUI thread
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.sync()
        super().closeEvent(event)
