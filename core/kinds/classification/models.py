"""Multi-task networks: shared features + per-task heads, for the foundation model (teacher) and the
common backbone (student); and the standalone expert model built from a merged backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.kinds.classification.heads import TaskHeads
from core.kinds.classification.nets import ClassifierNet, FeatureNet


class MultiTaskNet(nn.Module):
    """`features` (x -> (B, F)) followed by `heads` (one linear classifier per task).

    heads may be None (a foundation model loaded from a plain feature-extractor checkpoint): the
    forward then returns None instead of the logits list.
    """

    def __init__(self, features: nn.Module, heads: TaskHeads | None) -> None:
        super().__init__()
        self.features = features
        self.heads = heads

    @property
    def num_tasks(self) -> int:
        return 0 if self.heads is None else self.heads.num_tasks

    @property
    def backbone(self) -> nn.Module:
        """The part that holds the low-rank experts (the features)."""
        return self.features

    def forward(
        self, x: torch.Tensor, task_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor | None] | None]:
        """(features (B, F), per-task logits) — see `TaskHeads.forward`. Without heads or without
        task_ids the logits are None."""
        feats = self.features(x)
        if self.heads is None or task_ids is None:
            return feats, None
        return feats, self.heads(feats, task_ids)


def _multitask(
    arch: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: list[int],
    image_size: int | Sequence[int] | None,
) -> MultiTaskNet:
    features = FeatureNet(arch, spatial_dims, in_channels, image_size)
    return MultiTaskNet(features, TaskHeads(features.out_features, list(num_classes)))


def build_teacher(
    arch: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: list[int],
    image_size: int | Sequence[int] | None = None,
) -> MultiTaskNet:
    """A foundation model to pre-train on all tasks: FeatureNet(arch) + one head per task."""
    return _multitask(arch, spatial_dims, in_channels, num_classes, image_size)


def build_backbone(
    arch: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: list[int],
    image_size: int | Sequence[int] | None = None,
) -> MultiTaskNet:
    """The common backbone (a small FeatureNet, e.g. "compact") + one head per task. Task experts are
    attached to `.features` afterwards by `core.experts.attach_experts`."""
    return _multitask(arch, spatial_dims, in_channels, num_classes, image_size)


class TeacherTaskView(nn.Module):
    """The foundation model as a standalone network of one task: its features and that task's head."""

    def __init__(self, teacher: MultiTaskNet, task: int) -> None:
        super().__init__()
        self.features, self.head = teacher.features, teacher.heads.heads[task]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def expert_network(
    features_plain: nn.Module, head: nn.Linear, arch: str, spatial_dims: int, in_channels: int
) -> ClassifierNet:
    """The standalone expert model: a `ClassifierNet` holding the plain (merged, expert-free) feature
    weights of `features_plain` and `head`, both loaded with strict=True. Returned on the CPU in eval
    mode."""
    net = ClassifierNet(arch, spatial_dims, in_channels, head.out_features)
    if head.in_features != net.features.out_features:
        raise ValueError(
            f"head takes {head.in_features} features but {arch} gives {net.features.out_features}"
        )
    net.features.load_state_dict(features_plain.state_dict(), strict=True)
    net.head.load_state_dict(head.state_dict(), strict=True)
    return net.eval()
