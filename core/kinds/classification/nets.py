"""Network definitions shared by training and by exported bundles.

This module is self-contained (imports only torch and monai): export copies it verbatim into each
expert bundle as `scripts/lorkd_nets.py`, so a bundle runs without LoRKD Studio installed.

Architectures (`ARCHS`): the MONAI ResNets (resnet10 ... resnet101) and DenseNet121 as foundation
models, and "compact" (and the narrower "compact_small"), a ShuffleNetV2-style network (the LoRKD
paper's student) sized for small (28 px) medical images, as the common backbone. Every one serves 1D,
2D and 3D through `spatial_dims`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks import nets as monai_nets
from monai.networks.layers.factories import Conv, Norm
from torch import nn

RESNETS = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}

# compact: (output channels, number of units) per stage; each stage starts with a stride-2 unit.
COMPACT_STEM = 24
COMPACT_STAGES = ((64, 4), (128, 6), (256, 4))
COMPACT_OUT = 1024
# the compact variants: (stem channels, stages, output features). "compact_small" has ShuffleNetV2 0.5x's
# stage widths (48, 96, 192): 14.5x fewer multiply-adds than a ResNet-18 at 28 px (compact: 9.5x)
COMPACTS = {
    "compact": (COMPACT_STEM, COMPACT_STAGES, COMPACT_OUT),
    "compact_small": (COMPACT_STEM, ((48, 4), (96, 6), (192, 4)), COMPACT_OUT),
}

ARCHS = (*RESNETS, "densenet121", *COMPACTS)

# Smallest input side each arch accepts. DenseNet121 halves the image five times (stem conv, max
# pool, three transitions with a 2-wide average pool that needs >= 2 px), so it needs >= 32 px;
# the ResNets (stride-1 stem) and compact pad every strided layer and accept any size.
_MIN_IMAGE_SIZE = {"densenet121": 32}


def min_image_size(arch: str) -> int:
    """The smallest image side (every spatial dimension, in pixels/voxels) that `arch` accepts."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return _MIN_IMAGE_SIZE.get(arch, 1)


def check_image_size(arch: str, image_size: int | Sequence[int]) -> None:
    """Raise ValueError when `arch` cannot take an image of side(s) `image_size`."""
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    need = min_image_size(arch)
    if min(sizes) < need:
        raise ValueError(
            f"{arch} needs images of at least {need} px per side, got {'x'.join(map(str, sizes))}; "
            f"use a larger image size or another architecture"
        )


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of `groups` groups (ShuffleNet), for any number of spatial dims."""
    b, c = x.shape[:2]
    return x.reshape(b, groups, c // groups, -1).transpose(1, 2).reshape(x.shape)


def _conv_bn(
    spatial_dims: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        Conv[Conv.CONV, spatial_dims](cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        Norm[Norm.BATCH, spatial_dims](cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit for any `spatial_dims`.

    stride 1: split the channels in half; one half passes, the other goes 1x1 -> depthwise 3x3 ->
    1x1; concatenate and shuffle. stride 2 (downsampling, `in_channels` -> `out_channels`): both
    branches see all channels (depthwise 3x3 stride 2 -> 1x1, and 1x1 -> depthwise 3x3 stride 2 ->
    1x1), concatenate and shuffle. Only the depthwise convolutions have groups > 1.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 unit keeps its channels (in_channels == out_channels)")
        self.stride = stride
        half = out_channels // 2
        branch_in = in_channels if stride == 2 else half
        if stride == 2:
            self.branch1 = nn.Sequential(
                _conv_bn(spatial_dims, in_channels, in_channels, 3, 2, groups=in_channels, relu=False),
                _conv_bn(spatial_dims, in_channels, half, 1),
            )
        else:
            self.branch1 = nn.Identity()
        self.branch2 = nn.Sequential(
            _conv_bn(spatial_dims, branch_in, half, 1),
            _conv_bn(spatial_dims, half, half, 3, stride, groups=half, relu=False),
            _conv_bn(spatial_dims, half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, x2 = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class CompactNet(nn.Module):
    """A compact ShuffleNetV2-style CNN for 1D/2D/3D images: x -> pooled features (B, out_features).

    Stem 3x3 conv (stride 1, no max pool: inputs are small, e.g. 28 px) + BN + ReLU, then `stages`
    of ShuffleNetV2 units (each stage starts with a stride-2 unit), a final 1x1 conv to
    `out_features` + BN + ReLU, and global average pooling.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        stem_channels: int = COMPACT_STEM,
        stages: Sequence[tuple[int, int]] = COMPACT_STAGES,
        out_features: int = COMPACT_OUT,
    ) -> None:
        super().__init__()
        self.out_features = out_features
        self.stem = _conv_bn(spatial_dims, in_channels, stem_channels, 3)
        blocks: list[nn.Module] = []
        cin = stem_channels
        for cout, repeats in stages:
            units = [ShuffleUnit(spatial_dims, cin, cout, 2)]
            units += [ShuffleUnit(spatial_dims, cout, cout, 1) for _ in range(repeats - 1)]
            blocks.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*blocks)
        self.head_conv = _conv_bn(spatial_dims, cin, out_features, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.stages(self.stem(x)))
        return x.flatten(2).mean(dim=2)


class FeatureNet(nn.Module):
    """A classification network without its last linear layer: x -> pooled features (B, F).

    arch: one of `ARCHS` (MONAI resnet10/18/34/50/101 with feed_forward=False, DenseNet121 with its
    last linear layer replaced by Identity, "compact" or "compact_small"). image_size: when given, checked against
    `min_image_size(arch)` (ValueError if too small); inputs are also checked at run time.
    """

    def __init__(
        self,
        arch: str,
        spatial_dims: int = 2,
        in_channels: int = 3,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
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
        elif arch in COMPACTS:
            self.body = CompactNet(spatial_dims, in_channels, *COMPACTS[arch])
            self.out_features = self.body.out_features
        else:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        self.min_size = min_image_size(arch)
        if image_size is not None:
            check_image_size(arch, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.min_size > 1 and not torch.jit.is_tracing():
            if min(x.shape[2:]) < self.min_size:
                check_image_size(self.arch, tuple(x.shape[2:]))
        return self.body(x)


class ClassifierNet(nn.Module):
    """Features + one linear head: the standalone expert model that bundles ship."""

    def __init__(
        self,
        arch: str,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.features = FeatureNet(arch, spatial_dims, in_channels, image_size)
        self.head = nn.Linear(self.features.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
