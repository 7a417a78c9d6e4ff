"""Run setup: tasks, foundation model, backbone and experts, training, device; YAML load/save; the embedded demos.

Written once against the task-kind interface (`core.kinds`): the run's kind says how its tasks look in the table
(`TaskKind.form`, `task_row`, `task_from_row`), how tasks are added (one per file, or a folder of images and a
folder of label maps: `new_tasks`), what the Contents column says (`describe_tasks`) and which architectures it
offers (its config sections). `prepare_demo_with_volume` builds a kind's embedded demo (`core.kinds.prepare_demo`,
the same demo as `lorkd demo`) and reads the volume it applies experts to, if any.

The foundation model is pre-trained in the run or loaded from one path: our checkpoint (`teacher.checkpoint`), or,
where the kind's teacher section has `bundle` (segmentation), a user's MONAI bundle folder or .zip (`teacher.bundle`,
its labels listed under the field through `core.models.foundation.describe`) or a TorchScript file
(`teacher.torchscript`); the path decides which (`model_key`) unless "Read as" says. Tasks whose section has
`teacher_labels` pick the foundation model's labels they segment ("Foundation labels…"), and "Add label-free
task…" adds a task of images without label maps.

The panel edits a config mapping. Everything it does not show (data caps, schedule, seed, ...) is kept from the
loaded config untouched. Validity is decided by `core.kinds.load_config` and the kind's `describe_tasks`: the first
`ConfigError` is shown in red next to the field its `loc` names, and `validity_changed(False)` lets the window
disable Start.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.settings import remember_dir, start_dir
from core.config import Config, save_config
from core.errors import ConfigError, LorkdError
from core.kinds import DEFAULT_DEMO, KINDS, config_from_raw, get_kind, load_config, prepare_demo
from core.kinds.base import TaskKind, TaskRow

ERROR_STYLE = "color: #c0392b;"
INVALID_CELL = QColor("#f8d7d3")
COL_NAME, COL_FILE, COL_KIND, COL_LABELS, COL_RANK, COL_INFO = range(6)
TASK_COLUMNS = ("Name", "File", "Kind", "Labels", "Rank", "Contents")
COLUMN_OF = {"name": COL_NAME, "source": COL_FILE, "subkind": COL_KIND, "labels": COL_LABELS}
INT_RANGE = (-1_000_000, 1_000_000)  # wide on purpose: core.config decides what is valid
PENDING_STYLE = "color: #555555;"
FROM_FOUNDATION = "(from the foundation model)"
SAME_TEXT = "same (as the bundle)"
TEACHER_ARCH_TIP = ("teacher.arch: the foundation model's network (MONAI), pre-trained here or loaded from our "
                    "checkpoint")
BACKBONE_ARCH_TIP = "backbone.arch: the common backbone (compact: ~0.5M params)"
WIDTH_TIP = ("backbone.width: with the backbone \"same\", its channels are this share (0-1] of the foundation "
             "model's")
MODEL_KEYS = ("checkpoint", "bundle", "torchscript")  # teacher fields naming a foundation model to load
MODEL_FORMATS = (("auto", "Detect: a folder or .zip is a MONAI bundle, .ts is TorchScript, else a checkpoint"),
                 ("checkpoint", "Checkpoint: ours (teacher.pt) or a MONAI state_dict"),
                 ("bundle", "MONAI bundle (folder or .zip)"),
                 ("torchscript", "TorchScript file"))


def cuda_devices() -> list[tuple[str, str]]:
    """(config value, label) of every CUDA GPU torch sees."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [(f"cuda:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install just means "no GPU" here
        return []


def _number(text: str) -> Any:
    """A float when the text parses as one; else the text itself, so core.config names the field."""
    text = text.strip()
    if text.lower() in ("", "none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _file_stamps(value: Any) -> tuple:
    """(path, size, mtime) of every existing file or folder named by a string in `value` (nested lists/dicts)."""
    if isinstance(value, dict):
        return tuple(s for v in value.values() for s in _file_stamps(v))
    if isinstance(value, list):
        return tuple(s for v in value for s in _file_stamps(v))
    if isinstance(value, str) and value:
        try:
            stat = Path(value).expanduser().stat()
        except (OSError, ValueError):
            return ()
        return ((value, stat.st_size, stat.st_mtime_ns),)
    return ()


def _bundle_stamps(path: str) -> tuple:
    """(path, size, mtime) of a bundle folder's configs/ and models/ files (a zip's own stamp is enough)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return ()
    try:
        return tuple(s for sub in ("configs", "models") if (folder / sub).is_dir()
                     for f in sorted((folder / sub).iterdir()) for s in _file_stamps(str(f)))
    except OSError:
        return ()


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def model_key(path: str) -> str:
    """The teacher field a foundation model path goes to, by the path alone (deterministic): a folder or a .zip is a
    MONAI bundle ("bundle"), a .ts file TorchScript ("torchscript"), anything else our checkpoint or a state_dict
    ("checkpoint")."""
    if not path:
        return "checkpoint"
    p = Path(path).expanduser()
    if p.suffix.lower() == ".zip" or p.is_dir():
        return "bundle"
    return "torchscript" if p.suffix.lower() == ".ts" else "checkpoint"


def _has_field(section: type, name: str) -> bool:
    return dataclasses.is_dataclass(section) and name in {f.name for f in dataclasses.fields(section)}


def _channel_of(label: str | int, names: list[str]) -> int | None:
    """The output channel a `teacher_labels` entry picks (an index, or a name, case-insensitively); None if none."""
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
        index = int(label)
        return index if 0 <= index < len(names) else None
    for i, name in enumerate(names):
        if name == label or name.lower() == str(label).lower():
            return i
    return None


class FoundationLabelsDialog(QDialog):
    """A checkable list of the foundation model's output channels (in channel order): the ones a task segments
    (its `teacher_labels`)."""

    def __init__(self, task: str, names: list[str], current: list[str | int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Foundation labels of {task}")
        layout = QVBoxLayout(self)
        text = QLabel(f"The foundation model's labels that the expert of <b>{task}</b> segments (its labels 1, 2, "
                      f"… in this order):")
        text.setWordWrap(True)
        layout.addWidget(text)
        self.names = list(names)
        picked = {c for c in (_channel_of(x, self.names) for x in current) if c is not None}
        self.list = QListWidget()
        for i, name in enumerate(self.names):
            item = QListWidgetItem(f"{i}: {name}")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if i in picked else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        layout.addWidget(self.list)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def set_checked(self, names: list[str]) -> None:
        for i, name in enumerate(self.names):
            self.list.item(i).setCheckState(Qt.CheckState.Checked if name in names else Qt.CheckState.Unchecked)

    def chosen(self) -> list[str]:
        """The checked channel names, in channel order."""
        return [name for i, name in enumerate(self.names)
                if self.list.item(i).checkState() == Qt.CheckState.Checked]


# ------------------------------------------------------------------------------------------------ demos
DEMOS = {name: KINDS[name].demo_title for name in [DEFAULT_DEMO] + [k for k in KINDS if k != DEFAULT_DEMO]}


def prepare_demo_with_volume(
    data_dir: str | Path, kind: str = DEFAULT_DEMO, demo_kwargs: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """(the config mapping of `kind`'s embedded demo, its files under `data_dir/<kind>`, with `overrides`; the
    input its experts apply to (`TaskKind.demo_input`), read for the viewer). For a worker thread: it may write
    files."""
    from core.io import read_volume

    options = dict(demo_kwargs or {})
    folder = Path(data_dir) / kind
    raw = prepare_demo(kind, folder, quick=bool(options.pop("quick", False)), overrides=list(overrides or []),
                       **options)
    return raw, read_volume(get_kind(kind).demo_input(raw, folder))


def demo_note(raw: dict[str, Any]) -> str:
    """What the app says about a loaded demo."""
    return get_kind(raw.get("kind", "classification")).demo_note()


def mark_invalid(widget: QWidget, invalid: bool) -> None:
    """Tint an input red (a palette change: a style sheet would drop the native spin/combo look)."""
    if not invalid:
        widget.setPalette(QPalette())  # an empty palette resolves nothing: back to the inherited one
        return
    palette = widget.palette()
    for role in (QPalette.ColorRole.Base, QPalette.ColorRole.Button):
        palette.setColor(role, INVALID_CELL)
    widget.setPalette(palette)


class _FloatEdit(QLineEdit):
    def __init__(self, tooltip: str) -> None:
        super().__init__()
        self.setToolTip(tooltip)
        self.setMaximumWidth(110)


def _field_with_button(field: QWidget, button: QPushButton) -> QWidget:
    """A line edit (stretching) with its Browse/Choose button on one form row."""
    row = QWidget()
    h = QHBoxLayout(row)
    h.setContentsMargins(0, 0, 0, 0)
    h.addWidget(field, 1)
    h.addWidget(button)
    return row


class _PlaceholderDelegate(QStyledItemDelegate):
    """Draws what an empty cell means in grey (the backbone rank, the foundation labels a task picked); the cell
    stays empty, so editing starts from nothing and the config keeps the value unset."""

    def __init__(self, placeholder: Callable[[int], str], parent: QWidget) -> None:
        super().__init__(parent)
        self._placeholder = placeholder

    def initStyleOption(self, option, index) -> None:  # noqa: N802 - Qt API
        super().initStyleOption(option, index)
        if not option.text.strip():
            text = self._placeholder(index.row())
            if text:
                option.text = text
                option.palette.setColor(QPalette.ColorRole.Text,
                                        option.palette.color(QPalette.ColorRole.PlaceholderText))


class SetupPanel(QWidget):
    """The run configuration form."""

    changed = Signal()
    validity_changed = Signal(bool)
    runs_dir_chosen = Signal(str)
    load_requested = Signal()
    save_requested = Signal()
    demo_requested = Signal(str)  # a demo kind (DEMOS) the user asked to load

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._base: dict[str, Any] = config_from_raw({}).to_dict()
        self.kind: TaskKind = get_kind("classification")
        self._loading = False
        self._pending: str | None = None  # while a config is being prepared (the demo): what the status says
        self._valid: bool | None = None
        self.config: Config | None = None
        self.error: str | None = None
        self.error_loc: tuple = ()  # the field the error is about (ConfigError.loc), () when none or general
        self._describe_cache: tuple[Any, Any] | None = None
        self._model_cache: tuple[Any, Any] | None = None  # (key, channel names | LorkdError) of a bundle
        self._model_result: list[str] | LorkdError | None = None
        self.foundation_names: list[str] | None = None  # the chosen foundation model's output channels, if known
        self._foreign = False  # whether the kind's teacher may be a user's bundle / TorchScript file
        self._picks = False  # whether the kind's tasks may pick the foundation model's labels (teacher_labels)
        self._fields: dict[str, tuple[QWidget, QLabel]] = {}
        self._gpus = cuda_devices()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.validate_now)
        self._build()
        self.set_mapping(self._base)

    # ---------------------------------------------------------------------------- layout
    def _error_label(self) -> QLabel:
        label = QLabel()
        label.setStyleSheet(ERROR_STYLE)
        label.setWordWrap(True)
        label.hide()
        return label

    def _row(self, form: QFormLayout, text: str, widget: QWidget, path: str) -> QWidget:
        error = self._error_label()
        holder = QWidget()
        box = QVBoxLayout(holder)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(1)
        box.addWidget(widget)
        box.addWidget(error)
        form.addRow(text, holder)
        self._fields[path] = (widget, error)
        return widget

    def _int(self, tooltip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(*INT_RANGE)
        spin.setToolTip(tooltip)
        spin.setMaximumWidth(110)
        spin.valueChanged.connect(self._edited)
        return spin

    def _float(self, tooltip: str) -> _FloatEdit:
        edit = _FloatEdit(tooltip)
        edit.textChanged.connect(self._edited)
        return edit

    def _combo(self, items, tooltip: str) -> QComboBox:
        combo = QComboBox()
        for item in items:
            combo.addItem(item, item)
        combo.setToolTip(tooltip)
        combo.currentIndexChanged.connect(self._edited)
        return combo

    def _build(self) -> None:
        self.banner = self._error_label()

        # run --------------------------------------------------------------------------
        run_box = QGroupBox("Run")
        run_form = QFormLayout(run_box)
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("run name; the run folder is <runs folder>/<name>")
        self.name_edit.textChanged.connect(self._edited)
        self._row(run_form, "Name", self.name_edit, "name")
        self.runs_dir_edit = QLineEdit()
        self.runs_dir_edit.setReadOnly(True)
        self.runs_dir_edit.setToolTip("runs are written to <runs folder>/<name> (an unfinished run of the same "
                                      "config there is resumed)")
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_runs_dir)
        run_form.addRow("Runs folder", _field_with_button(self.runs_dir_edit, choose))
        self.image_size = self._int("data.image_size: every task is resized to this side (pixels)")
        self._row(run_form, "Image size", self.image_size, "data.image_size")
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555555;")
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        run_form.addRow(self.note)

        # tasks ------------------------------------------------------------------------
        task_box = QGroupBox("Tasks")
        task_layout = QVBoxLayout(task_box)
        self.tasks = QTableWidget(0, len(TASK_COLUMNS))
        self.tasks.setHorizontalHeaderLabels(TASK_COLUMNS)
        self.tasks.verticalHeader().setVisible(False)
        self.tasks.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # long paths keep their beginning and their file name; the full text is in each cell's tooltip. The source
        # column takes what the others leave; Contents no longer grows with its text (it squeezed the source and
        # its header down to "es → label")
        self.tasks.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tasks.setWordWrap(False)
        header = self.tasks.horizontalHeader()
        header.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COL_FILE, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(48)
        self.tasks.setColumnWidth(COL_NAME, 100)
        self.tasks.setColumnWidth(COL_KIND, 110)
        self.tasks.setColumnWidth(COL_LABELS, 150)
        self.tasks.setColumnWidth(COL_RANK, 56)
        self.tasks.setColumnWidth(COL_INFO, 170)
        self.tasks.setMinimumHeight(150)
        for col, tip in ((COL_LABELS, "class names, comma-separated (empty: 0, 1, ...)"),
                         (COL_RANK, "per-task expert rank (empty, shown in grey: the backbone rank)")):
            self.tasks.horizontalHeaderItem(col).setToolTip(tip)
        self.tasks.setItemDelegateForColumn(COL_RANK, _PlaceholderDelegate(self._rank_placeholder, self.tasks))
        self.tasks.setItemDelegateForColumn(COL_LABELS, _PlaceholderDelegate(self._labels_placeholder, self.tasks))
        self.tasks.itemChanged.connect(self._edited)
        self.tasks_error = self._error_label()
        self._fields["tasks"] = (self.tasks, self.tasks_error)
        add = QPushButton("Add MedMNIST files…")
        add.clicked.connect(self._add_files_dialog)
        self.add_button = add
        self.add_label_free_button = QPushButton("Add label-free task…")
        self.add_label_free_button.setToolTip(
            "a folder of image volumes without label maps: its expert learns the labels you pick among the "
            "foundation model's (needs a MONAI bundle or TorchScript foundation model)")
        self.add_label_free_button.clicked.connect(self._add_label_free_dialog)
        self.foundation_labels_button = QPushButton("Foundation labels…")
        self.foundation_labels_button.setToolTip(
            "pick the foundation model's labels the selected task's expert segments (teacher_labels); also: "
            "double-click the task's images cell")
        self.foundation_labels_button.clicked.connect(self._pick_foundation_labels)
        self.tasks.cellDoubleClicked.connect(self._task_double_clicked)
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected_tasks)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(self.add_label_free_button)
        buttons.addWidget(self.foundation_labels_button)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        task_layout.addWidget(self.tasks)
        task_layout.addWidget(self.tasks_error)
        task_layout.addLayout(buttons)

        # foundation model -------------------------------------------------------------
        teacher_box = QGroupBox("Foundation model")
        teacher_form = QFormLayout(teacher_box)
        self.pretrain_radio = QRadioButton("Pre-train on the tasks")
        self.checkpoint_radio = QRadioButton("Load a foundation model")
        self.foundation_radio = self.checkpoint_radio
        group = QButtonGroup(self)
        group.addButton(self.pretrain_radio)
        group.addButton(self.checkpoint_radio)
        self.pretrain_radio.toggled.connect(self._teacher_mode)
        teacher_form.addRow(self.pretrain_radio)
        teacher_form.addRow(self.checkpoint_radio)
        self.teacher_arch = self._combo((), TEACHER_ARCH_TIP)
        self._row(teacher_form, "Architecture", self.teacher_arch, "teacher.arch")
        self.teacher_epochs = self._int("teacher.epochs: pre-training epochs")
        self._row(teacher_form, "Epochs", self.teacher_epochs, "teacher.epochs")
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("teacher.pt or a MONAI state_dict")
        self.checkpoint_edit.textChanged.connect(self._edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_clicked)
        self.browse_button = browse
        self._browse_menu = QMenu(browse)
        self._browse_menu.addAction("File (checkpoint, TorchScript, bundle .zip)…", self._browse_checkpoint)
        self._browse_menu.addAction("Bundle folder…", self._browse_bundle_folder)
        model_row = _field_with_button(self.checkpoint_edit, browse)
        self._row(teacher_form, "Model", model_row, "teacher.checkpoint")
        for key in ("teacher.bundle", "teacher.torchscript", "teacher.trust_bundle"):
            self._fields[key] = self._fields["teacher.checkpoint"]  # one field, whichever key the path goes to
        self.model_format = QComboBox()
        for value, text in MODEL_FORMATS:
            self.model_format.addItem(text, value)
        self.model_format.setToolTip("what the file or folder is: the config key it is written to (teacher."
                                     "checkpoint, teacher.bundle or teacher.torchscript)")
        self.model_format.currentIndexChanged.connect(self._edited)
        teacher_form.addRow("Read as", self.model_format)
        self.trust_check = QCheckBox("Trust this bundle's code")
        self.trust_check.setToolTip("teacher.trust_bundle: build a bundle whose config names code outside torch, "
                                    "monai and numpy (a bundle's config can run any Python code: only for a "
                                    "bundle from a source you trust)")
        self.trust_check.toggled.connect(self._edited)
        teacher_form.addRow("", self.trust_check)
        self.foundation_labels = QLabel()
        self.foundation_labels.setWordWrap(True)
        self.foundation_labels.setStyleSheet("color: #555555;")
        self.foundation_labels.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        teacher_form.addRow("", self.foundation_labels)
        self._teacher_form = teacher_form
        self._checkpoint_row = (self.checkpoint_edit, browse, self.model_format, self.trust_check)

        # backbone and experts ---------------------------------------------------------
        backbone_box = QGroupBox("Backbone and task experts")
        backbone_form = QFormLayout(backbone_box)
        self.backbone_arch = self._combo((), BACKBONE_ARCH_TIP)
        self.backbone_arch.currentIndexChanged.connect(self._update_architecture_fields)
        self._row(backbone_form, "Backbone", self.backbone_arch, "backbone.arch")
        self.width_edit = self._float(WIDTH_TIP)
        self._row(backbone_form, "Width", self.width_edit, "backbone.width")
        self._backbone_form = backbone_form
        self.form_combo = self._combo(("factorized", "paper"),
                                      "backbone.form: factorized (k×k conv to r channels + 1×1 conv) or the "
                                      "paper's dense ΔW; both merge exactly")
        self._row(backbone_form, "Expert form", self.form_combo, "backbone.form")
        self.rank = self._int("backbone.rank: low-rank r of every expert (per-task ranks: the Rank column)")
        self.rank.valueChanged.connect(lambda _v: self.tasks.viewport().update())  # the Rank column's grey default
        self._row(backbone_form, "Rank", self.rank, "backbone.rank")
        self.alpha = self._float("backbone.alpha: expert scale s = alpha / rank")
        self._row(backbone_form, "Alpha", self.alpha, "backbone.alpha")

        # training ---------------------------------------------------------------------
        train_box = QGroupBox("Training")
        train_form = QFormLayout(train_box)
        self.epochs = self._int("train.epochs: decomposition epochs")
        self._row(train_form, "Epochs", self.epochs, "train.epochs")
        self.batch_size = self._int("train.batch_size: mixed-task batch size")
        self._row(train_form, "Batch size", self.batch_size, "train.batch_size")
        self.lr = self._float("train.lr: learning rate")
        self._row(train_form, "Learning rate", self.lr, "train.lr")
        self.optimizer = self._combo(("sgd", "adamw"), "train.optimizer")
        self._row(train_form, "Optimizer", self.optimizer, "train.optimizer")
        self.kd_weight = self._float("train.kd_weight: β of the distillation term β·τ²·KL")
        self._row(train_form, "KD weight β", self.kd_weight, "train.kd_weight")
        self.temperature = self._float("train.temperature: τ of the distillation term")
        self._row(train_form, "Temperature τ", self.temperature, "train.temperature")
        self.device = QComboBox()
        self.device.addItem("auto", "auto")
        self.device.addItem("CPU", "cpu")
        for value, label in self._gpus:
            self.device.addItem(f"GPU {value}: {label}", value)
        if not self._gpus:
            self.device.addItem("GPU (none found)", "cuda")
            self.device.model().item(self.device.count() - 1).setEnabled(False)
        self.device.currentIndexChanged.connect(self._edited)
        self._row(train_form, "Device", self.device, "device")
        self.device_info = QLabel(self._device_text())
        self.device_info.setStyleSheet("color: #555555;")
        train_form.addRow("", self.device_info)

        # yaml -------------------------------------------------------------------------
        self.load_button = QPushButton("Load YAML…")
        self.save_button = QPushButton("Save YAML…")
        self.load_button.clicked.connect(self.load_requested)
        self.save_button.clicked.connect(self.save_requested)
        self.status = QLabel()
        self.demo_combo = QComboBox()
        for kind, text in DEMOS.items():
            self.demo_combo.addItem(text, kind)
        self.demo_combo.setToolTip("the embedded demos: real images shipped with the installed packages, no download")
        self.demo_button = QPushButton("Load demo")
        self.demo_button.setToolTip("load the chosen embedded demo (its files are written once into the data folder)")
        self.demo_button.clicked.connect(lambda: self.demo_requested.emit(self.demo_combo.currentData()))
        yaml_row = QHBoxLayout()
        yaml_row.addWidget(self.status, 1)
        yaml_row.addWidget(self.demo_combo)
        yaml_row.addWidget(self.demo_button)
        yaml_row.addWidget(self.load_button)
        yaml_row.addWidget(self.save_button)

        content = QWidget()
        grid = QGridLayout(content)
        grid.addWidget(self.banner, 0, 0, 1, 3)
        grid.addWidget(run_box, 1, 0)
        grid.addWidget(task_box, 1, 1, 1, 2)
        grid.addWidget(teacher_box, 2, 0)
        grid.addWidget(backbone_box, 2, 1)
        grid.addWidget(train_box, 2, 2)
        grid.addLayout(yaml_row, 3, 0, 1, 3)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)
        grid.setRowStretch(1, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _device_text(self) -> str:
        if self._gpus:
            return "GPU: " + ", ".join(f"{label} ({value})" for value, label in self._gpus)
        return "no CUDA GPU found: auto runs on the CPU"

    # ------------------------------------------------------------------------- mapping
    def set_note(self, text: str) -> None:
        """A short description of the loaded configuration (shown in the Run box)."""
        self.note.setText(text)

    def set_mapping(self, raw: dict[str, Any], note: str = "") -> None:
        """Show a config mapping (need not be valid; wrong types or unknown keys raise ConfigError)."""
        config = config_from_raw(copy.deepcopy(raw))  # types and keys only; values are validated later
        self._pending = None
        self._base = config.to_dict()
        c = self._base
        self.kind = get_kind(c["kind"])
        self.set_note(note)
        self._loading = True
        try:
            self._set_kind_widgets()
            self.name_edit.setText(c["name"])
            if self.kind.form.image_size:
                self.image_size.setValue(c["data"]["image_size"])
            self.tasks.setRowCount(0)
            ranks = c["backbone"]["ranks"] or {}
            for task in c["tasks"]:
                self._append_row(self.kind.task_row(task), ranks.get(task["name"]))
            t = c["teacher"]
            self._set_combo(self.teacher_arch, t["arch"])
            self.teacher_epochs.setValue(t["epochs"])
            key = next((k for k in MODEL_KEYS if t.get(k)), None)  # the form shows one model (validation: one)
            path = t[key] if key else ""
            self.checkpoint_edit.setText(path)
            self._set_combo(self.model_format, "auto" if key is None or model_key(path) == key else key)
            self.trust_check.setChecked(bool(t.get("trust_bundle")))
            (self.checkpoint_radio if key else self.pretrain_radio).setChecked(True)
            self._teacher_mode()
            b = c["backbone"]
            self._set_combo(self.backbone_arch, b["arch"])
            self.width_edit.setText(_fmt(b.get("width")))
            self._set_combo(self.form_combo, b["form"])
            self.rank.setValue(b["rank"])
            self.alpha.setText(_fmt(b["alpha"]))
            tr = c["train"]
            self.epochs.setValue(tr["epochs"])
            self.batch_size.setValue(tr["batch_size"])
            self.lr.setText(_fmt(tr["lr"]))
            self._set_combo(self.optimizer, tr["optimizer"])
            self.kd_weight.setText(_fmt(tr["kd_weight"]))
            self.temperature.setText(_fmt(tr["temperature"]))
            self._set_combo(self.device, c["device"])
        finally:
            self._loading = False
        self.validate_now()
        self.changed.emit()

    def _set_kind_widgets(self) -> None:
        """Architectures and fields of the current run kind (called while loading)."""
        sections, form = self.kind.sections, self.kind.form
        for combo, archs in ((self.teacher_arch, sections["teacher"].ARCHS),
                             (self.backbone_arch, sections["backbone"].ARCHS)):
            if [combo.itemData(i) for i in range(combo.count())] != list(archs):
                combo.blockSignals(True)
                combo.clear()
                for arch in archs:
                    combo.addItem(SAME_TEXT if arch == "same" else arch, arch)
                combo.blockSignals(False)
        self._backbone_form.setRowVisible(self.width_edit.parentWidget(), _has_field(sections["backbone"], "width"))
        self.image_size.setEnabled(form.image_size)
        self.image_size.setToolTip("data.image_size: every task is resized to this side (pixels)" if form.image_size
                                   else f"{self.kind.title} runs keep their own data settings (from the config)")
        header = self.tasks.horizontalHeaderItem(COL_FILE)
        header.setText(form.source_header)
        header.setToolTip(form.source_tip)
        self.tasks.horizontalHeaderItem(COL_LABELS).setToolTip(form.labels_tip)
        self.add_button.setText(form.add_text)
        self.add_button.setToolTip(form.add_tip)
        # a user's own foundation model (MONAI bundle / TorchScript) and tasks that pick its labels
        self._foreign = _has_field(sections["teacher"], "bundle")
        self._picks = _has_field(sections["task"], "teacher_labels")
        self.foundation_labels_button.setVisible(self._picks)
        self.add_label_free_button.setVisible(self._picks and form.add_dialog == "folder_pair")
        for widget in (self.model_format, self.trust_check, self.foundation_labels):
            self._teacher_form.setRowVisible(widget, self._foreign)
        self.browse_button.setMenu(self._browse_menu if self._foreign else None)
        self.checkpoint_edit.setPlaceholderText(
            "teacher.pt, a MONAI state_dict, a MONAI bundle (folder or .zip) or a TorchScript file (.ts)"
            if self._foreign else "teacher.pt or a MONAI state_dict")

    @staticmethod
    def _set_combo(combo: QComboBox, value: Any) -> None:
        index = combo.findData(value)
        if index < 0:  # a value from a file that the form does not offer: show it, validation names it
            combo.addItem(str(value), value)
            index = combo.count() - 1
        combo.setCurrentIndex(index)

    def mapping(self) -> dict[str, Any]:
        """The edited config mapping (the loaded config with the form's values on top)."""
        c = copy.deepcopy(self._base)
        c["name"] = self.name_edit.text().strip()
        if self.kind.form.image_size:
            c["data"]["image_size"] = self.image_size.value()
        tasks, ranks = [], {}
        for row in range(self.tasks.rowCount()):
            task_row = self._row_of(row)
            tasks.append(self.kind.task_from_row(task_row))
            rank = self._cell(row, COL_RANK)
            if rank:
                ranks[task_row.name] = int(rank) if re.fullmatch(r"-?\d+", rank) else rank
        c["tasks"] = tasks
        c["backbone"]["ranks"] = ranks or None
        t = c["teacher"]
        t["arch"] = self.teacher_arch.currentData()
        t["epochs"] = self.teacher_epochs.value()
        path = self.checkpoint_edit.text().strip() if self.checkpoint_radio.isChecked() else None
        key = self._model_key(path) if path is not None else None
        for k in MODEL_KEYS:
            if k in t:
                t[k] = path if k == key else None
        if "trust_bundle" in t:
            t["trust_bundle"] = self.trust_check.isChecked()
        b = c["backbone"]
        b["arch"] = self.backbone_arch.currentData()
        if "width" in b:
            b["width"] = _number(self.width_edit.text())
        b["form"] = self.form_combo.currentData()
        b["rank"] = self.rank.value()
        b["alpha"] = _number(self.alpha.text())
        tr = c["train"]
        tr["epochs"] = self.epochs.value()
        tr["batch_size"] = self.batch_size.value()
        tr["lr"] = _number(self.lr.text())
        tr["optimizer"] = self.optimizer.currentData()
        tr["kd_weight"] = _number(self.kd_weight.text())
        tr["temperature"] = _number(self.temperature.text())
        c["device"] = self.device.currentData()
        return c

    # --------------------------------------------------------------------------- tasks
    def _cell(self, row: int, col: int) -> str:
        item = self.tasks.item(row, col)
        return item.text().strip() if item is not None else ""

    def _row_of(self, row: int) -> TaskRow:
        """Table row `row` as the kind's `TaskRow` (what the user edited on top of the kind's source data)."""
        source = self.tasks.item(row, COL_FILE)
        data = source.data(Qt.ItemDataRole.UserRole) if source is not None else None
        labels = [x.strip() for x in self._cell(row, COL_LABELS).split(",") if x.strip()]
        return TaskRow(self._cell(row, COL_NAME), self._cell(row, COL_FILE),
                       self.tasks.cellWidget(row, COL_KIND).currentData(), labels, data)

    def _append_row(self, task: TaskRow, rank: int | None = None) -> None:
        was = self._loading
        self._loading = True
        try:
            row = self.tasks.rowCount()
            self.tasks.insertRow(row)
            self.tasks.setItem(row, COL_NAME, QTableWidgetItem(task.name))
            source = QTableWidgetItem(task.source)
            source.setToolTip(task.source)
            source.setData(Qt.ItemDataRole.UserRole, task.data)
            if not task.source_editable:
                source.setFlags(source.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.tasks.setItem(row, COL_FILE, source)
            combo = QComboBox()
            for k in self.kind.form.subkinds:
                combo.addItem(k, k)
            self._set_combo(combo, task.subkind)
            combo.setEnabled(len(self.kind.form.subkinds) > 1)
            combo.setToolTip(combo.currentText())
            combo.currentIndexChanged.connect(self._edited)
            self.tasks.setCellWidget(row, COL_KIND, combo)
            if combo.sizeHint().width() > self.tasks.columnWidth(COL_KIND):  # "segmentation, label-free"
                self.tasks.setColumnWidth(COL_KIND, combo.sizeHint().width())
            labels = QTableWidgetItem(", ".join(task.labels))
            if self._picks:
                labels.setToolTip("empty: named after the foundation model's labels the task picks (shown in grey)")
            self.tasks.setItem(row, COL_LABELS, labels)
            rank_item = QTableWidgetItem("" if rank is None else str(rank))
            rank_item.setToolTip("this task's expert rank; empty: the backbone rank (shown in grey)")
            self.tasks.setItem(row, COL_RANK, rank_item)
            info = QTableWidgetItem("")
            info.setFlags(info.flags() & ~Qt.ItemFlag.ItemIsEditable)
            info.setForeground(QBrush(QColor("#555555")))
            self.tasks.setItem(row, COL_INFO, info)
        finally:
            self._loading = was

    def add_task_sources(self, sources: list[str | Path]) -> None:
        """Add the tasks the kind makes of what the add dialog returned (`TaskKind.new_tasks`: one task per file,
        or one task per folder of images + folder of label maps)."""
        taken = {self._cell(r, COL_NAME) for r in range(self.tasks.rowCount())}
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # a kind may peek into the files
        try:
            tasks = self.kind.new_tasks([str(s) for s in sources], taken)
        finally:
            QApplication.restoreOverrideCursor()
        for task in tasks:
            self._append_row(self.kind.task_row(task))
        if tasks:
            self._edited()

    def remove_selected_tasks(self) -> None:
        rows = sorted({index.row() for index in self.tasks.selectionModel().selectedRows()}, reverse=True)
        for row in rows:
            self.tasks.removeRow(row)
        if rows:
            self._edited()

    def _ask_folder_pair(self) -> tuple[str, str] | None:
        """Two folder dialogs: image volumes, then label maps (tests monkeypatch this)."""
        images = QFileDialog.getExistingDirectory(self, "New task: folder of image volumes", start_dir("tasks"))
        if not images:
            return None
        remember_dir("tasks", Path(images).parent)  # the next task's folders are likely its siblings
        labels = QFileDialog.getExistingDirectory(self, "New task: folder of label maps (same order)",
                                                  start_dir("tasks"))
        return (images, labels) if labels else None

    def _add_files_dialog(self) -> None:
        form = self.kind.form
        if form.add_dialog == "folder_pair":
            folders = self._ask_folder_pair()
            if folders:
                self.add_task_sources(list(folders))
            return
        paths, _ = QFileDialog.getOpenFileNames(self, form.add_text.rstrip("…"), start_dir("tasks"), form.file_filter)
        if paths:
            remember_dir("tasks", paths[0])
            self.add_task_sources(paths)

    def _ask_images_folder(self) -> str | None:
        """The folder dialog of a label-free task (tests monkeypatch this)."""
        images = QFileDialog.getExistingDirectory(self, "New label-free task: folder of image volumes",
                                                  start_dir("tasks"))
        if images:
            remember_dir("tasks", Path(images).parent)
        return images or None

    def _add_label_free_dialog(self) -> None:
        """A task of image volumes without label maps; then (when the foundation model's labels are known) the
        labels its expert learns from the foundation model."""
        images = self._ask_images_folder()
        if not images:
            return
        self.add_task_sources([images])
        self.pick_foundation_labels(self.tasks.rowCount() - 1)

    def _task_double_clicked(self, row: int, col: int) -> None:
        item = self.tasks.item(row, col)
        if col == COL_FILE and item is not None and not item.flags() & Qt.ItemFlag.ItemIsEditable \
                and self._picks:
            self.pick_foundation_labels(row)

    def _pick_foundation_labels(self) -> None:
        rows = sorted({index.row() for index in self.tasks.selectionModel().selectedRows()})
        if not rows and self.tasks.rowCount() == 1:
            rows = [0]
        if not rows:
            self.status.setText("✗ select a task first, then pick its foundation labels")
            self.status.setStyleSheet(ERROR_STYLE)
            return
        self.pick_foundation_labels(rows[0])

    def _ask_foundation_labels(self, task: str, names: list[str], current: list) -> list | None:
        """The foundation labels a task picks (tests monkeypatch this): a checkable list of the model's channel
        names; channel indices when the model names none (a TorchScript file without teacher.labels)."""
        if names:
            dialog = FoundationLabelsDialog(task, names, current, self)
            return dialog.chosen() if dialog.exec() == QDialog.DialogCode.Accepted else None
        text, ok = QInputDialog.getText(
            self, f"Foundation labels of {task}", "The foundation model names no output channels: the channel "
            "indices this task's expert segments, comma-separated (e.g. 1, 2)", text=", ".join(map(str, current)))
        if not ok:
            return None
        return [int(x) if x.strip().isdigit() else x.strip() for x in text.split(",") if x.strip()]

    def pick_foundation_labels(self, row: int) -> None:
        """Ask which of the foundation model's labels task `row` segments and set its `teacher_labels`."""
        if not 0 <= row < self.tasks.rowCount():
            return
        self.validate_now()  # the foundation model's labels for the current path
        path = self.checkpoint_edit.text().strip() if self.checkpoint_radio.isChecked() else ""
        if not path or self._model_key(path) not in ("bundle", "torchscript") \
                or isinstance(self._model_result, LorkdError):
            self.status.setText("✗ choose a MONAI bundle or TorchScript foundation model first (Foundation model: "
                                "Load a foundation model): tasks pick among its labels")
            self.status.setStyleSheet(ERROR_STYLE)
            return
        current = self.kind.task_from_row(self._row_of(row)).get("teacher_labels") or []
        chosen = self._ask_foundation_labels(self._cell(row, COL_NAME), list(self.foundation_names or []),
                                             list(current))
        if chosen is not None:
            self.set_task_teacher_labels(row, chosen)

    def set_task_teacher_labels(self, row: int, labels: list[str | int] | None) -> None:
        """Task `row`'s foundation labels (`teacher_labels`: channel names or indices; empty: none)."""
        task = self.kind.task_from_row(self._row_of(row))
        task["teacher_labels"] = list(labels) if labels else None
        shown = self.kind.task_row(task)
        was = self._loading
        self._loading = True
        try:
            source = self.tasks.item(row, COL_FILE)
            source.setText(shown.source)
            source.setToolTip(shown.source)
            source.setData(Qt.ItemDataRole.UserRole, shown.data)
            combo = self.tasks.cellWidget(row, COL_KIND)
            self._set_combo(combo, shown.subkind)
            combo.setToolTip(combo.currentText())
        finally:
            self._loading = was
        self._edited()

    def _model_key(self, path: str) -> str:
        """The teacher field the model path goes to: the "Read as" choice, else by the path (`model_key`)."""
        if not self._foreign:
            return "checkpoint"
        chosen = self.model_format.currentData()
        return model_key(path) if chosen in (None, "auto") else chosen

    def _browse_clicked(self) -> None:
        if self.browse_button.menu() is None:  # with a menu (bundle folders too) the menu opens instead
            self._browse_checkpoint()

    def _browse_checkpoint(self) -> None:
        if self._foreign:
            title, filters = ("Foundation model: a checkpoint, a TorchScript file or a MONAI bundle (.zip)",
                              "Foundation models (*.pt *.pth *.ckpt *.ts *.zip);;All files (*)")
        else:
            title, filters = "Foundation model checkpoint", "PyTorch checkpoints (*.pt *.pth *.ckpt);;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, title, start_dir("models"), filters)
        if path:
            remember_dir("models", path)
            self.choose_model(path)

    def _browse_bundle_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Foundation model: a MONAI bundle folder", start_dir("models"))
        if path:
            remember_dir("models", Path(path).parent)
            self.choose_model(path)

    def choose_model(self, path: str | Path) -> None:
        """Load the foundation model at `path` (what Browse does): read as the path says (`model_key`)."""
        self._set_combo(self.model_format, "auto")
        self.checkpoint_radio.setChecked(True)
        self.checkpoint_edit.setText(str(path))

    def _teacher_mode(self) -> None:
        pretrain = self.pretrain_radio.isChecked()
        self.teacher_epochs.setEnabled(pretrain)
        for widget in self._checkpoint_row:
            widget.setEnabled(not pretrain)
        self._edited()

    def _update_architecture_fields(self, *_: Any) -> None:
        """What applies with the chosen foundation model: a MONAI bundle or TorchScript file brings its own network
        (Architecture off, its tooltip says why); the backbone "same (as the bundle)" needs a bundle; Width only
        applies to "same"."""
        path = self.checkpoint_edit.text().strip() if self.checkpoint_radio.isChecked() else ""
        key = self._model_key(path) if path else None
        own = key in ("bundle", "torchscript")
        what = "A MONAI bundle" if key == "bundle" else "A TorchScript file"
        self.teacher_arch.setEnabled(not own)
        self.teacher_arch.setToolTip(f"{what} defines its own network: Architecture applies to a foundation model "
                                     "pre-trained here or loaded from our checkpoint" if own else TEACHER_ARCH_TIP)
        index = self.backbone_arch.findData("same")
        if index >= 0:
            item = self.backbone_arch.model().item(index)
            item.setEnabled(key == "bundle")
            item.setToolTip("the backbone takes the bundle's network at Width times its channels" if key == "bundle"
                            else "needs a MONAI bundle as the foundation model (Load a foundation model)")
        same = self.backbone_arch.currentData() == "same"
        self.width_edit.setEnabled(same)
        self.width_edit.setToolTip(WIDTH_TIP if same else WIDTH_TIP + "; only the backbone \"same (as the bundle)\" "
                                   "uses it")

    # ------------------------------------------------------------------------ placeholders
    def _rank_placeholder(self, row: int) -> str:
        """An empty Rank cell means the backbone rank: shown in grey."""
        return str(self.rank.value())

    def _labels_placeholder(self, row: int) -> str:
        """An empty Labels cell of a task that learns the foundation model's labels: the labels it picked (or that
        they come from the foundation model), in grey."""
        item = self.tasks.item(row, COL_FILE)
        data = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if not self._picks or not isinstance(data, dict):
            return ""
        picked = data.get("teacher_labels")
        if picked:
            return f"{', '.join(str(x) for x in picked)} {FROM_FOUNDATION}"
        return FROM_FOUNDATION if not data.get("labels") else ""

    def placeholder(self, row: int, col: int) -> str:
        """The grey text an empty cell shows ("" for a cell with a value or without a placeholder)."""
        if self._cell(row, col):
            return ""
        return {COL_RANK: self._rank_placeholder, COL_LABELS: self._labels_placeholder}.get(col, lambda _r: "")(row)

    # ---------------------------------------------------------------------------- pending
    def set_pending(self, text: str | None) -> None:
        """A config is being prepared (the demo, in the background): the status says `text` in grey and the form's
        errors stay hidden until it arrives (`set_mapping`), so the empty form's "at least one task is needed" does
        not flash in red. None: show the form's own validity again (the preparation failed or was cancelled)."""
        self._pending = text
        self.validate_now()

    # -------------------------------------------------------------------------- runs dir
    def set_runs_dir(self, path: str | Path) -> None:
        self.runs_dir_edit.setText(str(path))
        self.runs_dir_edit.setToolTip(str(path))

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs_dir_edit.text()).expanduser()

    def _choose_runs_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Runs folder", start_dir("runs", default=self.runs_dir))
        if path:
            remember_dir("runs", path)
            self.set_runs_dir(path)
            self.runs_dir_chosen.emit(path)

    # ------------------------------------------------------------------------ validation
    def _edited(self, *_: Any) -> None:
        if self._loading:
            return
        self._timer.start()
        self.changed.emit()

    @property
    def is_valid(self) -> bool:
        return bool(self._valid)

    def validate_now(self) -> Config | None:
        """Validate the form through core.kinds.load_config and the kind's look at the task files now; show the
        error next to its field (`ConfigError.loc`)."""
        self._timer.stop()
        self.error_loc = ()
        self._look_at_model()
        try:
            config = load_config(self.mapping())
            self._check_inputs(config)
        except LorkdError as exc:
            self.config, self.error = None, " ".join(str(exc).split())
            self.error_loc = exc.loc if isinstance(exc, ConfigError) else ()
        else:
            self.config, self.error = config, None
        self._show_error(self.error)
        valid = self.error is None
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)
        return self.config

    def _check_inputs(self, config: Config) -> None:
        """What core.config cannot know: the task files exist and fit the task settings (the kind's
        `describe_tasks`, whose texts fill the Contents column); the checkpoint and the GPU exist."""
        t = config.teacher
        checkpoint = t.checkpoint
        if checkpoint is not None:
            if not checkpoint.strip():
                what = ("a foundation model: our checkpoint, a MONAI bundle or a TorchScript file" if self._foreign
                        else "a checkpoint file")
                raise ConfigError(f"choose {what} (or pre-train the foundation model)", "teacher.checkpoint")
            if not Path(checkpoint).expanduser().is_file():
                raise ConfigError(f"file not found: {checkpoint}", "teacher.checkpoint")
        if getattr(t, "torchscript", None) and not Path(t.torchscript).expanduser().is_file():
            raise ConfigError(f"file not found: {t.torchscript}", "teacher.torchscript")
        if isinstance(self._model_result, LorkdError):
            raise self._model_result
        if config.device.startswith("cuda"):
            values = [value for value, _ in self._gpus]
            if not values:
                raise ConfigError(f"{config.device} was asked for but no CUDA GPU is available", "device")
            if config.device != "cuda" and config.device not in values:
                raise ConfigError(f"no {config.device} (GPUs: {', '.join(values)})", "device")
        self._show_contents(self._describe(config))
        self._check_teacher_labels(config)

    # ----------------------------------------------------------------- foundation model
    def _look_at_model(self) -> None:
        """The chosen bundle's output channels (`core.models.foundation.describe`, cached on the path, its files and
        the trust setting: the bundle is only read again when one of them changes), or a TorchScript file's names
        from teacher.labels; shown under the field. `_model_result`: the names, or the error that validation
        shows at the field."""
        self._model_result = None
        self.foundation_names = None
        t = self._base["teacher"]
        path = self.checkpoint_edit.text().strip() if self.checkpoint_radio.isChecked() else ""
        key = self._model_key(path) if path else None
        named = list(t.get("labels") or []) if self._foreign else []
        if key == "bundle":
            trust = self.trust_check.isChecked()
            stamp = (path, trust, _file_stamps(path), _bundle_stamps(path))
            if self._model_cache is None or self._model_cache[0] != stamp:
                from core.models.foundation import describe  # heavy (MONAI): only for a bundle

                QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
                try:
                    result: Any = describe(path, trust=trust)[1]
                except LorkdError as exc:
                    # shown at the model field (an error about another teacher field names it in its text)
                    result = exc if isinstance(exc, ConfigError) and exc.loc == ("teacher", "bundle") else \
                        ConfigError(" ".join(str(exc).split()), "teacher.bundle")
                finally:
                    QApplication.restoreOverrideCursor()
                self._model_cache = (stamp, result)
            self._model_result = self._model_cache[1]
            if not isinstance(self._model_result, LorkdError):
                self.foundation_names = named or list(self._model_result)
        elif key == "torchscript":
            self.foundation_names = named or None
        if key in ("bundle", "torchscript") and not isinstance(self._model_result, LorkdError):
            if self.foundation_names:
                source = " (teacher.labels)" if named else ""
                self.foundation_labels.setText(f"Labels: {', '.join(self.foundation_names)}{source}")
            else:
                self.foundation_labels.setText("Labels: a TorchScript file names none: tasks pick its output "
                                               "channels by index (or name them in the config's teacher.labels)")
        else:
            self.foundation_labels.setText("")
        self.foundation_labels.setHidden(not self.foundation_labels.text() or not self._foreign)
        self._update_architecture_fields()
        self.foundation_labels_button.setEnabled(key in ("bundle", "torchscript"))
        self.add_label_free_button.setEnabled(key in ("bundle", "torchscript"))

    def _check_teacher_labels(self, config: Config) -> None:
        """With a user's foundation model every task names the channels it segments (`teacher_labels`), and those
        must be the model's (checked here when its labels are known; the run checks them again)."""
        if not getattr(config.teacher, "foreign", False):
            return
        names = self.foundation_names
        for i, task in enumerate(config.tasks):
            chosen = getattr(task, "teacher_labels", None)
            if not chosen:
                raise ConfigError("pick the foundation model's labels this task segments (Foundation labels…)",
                                  ("tasks", i, "teacher_labels"))
            if names is None:
                continue
            for j, label in enumerate(chosen):
                if _channel_of(label, names) is None:
                    raise ConfigError(f"the foundation model has no label {label!r} (its labels: "
                                      f"{', '.join(names)})", ("tasks", i, "teacher_labels", j))

    def _describe(self, config: Config) -> list[tuple[str, str]]:
        """`kind.describe_tasks`, cached on the tasks and the size and time of every file they name (the form
        validates on every edit; the files are only looked at again when they or the tasks change)."""
        key = (config.kind, repr(config.to_dict()["tasks"]), _file_stamps(config.to_dict()["tasks"]))
        if self._describe_cache is None or self._describe_cache[0] != key:
            try:
                result: Any = self.kind.describe_tasks(config)
            except LorkdError as exc:
                result = exc
            self._describe_cache = (key, result)
        result = self._describe_cache[1]
        if isinstance(result, LorkdError):
            raise result
        return result

    def _show_contents(self, contents: list[tuple[str, str]]) -> None:
        was = self._loading
        self._loading = True
        try:
            for row, (text, tip) in enumerate(contents):
                item = self.tasks.item(row, COL_INFO)
                if item is not None:
                    item.setText(text)
                    item.setToolTip(text if not tip or tip == text else f"{text}\n{tip}")  # the cell may be elided
        finally:
            self._loading = was

    def error_for(self, path: str) -> str:
        """The error text shown next to the field `path` (empty when none)."""
        if path not in self._fields:
            return self.banner.text() if self.banner.isVisible() else ""
        label = self._fields[path][1]
        return label.text() if not label.isHidden() else ""

    def _target(self, loc: tuple) -> str | None:
        if not loc:
            return None
        parts = [str(p) for p in loc]
        if parts[0] == "tasks" or parts[:2] == ["backbone", "ranks"]:
            return "tasks"
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in self._fields:
                return key
        return None

    def _show_error(self, message: str | None) -> None:
        for widget, label in self._fields.values():
            label.hide()
            label.clear()
            if widget is not self.tasks:
                mark_invalid(widget, False)
        self.banner.hide()
        self._mark_cell(None, None, "")
        if self._pending is not None:  # the form is about to be replaced: its errors would only flash
            self.status.setText(self._pending)
            self.status.setStyleSheet(PENDING_STYLE)
            return
        target = self._target(self.error_loc) if message else None
        if message is None:
            self.status.setText("✓ configuration valid")
            self.status.setStyleSheet("color: #1e7e34;")
            return
        self.status.setText("✗ " + message)
        self.status.setStyleSheet(ERROR_STYLE)
        if target is None:
            self.banner.setText(message)
            self.banner.show()
            return
        widget, label = self._fields[target]
        label.setText(message)
        label.setToolTip(message)
        label.show()
        if target == "tasks":
            self._mark_task_cell(self.error_loc, message)
        else:
            mark_invalid(widget, True)

    def _mark_task_cell(self, loc: tuple, message: str) -> None:
        parts = [str(p) for p in loc]
        if parts[0] == "tasks" and len(parts) >= 2 and parts[1].isdigit():
            column = self.kind.form.columns.get(parts[2], "name") if len(parts) > 2 else "name"
            self._mark_cell(int(parts[1]), COLUMN_OF.get(column, COL_NAME), message)
        elif parts[:2] == ["backbone", "ranks"] and len(parts) >= 3:
            name = ".".join(parts[2:])
            for row in range(self.tasks.rowCount()):
                if self._cell(row, COL_NAME) == name:
                    self._mark_cell(row, COL_RANK, message)

    def _mark_cell(self, row: int | None, col: int | None, message: str) -> None:
        was = self._loading
        self._loading = True  # colouring cells emits itemChanged
        try:
            for r in range(self.tasks.rowCount()):
                for c in (COL_NAME, COL_FILE, COL_LABELS, COL_RANK):
                    item = self.tasks.item(r, c)
                    if item is not None and item.background().color() == INVALID_CELL:
                        item.setBackground(QBrush())
                        item.setToolTip(item.text() if c == COL_FILE else "")
                combo = self.tasks.cellWidget(r, COL_KIND)
                if combo is not None:
                    mark_invalid(combo, False)
            if row is None or not 0 <= row < self.tasks.rowCount():
                return
            if col == COL_KIND:
                mark_invalid(self.tasks.cellWidget(row, col), True)
                return
            item = self.tasks.item(row, col)
            if item is not None:
                item.setBackground(QBrush(INVALID_CELL))
                item.setToolTip(message)
        finally:
            self._loading = was

    # ------------------------------------------------------------------------------ yaml
    def load_yaml(self, path: str | Path) -> None:
        """Load a YAML config (relative paths against its folder). An invalid value is loaded and
        shown next to its field; unreadable YAML, unknown keys or wrong types raise ConfigError."""
        from core.config import read_yaml_file

        path = Path(path)
        try:
            raw = read_yaml_file(path)  # bounded: size, aliases, UTF-8; one-line errors with the line number
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        if not isinstance(raw, dict | None):
            raise ConfigError(f"{path}: expected a mapping of config sections, got {type(raw).__name__}")
        config = config_from_raw(raw or {})
        config.resolve_paths(path.resolve().parent)
        self.set_mapping(config.to_dict(), note=f"Loaded from {path}")

    def save_yaml(self, path: str | Path) -> None:
        """Save the form as YAML through core.config (refused while invalid)."""
        config = self.validate_now()
        if config is None:
            raise ConfigError(f"cannot save an invalid configuration: {self.error}")
        save_config(config, path)

