"""Run configuration: dataclasses with every default in one place, loaded from and saved to YAML.

`load_config(path, overrides)` reads YAML, applies `--set key=value` overrides (dotted keys, list
indices as numbers: `tasks.0.medmnist=data/x.npz`), and validates every field; a bad value raises
`ConfigError` naming the field (`train.epochs: must be >= 1, got -3`).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError

TEACHER_ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121")
BACKBONE_ARCHS = ("compact", "resnet10", "resnet18", "resnet34")
SEG_ARCHS = ("unet", "segresnet")  # segmentation teachers and backbones (MONAI UNet / SegResNet, 3D)
KINDS = ("classification", "segmentation")
INTENSITY_MODES = ("percentile", "ct_window")
# Defaults that differ for `kind: segmentation` (applied to the raw mapping before validation, so a value the
# user gives always wins and classification configs are untouched).
SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {"arch": "unet", "channels": [16, 32, 64, 128], "epochs": 4},
    "backbone": {"arch": "unet", "channels": [8, 16, 32, 64], "rank": 2},
    "train": {"epochs": 4, "batch_size": 4, "optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-5,
              "warmup_epochs": 0.0, "temperature": 1.0, "log_every": 5},
}


@dataclass
class TaskConfig:
    """One task: a dataset with its own label space."""

    name: str = ""
    medmnist: str | None = None  # path to a MedMNIST-format .npz
    kind: str = "auto"  # auto | multiclass | multilabel (auto: multilabel when labels are (N, C>1) 0/1)
    labels: list[str] | None = None  # class names; default "0", "1", ...

    def validate(self, where: str) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"{where}.name: a task needs a non-empty name")
        if any(c in self.name for c in "/\\:*?\"<>| "):
            raise ConfigError(f"{where}.name: {self.name!r} must not contain spaces or path characters")
        if self.medmnist is None:
            raise ConfigError(f"{where}.medmnist: task {self.name!r} needs a MedMNIST .npz file")
        _choice(f"{where}.kind", self.kind, ("auto", "multiclass", "multilabel"))


@dataclass
class SegTaskConfig:
    """One segmentation task: image volumes with label maps (task-local label values 1..K, 0 background)."""

    name: str = ""
    images: str | list[str] | None = None  # a folder of volumes (sorted by name) or a list of files/DICOM folders
    labels: str | list[str] | None = None  # a folder or list of label maps, paired with `images` in order
    label_names: dict[int, str] | None = None  # {1: grey matter, 2: ...}; 0 is always the background

    def validate(self, where: str) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"{where}.name: a task needs a non-empty name")
        if any(c in self.name for c in "/\\:*?\"<>| "):
            raise ConfigError(f"{where}.name: {self.name!r} must not contain spaces or path characters")
        for key in ("images", "labels"):
            value = getattr(self, key)
            if not value:
                raise ConfigError(f"{where}.{key}: task {self.name!r} needs {key} (a folder or a list of files)")
        if isinstance(self.images, list) and isinstance(self.labels, list) and len(self.images) != len(self.labels):
            raise ConfigError(f"{where}.labels: {len(self.labels)} label maps for {len(self.images)} images")
        if not self.label_names:
            raise ConfigError(f"{where}.label_names: task {self.name!r} needs its labels, e.g. {{1: tumour}}")
        values = sorted(self.label_names)
        if values != list(range(1, len(values) + 1)):
            raise ConfigError(f"{where}.label_names: label values must be 1..K without gaps, got {values}")
        names = [str(v) for v in self.label_names.values()]
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ConfigError(f"{where}.label_names: names must be unique and non-empty, got {names}")

    @property
    def num_labels(self) -> int:
        """Structures of the task (the background not counted)."""
        return len(self.label_names or {})

    @property
    def class_names(self) -> list[str]:
        """["background", structure 1, ...]: the task-local classes (index = label value)."""
        return ["background"] + [str(self.label_names[k]) for k in sorted(self.label_names or {})]


@dataclass
class IntensityConfig:
    """Intensity normalisation of segmentation volumes to [0, 1]."""

    mode: str = "percentile"  # percentile: clip to the volume's [low, high] percentiles; ct_window: to [low, high]
    low: float = 0.5
    high: float = 99.5

    def validate(self) -> None:
        _choice("data.intensity.mode", self.mode, INTENSITY_MODES)
        if not self.high > self.low:
            raise ConfigError(f"data.intensity: high must be > low, got low={self.low} high={self.high}")
        if self.mode == "percentile" and not (0 <= self.low and self.high <= 100):
            raise ConfigError(f"data.intensity: percentiles must lie in [0, 100], got {self.low}, {self.high}")


@dataclass
class DataConfig:
    image_size: int = 28  # every task is resized to image_size x image_size (x image_size in 3D)
    in_channels: int | None = None  # None: 3 if any task is RGB, else 1 (grey images are repeated)
    sampling: str = "natural"  # natural | balanced (each task equally likely in a batch)
    augment: bool = True
    max_train_per_task: int | None = None  # cap for quick runs
    max_eval_per_task: int | None = None
    num_workers: int = 0
    # MedMNIST images: "auto" keeps a split in RAM when its prepared tensors fit in STREAM_AUTO_BYTES,
    # else memory-maps the stored images and prepares each batch ("on" / "off" force one or the other)
    stream: str = "auto"
    # segmentation only
    spacing: list[float] = field(default_factory=lambda: [2.0, 2.0, 2.0])  # target voxel size in mm (x, y, z)
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # training patch / sliding window (x, y, z)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    samples_per_volume: int = 16  # patches drawn per training volume (or part of a split volume) and epoch
    pos_neg_ratio: float = 2.0  # patches centred on a structure : patches centred anywhere
    holdout: float = 0.2  # evaluation: this fraction of each task's volumes, or a slab of a single volume
    holdout_axis: int = 2  # the axis of the held-out slab (RAS canonical: 0 x, 1 y, 2 z)
    overlap: float = 0.25  # sliding-window overlap at evaluation and apply
    blend: str = "gaussian"  # gaussian | constant (sliding-window blending)

    def validate(self) -> None:
        self.validate_common()

    def validate_segmentation(self) -> None:
        self.validate_common()
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            raise ConfigError(f"data.spacing: must be three positive numbers (mm), got {self.spacing}")
        if len(self.patch_size) != 3 or not all(p >= 16 and p % 8 == 0 for p in self.patch_size):
            raise ConfigError(f"data.patch_size: must be three multiples of 8, each >= 16, got {self.patch_size}")
        self.intensity.validate()
        _at_least("data.samples_per_volume", self.samples_per_volume, 1)
        _at_least("data.pos_neg_ratio", self.pos_neg_ratio, 0)
        if not 0 < self.holdout < 1:
            raise ConfigError(f"data.holdout: must be in (0, 1), got {self.holdout}")
        _choice("data.holdout_axis", self.holdout_axis, (0, 1, 2))
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"data.overlap: must be in [0, 1), got {self.overlap}")
        _choice("data.blend", self.blend, ("gaussian", "constant"))

    def validate_common(self) -> None:
        _choice("data.stream", self.stream, ("auto", "on", "off"))
        _at_least("data.image_size", self.image_size, 8)
        if self.in_channels is not None and self.in_channels not in (1, 3):
            raise ConfigError(f"data.in_channels: must be 1, 3 or null, got {self.in_channels}")
        _choice("data.sampling", self.sampling, ("natural", "balanced"))
        for name in ("max_train_per_task", "max_eval_per_task"):
            if getattr(self, name) is not None:
                _at_least(f"data.{name}", getattr(self, name), 1)
        _at_least("data.num_workers", self.num_workers, 0)


@dataclass
class TeacherConfig:
    """The foundation model: pre-trained here on all tasks, or loaded from `checkpoint`."""

    arch: str = "resnet50"
    checkpoint: str | None = None
    epochs: int = 2
    lr: float | None = None  # None: train.lr
    batch_size: int | None = None  # None: train.batch_size
    channels: list[int] | None = None  # segmentation: UNet channels per level (SegResNet: init_filters = first)

    def validate(self, kind: str = "classification") -> None:
        _choice("teacher.arch", self.arch, SEG_ARCHS if kind == "segmentation" else TEACHER_ARCHS)
        _check_channels("teacher.channels", self.channels)
        _at_least("teacher.epochs", self.epochs, 0)
        if self.lr is not None:
            _positive("teacher.lr", self.lr)
        if self.batch_size is not None:
            _at_least("teacher.batch_size", self.batch_size, 1)


@dataclass
class BackboneConfig:
    """The common backbone and its low-rank task experts."""

    arch: str = "compact"
    rank: int = 4
    alpha: float = 16.0
    ranks: dict[str, int] | None = None  # per-task rank overrides: {task name: rank}
    form: str = "factorized"  # factorized | paper
    channels: list[int] | None = None  # segmentation: UNet channels per level
    decoder_rank_factor: int = 2  # segmentation: decoder convs get this times the (encoder) rank

    def validate(self, task_names: list[str], kind: str = "classification") -> None:
        _choice("backbone.arch", self.arch, SEG_ARCHS if kind == "segmentation" else BACKBONE_ARCHS)
        _check_channels("backbone.channels", self.channels)
        _at_least("backbone.decoder_rank_factor", self.decoder_rank_factor, 1)
        _at_least("backbone.rank", self.rank, 1)
        _positive("backbone.alpha", self.alpha)
        _choice("backbone.form", self.form, ("factorized", "paper"))
        for task, r in (self.ranks or {}).items():
            if task not in task_names:
                raise ConfigError(f"backbone.ranks.{task}: no task named {task!r} (tasks: {task_names})")
            _at_least(f"backbone.ranks.{task}", r, 1)


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.2
    schedule: str = "cosine"  # cosine | constant
    kd_weight: float = 1.0  # beta
    temperature: float = 4.0  # tau
    kd_target: str = "auto"  # auto | features | logits (auto: logits when the teacher has task heads)
    grad_clip: float | None = 5.0
    amp: bool = True  # bf16/fp16 autocast on CUDA only
    log_every: int = 10

    def validate(self) -> None:
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 2)
        _choice("train.optimizer", self.optimizer, ("sgd", "adamw"))
        _positive("train.lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"train.momentum: must be in [0, 1), got {self.momentum}")
        _at_least("train.weight_decay", self.weight_decay, 0)
        _at_least("train.warmup_epochs", self.warmup_epochs, 0)
        _choice("train.schedule", self.schedule, ("cosine", "constant"))
        _at_least("train.kd_weight", self.kd_weight, 0)
        _positive("train.temperature", self.temperature)
        _choice("train.kd_target", self.kd_target, ("auto", "features", "logits"))
        if self.grad_clip is not None:
            _positive("train.grad_clip", self.grad_clip)
        _at_least("train.log_every", self.log_every, 1)


@dataclass
class Config:
    name: str = "run"
    kind: str = "classification"  # classification | segmentation (3D volumes with label maps)
    tasks: list[TaskConfig | SegTaskConfig] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0

    def validate(self) -> Config:
        if not self.name or any(c in self.name for c in "/\\"):
            raise ConfigError(f"name: {self.name!r} must be a non-empty name without slashes")
        if not self.tasks:
            raise ConfigError("tasks: at least one task is needed")
        _choice("kind", self.kind, KINDS)
        task_type = SegTaskConfig if self.kind == "segmentation" else TaskConfig
        seen: set[str] = set()
        for i, task in enumerate(self.tasks):
            if not isinstance(task, task_type):
                raise ConfigError(f"tasks.{i}: a {self.kind} run needs {task_type.__name__} tasks")
            task.validate(f"tasks.{i}")
            if task.name in seen:
                raise ConfigError(f"tasks.{i}.name: task name {task.name!r} is used twice")
            seen.add(task.name)
        if self.kind == "segmentation":
            self.data.validate_segmentation()
        else:
            self.data.validate()
        self.teacher.validate(self.kind)
        self.backbone.validate([t.name for t in self.tasks], self.kind)
        self.train.validate()
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def rank_of(self, task: str) -> int:
        return (self.backbone.ranks or {}).get(task, self.backbone.rank)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolve_paths(self, base: Path) -> Config:
        """Make relative data/checkpoint paths absolute against `base` (the config file's folder)."""
        for task in self.tasks:
            if isinstance(task, SegTaskConfig):
                task.images = _resolve(base, task.images)
                task.labels = _resolve(base, task.labels)
                continue
            if task.medmnist is not None and not Path(task.medmnist).expanduser().is_absolute():
                task.medmnist = str((base / task.medmnist).resolve())
        if self.teacher.checkpoint and not Path(self.teacher.checkpoint).expanduser().is_absolute():
            self.teacher.checkpoint = str((base / self.teacher.checkpoint).resolve())
        return self


def _resolve(base: Path, value: str | list[str] | None) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [_resolve(base, v) for v in value]
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _check_channels(name: str, channels: list[int] | None) -> None:
    if channels is None:
        return
    if len(channels) < 2 or any(c < 2 for c in channels):
        raise ConfigError(f"{name}: needs at least two levels of >= 2 channels, got {channels}")


def _choice(name: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ConfigError(f"{name}: must be one of {', '.join(map(str, options))}; got {value!r}")


def _at_least(name: str, value: Any, low: float) -> None:
    if value < low:
        raise ConfigError(f"{name}: must be >= {low}, got {value}")


def _positive(name: str, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint, building nested dataclasses; raise ConfigError on mismatch."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_t, val_t = typing.get_args(hint)
        return {_coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    prefix = f"{where}." if where else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    if cls is Config:  # the task type follows the run kind
        kind = data.get("kind", "classification")
        hints["tasks"] = list[SegTaskConfig] if kind == "segmentation" else list[TaskConfig]
        if kind == "segmentation":
            data = _with_defaults(data, SEGMENTATION_DEFAULTS)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known keys: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _with_defaults(data: dict, defaults: dict[str, dict[str, Any]]) -> dict:
    """A copy of `data` with each section's missing keys taken from `defaults`."""
    data = dict(data)
    for section, values in defaults.items():
        given = data.get(section)
        if given is None:
            given = {}
        if isinstance(given, dict):
            data[section] = {**copy.deepcopy(values), **given}
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `key.path=value` override to a raw config mapping (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), create=True)
    last = parts[-1]
    if isinstance(node, list):
        idx = _index(last, key, len(node))
        node[idx] = value
    else:
        node[last] = value


def _index(part: str, key: str, length: int) -> int:
    if not part.isdigit() or int(part) >= length:
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {length}")
    return int(part)


def _child(node: Any, part: str, key: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(part, key, len(node))]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: cannot set a field inside a {type(node).__name__}")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override and validate a config from a YAML file (or an already parsed mapping)."""
    base = Path.cwd()
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        base = path.resolve().parent
    if not isinstance(raw, dict | None):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(raw).__name__}")
    raw = copy.deepcopy(dict(raw or {}))
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        config = from_dict(Config, raw)
        return config.resolve_paths(base).validate()
    except ConfigError as exc:
        if isinstance(source, dict):
            raise
        raise ConfigError(f"{source}: {exc}") from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
