"""A run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint and ends with
the same metrics as an uninterrupted run (the CLI runs in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from test_pipeline import make_config


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
def test_sigkill_mid_epoch_then_resume_gives_the_same_metrics(tmp_path):
    raw = make_config(tmp_path / "data", n=96, epochs=2, log_every=1)
    raw["teacher"]["epochs"] = 1
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "core.cli", "decompose", str(config_path), "--out", str(run_dir), "--no-export"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the second decomposition epoch has begun: last.pt holds epoch 1, the run is mid-epoch
        started = wait_for(lambda: decompose_steps(run_dir / "metrics.jsonl", 1) >= 2, proc)
        assert started, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "checkpoints" / "last.pt").is_file()

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())

    # the reference runs the same way: float reductions depend on the thread count
    ref_dir = tmp_path / "reference"
    ref_cmd = [*cmd[:-3], "--out", str(ref_dir), "--no-export"]
    uninterrupted = subprocess.run(ref_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    reference = json.loads((ref_dir / "summary.json").read_text())
    for ref, res in zip(reference["tasks"], summary["tasks"], strict=True):
        for key in ("acc", "auc"):
            assert res["expert_metrics"][key] == pytest.approx(ref["expert_metrics"][key], abs=1e-4), (ref, res)
