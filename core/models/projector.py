"""The trainable projector of feature distillation (student features -> the teacher's feature size)."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Trainable linear map from student features to the teacher's feature size (feature KD).

    norm=True adds a BatchNorm1d after the linear layer; it is off by default because the projector
    sees one task's samples at a time, which can be a single sample (BatchNorm cannot train on one).
    Accepts (..., in_features) and returns (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, norm: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features, bias=not norm)
        self.norm = nn.BatchNorm1d(out_features) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if isinstance(self.norm, nn.BatchNorm1d):
            y = self.norm(y.reshape(-1, self.out_features)).reshape(y.shape)
        return y
