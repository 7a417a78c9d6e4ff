"""Evaluation of classification models over a split: per-task probabilities and labels, then metrics."""

from __future__ import annotations

import numpy as np
import torch

from core import distributed
from core.distributed import SINGLE, Dist
from core.experts import route
from core.kinds.classification.dataset import task_labels
from core.kinds.classification.metrics import classification_metrics
from core.kinds.classification.tasks import TaskSpec


@torch.no_grad()
def predict_tasks(
    forward, loader, specs: list[TaskSpec], device: torch.device, dist_info: Dist = SINGLE
) -> dict[int, tuple]:
    """Run `forward(x, task_ids) -> (features, per-task logits)` over a loader; probs and labels per task
    (gathered from every rank in a distributed run, where each rank's loader holds a share)."""
    probs: dict[int, list[np.ndarray]] = {}
    labels: dict[int, list[np.ndarray]] = {}
    for batch in loader:
        x, y, tid = batch["image"].to(device), batch["label"], batch["task"]
        _, logits = forward(x, tid.to(device))
        for t, lg in enumerate(logits):
            if lg is None:
                continue
            spec = specs[t]
            p = torch.sigmoid(lg) if spec.kind == "multilabel" else torch.softmax(lg.float(), dim=1)
            probs.setdefault(t, []).append(p.float().cpu().numpy())
            labels.setdefault(t, []).append(task_labels(y[tid == t], spec).numpy())
    if dist_info.enabled:
        for share_p, share_y in distributed.gather_objects((probs, labels), dist_info)[1:]:
            for t in share_p:
                probs.setdefault(t, []).extend(share_p[t])
                labels.setdefault(t, []).extend(share_y[t])
    return {t: (np.concatenate(probs[t]), np.concatenate(labels[t])) for t in sorted(probs)}


def task_metrics(
    forward, loader, specs: list[TaskSpec], device: torch.device, dist_info: Dist = SINGLE
) -> dict[str, dict[str, float]]:
    """{task name: {"acc", "auc"}} of `forward` over `loader`."""
    out = {}
    for t, (p, y) in predict_tasks(forward, loader, specs, device, dist_info).items():
        out[specs[t].name] = classification_metrics(p, y, specs[t].kind)
    return out


def routed(student: torch.nn.Module):
    """`student`'s forward with each sample through its own task's experts."""

    def forward(x: torch.Tensor, tid: torch.Tensor):
        with route(student, tid):
            return student(x, tid)

    return forward
