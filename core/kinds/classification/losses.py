"""The LoRKD loss (CVPR paper): per-task CE/BCE plus beta * tau^2 * KL distillation from the teacher.

L = 1/B * sum_t sum_{i in task t} [ CE(head_t(f_i^s), y_i) + beta * tau^2 * KL(s(f_i^p / tau) || s(f_i^s / tau)) ]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed (not averaged) supervised loss of one task's samples."""
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").mean(dim=1).sum()
    return F.cross_entropy(logits, target.long(), reduction="sum")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, kind: str = "multiclass") -> torch.Tensor:
    """Summed tau^2-scaled KL(teacher || student) over the samples.

    kind "multiclass" (and pooled features): softmax over the last dim; "multilabel": one Bernoulli
    per label (sigmoid), averaged over labels.
    """
    tau = temperature
    if kind == "multilabel":
        p = torch.sigmoid(teacher / tau)
        log_q = F.logsigmoid(student / tau)
        log_1q = F.logsigmoid(-student / tau)
        eps = 1e-7
        kl = p * (torch.log(p + eps) - log_q) + (1 - p) * (torch.log(1 - p + eps) - log_1q)
        return kl.mean(dim=1).sum() * tau * tau
    log_q = F.log_softmax(student / tau, dim=-1)
    log_p = F.log_softmax(teacher / tau, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") * tau * tau
