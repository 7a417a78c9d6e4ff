"""DICOM SEG segment codes: known structures get their SNOMED CT category/type codes by name (case- and
punctuation-insensitive, with synonyms), unknown ones the generic "Tissue"; a task's `label_codes` override them
and travel config -> exported bundle (`lorkd.label_codes`) -> `lorkd apply ... --out seg.dcm`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError
from core.io import read_volume
from core.io.dicom_seg import dicom_source_files, segment_codes, structure_codes, write_dicom_seg
from core.kinds import load_config
from core.kinds.segmentation.synthetic import write_synthetic_task
from tests.dicom_files import write_series

ANATOMY = ("SCT", "123037004", "Anatomical Structure")
TISSUE = ("SCT", "85756007", "Tissue")
LIVER = {"category": ["SCT", 123037004, "Anatomical Structure"], "type": ["SCT", 10200004, "Liver"]}


def _series(folder: Path, shape=(4, 12, 10)) -> Path:
    planes = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    write_series(folder, planes, [(0.0, 0.0, 2.0 * z) for z in range(shape[0])], pixel_spacing=(2.0, 2.0))
    return folder


def _codes(path: Path) -> list[tuple[str, tuple[str, str, str], tuple[str, str, str]]]:
    """(segment label, category code, type code) of each segment of a DICOM SEG, read back with pydicom."""
    import pydicom

    ds = pydicom.dcmread(path)
    out = []
    for segment in ds.SegmentSequence:
        cat, typ = segment.SegmentedPropertyCategoryCodeSequence[0], segment.SegmentedPropertyTypeCodeSequence[0]
        out.append((str(segment.SegmentLabel),
                    (str(cat.CodingSchemeDesignator), str(cat.CodeValue), str(cat.CodeMeaning)),
                    (str(typ.CodingSchemeDesignator), str(typ.CodeValue), str(typ.CodeMeaning))))
    return out


def test_known_structures_get_their_codes_unknown_ones_tissue(tmp_path):
    volume = read_volume(_series(tmp_path / "series"))
    names = ["background", "grey matter", "white matter", "CSF", "brain", "my thing"]
    labels = np.zeros(volume.array.shape, np.uint8)
    for k in range(1, len(names)):
        labels[k % 4, k: k + 3, 2: 6] = k
    out = write_dicom_seg(labels, volume, dicom_source_files(volume), tmp_path / "seg.dcm", names[1:])
    assert _codes(out) == [
        ("grey matter", ANATOMY, ("SCT", "389081007", "Gray Matter")),
        ("white matter", ANATOMY, ("SCT", "389080008", "White Matter")),
        ("CSF", ANATOMY, ("SCT", "65216001", "Cerebrospinal Fluid")),
        ("brain", ANATOMY, ("SCT", "12738006", "Brain")),
        ("my thing", TISSUE, TISSUE),
    ]
    import pydicom  # the sources have no SliceThickness (type 2): the slice spacing stands in for it

    pixel_measures = pydicom.dcmread(out).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(pixel_measures.SliceThickness) == 2.0
    # a per-label override wins over the table; the segment label stays the user's name
    out = write_dicom_seg(labels, volume, dicom_source_files(volume), tmp_path / "seg2.dcm", names[1:],
                          label_codes={"4": LIVER, 5: LIVER})
    coded = _codes(out)
    assert coded[3] == ("brain", ANATOMY, ("SCT", "10200004", "Liver"))
    assert coded[4] == ("my thing", ANATOMY, ("SCT", "10200004", "Liver"))
    assert coded[0][2][1] == "389081007"


def test_label_names_match_case_punctuation_and_synonyms():
    gray = ("SCT", "389081007", "Gray Matter")
    for name in ("grey matter", "Gray Matter", "GREY_MATTER", "grey-matter", " gray  matter. "):
        assert structure_codes(name) == (ANATOMY, gray), name
    csf = ("SCT", "65216001", "Cerebrospinal Fluid")
    for name in ("CSF", "csf", "Cerebrospinal fluid", "cerebro-spinal fluid"):
        assert structure_codes(name)[1] == csf, name
    assert structure_codes("Liver")[1] == ("SCT", "10200004", "Liver")
    assert structure_codes("spleen")[1] == ("SCT", "78961009", "Spleen")
    assert structure_codes("Kidneys")[1] == ("SCT", "64033007", "Kidney")
    assert structure_codes("pancreas")[1] == ("SCT", "15776009", "Pancreas")
    assert structure_codes("lungs")[1] == ("SCT", "39607008", "Lung")
    assert structure_codes("heart")[1] == ("SCT", "80891009", "Heart")
    assert structure_codes("bone") == (TISSUE, ("SCT", "272673000", "Bone"))
    neoplasm = (("SCT", "49755003", "Morphologically Altered Structure"), ("SCT", "108369006", "Neoplasm"))
    assert structure_codes("Tumour") == structure_codes("tumor") == structure_codes("neoplasm") == neoplasm
    for name in ("my thing", "liver tumour", "left kidney", "", "label 1"):
        assert structure_codes(name) is None, name
    assert segment_codes(["liver", "my thing"]) == [structure_codes("liver"), (TISSUE, TISSUE)]


@pytest.mark.parametrize("codes, message", [
    ({3: LIVER}, "label_codes.3: not a label value 1..2"),
    ({"x": LIVER}, "label_codes.x: not a label value"),
    ({1: {"type": LIVER["type"]}}, "label_codes.1: expected {category"),
    ({1: {**LIVER, "type": ["SCT", "10200004"]}}, "label_codes.1.type: expected [coding scheme"),
    ({1: {**LIVER, "category": "SCT 123037004"}}, "label_codes.1.category: expected [coding scheme"),
])
def test_malformed_label_codes_are_one_line_data_errors(codes, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("{", r"\{")):
        segment_codes(["liver", "spleen"], codes)


def _raw(root: Path, **task) -> dict:
    images, labels = write_synthetic_task(root / "a", 2, "cube", seed=2)
    return {
        "name": "codes", "kind": "segmentation",
        "tasks": [{"name": "organs", "images": str(images), "labels": str(labels),
                   "label_names": {1: "my organ", 2: "spleen"}, **task}],
        "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16]},
        "teacher": {"channels": [8, 16, 32], "epochs": 1},
        "backbone": {"channels": [4, 8, 16]},
        "train": {"epochs": 1},
    }


def test_config_label_codes_are_validated(tmp_path):
    raw = _raw(tmp_path)
    assert load_config(raw).tasks[0].label_codes is None
    config = load_config({**raw, "tasks": [{**raw["tasks"][0], "label_codes": {1: LIVER}}]})
    assert config.tasks[0].label_codes == {1: LIVER}
    bad = [
        ({3: LIVER}, "tasks.0.label_codes.3", "not a label value of the task (1..2)"),
        ({1: {"type": LIVER["type"]}}, "tasks.0.label_codes.1", "expected {category"),
        ({1: {**LIVER, "modifier": ["SCT", "7771000", "Left"]}}, "tasks.0.label_codes.1", "expected {category"),
        ({1: {**LIVER, "type": ["SCT", 10200004]}}, "tasks.0.label_codes.1.type", "expected [coding scheme"),
        ({1: {**LIVER, "category": ["SCT", "", "x"]}}, "tasks.0.label_codes.1.category", "expected [coding"),
        ({1: {**LIVER, "type": ["SCT", True, "x"]}}, "tasks.0.label_codes.1.type", "expected [coding"),
        ({1: {**LIVER, "type": ["SCT", "1", "x" * 65]}}, "tasks.0.label_codes.1.type", "expected [coding"),
        ({"1": LIVER}, "tasks.0.label_codes", "expected an integer"),
        ([LIVER], "tasks.0.label_codes", "expected a mapping"),
    ]
    for codes, where, message in bad:
        with pytest.raises(ConfigError) as error:
            load_config({**raw, "tasks": [{**raw["tasks"][0], "label_codes": codes}]})
        text = str(error.value)
        assert "\n" not in text and where in text and message in text, (codes, text)


def _bundle(out: Path, class_names: list[str], label_codes=None) -> Path:
    """A tiny segmentation expert bundle that labels every voxel 1 (its head's bias)."""
    from core.kinds.segmentation.bundle import write_seg_bundle
    from core.kinds.segmentation.config import SegDataConfig
    from core.kinds.segmentation.nets import SegExpertNet

    torch.manual_seed(0)
    net = SegExpertNet("unet", 1, len(class_names), [4, 8, 16], 4)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 5.0] + [0.0] * (len(class_names) - 2)))
    data = SegDataConfig(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16])
    return write_seg_bundle(out, task_name="organs", class_names=class_names, arch="unet", channels=[4, 8, 16],
                            features=4, state_dict=net.state_dict(), data=data, metrics={}, training={},
                            label_codes=label_codes)


def test_config_label_codes_reach_the_dicom_seg_through_the_bundle(tmp_path):
    from core.cli import main

    raw = _raw(tmp_path)
    task = load_config({**raw, "tasks": [{**raw["tasks"][0], "label_codes": {1: LIVER}}]}).tasks[0]
    bundle = _bundle(tmp_path / "expert", task.class_names, task.label_codes)
    lorkd = json.loads((bundle / "configs" / "metadata.json").read_text())["lorkd"]
    assert lorkd["label_codes"] == {"1": {"category": list(ANATOMY), "type": ["SCT", "10200004", "Liver"]}}
    folder = _series(tmp_path / "series")
    assert main(["apply", str(bundle), str(folder), "--out", str(tmp_path / "seg.dcm")]) == 0
    assert _codes(tmp_path / "seg.dcm") == [
        ("my organ", ANATOMY, ("SCT", "10200004", "Liver")),
        ("spleen", ANATOMY, ("SCT", "78961009", "Spleen")),
    ]
    # a bundle without recorded codes (as exported before them): coded by name
    old = _bundle(tmp_path / "old", task.class_names)
    assert "label_codes" not in json.loads((old / "configs" / "metadata.json").read_text())["lorkd"]
    assert main(["apply", str(old), str(folder), "--out", str(tmp_path / "old.dcm")]) == 0
    assert _codes(tmp_path / "old.dcm") == [
        ("my organ", TISSUE, TISSUE),
        ("spleen", ANATOMY, ("SCT", "78961009", "Spleen")),
    ]
