"""Model size and compute: parameter counts and multiply-accumulate operations (MACs).

MACs are counted by forward hooks on the layers that dominate compute: Conv1d/2d/3d (output
elements x in_channels/groups x kernel volume), ConvTranspose1d/2d/3d (input elements x
out_channels/groups x kernel volume) and Linear (rows x in_features x out_features). Normalisation,
activations, pooling and biases are not counted (the usual convention). Layers replaced by expert
wrappers are not counted either: measure a merged (plain) network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `module` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def layer_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one Conv/ConvTranspose/Linear call with input `inp` and output `out` (0 for others)."""
    if isinstance(layer, _CONV):
        return out.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
    if isinstance(layer, _CONVT):
        return inp.numel() * (layer.out_channels // layer.groups) * math.prod(layer.kernel_size)
    if isinstance(layer, nn.Linear):
        return (inp.numel() // layer.in_features) * layer.in_features * layer.out_features
    return 0


def count_macs(module: nn.Module, input_shape: Sequence[int], *args, **kwargs) -> int:
    """MACs of one forward pass of `module` on a zero tensor of `input_shape` (batch included).

    Runs in eval mode under no_grad on the module's device and dtype, then restores the mode.
    Extra `args`/`kwargs` are passed to the forward (e.g. task ids). A layer called twice counts twice.
    """
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(layer, inputs[0], output)

    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    counted = _CONV + _CONVT + (nn.Linear,)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, counted)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(tuple(input_shape), device=device, dtype=dtype), *args, **kwargs)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total


def summarize(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """{"params": parameter count, "macs": MACs of one forward pass on `input_shape`}."""
    return {"params": count_parameters(model), "macs": count_macs(model, input_shape)}
