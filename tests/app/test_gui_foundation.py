"""Setup with the user's own foundation model (issue 14): a MONAI bundle (folder or zip) or a TorchScript file in
the foundation model field, its labels listed under it, tasks picking their labels among them (teacher_labels),
label-free tasks (images without label maps) marked in the task table, and YAML round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt

from app.setup_panel import (
    COL_FILE,
    COL_INFO,
    COL_KIND,
    COL_LABELS,
    INVALID_CELL,
    FoundationLabelsDialog,
    SetupPanel,
    model_key,
)
from core.kinds import load_config

NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
       "num_res_units": 0}
CHANNELS = {"0": "background", "1": "liver", "2": "spleen"}


def write_tiny_bundle(folder: Path, network_def: dict | None = None) -> Path:
    """A MONAI bundle of an untrained 3-channel UNet: configs/inference.json, configs/metadata.json, models/model.pt."""
    from monai.networks.nets import UNet

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": network_def or {"_target_": "UNet", **NET}}))
    (folder / "configs" / "metadata.json").write_text(json.dumps(
        {"version": "0.1.0", "network_data_format": {"outputs": {"pred": {"channel_def": CHANNELS}}}}))
    torch.manual_seed(0)
    torch.save(UNet(**NET).state_dict(), folder / "models" / "model.pt")
    return folder


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a folder of image volumes with no label maps, a labelled task's images, its label maps)."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    root = tmp_path_factory.mktemp("vols")
    images, labels = write_synthetic_task(root / "cubes", 2, "cube", shape=(16, 20, 24), seed=2)
    unlabelled = root / "abdomen" / "images"
    shutil.copytree(images, unlabelled)
    return unlabelled, images, labels


def seg_raw(images: Path, **teacher) -> dict:
    return {"name": "seg", "kind": "segmentation",
            "tasks": [{"name": "organ", "images": str(images), "teacher_labels": ["spleen"]}],
            "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16]}, "teacher": teacher, "device": "cpu"}


def panel(qtbot, raw: dict | None = None) -> SetupPanel:
    setup = SetupPanel()
    qtbot.addWidget(setup)
    if raw is not None:
        setup.set_mapping(raw)
    return setup


def test_path_decides_the_teacher_key(tmp_path):
    (tmp_path / "bundle").mkdir()
    assert model_key(str(tmp_path / "bundle")) == "bundle"
    assert model_key(str(tmp_path / "spleen.ZIP")) == "bundle"
    assert model_key(str(tmp_path / "model.ts")) == "torchscript"
    assert model_key(str(tmp_path / "teacher.pt")) == "checkpoint"
    assert model_key("") == "checkpoint"


def test_bundle_labels_listed_and_a_label_free_task_picks_spleen(qtbot, tmp_path, volumes, monkeypatch):
    """Choose a bundle folder: its labels are listed under the field; a task added without label maps is marked
    label-free and picks "spleen" among the foundation labels; the config has teacher.bundle and the task's
    teacher_labels, no label maps; it survives a YAML round trip."""
    unlabelled, images, labels = volumes
    bundle = write_tiny_bundle(tmp_path / "spleen_bundle")
    raw = {"name": "seg", "kind": "segmentation",
           "tasks": [{"name": "cubes", "images": str(images), "labels": str(labels),
                      "label_names": {1: "shell", 2: "core"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16]}, "device": "cpu"}
    setup = panel(qtbot, raw)
    assert setup.is_valid, setup.error
    assert setup.checkpoint_radio.text() == "Load a foundation model"
    assert setup.add_label_free_button.isVisibleTo(setup) and not setup.add_label_free_button.isEnabled()

    setup.checkpoint_radio.setChecked(True)
    setup.checkpoint_edit.setText(str(bundle))
    setup.validate_now()
    assert setup.foundation_names == ["background", "liver", "spleen"]
    assert setup.foundation_labels.text() == "Labels: background, liver, spleen"
    # with a user's foundation model every task names the labels it segments
    assert setup.error_for("tasks").startswith("tasks.0.teacher_labels:")
    assert setup.tasks.item(0, COL_FILE).background().color() == INVALID_CELL
    setup.set_task_teacher_labels(0, ["liver", "spleen"])
    assert setup.validate_now() is not None, setup.error
    assert "foundation labels: liver, spleen" in setup.tasks.item(0, COL_FILE).text()

    # a label-free task: an images folder, then its foundation labels from the checkable list
    asked = []

    def ask(task, names, current):
        asked.append((task, names, current))
        dialog = FoundationLabelsDialog(task, names, current, setup)
        dialog.set_checked(["spleen"])
        return dialog.chosen()

    monkeypatch.setattr(setup, "_ask_images_folder", lambda: str(unlabelled))
    monkeypatch.setattr(setup, "_ask_foundation_labels", ask)
    assert setup.add_label_free_button.isEnabled()
    setup.add_label_free_button.click()
    assert asked == [("abdomen", ["background", "liver", "spleen"], [])]
    config = setup.validate_now()
    assert config is not None and setup.is_valid, setup.error
    assert setup.tasks.cellWidget(1, COL_KIND).currentText() == "segmentation, label-free"
    assert setup.tasks.item(1, COL_FILE).text() == f"{unlabelled} → (label-free) · foundation labels: spleen"
    assert setup.tasks.item(1, COL_LABELS).text() == ""
    assert "label-free" in setup.tasks.item(1, COL_INFO).text()
    task = setup.mapping()["tasks"][1]
    assert task["teacher_labels"] == ["spleen"] and task["labels"] is None and task["label_names"] is None
    t = setup.mapping()["teacher"]
    assert t["bundle"] == str(bundle) and t["checkpoint"] is None and t["torchscript"] is None
    assert config.teacher.bundle == str(bundle) and config.tasks[1].label_free
    assert config.tasks[1].teacher_labels == ["spleen"] and config.tasks[1].labels is None

    # the picker opens on what the task has; cancelling keeps it
    setup.tasks.selectRow(1)
    monkeypatch.setattr(setup, "_ask_foundation_labels", lambda task, names, current: asked.append(current))
    setup.foundation_labels_button.click()
    assert asked[-1] == ["spleen"] and setup.mapping()["tasks"][1]["teacher_labels"] == ["spleen"]

    path = tmp_path / "foundation.yaml"
    setup.save_yaml(path)
    other = panel(qtbot)
    other.load_yaml(path)
    assert other.is_valid, other.error
    assert other.mapping() == setup.mapping()
    assert other.checkpoint_radio.isChecked() and other.checkpoint_edit.text() == str(bundle)
    assert other.foundation_labels.text() == "Labels: background, liver, spleen"
    assert other.tasks.cellWidget(1, COL_KIND).currentText() == "segmentation, label-free"
    assert load_config(path).to_dict() == setup.config.to_dict()


def test_zip_bundle_and_unknown_label(qtbot, tmp_path, volumes):
    bundle = write_tiny_bundle(tmp_path / "b")
    archive = Path(shutil.make_archive(str(tmp_path / "spleen"), "zip", bundle))
    setup = panel(qtbot, seg_raw(volumes[0], bundle=str(archive)))
    assert setup.is_valid, setup.error
    assert setup.model_format.currentData() == "auto"
    assert setup.foundation_names == ["background", "liver", "spleen"]
    setup.set_task_teacher_labels(0, ["kidney"])
    setup.validate_now()
    message = setup.error_for("tasks")
    assert message.startswith("tasks.0.teacher_labels.0:") and "kidney" in message and "spleen" in message
    setup.set_task_teacher_labels(0, [2])  # a channel index is fine too
    assert setup.validate_now() is not None, setup.error
    # without a bundle or TorchScript file there is nothing to pick from: the status line says so
    setup.pretrain_radio.setChecked(True)
    setup.validate_now()
    assert not setup.foundation_labels_button.isEnabled() and not setup.add_label_free_button.isEnabled()
    setup.pick_foundation_labels(0)
    assert "choose a MONAI bundle or TorchScript foundation model first" in setup.status.text()
    assert setup.error_for("tasks").startswith("tasks.0.teacher_labels:")  # only for a user's foundation model


def test_untrusted_bundle_error_is_shown_at_the_field(qtbot, tmp_path, volumes):
    """A bundle whose network_def names code outside torch/monai/numpy is refused with one line at the field until
    trusted (teacher.trust_bundle); no labels are listed."""
    bundle = write_tiny_bundle(tmp_path / "odd", {"_target_": "mypackage.nets.Net", "width": 4})
    setup = panel(qtbot, seg_raw(volumes[0], bundle=str(bundle)))
    assert not setup.is_valid
    message = setup.error_for("teacher.bundle")
    assert message.startswith("teacher.bundle:") and "mypackage.nets.Net" in message and "\n" not in message
    assert setup.foundation_labels.isHidden() and setup.foundation_names is None
    assert not setup.trust_check.isChecked()
    setup.trust_check.setChecked(True)
    assert setup.mapping()["teacher"]["trust_bundle"] is True
    setup.validate_now()
    assert "mypackage" in setup.error_for("teacher.bundle")  # trusted, but the package is not there


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's own deprecation notice
def test_torchscript_round_trip_and_read_as(qtbot, tmp_path, volumes):
    """A TorchScript file (.ts by the path; a .pt one via "Read as" / the config) is written back to
    teacher.torchscript unchanged; it names no channels unless teacher.labels does."""
    script = torch.jit.trace(torch.nn.Conv3d(1, 3, 1), torch.zeros(1, 1, 4, 4, 4))
    ts, pt = tmp_path / "model.ts", tmp_path / "scripted.pt"
    script.save(str(ts))
    script.save(str(pt))
    setup = panel(qtbot, seg_raw(volumes[0]))
    setup.choose_model(ts)
    setup.validate_now()
    t = setup.mapping()["teacher"]
    assert t["torchscript"] == str(ts) and t["bundle"] is None and t["checkpoint"] is None
    assert setup.foundation_names is None and "by index" in setup.foundation_labels.text()
    assert setup.error_for("tasks") == "" and setup.is_valid, setup.error

    raw = seg_raw(volumes[0], torchscript=str(pt), labels=["background", "liver", "spleen"])
    setup.set_mapping(raw)
    assert setup.is_valid, setup.error
    assert setup.model_format.currentData() == "torchscript"  # a .pt path alone would read as a checkpoint
    assert setup.foundation_labels.text() == "Labels: background, liver, spleen (teacher.labels)"
    path = tmp_path / "ts.yaml"
    setup.save_yaml(path)
    other = panel(qtbot)
    other.load_yaml(path)
    assert other.mapping() == setup.mapping()
    assert other.mapping()["teacher"]["torchscript"] == str(pt)
    # "Read as" decides the key; Browse goes back to deciding by the path
    other.model_format.setCurrentIndex(other.model_format.findData("checkpoint"))
    assert other.mapping()["teacher"]["checkpoint"] == str(pt)
    other.choose_model(ts)
    assert other.mapping()["teacher"]["torchscript"] == str(ts)
    other.pretrain_radio.setChecked(True)
    t = other.mapping()["teacher"]
    assert t["torchscript"] is None and t["bundle"] is None and t["checkpoint"] is None


def test_classification_keeps_a_plain_checkpoint_field(qtbot, tmp_path):
    from gui_support import tiny_config

    (tmp_path / "data").mkdir()
    setup = panel(qtbot, tiny_config(tmp_path / "data"))
    assert not setup.model_format.isVisibleTo(setup) and not setup.trust_check.isVisibleTo(setup)
    assert not setup.add_label_free_button.isVisibleTo(setup)
    assert not setup.foundation_labels_button.isVisibleTo(setup)
    setup.choose_model(tmp_path / "teacher.ts")  # any path is a checkpoint here
    assert setup.mapping()["teacher"]["checkpoint"] == str(tmp_path / "teacher.ts")
    assert "bundle" not in setup.mapping()["teacher"]
    assert setup.browse_button.menu() is None


def test_kind_rows_round_trip_label_free_tasks():
    """The segmentation kind's table rows: a label-free task (images only) and a labelled one keep every field,
    per-task intensity included."""
    from core.kinds import get_kind

    kind = get_kind("segmentation")
    free = {"name": "spleen", "images": "/x/images", "labels": None, "label_names": None,
            "intensity": None, "teacher_labels": ["spleen"]}
    row = kind.task_row(free)
    assert row.subkind == "segmentation, label-free" and row.source == "/x/images → (label-free) · foundation " \
        "labels: spleen" and row.labels == []
    assert kind.task_from_row(row) == {k: v for k, v in free.items() if k != "intensity"}  # None: the default
    labelled = {"name": "cubes", "images": "/x/i", "labels": "/x/l", "label_names": {1: "a", 2: "b"},
                "intensity": {"mode": "ct_window", "low": -100.0, "high": 200.0}, "teacher_labels": None}
    row = kind.task_row(labelled)
    assert row.subkind == "segmentation" and row.source == "/x/i → /x/l"
    assert kind.task_from_row(row) == labelled
    assert kind.new_tasks(["/data/Task09_Spleen/imagesTr"], {"x"}) == [
        {"name": "Task09_Spleen", "images": str(Path("/data/Task09_Spleen/imagesTr").resolve()), "labels": None,
         "label_names": None, "teacher_labels": None}]


def test_double_click_on_the_source_opens_the_picker(qtbot, tmp_path, volumes, monkeypatch):
    bundle = write_tiny_bundle(tmp_path / "b")
    setup = panel(qtbot, seg_raw(volumes[0], bundle=str(bundle)))
    monkeypatch.setattr(setup, "_ask_foundation_labels", lambda task, names, current: ["liver", "spleen"])
    setup.tasks.cellDoubleClicked.emit(0, COL_FILE)
    assert setup.mapping()["tasks"][0]["teacher_labels"] == ["liver", "spleen"]
    assert setup.validate_now() is not None, setup.error
    assert setup.tasks.item(0, COL_FILE).flags() & Qt.ItemFlag.ItemIsEditable == Qt.ItemFlag.NoItemFlags


def test_label_free_task_shows_its_foundation_labels_in_grey(qtbot, tmp_path, volumes):
    """Issue 15: a label-free task's Labels cell was empty; it shows the foundation labels it picked in grey (the
    cell stays empty, so the config keeps label_names unset)."""
    unlabelled, images, labels = volumes
    bundle = write_tiny_bundle(tmp_path / "spleen_bundle")
    raw = seg_raw(unlabelled, bundle=str(bundle))
    raw["tasks"].append({"name": "cubes", "images": str(images), "labels": str(labels),
                         "label_names": {1: "shell", 2: "core"}, "teacher_labels": ["liver", "spleen"]})
    raw["tasks"].append({"name": "plain", "images": str(unlabelled)})
    setup = panel(qtbot, raw)
    assert setup.placeholder(0, COL_LABELS) == "spleen (from the foundation model)"
    assert setup.placeholder(1, COL_LABELS) == ""  # named by the user
    assert setup.placeholder(2, COL_LABELS) == "(from the foundation model)"  # label-free, nothing picked yet
    setup.set_task_teacher_labels(2, ["liver"])
    assert setup.placeholder(2, COL_LABELS) == "liver (from the foundation model)"
    assert setup.mapping()["tasks"][0]["label_names"] is None
    setup.resize(1280, 700)
    setup.show()
    assert _drawn_in(setup.tasks, 0, COL_LABELS)  # the delegate draws it
    setup._picks = False  # (a kind whose tasks pick no foundation labels: no placeholder, a blank cell)
    assert not _drawn_in(setup.tasks, 0, COL_LABELS)


def _drawn_in(table, row: int, col: int) -> bool:
    """Whether anything but the background is drawn in a table cell (rendered)."""
    table.viewport().repaint()
    image = table.viewport().grab().toImage()
    rect = table.visualRect(table.model().index(row, col)).adjusted(2, 2, -2, -2)
    back = image.pixel(rect.left(), rect.top())
    return any(image.pixel(x, y) != back for x in range(rect.left(), rect.right())
               for y in range(rect.top(), rect.bottom()))


def test_bundle_teacher_offers_same_and_width_and_disables_architecture(qtbot, tmp_path, volumes):
    """Issue 15: with a MONAI bundle as the foundation model the Architecture field does not apply (disabled, the
    tooltip says why); the backbone may be "same (as the bundle)", whose Width (backbone.width) is in the form."""
    bundle = write_tiny_bundle(tmp_path / "spleen_bundle")
    setup = panel(qtbot, seg_raw(volumes[0], bundle=str(bundle)))
    same = setup.backbone_arch.findData("same")
    assert setup.backbone_arch.itemText(same) == "same (as the bundle)"
    assert not setup.teacher_arch.isEnabled() and "bundle defines its own network" in setup.teacher_arch.toolTip()
    assert setup.backbone_arch.model().item(same).isEnabled()
    assert setup.width_edit.isVisibleTo(setup) and setup.width_edit.text() == "0.25"
    assert not setup.width_edit.isEnabled()  # unet: width does not apply
    setup.backbone_arch.setCurrentIndex(same)
    setup.width_edit.setText("0.5")
    assert setup.width_edit.isEnabled()
    config = setup.validate_now()
    assert config is not None, setup.error
    assert config.backbone.arch == "same" and config.backbone.width == 0.5
    setup.width_edit.setText("2")
    setup.validate_now()
    assert setup.error_for("backbone.width").startswith("backbone.width:")
    # pre-trained here: its Architecture applies, "same" does not
    setup.width_edit.setText("0.5")
    setup.pretrain_radio.setChecked(True)
    setup.validate_now()
    assert setup.teacher_arch.isEnabled() and not setup.backbone_arch.model().item(same).isEnabled()
    assert "MONAI bundle" in setup.backbone_arch.model().item(same).toolTip()
    # a saved config keeps the width; a classification run has none
    other = panel(qtbot, {**seg_raw(volumes[0], bundle=str(bundle)), "backbone": {"arch": "same", "width": 0.5}})
    assert other.width_edit.text() == "0.5" and other.is_valid, other.error
    classification = panel(qtbot)
    assert not classification.width_edit.isVisibleTo(classification)
    assert "width" not in classification.mapping()["backbone"]
