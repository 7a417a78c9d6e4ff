"""app.experts.ExpertsPanel: the run's expert table, applying an expert to the viewer's image (same numbers as
`apply_expert` on the file), saving scores and label maps, exporting a bundle, errors in dialogs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from PySide6.QtWidgets import QMessageBox

from app.experts import ExpertsPanel
from app.viewer import ViewerWidget
from core.export.bundle import load_bundle, write_bundle
from core.infer.apply import apply_expert, classify_array
from core.models.nets import ClassifierNet

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
TASK = {
    "name": "toygrey",
    "kind": "multiclass",
    "num_classes": 3,
    "label_names": ["normal", "benign", "malignant"],
    "spatial_dims": 2,
    "rgb": False,
    "source": "toygrey.npz",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder: summary.json with a 2D classification task (exported) and a segmentation task."""
    root = tmp_path_factory.mktemp("run") / "toy_run"
    torch.manual_seed(3)
    net = ClassifierNet("resnet10", 2, 1, 3)
    with torch.no_grad():
        net.head.weight.mul_(30.0)  # decisive, far from uniform
    write_bundle(
        root / "experts" / "toygrey",
        task=TASK,
        arch="resnet10",
        spatial_dims=2,
        in_channels=1,
        image_size=28,
        state_dict=net.state_dict(),
        metrics={"metric": "accuracy", "expert": 0.81, "teacher": 0.84},
        training={"run": "toy_run"},
    )
    summary = {
        "name": "toy_run",
        "teacher": {"arch": "resnet50", "params": 23_500_000, "macs": 1_300_000_000},
        "backbone": {"arch": "resnet10", "params": 4_900_000, "macs": 300_000_000},
        "tasks": [
            {
                "name": "toygrey", "kind": "multiclass", "num_classes": 3, "labels": TASK["label_names"],
                "metric": "accuracy", "teacher": 0.84, "expert": 0.81,
                "params": {"expert_model": 4_901_000, "expert_low_rank": 20_000},
                "macs": {"expert_model": 300_001_000},
            },
            {
                "name": "brainseg", "kind": "segmentation", "num_classes": 4, "labels": ["bg", "csf", "gm", "wm"],
                "metric": "dice", "teacher": None, "expert": 0.7,
                "params": {"expert_model": 5_000_000}, "macs": {"expert_model": 2_000_000_000},
            },
        ],
    }
    (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def grey_png(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    grey = np.zeros((40, 52), np.uint8)
    grey[5:20, 30:50] = 220
    grey += rng.integers(0, 30, grey.shape, dtype=np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    return path


@pytest.fixture
def dialogs(monkeypatch):
    shown = {"critical": [], "information": []}
    monkeypatch.setattr(QMessageBox, "critical", lambda *args, **kw: shown["critical"].append(args))
    monkeypatch.setattr(QMessageBox, "information", lambda *args, **kw: shown["information"].append(args))
    return shown


@pytest.fixture
def panel(qtbot, run_dir, dialogs):
    viewer = ViewerWidget()
    qtbot.addWidget(viewer)
    widget = ExpertsPanel(viewer)
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    assert widget.set_run(run_dir)
    yield widget
    widget.shutdown()


def _apply(qtbot, panel) -> None:
    panel.apply_button.click()
    qtbot.waitUntil(lambda: not panel.is_busy(), timeout=60_000)
    assert panel.wait_idle()


def test_table_shows_the_runs_experts(panel):
    table = panel.table
    assert table.rowCount() == 2
    row = [table.item(0, c).text() for c in range(table.columnCount())]
    assert row[:5] == ["toygrey", "multiclass · 2D", "accuracy", "0.840", "0.810"]
    assert row[5].startswith("4.9 M / 23.5 M") and "smaller" in row[5]
    assert row[6].startswith("300 M / 1.3 G")
    assert row[7].endswith("toygrey")
    seg = [table.item(1, c).text() for c in range(table.columnCount())]
    assert seg[:5] == ["brainseg", "segmentation", "dice", "—", "0.700"]
    assert seg[7] == "not exported"
    assert panel.selected_expert()["name"] == "toygrey"


@pytest.mark.parametrize("image", ["png", "dicom"])
def test_apply_matches_apply_expert(qtbot, panel, run_dir, grey_png, dialogs, image):
    path = grey_png if image == "png" else CT_SMALL
    assert panel.viewer.load_path(path)
    panel.select_task("toygrey")
    seen = []
    panel.applied.connect(seen.append)
    _apply(qtbot, panel)
    assert not dialogs["critical"], dialogs
    expected = apply_expert(run_dir / "experts" / "toygrey", path, None)["scores"]
    shown = panel.shown_probabilities()
    assert list(shown) == TASK["label_names"]
    for name in TASK["label_names"]:
        assert shown[name] == pytest.approx(expected[name], abs=1e-6)
    assert seen and seen[0]["prediction"] == max(expected, key=expected.get)
    assert seen[0]["prediction"] in panel.prediction_label.text()
    assert panel.save_button.isEnabled()


def test_classify_array_equals_apply_expert(run_dir, grey_png):
    bundle = run_dir / "experts" / "toygrey"
    image = np.asarray(Image.open(grey_png))
    record = classify_array(bundle, image, source=str(grey_png))
    assert record == apply_expert(bundle, grey_png, None)


def test_save_scores_and_label_map(qtbot, panel, grey_png, tmp_path, monkeypatch, dialogs):
    viewer = panel.viewer
    viewer.load_path(grey_png)
    _apply(qtbot, panel)
    record = panel.result["record"]
    out = {"json": tmp_path / "out" / "scores.json", "csv": tmp_path / "out" / "scores.csv"}
    for path in out.values():
        monkeypatch.setattr(panel, "_ask_save_path", lambda _s, p=path: str(p))
        assert panel.save_prediction() == path, dialogs
    saved = json.loads(out["json"].read_text())
    assert saved["scores"] == pytest.approx(record["scores"])
    assert saved["prediction"] == record["prediction"] and saved["task"] == "toygrey"
    rows = list(csv.reader(out["csv"].open()))
    assert rows[0][:4] == ["image", "task", "kind", "prediction"] and rows[0][4:] == TASK["label_names"]
    # a label map needs an overlay; with one it is written on the image's exact grid
    nii = tmp_path / "out" / "labels.nii.gz"
    monkeypatch.setattr(panel, "_ask_save_path", lambda _s: str(nii))
    assert panel.save_prediction() is None
    assert len(dialogs["critical"]) == 1
    labels = np.zeros(viewer.volume.array.shape[:3], np.uint8)
    labels[0, 2:9, 4:20] = 3
    viewer.set_overlay(labels, {3: "lesion"})
    assert panel.save_prediction() == nii
    written = sitk.ReadImage(str(nii))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).reshape(labels.shape), labels)


def test_segmentation_expert_gives_a_clear_message(qtbot, panel, grey_png, dialogs):
    panel.viewer.load_path(grey_png)
    panel.select_task("brainseg")
    panel.apply_button.click()
    assert not panel.is_busy()
    assert len(dialogs["information"]) == 1
    assert "segmentation" in dialogs["information"][0][2] and "not supported" in dialogs["information"][0][2]
    assert panel.result is None


def test_apply_without_image_and_cancel(qtbot, panel, grey_png, dialogs):
    panel.apply_button.click()
    assert len(dialogs["information"]) == 1 and "Load an image" in dialogs["information"][0][2]
    panel.viewer.load_path(grey_png)
    panel.apply_button.click()
    assert panel.is_busy() and panel.cancel_button.isEnabled()
    panel.cancel_button.click()
    assert not panel.is_busy()
    assert panel.status_label.text() == "cancelled"
    assert panel.wait_idle()
    qtbot.wait(50)  # deliver whatever the cancelled thread emitted: it must be dropped
    assert panel.result is None and panel.shown_probabilities() == {}
    assert not dialogs["critical"]


def test_export_bundle(qtbot, panel, tmp_path, monkeypatch, dialogs):
    out = tmp_path / "exported"
    monkeypatch.setattr(panel, "_ask_export_folder", lambda: str(out))
    done = []
    panel.exported.connect(done.append)
    panel.export_button.click()
    qtbot.waitUntil(lambda: not panel.is_busy(), timeout=30_000)
    panel.wait_idle()
    assert done == [str(out / "toygrey")], dialogs
    net, metadata = load_bundle(out / "toygrey")
    assert metadata["lorkd"]["task"]["name"] == "toygrey"
    panel.export_button.click()  # the target exists now: refused with a dialog
    assert not panel.is_busy()
    assert len(dialogs["critical"]) == 1 and "already exists" in dialogs["critical"][0][2]


def test_bad_bundle_and_bad_summary_give_dialogs(qtbot, panel, run_dir, grey_png, tmp_path, dialogs):
    broken_run = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken_run)
    model = broken_run / "experts" / "toygrey" / "models" / "model.pt"
    data = bytearray(model.read_bytes())
    data[-64] ^= 0x01
    model.write_bytes(bytes(data))
    assert panel.set_run(broken_run)
    panel.viewer.load_path(grey_png)
    _apply(qtbot, panel)
    assert len(dialogs["critical"]) == 1 and "SHA-256" in dialogs["critical"][0][2]
    assert panel.apply_button.isEnabled()  # still usable
    (broken_run / "summary.json").write_text("{not json")
    assert panel.set_run(broken_run) is False
    assert len(dialogs["critical"]) == 2 and panel.table.rowCount() == 0
    assert panel.set_run(tmp_path / "no_such_run") is False
    assert "no summary.json" in panel.run_label.text()
    assert panel.set_run(run_dir)
    _apply(qtbot, panel)
    assert panel.result is not None
