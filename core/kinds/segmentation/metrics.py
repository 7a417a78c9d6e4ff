"""Segmentation metrics: per label Dice and HD95 (MONAI), per task means."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice, compute_hausdorff_distance


def label_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                  spacing: Sequence[float]) -> dict[int, tuple[float, float]]:
    """{label: (dice, hd95 in mm)} for labels 1..num_classes-1 of one volume (X, Y, Z) integer maps.
    Dice is 1 when the label is absent from both; HD95 is nan when either map lacks the label."""
    p = F.one_hot(pred.long(), num_classes).movedim(-1, 0)[None].float()
    y = F.one_hot(target.long(), num_classes).movedim(-1, 0)[None].float()
    dice = compute_dice(p, y, include_background=False, ignore_empty=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, y, include_background=False, percentile=95,
                                        spacing=[float(s) for s in spacing])[0]
    out = {}
    for k in range(1, num_classes):
        has_p, has_y = bool(p[0, k].any()), bool(y[0, k].any())
        h = float(hd[k - 1]) if has_p and has_y else math.nan
        out[k] = (float(dice[k - 1]), h if math.isfinite(h) else math.nan)
    return out


def task_summary(per_case: list[dict[int, tuple[float, float]]], class_names: Sequence[str]) -> dict[str, float]:
    """Means over the held-out cases: "dice", "hd95" (over labels) and "dice/<label>", "hd95/<label>"."""
    out: dict[str, float] = {}
    dices, hds = [], []
    for k in range(1, len(class_names)):
        d = float(np.mean([c[k][0] for c in per_case]))
        h_values = [c[k][1] for c in per_case if not math.isnan(c[k][1])]
        h = float(np.mean(h_values)) if h_values else math.nan
        out[f"dice/{class_names[k]}"] = d
        out[f"hd95/{class_names[k]}"] = h
        dices.append(d)
        hds.append(h)
    finite = [h for h in hds if not math.isnan(h)]
    return {"dice": float(np.mean(dices)), "hd95": float(np.mean(finite)) if finite else math.nan, **out}
