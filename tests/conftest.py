"""Fixtures shared across test folders: the main window (GUI tests run offscreen)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# OpenMP threads (torch's intra-op pool) sleep while they wait instead of spinning: the same numbers (the thread
# count is unchanged), but where the cores are shared (subprocesses of the tests beside this process, other jobs on
# the machine) a waiting thread no longer burns the time slice the thread it waits for needs. Measured here, under
# load: a ResNet-10 forward pass 300 ms spinning, 12 ms sleeping. Set before torch is imported (read at its start)
# and inherited by every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def window(qtbot, tmp_path):
    """A shown main window with its own settings file, demo and runs folders, no demo loaded; cleaned up after
    (a run still going is cancelled, an error dialog closed, expert workers stopped)."""
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, data_dir=tmp_path / "demo", runs_dir=tmp_path / "runs", load_demo=False,
                     restore=False)
    qtbot.addWidget(win)
    win.ask_stop_on_close = lambda: True  # closed with a run going (a failed test): no modal question to hang on
    win.resize(1100, 750)
    win.show()
    yield win
    if win.controller.state.active:
        win.controller.cancel()
        win.controller.wait(60_000)
    if win.error_box is not None:
        win.error_box.close()
    win.experts.shutdown()
