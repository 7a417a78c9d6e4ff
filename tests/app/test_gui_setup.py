"""Run setup: validation through core.config shown next to the field, Start disabled while invalid,
YAML round trip, tasks table."""

from __future__ import annotations

from pathlib import Path

import yaml
from gui_support import tiny_config
from PySide6.QtCore import Qt

from app.setup_panel import COL_FILE, COL_INFO, COL_RANK, INVALID_CELL, SetupPanel
from core.errors import ConfigError
from core.kinds import load_config


def test_config_errors_carry_the_field_path_as_data():
    """The form places an error by `ConfigError.loc`, not by parsing the message."""
    for raw, loc in (({"name": "x", "tasks": [{"name": "t", "medmnist": "x.npz"}], "train": {"epochs": -1}},
                      ("train", "epochs")),
                     ({"name": "x", "tasks": [{"name": "t"}]}, ("tasks", 0, "medmnist")),
                     ({"name": "x", "tasks": [{"name": "a b", "medmnist": "x.npz"}]}, ("tasks", 0, "name"))):
        try:
            load_config(raw)
        except ConfigError as exc:
            assert exc.loc == loc and str(exc).startswith(exc.path + ": "), (exc.loc, str(exc))
        else:
            raise AssertionError(f"{raw} was accepted")


def test_valid_tiny_config_enables_start(window, data_dir):
    window.setup.set_mapping(tiny_config(data_dir))
    assert window.setup.is_valid and window.setup.error is None
    assert window.start_button.isEnabled()
    assert "multiclass" in window.setup.tasks.item(0, 5).text()  # what the file holds


def test_negative_epochs_named_next_to_the_field_and_start_disabled(qtbot, window, data_dir):
    window.setup.set_mapping(tiny_config(data_dir))
    window.setup.epochs.setValue(-1)
    qtbot.waitUntil(lambda: not window.setup.is_valid, timeout=2000)  # debounced validation
    message = window.setup.error_for("train.epochs")
    assert message.startswith("train.epochs:") and "-1" in message
    label = window.setup._fields["train.epochs"][1]
    assert label.isVisible()
    assert not window.start_button.isEnabled() and not window.start_action.isEnabled()
    assert window.setup.error_for("train.batch_size") == ""

    window.setup.epochs.setValue(2)
    qtbot.waitUntil(lambda: window.setup.is_valid, timeout=2000)
    assert not label.isVisible()
    assert window.start_button.isEnabled()


def test_missing_task_file_is_named_in_the_tasks_table(window, data_dir):
    window.setup.set_mapping(tiny_config(data_dir))
    window.setup.tasks.item(1, COL_FILE).setText(str(data_dir / "missing.npz"))
    window.setup.validate_now()
    message = window.setup.error_for("tasks")
    assert message.startswith("tasks.1.medmnist:") and "missing.npz" in message
    assert window.setup.tasks.item(1, COL_FILE).background().color() == INVALID_CELL
    assert not window.start_button.isEnabled()


def test_bad_numbers_and_checkpoint_are_named(window, data_dir):
    setup = window.setup
    setup.set_mapping(tiny_config(data_dir))
    setup.lr.setText("fast")
    setup.validate_now()
    assert setup.error_for("train.lr").startswith("train.lr: expected a number")
    setup.lr.setText("0.01")
    setup.tasks.item(0, COL_RANK).setText("0")
    setup.validate_now()
    assert setup.error_for("tasks").startswith("backbone.ranks.alpha:")
    assert setup.tasks.item(0, COL_RANK).background().color() == INVALID_CELL
    setup.tasks.item(0, COL_RANK).setText("2")
    setup.checkpoint_radio.setChecked(True)
    setup.validate_now()
    assert setup.error_for("teacher.checkpoint").startswith("teacher.checkpoint:")
    assert not window.start_button.isEnabled()
    setup.pretrain_radio.setChecked(True)
    assert setup.validate_now() is not None
    assert setup.config.rank_of("alpha") == 2 and setup.config.rank_of("beta") == 4


def test_wrong_kind_for_the_file_is_named(window, data_dir):
    window.setup.set_mapping(tiny_config(data_dir))
    combo = window.setup.tasks.cellWidget(0, 2)
    combo.setCurrentIndex(combo.findData("multilabel"))
    window.setup.validate_now()
    assert window.setup.error_for("tasks").startswith("tasks.0.kind:")


def test_yaml_round_trip(window, data_dir, tmp_path, qtbot):
    raw = tiny_config(data_dir)
    raw["train"].update({"optimizer": "adamw", "kd_weight": 0.5, "temperature": 2.0, "lr": 0.003})
    raw["backbone"].update({"form": "paper", "rank": 3, "alpha": 8.0, "ranks": {"beta": 6}})
    raw["tasks"][0]["labels"] = ["a", "b", "c"]
    raw["data"] = {"max_train_per_task": 20}  # not on the form: kept as loaded
    window.setup.set_mapping(raw)
    path = tmp_path / "saved.yaml"
    assert window.save_config(path)
    assert load_config(path).to_dict() == window.setup.config.to_dict()

    other = SetupPanel()
    qtbot.addWidget(other)
    other.load_yaml(path)
    assert other.mapping() == window.setup.mapping()
    assert other.config.backbone.ranks == {"beta": 6}
    assert other.config.data.max_train_per_task == 20
    assert str(path.resolve()) in window.settings.recent("configs")


def test_relative_paths_in_yaml_resolve_against_its_folder(window, data_dir):
    raw = tiny_config(data_dir)
    for task in raw["tasks"]:
        task["medmnist"] = f"data/{task['medmnist'].rsplit('/', 1)[-1]}"
    path = data_dir.parent / "relative.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert window.open_config(path)
    assert window.setup.is_valid, window.setup.error


def test_loading_an_invalid_yaml_value_shows_it_at_the_field(window, data_dir, tmp_path):
    raw = tiny_config(data_dir)
    raw["train"]["epochs"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert window.open_config(path)
    assert window.setup.epochs.value() == -3
    assert window.setup.error_for("train.epochs").startswith("train.epochs: must be >= 1")
    assert not window.start_button.isEnabled()


def test_unknown_key_in_yaml_is_refused_with_a_dialog(window, tmp_path):
    path = tmp_path / "unknown.yaml"
    path.write_text("name: x\ntrain: {epochz: 3}\n")
    assert not window.open_config(path)
    assert "train.epochz" in window.error_box.text()


def test_add_and_remove_task_files(window, data_dir):
    from core.kinds.classification.synthetic import write_fake_medmnist

    window.setup.set_mapping(tiny_config(data_dir))
    extra = write_fake_medmnist(data_dir / "gamma set.npz", n=16, num_classes=2)
    window.setup.add_task_sources([extra, extra])
    names = [t["name"] for t in window.setup.mapping()["tasks"]]
    assert names == ["alpha", "beta", "gamma_set", "gamma_set_2"]
    assert window.setup.validate_now() is not None
    window.setup.tasks.selectRow(3)
    window.setup.remove_selected_tasks()
    assert [t["name"] for t in window.setup.mapping()["tasks"]] == ["alpha", "beta", "gamma_set"]


def test_device_choices(window):
    values = [window.setup.device.itemData(i) for i in range(window.setup.device.count())]
    assert values[:2] == ["auto", "cpu"]
    assert window.setup.device_info.text()


def test_task_table_columns_leave_room_for_the_source_and_elide_it(qtbot, data_dir):
    """Issue 15: the source column and its header were cut to "es → label" (Contents grew with its text). Contents
    keeps its width, the source column takes the rest, long texts are elided in the middle with the full text in
    the tooltip."""
    setup = SetupPanel()
    qtbot.addWidget(setup)
    setup.resize(1280, 760)
    setup.show()
    qtbot.waitExposed(setup)
    raw = tiny_config(data_dir)
    long_folder = data_dir / ("a_rather_long_folder_name_" * 4)
    long_folder.mkdir()
    long_path = str(Path(raw["tasks"][0]["medmnist"]).rename(long_folder / "alpha.npz"))
    raw["tasks"][0]["medmnist"] = long_path
    setup.set_mapping(raw)
    long_contents = "32 images 28×28 grey, 3 classes (multiclass), train/val/test 20/6/6 " * 3
    setup._show_contents([(long_contents, "what the file holds"), ("short", "")])
    table, header = setup.tasks, setup.tasks.horizontalHeader()
    qtbot.waitUntil(lambda: header.sectionSize(COL_FILE) > 0)
    title = table.horizontalHeaderItem(COL_FILE).text()
    assert header.sectionSize(COL_FILE) >= header.fontMetrics().horizontalAdvance(title) + 8  # the header fits
    assert header.sectionSize(COL_INFO) <= 200  # Contents does not grow with its text
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert table.item(0, COL_FILE).toolTip() == long_path
    assert table.item(0, COL_INFO).toolTip().startswith(long_contents)


def test_empty_rank_shows_the_backbone_rank_in_grey(qtbot, data_dir):
    """Issue 15: an empty Rank cell looked unset; it shows the backbone rank in grey (and stays empty)."""
    setup = SetupPanel()
    qtbot.addWidget(setup)
    setup.resize(1280, 760)
    setup.show()
    setup.set_mapping(tiny_config(data_dir))
    assert setup.placeholder(0, COL_RANK) == "4"
    setup.rank.setValue(6)
    assert setup.placeholder(0, COL_RANK) == "6"
    assert setup.mapping()["backbone"]["ranks"] is None  # only drawn: the config keeps the backbone rank
    image = _cell_image(setup.tasks, 0, COL_RANK)
    ink = [image.pixelColor(x, y) for x in range(image.width()) for y in range(image.height())
           if image.pixel(x, y) != image.pixel(0, 0)]
    assert ink and all(c.lightness() > 60 for c in ink)  # drawn, in grey (not black text)
    setup.tasks.item(0, COL_RANK).setText("3")
    assert setup.placeholder(0, COL_RANK) == "" and setup.mapping()["backbone"]["ranks"] == {"alpha": 3}


def _cell_image(table, row: int, col: int):
    table.viewport().repaint()
    rect = table.visualRect(table.model().index(row, col)).adjusted(2, 2, -2, -2)
    return table.viewport().grab(rect).toImage()


def test_no_red_task_error_while_the_demo_loads(qtbot, window, data_dir, monkeypatch):
    """Issue 15: "at least one task is needed" flashed in red while the demo was prepared; the form says it is
    preparing instead, errors hidden, until the demo's config arrives (or its preparation fails)."""
    import threading

    import app.main_window

    release = threading.Event()
    raw = tiny_config(data_dir)

    def slow_demo(*_args, **_kw):
        release.wait(10)
        if raw.get("fail"):
            raise app.main_window.LorkdError("demo files are missing")
        return raw, None

    monkeypatch.setattr(app.main_window, "prepare_demo_with_volume", slow_demo)
    setup = window.setup
    window.load_demo()
    setup.validate_now()  # an edit or the debounce timer while the demo is prepared
    assert setup.status.text() == "Preparing the demo data…" and "c0392b" not in setup.status.styleSheet()
    assert setup.error_for("tasks") == "" and setup.tasks_error.isHidden()
    assert not window.start_button.isEnabled()
    release.set()
    qtbot.waitUntil(lambda: setup.is_valid, timeout=10_000)
    assert setup.status.text() == "✓ configuration valid"
    # a demo that cannot be prepared: the form's own state is shown again
    setup.set_mapping({})
    release.clear()
    raw["fail"] = True
    window.load_demo()
    assert setup.error_for("tasks") == ""
    release.set()
    qtbot.waitUntil(lambda: window.error_box is not None, timeout=10_000)
    assert "at least one task" in setup.error_for("tasks")


# ------------------------------------------------------------------------------------ segmentation and demos


def test_segmentation_demo_is_the_default_and_loads_in_the_form(qtbot, tmp_path):
    """The default embedded demo is the 3D MNI152 segmentation; the form shows and validates it, keeps what it does
    not show (spacing, patches), edits label names, round-trips through YAML, and the classification demo stays
    one choice away."""
    from app.setup_panel import DEMOS, demo_note, prepare_demo_with_volume

    assert next(iter(DEMOS)) == "segmentation"
    raw, volume = prepare_demo_with_volume(tmp_path / "demo", "segmentation", {"quick": True}, ["train.epochs=1"])
    assert raw["kind"] == "segmentation" and raw["train"]["epochs"] == 1
    assert volume.metadata["source"].endswith(".nii.gz") and "mni_icbm152_t1" in volume.metadata["source"]
    setup = SetupPanel()
    qtbot.addWidget(setup)
    setup.set_mapping(raw, note=demo_note(raw))
    assert setup.is_valid, setup.error
    assert "MNI152" in setup.note.text()
    assert [setup.tasks.item(r, 0).text() for r in range(setup.tasks.rowCount())] == [
        "grey_matter", "white_matter", "csf", "brain"]
    assert setup.tasks.item(0, 3).text() == "grey matter"
    assert "segmentation" in setup.tasks.item(0, 5).text()
    assert setup.teacher_arch.currentData() == "unet" and not setup.image_size.isEnabled()
    config = setup.config
    assert config.kind == "segmentation" and config.data.spacing == [3.0, 3.0, 3.0]
    assert config.tasks[0].images == raw["tasks"][0]["images"]
    setup.tasks.item(2, 3).setText("cerebrospinal fluid")
    assert setup.validate_now().tasks[2].class_names == ["background", "cerebrospinal fluid"]
    setup.tasks.item(2, 3).setText("")
    setup.validate_now()
    assert setup.error_for("tasks").startswith("tasks.2.label_names:")
    setup.tasks.item(2, 3).setText("CSF")
    path = tmp_path / "seg.yaml"
    setup.save_yaml(path)
    other = SetupPanel()
    qtbot.addWidget(other)
    other.load_yaml(path)
    assert other.is_valid and other.mapping() == setup.mapping()
    # the classification demo is one choice away in the same panel
    kinds = []
    setup.demo_requested.connect(kinds.append)
    setup.demo_combo.setCurrentIndex(setup.demo_combo.findData("classification"))
    setup.demo_button.click()
    assert kinds == ["classification"]
    setup.set_mapping(prepare_demo_with_volume(tmp_path / "demo", "classification", {"n_per_task": 20})[0])
    assert setup.is_valid and setup.config.kind == "classification"
    assert setup.teacher_arch.findData("resnet18") >= 0 and setup.teacher_arch.findData("unet") < 0
    assert setup.image_size.isEnabled()


def test_segmentation_run_starts_from_the_window(qtbot, window, tmp_path):
    """Start on a (tiny) segmentation config runs the pipeline in the worker thread and fills the Experts tab."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    images, labels = write_synthetic_task(tmp_path / "cubes", 2, "cube", shape=(16, 20, 24), seed=2)
    raw = {
        "name": "gui-seg", "kind": "segmentation",
        "tasks": [{"name": "cubes", "images": str(images), "labels": str(labels),
                   "label_names": {1: "shell", 2: "core"}}],
        "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 2, "region_mm": 8},
        "teacher": {"channels": [4, 8, 16], "epochs": 1},
        "backbone": {"channels": [4, 8, 16]},
        "train": {"epochs": 1, "batch_size": 2, "log_every": 1},
        "device": "cpu",
    }
    window.setup.set_mapping(raw)
    assert window.setup.is_valid, window.setup.error
    with qtbot.waitSignal(window.run_finished, timeout=120_000) as blocker:
        window.start_button.click()
    assert blocker.args[0]["status"] == "completed"
    assert [e["name"] for e in window.experts.experts] == ["cubes"]
    assert window.experts.experts[0]["kind"] == "segmentation" and window.experts.experts[0]["bundle"] is not None


def test_add_segmentation_task_from_two_folders(qtbot, tmp_path, monkeypatch):
    """In a segmentation config, Add asks for an images folder and a label-map folder; the task is named after
    the dataset folder and its label names are proposed from the values in the label maps."""
    from core.kinds.segmentation.synthetic import write_synthetic_task

    cubes = write_synthetic_task(tmp_path / "cubes", 2, "cube", shape=(16, 20, 24), seed=2)
    second = write_synthetic_task(tmp_path / "Task02_Boxes", 2, "cube", shape=(16, 20, 24), seed=3)
    (second[0].parent / "imagesTr").mkdir()
    for f in second[0].iterdir():
        f.rename(second[0].parent / "imagesTr" / f.name)
    raw = {"name": "seg", "kind": "segmentation",
           "tasks": [{"name": "cubes", "images": str(cubes[0]), "labels": str(cubes[1]),
                      "label_names": {1: "shell", 2: "core"}}],
           "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16]}, "device": "cpu"}
    setup = SetupPanel()
    qtbot.addWidget(setup)
    setup.set_mapping(raw)
    assert setup.is_valid, setup.error
    assert setup.add_button.isEnabled() and setup.add_button.text() == "Add segmentation task…"
    answers = [None, (str(second[0].parent / "imagesTr"), str(second[1]))]
    monkeypatch.setattr(setup, "_ask_folder_pair", lambda: answers.pop(0))
    setup.add_button.click()  # the user cancelled the folder dialog: nothing added
    assert setup.tasks.rowCount() == 1
    setup.add_button.click()
    config = setup.validate_now()  # (the form validates on a short timer after an edit)
    assert setup.tasks.rowCount() == 2 and setup.is_valid, setup.error
    added = config.tasks[1]
    values = sorted(added.label_names)
    assert added.name == "Task02_Boxes" and values == [1, 2]  # the synthetic cube maps hold labels 1 and 2
    assert added.class_names == ["background", "label 1", "label 2"]
    assert added.images == str((second[0].parent / "imagesTr").resolve())
    assert added.labels == str(second[1].resolve())
    setup.tasks.item(1, 3).setText("rim, centre")  # rename in the table
    assert setup.validate_now().tasks[1].class_names == ["background", "rim", "centre"]
    # a label folder that holds no label maps: added, and the validation names the problem
    empty = tmp_path / "empty"
    empty.mkdir()
    setup.add_task_sources([cubes[0], empty])
    assert setup.validate_now() is None and setup.tasks.rowCount() == 3
    assert setup.error_for("tasks").startswith("tasks.2.label_names:")
