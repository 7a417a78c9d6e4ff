"""Distributed decomposition: `torchrun --nproc_per_node 2` with Gloo on CPU writes one run folder whose
metrics match a single-process run with the same global batch and seed; a run stopped in one process
resumes in two, and so does one whose rank was killed; batch shares are mixed-task and add up to the
single-process batch; the test cases split over the ranks give exactly the scores of one process."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_crash import decompose_steps, wait_for
from test_pipeline import CopyAtSecondEpoch, make_config
from torch import nn

from core import distributed
from core.data.sampling import MultiTaskBatchSampler
from core.distributed import SINGLE, Dist
from core.kinds import load_config
from core.train.pipeline import Pipeline, open_run

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


class ThreadRanks:
    """`world` ranks as threads of this process: `core.distributed.gather_objects` (what `shared_map` gathers with)
    answered through a barrier, each rank getting copies of every rank's object in rank order, as
    all_gather_object gives them across processes."""

    def __init__(self, world: int) -> None:
        self.world, self.barrier, self.slots = world, threading.Barrier(world, timeout=120), [None] * world

    def gather(self, obj, info):
        self.slots[info.rank] = copy.deepcopy(obj)
        self.barrier.wait()
        out = copy.deepcopy(self.slots)
        self.barrier.wait()  # nobody writes the next gather's slot before all have read this one
        return out

    def run(self, fn) -> list:
        """fn(Dist) on every rank at once; its results in rank order."""
        results, errors = [None] * self.world, []

        def target(rank: int) -> None:
            try:
                results[rank] = fn(Dist(rank, self.world))
            except BaseException as exc:  # noqa: BLE001 - re-raised below, the other ranks released
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def test_shared_map_splits_the_items_and_gathers_them_in_order(monkeypatch):
    ranks = ThreadRanks(3)
    monkeypatch.setattr(distributed, "gather_objects", ranks.gather)
    computed = []
    results = ranks.run(lambda info: distributed.shared_map(lambda i: computed.append((i, info.rank)) or i * i, 8,
                                                             info))
    assert results == [[i * i for i in range(8)]] * 3
    assert sorted(computed) == [(i, i % 3) for i in range(8)]  # each item once, on its rank
    assert distributed.shared_map(lambda i: -i, 3, SINGLE) == [0, -1, -2]


class Threshold(nn.Module):
    """A segmentation 'network' with a real answer: foreground where the normalised intensity is high."""

    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], dim=1)


def _split_test(kind_name: str, raw: dict, nets, monkeypatch) -> None:
    """The kind's `test` on two thread-ranks gives, on every rank, exactly the scores of one process."""
    from core.kinds import get_kind
    from core.kinds.base import RunContext

    kind, config = get_kind(kind_name), load_config(raw)
    data = kind.open_data(config, SINGLE, lambda message: None)
    networks = nets(kind, config, data)

    def scores(info):
        run = RunContext(config, data, None, None, torch.device("cpu"), info)
        return kind.test(run, copy.deepcopy(networks))

    single = scores(SINGLE)
    ranks = ThreadRanks(2)
    monkeypatch.setattr(distributed, "gather_objects", ranks.gather)
    for split in ranks.run(scores):
        assert list(split) == list(single)
        for name, one in single.items():
            two = split[name]
            assert len(one.per_case) >= 2 and two.per_case == one.per_case
            assert two.metrics == pytest.approx(one.metrics, abs=0, nan_ok=True)
            resample = np.random.default_rng(0).integers(0, len(one.per_case), 2 * len(one.per_case))
            assert two.headline(resample) == one.headline(resample)
            assert two.description == one.description


def test_segmentation_test_cases_split_over_ranks_give_one_process_scores(tmp_path, monkeypatch):
    """Whole held-out volumes (a task of four volumes) and held-out regions of the volumes (a task of two)."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    a = write_synthetic_task(tmp_path / "a", 4, "sphere", seed=1)
    b = write_synthetic_task(tmp_path / "b", 2, "sphere", seed=5)
    raw = {"name": "split", "kind": "segmentation", "device": "cpu",
           "tasks": [{"name": "volumes", "images": str(a[0]), "labels": str(a[1]), "label_names": {1: "ball"}},
                     {"name": "regions", "images": str(b[0]), "labels": str(b[1]), "label_names": {1: "ball"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 2,
                    "test_fraction": 0.5, "val_fraction": 0.25}}
    _split_test("segmentation", raw, lambda kind, config, data: {0: Threshold(), 1: Threshold()}, monkeypatch)


def test_classification_test_images_split_over_ranks_give_one_process_scores(tmp_path, monkeypatch):
    raw = make_config(tmp_path / "data", n=8)

    def nets(kind, config, data):  # small random convolutional classifiers (multi-class and multi-label tasks)
        torch.manual_seed(0)
        return {t: nn.Sequential(nn.Conv2d(data.extra["in_channels"], 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, info.num_classes)).eval()
                for t, info in enumerate(data.tasks)}

    _split_test("classification", raw, nets, monkeypatch)


def torchrun(config: Path, out: Path, export: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([*TORCHRUN, str(config), "--out", str(out), *([] if export else ["--no-export"])],
                          env=env, capture_output=True, text=True, timeout=400)


def assert_close(reference: dict, summary: dict) -> None:
    for ref, got in zip(reference["tasks"], summary["tasks"], strict=True):
        assert got["name"] == ref["name"]
        for key in ("acc", "auc"):
            assert got["expert_metrics"][key] == pytest.approx(ref["expert_metrics"][key], abs=TOLERANCE), (ref, got)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    raw = make_config(root / "data", n=64, epochs=3)
    raw["teacher"]["epochs"] = 2
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = Pipeline(load_config(raw), root / "single").run(export=False)
    return root, raw, config, reference


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


# a run stopped in one process and resumed in two, and one killed on one rank: the segmentation test below (the
# pipeline and loop are the same for both kinds; the classification run above covers pre-training and
# decomposition under two processes)


# Dice. Two processes train what one does up to float summation order (DDP averages the ranks' gradients; the
# UNets' instance norm is per sample, so no batch statistics differ): equal to the last digit here; 0.05 leaves room
# for another machine's rounding to move a few voxels over 3 epochs.
SEG_TOLERANCE = 0.05


def rank_pid(out: Path, rank: int) -> int | None:
    """The process id of the torchrun worker of `rank` whose command line names the run folder `out` (Linux)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL, /proc")
def test_a_segmentation_run_resumes_in_two_processes_after_a_stop_and_after_sigkill_of_one_rank(tmp_path):
    """Segmentation under torchrun (issue 17): each rank trains on its share of every mixed-task batch of patches,
    scores its share of the validation patches (voxel counts summed over the ranks) and tests its share of the
    held-out volumes. A one-process run's folder after its first decomposition epoch resumes in two processes;
    rank 1 is killed with SIGKILL in the third epoch; resumed again in two, the run ends like the uninterrupted
    one-process run (the same folder's test in one process gives exactly its numbers)."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    a = write_synthetic_task(tmp_path / "a", 5, "sphere", seed=1)
    b = write_synthetic_task(tmp_path / "b", 5, "sphere", seed=5)
    raw = {"name": "seg-ddp", "kind": "segmentation", "device": "cpu",
           "tasks": [{"name": "balls", "images": str(a[0]), "labels": str(a[1]), "label_names": {1: "ball"}},
                     {"name": "more_balls", "images": str(b[0]), "labels": str(b[1]), "label_names": {1: "ball"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 12,
                    "test_fraction": 0.4, "val_fraction": 0.2},  # 2 test, 1 validation, 2 training volumes a task
           "teacher": {"channels": [8, 16, 32], "epochs": 1}, "backbone": {"channels": [4, 8, 16]},
           "train": {"epochs": 3, "batch_size": 4, "lr": 0.01, "log_every": 1},
           "evaluate": {"single_task": False, "select": "last"}}  # the expert as the resumed last epoch left it
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    # the uninterrupted one-process reference; its folder at the start of the second decomposition epoch is the run
    # stopped in one process
    reference = Pipeline(load_config(raw), tmp_path / "single", CopyAtSecondEpoch(tmp_path / "single", out)).run(
        export=False)
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (checkpoint["phase"], checkpoint["epoch"]) == ("decompose", 1) and not (out / "summary.json").exists()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    argv = [*TORCHRUN, str(config), "--out", str(out), "--no-export"]
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:  # the third epoch has begun: last.pt holds the second, written by the two processes
            started = wait_for(lambda: decompose_steps(out / "metrics.jsonl", 2) >= 1, proc)
            pid = rank_pid(out, 1)
            assert started and pid is not None, (tmp_path / "killed.log").read_text()[-3000:]
            os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    killed = (tmp_path / "killed.log").read_text()
    assert proc.returncode != 0 and "resuming after epoch 1" in killed, killed[-3000:]
    assert not (out / "summary.json").exists()

    result = torchrun(config, out, export=True)  # the experts tested as exported: bundles read back on both ranks
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 2" in result.stderr
    assert sorted(p.name for p in (out / "experts").iterdir()) == ["balls", "more_balls"]
    summary = json.loads((out / "summary.json").read_text())
    for ref, got in zip(reference["tasks"], summary["tasks"], strict=True):
        assert got["test_cases"] == ref["test_cases"] == 2
        assert got["expert"] == pytest.approx(ref["expert"], abs=SEG_TOLERANCE), (ref, got)
        # pre-trained in one process: the same foundation model, tested on two ranks, gives the same numbers
        assert got["teacher_metrics"] == pytest.approx(ref["teacher_metrics"], abs=1e-6, nan_ok=True)
        for ref_case, got_case in zip(ref["per_case"], got["per_case"], strict=True):
            assert got_case["case"] == ref_case["case"]
            assert got_case["teacher"]["dice"] == pytest.approx(ref_case["teacher"]["dice"], abs=1e-6)
    # the test split over the ranks and gathered: exactly one process's test of the same models (one thread, as
    # each rank had)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = open_run(out).evaluate(stage_bundles=True)
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(again["tasks"], summary["tasks"], strict=True):
        assert json.loads(json.dumps(one["per_case"])) == two["per_case"]
        for key in ("expert_metrics", "teacher_metrics", "expert_minus_teacher", "expert_minus_teacher_ci"):
            assert one[key] == pytest.approx(two[key], abs=1e-9, nan_ok=True), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "killed.log", "run", "seg.yaml", "single"]
