"""Issue 16, families 5, 6 and 7b at the run folder: nothing is written into it before the config and the foundation
model are checked (a corrected command runs on the same --out), a config.yaml that is not a run's or a last.pt
that is not a run checkpoint is one line naming it, and a folder the system does not let us write is one line.
Runs are tiny (one task of 16 images) and stopped before their first training step."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml

from core.config import save_config
from core.errors import CheckpointError, ConfigError
from core.events import Control, NullObserver
from core.files import WriteError
from core.kinds import load_config
from core.kinds.classification.nets import FeatureNet
from core.kinds.classification.synthetic import write_fake_medmnist
from core.train.pipeline import Pipeline, RunFolder, open_run


def tiny_raw(folder: Path, **teacher) -> dict:
    npz = folder / "tiny.npz"
    if not npz.is_file():
        write_fake_medmnist(npz, n=16, num_classes=3, seed=4)
    return {
        "name": "tiny",
        "tasks": [{"name": "task", "medmnist": str(npz)}],
        "teacher": {"arch": "resnet10", "epochs": 1, **teacher},
        "backbone": {"arch": "compact"},
        "train": {"epochs": 1, "batch_size": 8},
        "evaluate": {"single_task": False, "bootstrap": 100},
        "device": "cpu",
    }


class StopWhenTheTeacherIsReady(NullObserver):
    """Stops the run at its first training step, once the foundation model is loaded (or, pre-trained here,
    right away): enough to see what the run folder holds when training begins."""

    def __init__(self, control: Control) -> None:
        self.control, self.logs = control, []

    def on_start(self, info) -> None:
        self.control.stop()

    def on_log(self, message: str) -> None:
        self.logs.append(message)


def start(raw: dict, run: Path) -> tuple[dict, StopWhenTheTeacherIsReady]:
    control = Control()
    observer = StopWhenTheTeacherIsReady(control)
    return Pipeline(load_config(raw), run, observer, control).run(export=False), observer


def test_a_wrong_foundation_checkpoint_then_the_right_one_on_the_same_out(tmp_path):
    """Family 7b: after a wrong teacher.checkpoint the folder holds nothing (no config.yaml), so the corrected
    command on the same --out is not refused as "made with a different config"."""
    run = tmp_path / "run"
    wrong = tmp_path / "no-such-teacher.pt"
    with pytest.raises(CheckpointError, match="not found"):
        start(tiny_raw(tmp_path, checkpoint=str(wrong)), run)
    assert not run.exists()  # the folder the run made is removed again: it held nothing but its lock

    run.mkdir()  # an existing, empty --out: kept, still nothing written
    not_weights = tmp_path / "teacher.txt"
    not_weights.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="teacher.txt"):
        start(tiny_raw(tmp_path, checkpoint=str(not_weights)), run)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]

    right = tmp_path / "teacher.pt"
    torch.save(FeatureNet("resnet10", 2, 1).state_dict(), right)
    summary, observer = start(tiny_raw(tmp_path, checkpoint=str(right)), run)
    assert summary["status"] == "stopped"
    assert any("foundation model loaded" in m for m in observer.logs)
    assert yaml.safe_load((run / "config.yaml").read_text())["teacher"]["checkpoint"] == str(right)


def test_a_teacher_pretrained_in_the_run_writes_its_config_first(tmp_path):
    """Pre-training writes checkpoints: the config that made them is in the folder before them."""
    run = tmp_path / "run"
    summary, _ = start(tiny_raw(tmp_path), run)
    assert summary["status"] == "stopped"
    assert (run / "config.yaml").is_file()


@pytest.mark.parametrize("text,words", [("3\n", "expected a mapping of config sections, got int"),
                                        ("- a\n- b\n", "got list"),
                                        ("name: [unclosed\n", "line 2, column 1: not valid YAML")])
def test_a_run_folder_whose_config_is_not_a_runs_is_one_line(tmp_path, text, words):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        Pipeline(load_config(tiny_raw(tmp_path)), run)
    message = str(exc.value)
    assert "\n" not in message and str(run / "config.yaml") in message and words in message, message
    assert "not the config.yaml of a LoRKD run" in message
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def _run_folder_with_last(tmp_path: Path, state) -> tuple[dict, Path]:
    raw = tiny_raw(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(load_config(raw), run / "config.yaml")
    torch.save(state, run / "checkpoints" / "last.pt")
    return raw, run


@pytest.mark.parametrize("state", [FeatureNet("compact", 2, 1).state_dict(), {"phase": "decompose"},
                                   [1, 2, 3], {"phase": "decompose", "epoch": 1, "step": 2, "models": [],
                                               "optimizer": {}, "schedule": {}, "scaler": {}}],
                         ids=["state_dict", "missing keys", "a list", "models not a mapping"])
def test_a_last_pt_that_is_not_a_run_checkpoint_is_one_line(tmp_path, state):
    raw, run = _run_folder_with_last(tmp_path, state)
    last = run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError) as exc:  # resuming
        Pipeline(load_config(raw), run).run()
    message = str(exc.value)
    assert "\n" not in message and str(last) in message and "not a training checkpoint of a LoRKD run" in message
    with pytest.raises(CheckpointError, match="not a training checkpoint of a LoRKD run"):  # evaluate / export
        open_run(run)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints", "config.yaml"]


def test_a_last_pt_of_another_network_is_one_line(tmp_path):
    """A run checkpoint whose weights do not fit this run's networks (another config's) fails before torch."""
    state = {"phase": "foundation", "epoch": 1, "step": 2, "models": {"teacher": {"w": torch.zeros(3)}},
             "optimizer": {}, "schedule": {}, "scaler": {}}
    raw, run = _run_folder_with_last(tmp_path, state)
    with pytest.raises(CheckpointError, match="does not hold weights of this run's teacher") as exc:
        Pipeline(load_config(raw), run).run()
    assert str(run / "checkpoints" / "last.pt") in str(exc.value)


def test_a_run_folder_on_a_read_only_disk_is_one_line(tmp_path, monkeypatch):
    """`lorkd evaluate` (or a run) of a folder on a read-only disk: holding it is the first write."""
    import core.train.pipeline as pipeline

    run = tmp_path / "run"
    run.mkdir()

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(pipeline, "open", read_only, raising=False)
    with pytest.raises(WriteError) as exc, RunFolder(run).lock():
        pass
    assert str(exc.value) == f"{run}: cannot write into the run folder: read-only file system"


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.write_text("a file")
    with pytest.raises(WriteError, match="cannot create the folder: it exists and is a file, not a folder"), \
            RunFolder(run).lock():
        pass
    assert run.read_text() == "a file"


def test_the_lock_removes_only_a_folder_it_made_and_left_empty(tmp_path):
    made = tmp_path / "made"
    with RunFolder(made).lock():
        assert (made / ".lock").is_file()
    assert not made.exists()
    with RunFolder(made).lock():
        (made / "config.yaml").write_text("name: x\n")
    assert sorted(p.name for p in made.iterdir()) == [".lock", "config.yaml"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with RunFolder(existing).lock():
        pass
    assert sorted(p.name for p in existing.iterdir()) == [".lock"]
