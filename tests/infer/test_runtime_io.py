"""core.kinds.classification.runtime: load_image in every format, predict, write_scores (small, fast, no network)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from core.kinds.classification.runtime import ImageReadError, load_image, predict, write_scores
from core.preprocess.image import prepare

# Only files that ship inside the pydicom wheel (get_testdata_file would try to download the others).
DICOM_DIR = Path(get_testdata_file("CT_small.dcm")).parent
CT_SMALL = DICOM_DIR / "CT_small.dcm"


def _rng_image(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    return rng.random(shape).astype(dtype)


# ----------------------------------------------------------------------------------------------- PIL / npy


@pytest.mark.parametrize(
    ("shape", "dtype", "suffix"),
    [
        ((20, 33), np.uint8, ".png"),  # H != W: a transpose would change the shape
        ((20, 33, 3), np.uint8, ".png"),
        ((17, 9), np.uint16, ".png"),
        ((20, 33), np.uint8, ".bmp"),
        ((20, 33, 3), np.uint8, ".tif"),
        ((20, 33), np.uint8, ".tiff"),
    ],
)
def test_pil_formats_read_back_identically_not_transposed(tmp_path, shape, dtype, suffix):
    array = _rng_image(shape, dtype)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    assert loaded.shape == shape
    assert loaded.dtype == dtype
    np.testing.assert_array_equal(loaded, array)


def test_png_orientation_marker(tmp_path):
    """A bright pixel in the top-right corner stays in the top-right corner."""
    array = np.zeros((10, 30), np.uint8)
    array[0, 29] = 255
    Image.fromarray(array).save(tmp_path / "m.png")
    loaded = load_image(tmp_path / "m.png")
    assert loaded.shape == (10, 30)
    assert loaded[0, 29] == 255 and loaded.sum() == 255


def test_png_alpha_palette_and_jpeg(tmp_path):
    rgba = _rng_image((12, 15, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])

    grey = _rng_image((12, 15))
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (12, 15, 3)

    Image.fromarray(_rng_image((12, 15, 3))).save(tmp_path / "j.jpg")
    jpeg = load_image(tmp_path / "j.jpg")
    assert jpeg.shape == (12, 15, 3) and jpeg.dtype == np.uint8


def test_jpeg_exif_orientation_is_applied(tmp_path):
    array = _rng_image((8, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "r.jpg").shape == (20, 8)


@pytest.mark.parametrize("shape", [(21, 13), (21, 13, 3), (1, 21, 13), (21, 13, 1)])
def test_npy_shapes(tmp_path, shape):
    array = _rng_image(shape, np.float32)
    np.save(tmp_path / "x.npy", array)
    loaded = load_image(tmp_path / "x.npy")
    np.testing.assert_array_equal(loaded, array.reshape(loaded.shape))
    assert loaded.shape[:2] == (21, 13)


# ----------------------------------------------------------------------------------------------------- DICOM


def test_dicom_ct_rescale_applied():
    ds = pydicom.dcmread(CT_SMALL)
    loaded = load_image(CT_SMALL)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert loaded.shape == (128, 128)
    np.testing.assert_array_equal(loaded, expected)
    assert loaded.min() < -500  # in HU: air/lung are negative


def test_dicom_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    mono2 = load_image(CT_SMALL).astype(np.float64)
    mono1 = load_image(tmp_path / "m1.dcm").astype(np.float64)
    np.testing.assert_array_equal(mono1, mono2.max() + mono2.min() - mono2)


def test_dicom_float_rescale(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10.25"
    ds.save_as(tmp_path / "f.dcm")
    loaded = load_image(tmp_path / "f.dcm")
    np.testing.assert_allclose(loaded, ds.pixel_array * 0.5 - 10.25, rtol=1e-6)


def test_dicom_rgb_ybr_and_multiframe():
    rgb = load_image(DICOM_DIR / "SC_rgb_rle.dcm")
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    ybr = load_image(DICOM_DIR / "SC_ybr_full_422_uncompressed.dcm")  # same picture stored as YBR
    assert ybr.shape == (100, 100, 3)
    assert np.abs(ybr.astype(int) - rgb.astype(int)).max() <= 8
    with pytest.warns(UserWarning, match="frames"):
        frame = load_image(DICOM_DIR / "SC_rgb_rle_2frame.dcm")
    assert frame.shape == (100, 100, 3)


def test_dicom_without_extension_is_recognised(tmp_path):
    (tmp_path / "IM0001").write_bytes(CT_SMALL.read_bytes())
    np.testing.assert_array_equal(load_image(tmp_path / "IM0001"), load_image(CT_SMALL))


# ----------------------------------------------------------------------------------------------------- NIfTI


def test_nifti_converted_from_dicom_reads_back_as_the_dicom(tmp_path):
    """SimpleITK writes the DICOM geometry into the NIfTI affine; reading it back must give the slice in
    the orientation the DICOM viewer shows (rows anterior->posterior, columns patient right->left)."""
    sitk.WriteImage(sitk.ReadImage(str(CT_SMALL)), str(tmp_path / "ct.nii.gz"))
    from_nifti = load_image(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(from_nifti, load_image(CT_SMALL))


def test_nifti_volume_gives_middle_axial_slice_with_warning(tmp_path):
    volume = _rng_image((5, 12, 17), np.int16)  # ITK array order (z, y, x), LPS direction (identity)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "v.nii.gz"))
    with pytest.warns(UserWarning, match="middle axial slice"):
        loaded = load_image(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(loaded, volume[2])


def test_nifti_2d_and_4d_singleton(tmp_path):
    data = _rng_image((9, 14), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "p.nii")
    loaded = load_image(tmp_path / "p.nii")
    assert loaded.shape == (14, 9)  # RAS voxel grid (x, y) shown as rows = A->P, columns = R->L
    np.testing.assert_array_equal(loaded, data[::-1, ::-1].T)
    nib.save(nib.Nifti1Image(data[:, :, None, None], np.eye(4)), tmp_path / "q.nii.gz")
    np.testing.assert_array_equal(load_image(tmp_path / "q.nii.gz"), loaded)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(ImageReadError, match="t.nii.gz"):
        load_image(tmp_path / "t.nii.gz")


def test_nifti_coronal_and_sagittal_slices_are_shown_in_their_plane(tmp_path):
    """A single coronal / sagittal slice keeps the DICOM viewer's display: rows superior->inferior, columns patient
    right->left (coronal) or anterior->posterior (sagittal)."""
    data = _rng_image((9, 1, 14), np.float32)  # RAS voxel grid (x, y, z): a coronal slice
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "cor.nii.gz")
    np.testing.assert_array_equal(load_image(tmp_path / "cor.nii.gz"), data[::-1, 0, ::-1].T)
    data = _rng_image((1, 9, 14), np.float32)  # a sagittal slice
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "sag.nii.gz")
    np.testing.assert_array_equal(load_image(tmp_path / "sag.nii.gz"), data[0, ::-1, ::-1].T)


def test_npy_volume_gives_middle_slice_with_warning(tmp_path):
    stack = _rng_image((5, 12, 17), np.float32)
    np.save(tmp_path / "stack.npy", stack)
    with pytest.warns(UserWarning, match="middle axial slice"):
        np.testing.assert_array_equal(load_image(tmp_path / "stack.npy"), stack[2])


def test_dicom_palette_colour_is_rgb():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(DICOM_DIR / "examples_palette.dcm")
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(load_image(DICOM_DIR / "examples_palette.dcm"), expected)


def test_load_image_is_the_io_readers_display_plane(tmp_path):
    """One reader: load_image is read_volume + display_plane (what the viewer shows at first), for every format."""
    from core.io import display_plane, read_volume

    Image.fromarray(_rng_image((20, 33, 3))).save(tmp_path / "c.png")
    volume = _rng_image((5, 12, 17), np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))  # stored sagittally: the display reorders every axis
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    for path in (tmp_path / "c.png", tmp_path / "v.nrrd", CT_SMALL, DICOM_DIR / "SC_rgb_rle_2frame.dcm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(load_image(path), display_plane(read_volume(path)), err_msg=str(path))


# ---------------------------------------------------------------------------------------------------- errors


# The messages are core.io's (read_volume's DataError, one line naming the file), as the app and every bundle show.
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "text.png").write_text("hello") and d / "text.png", r"not a PNG file \(the content is text"),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "unsupported file type '.txt'"),
        (lambda d: (d / "bad.npy").write_text("nope") and d / "bad.npy", r"not a NumPy \.npy file"),
        (lambda d: (d / "bad.nii.gz").write_bytes(b"\x00" * 10) and d / "bad.nii.gz", "truncated NIfTI file"),
        (lambda d: DICOM_DIR / "rtplan.dcm", "not an image.*has no pixel data"),
        (lambda d: DICOM_DIR / "MR_truncated.dcm", "DICOM"),
    ],
)
def test_unreadable_files_raise_clear_value_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        load_image(path)
    assert isinstance(info.value, ImageReadError)
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_wrong_shapes_are_refused(tmp_path):
    np.save(tmp_path / "vol.npy", np.zeros((4, 5, 6, 7), np.float32))
    with pytest.raises(ImageReadError, match="is not an image"):
        load_image(tmp_path / "vol.npy")
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    with pytest.raises(ImageReadError, match="is not an image"):
        load_image(tmp_path / "obj.npy")
    np.save(tmp_path / "thin.npy", np.zeros((1, 7), np.float32))
    with pytest.raises(ImageReadError, match="expected a 2D image"):
        load_image(tmp_path / "thin.npy")


# ---------------------------------------------------------------------------------- predict / write_scores


class _Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_predict_softmax_and_sigmoid():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    batch = torch.zeros(2, 1, 4, 4)
    multi = predict(_Fixed(logits), batch, "multiclass")
    assert multi.shape == (2, 3) and multi.dtype == np.float32
    np.testing.assert_allclose(multi.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(multi[0], torch.softmax(logits, 1)[0].detach().numpy(), rtol=1e-6)
    label = predict(_Fixed(logits), batch, "multilabel")
    np.testing.assert_allclose(label[0], torch.sigmoid(logits)[0].detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        predict(_Fixed(logits), batch, "segmentation")


def test_write_scores_json_and_csv(tmp_path):
    probs = np.array([0.2, 0.7, 0.55], np.float32)
    names = ["a", "b", "c"]
    rec = write_scores(tmp_path / "s.json", probs, names, "multiclass", "x.png", task="t")
    on_disk = json.loads((tmp_path / "s.json").read_text())
    assert on_disk == rec
    assert on_disk["prediction"] == "b" and on_disk["task"] == "t" and on_disk["image"] == "x.png"
    assert on_disk["scores"]["c"] == pytest.approx(0.55, abs=1e-7)

    rec = write_scores(tmp_path / "sub" / "s.csv", probs, names, "multilabel", "x.png", task="t")
    assert rec["prediction"] == ["b", "c"]
    rows = list(csv.reader((tmp_path / "sub" / "s.csv").open()))
    assert rows[0] == ["image", "task", "kind", "prediction", "a", "b", "c"]
    assert rows[1][:4] == ["x.png", "t", "multilabel", "b;c"]
    assert float(rows[1][5]) == pytest.approx(0.7, abs=1e-7)

    with pytest.raises(ValueError, match="use .json or .csv"):
        write_scores(tmp_path / "s.txt", probs, names, "multiclass", "x.png")
    with pytest.raises(ValueError, match="labels"):
        write_scores(tmp_path / "s.json", probs, names[:2], "multiclass", "x.png")


def test_prepare_is_unchanged_for_loaded_images(tmp_path):
    """load_image output feeds prepare directly: uint8 PNG -> /255, CT (int) -> percentile scaling."""
    array = _rng_image((30, 40))
    Image.fromarray(array).save(tmp_path / "g.png")
    x = prepare(load_image(tmp_path / "g.png")[None], 30, 1, 2)
    assert x.shape == (1, 1, 30, 30)
    ct = prepare(load_image(CT_SMALL)[None], 28, 3, 2)
    assert ct.shape == (1, 3, 28, 28) and float(ct.min()) >= -1.0 and float(ct.max()) <= 1.0
