"""Segmentation network definitions shared by training and by exported segmentation bundles.

Self-contained (imports only torch and monai): export copies this file verbatim into each segmentation
expert bundle as `scripts/lorkd_seg_nets.py`, so a bundle runs without LoRKD Studio installed.

- `SegNet`: a MONAI UNet or SegResNet with `out_channels` logits: the multi-task foundation model, whose
  output channels are the concatenated per-task slices (task t: background + its K_t structures).
- `SegExpertNet`: a body (UNet / SegResNet) giving `features` channels, a LeakyReLU, and a 1x1x1 conv
  head to one task's classes: the standalone expert model (the backbone with one expert merged in).
- `is_decoder(arch, name)`: whether a convolution (by its module name inside the body) is on the decoder
  path (the extended LoRKD gives decoder convs twice the encoder rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SegResNet, UNet
from torch import nn

SEG_ARCHS = ("unet", "segresnet")
# "monai.<class>": a student of a user's foundation model's own architecture, built from `net` (its arguments)
MONAI_BODIES = ("UNet", "BasicUNet", "SegResNet", "DynUNet")


def build_body(
    arch: str, in_channels: int, out_channels: int, channels: Sequence[int], spatial_dims: int = 3,
    res_units: int = 1, net: dict | None = None,
) -> nn.Module:
    """A MONAI UNet (channels per level, stride 2 between levels, `res_units` residual units per block (0: plain
    conv blocks), instance norm) or SegResNet (init_filters = channels[0], len(channels) levels); or, for arch
    "monai.<class>" (one of MONAI_BODIES), that MONAI network built from the arguments `net`."""
    if arch.startswith("monai."):
        name = arch[len("monai."):]
        if name not in MONAI_BODIES or not isinstance(net, dict):
            raise ValueError(f"unknown segmentation architecture {arch!r} (or no arguments for it)")
        import monai.networks.nets as nets

        kwargs = {**net, "spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels}
        return getattr(nets, name)(**kwargs)
    channels = [int(c) for c in channels]
    if arch == "unet":
        return UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=[2] * (len(channels) - 1),
            num_res_units=int(res_units),
        )
    if arch == "segresnet":
        blocks = tuple([1] + [2] * (len(channels) - 1))
        return SegResNet(
            spatial_dims=spatial_dims,
            init_filters=channels[0],
            in_channels=in_channels,
            out_channels=out_channels,
            blocks_down=blocks,
            blocks_up=(1,) * (len(channels) - 1),
        )
    raise ValueError(f"unknown segmentation architecture {arch!r}; choose one of {', '.join(SEG_ARCHS)}")


def divisor(arch: str, channels: Sequence[int]) -> int:
    """Input sides must be multiples of this (the total downsampling of the body)."""
    return 2 ** (len(channels) - 1)


def is_decoder(arch: str, name: str) -> bool:
    """Whether the conv named `name` (inside the body) is on the decoder (upsampling) path.

    MONAI UNet nests blocks as Sequential(down, SkipConnection(submodule), up): a module under index 2 of
    `model` or of a `submodule` is an up block. SegResNet: `up_layers`, `up_samples` and `conv_final`.
    """
    parts = name.split(".")
    if arch == "monai.BasicUNet":
        return parts[0].startswith("upcat") or parts[0] == "final_conv"
    if arch == "monai.DynUNet":
        return parts[0] in ("upsamples", "output_block", "deep_supervision_heads")
    if arch in ("unet", "monai.UNet"):
        return any(p == "2" and i > 0 and parts[i - 1] in ("model", "submodule") for i, p in enumerate(parts))
    return parts[0] in ("up_layers", "up_samples", "conv_final")


class SegNet(nn.Module):
    """A multi-label foundation model: x (B, C, X, Y, Z) -> logits (B, out_channels, X, Y, Z)."""

    def __init__(
        self, arch: str, in_channels: int, out_channels: int, channels: Sequence[int], spatial_dims: int = 3,
        res_units: int = 1,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.body = build_body(arch, in_channels, out_channels, channels, spatial_dims, res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SegExpertNet(nn.Module):
    """One task's expert model: body -> LeakyReLU -> 1x1x1 head to `num_classes` logits (background first)."""

    def __init__(
        self,
        arch: str,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int],
        features: int | None = None,
        spatial_dims: int = 3,
        res_units: int = 1,
        net: dict | None = None,
    ) -> None:
        super().__init__()
        features = int(features or channels[0])
        self.body = build_body(arch, in_channels, features, channels, spatial_dims, res_units, net)
        self.act = nn.LeakyReLU(0.1)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
        self.head = conv(features, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.body(x)))
