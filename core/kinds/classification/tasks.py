"""Task definitions: what each configured task is (kind, classes, label names, geometry).

`build_task_specs(config)` inspects every task's MedMNIST file once and resolves `kind: auto`, the
class count and the label names; the resulting `TaskSpec`s travel with a run (checkpoint, summary,
exported bundles) through `to_dict` / `from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from core.config import Config
from core.errors import ConfigError
from core.kinds.classification.medmnist import inspect_medmnist

KINDS = ("multiclass", "multilabel")


@dataclass
class TaskSpec:
    """One resolved task.

    kind: "multiclass" (one class per sample, softmax, accuracy) or "multilabel" (independent 0/1
    labels, sigmoid, AUC); num_classes: classes or label columns; label_names: one per class;
    spatial_dims: 2 or 3; rgb: the file holds colour images; source: the data file.
    """

    name: str
    kind: str
    num_classes: int
    label_names: list[str]
    spatial_dims: int
    rgb: bool
    source: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.label_names) != self.num_classes:
            raise ValueError(
                f"task {self.name!r}: {len(self.label_names)} label names for {self.num_classes} classes"
            )

    @property
    def metric(self) -> str:
        """The task's headline metric: "acc" for multi-class, "auc" (mean over labels) for multi-label."""
        return "acc" if self.kind == "multiclass" else "auc"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable mapping."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Inverse of `to_dict` (unknown keys are ignored, so older/newer files still load)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["label_names"] = [str(v) for v in values.get("label_names", [])]
        values["num_classes"] = int(values["num_classes"])
        values["spatial_dims"] = int(values["spatial_dims"])
        values["rgb"] = bool(values["rgb"])
        return cls(**values)


def build_task_specs(config: Config) -> list[TaskSpec]:
    """Resolve every task of `config.tasks` from its MedMNIST file.

    - kind "auto" becomes the file's kind; an explicit kind must match the file (ConfigError naming
      `tasks.i.kind`).
    - Class count: the MedMNIST table for known flags; for other files the largest label + 1, or the
      number of configured label names when that is larger (classes absent from the file).
    - Configured `labels` give the names and must match the class count (ConfigError naming
      `tasks.i.labels`); the default names are "0", "1", ...
    - All tasks must have the same spatial_dims (ConfigError naming the odd task's file).
    File problems raise DataError naming the file.
    """
    specs: list[TaskSpec] = []
    for i, task in enumerate(config.tasks):
        where = f"tasks.{i}"
        if task.medmnist is None:
            raise ConfigError(f"task {task.name!r} needs a MedMNIST .npz file", f"{where}.medmnist")
        info = inspect_medmnist(task.medmnist)
        if task.kind != "auto" and task.kind != info.kind:
            raise ConfigError(
                f"{task.kind} given, but {task.medmnist} holds {info.kind} labels"
                f" ({info.num_classes} {'columns' if info.kind == 'multilabel' else 'classes'})", f"{where}.kind"
            )
        num_classes = info.num_classes
        if task.labels is not None:
            given = len(task.labels)
            flexible = info.kind == "multiclass" and info.flag is None
            if flexible and given > num_classes:
                num_classes = given  # classes that happen to be absent from the file
            elif flexible and given < num_classes:  # the file's largest label has no name
                raise ConfigError(
                    f"{given} names given, but {task.medmnist} has {num_classes} classes: label "
                    f"{num_classes - 1} is out of range 0..{given - 1}", f"{where}.labels"
                )
            elif given != num_classes:
                what = "label columns" if info.kind == "multilabel" else "classes"
                raise ConfigError(f"{given} names given, but {task.medmnist} has {num_classes} {what}",
                                  f"{where}.labels")
            names = [str(name) for name in task.labels]
        else:
            names = [str(c) for c in range(num_classes)]
        if len(set(names)) != len(names):
            raise ConfigError(f"label names must be unique, got {names}", f"{where}.labels")
        spec = TaskSpec(
            name=task.name,
            kind=info.kind,
            num_classes=num_classes,
            label_names=names,
            spatial_dims=info.spatial_dims,
            rgb=info.rgb,
            source=str(task.medmnist),
        )
        if specs and spec.spatial_dims != specs[0].spatial_dims:
            raise ConfigError(
                f"{task.medmnist} holds {spec.spatial_dims}D images but tasks.0 ({specs[0].name}) is "
                f"{specs[0].spatial_dims}D; all tasks must have the same spatial dims", f"{where}.medmnist"
            )
        specs.append(spec)
    return specs


def resolve_in_channels(config: Config, specs: list[TaskSpec]) -> int:
    """The network's input channels: `data.in_channels` when set, else 3 if any task is RGB, else 1."""
    if config.data.in_channels is not None:
        return int(config.data.in_channels)
    return 3 if any(spec.rgb for spec in specs) else 1
