"""The config sections of segmentation runs (`kind: segmentation`), with their defaults (the only place they
are set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import (
    BackboneBase,
    DataBase,
    TaskBase,
    TeacherBase,
    TrainConfig,
    at_least,
    choice,
    positive,
    resolve_path,
)
from core.errors import ConfigError

ARCHS = ("unet", "segresnet")  # MONAI UNet / SegResNet, 3D, for the foundation model and the backbone
INTENSITY_MODES = ("percentile", "ct_window")


def check_channels(loc: str, channels: list[int] | None) -> None:
    if channels is None:
        return
    if len(channels) < 2 or any(c < 2 for c in channels):
        raise ConfigError(f"needs at least two levels of >= 2 channels, got {channels}", loc)


@dataclass
class SegTaskConfig(TaskBase):
    """One segmentation task: image volumes with label maps (task-local label values 1..K, 0 background)."""

    images: str | list[str] | None = None  # a folder of volumes (sorted by name) or a list of files/DICOM folders
    labels: str | list[str] | None = None  # a folder or list of label maps, paired with `images` in order
    label_names: dict[int, str] | None = None  # {1: grey matter, 2: ...}; 0 is always the background
    intensity: IntensityConfig | None = None  # this task's intensity normalisation (CT and MR tasks in one run)

    def validate(self, where: str) -> None:
        super().validate(where)
        for key in ("images", "labels"):
            if not getattr(self, key):
                raise ConfigError(f"task {self.name!r} needs {key} (a folder or a list of files)", f"{where}.{key}")
        if isinstance(self.images, list) and isinstance(self.labels, list) and len(self.images) != len(self.labels):
            raise ConfigError(f"{len(self.labels)} label maps for {len(self.images)} images", f"{where}.labels")
        if not self.label_names:
            raise ConfigError(f"task {self.name!r} needs its labels, e.g. {{1: tumour}}", f"{where}.label_names")
        values = sorted(self.label_names)
        if values != list(range(1, len(values) + 1)):
            raise ConfigError(f"label values must be 1..K without gaps, got {values}", f"{where}.label_names")
        names = [str(v) for v in self.label_names.values()]
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ConfigError(f"names must be unique and non-empty, got {names}", f"{where}.label_names")
        if self.intensity is not None:
            self.intensity.validate(f"{where}.intensity")

    def resolve_paths(self, base: Path) -> None:
        self.images = resolve_path(base, self.images)
        self.labels = resolve_path(base, self.labels)

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
    """Intensity normalisation of volumes to [0, 1]."""

    mode: str = "percentile"  # percentile: clip to the volume's [low, high] percentiles; ct_window: to [low, high]
    low: float = 0.5
    high: float = 99.5

    def validate(self, where: str = "data.intensity") -> None:
        choice(f"{where}.mode", self.mode, INTENSITY_MODES)
        if not self.high > self.low:
            raise ConfigError(f"high must be > low, got low={self.low} high={self.high}", where)
        if self.mode == "percentile" and not (0 <= self.low and self.high <= 100):
            raise ConfigError(f"percentiles must lie in [0, 100], got {self.low}, {self.high}", where)


@dataclass
class SegDataConfig(DataBase):
    spacing: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])  # target voxel size in mm (x, y, z)
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # training patch / sliding window (x, y, z)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    samples_per_volume: int = 16  # patches drawn per training volume (or part of a split volume) and epoch
    pos_neg_ratio: float = 2.0  # patches centred on a structure : patches centred anywhere
    # held out from training: this share of each task's volumes (tasks with >= 3 volumes), else of the
    # foreground cubes of about region_mm mm of its volumes (see core/kinds/segmentation/data.py)
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    region_mm: float = 24.0
    overlap: float = 0.25  # sliding-window overlap at evaluation and apply
    blend: str = "gaussian"  # gaussian | constant (sliding-window blending)

    def validate(self) -> None:
        super().validate()
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            raise ConfigError(f"must be three positive numbers (mm), got {self.spacing}", "data.spacing")
        if len(self.patch_size) != 3 or not all(p >= 16 and p % 8 == 0 for p in self.patch_size):
            raise ConfigError(f"must be three multiples of 8, each >= 16, got {self.patch_size}", "data.patch_size")
        self.intensity.validate()
        at_least("data.samples_per_volume", self.samples_per_volume, 1)
        at_least("data.pos_neg_ratio", self.pos_neg_ratio, 0)
        for name in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"must be in (0, 1), got {getattr(self, name)}", f"data.{name}")
        if not self.test_fraction + self.val_fraction < 1:
            raise ConfigError("test_fraction + val_fraction must leave data to train on", "data.val_fraction")
        positive("data.region_mm", self.region_mm)
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"must be in [0, 1), got {self.overlap}", "data.overlap")
        choice("data.blend", self.blend, ("gaussian", "constant"))


@dataclass
class SegTeacherConfig(TeacherBase):
    ARCHS = ARCHS

    arch: str = "unet"
    epochs: int = 4
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # UNet channels per level
    # (SegResNet: init_filters = channels[0], len(channels) levels)
    res_units: int = 0  # residual units per UNet block (0: plain conv blocks, 3x faster on CPU, as accurate here)

    def validate(self) -> None:
        super().validate()
        check_channels("teacher.channels", self.channels)
        at_least("teacher.res_units", self.res_units, 0)


@dataclass
class SegBackboneConfig(BackboneBase):
    ARCHS = ARCHS

    arch: str = "unet"
    rank: int = 2
    channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64])  # UNet channels per level
    decoder_rank_factor: int = 2  # decoder convs get this times the (encoder) rank
    res_units: int = 0  # residual units per UNet block

    def validate(self, task_names: list[str]) -> None:
        super().validate(task_names)
        check_channels("backbone.channels", self.channels)
        at_least("backbone.res_units", self.res_units, 0)
        at_least("backbone.decoder_rank_factor", self.decoder_rank_factor, 1)


@dataclass
class SegTrainConfig(TrainConfig):
    epochs: int = 4
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 0.003
    weight_decay: float = 1e-5
    warmup_epochs: float = 0.0
    temperature: float = 1.0
    log_every: int = 5


SECTIONS = {"task": SegTaskConfig, "data": SegDataConfig, "teacher": SegTeacherConfig,
            "backbone": SegBackboneConfig, "train": SegTrainConfig}
