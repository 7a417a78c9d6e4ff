"""Fixtures for the GUI tests (the main window fixture is in tests/conftest.py; tiny configs in gui_support.py).

Run offscreen: QT_QPA_PLATFORM=offscreen (set here when missing).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


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
