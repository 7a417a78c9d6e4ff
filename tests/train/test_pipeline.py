"""End to end on generated MedMNIST-format files: foundation -> decomposition -> evaluation -> export,
the bundles against `lorkd apply` and `python -m monai.bundle run`, and exact resume after a stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main as lorkd
from core.events import NullObserver
from core.kinds import load_config
from core.kinds.classification.synthetic import write_fake_medmnist
from core.train.metrics_log import read_metrics
from core.train.pipeline import Pipeline, open_run
from tests.bundle_batch import start_bundles

TASKS = {  # name -> write_fake_medmnist arguments: RGB, grey with flat labels, multi-label
    "blood": {"rgb": True, "num_classes": 4, "seed": 1},
    "organ": {"flat_labels": True, "num_classes": 3, "seed": 2},
    "chest": {"multilabel": True, "num_classes": 4, "seed": 3},
}


def make_config(data_dir: Path, n: int = 128, single_task: bool = False, **train):
    """A small three-task classification config; the single-task baselines (a second training of every task)
    only where a test looks at them."""
    tasks = []
    for name, kwargs in TASKS.items():
        path = write_fake_medmnist(data_dir / f"{name}.npz", n=n, n_eval=40, **kwargs)
        tasks.append({"name": name, "medmnist": str(path)})
    raw = {
        "name": "e2e",
        "tasks": tasks,
        "teacher": {"arch": "resnet10", "epochs": 2},
        "backbone": {"arch": "resnet10", "rank": 4, "alpha": 16},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, **train},
        "evaluate": {"single_task": single_task},
        "device": "cpu",
        "seed": 0,
    }
    return raw


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    # 96 images a task: experts and foundation model at about 1.0 on one or two threads (64 images and 2 epochs: an
    # expert at 0.43 on two threads, chance + 0.18)
    config = load_config(make_config(root / "data", n=96, single_task=True))
    summary = Pipeline(config, root / "run").run()
    return root / "run", summary


def test_summary_is_complete_and_experts_beat_chance(finished):
    run_dir, summary = finished
    assert summary["status"] == "completed"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert [t["name"] for t in on_disk["tasks"]] == list(TASKS)
    for key in ("params", "macs"):
        assert on_disk["teacher"][key] >= on_disk["backbone"][key] > 0  # the same arch in this test
    for task in on_disk["tasks"]:
        assert task["metric"] == ("auc" if task["name"] == "chest" else "acc")
        chance = 0.5 if task["metric"] == "auc" else 1 / task["num_classes"]
        assert task["expert"] >= chance + 0.25, task
        assert task["teacher"] >= chance + 0.25, task
        assert task["params"]["expert_model"] < on_disk["teacher"]["params"]
        assert task["params"]["expert_low_rank"] > 0
        assert set(task["expert_metrics"]) >= {"acc", "auc"}
        # the evidence of issue 13, for every task
        assert task["single_task"] is not None and task["test_cases"] == 40 and len(task["per_case"]) == 40
        for other in ("teacher", "single_task"):
            low, high = task[f"expert_minus_{other}_ci"]
            assert low <= task[f"expert_minus_{other}"] <= high
        assert task["params_ratio"] > 0 and task["macs_ratio"] > 0 and task["latency_ratio"] > 0
        assert isinstance(task["flags"], list) and task["selected_epoch"] >= 1
    records = read_metrics(run_dir / "metrics.jsonl")
    phases = {r["phase"] for r in records}
    assert {"foundation", "decompose", "test"} <= phases
    losses = {r["task"] for r in records if r.get("kind") == "train"}
    assert set(TASKS) <= losses


def test_bundles_match_lorkd_apply_and_monai_bundle_run(finished, tmp_path, capsys):
    run_dir, _ = finished
    rng = np.random.default_rng(0)
    image = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(image)
    for task in TASKS:
        assert (run_dir / "experts" / task / "configs" / "metadata.json").is_file()
    runs = start_bundles([(run_dir / "experts" / task, image, tmp_path / f"{task}-monai.json") for task in TASKS],
                         tmp_path, tmp_path / "logs")  # one interpreter start for the three
    for task in TASKS:
        mine = tmp_path / f"{task}-lorkd.json"
        assert lorkd(["apply", str(run_dir / "experts" / task), str(image), "--out", str(mine)]) == 0
    for task, (code, log) in zip(TASKS, runs.results(timeout=240), strict=True):
        assert code == 0, log[-3000:]
        theirs = json.loads((tmp_path / f"{task}-monai.json").read_text())
        mine = tmp_path / f"{task}-lorkd.json"
        ours = json.loads(mine.read_text())
        assert theirs["prediction"] == ours["prediction"]
        np.testing.assert_allclose(list(theirs["scores"].values()), list(ours["scores"].values()), atol=1e-6)


def test_evaluate_and_export_of_a_finished_run(finished, tmp_path):
    run_dir, summary = finished
    run = open_run(run_dir)
    again = run.evaluate()
    for before, after in zip(summary["tasks"], again["tasks"], strict=True):
        assert after["expert"] == pytest.approx(before["expert"], abs=1e-9)
    paths = run.export(tmp_path / "bundles")
    assert sorted(p.name for p in paths) == sorted(TASKS)


class StopAfterFirstEpoch(NullObserver):
    def __init__(self, control, phase: str):
        self.control, self.phase = control, phase

    def on_eval(self, event):
        if event.phase == self.phase and event.epoch == 0:
            self.control.stop_after_epoch()


class CopyAtSecondEpoch(NullObserver):
    """Copies the run folder at the first step of the second decomposition epoch (the first is checkpointed):
    what a run stopped or killed there leaves, while the run itself goes on."""

    def __init__(self, folder: Path, copy: Path) -> None:
        self.folder, self.copy = folder, copy

    def on_step(self, event):
        if event.phase == "decompose" and event.epoch == 1 and not self.copy.exists():
            shutil.copytree(self.folder, self.copy)


def assert_same_metrics(reference: dict, summary: dict) -> None:
    for ref, res in zip(reference["tasks"], summary["tasks"], strict=True):
        for key in ("acc", "auc"):
            assert res["expert_metrics"][key] == pytest.approx(ref["expert_metrics"][key], abs=1e-4), (key, ref, res)


@pytest.mark.parametrize("phase", ["foundation", "decompose"])
def test_stopped_run_resumes_to_the_same_metrics(resume_reference, tmp_path, phase):
    from core.events import Control

    raw, reference, _ = resume_reference
    control = Control()
    stopped = Pipeline(load_config(raw), tmp_path / "run", StopAfterFirstEpoch(control, phase), control)
    assert stopped.run(export=False)["status"] == "stopped"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = Pipeline(load_config(raw), tmp_path / "run").run(export=False)
    assert resumed["status"] == "completed"
    assert_same_metrics(reference, resumed)


def test_a_folder_made_with_another_config_is_refused(tmp_path, capsys):
    raw = make_config(tmp_path / "data", n=16)
    config_file = tmp_path / "run.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**load_config(raw).to_dict(), "seed": 5}))
    assert lorkd(["decompose", str(config_file), "--out", str(run_dir)]) == 2
    assert "different config" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def test_cli_module_runs_as_a_script(monkeypatch, capsys):
    """`python -m core.cli` runs the module as `__main__` through runpy: the same here, without a new interpreter."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["core.cli", "--help"])
    monkeypatch.delitem(sys.modules, "core.cli")  # imported above; -m starts without it
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("core.cli", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0 and "decompose" in capsys.readouterr().out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_place_keeps_values_and_puts_conv_weights_channels_last(spatial_dims):
    import torch
    from monai.networks.nets import UNet

    from core.train.pipeline import place

    torch.manual_seed(0)
    net = UNet(spatial_dims, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(2, 1, *([8] * spatial_dims))
    with torch.no_grad():
        before = net(x)
        placed = place(net, torch.device("cpu"), spatial_dims)
        after = placed(x)
    layout = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    convs = [p for p in placed.parameters() if p.dim() == spatial_dims + 2]
    assert convs and all(p.is_contiguous(memory_format=layout) for p in convs)
    assert torch.allclose(before, after, atol=1e-5)


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path, capsys):
    """Two runs on one --out would both write and export into it: while one process holds the folder, another
    `lorkd decompose` (or evaluate/export) there is one error line and exit 2, and writes nothing; when the holder
    dies (even killed), the folder is free again."""
    import yaml

    from core.train.pipeline import RunFolder

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom core.train.pipeline import RunFolder\n"
         "with RunFolder(Path(sys.argv[1])).lock():\n    print('held', flush=True)\n    time.sleep(120)\n", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(make_config(tmp_path / "data", n=32, epochs=1)))
        assert lorkd(["decompose", str(config), "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another LoRKD process (pid" in err[0], err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    stale = run / "checkpoints" / ".last.pt.k1ll3d.tmp"  # what a process killed mid-checkpoint leaves
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 1000)
    keep = run / "checkpoints" / "last.pt"
    keep.write_bytes(b"y")
    with RunFolder(run).lock():  # released by the kernel with the killed process; its leftovers go
        assert not stale.exists() and keep.exists()
