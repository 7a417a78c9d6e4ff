"""The config sections of segmentation runs (`kind: segmentation`), with their defaults (the only place they
are set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    labels: str | list[str] | None = None  # a folder or list of label maps, paired with `images` in order;
    # none: a label-free task, learnt from the foundation model alone (needs teacher_labels)
    label_names: dict[int, str] | None = None  # {1: grey matter, 2: ...}; 0 is always the background
    intensity: IntensityConfig | None = None  # this task's intensity normalisation (CT and MR tasks in one run)
    # the foundation model's output channels this task segments (names from its metadata, or indices), in the
    # order of the expert's labels 1..K (bundle / TorchScript foundation models)
    teacher_labels: list[str | int] | None = None
    # DICOM SEG codes of chosen labels, e.g. {1: {category: [SCT, 123037004, Anatomical Structure], type: [SCT,
    # 10200004, Liver]}}; the others are coded by name (core/io/dicom_seg.py: STRUCTURES) or as generic "Tissue"
    label_codes: dict[int, Any] | None = None

    @property
    def label_free(self) -> bool:
        return not self.labels

    def validate(self, where: str) -> None:
        super().validate(where)
        if not self.images:
            raise ConfigError(f"task {self.name!r} needs images (a folder or a list of files)", f"{where}.images")
        if self.label_free and not self.teacher_labels:
            raise ConfigError(f"task {self.name!r} needs labels (a folder or a list of label maps), or "
                              f"teacher_labels to learn from a bundle or TorchScript foundation model alone",
                              f"{where}.labels")
        if isinstance(self.images, list) and isinstance(self.labels, list) and len(self.images) != len(self.labels):
            raise ConfigError(f"{len(self.labels)} label maps for {len(self.images)} images", f"{where}.labels")
        if self.teacher_labels is not None and not self.teacher_labels:
            raise ConfigError("must name at least one channel of the foundation model", f"{where}.teacher_labels")
        if self.num_labels:  # else the missing labels are the problem (below)
            check_label_codes(f"{where}.label_codes", self.label_codes, self.num_labels)
        if not self.label_names:
            if self.teacher_labels:  # named after the foundation model's channels once it is loaded
                return
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
        return len(self.label_names or {}) or len(self.teacher_labels or [])

    @property
    def class_names(self) -> list[str]:
        """["background", structure 1, ...]: the task-local classes (index = label value)."""
        return ["background"] + [str(self.label_names[k]) for k in sorted(self.label_names or {})]


LABEL_CODES_EXAMPLE = "{category: [SCT, 123037004, Anatomical Structure], type: [SCT, 10200004, Liver]}"


def check_label_codes(where: str, codes: dict[int, Any] | None, num_labels: int) -> None:
    """task.label_codes: {label value 1..K: {category: [scheme, value, meaning], type: [scheme, value, meaning]}}
    (scheme at most 16 characters, meaning at most 64, as DICOM allows)."""
    for value, entry in (codes or {}).items():
        if not 1 <= value <= num_labels:
            raise ConfigError(f"{value} is not a label value of the task (1..{num_labels})", f"{where}.{value}")
        if not isinstance(entry, dict) or set(entry) != {"category", "type"}:
            raise ConfigError(f"expected {LABEL_CODES_EXAMPLE}, got {entry!r}", f"{where}.{value}")
        for part in ("category", "type"):
            code = entry[part]
            parts = code if isinstance(code, list) else []
            texts = [str(v).strip() for v in parts if isinstance(v, str | int) and not isinstance(v, bool)]
            if len(parts) != 3 or len(texts) != 3 or not all(texts) or len(texts[0]) > 16 or len(texts[2]) > 64:
                raise ConfigError(f"expected [coding scheme, code value, code meaning] such as [SCT, 10200004, "
                                  f"Liver], got {code!r}", f"{where}.{value}.{part}")


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
    # training volumes: "on" preprocesses each volume once into the volume cache on disk and reads only the patches
    # it needs (memory-mapped); "off" holds every prepared volume in RAM; "auto": on when the prepared volumes
    # would take more than STREAM_AUTO_BYTES of RAM (core/kinds/segmentation/cache.py)
    stream: str = "auto"
    cache_dir: str | None = None  # the volume cache folder (None: $LORKD_CACHE/volumes, else
    # ~/.cache/lorkd-studio/volumes)

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
        choice("data.stream", self.stream, ("auto", "on", "off"))
        if self.cache_dir is not None and not str(self.cache_dir).strip():
            raise ConfigError("must name a folder, or be left out (the default cache folder)", "data.cache_dir")


@dataclass
class SegTeacherConfig(TeacherBase):
    """The foundation model: ours (pre-trained in the run, or `checkpoint`), or the user's own: a MONAI bundle
    (`bundle`: folder or zip) or a TorchScript file (`torchscript`). For those, the fields below the line override
    what a bundle says about how the model sees a volume (a TorchScript file says nothing: the run's data.spacing,
    data.intensity and data.patch_size are the defaults)."""

    ARCHS = ARCHS

    arch: str = "unet"
    epochs: int = 4
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # UNet channels per level
    # (SegResNet: init_filters = channels[0], len(channels) levels)
    res_units: int = 0  # residual units per UNet block (0: plain conv blocks, 3x faster on CPU, as accurate here)
    bundle: str | None = None  # a MONAI bundle folder or zip (configs/inference.json + models/model.pt or .ts)
    torchscript: str | None = None  # a TorchScript file of a 3D segmentation network
    trust_bundle: bool = False  # build a bundle whose config names code outside torch/monai/numpy (--trust-bundle)
    # ---- how the user's foundation model sees a volume (None: the bundle's own, else the defaults above)
    labels: list[str] | None = None  # names of its output channels 0..C-1
    spacing: list[float] | None = None  # mm (x, y, z)
    intensity: dict[str, Any] | None = None  # {mode: range, a_min, a_max, b_min, b_max, clip} | {mode: zscore,
    # nonzero} | {mode: percentile, low, high} | {mode: ct_window, low, high} | {mode: minmax} | {mode: none}
    orientation: str | None = None  # axcodes such as RAS or LPS; "none": the file's own index order
    roi_size: list[int] | None = None  # sliding window
    overlap: float | None = None
    activation: str | None = None  # softmax | sigmoid

    @property
    def source(self) -> str | None:
        return self.checkpoint or self.bundle or self.torchscript

    @property
    def foreign(self) -> bool:
        """Whether the foundation model is the user's own bundle or TorchScript file."""
        return bool(self.bundle or self.torchscript)

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        self.bundle = resolve_path(base, self.bundle)
        self.torchscript = resolve_path(base, self.torchscript)

    def validate(self) -> None:
        super().validate()
        check_channels("teacher.channels", self.channels)
        at_least("teacher.res_units", self.res_units, 0)
        given = [k for k in ("checkpoint", "bundle", "torchscript") if getattr(self, k)]
        if len(given) > 1:
            raise ConfigError(f"give one foundation model, not {' and '.join(given)}", f"teacher.{given[1]}")
        if self.spacing is not None and (len(self.spacing) != 3 or not all(v > 0 for v in self.spacing)):
            raise ConfigError(f"must be three positive numbers (mm), got {self.spacing}", "teacher.spacing")
        if self.roi_size is not None and (len(self.roi_size) != 3 or not all(v >= 1 for v in self.roi_size)):
            raise ConfigError(f"must be three positive sizes, got {self.roi_size}", "teacher.roi_size")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ConfigError(f"must be in [0, 1), got {self.overlap}", "teacher.overlap")
        if self.activation is not None:
            choice("teacher.activation", self.activation, ("softmax", "sigmoid"))
        if self.intensity is not None:
            check_foreign_intensity(self.intensity)
        if self.labels is not None and (len(set(self.labels)) != len(self.labels) or not all(self.labels)):
            raise ConfigError(f"names must be unique and non-empty, got {self.labels}", "teacher.labels")


FOREIGN_INTENSITY = {"range": ("a_min", "a_max"), "percentile": ("low", "high"), "ct_window": ("low", "high"),
                     "zscore": (), "minmax": (), "none": ()}
INTENSITY_KEYS = {"mode", "a_min", "a_max", "b_min", "b_max", "clip", "low", "high", "nonzero"}


def check_foreign_intensity(spec: dict[str, Any]) -> None:
    """teacher.intensity: a mode of `core.preprocess.volume.normalise_intensity` and the numbers it needs."""
    mode = spec.get("mode")
    choice("teacher.intensity.mode", mode, tuple(FOREIGN_INTENSITY))
    unknown = sorted(set(spec) - INTENSITY_KEYS)
    if unknown:
        raise ConfigError(f"unknown key (known keys: {', '.join(sorted(INTENSITY_KEYS))})",
                          f"teacher.intensity.{unknown[0]}")
    for key in FOREIGN_INTENSITY[mode]:
        if not isinstance(spec.get(key), int | float) or isinstance(spec.get(key), bool):
            raise ConfigError(f"mode {mode} needs a number here", f"teacher.intensity.{key}")
    for key in ("b_min", "b_max"):
        if key in spec and (not isinstance(spec[key], int | float) or isinstance(spec[key], bool)):
            raise ConfigError("must be a number", f"teacher.intensity.{key}")


@dataclass
class SegBackboneConfig(BackboneBase):
    """The backbone: our UNet / SegResNet (`channels`), or `same`: the architecture of a bundle's foundation model
    (UNet, BasicUNet, SegResNet, DynUNet) at `width` times its channels."""

    ARCHS = (*ARCHS, "same")

    arch: str = "unet"
    width: float = 0.25  # arch: same: the student's channels are this share of the foundation model's
    rank: int = 2
    channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64])  # UNet channels per level
    decoder_rank_factor: int = 2  # decoder convs get this times the (encoder) rank
    res_units: int = 0  # residual units per UNet block

    def validate(self, task_names: list[str]) -> None:
        super().validate(task_names)
        check_channels("backbone.channels", self.channels)
        at_least("backbone.res_units", self.res_units, 0)
        at_least("backbone.decoder_rank_factor", self.decoder_rank_factor, 1)
        if not 0 < self.width <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.width}", "backbone.width")


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
