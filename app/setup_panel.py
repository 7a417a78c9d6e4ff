"""Run setup: tasks, foundation model, backbone and experts, training, device; YAML load/save; the embedded demos.

Both run kinds: classification (MedMNIST-format .npz tasks) and segmentation (`kind: segmentation`: volumes with
label maps; the tasks table shows the images and the label names, the data block - spacing, patch size,
intensity - is kept from the loaded config). `prepare_demo` builds the embedded demos: the 3D segmentation demo
on the MNI152 brain (the default, with its T1 volume for the viewer) or the 2D classification demo.

The panel edits a config mapping. Everything it does not show (data caps, schedule, seed, ...) is
kept from the loaded config untouched. Validity is decided by `core.config` (and, for the task files,
by `core.kinds.classification.tasks.build_task_specs`): the first `ConfigError` "field.path: problem" is shown in red
next to the field it names, and `validity_changed(False)` lets the window disable Start.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.config import (
    BACKBONE_ARCHS,
    SEG_ARCHS,
    TEACHER_ARCHS,
    Config,
    apply_override,
    from_dict,
    load_config,
    save_config,
)
from core.errors import ConfigError, LorkdError
from core.kinds.segmentation.data import label_values

ERROR_STYLE = "color: #c0392b;"
INVALID_CELL = QColor("#f8d7d3")
FIELD_PATH = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*$")
COL_NAME, COL_FILE, COL_KIND, COL_LABELS, COL_RANK, COL_INFO = range(6)
TASK_COLUMNS = ("Name", "File", "Kind", "Labels", "Rank", "Contents")
KINDS = ("auto", "multiclass", "multilabel")
SEGMENTATION = "segmentation"
INT_RANGE = (-1_000_000, 1_000_000)  # wide on purpose: core.config decides what is valid


def error_field(message: str) -> str | None:
    """The dotted field path a "field.path: problem" message starts with, or None."""
    head = message.split(": ", 1)[0].strip()
    return head if ": " in message and FIELD_PATH.match(head) else None


def task_name_from_file(path: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^\w\-.]+", "_", path.stem) or "task"
    name, i = stem, 2
    while name in taken:
        name, i = f"{stem}_{i}", i + 1
    return name


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


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------ demos
DEMOS = {  # kind -> menu text (the first is the default)
    SEGMENTATION: "3D segmentation: MNI152 brain tissues",
    "classification": "2D classification: four small tasks",
}
DEMO_NOTES = {
    SEGMENTATION: (
        "The embedded demo: 3D segmentation of the MNI152 2009a brain MRI shipped in nilearn's package data "
        "(four tasks: grey matter, white matter, CSF, brain mask; the T1 volume is loaded in the Viewer). A MONAI "
        "UNet foundation model is pre-trained on them, then decomposed into a lighter UNet backbone with low-rank "
        "task experts; Dice and HD95 on a held-out slab. Press Start; a few minutes on a laptop CPU. Research use "
        "only."
    ),
    "classification": (
        "The embedded demo: four small 2D tasks built from real images that ship with the installed packages "
        "(MNI152 brain MRI slices: slice plane, slice level, tissue; modality: MRI / CT / fundus photo / "
        "histology). A ResNet-18 foundation model is pre-trained on them, then decomposed into a compact backbone "
        "with rank-4 task experts. Press Start; a few minutes on a laptop CPU. Research use only."
    ),
}
# keyword arguments only the classification demo takes (a caller passing them means that demo)
CLASSIFICATION_DEMO_KWARGS = ("size", "n_per_task")


def demo_kind(demo_kwargs: dict[str, Any] | None = None, kind: str | None = None) -> str:
    """The demo to build: `kind` when given; else classification when `demo_kwargs` has its arguments; else the
    default (segmentation)."""
    if kind:
        if kind not in DEMOS:
            raise ValueError(f"demo kind {kind!r} is not available (available: {', '.join(DEMOS)})")
        return kind
    if any(k in (demo_kwargs or {}) for k in CLASSIFICATION_DEMO_KWARGS):
        return "classification"
    return next(iter(DEMOS))


def prepare_demo(
    data_dir: str | Path, demo_kwargs: dict[str, Any] | None = None, overrides: list[str] | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The config mapping of an embedded demo (its files written or reused in `data_dir`), with `overrides`
    ("key=value"). Segmentation: `build_seg_demo(data_dir, **demo_kwargs)` (quick=...); classification:
    `build_demo(data_dir, **demo_kwargs)` (size, n_per_task, seed). Off the GUI thread: it may write files."""
    kind = demo_kind(demo_kwargs, kind)
    if kind == SEGMENTATION:
        from core.kinds.segmentation.demo import build_seg_demo

        raw = build_seg_demo(Path(data_dir) / "segmentation", **(demo_kwargs or {}))
    else:
        from core.kinds.classification.demo import build_demo

        raw = build_demo(data_dir, **(demo_kwargs or {}))
    raw = copy.deepcopy(raw)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return raw


def demo_volume_path(raw: dict[str, Any]) -> Path | None:
    """The volume a segmentation config's first task reads first (the demo's T1), or None."""
    if raw.get("kind") != SEGMENTATION or not raw.get("tasks"):
        return None
    images = raw["tasks"][0].get("images")
    first = images[0] if isinstance(images, list) and images else images
    return Path(first) if first else None


def prepare_demo_with_volume(
    data_dir: str | Path, demo_kwargs: dict[str, Any] | None = None, overrides: list[str] | None = None,
    kind: str | None = None,
) -> tuple[dict[str, Any], Any]:
    """(`prepare_demo`'s mapping, the demo volume read for the viewer or None); for a worker thread."""
    raw = prepare_demo(data_dir, demo_kwargs, overrides, kind)
    path = demo_volume_path(raw)
    volume = None
    if path is not None:
        from core.io import read_volume

        volume = read_volume(path)
    return raw, volume


def demo_note(raw: dict[str, Any]) -> str:
    return DEMO_NOTES[SEGMENTATION if raw.get("kind") == SEGMENTATION else "classification"]


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
        self._base: dict[str, Any] = Config().to_dict()
        self.kind = "classification"
        self._loading = False
        self._valid: bool | None = None
        self.config: Config | None = None
        self.error: str | None = None
        self._spec_cache: tuple[Any, Any] | None = None
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
        header = self.tasks.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COL_FILE, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COL_INFO, QHeaderView.ResizeMode.ResizeToContents)
        self.tasks.setColumnWidth(COL_NAME, 110)
        self.tasks.setColumnWidth(COL_KIND, 110)
        self.tasks.setColumnWidth(COL_LABELS, 200)
        self.tasks.setColumnWidth(COL_RANK, 50)
        self.tasks.setMinimumHeight(150)
        for col, tip in ((COL_LABELS, "class names, comma-separated (empty: 0, 1, ...)"),
                         (COL_RANK, "per-task expert rank (empty: the backbone rank)")):
            self.tasks.horizontalHeaderItem(col).setToolTip(tip)
        self.tasks.itemChanged.connect(self._edited)
        self.tasks_error = self._error_label()
        self._fields["tasks"] = (self.tasks, self.tasks_error)
        add = QPushButton("Add MedMNIST files…")
        add.clicked.connect(self._add_files_dialog)
        self.add_button = add
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected_tasks)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        task_layout.addWidget(self.tasks)
        task_layout.addWidget(self.tasks_error)
        task_layout.addLayout(buttons)

        # foundation model -------------------------------------------------------------
        teacher_box = QGroupBox("Foundation model")
        teacher_form = QFormLayout(teacher_box)
        self.pretrain_radio = QRadioButton("Pre-train on the tasks")
        self.checkpoint_radio = QRadioButton("Load a checkpoint")
        group = QButtonGroup(self)
        group.addButton(self.pretrain_radio)
        group.addButton(self.checkpoint_radio)
        self.pretrain_radio.toggled.connect(self._teacher_mode)
        teacher_form.addRow(self.pretrain_radio)
        teacher_form.addRow(self.checkpoint_radio)
        self.teacher_arch = self._combo(TEACHER_ARCHS, "teacher.arch: the foundation model's network (MONAI)")
        self._row(teacher_form, "Architecture", self.teacher_arch, "teacher.arch")
        self.teacher_epochs = self._int("teacher.epochs: pre-training epochs")
        self._row(teacher_form, "Epochs", self.teacher_epochs, "teacher.epochs")
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("teacher.pt or a MONAI state_dict")
        self.checkpoint_edit.textChanged.connect(self._edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_checkpoint)
        self._row(teacher_form, "Checkpoint", _field_with_button(self.checkpoint_edit, browse), "teacher.checkpoint")
        self._checkpoint_row = (self.checkpoint_edit, browse)

        # backbone and experts ---------------------------------------------------------
        backbone_box = QGroupBox("Backbone and task experts")
        backbone_form = QFormLayout(backbone_box)
        self.backbone_arch = self._combo(BACKBONE_ARCHS, "backbone.arch: the common backbone (compact: ~0.5M params)")
        self._row(backbone_form, "Backbone", self.backbone_arch, "backbone.arch")
        self.form_combo = self._combo(("factorized", "paper"),
                                      "backbone.form: factorized (k×k conv to r channels + 1×1 conv) or the "
                                      "paper's dense ΔW; both merge exactly")
        self._row(backbone_form, "Expert form", self.form_combo, "backbone.form")
        self.rank = self._int("backbone.rank: low-rank r of every expert (per-task ranks: the Rank column)")
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
        config = from_dict(Config, copy.deepcopy(raw))  # types and keys only; values are validated later
        self._base = config.to_dict()
        c = self._base
        self.kind = c.get("kind") or "classification"
        self.set_note(note)
        self._loading = True
        try:
            self._set_kind_widgets()
            self.name_edit.setText(c["name"])
            self.image_size.setValue(c["data"]["image_size"])
            self.tasks.setRowCount(0)
            ranks = c["backbone"]["ranks"] or {}
            for task in c["tasks"]:
                if self.kind == SEGMENTATION:
                    self._append_seg_task(task, ranks.get(task["name"]))
                else:
                    self._append_task(task["name"], task["medmnist"] or "", task["kind"], task["labels"],
                                      ranks.get(task["name"]))
            t = c["teacher"]
            self._set_combo(self.teacher_arch, t["arch"])
            self.teacher_epochs.setValue(t["epochs"])
            self.checkpoint_edit.setText(t["checkpoint"] or "")
            (self.checkpoint_radio if t["checkpoint"] else self.pretrain_radio).setChecked(True)
            self._teacher_mode()
            b = c["backbone"]
            self._set_combo(self.backbone_arch, b["arch"])
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
        seg = self.kind == SEGMENTATION
        for combo, archs in ((self.teacher_arch, SEG_ARCHS if seg else TEACHER_ARCHS),
                             (self.backbone_arch, SEG_ARCHS if seg else BACKBONE_ARCHS)):
            if [combo.itemData(i) for i in range(combo.count())] != list(archs):
                combo.blockSignals(True)
                combo.clear()
                for arch in archs:
                    combo.addItem(arch, arch)
                combo.blockSignals(False)
        self.image_size.setEnabled(not seg)
        self.image_size.setToolTip("data.image_size: every task is resized to this side (pixels)" if not seg else
                                   "segmentation runs resample volumes to data.spacing (kept from the config)")
        self.tasks.horizontalHeaderItem(COL_FILE).setText("Images → label maps" if seg else "File")
        self.tasks.horizontalHeaderItem(COL_LABELS).setToolTip(
            "label names 1, 2, ... comma-separated (0 is the background)" if seg
            else "class names, comma-separated (empty: 0, 1, ...)")
        self.add_button.setText("Add segmentation task…" if seg else "Add MedMNIST files…")
        self.add_button.setToolTip("a folder of image volumes and a folder of label maps paired with them by name order"
                                   if seg else "one task per MedMNIST .npz file")

    def _append_seg_task(self, task: dict[str, Any], rank: int | None) -> None:
        """A segmentation task row: the file cell shows images -> label maps (kept as they are), the labels cell
        the label names 1..K."""
        def show(value) -> str:
            if isinstance(value, list):
                return value[0] if len(value) == 1 else f"{len(value)} files ({value[0]}, …)"
            return str(value or "")

        names = task.get("label_names") or {}
        labels = [str(names[k]) for k in sorted(names, key=int)]
        self._append_task(task["name"], f"{show(task.get('images'))} → {show(task.get('labels'))}", SEGMENTATION,
                          labels, rank)
        was = self._loading
        self._loading = True
        try:
            row = self.tasks.rowCount() - 1
            item = self.tasks.item(row, COL_FILE)
            item.setData(Qt.ItemDataRole.UserRole, {"images": task.get("images"), "labels": task.get("labels")})
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(f"images: {task.get('images')}\nlabel maps: {task.get('labels')}")
            self.tasks.cellWidget(row, COL_KIND).setEnabled(False)
        finally:
            self._loading = was

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
        c["data"]["image_size"] = self.image_size.value()
        tasks, ranks = [], {}
        for row in range(self.tasks.rowCount()):
            name = self._cell(row, COL_NAME)
            labels = [s.strip() for s in self._cell(row, COL_LABELS).split(",") if s.strip()]
            if self.kind == SEGMENTATION:
                files = self.tasks.item(row, COL_FILE).data(Qt.ItemDataRole.UserRole) or {}
                tasks.append({"name": name, "images": files.get("images"), "labels": files.get("labels"),
                              "label_names": {i: n for i, n in enumerate(labels, start=1)} or None})
            else:
                tasks.append({"name": name, "medmnist": self._cell(row, COL_FILE) or None,
                              "kind": self.tasks.cellWidget(row, COL_KIND).currentData(), "labels": labels or None})
            rank = self._cell(row, COL_RANK)
            if rank:
                ranks[name] = int(rank) if re.fullmatch(r"-?\d+", rank) else rank
        c["tasks"] = tasks
        c["backbone"]["ranks"] = ranks or None
        t = c["teacher"]
        t["arch"] = self.teacher_arch.currentData()
        t["epochs"] = self.teacher_epochs.value()
        t["checkpoint"] = self.checkpoint_edit.text().strip() if self.checkpoint_radio.isChecked() else None
        b = c["backbone"]
        b["arch"] = self.backbone_arch.currentData()
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

    def _append_task(self, name: str, path: str, kind: str = "auto", labels: list[str] | None = None,
                     rank: int | None = None) -> None:
        was = self._loading
        self._loading = True
        try:
            row = self.tasks.rowCount()
            self.tasks.insertRow(row)
            self.tasks.setItem(row, COL_NAME, QTableWidgetItem(name))
            file_item = QTableWidgetItem(path)
            file_item.setToolTip(path)
            self.tasks.setItem(row, COL_FILE, file_item)
            combo = QComboBox()
            for k in (SEGMENTATION,) if kind == SEGMENTATION else KINDS:
                combo.addItem(k, k)
            self._set_combo(combo, kind)
            combo.currentIndexChanged.connect(self._edited)
            self.tasks.setCellWidget(row, COL_KIND, combo)
            self.tasks.setItem(row, COL_LABELS, QTableWidgetItem(", ".join(labels or [])))
            self.tasks.setItem(row, COL_RANK, QTableWidgetItem("" if rank is None else str(rank)))
            info = QTableWidgetItem("")
            info.setFlags(info.flags() & ~Qt.ItemFlag.ItemIsEditable)
            info.setForeground(QBrush(QColor("#555555")))
            self.tasks.setItem(row, COL_INFO, info)
        finally:
            self._loading = was

    def add_task_files(self, paths: list[str | Path]) -> None:
        """Add one task per MedMNIST `.npz` file, named after the file."""
        taken = {self._cell(r, COL_NAME) for r in range(self.tasks.rowCount())}
        for path in paths:
            path = Path(path)
            name = task_name_from_file(path, taken)
            taken.add(name)
            self._append_task(name, str(path.expanduser().resolve()))
        self._edited()

    def remove_selected_tasks(self) -> None:
        rows = sorted({index.row() for index in self.tasks.selectionModel().selectedRows()}, reverse=True)
        for row in rows:
            self.tasks.removeRow(row)
        if rows:
            self._edited()

    def add_seg_task(self, images: str | Path, labels: str | Path) -> None:
        """Add a segmentation task from a folder of image volumes and a folder of label maps (paired in name order).

        The task is named after the images folder (its parent when the folder is called images*, as in
        Task01_X/imagesTr); the label names are proposed as "label 1".."label K" from the values in the first
        label map (rename them in the table). A label map that cannot be read leaves the names empty, and the
        validation line says why.
        """
        images, labels = Path(images).expanduser().resolve(), Path(labels).expanduser().resolve()
        named = images.parent if images.name.lower().startswith("image") and images.parent.name else images
        taken = {self._cell(r, COL_NAME) for r in range(self.tasks.rowCount())}
        name = task_name_from_file(Path(named.name), taken)
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            values = label_values(str(labels))
        except Exception:  # unreadable or empty: the task is still added, validation names the problem
            values = []
        finally:
            QApplication.restoreOverrideCursor()
        names = {i: f"label {i}" for i in range(1, max(values) + 1)} if values else None
        self._append_seg_task({"name": name, "images": str(images), "labels": str(labels), "label_names": names}, None)
        self._edited()

    def _ask_seg_folders(self) -> tuple[str, str] | None:
        """Two folder dialogs: image volumes, then label maps (tests monkeypatch this)."""
        images = QFileDialog.getExistingDirectory(self, "Segmentation task: folder of image volumes")
        if not images:
            return None
        labels = QFileDialog.getExistingDirectory(self, "Segmentation task: folder of label maps (same order)",
                                                  str(Path(images).parent))
        return (images, labels) if labels else None

    def _add_files_dialog(self) -> None:
        if self.kind == SEGMENTATION:
            folders = self._ask_seg_folders()
            if folders:
                self.add_seg_task(*folders)
            return
        paths, _ = QFileDialog.getOpenFileNames(self, "Add MedMNIST files", "", "MedMNIST files (*.npz);;All files (*)")
        if paths:
            self.add_task_files(paths)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Foundation model checkpoint", "",
                                              "PyTorch checkpoints (*.pt *.pth *.ckpt);;All files (*)")
        if path:
            self.checkpoint_radio.setChecked(True)
            self.checkpoint_edit.setText(path)

    def _teacher_mode(self) -> None:
        pretrain = self.pretrain_radio.isChecked()
        self.teacher_epochs.setEnabled(pretrain)
        for widget in self._checkpoint_row:
            widget.setEnabled(not pretrain)
        self._edited()

    # -------------------------------------------------------------------------- runs dir
    def set_runs_dir(self, path: str | Path) -> None:
        self.runs_dir_edit.setText(str(path))
        self.runs_dir_edit.setToolTip(str(path))

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs_dir_edit.text()).expanduser()

    def _choose_runs_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Runs folder", self.runs_dir_edit.text())
        if path:
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
        """Validate the form through core.config now; show the error next to its field."""
        self._timer.stop()
        try:
            config = load_config(self.mapping())
            self._check_files(config)
        except LorkdError as exc:
            self.config, self.error = None, " ".join(str(exc).split())
        else:
            self.config, self.error = config, None
        self._show_error(self.error)
        valid = self.error is None
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)
        return self.config

    def _check_files(self, config: Config) -> None:
        """What core.config cannot know: the files exist and fit the task settings; the GPU exists."""
        for i, task in enumerate(config.tasks):
            if config.kind == SEGMENTATION:
                for key in ("images", "labels"):
                    value = getattr(task, key)
                    for path in value if isinstance(value, list) else [value]:
                        if not Path(str(path)).expanduser().exists():
                            raise ConfigError(f"tasks.{i}.{key}: not found: {path}")
            elif not Path(task.medmnist).expanduser().is_file():
                raise ConfigError(f"tasks.{i}.medmnist: file not found: {task.medmnist}")
        checkpoint = config.teacher.checkpoint
        if checkpoint is not None:
            if not checkpoint.strip():
                raise ConfigError("teacher.checkpoint: choose a checkpoint file (or pre-train the foundation model)")
            if not Path(checkpoint).expanduser().is_file():
                raise ConfigError(f"teacher.checkpoint: file not found: {checkpoint}")
        if config.device.startswith("cuda"):
            values = [value for value, _ in self._gpus]
            if not values:
                raise ConfigError(f"device: {config.device} was asked for but no CUDA GPU is available")
            if config.device != "cuda" and config.device not in values:
                raise ConfigError(f"device: no {config.device} (GPUs: {', '.join(values)})")
        if config.kind == SEGMENTATION:
            self._show_seg_info(config)
        else:
            self._show_specs(self._task_specs(config))

    def _show_seg_info(self, config: Config) -> None:
        was = self._loading
        self._loading = True
        try:
            d = config.data
            for row, task in enumerate(config.tasks):
                item = self.tasks.item(row, COL_INFO)
                if item is not None:
                    n = f"{len(task.images)} volume(s)" if isinstance(task.images, list) else "a folder of volumes"
                    item.setText(f"segmentation · {task.num_labels} label(s) · 3D · {n}")
                    item.setToolTip(f"resampled to {d.spacing} mm, patches {d.patch_size}, intensity "
                                    f"{d.intensity.mode}")
        finally:
            self._loading = was

    def _task_specs(self, config: Config) -> list:
        """core.kinds.classification.tasks.build_task_specs, cached on the task settings and the files' mtimes; a file
        problem (DataError naming the file) is re-raised naming the task's field."""
        from core.kinds.classification.tasks import build_task_specs

        key = tuple(
            (t.name, t.medmnist, t.kind, tuple(t.labels or ()), Path(t.medmnist).stat().st_mtime_ns,
             Path(t.medmnist).stat().st_size)
            for t in config.tasks
        )
        if self._spec_cache is None or self._spec_cache[0] != key:
            try:
                result: Any = build_task_specs(config)
            except LorkdError as exc:
                result = exc
            self._spec_cache = (key, result)
        result = self._spec_cache[1]
        if isinstance(result, ConfigError):
            raise result
        if isinstance(result, LorkdError):
            message = " ".join(str(result).split())
            for i, task in enumerate(config.tasks):
                if message.startswith(str(task.medmnist)):
                    raise ConfigError(f"tasks.{i}.medmnist: {message}") from None
            raise result
        return result

    def _show_specs(self, specs: list) -> None:
        was = self._loading
        self._loading = True
        try:
            for row, spec in enumerate(specs):
                item = self.tasks.item(row, COL_INFO)
                if item is None:
                    continue
                colour = "RGB" if spec.rgb else "grey"
                noun = "labels" if spec.kind == "multilabel" else "classes"
                item.setText(f"{spec.kind} · {spec.num_classes} {noun} · {spec.spatial_dims}D {colour}")
                item.setToolTip(", ".join(spec.label_names))
        finally:
            self._loading = was

    def error_for(self, path: str) -> str:
        """The error text shown next to the field `path` (empty when none)."""
        if path not in self._fields:
            return self.banner.text() if self.banner.isVisible() else ""
        label = self._fields[path][1]
        return label.text() if not label.isHidden() else ""

    def _target(self, field: str | None) -> str | None:
        if field is None:
            return None
        parts = field.split(".")
        if parts[0] in ("tasks",) or field.startswith("backbone.ranks"):
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
        field = error_field(message) if message else None
        target = self._target(field)
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
            self._mark_task_cell(field, message)
        else:
            mark_invalid(widget, True)

    def _mark_task_cell(self, field: str, message: str) -> None:
        parts = field.split(".")
        columns = {"name": COL_NAME, "medmnist": COL_FILE, "kind": COL_KIND, "labels": COL_LABELS,
                   "images": COL_FILE, "label_names": COL_LABELS}
        if self.kind == SEGMENTATION:
            columns["labels"] = COL_FILE
        if parts[0] == "tasks" and len(parts) >= 2 and parts[1].isdigit():
            row = int(parts[1])
            col = columns.get(parts[2], COL_NAME) if len(parts) > 2 else COL_NAME
            self._mark_cell(row, col, message)
        elif field.startswith("backbone.ranks.") and len(parts) >= 3:
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
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        config = from_dict(Config, raw or {})
        config.resolve_paths(path.resolve().parent)
        self.set_mapping(config.to_dict(), note=f"Loaded from {path}")

    def save_yaml(self, path: str | Path) -> None:
        """Save the form as YAML through core.config (refused while invalid)."""
        config = self.validate_now()
        if config is None:
            raise ConfigError(f"cannot save an invalid configuration: {self.error}")
        save_config(config, path)

