"""Distributed decomposition: `torchrun --nproc_per_node 2` with Gloo on CPU writes one run folder whose
metrics match a single-process run with the same global batch and seed; a run stopped in one process
resumes in two; batch shares are mixed-task and add up to the single-process batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pipeline import StopAfterFirstEpoch, make_config

from core.data.sampling import MultiTaskBatchSampler
from core.events import Control
from core.kinds import load_config
from core.train.pipeline import Pipeline

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "core.cli", "decompose"]
TOLERANCE = 0.1  # BatchNorm statistics are per rank under DDP on CPU (SyncBatchNorm needs a GPU)


def test_rank_shares_add_up_to_the_global_batch():
    sizes = [50, 30, 20]
    single = MultiTaskBatchSampler(sizes, 16, seed=3)
    shares = [MultiTaskBatchSampler(sizes, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (single, *shares):
        s.set_epoch(1)
    for whole, *parts in zip(single, *shares, strict=True):
        assert sorted(whole) == sorted(parts[0] + parts[1])
        assert len(parts[0]) == len(parts[1]) == 8
    evals = [MultiTaskBatchSampler(sizes, 16, shuffle=False, drop_last=False, rank=r, world_size=2) for r in (0, 1)]
    seen = sorted(i for s in evals for batch in s for i in batch)
    assert seen == list(range(sum(sizes)))


def torchrun(config: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([*TORCHRUN, str(config), "--out", str(out), "--no-export"], env=env,
                          capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    raw = make_config(root / "data", n=96, epochs=3)
    raw["teacher"]["epochs"] = 2
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = Pipeline(load_config(raw), root / "single").run(export=False)
    return root, raw, config, reference


def assert_close(reference: dict, summary: dict) -> None:
    for ref, got in zip(reference["tasks"], summary["tasks"], strict=True):
        assert got["name"] == ref["name"]
        for key in ("acc", "auc"):
            assert got["expert_metrics"][key] == pytest.approx(ref["expert_metrics"][key], abs=TOLERANCE), (ref, got)


def test_two_processes_match_one(setup, tmp_path):
    root, _, config, reference = setup
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    out = tmp_path / "run"
    result = torchrun(config, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "run"]  # one run folder
    assert (out / "checkpoints" / "last.pt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert_close(reference, summary)
    assert result.stdout.count("foundation model resnet10") == 1  # only rank 0 reports
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["phase"] == "decompose" and r["task"] == "all" and "loss" in r]
    assert steps == sorted(set(steps))  # one writer: no duplicated steps


# a run stopped in one process and resumed in two: the segmentation test below (the pipeline and loop are the
# same for both kinds; the classification run above covers pre-training and decomposition under two processes)


SEG_TOLERANCE = 0.05  # Dice; DDP averages the ranks' gradients in another summation order than one process


def test_a_segmentation_run_stopped_in_one_process_resumes_in_two(tmp_path):
    """Segmentation under torchrun: each rank trains on its share of every mixed-task batch of patches and scores
    its share of the validation patches (counts summed over the ranks); the run stopped after its first
    decomposition epoch in one process and resumed in two ends like an uninterrupted one-process run."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    a = write_synthetic_task(tmp_path / "a", 4, "sphere", seed=1)
    b = write_synthetic_task(tmp_path / "b", 4, "sphere", seed=5)
    raw = {"name": "seg-ddp", "kind": "segmentation", "device": "cpu",
           "tasks": [{"name": "balls", "images": str(a[0]), "labels": str(a[1]), "label_names": {1: "ball"}},
                     {"name": "more_balls", "images": str(b[0]), "labels": str(b[1]), "label_names": {1: "ball"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 24,
                    "test_fraction": 0.25, "val_fraction": 0.25},
           "teacher": {"channels": [8, 16, 32], "epochs": 2}, "backbone": {"channels": [4, 8, 16]},
           "train": {"epochs": 3, "batch_size": 4, "lr": 0.01}, "evaluate": {"single_task": False}}
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = Pipeline(load_config(raw), tmp_path / "single").run(export=False)
    out = tmp_path / "run"
    control = Control()
    stopped = Pipeline(load_config(raw), out, StopAfterFirstEpoch(control, "decompose"), control)
    assert stopped.run(export=False)["status"] == "stopped"
    result = torchrun(config, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 1" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    for ref, got in zip(reference["tasks"], summary["tasks"], strict=True):
        assert got["expert"] == pytest.approx(ref["expert"], abs=SEG_TOLERANCE), (ref, got)
        assert got["teacher"] == pytest.approx(ref["teacher"], abs=1e-6)  # pre-trained in one process: the same
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "run", "seg.yaml", "single"]
