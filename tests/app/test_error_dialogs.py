"""Error dialogs speak plain words (issue 15, item 11): a LorkdError's own message, an OSError's file and reason,
anything else one sentence and "Details are in the log" (its type and traceback go to the Monitor log), never a
Python class name such as "ValueError: ..."."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from app.errors import plain_message, unexpected, worker_message
from core.errors import DataError


def test_plain_messages():
    assert plain_message(DataError("scan.nii: truncated file")) == "scan.nii: truncated file"
    denied = PermissionError(13, "Permission denied", "/data/scan.nii")
    assert plain_message(denied) == "/data/scan.nii: Permission denied"
    text = plain_message(ValueError("cannot reshape array of size 3 into shape (2,2)"), "reading the image")
    assert text == "Something unexpected went wrong while reading the image. Details are in the log."
    assert "ValueError" not in text and "reshape" not in text
    assert worker_message("ValueError: boom", False) == unexpected()
    assert worker_message("scan.nii: truncated file", True) == "scan.nii: truncated file"


@pytest.fixture
def dialogs(monkeypatch) -> list:
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args, **kw: shown.append(args))
    return shown


def test_viewer_error_dialog_has_no_class_name(qtbot, dialogs, monkeypatch, tmp_path):
    import app.viewer.widget
    from app.viewer import ViewerWidget

    def broken(*_args, **_kw):
        raise ValueError("index 7 is out of bounds for axis 0 with size 3")

    monkeypatch.setattr(app.viewer.widget, "read_volume", broken)
    viewer = ViewerWidget()
    qtbot.addWidget(viewer)
    logged = []
    viewer.logged.connect(logged.append)
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"")
    assert viewer.load_path(path) is False  # blocking read
    assert viewer.open_path(path)  # background read: the worker's error reaches the dialog as well
    qtbot.waitUntil(lambda: not viewer.is_loading(), timeout=10_000)
    assert len(dialogs) == 2
    for _parent, _title, text in dialogs:
        assert text == "Something unexpected went wrong while opening the image. Details are in the log."
    assert len(logged) == 2 and all("ValueError: index 7" in entry and "Traceback" in entry for entry in logged)


def test_window_shows_a_raised_valueerror_in_plain_words(qtbot, window, monkeypatch):
    import app.main_window
    from app.__main__ import report_internal_error

    def broken(*_args, **_kw):
        raise ValueError("could not broadcast input array from shape (3,) into shape (2,)")

    monkeypatch.setattr(app.main_window, "prepare_demo_with_volume", broken)
    window.load_demo()  # a real background worker fails
    qtbot.waitUntil(lambda: window.error_box is not None, timeout=10_000)
    box = window.error_box
    assert box.text() == "Something unexpected went wrong while preparing the demo. Details are in the log."
    assert "ValueError: could not broadcast" in box.detailedText()
    assert "ValueError: could not broadcast" in window.monitor.log_text()  # the log keeps type and traceback
    box.close()
    try:  # an exception no panel caught (the app's excepthook)
        raise ValueError("bad value")
    except ValueError as error:
        report_internal_error(window, ValueError, error, error.__traceback__)
    assert "ValueError" not in window.error_box.text() and "Details are in the log" in window.error_box.text()
    assert "ValueError: bad value" in window.monitor.log_text()
