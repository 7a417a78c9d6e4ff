"""core.kinds.classification.demo: the embedded demo's files (real images from installed packages), its config
mapping and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.kinds import load_config
from core.kinds.classification.demo import MIN_CT_SIDE, TASK_LABELS, _ct_images, build_demo, demo_file_name
from core.kinds.classification.medmnist import SPLITS, inspect_medmnist, read_split
from core.kinds.classification.tasks import build_task_specs, resolve_in_channels

SIZE, N = 28, 40
COUNTS = {"train": 28, "val": 6, "test": 6}  # 70/15/15 of 40


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo(out, size=SIZE, n_per_task=N)


def test_files_and_config(demo):
    out, raw = demo
    paths = [Path(task["medmnist"]) for task in raw["tasks"]]
    assert paths == [out.resolve() / demo_file_name(task, SIZE, N, 0) for task in TASK_LABELS]
    assert all(path.is_file() for path in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    config = load_config(raw)
    assert config.name == "demo" and config.data.image_size == SIZE and config.seed == 0
    assert config.task_names == ["plane", "level", "tissue", "modality"]


def test_tasks_kinds_labels_and_geometry(demo):
    _, raw = demo
    config = load_config(raw)
    specs = {spec.name: spec for spec in build_task_specs(config)}
    summary = {name: (s.kind, s.num_classes, s.rgb, s.spatial_dims) for name, s in specs.items()}
    assert summary == {
        "plane": ("multiclass", 3, False, 2),
        "level": ("multiclass", 3, False, 2),
        "tissue": ("multilabel", 3, False, 2),
        "modality": ("multiclass", 4, True, 2),
    }
    assert specs["plane"].label_names == ["axial", "coronal", "sagittal"]
    assert specs["tissue"].label_names == ["grey matter", "white matter", "csf"]
    assert resolve_in_channels(config, list(specs.values())) == 3


def test_contents_in_range_and_not_blank(demo):
    _, raw = demo
    for task in raw["tasks"]:
        info = inspect_medmnist(task["medmnist"])
        assert info.counts == COUNTS and info.size == SIZE
        for split in SPLITS:
            images, labels = read_split(task["medmnist"], split, info.num_classes)
            assert images.dtype == np.uint8
            # real image content: contrast in every image, and the images differ from each other
            assert images.reshape(len(images), -1).std(axis=1).min() > 5
            assert len({image.tobytes() for image in images}) == len(images)
            if info.kind == "multiclass":
                assert labels.min() >= 0 and labels.max() < info.num_classes
                if split == "train":  # balanced classes
                    assert set(labels.tolist()) == set(range(info.num_classes))
            else:
                assert set(np.unique(labels)) <= {0.0, 1.0}
        if info.kind == "multilabel":  # every tissue label occurs and is sometimes absent
            train = read_split(task["medmnist"], "train")[1]
            assert (train.sum(axis=0) > 0).all() and (train.sum(axis=0) < len(train)).all()


def test_second_call_reuses_the_files(demo):
    out, raw = demo
    paths = [Path(task["medmnist"]) for task in raw["tasks"]]
    stamps = [path.stat().st_mtime_ns for path in paths]
    assert build_demo(out, size=SIZE, n_per_task=N) == raw
    assert [path.stat().st_mtime_ns for path in paths] == stamps


def test_a_missing_file_is_regenerated_identically(demo, tmp_path):
    _, raw = demo
    copy = tmp_path / "copy"
    copy.mkdir()
    originals = [Path(task["medmnist"]) for task in raw["tasks"]]
    for path in originals[:2]:  # plane and level cached, tissue and modality generated here
        (copy / path.name).write_bytes(path.read_bytes())
    stamps = [(copy / path.name).stat().st_mtime_ns for path in originals[:2]]
    again = build_demo(copy, size=SIZE, n_per_task=N)
    assert [(copy / path.name).stat().st_mtime_ns for path in originals[:2]] == stamps
    for original, task in zip(originals, again["tasks"], strict=True):
        with np.load(original) as a, np.load(task["medmnist"]) as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])


def test_other_parameters_get_other_files(tmp_path):
    assert demo_file_name("plane", 28, 40, 0) != demo_file_name("plane", 28, 40, 1)
    assert demo_file_name("plane", 28, 40, 0) != demo_file_name("plane", 64, 40, 0)
    with pytest.raises(ValueError, match="size"):
        build_demo(tmp_path, size=4)
    with pytest.raises(ValueError, match="n_per_task"):
        build_demo(tmp_path, n_per_task=10)


def test_ct_sources_are_real_full_size_slices():
    """pydicom's dicomdirtests CT series is stored at 16 x 16: its upsampled crops were flat grey squares
    labelled "CT". Only full-size slices are used now."""
    images = _ct_images()
    assert images
    for hu in images:
        assert min(hu.shape) >= MIN_CT_SIDE
        assert hu.min() < -500 and hu.max() > 300  # air to bone, in Hounsfield units
