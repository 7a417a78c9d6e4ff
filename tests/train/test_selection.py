"""Each task keeps its best validation epoch, and nothing in training or selection looks at the test data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.kinds import KINDS, load_config
from core.kinds.base import TaskInfo
from core.train.pipeline import Pipeline, Selection
from tests.kinds.test_new_kind import RegressionKind


def test_selection_keeps_each_tasks_best_epoch_and_its_state():
    tasks = [TaskInfo("early", "x", ["v"], "dice"), TaskInfo("late", "x", ["v"], "mae", higher_is_better=False)]
    snapshots = iter(range(100))
    selection = Selection(tasks, lambda task: {"w": torch.tensor(float(next(snapshots)))})
    history = [{"early": {"dice": 0.8}, "late": {"mae": 0.5}},
               {"early": {"dice": 0.6}, "late": {"mae": 0.4}},
               {"early": {"dice": float("nan")}, "late": {"mae": 0.2}}]
    for epoch, metrics in enumerate(history):
        selection.update(epoch, metrics, [0, 1])
    assert selection.best[0]["epoch"] == 0 and selection.best[0]["score"] == 0.8  # peaked early, kept
    assert selection.best[1]["epoch"] == 2 and selection.best[1]["score"] == 0.2  # lower is better
    assert float(selection.best[0]["state"]["w"]) == 0.0  # the state taken at epoch 0
    restored = Selection(tasks, None)
    restored.load(selection.state())
    assert restored.best[0]["epoch"] == 0 and restored.best[1]["epoch"] == 2


@pytest.fixture
def regression(monkeypatch):
    monkeypatch.setitem(KINDS, RegressionKind.name, RegressionKind())
    return KINDS[RegressionKind.name]


def test_a_task_whose_validation_peaks_early_keeps_that_state(regression, monkeypatch, tmp_path):
    """Validation says task "once" was best after epoch 1 and "twice" after the last: the exported "once" expert
    is the merged network of epoch 1, not of the last epoch."""
    scripted = {0: {"once": {"mae": 0.01}, "twice": {"mae": 0.9}},
                1: {"once": {"mae": 0.5}, "twice": {"mae": 0.8}},
                2: {"once": {"mae": 0.6}, "twice": {"mae": 0.1}}}
    seen = {"epoch": -1}
    real = RegressionKind.evaluate

    def evaluate(self, run, model, split, tasks=None):
        metrics = real(self, run, model, split, tasks)
        if model == "student" and set(metrics) == {"once", "twice"}:  # the joint decomposition
            seen["epoch"] += 1
            return scripted[seen["epoch"]]
        return metrics

    monkeypatch.setattr(RegressionKind, "evaluate", evaluate)
    raw = regression.build_demo(tmp_path)
    raw["train"]["epochs"] = 3
    run = Pipeline(load_config(raw, ["evaluate.single_task=false"]), tmp_path / "run")
    kept = {}
    real_update = Selection.update

    def update(self, epoch, metrics, tasks):
        real_update(self, epoch, metrics, tasks)
        if self is run.selection:
            kept[epoch] = {t: run._expert_state(t) for t in tasks}

    monkeypatch.setattr(Selection, "update", update)
    summary = run.run(export=False)
    assert [t["selected_epoch"] for t in summary["tasks"]] == [1, 3]
    once = run.expert_model(0).state_dict()
    for key, value in once.items():
        torch.testing.assert_close(value, kept[0][0][key])
    assert any(not torch.equal(v, kept[2][0][k]) for k, v in once.items())  # it moved on after epoch 1
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["tasks"][0]["selected_epoch"] == 1


def test_classification_selection_and_training_never_read_the_test_split(tmp_path, monkeypatch):
    """Every read of the test split happens inside the final test (`kind.test`), after all training and
    selection; validation (every epoch) reads the validation split only."""
    from core.kinds.classification.dataset import MultiTaskDataset
    from core.kinds.classification.kind import ClassificationKind
    from core.kinds.classification.synthetic import write_fake_medmnist

    files = [write_fake_medmnist(tmp_path / f"t{i}.npz", n=40, num_classes=3, seed=i) for i in range(2)]
    raw = {"name": "leak", "tasks": [{"name": f"t{i}", "medmnist": str(f)} for i, f in enumerate(files)],
           "teacher": {"arch": "resnet10", "epochs": 2}, "backbone": {"arch": "resnet10"},
           "train": {"epochs": 2, "batch_size": 16}, "device": "cpu"}
    state = {"testing": False}
    reads, splits = [], []
    real_items, real_stored = MultiTaskDataset.__getitems__, MultiTaskDataset.stored_images
    real_test, real_evaluate = ClassificationKind.test, ClassificationKind.evaluate

    def getitems(self, indices):
        reads.append((self.split, state["testing"]))
        return real_items(self, indices)

    def stored(self, task):
        reads.append((self.split, state["testing"]))
        return real_stored(self, task)

    def test(self, run, nets):
        state["testing"] = True
        try:
            return real_test(self, run, nets)
        finally:
            state["testing"] = False

    def evaluate(self, run, model, split, tasks=None):
        splits.append(split)
        return real_evaluate(self, run, model, split, tasks)

    monkeypatch.setattr(MultiTaskDataset, "__getitems__", getitems)
    monkeypatch.setattr(MultiTaskDataset, "stored_images", stored)
    monkeypatch.setattr(ClassificationKind, "test", test)
    monkeypatch.setattr(ClassificationKind, "evaluate", evaluate)
    summary = Pipeline(load_config(raw), tmp_path / "run").run(export=False)
    assert summary["status"] == "completed" and set(splits) == {"val"}
    test_reads = [testing for split, testing in reads if split == "test"]
    assert test_reads and all(test_reads)  # read, and only while testing
    assert not any(testing for split, testing in reads if split != "test")


def test_segmentation_held_out_regions_are_hidden_from_training_and_validation_is_not_test(tmp_path):
    """The held-out cubes of a volume: test and validation are disjoint; training sees their labels as IGNORE;
    the validation patches score validation voxels only."""
    from core.kinds.segmentation.data import IGNORE
    from core.kinds.segmentation.synthetic import write_synthetic_task

    images, labels = write_synthetic_task(tmp_path / "cubes", 1, "cube", shape=(40, 48, 56), seed=3)
    raw = {"name": "split", "kind": "segmentation",
           "tasks": [{"name": "cubes", "images": str(images), "labels": str(labels),
                      "label_names": {1: "shell", 2: "core"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "region_mm": 12},
           "device": "cpu"}
    config = load_config(raw)
    data = KINDS["segmentation"].open_data(config, None, lambda message: None)
    ((train,),), (val,), (test,) = data.extra["train_cases"], data.extra["val_cases"], data.extra["test_cases"]
    regions = lambda cases: {tuple((s.start, s.stop) for s in c.region) for c in cases}  # noqa: E731
    assert regions(val) and regions(test) and not regions(val) & regions(test)
    for case in val + test:
        assert bool((train.label[case.work_region] == IGNORE).all())
    assert float((train.label != IGNORE).float().mean()) > 0.5  # most of the volume still trains
    images_v, labels_v = data.extra["val_patches"][0]
    assert len(images_v) == len(val)
    scored = labels_v != IGNORE
    assert bool(scored.any())
    for patch_labels, case in zip(labels_v, val, strict=True):  # each patch scores its own region's voxels only
        n_region = int(np.prod([s.stop - s.start for s in case.work_region]))
        assert int((patch_labels != IGNORE).sum()) <= n_region
