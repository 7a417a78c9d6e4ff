"""Segmentation losses of the extended LoRKD: per task Dice + cross-entropy on the task's own classes, plus
voxel-level distillation from the foundation model's logits for those classes.

L_t = Dice(softmax(s_t), y_t) + CE(s_t, y_t) + beta * tau^2 * mean_voxels KL(softmax(p_t / tau) || softmax(s_t / tau))

with s_t the expert's logits (n_t, K_t + 1, ...), p_t the teacher's slice of channels for task t and y_t the
task-local labels (n_t, 1, ...). All terms are means over the task's samples and over the voxels whose label is
not IGNORE (held-out regions: no loss looks at them). The Dice term (MONAI's `DiceLoss`) leaves the background
out and is averaged over samples and structures; a structure absent from a sample's target and prediction scores
Dice 1 (the 1e-5 smoothing of numerator and denominator). Without ignored voxels the first two terms are exactly
MONAI's `DiceCELoss` (which has no ignore index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from core.kinds.segmentation.data import IGNORE

DICE = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5,
                ignore_index=IGNORE)


def seg_task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + CE of one task's samples (means over samples and labelled voxels); target (n, 1, ...) class indices
    or IGNORE."""
    logits, target = logits.float(), target.long()
    return DICE(logits, target) + F.cross_entropy(logits, target[:, 0], ignore_index=IGNORE)


def seg_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                target: torch.Tensor | None = None) -> torch.Tensor:
    """tau^2-scaled KL(teacher || student) over the class axis, averaged over samples and voxels (only those whose
    `target` label is not IGNORE, when given)."""
    tau = temperature
    log_q = F.log_softmax(student.float() / tau, dim=1)
    log_p = F.log_softmax(teacher.float() / tau, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if target is not None:
        keep = (target[:, 0] != IGNORE).to(kl.dtype)
        return (kl * keep).sum() / keep.sum().clamp_min(1.0) * tau * tau
    return kl.mean() * tau * tau
