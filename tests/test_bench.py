"""The benchmark runs and reports a ratio for every form (no assertion on time: machines are noisy)."""

from __future__ import annotations

import json

from benchmarks.run import FORMS, main, step_ratios


def test_every_form_gives_a_ratio():
    ratios = step_ratios(arch="resnet10", image_size=16, batch=8, tasks=3, forms=FORMS, repeats=1, warmup=0)
    assert set(ratios) == set(FORMS)
    assert all(r > 0 for r in ratios.values())


def test_quick_bench_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(quick=True, json_path=str(out)) == 0
    assert "factorized" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert {r["section"] for r in rows} == {"steps", "inference"}
    assert all(r["ratios"] for r in rows)


def test_sections_report_ratios_and_memory(capsys):
    from benchmarks.run import bench_loader, saved_bytes, step_ratios

    ratios = step_ratios(arch="resnet10", image_size=16, batch=8, tasks=3, forms=("factorized",), repeats=1,
                         warmup=0, memory=True)
    assert ratios["factorized mem"] > 1.0  # the expert branches save a little more than the plain net
    import torch
    assert saved_bytes(lambda: (torch.ones(4, requires_grad=True) * torch.ones(4)).sum()) == 16
    rows = bench_loader(True, print)
    assert [r["stream"] for r in rows] == [False, True] and all(r["ratios"] for r in rows)


def test_forward_flops_counts_multiply_adds_twice():
    import torch

    from benchmarks.run import forward_flops

    conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
    assert forward_flops(conv, torch.zeros(1, 1, 4, 4)) == 2 * (2 * 16) * 9  # 2 x outputs x kernel taps
    assert forward_flops(torch.nn.Linear(5, 3), torch.zeros(2, 5)) == 2 * 2 * 3 * 5


def test_cli_bench_runs_only_the_named_sections(tmp_path, capsys):
    from core.cli import main as cli

    out = tmp_path / "inference.json"
    assert cli(["bench", "--quick", "--only", "inference", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["section"] for r in rows} == {"inference"}
    ratios = rows[0]["ratios"]
    assert ratios["FLOPs expert / foundation"] < 1.0 and ratios["params expert / foundation"] < 1.0
    assert cli(["bench", "--only", "steps,nope"]) == 2
    assert "unknown benchmark section(s) nope" in capsys.readouterr().err


def test_steps_under_amp_and_a_missing_cuda_device(capsys):
    """bf16 autocast runs every form (the CUDA bench path, here on the CPU); asking for CUDA where there is
    none is a clean CLI error."""
    import torch

    from benchmarks.run import Where
    from core.cli import main as cli

    where = Where("cpu", amp=True)
    assert "AMP bf16" in where.describe()
    forms = ("factorized", "paper", "per-task-loop")
    ratios = step_ratios(arch="resnet10", image_size=16, batch=8, tasks=3, forms=forms, repeats=1, warmup=0,
                         memory=True, where=where)
    assert all(r > 0 for r in ratios.values()) and "factorized mem" in ratios
    if not torch.cuda.is_available():
        assert cli(["bench", "--quick", "--device", "cuda", "--amp"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
