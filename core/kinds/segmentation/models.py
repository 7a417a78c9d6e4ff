"""Segmentation models of a LoRKD run: the multi-label foundation model, the common backbone with low-rank
experts on every convolution (decoder convs at `decoder_rank_factor` x the rank) and one 1x1x1 head per
task, and the standalone expert model built from a merged backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ConfigError
from core.experts import attach_experts
from core.kinds.segmentation.nets import MONAI_BODIES, SegExpertNet, SegNet, build_body, is_decoder


def task_slices(num_classes: Sequence[int]) -> list[slice]:
    """Channel slice of each task in the foundation model's output (task t: background + K_t structures)."""
    out, start = [], 0
    for n in num_classes:
        out.append(slice(start, start + int(n)))
        start += int(n)
    return out


class SegTeacher(SegNet):
    """The multi-task foundation model: one network whose output channels are the tasks' slices (task t:
    background + its K_t structures). forward(x) gives all channels; forward(x, task_ids) gives (None, per-task
    logits) with task t's samples and channels, like the backbone (same state_dict keys as `SegNet`)."""

    def __init__(self, arch: str, in_channels: int, num_classes: Sequence[int], channels: Sequence[int],
                 res_units: int = 1) -> None:
        super().__init__(arch, in_channels, sum(int(n) for n in num_classes), channels, res_units=res_units)
        self.slices = task_slices(num_classes)

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None):
        logits = self.body(x)
        if task_ids is None:
            return logits
        parts = split_by_task(logits, task_ids, len(self.slices))
        return None, [None if p is None else p[:, s] for p, s in zip(parts, self.slices, strict=True)]


def build_seg_teacher(arch: str, in_channels: int, num_classes: Sequence[int], channels: Sequence[int],
                      res_units: int = 1) -> SegTeacher:
    """The foundation model: one network whose output channels cover every task's classes."""
    return SegTeacher(arch, in_channels, num_classes, channels, res_units)


def split_by_task(x: torch.Tensor, task_ids: torch.Tensor, num_tasks: int) -> list[torch.Tensor | None]:
    """The rows of `x` of each task (in batch order), None for absent tasks."""
    out: list[torch.Tensor | None] = []
    for t in range(num_tasks):
        mask = task_ids == t
        out.append(x[mask] if bool(mask.any()) else None)
    return out


class SegMultiTaskNet(nn.Module):
    """The common backbone: body (features channels) -> LeakyReLU -> one 1x1x1 conv head per task.

    forward(x, task_ids) -> (None, per-task logits (n_t, num_classes[t], *spatial) in batch order, None for tasks
    without samples). Route the body (`core.experts.route`) to use each sample's expert.
    """

    def __init__(
        self, arch: str, in_channels: int, num_classes: Sequence[int], channels: Sequence[int],
        features: int | None = None, res_units: int = 1, net: dict | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.channels = [int(c) for c in channels]
        self.features = int(features or channels[0])
        self.num_classes = [int(n) for n in num_classes]
        self.res_units = int(res_units)
        self.net = net
        self.body = build_body(arch, in_channels, self.features, self.channels, res_units=self.res_units, net=net)
        self.act = nn.LeakyReLU(0.1)
        self.heads = nn.ModuleList(nn.Conv3d(self.features, n, 1) for n in self.num_classes)

    @property
    def num_tasks(self) -> int:
        return len(self.heads)

    @property
    def backbone(self) -> nn.Module:
        """The part that holds the low-rank experts."""
        return self.body

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> tuple[None, list[torch.Tensor | None]]:
        feats = self.act(self.body(x))
        parts = split_by_task(feats, task_ids, self.num_tasks)
        return None, [None if p is None else head(p) for head, p in zip(self.heads, parts, strict=True)]


def build_seg_backbone(
    arch: str,
    in_channels: int,
    num_classes: Sequence[int],
    channels: Sequence[int],
    ranks: Sequence[int],
    alpha: float = 16.0,
    decoder_rank_factor: int = 2,
    form: str = "factorized",
    res_units: int = 1,
    spec: dict | None = None,
) -> SegMultiTaskNet:
    """The backbone with experts on every convolution of its body: task t gets rank ranks[t] on encoder
    convs and decoder_rank_factor * ranks[t] on decoder convs (heads are per task already). `spec`: the
    body's MONAI arguments for arch "monai.<class>" (`same_architecture`)."""
    net = SegMultiTaskNet(arch, in_channels, num_classes, channels, res_units=res_units, net=spec)
    attach_experts(
        net.body,
        len(num_classes),
        ranks=list(ranks),
        alpha=alpha,
        form=form,
        rank_multiplier=lambda name, module: decoder_rank_factor if is_decoder(arch, name) else 1,
    )
    return net


def seg_expert_network(body_plain: nn.Module, head: nn.Module, arch: str, in_channels: int,
                       channels: Sequence[int], res_units: int = 1, spec: dict | None = None) -> SegExpertNet:
    """The standalone expert model from a merged (plain) body and one head, strict-loaded, CPU, eval."""
    net = SegExpertNet(arch, in_channels, head.out_channels, channels, head.in_channels, res_units=res_units,
                       net=spec)
    net.body.load_state_dict(body_plain.state_dict(), strict=True)
    net.head.load_state_dict(head.state_dict(), strict=True)
    return net.cpu().eval()


def _scaled(values: Sequence[int], width: float, least: int = 2, multiple: int = 1) -> list[int]:
    return [max(least, int(round(v * width / multiple)) * multiple) for v in values]


def same_architecture(net_class: str | None, kwargs: dict | None, width: float, where: str
                      ) -> tuple[str, list[int], dict]:
    """(arch, channels per level, MONAI arguments) of a student with the foundation model's own architecture at
    `width` times its channels (`backbone.arch: same`): UNet channels, BasicUNet features, SegResNet init_filters
    (a multiple of 8, its group norm's groups), DynUNet filters (deep supervision off). The body's output is the
    first level's width (the features the task heads read). Raises ConfigError (at `where`) saying why a model
    cannot be shrunk this way."""
    from monai.networks.nets import DynUNet  # noqa: F401 - the class must exist in this MONAI

    if net_class not in MONAI_BODIES or kwargs is None:
        what = f"a {net_class}" if net_class else "a model without a network_def (TorchScript)"
        raise ConfigError(f"arch same works for UNet, BasicUNet, SegResNet and DynUNet foundation models "
                         f"from a bundle's network_def; this is {what} (use arch unet or segresnet)", where)
    computed = [k for k, v in kwargs.items() if isinstance(v, str) and v.startswith(("$", "@", "%"))]
    if computed:
        raise ConfigError(f"the foundation model's network_def computes {computed[0]} with an expression; arch same "
                          f"needs plain values (use arch unet or segresnet)", where)
    spec = {k: v for k, v in kwargs.items() if k not in ("spatial_dims", "in_channels", "out_channels")}
    if int(kwargs.get("spatial_dims", 3)) != 3:
        raise ConfigError("the foundation model is not 3D", where)
    if net_class == "UNet":
        spec["channels"] = _scaled(kwargs["channels"], width)
        levels = spec["channels"]
    elif net_class == "BasicUNet":
        spec["features"] = _scaled(kwargs.get("features", (32, 32, 64, 128, 256, 32)), width)
        levels = spec["features"][:5]
    elif net_class == "SegResNet":
        init = _scaled([kwargs.get("init_filters", 8)], width, least=8, multiple=8)[0]
        spec["init_filters"] = init
        levels = [init * 2 ** i for i in range(len(kwargs.get("blocks_down", (1, 2, 2, 4))))]
    else:  # DynUNet
        depth = len(kwargs["strides"])
        filters = kwargs.get("filters") or [min(2 ** (5 + i), 320) for i in range(depth)]
        spec["filters"] = _scaled(filters, width)
        spec["deep_supervision"] = False
        spec.pop("deep_supr_num", None)
        levels = spec["filters"]
    return f"monai.{net_class}", [int(v) for v in levels], spec
