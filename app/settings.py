"""Per-user settings (QSettings): window geometry and state, recent configs and runs, folders."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

ORGANIZATION = "LoRKD"
APPLICATION = "LoRKD Studio"
MAX_RECENT = 8


def default_data_dir() -> Path:
    """Where the embedded demo's files go: the per-user application data folder."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".lorkd-studio") / "demo"


def default_runs_dir() -> Path:
    return Path.home() / "LoRKD Studio" / "runs"


class AppSettings:
    """Typed access to a QSettings store (the user's, or a file for tests and smoke runs)."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)

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

    def last_dir(self) -> str:
        return str(self.qsettings.value("paths/last_dir", "") or "")

    def set_last_dir(self, path: str | Path) -> None:
        path = Path(path)
        self.qsettings.setValue("paths/last_dir", str(path if path.is_dir() else path.parent))

    def window(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.qsettings.value("window/geometry"), self.qsettings.value("window/state")

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def sync(self) -> None:
        self.qsettings.sync()
