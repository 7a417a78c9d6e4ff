"""HF peft's multi-adapter LoRA as an outside reference: one LoRA adapter per task on every convolution.

peft's LoRA on a Conv2d is the factorized form (A: a conv with the base kernel to r channels, B: a 1x1
conv back, scaling alpha / r), and its mixed-adapter batches (`adapter_names`, one adapter per sample)
are knowledge separation. peft allows `adapter_names` only in eval mode at the model level; its layers
compute the same thing in training, so `peft_route` hands the names to every LoRA layer directly (what
peft's own hook does). Used by `lorkd bench` (form "peft-lora") and by the tests as a second reference
for the expert maths (same weights, same outputs and gradients as `core.experts.route`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def peft_available() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def adapter_name(task: int) -> str:
    return f"task{task}"


def attach_peft_lora(model: nn.Module, tasks: int, rank: int = 4, alpha: float = 16.0) -> nn.Module:
    """Inject one peft LoRA adapter per task into every convolution (groups == 1); all weights trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = [name for name, m in model.named_modules() if isinstance(m, _CONVS) and m.groups == 1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        for t in range(tasks):
            config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
            inject_adapter_in_model(config, model, adapter_name=adapter_name(t))
    for p in model.parameters():  # LoRKD trains the shared backbone too
        p.requires_grad_(True)
    return model


def lora_layers(model: nn.Module) -> Iterator[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return (m for m in model.modules() if isinstance(m, LoraLayer))


@contextmanager
def peft_route(model: nn.Module, task_ids: torch.Tensor) -> Iterator[None]:
    """Inside the block, sample b goes through adapter `task_ids[b]` (peft's mixed-adapter batch)."""
    names = [adapter_name(int(t)) for t in task_ids]

    def hook(module, args, kwargs):
        kwargs["adapter_names"] = names
        return args, kwargs

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in lora_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
