"""Segmentation losses of the extended LoRKD: per task Dice + cross-entropy on the task's own classes, plus
voxel-level distillation from the foundation model's logits for those classes.

L_t = Dice(softmax(s_t), y_t) + CE(s_t, y_t) + beta * tau^2 * mean_voxels KL(softmax(p_t / tau) || softmax(s_t / tau))

with s_t the expert's logits (n_t, K_t + 1, ...), p_t the teacher's slice of channels for task t and y_t the
task-local labels (n_t, 1, ...). All terms are means over the task's samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (background excluded when there are others), per sample
    then averaged; a class absent from a sample's target and prediction scores Dice 1 (eps smoothing)."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)  # (n, C)
    if dice.shape[1] > 1:
        dice = dice[:, 1:]
    return 1 - dice.mean()


def seg_task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + CE of one task's samples (mean over samples and voxels); target (n, 1, ...) class indices."""
    ce = F.cross_entropy(logits.float(), target[:, 0].long())
    return soft_dice_loss(logits, target) + ce


def seg_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """tau^2-scaled KL(teacher || student) over the class axis, averaged over samples and voxels."""
    tau = temperature
    log_q = F.log_softmax(student.float() / tau, dim=1)
    log_p = F.log_softmax(teacher.float() / tau, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return kl.mean() * tau * tau
