"""A run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint and ends with
the same metrics as an uninterrupted run (the CLI runs in a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from test_pipeline import assert_same_metrics


def wait_for(predicate, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def decompose_steps(metrics_path, epoch):
    if not metrics_path.is_file():
        return 0
    count = 0
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += record.get("phase") == "decompose" and record.get("epoch") == epoch and record.get("task") == "all"
    return count


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_epoch_then_resume_gives_the_same_metrics(resume_reference, tmp_path):
    """The run starts from the uninterrupted reference run's folder as it stood at its second decomposition epoch
    (the first checkpointed): the CLI resumes it in a subprocess, is killed with SIGKILL in the middle of that
    epoch, and resumed again ends with the reference's metrics."""
    raw, reference, at_second_epoch = resume_reference
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    shutil.copytree(at_second_epoch, run_dir)
    cmd = [sys.executable, "-m", "core.cli", "decompose", str(config_path), "--out", str(run_dir), "--no-export"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the reference's: reductions depend on it
    logged = decompose_steps(run_dir / "metrics.jsonl", 1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the second decomposition epoch has begun again: last.pt holds epoch 1, the run is mid-epoch
        started = wait_for(lambda: decompose_steps(run_dir / "metrics.jsonl", 1) > logged, proc)
        assert started, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    assert_same_metrics(reference, json.loads((run_dir / "summary.json").read_text()))
