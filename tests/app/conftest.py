"""Fixtures for the GUI tests: a tiny two-task config and a main window with its own settings file.

Run offscreen: QT_QPA_PLATFORM=offscreen (set here when missing).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def window(qtbot, tmp_path):
    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, data_dir=tmp_path / "demo", runs_dir=tmp_path / "runs", load_demo=False,
                     restore=False)
    qtbot.addWidget(win)
    win.resize(1100, 750)
    win.show()
    yield win
    if win.controller.state.active:
        win.controller.cancel()
        win.controller.wait(60_000)
    if win.error_box is not None:
        win.error_box.close()


class StallProbe:
    """A 5 ms QTimer that records the longest gap between its ticks: how long the GUI event loop was
    blocked at most (design target: < 50 ms while a run is going)."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last: float | None = None
        self.max_gap = 0.0
        self.ticks = 0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.ticks += 1

    def start(self) -> StallProbe:
        self.last = None
        self.timer.start()
        return self

    def stop(self) -> float:
        self.timer.stop()
        return self.max_gap


@pytest.fixture
def stall_probe():
    probe = StallProbe()
    yield probe
    probe.timer.stop()
