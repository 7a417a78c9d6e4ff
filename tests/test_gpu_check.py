"""`make gpu-check`, the parts a CPU machine can run: the one-line exit without CUDA, the plan, the step runner
(time limits, failures, what a run measured) and the JSON / Markdown it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import Step, check, main, steps

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_one_line_and_exit_0(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "gc")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gpu-check: no CUDA device")
    assert not (tmp_path / "gc").exists()
    make = subprocess.run(["make", "-n", "gpu-check", "OUT=x"], cwd=REPO, capture_output=True, text=True)
    assert make.returncode == 0 and "benchmarks.gpu_check --out x" in make.stdout


def test_the_plan_covers_tests_demos_nccl_and_bench(tmp_path):
    one = steps(tmp_path, 1)
    names = [s.name for s in one]
    assert names == ["CUDA tests", "classification demo (cuda, AMP)", "segmentation demo (cuda, AMP)",
                     "lorkd bench --device cuda --amp"]
    assert all("device=cuda" in s.argv for s in one[1:3]) and "--amp" in one[-1].argv
    assert sum(s.timeout for s in one) <= 480
    two = steps(tmp_path, 2)
    nccl = next(s for s in two if "NCCL" in s.name)
    assert "--nproc_per_node" in nccl.argv and sum(s.timeout for s in two) <= 480


def test_steps_run_within_their_limits_and_the_table_names_the_gpu(tmp_path):
    run = tmp_path / "run"
    summary = {"seconds": 1.5, "device": "cuda (Fake)", "tasks": [
        {"name": "brain", "metric": "dice", "expert": 0.91, "teacher": 0.9}]}
    write = (f"import json, pathlib; p = pathlib.Path({str(run)!r}); p.mkdir(); "
             f"(p / 'summary.json').write_text(json.dumps({summary!r}))")
    plan = [Step("a run", [sys.executable, "-c", write], 30, summary=str(run)),
            Step("fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30),
            Step("hangs", [sys.executable, "-c", "import time; time.sleep(30)"], 1.5)]
    results = check(tmp_path / "out", 60, plan, "Fake GPU")
    assert [r.status for r in results] == ["passed", "failed", "timed out"]
    assert results[0].measured["tasks"]["brain"]["expert"] == 0.91 and results[1].returncode == 3
    assert "boom" in results[1].tail and results[2].seconds < 10
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert record["gpu"] == "Fake GPU" and len(record["steps"]) == 3
    table = (tmp_path / "out" / "gpu_check.md").read_text().splitlines()
    assert len(table) == 5 and all(row.startswith("| Fake GPU |") for row in table[2:])
    assert "brain dice 0.910 (foundation 0.900)" in table[2]
    # a budget already spent skips what is left
    late = check(tmp_path / "late", 3, plan[:1], "Fake GPU")
    assert late[0].status == "skipped"
