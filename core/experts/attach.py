"""Attach experts to a network, and merge, unmerge or switch them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

from torch import nn

from core.experts.layer import ExpertConv, is_eligible
from core.experts.routing import expert_layers


def attach_experts(
    model: nn.Module,
    num_tasks: int,
    rank: int = 4,
    alpha: float = 16.0,
    ranks: list[int] | None = None,
    form: str = "factorized",
    linear: bool = False,
    rank_multiplier: Callable[[str, nn.Module], int] | None = None,
) -> nn.Module:
    """Replace every Conv1d/2d/3d and ConvTranspose with groups == 1 (and Linear if `linear`) by an
    `ExpertConv` with one low-rank expert per task, in place; returns `model`.

    ranks: one rank per task (default `rank` for all). rank_multiplier(name, module) scales the
    ranks of one layer (the extended LoRKD gives U-Net decoder convs twice the encoder rank).
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    task_ranks = list(ranks) if ranks is not None else [rank] * num_tasks
    if len(task_ranks) != num_tasks:
        raise ValueError(f"ranks has {len(task_ranks)} entries for {num_tasks} tasks")
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if is_eligible(module, linear) and not isinstance(module, ExpertConv)
    ]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no convolution with groups == 1 to attach experts to")
    for name, module in targets:
        factor = rank_multiplier(name, module) if rank_multiplier else 1
        layer = ExpertConv(module, [r * factor for r in task_ranks], alpha=alpha, form=form)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    return model


def merge_expert(model: nn.Module, task: int | None) -> nn.Module:
    """A NEW plain network (no expert layers) equal to `model` routed to `task` (None: the backbone W0)."""
    memo = {id(layer): layer.to_plain(task) for layer in expert_layers(model)}
    if not memo:
        raise ValueError("the model has no expert layers")
    return copy.deepcopy(model, memo)


def merge_in_place(model: nn.Module, task: int) -> nn.Module:
    """Fold expert `task` into the backbone weights of `model` (W_t = W0 + dW_t); reversible."""
    for layer in expert_layers(model):
        layer.merge(task)
    return model


def unmerge_in_place(model: nn.Module) -> nn.Module:
    """Undo `merge_in_place`: W0 = W_t - dW_t."""
    for layer in expert_layers(model):
        layer.unmerge()
    return model


def switch_expert(model: nn.Module, task: int) -> nn.Module:
    """Switch the merged expert: W0 = W_t - dW_t; W_t' = W0 + dW_t'."""
    for layer in expert_layers(model):
        if layer.merged_task is not None:
            layer.unmerge()
        layer.merge(task)
    return model


def expert_parameters(model: nn.Module, task: int) -> Iterator[nn.Parameter]:
    """The low-rank parameters of one task's expert (A_t and B_t of every layer)."""
    for layer in expert_layers(model):
        yield layer.lora_A[task]
        yield layer.lora_B[task]


def shared_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter that is not part of an expert (the backbone W0, norms, ...)."""
    experts = {id(p) for layer in expert_layers(model) for p in (*layer.lora_A, *layer.lora_B)}
    for p in model.parameters():
        if id(p) not in experts:
            yield p
