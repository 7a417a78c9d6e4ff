"""The dialog that picks one of the DICOM series in a folder."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from core.io import SeriesInfo

__all__ = ["SeriesDialog"]


class SeriesDialog(QDialog):
    """Pick one of the DICOM series in a folder (description, modality, size, spacing, files)."""

    HEADERS = ("Description", "Modality", "Size", "Spacing (mm)", "Files")

    def __init__(self, series: list[SeriesInfo], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a DICOM series")
        self.series = list(series)
        self.table = QTableWidget(len(self.series), len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(self.HEADERS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for row, info in enumerate(self.series):
            for col, text in enumerate(self.row_texts(info)):
                self.table.setItem(row, col, QTableWidgetItem(text))
        if self.series:
            self.table.selectRow(0)
        self.table.doubleClicked.connect(self.accept)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"This folder holds {len(self.series)} series; choose one to view:"))
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(640, 300)

    @staticmethod
    def row_texts(info: SeriesInfo) -> list[str]:
        """The table's cells for one series."""
        def join(values) -> str:
            try:
                return " × ".join(str(int(v)) if float(v).is_integer() else f"{float(v):.3g}" for v in values)
            except (TypeError, ValueError):  # a scalar, None or text
                return "—" if values is None else str(values)

        size, spacing = join(info.size), join(info.spacing)
        files = len(info.files) if info.files is not None else 0
        return [info.description or "(no description)", info.modality or "?", size, spacing, str(files)]

    def selected(self) -> SeriesInfo | None:
        """The series of the selected row (None when no row is selected)."""
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None
