"""A whole segmentation run (`kind: segmentation`): volumes -> foundation model (load or pre-train, a
multi-label MONAI UNet/SegResNet) -> decomposition into a lighter backbone with low-rank experts on every
convolution + one 1x1x1 head per task (Dice + CE + voxel-level KD) -> evaluation on held-out volumes
(per task and label Dice and HD95, teacher vs experts) -> summary.json -> segmentation expert bundles.

Same run folder as classification (core.train.run.RunFolder): config.yaml, metrics.jsonl,
checkpoints/{last.pt, teacher.pt}, summary.json, experts/<task>/. Training goes through
`core.train.loop.run_phase` (events, pause/stop, atomic checkpoints, exact resume).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.config import Config
from core.data.segmentation import SegCase, SegPatchDataset, load_task_cases, patch_loader
from core.errors import CheckpointError, ConfigError, LorkdError
from core.experts import expert_parameters, merge_expert, route
from core.files import atomic_save, safe_load
from core.infer.seg_runtime import sliding_logits
from core.models.checkpoint import load_strict
from core.models.complexity import count_macs, count_parameters
from core.models.seg_nets import SegNet
from core.models.segmentation import build_seg_backbone, build_seg_teacher, seg_expert_network, task_slices
from core.train import distributed
from core.train.events import Control, EvalEvent, NullObserver, Observer, RunInfo
from core.train.loop import Phase, run_phase, seed_everything
from core.train.run import Pipeline, RunFolder, device_label, place, resolve_device
from core.train.seg_losses import seg_kd_loss, seg_task_loss
from core.train.seg_metrics import label_metrics, task_summary

TEACHER_FORMAT = "lorkd-seg-teacher"


class TaskView(nn.Module):
    """A network restricted to one task's output channels (the teacher's slice for that task)."""

    def __init__(self, net: nn.Module, channels: slice) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.channels]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


class SegDecomposition(Pipeline):
    """Segmentation: builds and trains the teacher (if needed) and the student; evaluates; exports.
    Single-process (the CLI refuses torchrun for segmentation configs)."""

    def __init__(self, config: Config, run_dir: str | Path, observer: Observer | None = None,
                 control: Control | None = None) -> None:
        if config.kind != "segmentation":
            raise ConfigError(f"kind: SegDecomposition needs kind: segmentation, got {config.kind!r}")
        if distributed.from_env().enabled:
            raise LorkdError("segmentation runs are single-process for now; run them without torchrun "
                             "(distributed runs support classification tasks)")
        self.config = config
        self.folder = RunFolder(Path(run_dir))
        self.control = control or Control()
        self.observer = observer or NullObserver()
        self._check_folder()
        self.device = resolve_device(config.device)
        self.tasks = list(config.tasks)
        self.class_names = [t.class_names for t in self.tasks]
        self.num_classes = [len(c) for c in self.class_names]
        self.slices = task_slices(self.num_classes)
        # reads all data before writing anything; the readers' warnings go to the log
        self.train_cases, self.test_cases = load_task_cases(config, warn=self._warn)
        self.train_set = SegPatchDataset(self.train_cases, config.data.patch_size, config.data.samples_per_volume,
                                         config.data.pos_neg_ratio, config.seed, config.data.augment)
        self.input_shape = (1, 1, *config.data.patch_size)
        self.teacher: SegNet | None = None
        self.student: nn.Module | None = None

    def _warn(self, message: str) -> None:
        self.observer.on_log(f"warning: {message}")

    def run_info(self, phases: list[str]) -> RunInfo:
        return RunInfo(str(self.folder.path), phases, [t.name for t in self.tasks], device_label(self.device),
                       {"kind": "segmentation"})

    # --------------------------------------------------------------------------------- teacher
    def _teacher_channels(self) -> list[int]:
        return list(self.config.teacher.channels or [16, 32, 64, 128])

    def _backbone_channels(self) -> list[int]:
        return list(self.config.backbone.channels or [8, 16, 32, 64])

    def save_teacher(self, path: Path) -> None:
        cfg = self.config
        atomic_save({
            "format": TEACHER_FORMAT, "version": 1, "arch": cfg.teacher.arch, "channels": self._teacher_channels(),
            "task_names": [t.name for t in self.tasks], "num_classes": self.num_classes,
            "state_dict": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()},
        }, path)

    def load_teacher(self, path: str | Path) -> None:
        """Our own checkpoint, or a user's plain state_dict of the MONAI network (UNet/SegResNet keys, optionally
        under "state_dict" and/or prefixed "module."), whose output channels must be the tasks' classes."""
        obj = safe_load(path)
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} does not hold a state_dict")
        if isinstance(obj, dict) and obj.get("format") == TEACHER_FORMAT and obj.get("num_classes") != self.num_classes:
            raise CheckpointError(f"checkpoint {path} was trained for classes {obj.get('num_classes')}, the tasks "
                                  f"have {self.num_classes}")
        if all(k.startswith("module.") for k in state):
            state = {k[7:]: v for k, v in state.items()}
        if not all(k.startswith("body.") for k in state):
            state = {f"body.{k}": v for k, v in state.items()}
        load_strict(path, self.teacher, state, f"{self.config.teacher.arch} foundation model")

    def build_teacher(self, resume: dict | None) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        # on the run's device and layout first: loading a checkpoint copies into it
        self.teacher = place(build_seg_teacher(cfg.teacher.arch, 1, self.num_classes, self._teacher_channels()),
                             self.device, 3)
        if cfg.teacher.checkpoint:
            self.load_teacher(cfg.teacher.checkpoint)
            self.observer.on_log(f"foundation model loaded from {cfg.teacher.checkpoint}")
        elif self.folder.teacher.is_file():
            self.load_teacher(self.folder.teacher)
            self.observer.on_log("foundation model loaded from this run's checkpoint")
        else:
            if cfg.teacher.epochs < 1:
                raise ConfigError("teacher.epochs: must be >= 1 when no teacher.checkpoint is given")
            self._pretrain(resume if resume and resume["phase"] == "foundation" else None)
            self.save_teacher(self.folder.teacher)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _pretrain(self, resume: dict | None) -> None:
        cfg, teacher = self.config, self.teacher

        def compute_loss(batch):
            x, y, tid = batch["image"], batch["label"], batch["task"]
            logits = teacher(x)
            total, per_task = 0.0, {}
            for t in torch.unique(tid).tolist():
                mask = tid == t
                n = int(mask.sum())
                loss = seg_task_loss(logits[mask][:, self.slices[t]], y[mask])
                total = total + loss * n
                per_task[self.tasks[t].name] = (float(loss.detach()) * n, n)
            return total / y.shape[0], per_task

        phase = Phase(
            name="foundation", modules={"teacher": teacher}, params=list(teacher.parameters()),
            compute_loss=compute_loss, loader=patch_loader(self.train_set, cfg, cfg.teacher.batch_size),
            epochs=cfg.teacher.epochs, lr=cfg.teacher.lr or cfg.train.lr, evaluate=None, model="teacher",
        )
        self._run_phase(phase, resume)

    # --------------------------------------------------------------------------------- student
    def build_student(self) -> None:
        cfg = self.config
        seed_everything(cfg.seed + 1)
        student = build_seg_backbone(
            cfg.backbone.arch, 1, self.num_classes, self._backbone_channels(),
            ranks=[cfg.rank_of(t.name) for t in self.tasks], alpha=cfg.backbone.alpha,
            decoder_rank_factor=cfg.backbone.decoder_rank_factor, form=cfg.backbone.form,
        )
        self.student = place(student, self.device, 3)

    def _decompose(self, resume: dict | None) -> None:
        cfg, student, teacher = self.config, self.student, self.teacher
        beta, tau = cfg.train.kd_weight, cfg.train.temperature

        def compute_loss(batch):
            x, y, tid = batch["image"], batch["label"], batch["task"]
            if beta > 0:
                with torch.no_grad():
                    t_logits = teacher(x)
            with route(student, tid):
                logits = student(x, tid)
            total, per_task = 0.0, {}
            for t, lg in enumerate(logits):
                if lg is None:
                    continue
                mask = tid == t
                n = lg.shape[0]
                loss = seg_task_loss(lg, y[mask])
                if beta > 0:
                    loss = loss + beta * seg_kd_loss(lg, t_logits[mask][:, self.slices[t]], tau)
                total = total + loss * n
                per_task[self.tasks[t].name] = (float(loss.detach()) * n, n)
            return total / y.shape[0], per_task

        phase = Phase(
            name="decompose", modules={"student": student}, params=list(student.parameters()),
            compute_loss=compute_loss, loader=patch_loader(self.train_set, cfg), epochs=cfg.train.epochs,
            lr=cfg.train.lr, evaluate=None,
        )
        self._run_phase(phase, resume)

    def _run_phase(self, phase: Phase, resume: dict | None) -> None:
        run_phase(phase, self.config.train, seed=self.config.seed, device=self.device,
                  checkpoint_path=self.folder.last, observer=self.observer, control=self.control, log=self.log,
                  resume_state=resume)

    # ------------------------------------------------------------------------------ evaluation
    def expert_model(self, t: int) -> nn.Module:
        """The standalone expert of task t (merged backbone + head), CPU, eval."""
        body = merge_expert(self.student.body, t)
        return seg_expert_network(body, self.student.heads[t], self.config.backbone.arch, 1,
                                  self._backbone_channels())

    def predict(self, net: nn.Module, case: SegCase) -> torch.Tensor:
        data = self.config.data
        logits = sliding_logits(net, case.image, data.patch_size, data.overlap, data.blend,
                                check=self.control.checkpoint)
        return torch.argmax(logits, dim=0)

    def evaluate_model(self, which: str) -> dict[str, dict[str, float]]:
        """Per task metrics of the teacher ("teacher") or the merged experts ("student") on held-out data."""
        out = {}
        for t, task in enumerate(self.tasks):
            if which == "teacher":
                net = TaskView(self.teacher, self.slices[t]).eval()
            else:
                net = self.expert_model(t).to(self.device)
            per_case = [label_metrics(self.predict(net, c), c.label, self.num_classes[t], c.spacing)
                        for c in self.test_cases[t]]
            out[task.name] = task_summary(per_case, self.class_names[t])
        return out

    def evaluate(self) -> dict[str, Any]:
        cfg = self.config
        was = self.student.training
        self.student.eval()
        try:
            teacher_m = self.evaluate_model("teacher")
            student_m = self.evaluate_model("student")
        finally:
            self.student.train(was)
        for model, metrics in (("teacher", teacher_m), ("student", student_m)):
            event = EvalEvent(phase="test", epoch=cfg.train.epochs - 1, metrics=metrics, model=model)
            self.log.eval(event, 0)
            self.observer.on_eval(event)
        teacher_params = count_parameters(self.teacher)
        teacher_macs = count_macs(self.teacher, self.input_shape)
        tasks = []
        for t, task in enumerate(self.tasks):
            expert = self.expert_model(t)
            tasks.append({
                "name": task.name,
                "kind": "segmentation",
                "num_classes": self.num_classes[t],
                "labels": self.class_names[t],
                "metric": "dice",
                "teacher": teacher_m[task.name]["dice"],
                "expert": student_m[task.name]["dice"],
                "teacher_metrics": teacher_m[task.name],
                "expert_metrics": student_m[task.name],
                "test_samples": len(self.test_cases[t]),
                "test_sources": [c.source for c in self.test_cases[t]],
                "params": {
                    "expert_model": count_parameters(expert),
                    "expert_low_rank": sum(p.numel() for p in expert_parameters(self.student.body, t)),
                },
                "macs": {"expert_model": count_macs(expert, self.input_shape)},
            })
        backbone = merge_expert(self.student.body, None)
        return _finite_or_none({
            "name": cfg.name,
            "kind": "segmentation",
            "device": device_label(self.device),
            "teacher": {"arch": cfg.teacher.arch, "channels": self._teacher_channels(), "params": teacher_params,
                        "macs": teacher_macs, "kd_target": "logits"},
            "backbone": {"arch": cfg.backbone.arch, "channels": self._backbone_channels(), "form": cfg.backbone.form,
                         "rank": cfg.backbone.rank, "decoder_rank_factor": cfg.backbone.decoder_rank_factor,
                         "alpha": cfg.backbone.alpha, "params": count_parameters(backbone),
                         "macs": count_macs(backbone, self.input_shape)},
            "tasks": tasks,
        })

    # ---------------------------------------------------------------------------------- export
    def export(self, out_dir: str | Path | None = None) -> list[Path]:
        from core.export.seg_bundle import write_seg_bundle

        cfg = self.config
        summary = json.loads(self.folder.summary.read_text()) if self.folder.summary.is_file() else {}
        out = Path(out_dir) if out_dir else self.folder.experts
        paths = []
        self.student.eval()
        for t, task in enumerate(self.tasks):
            net = self.expert_model(t)
            task_summary_ = next((s for s in summary.get("tasks", []) if s["name"] == task.name), {})
            paths.append(write_seg_bundle(
                out / task.name,
                task_name=task.name,
                class_names=self.class_names[t],
                arch=cfg.backbone.arch,
                channels=self._backbone_channels(),
                features=net.head.in_channels,
                state_dict=net.state_dict(),
                data=cfg.data,
                metrics={k: task_summary_.get(k) for k in ("metric", "teacher", "expert", "teacher_metrics",
                                                           "expert_metrics", "test_samples")},
                training={"run": cfg.name, "teacher_arch": cfg.teacher.arch, "backbone_arch": cfg.backbone.arch,
                          "form": cfg.backbone.form, "rank": cfg.rank_of(task.name),
                          "decoder_rank_factor": cfg.backbone.decoder_rank_factor, "alpha": cfg.backbone.alpha,
                          "epochs": cfg.train.epochs, "tasks": [x.name for x in self.tasks],
                          "train_volumes": len(self.train_cases[t]), "source": str(task.images)},
            ))
            self.observer.on_log(f"exported expert {task.name} -> {paths[-1]}")
        return paths
