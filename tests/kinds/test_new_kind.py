"""A third task kind is one class and one registration: a toy per-image regression kind, written here against
`core.kinds.base.TaskKind` only, runs through the unchanged pipeline and CLI (demo, decompose, evaluate, export,
apply) once it is registered in `core.kinds.KINDS`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from core.cli import main as lorkd
from core.config import BackboneBase, Config, DataBase, TaskBase, TeacherBase, TrainConfig
from core.data.sampling import TaskLayout
from core.experts import attach_experts, merge_expert, route
from core.export.weights import METADATA_FILE
from core.files import atomic_save, safe_load, write_text_atomic
from core.kinds import KINDS, get_kind, kind_of_bundle, load_config
from core.kinds.base import RunData, TaskForm, TaskInfo, TaskKind, TaskRow, TaskScores


@dataclass
class RegressionTask(TaskBase):
    scale: float = 1.0  # the target is scale * the image's mean intensity


@dataclass
class RegressionTeacher(TeacherBase):
    ARCHS = ("convnet",)
    arch: str = "convnet"


@dataclass
class RegressionBackbone(BackboneBase):
    ARCHS = ("convnet",)
    arch: str = "convnet"
    rank: int = 2


class Images(TaskLayout):
    """Per task, random 8x8 images whose target is the task's scale times their mean intensity."""

    def __init__(self, scales: list[float], n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(len(scales) * n, 1, 8, 8, generator=gen)
        self.targets = torch.cat([s * self.images[i * n:(i + 1) * n].mean(dim=(1, 2, 3)) for i, s in enumerate(scales)])
        self.tasks = torch.repeat_interleave(torch.arange(len(scales)), n)
        self._lay_out([n] * len(scales))

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return {"image": self.images[idx], "label": self.targets[idx, None], "task": self.tasks[idx]}


class MultiTaskRegressor(nn.Module):
    """conv features + one linear head per task; forward(x, task_ids) -> (pooled features, per-task outputs)."""

    def __init__(self, tasks: int, width: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1))
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(tasks))

    def forward(self, x, task_ids=None):
        feats = self.backbone(x).mean(dim=(2, 3))
        if task_ids is None:
            return feats, None
        return feats, [head(feats[task_ids == t]) if bool((task_ids == t).any()) else None
                       for t, head in enumerate(self.heads)]


class Expert(nn.Module):
    """A standalone expert: the merged backbone and the task's head; forward(x) -> (B, 1)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x).mean(dim=(2, 3)))


class RegressionKind(TaskKind):
    name = "regression"
    title = "per-image regression"
    sections = {"task": RegressionTask, "data": DataBase, "teacher": RegressionTeacher,
                "backbone": RegressionBackbone, "train": TrainConfig}
    demo_name = "demo-regression"
    demo_title = "toy regression: mean intensity"
    result = "scores"
    viewer_input = "slice"
    form = TaskForm("Scale", "target scale", "", ("regression",), "Add", "", "files", {})

    def open_data(self, config, dist, warn):
        scales = [t.scale for t in config.tasks]
        tasks = [TaskInfo(t.name, "regression", ["value"], "mae", higher_is_better=False) for t in config.tasks]
        return RunData(tasks, Images(scales, 32, config.seed), (1, 1, 8, 8), 2, has_validation=True,
                       extra={"held_out": Images(scales, 16, config.seed + 1)})

    def new_teacher(self, config, data):
        return MultiTaskRegressor(len(data.tasks), 16)

    def load_teacher(self, path, config, data):
        teacher = self.new_teacher(config, data)
        teacher.load_state_dict(safe_load(path))
        return teacher, True

    def save_teacher(self, path, teacher, config, data):
        atomic_save(teacher.state_dict(), path)

    def new_student(self, config, data):
        student = MultiTaskRegressor(len(data.tasks), 8)
        attach_experts(student.backbone, len(data.tasks), rank=config.backbone.rank)
        return student

    def expert_model(self, student, task, config, data):
        return Expert(merge_expert(student.backbone, task), student.heads[task]).eval()

    def objective(self, batch, data, distill):
        loss = nn.functional.mse_loss(batch.logits, batch.labels, reduction="sum")
        if distill is not None and distill.beta > 0:
            loss = loss + distill.beta * nn.functional.mse_loss(batch.logits, batch.teacher_logits, reduction="sum")
        return loss

    def teacher_view(self, teacher, task, config, data):
        return Expert(teacher.backbone, teacher.heads[task]).eval()

    def test(self, run, nets):
        held = run.data.extra["held_out"]
        batch = held.__getitems__(range(len(held)))
        out = {}
        for t, net in nets.items():
            mask = batch["task"] == t
            with torch.no_grad():
                errors = (net(batch["image"][mask]) - batch["label"][mask]).abs()[:, 0].numpy()
            out[run.data.tasks[t].name] = TaskScores(
                {"mae": float(errors.mean())}, [{"case": i, "mae": float(e)} for i, e in enumerate(errors)],
                lambda idx, errors=errors: float(errors[idx].mean()), f"{len(errors)} held-out images")
        return out

    def evaluate(self, run, model, split, tasks=None):
        held = run.data.extra["held_out"]
        batch = held.__getitems__(range(len(held)))
        with torch.no_grad():
            if model == "teacher":
                _, outputs = run.teacher(batch["image"], batch["task"])
            else:
                with route(run.student, batch["task"]):
                    _, outputs = run.student(batch["image"], batch["task"])
        return {info.name: {"mae": float((outputs[t] - batch["label"][batch["task"] == t]).abs().mean())}
                for t, info in enumerate(run.data.tasks)}

    def export(self, out_dir, net, task, config, data, metrics, training):
        atomic_save(net.state_dict(), Path(out_dir) / "models" / "model.pt")
        write_text_atomic(Path(out_dir) / METADATA_FILE, json.dumps(
            {"lorkd": {"run_kind": self.name, "task": data.tasks[task].name, "metrics": metrics}}))
        return Path(out_dir)

    def load_bundle(self, bundle_dir):
        net = Expert(MultiTaskRegressor(1, 8).backbone, nn.Linear(8, 1))
        net.load_state_dict(safe_load(Path(bundle_dir) / "models" / "model.pt"))
        return net.eval(), json.loads((Path(bundle_dir) / METADATA_FILE).read_text())

    def apply(self, bundle_dir, image, out, progress=None, check=None, strict=False):
        return self.apply_loaded(bundle_dir, np.load(image), str(image))

    def apply_loaded(self, bundle_dir, loaded, source, progress=None, check=None, modality=None):
        net, metadata = self.load_bundle(bundle_dir)
        x = torch.as_tensor(np.asarray(loaded, dtype=np.float32))[None, None]
        with torch.no_grad():
            value = float(net(x))
        return {"task": metadata["lorkd"]["task"], "image": source, "prediction": value, "warnings": []}

    def task_row(self, task):
        return TaskRow(task["name"], str(task.get("scale", 1.0)), "regression", [])

    def task_from_row(self, row):
        return {"name": row.name, "scale": float(row.source)}

    def new_tasks(self, sources, taken):
        return []

    def describe_tasks(self, config):
        return [(f"scale {t.scale}", "") for t in config.tasks]

    def build_demo(self, out_dir: Path, quick: bool = False, **options: Any) -> dict[str, Any]:
        return {"name": "demo-regression", "kind": self.name, "tasks": [{"name": "once", "scale": 1.0},
                                                                        {"name": "twice", "scale": 2.0}],
                "teacher": {"epochs": 2}, "train": {"epochs": 2, "batch_size": 16, "optimizer": "adamw",
                                                    "lr": 0.01, "log_every": 1}, "device": "cpu"}

    def demo_input(self, raw, out_dir):
        path = Path(out_dir) / "image.npy"
        np.save(path, np.full((8, 8), 0.5, np.float32))
        return path


@pytest.fixture
def regression(monkeypatch):
    monkeypatch.setitem(KINDS, RegressionKind.name, RegressionKind())
    return KINDS[RegressionKind.name]


def test_a_registered_kind_runs_through_the_unchanged_pipeline_and_cli(regression, tmp_path, capsys):
    config = load_config(regression.build_demo(tmp_path))
    assert isinstance(config, Config) and isinstance(config.tasks[0], RegressionTask)
    assert config.backbone.rank == 2 and get_kind(config.kind) is regression

    out = tmp_path / "run"
    assert lorkd(["demo", "--kind", "regression", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "regression" and [t["name"] for t in summary["tasks"]] == ["once", "twice"]
    for task in summary["tasks"]:
        assert task["metric"] == "mae" and task["expert"] < 0.5 and task["teacher"] is not None
        assert task["params"]["expert_low_rank"] > 0 and task["single_task"] is not None
        low, high = task["expert_minus_teacher_ci"]
        assert low <= task["expert_minus_teacher"] <= high and task["test_cases"] == 16
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} >= {"foundation", "decompose", "test"}

    assert lorkd(["evaluate", str(out)]) == 0
    assert lorkd(["export", str(out), "--out", str(tmp_path / "again")]) == 0
    bundle = tmp_path / "again" / "twice"
    assert kind_of_bundle(bundle) is regression
    image = regression.demo_input({}, tmp_path)
    capsys.readouterr()
    assert lorkd(["apply", str(bundle), str(image), "--out", str(tmp_path / "unused")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "twice" and abs(printed["prediction"] - 1.0) < 0.5  # twice the mean of 0.5
