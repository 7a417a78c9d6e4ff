"""The CUDA paths on a GPU, against the CPU (`make gpu-check` runs these; skipped where there is no CUDA device, so
CI, which has none, always skips them: each path they cover also has a CPU test)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.experts import attach_experts, merge_expert, route
from core.preprocess.sliding import sliding_logits

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("form", ["factorized", "paper"])
def test_routed_forward_and_backward_on_cuda_equal_the_cpu(form):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 4, 3, padding=1))
    attach_experts(net, 3, rank=2, form=form)
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    gpu = _copy(net).cuda()
    x, tid = torch.randn(6, 1, 8, 8, 8), torch.tensor([0, 2, 1, 1, 0, 2])
    outs, grads = [], []
    for model, device in ((net, "cpu"), (gpu, "cuda")):
        with route(model, tid.to(device)):
            y = model(x.to(device))
        y.square().mean().backward()
        outs.append(y.detach().cpu())
        grads.append([p.grad.detach().cpu() for p in model.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    merged = merge_expert(gpu, 2)
    with torch.no_grad(), route(gpu, torch.full((1,), 2, device="cuda")):
        torch.testing.assert_close(merged(x[:1].cuda()), gpu(x[:1].cuda()), rtol=1e-4, atol=1e-4)


def test_sliding_window_on_cuda_equals_the_cpu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1)).eval()
    image = torch.rand(1, 40, 36, 30)
    cpu = sliding_logits(net, image, [16, 16, 16], 0.25)
    gpu = sliding_logits(_copy(net).cuda(), image, [16, 16, 16], 0.25)
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


def test_a_small_run_on_cuda_with_amp_completes(tmp_path):
    from core.kinds import load_config
    from core.train.pipeline import Pipeline
    from tests.train.test_pipeline import make_config

    raw = make_config(tmp_path / "data", n=64)
    raw.update(device="cuda")
    raw["train"]["amp"] = True
    summary = Pipeline(load_config(raw), tmp_path / "run").run()
    assert summary["status"] == "completed" and summary["device"].startswith("cuda")
    assert all(t["expert"] is not None for t in summary["tasks"])


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
