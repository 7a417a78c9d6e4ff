"""File dialogs open in the last folder used for that kind of file, else the current run folder, else home
(`app.settings.start_dir`), and remember where the user chose (issue 15, item 6). The QFileDialog static methods
are replaced by fakes that record the start folder (`dir`) and return a chosen path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gui_support import tiny_config
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog

from app.settings import AppSettings, remember_dir, start_dir


class FakeDialogs:
    """Stands in for QFileDialog's static methods: records (method, start folder) and answers `answer`."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[str, str]] = []
        self.answer = ""
        for name in ("getOpenFileName", "getSaveFileName", "getOpenFileNames", "getExistingDirectory"):
            monkeypatch.setattr(QFileDialog, name, staticmethod(self._fake(name)))

    def _fake(self, name: str):
        def dialog(parent=None, caption="", dir="", *args, **kwargs):  # noqa: A002 - Qt's argument name
            self.calls.append((name, str(kwargs.get("dir", dir))))
            if name == "getExistingDirectory":
                return self.answer
            if name == "getOpenFileNames":
                return ([self.answer] if self.answer else []), ""
            return self.answer, ""
        return dialog

    @property
    def last_dir(self) -> str:
        return self.calls[-1][1]


@pytest.fixture
def dialogs(monkeypatch) -> FakeDialogs:
    return FakeDialogs(monkeypatch)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> AppSettings:
    """Fresh settings in a file, active for the panels' dialogs; home is a temporary folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.setattr(AppSettings, "_active", None)
    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)).activate()


def test_start_folder_is_last_used_else_run_else_home(settings, tmp_path):
    home = Path.home()
    assert start_dir("images") == str(home)
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    settings.current_run = run
    assert start_dir("images") == str(run)
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "ct.nii.gz").write_bytes(b"")
    remember_dir("images", scans / "ct.nii.gz")  # a file: its folder
    assert start_dir("images") == str(scans.resolve())
    assert start_dir("configs") == str(run)  # kept per kind of file
    assert start_dir("images", "out.nii.gz") == str(scans.resolve() / "out.nii.gz")
    scans.joinpath("ct.nii.gz").unlink()
    scans.rmdir()  # a remembered folder that is gone is skipped
    assert start_dir("images") == str(run)
    remember_dir("images", None)  # a cancelled dialog changes nothing
    assert start_dir("images") == str(run)


def test_viewer_dialogs_start_in_the_run_folder_then_the_last_one(qtbot, settings, dialogs, tmp_path):
    from app.viewer import ViewerWidget

    viewer = ViewerWidget()
    qtbot.addWidget(viewer)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    settings.current_run = run
    assert viewer._ask_open_file() is None  # cancelled
    assert dialogs.calls == [("getOpenFileName", str(run))]
    elsewhere = tmp_path / "patients" / "p1"
    elsewhere.mkdir(parents=True)
    dialogs.answer = str(elsewhere / "t1.nii.gz")
    assert viewer._ask_open_file() == str(elsewhere / "t1.nii.gz")
    viewer._ask_open_file()
    assert dialogs.last_dir == str(elsewhere.resolve())
    dialogs.answer = str(elsewhere)  # a DICOM folder: the next one starts among its siblings
    assert viewer._ask_open_folder() == str(elsewhere)
    viewer._ask_open_folder()
    assert dialogs.calls[-1] == ("getExistingDirectory", str(elsewhere.parent.resolve()))


def test_window_dialogs_use_the_run_and_last_folders(window, dialogs, data_dir, tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    window.settings.current_run = run
    window.open_config_dialog()  # nothing chosen yet: the current run folder
    assert dialogs.calls[-1] == ("getOpenFileName", str(run))
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(data_dir)))
    dialogs.answer = str(configs / "tiny.yaml")
    window.open_config_dialog()
    assert window.setup.name_edit.text() == "tiny"
    dialogs.answer = ""
    window.save_config_dialog()  # the last config folder, with the run's name as the suggestion
    assert dialogs.calls[-1] == ("getSaveFileName", str(configs.resolve() / "tiny.yaml"))
    window.open_run_dialog()  # no run opened through a dialog yet: the runs folder
    assert dialogs.calls[-1] == ("getExistingDirectory", str(window.setup.runs_dir))
    window.setup._browse_bundle_folder()  # the setup panel's dialogs use the window's settings too
    assert dialogs.calls[-1] == ("getExistingDirectory", str(run))


def test_setup_dialogs_remember_their_folders(qtbot, settings, dialogs, tmp_path):
    from app.setup_panel import SetupPanel

    setup = SetupPanel()
    qtbot.addWidget(setup)
    models = tmp_path / "models"
    models.mkdir()
    dialogs.answer = str(models / "teacher.pt")
    setup._browse_checkpoint()
    assert setup.checkpoint_edit.text() == str(models / "teacher.pt")
    dialogs.answer = ""
    setup._browse_checkpoint()
    assert dialogs.last_dir == str(models.resolve())
    assert setup._ask_images_folder() is None
    assert dialogs.last_dir == str(Path.home())  # tasks: nothing remembered, no run: home
