"""3D segmentation as a task kind: image volumes with label maps per task, a MONAI UNet/SegResNet foundation
model whose output channels are the tasks' slices, a lighter UNet/SegResNet backbone with low-rank experts on
every conv (decoder convs at a higher rank) and a 1x1x1 head per task, Dice + CE + voxel-level KL distillation,
Dice and HD95 on held-out volumes, and bundles that write a label map in the input's geometry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.config import Config
from core.distributed import Dist
from core.errors import CheckpointError, ConfigError, DataError, LorkdError
from core.experts import merge_expert
from core.files import atomic_save, safe_load
from core.io import Volume
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
from core.kinds.segmentation import bundle, demo
from core.kinds.segmentation.apply import apply_segmentation, segment_loaded
from core.kinds.segmentation.config import SECTIONS
from core.kinds.segmentation.data import (
    SegPatchDataset,
    foundation_targets,
    intensity_of,
    label_values,
    load_task_cases,
)
from core.kinds.segmentation.evaluate import TaskView, test_scores, val_patches, validate
from core.kinds.segmentation.losses import seg_kd_loss, seg_task_loss
from core.kinds.segmentation.models import (
    build_seg_backbone,
    build_seg_teacher,
    same_architecture,
    seg_expert_network,
)
from core.kinds.segmentation.teacher import ForeignSegTeacher, ForeignTaskView, load_foreign_teacher
from core.models.checkpoint import load_strict
from core.preprocess import applicability

TEACHER_FORMAT = "lorkd-seg-teacher"


def run_device(config: Config) -> torch.device:
    """Where a user's foundation model segments the run's volumes: the run's device (auto: a GPU when there is
    one)."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def foreign_arch(config: Config) -> str:
    t = config.teacher
    return f"MONAI bundle {Path(t.bundle).name}" if t.bundle else f"TorchScript {Path(t.torchscript).name}"
NEAR_CHANCE = 0.1  # Dice at or below which an expert is flagged: it finds next to nothing of its structures


class SegmentationKind(TaskKind):
    name = "segmentation"
    title = "segmentation"
    sections = SECTIONS
    demo_name = "demo-seg"
    demo_title = "3D segmentation: MNI152 brain tissues"
    result = "label_map"
    viewer_input = "volume"
    units = {"hd95": "mm"}

    # ------------------------------------------------------------------------------------------------ config
    def validate(self, config: Config) -> None:
        t = config.teacher
        for i, task in enumerate(config.tasks):
            if task.teacher_labels and not t.foreign:
                raise ConfigError("teacher_labels pick output channels of a user's foundation model: set "
                                  "teacher.bundle (a MONAI bundle) or teacher.torchscript", f"tasks.{i}.teacher_labels")
        if config.backbone.arch == "same" and not t.bundle:
            raise ConfigError("same needs a foundation model given as a MONAI bundle with a network_def "
                              "(teacher.bundle); use unet or segresnet", "backbone.arch")

    # -------------------------------------------------------------------------------------------------- data
    def open_data(self, config: Config, dist: Dist, warn: Warn) -> RunData:
        """Reads every task's volumes; with a user's foundation model (bundle / TorchScript) it is loaded first and
        segments every training volume once (`teacher.foundation_targets`): the labels of label-free tasks and
        the distillation targets of all."""
        foreign, targets = None, None
        if config.teacher.foreign:
            foreign = load_foreign_teacher(config, run_device(config))
            targets = foundation_targets(config, foreign, warn)
        train_cases, val_cases, test_cases = load_task_cases(config, warn=warn, targets=targets)
        data = config.data
        train_set = SegPatchDataset(train_cases, data.patch_size, data.samples_per_volume, data.pos_neg_ratio,
                                    config.seed, data.augment)
        tasks = []
        for t, task in enumerate(config.tasks):
            names = task.class_names if task.label_names else \
                ["background", *(foreign.foundation.label_of(c) for c in foreign.task_channels[t])]
            kind = "segmentation, label-free" if task.label_free else "segmentation"
            tasks.append(TaskInfo(task.name, kind, names, "agreement" if task.label_free else "dice",
                                  str(task.images), near_chance=NEAR_CHANCE))
        extra = {"train_cases": train_cases, "val_cases": val_cases, "test_cases": test_cases,
                 "val_patches": [val_patches(cases, data.patch_size) for cases in val_cases], "foreign": foreign}
        b = config.backbone
        if b.arch == "same":
            found = foreign.foundation if foreign is not None else None
            extra["student_arch"] = same_architecture(found.net_class if found else None,
                                                      found.net_kwargs if found else None, b.width, "backbone.arch")
        else:
            extra["student_arch"] = (b.arch, list(b.channels), None)
        return RunData(tasks, train_set, (1, 1, *data.patch_size), 3, has_validation=True, extra=extra)

    # ------------------------------------------------------------------------------------------------ models
    def new_teacher(self, config: Config, data: RunData) -> nn.Module:
        t = config.teacher
        return build_seg_teacher(t.arch, 1, [info.num_classes for info in data.tasks], t.channels, t.res_units)

    def load_teacher(self, path: str | Path, config: Config, data: RunData) -> tuple[nn.Module, bool]:
        """Our own checkpoint, or a user's plain state_dict of the MONAI network (UNet/SegResNet keys, optionally
        under "state_dict" and/or prefixed "module."), whose output channels must be the tasks' classes; a user's
        bundle or TorchScript file was loaded with the data (`open_data`)."""
        if data.extra.get("foreign") is not None:
            return data.extra["foreign"], True
        teacher = self.new_teacher(config, data)
        num_classes = [t.num_classes for t in data.tasks]
        obj = safe_load(path)
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} does not hold a state_dict")
        if isinstance(obj, dict) and obj.get("format") == TEACHER_FORMAT and obj.get("num_classes") != num_classes:
            raise CheckpointError(f"checkpoint {path} was trained for classes {obj.get('num_classes')}, the tasks "
                                  f"have {num_classes}")
        if all(k.startswith("module.") for k in state):
            state = {k[7:]: v for k, v in state.items()}
        if not all(k.startswith("body.") for k in state):
            state = {f"body.{k}": v for k, v in state.items()}
        load_strict(path, teacher, state, f"{config.teacher.arch} foundation model")
        return teacher, True

    def save_teacher(self, path: Path, teacher: nn.Module, config: Config, data: RunData) -> None:
        atomic_save({
            "format": TEACHER_FORMAT, "version": 1, "arch": config.teacher.arch, "channels": config.teacher.channels,
            "res_units": config.teacher.res_units,
            "task_names": data.names, "num_classes": [t.num_classes for t in data.tasks],
            "state_dict": {k: v.detach().cpu() for k, v in teacher.state_dict().items()},
        }, path)

    def new_student(self, config: Config, data: RunData) -> nn.Module:
        b = config.backbone
        arch, channels, spec = data.extra["student_arch"]
        return build_seg_backbone(arch, 1, [t.num_classes for t in data.tasks], channels,
                                  ranks=[config.rank_of(name) for name in data.names], alpha=b.alpha,
                                  decoder_rank_factor=b.decoder_rank_factor, form=b.form, res_units=b.res_units,
                                  spec=spec)

    def expert_model(self, student: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        body = merge_expert(student.body, task)
        arch, channels, spec = data.extra["student_arch"]
        return seg_expert_network(body, student.heads[task], arch, 1, channels, config.backbone.res_units, spec)

    def teacher_view(self, teacher: nn.Module, task: int, config: Config, data: RunData) -> nn.Module:
        if isinstance(teacher, ForeignSegTeacher):
            return ForeignTaskView(teacher, task).eval()
        return TaskView(teacher, teacher.slices[task]).eval()

    # ------------------------------------------------------------------------------------------------ losses
    def objective(self, batch: TaskBatch, data: RunData, distill: Distillation | None) -> torch.Tensor:
        loss = seg_task_loss(batch.logits, batch.labels)
        if distill is not None and distill.beta > 0:
            loss = loss + distill.beta * seg_kd_loss(batch.logits, batch.teacher_logits, distill.temperature,
                                                     batch.labels)
        return loss * batch.logits.shape[0]

    # -------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, run: RunContext, model: str, split: str,
                 tasks: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
        return validate(run, model, tasks)

    def test(self, run: RunContext, nets: dict[int, nn.Module]) -> dict[str, TaskScores]:
        """Dice against the label maps; a label-free task's against the user's foundation model's label maps
        (agreement; the foundation model itself is not scored against itself). With a user's foundation model,
        a labelled task's networks also get their agreement with it. Distributed: every rank calls it; each
        segments a share of the volumes (`test_scores`)."""
        config, data = run.config, run.data
        foreign: ForeignSegTeacher | None = data.extra.get("foreign")
        out = {}
        for t, net in nets.items():
            info, cases, task = data.tasks[t], data.extra["test_cases"][t], config.tasks[t]
            is_teacher = isinstance(net, ForeignTaskView)
            if is_teacher and task.label_free:
                continue
            pre = bundle.preprocessing(config.data, intensity_of(task, config.data))
            regions = any(c.region is not None for c in cases)
            what = (f"{len(cases)} held-out regions (cubes of about {config.data.region_mm:g} mm)" if regions
                    else f"{len(cases)} held-out volumes")
            teacher_labels = None
            if foreign is not None:
                def teacher_labels(volume, t=t):
                    return foreign.label_map(t, volume, run.check)
            if task.label_free:
                text = f"agreement (Dice) with the foundation model's label maps, no labels: pooled over {what}"
            else:
                text = f"Dice pooled over {what}, on each input's native grid"
            out[info.name] = test_scores(
                cases, info.labels, net.to(run.device).eval(), pre, text, run.check, metric=info.metric,
                reference=teacher_labels if task.label_free else None,
                agreement=None if task.label_free or is_teacher else teacher_labels, dist=run.dist)
        return out

    def task_record(self, data: RunData, task: int) -> dict[str, Any]:
        cases = data.extra["test_cases"][task]
        return {"test_samples": len(cases), "test_sources": sorted({str(c.image_path) for c in cases}),
                "validation_cases": len(data.extra["val_cases"][task])}

    def model_records(self, config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
        b = config.backbone
        teacher = {"channels": list(config.teacher.channels)}
        if config.teacher.foreign:
            teacher = {"arch": foreign_arch(config), "source": config.teacher.source}
        backbone = {"channels": list(b.channels), "decoder_rank_factor": b.decoder_rank_factor}
        if b.arch == "same":
            backbone.update(arch=f"same ({b.width:g} x the foundation model's width)")
        return teacher, backbone

    def training_record(self, data: RunData, task: int) -> dict[str, Any]:
        record = {"train_volumes": len(data.extra["train_cases"][task])}
        foreign = data.extra.get("foreign")
        if foreign is not None:
            found = foreign.foundation
            record.update(teacher_arch=f"{found.form}: {found.net_class or 'TorchScript'}",
                          teacher_source=found.source,
                          teacher_labels=[found.label_of(c) for c in foreign.task_channels[task]],
                          labels_from="the foundation model (label-free)" if data.tasks[task].metric == "agreement"
                          else "label maps")
        return record

    # --------------------------------------------------------------------------------------- export / apply
    def export(self, out_dir: Path, net: nn.Module, task: int, config: Config, data: RunData,
               metrics: dict[str, Any], training: dict[str, Any]) -> Path:
        info = data.tasks[task]
        arch, channels, spec = data.extra["student_arch"]
        return bundle.write_seg_bundle(
            out_dir, task_name=info.name, class_names=info.labels, arch=arch,
            channels=channels, features=net.head.in_channels, state_dict=net.state_dict(),
            data=config.data, metrics=metrics,
            training={**training, "decoder_rank_factor": config.backbone.decoder_rank_factor},
            res_units=config.backbone.res_units, intensity=intensity_of(config.tasks[task], config.data), net=spec,
            label_codes=config.tasks[task].label_codes, envelope=self.envelope(data, task, config),
        )

    def envelope(self, data: RunData, task: int, config: Config) -> dict[str, Any] | None:
        """What task `task`'s expert was trained on: the envelope of its training volumes' observations (recorded
        when each volume was prepared) and the task's declared modality."""
        seen = [c.observed for c in data.extra["train_cases"][task] if c.observed]
        return applicability.envelope(seen, config.tasks[task].modality) if seen else None

    def load_bundle(self, bundle_dir: str | Path) -> tuple[nn.Module, dict]:
        return bundle.load_seg_bundle(bundle_dir)

    def apply(self, bundle_dir: str | Path, image: str | Path, out: str | Path | None,
              progress: Progress | None = None, check: Callable[[], None] | None = None,
              strict: bool = False) -> dict[str, Any]:
        return apply_segmentation(bundle_dir, image, out, progress, check, strict)

    def apply_loaded(self, bundle_dir: str | Path, loaded: Any, source: str, progress: Progress | None = None,
                     check: Callable[[], None] | None = None, modality: str | None = None) -> dict[str, Any]:
        if not isinstance(loaded, Volume):
            raise DataError(f"{source}: a segmentation expert segments a volume (got {type(loaded).__name__})")
        return segment_loaded(bundle_dir, loaded, source, progress, check)

    def cli_record(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = ("task", "expert", "out", "labels", "voxels", "applicability", "research_use_only")
        return {k: record[k] for k in keys}

    # ------------------------------------------------------------------------------------------- setup form
    form = TaskForm(
        source_header="Images → label maps",
        source_tip="a folder (or list) of image volumes and the label maps paired with them in name order; "
                   "(label-free): no label maps, the expert learns the foundation model's labels alone",
        labels_tip="label names 1, 2, ... comma-separated (0 is the background); a task with foundation labels may "
                   "leave it empty (named after the foundation model's labels)", subkinds=("segmentation",),
        add_text="Add segmentation task…",
        add_tip="a folder of image volumes and a folder of label maps paired with them by name order",
        add_dialog="folder_pair",
        columns={"images": "source", "labels": "source", "label_names": "labels", "teacher_labels": "source"},
    )

    def task_row(self, task: dict[str, Any]) -> TaskRow:
        """Label-free tasks (no label maps) show "images → (label-free)" and the kind "segmentation, label-free";
        the foundation model's labels a task picked (`teacher_labels`) follow the source. The task's other fields
        (images, labels, teacher_labels, intensity) ride along as the row's data."""
        def show(value) -> str:
            if isinstance(value, list):
                return value[0] if len(value) == 1 else f"{len(value)} files ({value[0]}, …)"
            return str(value or "")

        names = task.get("label_names") or {}
        label_free = not task.get("labels")
        source = f"{show(task.get('images'))} → {'(label-free)' if label_free else show(task.get('labels'))}"
        if task.get("teacher_labels"):
            source += " · foundation labels: " + ", ".join(str(x) for x in task["teacher_labels"])
        data = {k: v for k, v in task.items() if k not in ("name", "label_names")}
        return TaskRow(task["name"], source, "segmentation, label-free" if label_free else "segmentation",
                       [str(names[k]) for k in sorted(names, key=int)], data=data, source_editable=False)

    def task_from_row(self, row: TaskRow) -> dict[str, Any]:
        data = dict(row.data or {})
        kept = {k: v for k, v in data.items() if v is not None}  # fields the table does not show (intensity)
        return {**kept, "name": row.name, "images": data.get("images"), "labels": data.get("labels"),
                "label_names": {i: n for i, n in enumerate(row.labels, start=1)} or None,
                "teacher_labels": data.get("teacher_labels") or None}

    def new_tasks(self, sources: list[str], taken: set[str]) -> list[dict[str, Any]]:
        """One task from (images folder, label maps folder), named after the images folder (its parent when the
        folder is called images*, as in Task01_X/imagesTr); label names proposed as "label 1".."label K" from the
        values in the first label map (empty when it cannot be read: validation then says why). One folder alone
        (images): a label-free task, which learns the foundation model's labels it picks (`teacher_labels`)."""
        images, *rest = (Path(s).expanduser().resolve() for s in sources)
        named = images.parent if images.name.lower().startswith("image") and images.parent.name else images
        name = unique_task_name(named.name, taken)
        taken.add(name)
        if not rest:
            return [{"name": name, "images": str(images), "labels": None, "label_names": None,
                     "teacher_labels": None}]
        labels = rest[0]
        try:
            values = label_values(str(labels))
        except LorkdError:
            values = []
        names = {i: f"label {i}" for i in range(1, max(values) + 1)} if values else None
        return [{"name": name, "images": str(images), "labels": str(labels), "label_names": names}]

    def describe_tasks(self, config: Config) -> list[tuple[str, str]]:
        d = config.data
        out = []
        for i, task in enumerate(config.tasks):
            for key in ("images", "labels"):
                value = getattr(task, key)
                if not value:  # no label maps: a label-free task
                    continue
                for path in value if isinstance(value, list) else [value]:
                    if not Path(str(path)).expanduser().exists():
                        raise ConfigError(f"not found: {path}", ("tasks", i, key))
            chosen = task.teacher_labels or []
            if chosen and task.label_names and len(chosen) != len(task.label_names):
                raise ConfigError(f"the task has {len(task.label_names)} label(s) but {len(chosen)} foundation "
                                  f"label(s); they must match one for one", ("tasks", i, "teacher_labels"))
            n = f"{len(task.images)} volume(s)" if isinstance(task.images, list) else "a folder of volumes"
            if task.label_free:
                text = f"segmentation · label-free · {task.num_labels} label(s) from the foundation model · 3D · {n}"
            else:
                text = f"segmentation · {task.num_labels} label(s) · 3D · {n}"
            tip = f"resampled to {d.spacing} mm, patches {d.patch_size}, intensity {d.intensity.mode}"
            if chosen:
                tip += "; foundation labels: " + ", ".join(str(x) for x in chosen)
            out.append((text, tip))
        return out

    # --------------------------------------------------------------------------------------------------- demo
    def build_demo(self, out_dir: Path, quick: bool = False, **options: Any) -> dict[str, Any]:
        return demo.build_seg_demo(out_dir, quick=quick, **options)

    def demo_note(self) -> str:
        return demo.DEMO_NOTE

    def demo_input(self, raw: dict[str, Any], out_dir: Path) -> Path:
        """The image the demo's first task reads first (the MNI152 T1)."""
        images = raw["tasks"][0]["images"]
        return Path(images[0] if isinstance(images, list) else images)
