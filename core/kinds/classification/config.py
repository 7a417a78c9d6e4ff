"""The config sections of classification runs, with their defaults (the only place they are set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.config import BackboneBase, DataBase, TaskBase, TeacherBase, TrainConfig, at_least, choice, resolve_path
from core.errors import ConfigError

TEACHER_ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121")
BACKBONE_ARCHS = ("compact", "compact_small", "resnet10", "resnet18", "resnet34")
TASK_KINDS = ("auto", "multiclass", "multilabel")


@dataclass
class TaskConfig(TaskBase):
    """One task: a MedMNIST-format dataset with its own label space."""

    medmnist: str | None = None  # path to a MedMNIST-format .npz
    kind: str = "auto"  # auto | multiclass | multilabel (auto: multilabel when labels are (N, C>1) 0/1)
    labels: list[str] | None = None  # class names; default "0", "1", ...

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.medmnist is None:
            raise ConfigError(f"task {self.name!r} needs a MedMNIST .npz file", f"{where}.medmnist")
        choice(f"{where}.kind", self.kind, TASK_KINDS)

    def resolve_paths(self, base: Path) -> None:
        self.medmnist = resolve_path(base, self.medmnist)


@dataclass
class DataConfig(DataBase):
    image_size: int = 28  # every task is resized to image_size x image_size (x image_size in 3D)
    in_channels: int | None = None  # None: 3 if any task is RGB, else 1 (grey images are repeated)
    max_train_per_task: int | None = None  # cap for quick runs
    max_eval_per_task: int | None = None
    # MedMNIST images: "auto" keeps a split in RAM when its prepared tensors fit in STREAM_AUTO_BYTES,
    # else memory-maps the stored images and prepares each batch ("on" / "off" force one or the other)
    stream: str = "auto"

    def validate(self) -> None:
        super().validate()
        choice("data.stream", self.stream, ("auto", "on", "off"))
        at_least("data.image_size", self.image_size, 8)
        if self.in_channels is not None and self.in_channels not in (1, 3):
            raise ConfigError(f"must be 1, 3 or null, got {self.in_channels}", "data.in_channels")
        for name in ("max_train_per_task", "max_eval_per_task"):
            if getattr(self, name) is not None:
                at_least(f"data.{name}", getattr(self, name), 1)


@dataclass
class TeacherConfig(TeacherBase):
    ARCHS = TEACHER_ARCHS

    arch: str = "resnet50"


@dataclass
class BackboneConfig(BackboneBase):
    ARCHS = BACKBONE_ARCHS

    arch: str = "compact"


SECTIONS = {"task": TaskConfig, "data": DataConfig, "teacher": TeacherConfig, "backbone": BackboneConfig,
            "train": TrainConfig}
