"""A representative subset of the bad-input corpus through the GUI: bad image files give a dialog naming the
file and the viewer keeps working; bad configs and MedMNIST files are refused with a dialog or named next to
their field with Start disabled; a past run with a torn metrics.jsonl opens. The app keeps running throughout."""

from __future__ import annotations

import json
import shutil

import numpy as np
from badinput_corpus import (
    cls_config,
    dicom_ecg,
    dicom_no_pixels,
    dicom_sr,
    good_pair,
    medmnist,
    png_as_nifti,
    several_series,
    truncated_nifti,
    zero_byte_nifti,
)

BAD_IMAGES = {  # generator -> words of the dialog's message
    truncated_nifti: ["truncated NIfTI"],
    zero_byte_nifti: ["empty file"],
    png_as_nifti: ["not a NIfTI file", "PNG"],
    dicom_sr: ["not an image", "SR"],
    dicom_ecg: ["not an image", "ECG"],
    dicom_no_pixels: ["without pixel data"],
}


def test_viewer_bad_files_give_a_dialog_and_it_keeps_working(qtbot, window, tmp_path, dialogs, monkeypatch):
    viewer = window.viewer
    good, _ = good_pair(tmp_path / "good")
    assert viewer.load_path(good) and not dialogs["critical"]
    shown = viewer.volume
    for make, words in BAD_IMAGES.items():
        bad = make(tmp_path)
        count = len(dialogs["critical"])
        assert viewer.load_path(bad) is False
        assert len(dialogs["critical"]) == count + 1, make.__name__
        text = dialogs["critical"][-1][2]
        assert str(bad) in text and "\n" not in text and "Traceback" not in text, text
        assert all(w in text for w in words), (words, text)
        assert viewer.volume is shown  # the previous image stays
    # a folder with two series asks which one (the picker is replaced here), then loads it
    offered = []
    monkeypatch.setattr(viewer, "_choose_series", lambda series: offered.append(series) or series[0])
    assert viewer.load_path(several_series(tmp_path))
    assert len(offered) == 1 and len(offered[0]) == 2
    assert viewer.volume is not shown and viewer.volume.array.ndim == 3
    assert window.isVisible()


def test_bad_configs_are_refused_or_named_and_start_stays_disabled(qtbot, window, tmp_path):
    folder = tmp_path / "cfg"
    folder.mkdir()
    # unknown key, wrong type: the file cannot be loaded -> a dialog naming the file and the field
    for changes, field in (({"train__epochz": 3}, "train.epochz"), ({"train__batch_size": "many"},
                                                                      "train.batch_size")):
        path = cls_config(folder, **changes)
        assert window.open_config(path) is False
        box = window.error_box
        assert box is not None and box.isVisible()
        assert str(path) in box.text() and field in box.text() and "\n" not in box.text(), box.text()
        box.close()
    # loadable but invalid values: named next to their field, Start disabled
    for changes, field in (({"train__epochs": -2}, "train.epochs"),
                           ({"tasks": [{"name": "a", "medmnist": str(folder / "good.npz")},
                                       {"name": "a", "medmnist": str(folder / "good.npz")}]}, "tasks.1.name")):
        assert window.open_config(cls_config(folder, **changes))
        qtbot.waitUntil(lambda: window.setup.error is not None, timeout=5000)
        assert field in window.setup.error, window.setup.error
        assert not window.start_button.isEnabled()
    # bad MedMNIST files: the file is named, Start disabled
    for problem, words in (("missing_arrays", "missing arrays"), ("float_images", "float32"),
                           ("labels_out_of_range", "out of range"), ("empty_split", "split is empty")):
        npz = medmnist(folder, problem)
        assert window.open_config(cls_config(folder, npz))
        window.setup.validate_now()
        error = window.setup.error or ""
        assert str(npz) in error and words in error, error
        assert not window.start_button.isEnabled()
    # and a good config is accepted afterwards: the window kept working
    assert window.open_config(cls_config(folder))
    assert window.setup.validate_now() is not None
    assert window.start_button.isEnabled()


def test_open_past_run_with_a_torn_metrics_line(qtbot, window, tmp_path, dialogs):
    run = tmp_path / "past_run"
    run.mkdir()
    records = [{"phase": "decompose", "kind": "train", "epoch": 0, "step": s, "task": t, "loss": 1.0 / s}
               for s in (1, 2, 3) for t in ("alpha", "all")]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run / "metrics.jsonl").write_text(text + '{"phase": "decompose", "kind": "tra')  # killed mid-write
    assert window.open_run(run)
    assert window.error_box is None and not dialogs["critical"]
    assert "6 records" in window.monitor.log_text()
    assert window.monitor.plot.point_count("alpha") == 3
    # a metrics file that is nothing but garbage opens as an empty run, not a crash
    shutil.rmtree(run)
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(np.random.default_rng(0).bytes(300))
    assert window.open_run(run)
    assert "0 records" in window.monitor.log_text()
