"""Fixtures for the bad-input corpus tests (the corpus itself is in badinput_corpus.py)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture
def dialogs(monkeypatch):
    """Static QMessageBox calls recorded instead of blocking: {kind: [(parent, title, text), ...]}."""
    from PySide6.QtWidgets import QMessageBox

    shown = {"critical": [], "warning": [], "information": []}
    for kind in shown:
        monkeypatch.setattr(QMessageBox, kind, lambda *args, _k=kind, **kw: shown[_k].append(args[:3]))
    return shown
