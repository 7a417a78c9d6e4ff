"""Knowledge-separation routing: which expert each sample of a mixed-task batch goes through.

`route(model, task_ids)` sets one `RoutePlan` on every expert layer for the duration of a `with`
block; the network's own forward is untouched, so this works on unmodified MONAI networks.
A batch sorted by task (what `MultiTaskBatchSampler` yields) is split into contiguous views; an
unsorted batch costs one gather and one scatter per layer. Sorting a batch changes nothing in the
maths (batch norm statistics do not depend on the order).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.experts.layer import ExpertConv
from core.experts.plan import RoutePlan


def expert_layers(model: nn.Module) -> Iterator[ExpertConv]:
    for module in model.modules():
        if isinstance(module, ExpertConv):
            yield module


@contextmanager
def route(model: nn.Module, task_ids: torch.Tensor, impl: str = "fast") -> Iterator[RoutePlan]:
    """Inside the block, sample b of every forward pass uses expert `task_ids[b]`.

    impl: "fast" (production) or "reference" (the paper's per-sample grouped conv; tests only).
    Routes nest; leaving the block restores the previous routing (or the plain backbone).
    """
    if impl not in ("fast", "reference"):
        raise ValueError(f"impl must be 'fast' or 'reference', got {impl!r}")
    layers = list(expert_layers(model))
    if not layers:
        raise ValueError("the model has no expert layers: call attach_experts first")
    plan = RoutePlan(task_ids, layers[0].num_tasks)
    previous = [(layer.plan, layer.impl) for layer in layers]
    for layer in layers:
        layer.plan, layer.impl = plan, impl
    try:
        yield plan
    finally:
        for layer, (old_plan, old_impl) in zip(layers, previous, strict=True):
            layer.plan, layer.impl = old_plan, old_impl
