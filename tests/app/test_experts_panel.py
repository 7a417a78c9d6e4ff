"""app.experts.ExpertsPanel: the run's expert table, applying an expert to the viewer's image (same numbers as
`apply_expert` on the file), saving scores and label maps, exporting a bundle, errors in dialogs; segmentation
experts of a tiny trained 3D run: the volume's label map as the viewer's overlay (same labels as `lorkd apply`),
cancel, NIfTI and DICOM SEG output in the input's geometry, bundle export."""

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
from core.kinds.classification.apply import apply_expert, classify_array
from core.kinds.classification.bundle import load_bundle, write_bundle
from core.kinds.classification.nets import ClassifierNet

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
                "metric": "accuracy", "teacher": 0.84, "expert": 0.81, "single_task": 0.79,
                "expert_minus_teacher": -0.03, "expert_minus_teacher_ci": [-0.05, -0.01], "test_cases": 40,
                "flags": ["below the foundation model: accuracy difference -0.030, 95% CI -0.050 to -0.010"],
                "params": {"expert_model": 4_901_000, "expert_low_rank": 20_000},
                "macs": {"expert_model": 300_001_000},
            },
            {
                "name": "brainseg", "kind": "segmentation", "num_classes": 4, "labels": ["bg", "csf", "gm", "wm"],
                "metric": "dice", "teacher": None, "expert": 0.7, "spatial_dims": 3,
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


def _open_panel(qtbot, run) -> ExpertsPanel:
    """An experts panel (with its own viewer) shown on the run folder `run`."""
    viewer = ViewerWidget()
    qtbot.addWidget(viewer)
    widget = ExpertsPanel(viewer)
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    assert widget.set_run(run)
    return widget


@pytest.fixture
def panel(qtbot, run_dir, dialogs):
    widget = _open_panel(qtbot, run_dir)
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
    assert row[5:7] == ["0.790", "-0.030 (-0.050 to -0.010)"]
    assert row[7].startswith("4.9 M / 23.5 M") and "smaller" in row[7]
    assert row[8].startswith("300 M / 1.3 G")
    assert row[9].endswith("toygrey")
    seg = [table.item(1, c).text() for c in range(table.columnCount())]
    assert seg[:5] == ["brainseg", "segmentation · 3D", "dice", "—", "0.700"]
    assert seg[9] == "not exported"
    assert panel.selected_expert()["name"] == "toygrey"
    # the selected expert's evidence, in words, with its interval and its warning
    text = panel.evidence_label.text()
    assert "Expert 0.810 vs foundation model 0.840 (accuracy): difference -0.030, 95% CI -0.050 to -0.010, " \
           "40 test cases" in text
    assert "Warning" in text and "below the foundation model" in text
    assert table.item(0, 6).toolTip().startswith("below the foundation model")


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


def test_segmentation_expert_without_bundle_gives_a_clear_message(qtbot, panel, grey_png, dialogs):
    panel.viewer.load_path(grey_png)
    panel.select_task("brainseg")
    panel.apply_button.click()
    assert not panel.is_busy()
    assert len(dialogs["critical"]) == 1 and "no bundle" in dialogs["critical"][0][2]
    assert panel.result is None and panel.map_result is None


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


# ------------------------------------------------------------------------------------------- segmentation


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory) -> Path:
    """A tiny finished segmentation run (synthetic cubes with a shell and a core; one epoch each, 16^3 patches)."""
    from core.kinds import load_config
    from core.kinds.segmentation.synthetic import write_synthetic_task
    from core.train.pipeline import Pipeline

    root = tmp_path_factory.mktemp("segrun")
    images, labels = write_synthetic_task(root / "cubes", 2, "cube", shape=(16, 20, 24), seed=2)
    raw = {
        "name": "tiny-seg", "kind": "segmentation",
        "tasks": [{"name": "cubes", "images": str(images), "labels": str(labels),
                   "label_names": {1: "shell", 2: "core"}}],
        "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 4, "region_mm": 8},
        "teacher": {"channels": [4, 8, 16], "epochs": 1},
        "backbone": {"channels": [4, 8, 16]},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.01},
        "device": "cpu",
    }
    torch.manual_seed(0)
    summary = Pipeline(load_config(raw), root / "run").run()
    assert summary["status"] == "completed"
    return root / "run"


@pytest.fixture
def seg_volume(tmp_path) -> Path:
    """A cube volume with a permuted, flipped direction and anisotropic spacing (NIfTI)."""
    from core.io import Volume, write_volume
    from core.kinds.segmentation.synthetic import synthetic_volume

    image, _ = synthetic_volume((14, 22, 26), "cube", seed=7)
    volume = Volume(image, spacing=(1.2, 1.6, 2.1), origin=(3.0, -7.0, 11.0), direction=(0, 0, 1, -1, 0, 0, 0, 1, 0))
    return write_volume(volume, tmp_path / "volume.nii.gz")


@pytest.fixture
def seg_panel(qtbot, seg_run, dialogs):
    widget = _open_panel(qtbot, seg_run)
    yield widget
    widget.shutdown()


def test_seg_table_shows_dice_and_sizes(seg_panel, seg_run):
    summary = json.loads((seg_run / "summary.json").read_text())
    task = summary["tasks"][0]
    row = [seg_panel.table.item(0, c).text() for c in range(seg_panel.table.columnCount())]
    assert row[:3] == ["cubes", "segmentation · 3D", "dice"]
    assert row[3] == f"{task['teacher']:.3f}" and row[4] == f"{task['expert']:.3f}"  # Dice: foundation, expert
    assert "smaller" in row[7] and row[9].endswith("cubes")
    assert seg_panel.selected_expert()["labels"] == ["background", "shell", "core"]


def test_seg_apply_shows_the_label_map_as_overlay(qtbot, seg_panel, seg_run, seg_volume, dialogs, tmp_path):
    from core.kinds.segmentation.apply import apply_segmentation

    viewer = seg_panel.viewer
    assert viewer.load_path(seg_volume)
    seen = []
    seg_panel.applied.connect(seen.append)
    seg_panel.apply_button.click()
    assert seg_panel.is_busy() and seg_panel.cancel_button.isEnabled()  # in a worker: the click returned at once
    qtbot.waitUntil(lambda: not seg_panel.is_busy(), timeout=60_000)
    assert seg_panel.wait_idle() and not dialogs["critical"], dialogs
    expected = apply_segmentation(seg_run / "experts" / "cubes", seg_volume, None)
    np.testing.assert_array_equal(viewer.overlay_labels, expected["labels_array"])
    assert seen and seen[0]["kind"] == "segmentation" and seen[0]["voxels"] == expected["voxels"]
    assert seen[0]["labels"] == {"0": "background", "1": "shell", "2": "core"}
    present = [k for k in (1, 2) if (expected["labels_array"] == k).any()]
    assert present, "the tiny expert should find some structure"
    assert all(viewer.overlay_names[k] == {1: "shell", 2: "core"}[k] for k in present)
    assert viewer.label_list.count() == len(present)
    assert "shell" in seg_panel.prediction_label.text() and " ml" in seg_panel.prediction_label.text()
    # per-label visibility and opacity act on the shown overlay
    viewer.set_label_visible(present[0], False)
    assert not viewer.label_visible(present[0])
    viewer.set_overlay_opacity(0.25)
    assert viewer.views["axial"].overlay.opacity() == pytest.approx(0.25)
    # save as NIfTI: the input's exact grid
    out = tmp_path / "saved" / "labels.nii.gz"
    seg_panel._ask_save_path = lambda suggested: str(out)
    assert seg_panel.save_prediction() == out
    written = sitk.ReadImage(str(out))
    source = sitk.ReadImage(str(seg_volume))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected["labels_array"])
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    # a DICOM SEG needs a DICOM image: refused with a dialog
    seg_panel._ask_save_path = lambda suggested: str(tmp_path / "x.dcm")
    assert seg_panel.save_prediction() is None
    assert "DICOM" in dialogs["critical"][-1][2]
    # a new image drops the result
    assert viewer.load_path(seg_volume)
    assert seg_panel.map_result is None and viewer.overlay_labels is None


def test_seg_apply_cancel_and_needs_a_volume(qtbot, seg_panel, seg_volume, grey_png, dialogs):
    seg_panel.viewer.load_path(grey_png)  # a 2D image: refused, nothing started
    seg_panel.apply_button.click()
    assert not seg_panel.is_busy()
    assert "3D" in dialogs["information"][-1][2]
    seg_panel.viewer.load_path(seg_volume)
    seg_panel.apply_button.click()
    worker = seg_panel._worker
    assert seg_panel.is_busy() and worker.control is not None
    seg_panel.cancel_button.click()
    assert not seg_panel.is_busy() and worker.control.stopping
    assert seg_panel.status_label.text() == "cancelled"
    assert seg_panel.wait_idle()
    qtbot.wait(50)  # whatever the cancelled thread emitted is dropped
    assert seg_panel.map_result is None and seg_panel.viewer.overlay_labels is None
    assert not dialogs["critical"]


def test_seg_apply_to_dicom_series_saves_dicom_seg(qtbot, seg_panel, tmp_path, dialogs):
    import highdicom as hd
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from core.kinds.segmentation.synthetic import synthetic_volume

    image, _ = synthetic_volume((10, 20, 24), "cube", seed=7)
    folder = tmp_path / "series"
    folder.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for z, plane in enumerate(image):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{z}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyDate = "MR", "P1", "Test^Seg", "20240101"
        ds.InstanceNumber, ds.SeriesNumber = z + 1, 2
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 2.0
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.round(plane).astype(np.int16).tobytes()
        ds.save_as(folder / f"{z}.dcm", enforce_file_format=True)
    assert seg_panel.viewer.load_path(folder)
    seg_panel.apply_button.click()
    qtbot.waitUntil(lambda: not seg_panel.is_busy(), timeout=60_000)
    assert seg_panel.wait_idle() and seg_panel.map_result is not None, dialogs
    labels = seg_panel.viewer.overlay_labels
    out = tmp_path / "seg.dcm"
    seg_panel._ask_save_path = lambda suggested: str(out)
    assert seg_panel.save_prediction() == out, dialogs
    seg = hd.seg.segread(out)
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.get_segment_numbers()] == ["shell", "core"]
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(np.asarray(back), labels)


def test_seg_export_bundle_copies_or_exports_from_the_checkpoint(qtbot, seg_panel, seg_run, tmp_path, dialogs):
    from core.kinds.segmentation.bundle import load_seg_bundle

    out = tmp_path / "exported"
    seg_panel._ask_export_folder = lambda: str(out)
    seg_panel.export_button.click()
    qtbot.waitUntil(lambda: not seg_panel.is_busy(), timeout=30_000)
    assert seg_panel.wait_idle()
    _, metadata = load_seg_bundle(out / "cubes")
    assert metadata["lorkd"]["label_names"] == ["background", "shell", "core"]
    # a run without exported bundles: exported from its checkpoint (open_run)
    bare = tmp_path / "bare_run"
    shutil.copytree(seg_run, bare, ignore=shutil.ignore_patterns("experts"))
    assert seg_panel.set_run(bare) and seg_panel.selected_expert()["bundle"] is None
    out2 = tmp_path / "exported2"
    seg_panel._ask_export_folder = lambda: str(out2)
    seg_panel.export_button.click()
    qtbot.waitUntil(lambda: not seg_panel.is_busy(), timeout=60_000)
    assert seg_panel.wait_idle() and not dialogs["critical"], dialogs
    _, metadata2 = load_seg_bundle(out2 / "cubes")
    assert metadata2["lorkd"]["network"] == metadata["lorkd"]["network"]


def test_result_is_labelled_and_guarded_and_cleared_with_the_run(qtbot, seg_panel, seg_run, run_dir, dialogs,
                                                                  tmp_path):
    """Before any prediction (and for label maps) no probability chart; a volume outside what the expert was trained
    on gets the banner naming the mismatch (the same sentences as `lorkd apply`), one of its training volumes none;
    every result names its expert and "research use only"; another run clears the old prediction."""
    from core.io import Volume, write_volume
    from core.kinds.segmentation.apply import apply_segmentation
    from core.kinds.segmentation.synthetic import synthetic_volume

    viewer = seg_panel.viewer
    assert not seg_panel.plot.isVisible() and not seg_panel.applicability_banner.isVisible()
    coarse = write_volume(Volume(synthetic_volume((14, 22, 26), "cube", seed=7)[0], spacing=(4.0, 4.0, 5.0)),
                          tmp_path / "coarse.nii.gz")  # trained on 1.5 x 1.5 x 2 mm voxels
    expected = apply_segmentation(seg_run / "experts" / "cubes", coarse, None)["applicability"]
    assert any("voxel size" in m for m in expected)
    assert viewer.load_path(coarse)
    _apply(qtbot, seg_panel)
    assert seg_panel.applicability_banner.isVisible() and not seg_panel.plot.isVisible()
    assert all(m.split(":")[0] in seg_panel.applicability_banner.text() for m in expected)
    text = seg_panel.prediction_label.text()
    assert "Expert: LoRKD segmentation expert: cubes" in text and "research use only" in text
    training = sorted((seg_run.parent / "cubes" / "images").iterdir())[0]
    assert viewer.load_path(training)
    assert not seg_panel.applicability_banner.isVisible() and seg_panel.prediction_label.text() == "No prediction yet"
    _apply(qtbot, seg_panel)
    assert not seg_panel.applicability_banner.isVisible() and viewer.overlay_labels is not None
    assert seg_panel.save_button.isEnabled()
    # another run: the old prediction, its overlay and Save go
    assert seg_panel.set_run(run_dir)
    assert seg_panel.prediction_label.text() == "No prediction yet" and viewer.overlay_labels is None
    assert not seg_panel.save_button.isEnabled() and not dialogs["critical"]


def test_a_relaunch_shows_the_last_runs_experts(qtbot, seg_run, tmp_path):
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    path = str(tmp_path / "s.ini")
    first = MainWindow(QSettings(path, QSettings.Format.IniFormat), runs_dir=tmp_path / "r", load_demo=False)
    qtbot.addWidget(first)
    assert first.open_run(seg_run)
    first.close()
    second = MainWindow(QSettings(path, QSettings.Format.IniFormat), load_demo=False)
    qtbot.addWidget(second)
    assert second.experts.run_dir == seg_run and second.experts.table.rowCount() == 1
    assert "No run loaded" not in second.experts.run_label.text()
