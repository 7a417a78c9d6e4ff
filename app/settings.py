"""Per-user settings (QSettings): window geometry and state, recent configs and runs, folders.

File dialogs open where the user is likely to look (`start_dir`): the last folder used for that kind of file
(remembered by `remember_dir` after a choice), else the current run folder, else the home folder. Panels call the
module functions, which use the settings the main window activated (`AppSettings.activate`), so panels need no
settings of their own:

    path, _ = QFileDialog.getOpenFileName(self, "Open image", start_dir("images"), filters)
    if path:
        remember_dir("images", path)
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

ORGANIZATION = "LoRKD"
APPLICATION = "LoRKD Studio"
MAX_RECENT = 8
# the kinds of file whose dialogs remember their folder (any other key works as well)
DIALOG_KINDS = ("images", "configs", "models", "bundles", "runs", "tasks", "predictions")


def default_data_dir() -> Path:
    """Where the embedded demo's files go: the per-user application data folder."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".lorkd-studio") / "demo"


def default_runs_dir() -> Path:
    return Path.home() / "LoRKD Studio" / "runs"


class AppSettings:
    """Typed access to a QSettings store (the user's, or a file for tests and smoke runs)."""

    _active: AppSettings | None = None  # the settings the module functions (start_dir, ...) use

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)
        self.current_run: Path | None = None  # the run the window shows (started or opened), for dialogs

    def activate(self) -> AppSettings:
        """Make these the settings that `start_dir` / `remember_dir` use (the main window's)."""
        AppSettings._active = self
        return self

    def recent(self, kind: str) -> list[str]:
        value = self.qsettings.value(f"recent/{kind}", [])
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in value]

    def add_recent(self, kind: str, path: str | Path) -> None:
        path = str(Path(path).expanduser().resolve())
        items = [path] + [p for p in self.recent(kind) if p != path]
        self.qsettings.setValue(f"recent/{kind}", items[:MAX_RECENT])

    def clear_recent(self, kind: str) -> None:
        self.qsettings.remove(f"recent/{kind}")

    @property
    def runs_dir(self) -> Path:
        value = self.qsettings.value("paths/runs_dir", "")
        return Path(value) if value else default_runs_dir()

    @runs_dir.setter
    def runs_dir(self, path: str | Path) -> None:
        self.qsettings.setValue("paths/runs_dir", str(path))

    def start_dir(self, kind: str, file_name: str = "", default: str | Path | None = None) -> str:
        """The folder a file dialog for `kind` of file opens in: the last one used for that kind, else `default`
        (e.g. the runs folder for runs), else the current run folder, else home. Folders that no longer exist are
        skipped. With `file_name` (a save dialog's suggestion): that name in the folder."""
        remembered = str(self.qsettings.value(f"dialogs/{kind}", "") or "")
        folder = str(Path.home())
        for candidate in (remembered, default, self.current_run):
            if candidate and Path(candidate).expanduser().is_dir():
                folder = str(Path(candidate).expanduser())
                break
        return str(Path(folder) / file_name) if file_name else folder

    def remember_dir(self, kind: str, chosen: str | Path) -> None:
        """Remember where the user chose `chosen` (a file: its folder; a folder: itself) for `kind`'s dialogs."""
        path = Path(chosen).expanduser()
        folder = path if path.is_dir() else path.parent
        self.qsettings.setValue(f"dialogs/{kind}", str(folder.resolve()))

    def window(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.qsettings.value("window/geometry"), self.qsettings.value("window/state")

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def sync(self) -> None:
        self.qsettings.sync()


def active_settings() -> AppSettings:
    """The settings the main window activated; without a main window, the user's store."""
    if AppSettings._active is None:
        AppSettings().activate()
    return AppSettings._active


def start_dir(kind: str, file_name: str = "", default: str | Path | None = None) -> str:
    """The folder a file dialog for `kind` ("images", "configs", "bundles", "runs", ...) opens in (see
    `AppSettings.start_dir`)."""
    return active_settings().start_dir(kind, file_name, default)


def remember_dir(kind: str, chosen: str | Path | None) -> None:
    """After a dialog: remember the folder of what the user chose for `kind` (nothing when they cancelled)."""
    if chosen:
        active_settings().remember_dir(kind, chosen)
