"""Classification as a task kind: MedMNIST-format tasks (multi-class or multi-label, 2D or 3D), a MONAI
ResNet/DenseNet foundation model with one head per task, a compact (or ResNet) backbone with low-rank experts,
CE/BCE + KL distillation, accuracy and AUC, and bundles that score one image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.config import Config
from core.data.sampling import SingleTaskView, make_loader
from core.distributed import Dist
from core.errors import ConfigError, DataError
from core.experts import attach_experts, merge_expert
from core.files import write_atomic
from core.kinds.base import (
    Distillation,
    Progress,
    RunContext,
    RunData,
    TaskBatch,
    TaskForm,
    TaskInfo,
    TaskKind,
    TaskRow,
    TaskScores,
    Warn,
    unique_task_name,
)
from core.kinds.classification import apply as applying
from core.kinds.classification import bundle, demo, runtime
from core.kinds.classification.config import SECTIONS, TASK_KINDS
from core.kinds.classification.dataset import MultiTaskDataset, task_labels
from core.kinds.classification.evaluate import routed, task_metrics, test_scores
from core.kinds.classification.losses import kd_loss, task_loss
from core.kinds.classification.medmnist import inspect_medmnist, read_split
from core.kinds.classification.models import TeacherTaskView, build_backbone, build_teacher, expert_network
from core.kinds.classification.tasks import TaskSpec, build_task_specs, resolve_in_channels
from core.kinds.classification.teacher import load_teacher, save_teacher
from core.preprocess import applicability

NEAR_CHANCE_AUC = 0.55  # a multi-label expert at or below this mean AUC is flagged near chance
ENVELOPE_SAMPLES = 400  # training images an expert's applicability envelope is summarised from
STREAM_AUTO_BYTES = 2 << 30  # data.stream=auto: memory-map the images when the prepared splits exceed 2 GiB


def stream_images(data, specs: list[TaskSpec], in_channels: int, spatial_dims: int) -> bool:
    """Whether the datasets keep their images on disk (data.stream; "auto" decides by size)."""
    if data.stream != "auto":
        return data.stream == "on"
    per_image = 4 * data.image_size**spatial_dims  # float32, one channel (grey is repeated on access)
    total = 0
    for spec in specs:
        counts = inspect_medmnist(spec.source, spec.num_classes).counts
        channels = 3 if spec.rgb and in_channels == 3 else 1
        total += sum(counts.values()) * per_image * channels
    return total > STREAM_AUTO_BYTES


def _specs(config: Config) -> list[TaskSpec]:
    """`build_task_specs`, with a file problem (DataError naming the file) re-raised as a ConfigError at the task's
    field (the setup form puts it in the task's row)."""
    try:
        return build_task_specs(config)
    except DataError as exc:
        message = " ".join(str(exc).split())
        for i, task in enumerate(config.tasks):
            if message.startswith(str(task.medmnist)):
                raise ConfigError(message, ("tasks", i, "medmnist")) from None
        raise


class ClassificationKind(TaskKind):
    name = "classification"
    title = "classification"
    sections = SECTIONS
    demo_name = "demo"
    demo_title = "2D classification: four small tasks"
    result = "scores"
    viewer_input = "slice"
    feature_distillation = True

    # -------------------------------------------------------------------------------------------------- data
    def open_data(self, config: Config, dist: Dist, warn: Warn) -> RunData:
        specs = build_task_specs(config)
        in_channels = resolve_in_channels(config, specs)
        spatial_dims = specs[0].spatial_dims
        data = config.data
        common = {"image_size": data.image_size, "in_channels": in_channels, "seed": config.seed,
                  "stream": stream_images(data, specs, in_channels, spatial_dims)}
        train = MultiTaskDataset(specs, "train", augment=data.augment, max_per_task=data.max_train_per_task,
                                 **common)
        val = MultiTaskDataset(specs, "val", max_per_task=data.max_eval_per_task, **common)
        test = MultiTaskDataset(specs, "test", max_per_task=data.max_eval_per_task, **common)
        tasks = [TaskInfo(s.name, s.kind, list(s.label_names), s.metric, s.source,
                          near_chance=NEAR_CHANCE_AUC if s.kind == "multilabel" else 1 / s.num_classes + 0.05)
                 for s in specs]
        return RunData(tasks, train, (1, in_channels) + (data.image_size,) * spatial_dims, spatial_dims,
                       has_validation=True,
                       extra={"specs": specs, "in_channels": in_channels, "val": val, "test": test})

    # ------------------------------------------------------------------------------------------------ models
    @staticmethod
    def _net_args(data: RunData) -> tuple[int, int, list[int]]:
        return data.spatial_dims, data.extra["in_channels"], [t.num_classes for t in data.tasks]

    def new_teacher(self, config: Config, data: RunData) -> nn.Module:
        return build_teacher(config.teacher.arch, *self._net_args(data))

    def load_teacher(self, path: str | Path, config: Config, data: RunData) -> tuple[nn.Module, bool]:
        return load_teacher(path, config.teacher.arch, *self._net_args(data))

    def save_teacher(self, path: Path, teacher: nn.Module, config: Config, data: RunData) -> None:
        spatial_dims, in_channels, num_classes = self._net_args(data)
        save_teacher(path, teacher, config.teacher.arch, spatial_dims, in_channels, data.names, num_classes)

    def new_student(self, config: Config, data: RunData) -> nn.Module:
        student = build_backbone(config.backbone.arch, *self._net_args(data))
        attach_experts(student.features, len(data.tasks), rank=config.backbone.rank, alpha=config.backbone.alpha,
                       ranks=[config.rank_of(name) for name in data.names], form=config.backbone.form)
        return student

    def feature_sizes(self, student: nn.Module, teacher: nn.Module) -> tuple[int, int]:
        return student.features.out_features, teacher.features.out_features

    def teacher_view(self, teacher: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        return TeacherTaskView(teacher, task).eval()

    def expert_model(self, student: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        spatial_dims, in_channels, _ = self._net_args(data)
        features = merge_expert(student.features, task)
        return expert_network(features, student.heads.heads[task], config.backbone.arch, spatial_dims, in_channels)

    # ------------------------------------------------------------------------------------------------ losses
    def objective(self, batch: TaskBatch, data: RunData, distill: Distillation | None) -> torch.Tensor:
        spec = data.extra["specs"][batch.task]
        logits = batch.logits.float()
        loss = task_loss(logits, task_labels(batch.labels, spec), spec.kind)
        if distill is not None and distill.beta > 0:
            if distill.target == "logits":
                kd = kd_loss(logits, batch.teacher_logits.float(), distill.temperature, spec.kind)
            else:
                kd = kd_loss(distill.projector(batch.features).float(), batch.teacher_features.float(),
                             distill.temperature)
            loss = loss + distill.beta * kd
        return loss

    # -------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, run: RunContext, model: str, split: str,
                 tasks: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
        config = run.config
        dataset = run.data.extra[split]
        views = [dataset] if tasks is None else [SingleTaskView(dataset, t) for t in tasks]
        forward = routed(run.student) if model == "student" else (lambda x, t: run.teacher(x, t))
        out = {}
        for view in views:
            loader = make_loader(view, config.train.batch_size, config.data.sampling, config.seed, train=False,
                                 num_workers=config.data.num_workers, rank=run.dist.rank,
                                 world_size=run.dist.world_size)
            out.update(task_metrics(forward, loader, run.data.extra["specs"], run.device, run.dist))
        return out

    def test(self, run: RunContext, nets: dict[int, nn.Module]) -> dict[str, TaskScores]:
        test, specs = run.data.extra["test"], run.data.extra["specs"]
        out = {}
        for t, net in nets.items():
            spec = specs[t]
            in_channels = run.data.extra["in_channels"]
            out[spec.name] = test_scores(net, test.stored_images(t), test.task_targets(t).numpy(), spec,
                                         run.config.data.image_size, in_channels, run.device, run.dist)
        return out

    def task_record(self, data: RunData, task: int) -> dict[str, Any]:
        return {"test_samples": data.extra["test"].task_sizes[task]}

    def training_record(self, data: RunData, task: int) -> dict[str, Any]:
        return {"train_samples": data.train_set.task_sizes[task]}

    # --------------------------------------------------------------------------------------- export / apply
    def export(self, out_dir: Path, net: nn.Module, task: int, config: Config, data: RunData,
               metrics: dict[str, Any], training: dict[str, Any]) -> Path:
        spatial_dims, in_channels, _ = self._net_args(data)
        return bundle.write_bundle(
            out_dir, task=data.extra["specs"][task].to_dict(), arch=config.backbone.arch, spatial_dims=spatial_dims,
            in_channels=in_channels, image_size=config.data.image_size,
            state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()}, metrics=metrics,
            training=training, envelope=self.envelope(data, task, config),
        )

    def envelope(self, data: RunData, task: int, config: Config) -> dict[str, Any] | None:
        """What task `task`'s expert was trained on: the envelope (`preprocess.applicability`) of an even sample
        of up to ENVELOPE_SAMPLES of its training images, as `lorkd apply` sees an image, and the task's declared
        modality; None for 3D tasks (apply scores 2D images)."""
        spec = data.extra["specs"][task]
        if spec.spatial_dims != 2:
            return None
        images, _ = read_split(spec.source, "train", spec.num_classes, stream=True)
        rows = np.unique(np.linspace(0, len(images) - 1, min(len(images), ENVELOPE_SAMPLES)).astype(int))
        seen = [runtime.observe_plane(np.asarray(images[i])) for i in rows]
        return applicability.envelope(seen, config.tasks[task].modality)

    def load_bundle(self, bundle_dir: str | Path) -> tuple[nn.Module, dict]:
        return bundle.load_bundle(bundle_dir)

    def apply(self, bundle_dir: str | Path, image: str | Path, out: str | Path | None,
              progress: Progress | None = None, check: Callable[[], None] | None = None,
              strict: bool = False) -> dict[str, Any]:
        return applying.apply_expert(bundle_dir, image, out, strict=strict)

    def apply_loaded(self, bundle_dir: str | Path, loaded: Any, source: str, progress: Progress | None = None,
                     check: Callable[[], None] | None = None, modality: str | None = None) -> dict[str, Any]:
        if not isinstance(loaded, np.ndarray):
            raise DataError(f"{source}: a classification expert scores a 2D image (got {type(loaded).__name__})")
        return applying.classify_array(bundle_dir, loaded, source=source, progress=progress, modality=modality)

    def write_record(self, record: dict[str, Any], path: str | Path) -> Path:
        if Path(path).suffix.lower() not in runtime.SCORE_SUFFIXES:
            raise DataError(f"{path}: unsupported extension (scores are saved as .json or .csv)")
        names = list(record["scores"])
        notes = {k: record[k] for k in ("expert", "applicability", "research_use_only", "calibration") if k in record}
        runtime.write_scores(path, np.array([record["scores"][n] for n in names]), names, record["kind"],
                             record["image"], record["task"], notes)
        return Path(path)

    def cli_record(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = ("expert", "prediction", "scores", "applicability", "research_use_only", "calibration")
        return {k: record[k] for k in keys if k in record}

    # ------------------------------------------------------------------------------------------- setup form
    form = TaskForm(
        source_header="File", source_tip="a MedMNIST-format .npz file",
        labels_tip="class names, comma-separated (empty: 0, 1, ...)", subkinds=TASK_KINDS,
        add_text="Add MedMNIST files…", add_tip="one task per MedMNIST .npz file", add_dialog="files",
        file_filter="MedMNIST files (*.npz);;All files (*)",
        columns={"medmnist": "source", "kind": "subkind", "labels": "labels"}, image_size=True,
    )

    def task_row(self, task: dict[str, Any]) -> TaskRow:
        return TaskRow(task["name"], task.get("medmnist") or "", task.get("kind") or "auto",
                       list(task.get("labels") or []))

    def task_from_row(self, row: TaskRow) -> dict[str, Any]:
        return {"name": row.name, "medmnist": row.source or None, "kind": row.subkind, "labels": row.labels or None}

    def new_tasks(self, sources: list[str], taken: set[str]) -> list[dict[str, Any]]:
        tasks = []
        for source in sources:
            path = Path(source).expanduser().resolve()
            name = unique_task_name(path.stem, taken)
            taken.add(name)
            tasks.append({"name": name, "medmnist": str(path), "kind": "auto", "labels": None})
        return tasks

    def describe_tasks(self, config: Config) -> list[tuple[str, str]]:
        for i, task in enumerate(config.tasks):
            if not Path(task.medmnist).expanduser().is_file():
                raise ConfigError(f"file not found: {task.medmnist}", ("tasks", i, "medmnist"))
        out = []
        for spec in _specs(config):
            colour = "RGB" if spec.rgb else "grey"
            noun = "labels" if spec.kind == "multilabel" else "classes"
            out.append((f"{spec.kind} · {spec.num_classes} {noun} · {spec.spatial_dims}D {colour}",
                        ", ".join(spec.label_names)))
        return out

    # --------------------------------------------------------------------------------------------------- demo
    def build_demo(self, out_dir: Path, quick: bool = False, **options: Any) -> dict[str, Any]:
        if quick:
            options.setdefault("n_per_task", 200)
        raw = demo.build_demo(out_dir, **options)
        if quick:
            raw["teacher"]["epochs"] = 1
            raw["train"]["epochs"] = 1
        return raw

    def demo_note(self) -> str:
        return demo.DEMO_NOTE

    def demo_input(self, raw: dict[str, Any], out_dir: Path) -> Path:
        """A PNG of the first test image of the demo's first task."""
        from PIL import Image

        with np.load(raw["tasks"][0]["medmnist"]) as data:
            image = data["test_images"][0]
        out = Path(out_dir) / f"{raw['tasks'][0]['name']}_test_0.png"
        write_atomic(out, lambda fh: Image.fromarray(image).save(fh, format="PNG"))
        return out

