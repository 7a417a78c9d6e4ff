"""Evaluation of classification models over a split: per-task probabilities and labels, then metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

from core import distributed
from core.distributed import SINGLE, Dist
from core.experts import route
from core.kinds.base import TaskScores
from core.kinds.classification.dataset import task_labels
from core.kinds.classification.metrics import classification_metrics
from core.kinds.classification.runtime import predict
from core.kinds.classification.tasks import TaskSpec
from core.preprocess.image import prepare


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


TEST_CHUNK = 256  # images per prepare/predict call in the test (bounds the float copies)


def test_scores(net: torch.nn.Module, images: np.ndarray, targets: np.ndarray, spec: TaskSpec, image_size: int,
                in_channels: int, device: torch.device, dist_info: Dist = SINGLE) -> TaskScores:
    """One task's test scores of a standalone network through the bundle's own functions (`prepare` on the images
    as stored, then `runtime.predict`): each test image is a case. The headline is accuracy (multi-class: top-1
    correct; a mean of per-case values) or AUC (multi-label: the mean over labels, recomputed on the cases).
    Distributed (`dist_info`): the images in chunks shared by the ranks (at most TEST_CHUNK each, so that every rank
    gets some), the probabilities gathered in image order; metrics and per-case rows from all of them."""
    net = net.to(device).eval()
    chunk = max(1, min(TEST_CHUNK, math.ceil(len(images) / dist_info.world_size)))  # one process: TEST_CHUNK

    def chunk_probs(i: int) -> np.ndarray:
        part = images[i * chunk:(i + 1) * chunk]
        return predict(net, prepare(part, image_size, in_channels, spec.spatial_dims), spec.kind)

    probs = np.concatenate(distributed.shared_map(chunk_probs, math.ceil(len(images) / chunk), dist_info))
    targets = np.asarray(targets)
    metrics = classification_metrics(probs, targets, spec.kind)
    if spec.kind == "multiclass":
        correct = (probs.argmax(axis=1) == targets.reshape(-1)).astype(np.float64)
        per_case = [{"case": i, "correct": float(c), "p_true": float(probs[i, int(targets[i])])}
                    for i, c in enumerate(correct)]

        def headline(indices) -> float:
            return float(correct[np.asarray(indices)].mean())
    else:
        per_case = [{"case": i, "acc": float(((probs[i] >= 0.5) == targets[i].astype(bool)).mean())}
                    for i in range(len(probs))]

        def headline(indices) -> float:
            indices = np.asarray(indices)
            return classification_metrics(probs[indices], targets[indices], spec.kind)["auc"]
    return TaskScores(metrics, per_case, headline, f"{spec.metric} over {len(per_case)} test images")


def routed(student: torch.nn.Module):
    """`student`'s forward with each sample through its own task's experts."""

    def forward(x: torch.Tensor, tid: torch.Tensor):
        with route(student, tid):
            return student(x, tid)

    return forward
