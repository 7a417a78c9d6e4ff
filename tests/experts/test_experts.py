"""Exactness of the expert maths: routed == merged == paper reference, gradient separation, merge round trips."""

import copy

import pytest
import torch
from monai.networks.nets import UNet, resnet10
from torch import nn

from core.experts import (
    ExpertConv,
    attach_experts,
    expert_layers,
    expert_parameters,
    merge_expert,
    merge_in_place,
    route,
    shared_parameters,
    switch_expert,
    unmerge_in_place,
)

T = 3


def randomize_experts(model: nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """B starts at zero (every expert equals the backbone); give experts distinct non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in expert_layers(model):
            for b in layer.lora_B:
                b.copy_(torch.randn(b.shape, generator=g) * std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def resnet2d(form: str, ranks=None) -> nn.Module:
    torch.manual_seed(0)
    model = resnet10(spatial_dims=2, n_input_channels=3, num_classes=5)
    attach_experts(model, T, rank=2, alpha=4.0, ranks=ranks, form=form)
    randomize_experts(model)
    return model.eval()


def unet3d(form: str) -> nn.Module:
    torch.manual_seed(0)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    attach_experts(model, T, rank=2, form=form)
    randomize_experts(model)
    return model.eval()


CASES = [
    ("resnet2d", "factorized", (7, 3, 20, 20)),
    ("resnet2d", "paper", (7, 3, 20, 20)),
    ("unet3d", "factorized", (5, 1, 16, 16, 16)),
    ("unet3d", "paper", (5, 1, 16, 16, 16)),
]


def build(kind: str, form: str) -> nn.Module:
    return resnet2d(form) if kind == "resnet2d" else unet3d(form)


@pytest.mark.parametrize("kind,form,shape", CASES)
@pytest.mark.parametrize("order", ["sorted", "mixed"])
def test_routed_equals_merged_and_reference(kind, form, shape, order):
    model = build(kind, form)
    n = shape[0]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    task_ids = torch.tensor([0, 0, 1, 1, 2, 2, 2][:n]) if order == "sorted" else torch.tensor([2, 0, 1, 0, 2, 1, 0][:n])
    with torch.no_grad():
        with route(model, task_ids):
            fast = model(x)
        with route(model, task_ids, impl="reference"):
            reference = model(x)
        plain = model(x)
    assert rel_err(fast, reference) < 1e-5
    for t in range(T):
        mask = task_ids == t
        merged = merge_expert(model, t)
        assert not any(isinstance(m, ExpertConv) for m in merged.modules())
        with torch.no_grad():
            expected = merged(x[mask])
        assert rel_err(fast[mask], expected) < 1e-5
    # experts really differ from the backbone (the test would be empty otherwise)
    assert rel_err(fast, plain) > 1e-3


@pytest.mark.parametrize("strategy", ["branch", "dense", "grouped"])
@pytest.mark.parametrize("ranks", [None, [1, 2, 3]])
@pytest.mark.parametrize("channels_last", [False, True])
def test_both_strategies_of_factorized_are_exact(strategy, ranks, channels_last):
    """Both strategies, equal ranks (one batched matmul for B) or per-task ranks, NCHW or channels-last."""
    model = resnet2d("factorized", ranks=ranks)
    for layer in expert_layers(model):
        layer.strategy = strategy
    x = torch.randn(6, 3, 20, 20)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    task_ids = torch.tensor([1, 0, 2, 2, 0, 1])
    with torch.no_grad(), route(model, task_ids):
        fast = model(x)
    with torch.no_grad(), route(model, task_ids, impl="reference"):
        reference = model(x)
    assert rel_err(fast, reference) < 1e-5
    expected = torch.cat([merge_expert(model, t)(x[task_ids == t]) for t in range(T)])
    order = torch.argsort(task_ids, stable=True)
    assert rel_err(fast[order], expected.detach()) < 1e-5


def test_outside_route_is_plain_backbone():
    model = resnet2d("factorized")
    backbone = merge_expert(model, None)
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        assert rel_err(model(x), backbone(x)) < 1e-6


def test_fresh_experts_equal_backbone():
    torch.manual_seed(0)
    model = resnet10(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
    plain = copy.deepcopy(model)
    attach_experts(model, T)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad(), route(model, torch.tensor([0, 1, 2])):
        assert torch.allclose(model(x), plain(x), atol=1e-6)


def _grads(model, x, y, task_ids, impl="fast"):
    model.zero_grad()
    with route(model, task_ids, impl=impl):
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


@pytest.mark.parametrize("form", ["factorized", "paper"])
@pytest.mark.parametrize("strategy", ["auto", "dense", "grouped"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_separation(form, strategy, channels_last):
    model = resnet2d(form).eval()  # eval: batch norm uses running stats, so per-sample terms are independent
    for layer in expert_layers(model):
        layer.strategy = strategy
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, 20, 20, generator=g)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (6,), generator=g)
    task_ids = torch.tensor([0, 2, 0, 2, 2, 0])  # task 1 absent
    grads = _grads(model, x, y, task_ids)
    for layer in expert_layers(model):  # W0's gradient keeps W0's layout (no re-layout copy per step)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert layer.weight.is_contiguous(memory_format=layout)
        assert layer.weight.grad.is_contiguous(memory_format=layout)
    for p in expert_parameters(model, 1):
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert any(torch.count_nonzero(p.grad) > 0 for p in expert_parameters(model, 0))
    # equal to the reference form
    ref = _grads(model, x, y, task_ids, impl="reference")
    for name in grads:
        assert torch.allclose(grads[name], ref[name], atol=1e-5, rtol=1e-4), name
    # expert t's gradient equals that of a run on task t's samples only; W0 gets the sum over tasks
    shared_names = {n for n, p in model.named_parameters() if any(p is q for q in shared_parameters(model))}
    total = {n: torch.zeros_like(v) for n, v in grads.items()}
    for t in (0, 2):
        mask = task_ids == t
        per_task = _grads(model, x[mask], y[mask], task_ids[mask])
        for name, p in model.named_parameters():
            if any(p is q for q in expert_parameters(model, t)):
                assert torch.allclose(grads[name], per_task[name], atol=1e-5, rtol=1e-4), name
        for name in shared_names:
            total[name] += per_task[name]
    for name in shared_names:
        assert torch.allclose(grads[name], total[name], atol=1e-4, rtol=1e-3), name


@pytest.mark.parametrize("form", ["factorized", "paper"])
def test_merge_unmerge_switch_round_trip(form):
    model = resnet2d(form)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(4, 3, 20, 20)
    with torch.no_grad():
        expected = {t: merge_expert(model, t)(x) for t in range(T)}
        merge_in_place(model, 0)
        assert rel_err(model(x), expected[0]) < 1e-5
        switch_expert(model, 2)
        assert rel_err(model(x), expected[2]) < 1e-5
        unmerge_in_place(model)
    for n, p in model.named_parameters():
        assert torch.allclose(p, before[n], atol=1e-6), n


def test_merge_refuses_non_finite_and_double_merge():
    model = resnet2d("factorized")
    layer = next(expert_layers(model))
    with torch.no_grad():
        layer.lora_B[1].fill_(float("inf"))
    with pytest.raises(ValueError, match="non-finite"):
        merge_expert(model, 1)
    with pytest.raises(ValueError, match="non-finite"):
        layer.merge(1)
    layer.merge(0)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge(2)
    with pytest.raises(RuntimeError, match="unmerge"):
        with route(model, torch.zeros(1, dtype=torch.long)):
            model(torch.randn(1, 3, 20, 20))


def test_per_task_ranks_and_shapes():
    model = resnet2d("paper", ranks=[1, 2, 3])
    layer = model.conv1
    k = layer.weight.shape[2]
    assert layer.lora_A[2].shape == (3 * k, 3 * k)  # (r*k, C_in*k) with C_in = 3
    assert layer.lora_B[2].shape == (layer.weight.shape[0] * k, 3 * k)
    assert layer.scales == [4.0 / 1, 4.0 / 2, 4.0 / 3]
    fact = resnet2d("factorized", ranks=[1, 2, 3])
    assert fact.conv1.lora_A[1].shape == (2, *fact.conv1.weight.shape[1:])
    n1 = sum(p.numel() for p in expert_parameters(fact, 0))
    n3 = sum(p.numel() for p in expert_parameters(fact, 2))
    assert n3 == 3 * n1


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_conv_kind_and_linear(dims):
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    convt = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    model = nn.Sequential(
        conv(2, 4, 3, stride=2, padding=1, padding_mode="reflect"),
        convt(4, 3, 3, stride=2, padding=1, output_padding=1),
        conv(3, 6, 3, padding=1, groups=3),  # depthwise-style: no expert
        nn.Flatten(),
        nn.LazyLinear(5),
    )
    x = torch.randn(4, 2, *([8] * dims))
    model(x)  # materialise the lazy linear
    attach_experts(model, T, rank=2, linear=True)
    names = [type(m).__name__ for m in model]
    assert names == ["ExpertConv", "ExpertConv", f"Conv{dims}d", "Flatten", "ExpertConv"]
    randomize_experts(model)
    task_ids = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        with route(model, task_ids):
            fast = model(x)
        with route(model, task_ids, impl="reference"):
            reference = model(x)
        for t in range(T):
            assert rel_err(fast[task_ids == t], merge_expert(model, t)(x[task_ids == t])) < 1e-5
    assert rel_err(fast, reference) < 1e-5


def test_route_validates_task_ids_and_batch():
    model = resnet2d("factorized")
    with pytest.raises(ValueError, match="0..2"):
        with route(model, torch.tensor([0, 3])):
            pass
    with pytest.raises(RuntimeError, match="batch of 3"):
        with route(model, torch.tensor([0, 1])):
            model(torch.randn(3, 3, 20, 20))
    with pytest.raises(ValueError, match="no expert layers"):
        with route(nn.Sequential(nn.ReLU()), torch.tensor([0])):
            pass


def test_state_dict_keeps_backbone_keys():
    torch.manual_seed(0)
    plain = resnet10(spatial_dims=2, n_input_channels=3, num_classes=5)
    keys = set(plain.state_dict())
    model = attach_experts(copy.deepcopy(plain), T)
    assert keys <= set(model.state_dict())
    assert set(merge_expert(model, 0).state_dict()) == keys
    merge_expert(model, 0).load_state_dict(plain.state_dict(), strict=True)
