"""The task-kind interface: everything that differs between one kind of task and another.

The pipeline (`core.train.pipeline`: foundation -> decompose -> evaluate -> export), the CLI and the app are
written once against `TaskKind`; a kind is one package under `core/kinds/` that subclasses it and is registered
in `core/kinds/__init__.py`. What a kind owns:

- config: its task dataclass and its `data`/`teacher`/`backbone`/`train` sections with their defaults
  (`sections`), and checks that span sections (`validate`);
- data: `open_data` reads and preprocesses every task once and returns a `RunData` (tasks, training dataset laid
  out by task for `core.data.sampling`, what evaluation needs);
- models: the foundation model (`new_teacher`, `load_teacher`, `save_teacher`) and the backbone with its experts
  (`new_student`), both multi-task networks whose forward is `(x, task_ids) -> (features | None, per-task
  logits)` (`MultiTaskOutput`); `expert_model` merges one task's expert into a standalone network;
- losses: `objective` gives one task's summed loss (supervised, plus distillation when asked);
- evaluation: `evaluate` gives per-task metric dicts of the teacher or the student on a split;
- export and apply: `export` writes one task's bundle, `load_bundle` reads one back, `apply` runs one on an input
  file (what `lorkd apply` and the app call); `result` says what applying gives ("scores" or "label_map") and
  `viewer_input` what the app feeds it ("slice": the slice on screen, "volume": the whole volume);
- demo: `build_demo` writes the kind's embedded demo data and returns its config mapping.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from core.config import Config
from core.data.sampling import TaskLayout
from core.distributed import SINGLE, Dist
from core.errors import ConfigError, LorkdError

Warn = Callable[[str], None]
Progress = Callable[[float, str], None]


@dataclass
class TaskInfo:
    """What the pipeline, the summary and the app need to know of one resolved task.

    kind: the task's own kind as reported in summaries (e.g. "multiclass", "multilabel");
    labels: class names in output order (label maps: the background first); metric: the headline metric."""

    name: str
    kind: str
    labels: list[str]
    metric: str
    source: str = ""
    higher_is_better: bool = True
    near_chance: float | None = None  # an expert whose headline metric is at or below this is flagged near chance

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass
class TaskScores:
    """One model's test results on one task, computed through the deployed path (what `lorkd apply` gives).

    metrics: over all test cases (headline and others); per_case: one dict per test case ("case": its name, then
    metric values); headline(indices): the headline metric recomputed on a subset of the cases (indices may
    repeat: the paired bootstrap resamples cases); description: what the test cases are, in words."""

    metrics: dict[str, float]
    per_case: list[dict[str, Any]]
    headline: Callable[[Any], float]
    description: str = ""

    @property
    def cases(self) -> int:
        return len(self.per_case)


@dataclass
class RunData:
    """A run's tasks and data, built once by the kind (`open_data`) before anything is written.

    train_set: the mixed-task training dataset (tasks laid out contiguously, `core.data.sampling.TaskLayout`);
    input_shape: one network input (batch 1), for MAC counts; spatial_dims: 2 or 3 (sets the memory layout);
    has_validation: whether `evaluate(..., "val")` is possible (a per-epoch validation); extra: the kind's own
    (held-out cases, specs, channel slices, ...)."""

    tasks: list[TaskInfo]
    train_set: TaskLayout
    input_shape: tuple[int, ...]
    spatial_dims: int
    has_validation: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


@dataclass
class TaskBatch:
    """One task's share of a batch, for `TaskKind.objective`: the model's logits (and pooled features where the
    kind has them) for the task's samples, their label rows, and the teacher's outputs for the same samples when
    distilling."""

    task: int
    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None


@dataclass
class Distillation:
    """The distillation term of the decomposition loss: beta * tau^2 * KL toward the teacher's `target`
    ("logits": the teacher's outputs for the task; "features": pooled features through `projector`)."""

    beta: float
    temperature: float
    target: str
    projector: nn.Module | None = None


@dataclass
class RunContext:
    """What a kind's evaluation sees of a run: its models, data, device and the stop check."""

    config: Config
    data: RunData
    teacher: nn.Module
    student: nn.Module
    device: torch.device
    dist: Dist = SINGLE
    check: Callable[[], None] | None = None  # raises to stop (the run's Control.checkpoint)


@dataclass
class TaskRow:
    """One task as the app's task table shows it (Qt-free): name, what the source cell shows, the task's own kind
    ("Kind" column), its label names and the kind's source data kept as is (paths the cell only summarises)."""

    name: str
    source: str
    subkind: str
    labels: list[str]
    data: Any = None
    source_editable: bool = True


@dataclass(frozen=True)
class TaskForm:
    """How the app's setup form shows a kind's tasks. `subkinds`: the choices of the Kind column (one choice: fixed);
    `add_dialog`: "files" (one task per chosen file, `file_filter`) or "folder_pair" (a folder of images and a
    folder of label maps); `columns`: task config field -> table column ("source", "subkind", "labels");
    `image_size`: whether `data.image_size` applies."""

    source_header: str
    source_tip: str
    labels_tip: str
    subkinds: tuple[str, ...]
    add_text: str
    add_tip: str
    add_dialog: str
    columns: dict[str, str]
    file_filter: str = ""
    image_size: bool = False


def unique_task_name(stem: str, taken: set[str]) -> str:
    """A task name from a file or folder name: path characters replaced, a suffix added when `taken` has it."""
    stem = re.sub(r"[^\w\-.]+", "_", stem) or "task"
    name, i = stem, 2
    while name in taken:
        name, i = f"{stem}_{i}", i + 1
    return name


class TaskKind(ABC):
    """One kind of task (see the module docstring). Subclasses set the class attributes and implement the
    abstract methods; one instance per kind lives in the registry (`core.kinds.KINDS`)."""

    name: ClassVar[str]  # the config's `kind:` value
    title: ClassVar[str]  # user-facing name of the kind
    sections: ClassVar[dict[str, type]]  # "task", "data", "teacher", "backbone", "train" -> dataclass
    demo_name: ClassVar[str]  # the demo's run name (default folder runs/<demo_name>)
    demo_title: ClassVar[str]  # one line naming the demo (menus, `lorkd demo --help`)
    result: ClassVar[str]  # what applying an expert gives: "scores" or "label_map"
    viewer_input: ClassVar[str]  # what the app applies it to: "slice" or "volume"
    distributed: ClassVar[bool] = True  # whether runs may use torchrun
    units: ClassVar[dict[str, str]] = {}  # metric -> unit, for metrics that have one ("hd95": "mm")
    feature_distillation: ClassVar[bool] = False  # whether `train.kd_target: features` is possible

    # ------------------------------------------------------------------------------------------------ config
    def validate(self, config: Config) -> None:
        """Checks that span sections (each section has validated its own fields already); none by default."""
        return None

    # -------------------------------------------------------------------------------------------------- data
    @abstractmethod
    def open_data(self, config: Config, dist: Dist, warn: Warn) -> RunData:
        """Read, check and preprocess every task's data (nothing is written); recoverable oddities of the files
        go to `warn` as one-line messages."""

    # ------------------------------------------------------------------------------------------------ models
    @abstractmethod
    def new_teacher(self, config: Config, data: RunData) -> nn.Module:
        """A fresh foundation model to pre-train on all tasks (random init from the current RNG state)."""

    @abstractmethod
    def load_teacher(self, path: str | Path, config: Config, data: RunData) -> tuple[nn.Module, bool]:
        """(the foundation model from a checkpoint, whether it has per-task outputs to distil from)."""

    @abstractmethod
    def save_teacher(self, path: Path, teacher: nn.Module, config: Config, data: RunData) -> None:
        """Write a pre-trained foundation model atomically, in a form `load_teacher` reads back."""

    @abstractmethod
    def new_student(self, config: Config, data: RunData) -> nn.Module:
        """The common backbone with one low-rank expert per eligible conv and task (`core.experts`) and one head
        per task; its `backbone` attribute is the part that holds the experts."""

    def feature_sizes(self, student: nn.Module, teacher: nn.Module) -> tuple[int, int]:
        """(student, teacher) pooled feature sizes, for the projector of feature distillation (only called when
        `feature_distillation` is true)."""
        raise ConfigError(f"{self.title} runs have no pooled features to distil; use logits", "train.kd_target")

    @abstractmethod
    def expert_model(self, student: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        """Task `task`'s standalone expert: the backbone with its expert merged in, plus its head (CPU, eval);
        `expert(x)` runs on a batch of `RunData.input_shape` (the summary counts its parameters and MACs)."""

    # ------------------------------------------------------------------------------------------------ losses
    @abstractmethod
    def objective(self, batch: TaskBatch, data: RunData, distill: Distillation | None) -> torch.Tensor:
        """One task's loss summed over its samples (so that the batch loss is the sum over tasks / batch size)."""

    # -------------------------------------------------------------------------------------------- evaluation
    @abstractmethod
    def evaluate(self, run: RunContext, model: str, split: str,
                 tasks: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
        """{task name: {metric: value}} of `model` ("teacher" or the routed "student") on the validation split (a
        quick look every epoch, also used to keep each task's best epoch); `tasks`: only these (default all)."""

    @abstractmethod
    def test(self, run: RunContext, nets: dict[int, nn.Module]) -> dict[str, TaskScores]:
        """Test results of standalone per-task networks (`nets[t]` gives task t's outputs: an exported expert
        loaded from its bundle, the teacher's view of the task, a baseline) through the same code path as
        `lorkd apply` and the exported bundle (the bundle's preprocessing, the whole input, its native grid), on
        cases the networks never trained on."""

    @abstractmethod
    def teacher_view(self, teacher: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        """The foundation model as a standalone network of task `task` (what `test` scores for the teacher)."""

    def task_record(self, data: RunData, task: int) -> dict[str, Any]:
        """Extra per-task fields of summary.json (e.g. how many test samples and where they come from)."""
        return {}

    def model_records(self, config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
        """Extra fields of summary.json's "teacher" and "backbone" blocks."""
        return {}, {}

    def training_record(self, data: RunData, task: int) -> dict[str, Any]:
        """Extra per-task fields of a bundle's training record (model card)."""
        return {}

    # --------------------------------------------------------------------------------------- export / apply
    @abstractmethod
    def export(self, out_dir: Path, net: nn.Module, task: int, config: Config, data: RunData,
               metrics: dict[str, Any], training: dict[str, Any]) -> Path:
        """Write task `task`'s expert `net` as a bundle at `out_dir`; return its path."""

    @abstractmethod
    def load_bundle(self, bundle_dir: str | Path) -> tuple[nn.Module, dict]:
        """(network in eval mode on the CPU, metadata) of a verified bundle of this kind."""

    @abstractmethod
    def apply(self, bundle_dir: str | Path, image: str | Path, out: str | Path | None,
              progress: Progress | None = None, check: Callable[[], None] | None = None,
              strict: bool = False) -> dict[str, Any]:
        """`lorkd apply`: run the expert on an input file; write `out` when given. Returns a JSON-able record with
        "task", "expert" (the bundle's name), the kind's result fields, "warnings" (a list of one-line messages
        about the file), "applicability" (one sentence per way the input lies outside what the expert was trained
        on, `core.preprocess.applicability`) and "research_use_only". `strict`: an input outside raises
        `OutsideEnvelope` before the expert runs."""

    @abstractmethod
    def apply_loaded(self, bundle_dir: str | Path, loaded: Any, source: str, progress: Progress | None = None,
                     check: Callable[[], None] | None = None, modality: str | None = None) -> dict[str, Any]:
        """The app's twin of `apply`: the same computation on an input already in memory, nothing written (the
        same record, applicability included). `loaded` is what `viewer_input` says: a `core.io.Volume` ("volume")
        or the 2D plane on screen as an array ("slice", whose file's `modality` is passed where it has one);
        `source` names it in the record."""

    def write_record(self, record: dict[str, Any], path: str | Path) -> Path:
        """Write an `apply` record of a "scores" kind to `path` (the formats `lorkd apply --out` writes).
        Label maps are written with the input's geometry by `core.io.write_label_map` instead."""
        raise LorkdError(f"{self.title} experts give label maps; save them as a label map (.nii.gz, .dcm)")

    def cli_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """What `lorkd apply` prints of an `apply` record (JSON)."""
        return {k: v for k, v in record.items() if k != "warnings"}

    # ------------------------------------------------------------------------------------------- setup form
    form: ClassVar[TaskForm]

    @abstractmethod
    def task_row(self, task: dict[str, Any]) -> TaskRow:
        """A task mapping (config `tasks[i]`) as a table row."""

    @abstractmethod
    def task_from_row(self, row: TaskRow) -> dict[str, Any]:
        """The task mapping of an (edited) table row."""

    @abstractmethod
    def new_tasks(self, sources: list[str], taken: set[str]) -> list[dict[str, Any]]:
        """Task mappings for what the add dialog returned (`form.add_dialog`): one per file, or one for a pair of
        folders; names are made unique against `taken`."""

    @abstractmethod
    def describe_tasks(self, config: Config) -> list[tuple[str, str]]:
        """(contents text, tooltip) per task, from a light look at its files; a missing or unreadable file raises
        ConfigError whose `loc` is the task's field."""

    # --------------------------------------------------------------------------------------------------- demo
    @abstractmethod
    def build_demo(self, out_dir: Path, quick: bool = False, **options: Any) -> dict[str, Any]:
        """Write the kind's embedded demo data into `out_dir` (reused when present) and return its config
        mapping (for `core.kinds.load_config`); `quick`: a smoke-test sized demo; `options`: the kind's own
        demo settings."""

    def demo_note(self) -> str:
        """One paragraph the app shows about the demo."""
        return ""

    @abstractmethod
    def demo_input(self, raw: dict[str, Any], out_dir: Path) -> Path:
        """A file of the demo that its experts apply to (the app loads it into its viewer after loading the demo);
        may be written into `out_dir`."""
