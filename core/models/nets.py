"""Network definitions shared by training and by exported bundles.

This module is self-contained (imports only torch and monai): export copies it verbatim into each
expert bundle as `scripts/lorkd_nets.py`, so a bundle runs without LoRKD Studio installed.
"""

from __future__ import annotations

import torch
from monai.networks import nets as monai_nets
from torch import nn

RESNETS = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


class FeatureNet(nn.Module):
    """A MONAI classification network without its last linear layer: x -> pooled features (B, F)."""

    def __init__(self, arch: str, spatial_dims: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        self.arch = arch
        if arch in RESNETS:
            self.body = getattr(monai_nets, arch)(
                spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False
            )
            self.out_features = RESNETS[arch]
        elif arch == "densenet121":
            body = monai_nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
            self.out_features = body.class_layers.out.in_features
            body.class_layers.out = nn.Identity()
            self.body = body
        else:
            raise ValueError(f"unknown architecture {arch!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ClassifierNet(nn.Module):
    """Features + one linear head: the standalone expert model that bundles ship."""

    def __init__(self, arch: str, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.features = FeatureNet(arch, spatial_dims, in_channels)
        self.head = nn.Linear(self.features.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
