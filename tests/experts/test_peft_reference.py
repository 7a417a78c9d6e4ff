"""An outside reference for the expert maths: HF peft's multi-adapter LoRA with the same weights gives the
same outputs and the same gradients as `route` (factorized form, mixed-task batch, every convolution)."""

import pytest
import torch
from monai.networks.nets import resnet10
from torch import nn

from benchmarks.peft_reference import adapter_name, attach_peft_lora, peft_route
from core.experts import attach_experts, expert_layers, route

pytest.importorskip("peft")  # a dev dependency: installed by `make setup`

T, R, ALPHA = 3, 2, 4.0


def twins():
    """Our experts and peft's adapters on the same resnet10, with the same (non-zero) expert weights."""
    torch.manual_seed(0)
    ours = resnet10(spatial_dims=2, n_input_channels=3, num_classes=5)
    torch.manual_seed(0)
    theirs = resnet10(spatial_dims=2, n_input_channels=3, num_classes=5)
    attach_experts(ours, T, rank=R, alpha=ALPHA)
    attach_peft_lora(theirs, T, rank=R, alpha=ALPHA)
    g = torch.Generator().manual_seed(1)
    pairs = []
    with torch.no_grad():
        for name, layer in ((n, m) for n, m in ours.named_modules() if m in set(expert_layers(ours))):
            peft_layer = theirs.get_submodule(name)
            assert torch.equal(peft_layer.base_layer.weight, layer.weight)
            for t in range(T):
                layer.lora_B[t].copy_(torch.randn(layer.lora_B[t].shape, generator=g) * 0.05)
                peft_layer.lora_A[adapter_name(t)].weight.copy_(layer.lora_A[t])
                peft_layer.lora_B[adapter_name(t)].weight.copy_(layer.lora_B[t].view_as(
                    peft_layer.lora_B[adapter_name(t)].weight))
                pairs.append((layer.lora_A[t], peft_layer.lora_A[adapter_name(t)].weight))
                pairs.append((layer.lora_B[t], peft_layer.lora_B[adapter_name(t)].weight))
            pairs.append((layer.weight, peft_layer.base_layer.weight))
    assert len(pairs) == len(list(expert_layers(ours))) * (2 * T + 1)
    return ours, theirs, pairs


def test_same_outputs_and_gradients_as_peft():
    ours, theirs, pairs = twins()
    x = torch.randn(7, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    task_ids = torch.tensor([2, 0, 1, 0, 2, 1, 0])  # mixed, unsorted
    for model in (ours, theirs):
        model.train()
    with route(ours, task_ids):
        out_ours = ours(x)
    with peft_route(theirs, task_ids):
        out_theirs = theirs(x)
    assert torch.allclose(out_ours, out_theirs, rtol=1e-4, atol=1e-5)
    nn.functional.cross_entropy(out_ours, y).backward()
    nn.functional.cross_entropy(out_theirs, y).backward()
    for mine, peft_param in pairs:
        assert mine.grad is not None and float(mine.grad.abs().max()) > 0
        assert torch.allclose(mine.grad, peft_param.grad.view_as(mine.grad), rtol=1e-3, atol=1e-6)
