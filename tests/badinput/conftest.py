"""Fixtures for the bad-input corpus tests (the corpus itself is in badinput_corpus.py)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path):
    """A main window with its own settings file and runs folder (as tests/app/conftest.py)."""
    from PySide6.QtCore import QSettings

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
    win.experts.shutdown()


@pytest.fixture
def dialogs(monkeypatch):
    """Static QMessageBox calls recorded instead of blocking: {kind: [(parent, title, text), ...]}."""
    from PySide6.QtWidgets import QMessageBox

    shown = {"critical": [], "warning": [], "information": []}
    for kind in shown:
        monkeypatch.setattr(QMessageBox, kind, lambda *args, _k=kind, **kw: shown[_k].append(args[:3]))
    return shown
