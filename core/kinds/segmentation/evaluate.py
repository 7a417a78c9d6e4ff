"""Evaluation of segmentation models on held-out volumes: sliding-window label maps, per label Dice and HD95."""

from __future__ import annotations

import torch
from torch import nn

from core.kinds.base import RunContext
from core.kinds.segmentation.metrics import label_metrics, task_summary
from core.preprocess.sliding import sliding_logits


class TaskView(nn.Module):
    """A network restricted to one task's output channels (the teacher's slice for that task)."""

    def __init__(self, net: nn.Module, channels: slice) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.channels]


def evaluate_models(run: RunContext, model: str, expert_model) -> dict[str, dict[str, float]]:
    """Per task metrics of the teacher ("teacher", its channel slice) or the merged experts (`expert_model(t)`)
    on the held-out cases."""
    data, cfg = run.data, run.config.data
    out = {}
    for t, task in enumerate(data.tasks):
        if model == "teacher":
            net = TaskView(run.teacher, run.teacher.slices[t]).eval()
        else:
            net = expert_model(t).to(run.device)
        per_case = []
        for case in data.extra["test_cases"][t]:
            logits = sliding_logits(net, case.image, cfg.patch_size, cfg.overlap, cfg.blend, check=run.check)
            per_case.append(label_metrics(torch.argmax(logits, dim=0), case.label, task.num_classes, case.spacing))
        out[task.name] = task_summary(per_case, task.labels)
    return out
