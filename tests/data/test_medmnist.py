"""core.kinds.classification.medmnist: the MedMNIST .npz reader on generated files of every layout, and every way a file
can be wrong (each gives a one-line DataError that starts with the file's path and names the problem)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.errors import DataError
from core.kinds.classification.medmnist import ARRAYS, MEDMNIST_CLASSES, inspect_medmnist, medmnist_flag, read_split
from core.kinds.classification.synthetic import write_fake_medmnist

SPLITS = ("train", "val", "test")


def _arrays(n: int = 6, image_shape: tuple[int, ...] = (28, 28), num_classes: int = 3) -> dict[str, np.ndarray]:
    """A valid MedMNIST layout: (n, *image_shape) uint8 images, (n, 1) uint8 labels 0..num_classes-1."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % num_classes).astype(np.uint8)[:, None]
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as f:  # a file object: savez would append ".npz" to some names
        np.savez_compressed(f, **arrays)
    return path


def _raises(path: Path, *words: str, **kwargs) -> str:
    """Both readers raise one DataError, on one line, starting with the path and holding `words`."""
    for read in (lambda: inspect_medmnist(path, **kwargs), lambda: read_split(path, "train", **kwargs)):
        with pytest.raises(DataError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message
        for word in words:
            assert word in message, message
    return message


# ------------------------------------------------------------------------------------------ valid files
LAYOUTS = {
    # name: (write_fake_medmnist arguments, expected images shape after N, rgb, spatial_dims)
    "grey28": ({"size": 28}, (28, 28), False, 2),
    "grey64": ({"size": 64}, (64, 64), False, 2),
    "rgb28": ({"size": 28, "rgb": True}, (28, 28, 3), True, 2),
    "rgb64": ({"size": 64, "rgb": True}, (64, 64, 3), True, 2),
    "3d28": ({"size": 28, "spatial_dims": 3}, (28, 28, 28), False, 3),
    "3d64": ({"size": 64, "spatial_dims": 3}, (64, 64, 64), False, 3),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_are_read_as_stored(tmp_path, layout):
    kwargs, shape, rgb, dims = LAYOUTS[layout]
    n = 6 if dims == 3 else 16
    path = write_fake_medmnist(tmp_path / f"{layout}.npz", n=n, n_eval=4, num_classes=3, **kwargs)
    info = inspect_medmnist(path)
    found = (info.kind, info.num_classes, info.rgb, info.spatial_dims, info.size)
    assert found == ("multiclass", 3, rgb, dims, shape[0])
    assert info.counts == {"train": n, "val": 4, "test": 4}
    assert info.flag is None and info.path == str(path)
    with np.load(path) as stored:
        for split in SPLITS:
            images, labels = read_split(path, split)
            assert images.dtype == np.uint8 and images.shape == (info.counts[split], *shape)
            np.testing.assert_array_equal(images, stored[f"{split}_images"])
            assert labels.dtype == np.int64 and labels.shape == (info.counts[split],)
            np.testing.assert_array_equal(labels, stored[f"{split}_labels"][:, 0])


def test_flat_labels_read_like_column_labels(tmp_path):
    column = write_fake_medmnist(tmp_path / "column.npz", n=24, num_classes=4, seed=5)
    flat = write_fake_medmnist(tmp_path / "flat.npz", n=24, num_classes=4, seed=5, flat_labels=True)
    with np.load(flat) as stored:
        assert stored["train_labels"].shape == (24,)
    assert inspect_medmnist(flat).num_classes == inspect_medmnist(column).num_classes == 4
    for split in SPLITS:
        np.testing.assert_array_equal(read_split(flat, split)[1], read_split(column, split)[1])


def test_multilabel_columns(tmp_path):
    path = write_fake_medmnist(tmp_path / "ml.npz", n=32, num_classes=5, multilabel=True)
    info = inspect_medmnist(path)
    assert (info.kind, info.num_classes) == ("multilabel", 5)
    images, labels = read_split(path, "val")
    assert labels.dtype == np.float32 and labels.shape == (len(images), 5)
    assert set(np.unique(labels)) <= {0.0, 1.0}
    with np.load(path) as stored:
        np.testing.assert_array_equal(labels, stored["val_labels"])


def test_accepted_label_dtypes(tmp_path):
    arrays = _arrays()
    arrays["train_labels"] = arrays["train_labels"].astype(np.float32)  # whole numbers stored as floats
    arrays["val_labels"] = arrays["val_labels"].astype(">i4")  # big-endian
    arrays["test_labels"] = (arrays["test_labels"] > 0)  # bool
    path = _save(tmp_path / "dtypes.npz", arrays)
    assert inspect_medmnist(path).num_classes == 3
    np.testing.assert_array_equal(read_split(path, "train")[1], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(read_split(path, "test")[1], [0, 1, 1, 0, 1, 1])


def test_uncompressed_npz_and_extra_arrays_are_fine(tmp_path):
    path = tmp_path / "plain.npz"
    with open(path, "wb") as f:
        np.savez(f, **_arrays(), notes=np.arange(3))
    assert inspect_medmnist(path).counts == {"train": 6, "val": 6, "test": 6}


def test_class_count_known_flag_configured_and_inferred(tmp_path):
    # a file named after a MedMNIST subset gets the subset's class count, even with classes absent
    path = _save(tmp_path / "pathmnist_64.npz", _arrays(image_shape=(64, 64, 3)))
    info = inspect_medmnist(path)
    assert (info.flag, info.num_classes, info.rgb) == ("pathmnist", MEDMNIST_CLASSES["pathmnist"], True)
    # other names: configured count (may exceed the labels present), else largest label + 1
    other = _save(tmp_path / "mine.npz", _arrays(num_classes=3))
    assert inspect_medmnist(other).num_classes == 3
    assert inspect_medmnist(other, num_classes=5).num_classes == 5
    assert medmnist_flag("organmnist3d_64.npz") == "organmnist3d"
    assert medmnist_flag("OrganAMNIST.npz") == "organamnist"
    assert medmnist_flag("brains.npz") is None


# ------------------------------------------------------------------------------------------ bad contents
def _drop(name: str) -> Callable[[dict], None]:
    return lambda a: a.pop(name)


def _set(name: str, value: Callable[[dict], np.ndarray]) -> Callable[[dict], None]:
    return lambda a: a.__setitem__(name, value(a))


def _all_labels(value: Callable[[int], np.ndarray]) -> Callable[[dict], None]:
    def change(a: dict) -> None:
        for split in SPLITS:
            a[f"{split}_labels"] = value(len(a[f"{split}_images"]))

    return change


BAD_CONTENTS = {
    # case: (change to a valid layout, words the message must hold)
    "no val_labels": (_drop("val_labels"), ["missing arrays val_labels"]),
    "no arrays at all": (lambda a: a.clear() or a.update(x=np.zeros(3)), ["missing arrays", "train_images"]),
    "2D images array": (_set("train_images", lambda a: np.zeros((6, 28), np.uint8)), ["train_images", "(6, 28)"]),
    "5D images array": (_set("val_images", lambda a: np.zeros((6, 8, 8, 8, 1), np.uint8)), ["val_images", "shape"]),
    "non-square images": (_set("train_images", lambda a: np.zeros((6, 28, 32), np.uint8)), ["(6, 28, 32)"]),
    "RGBA images": (_set("train_images", lambda a: np.zeros((6, 28, 28, 4), np.uint8)), ["train_images", "RGB"]),
    "float images": (_set("test_images", lambda a: a["test_images"].astype(np.float32)), ["test_images", "float32"]),
    "splits of other sizes": (_set("val_images", lambda a: np.zeros((6, 64, 64), np.uint8)), ["val_images", "64"]),
    "fractional labels": (_set("train_labels", lambda a: a["train_labels"] + 0.5), ["train_labels", "non-integer"]),
    "NaN labels": (_set("val_labels", lambda a: np.full((6, 1), np.nan)), ["val_labels", "non-integer"]),
    "string labels": (_set("train_labels", lambda a: np.array(["a", "b", "c"] * 2)[:, None]), ["train_labels", "<U1"]),
    "complex labels": (_set("train_labels", lambda a: a["train_labels"].astype(np.complex64)), ["complex64"]),
    "3D labels": (_set("test_labels", lambda a: np.zeros((6, 1, 1), np.uint8)), ["test_labels", "(6, 1, 1)"]),
    "negative label": (_set("val_labels", lambda a: a["val_labels"].astype(np.int16) - 1), ["negative label -1"]),
    "huge unsigned label": (_set("train_labels", lambda a: np.full((6, 1), 2**63, np.uint64)), ["too large"]),
    "fewer labels than images": (_set("val_labels", lambda a: a["val_labels"][:4]), ["6 images", "4 labels"]),
    "more labels than images": (_set("test_labels", lambda a: np.zeros((9, 1), np.uint8)), ["6 images", "9 labels"]),
    "empty split": (
        lambda a: a.update(test_images=a["test_images"][:0], test_labels=a["test_labels"][:0]),
        ["test split is empty"],
    ),
    "empty split saved as []": (lambda a: a.update(val_images=np.array([], np.uint8)), ["val split is empty"]),
    "label columns differ": (
        _set("val_labels", lambda a: np.eye(3, dtype=np.uint8)[np.arange(6) % 3]), ["val_labels has 3 label columns"]
    ),
    "multi-label value 2": (
        _all_labels(lambda n: np.full((n, 4), 2, np.uint8)), ["multi-label values must be 0 or 1", "found 2"]
    ),
    "single class": (_all_labels(lambda n: np.zeros((n, 1), np.uint8)), ["at least 2 classes"]),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_contents_raise_data_error_naming_file_and_problem(tmp_path, case):
    change, words = BAD_CONTENTS[case]
    arrays = _arrays()
    change(arrays)
    _raises(_save(tmp_path / "bad.npz", arrays), *words)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    arrays = _arrays()
    arrays["train_labels"] = np.array([{"label": 1}] * 6, dtype=object)
    path = tmp_path / "pickled.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # savez pickles object arrays
    _raises(path, "train_labels", "pickled object array")


def test_labels_out_of_configured_or_known_range(tmp_path):
    path = _save(tmp_path / "three.npz", _arrays(num_classes=3))
    _raises(path, "label 2 out of range 0..1", "configured", num_classes=2)
    labels = np.full((6, 1), 9, np.uint8)  # breastmnist has 2 classes
    known = _save(tmp_path / "breastmnist.npz", {**_arrays(num_classes=2), "val_labels": labels})
    _raises(known, "label 9 out of range 0..1", "breastmnist", "val_labels")
    wrong_columns = {f"{s}_labels": np.eye(4, dtype=np.uint8)[np.arange(6) % 4] for s in SPLITS}
    four = _save(tmp_path / "four_columns.npz", {**_arrays(), **wrong_columns})
    assert inspect_medmnist(four, num_classes=4).num_classes == 4
    _raises(four, "4 label columns, but 5 labels are configured", num_classes=5)
    chest = _save(tmp_path / "chestmnist.npz", {**_arrays(), **wrong_columns})
    _raises(chest, "4 label columns", "chestmnist has 14")


# ------------------------------------------------------------------------------------------ bad files
def test_text_file_renamed_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("train_images,train_labels\n1,2\n")
    _raises(path, "not a zip archive")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    _raises(path, "empty file (0 bytes)")


def test_missing_file_and_folder(tmp_path):
    _raises(tmp_path / "absent.npz", "no such file")
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    _raises(folder, "not a file")


def test_zip_without_npy_members(tmp_path):
    path = tmp_path / "archive.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    _raises(path, "missing arrays", *ARRAYS)


def test_truncated_file(tmp_path):
    good = _save(tmp_path / "good.npz", _arrays())
    path = tmp_path / "truncated.npz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises(path, "not a zip archive")


def test_damaged_compressed_member(tmp_path):
    """Garbage in the deflate stream of the first member (where its .npy header is): zlib fails while the
    headers are read; before the fix this escaped as a raw zlib.error."""
    good = _save(tmp_path / "good.npz", _arrays())
    with zipfile.ZipFile(good) as archive:
        first = archive.infolist()[0]
    data = bytearray(good.read_bytes())
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    data[start : start + 64] = bytes(0xFF ^ b for b in data[start : start + 64])
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    _raises(path, "corrupt .npz archive")


def test_damaged_image_data_fails_in_read_split(tmp_path):
    """Damage after the member headers: inspect (headers + labels only) may pass, reading the split fails."""
    good = _save(tmp_path / "good.npz", _arrays(n=40))
    with zipfile.ZipFile(good) as archive:
        first = archive.getinfo("train_images.npy")
    data = bytearray(good.read_bytes())
    middle = first.header_offset + 30 + len(first.filename) + len(first.extra) + first.compress_size // 2
    data[middle : middle + 32] = bytes(32)
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="cannot read its arrays") as info:
        read_split(path, "train")
    assert str(info.value).startswith(str(path))


def test_unknown_split_is_a_programming_error(tmp_path):
    path = _save(tmp_path / "good.npz", _arrays())
    with pytest.raises(ValueError, match="split must be one of"):
        read_split(path, "validation")
