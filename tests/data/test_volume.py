"""Volume IO (core.io): geometry round trips, real DICOM/NIfTI files shipped in packages, errors and
warnings. Real data: pydicom's test files (a 5-slice CT series, single images, non-image objects) and nilearn's
MNI152 template, found by path without importing nilearn."""

from __future__ import annotations

import gzip
import importlib.util
import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from core.errors import DataError
from core.io import (
    SeriesInfo,
    Volume,
    list_series,
    orientation_code,
    read_volume,
    write_label_map,
    write_volume,
)
from tests.dicom_files import write_series

DICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
CT_SERIES = DICOM_DATA / "dicomdirtests" / "98892001" / "CT5N"  # 5 real CT slices (16 x 16, 2.5 mm)
NONUNIFORM_CT = DICOM_DATA / "dicomdirtests" / "77654033" / "CT2"  # 4 slices, gaps 202.5, 1.25, 1.25 mm
MNI_T1 = (
    Path(importlib.util.find_spec("nilearn").submodule_search_locations[0])
    / "datasets"
    / "data"
    / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)
NIBABEL_DATA = Path(importlib.util.find_spec("nibabel").submodule_search_locations[0]) / "tests" / "data"

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


GEOMETRIES = {
    "lps": ((1.0, 1.0, 1.0), (10.0, -20.0, 30.5), np.eye(3)),
    "ras": ((1.0, 1.0, 1.0), (98.0, 134.0, -72.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique": ((0.9, 1.1, 1.3), (-72.2, 13.123456789, -1.2375), _rotation(0.3, -0.2, 0.7)),
    "anisotropic": ((0.488281, 0.7, 2.5), (-125.0, -128.100006, -99.480003), np.eye(3)),
}


def _volume(geometry: str, dtype=np.int16, shape=(5, 6, 7)) -> Volume:
    spacing, origin, direction = GEOMETRIES[geometry]
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=shape).astype(dtype)
    return Volume(array, spacing, origin, tuple(direction.ravel()))


def _assert_same_geometry(a: Volume, b: Volume, exact: bool) -> None:
    assert a.shape_xyz == b.shape_xyz
    if exact:  # double precision (NRRD stores direction x spacing: the last bit may differ)
        np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-14)
        np.testing.assert_allclose(a.origin, b.origin, rtol=1e-14)
        np.testing.assert_allclose(a.direction, b.direction, rtol=1e-14, atol=1e-15)
    else:  # NIfTI stores geometry as float32
        np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
        np.testing.assert_allclose(a.origin, b.origin, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


def _write_ct_series(folder: Path, positions, iop=(1, 0, 0, 0, 1, 0), size=(8, 6), gantry_tilt=0.0) -> list[Path]:
    """A small synthetic CT series (pydicom-written, uncompressed), one file per position, rescale -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i, pos in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{i:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.SeriesDescription, ds.PatientID = "CT", "synthetic", "P1"
        ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Test^Synthetic", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.SeriesNumber = "", 3
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [0.5, 0.75]  # row spacing (y), column spacing (x)
        ds.SliceThickness = 2.0
        ds.GantryDetectorTilt = gantry_tilt
        ds.Rows, ds.Columns = size[1], size[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.full((size[1], size[0]), 100 * (i + 1), dtype=np.int16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_write_read_round_trip_keeps_geometry_and_values(tmp_path, ext, geometry):
    vol = _volume(geometry)
    path = write_volume(vol, tmp_path / f"vol{ext}")
    assert path == tmp_path / f"vol{ext}" and path.is_file()
    back = read_volume(path)
    _assert_same_geometry(vol, back, exact=ext != ".nii.gz")
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert orientation_code(back.direction) == orientation_code(vol.direction)
    assert back.warnings == []


def test_orientation_codes():
    assert orientation_code(GEOMETRIES["lps"][2].ravel()) == "LPS"
    assert orientation_code(GEOMETRIES["ras"][2]) == "RAS"
    assert orientation_code(np.eye(3)[:, [1, 0, 2]]) == "PLS"


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
@pytest.mark.parametrize("geometry", ["ras", "oblique", "anisotropic"])
def test_label_map_has_reference_geometry(tmp_path, ext, geometry):
    ref = _volume(geometry, dtype=np.float32, shape=(4, 5, 6))
    labels = (np.arange(ref.array.size) % 3).reshape(ref.array.shape)
    out = write_label_map(labels, ref, tmp_path / f"labels{ext}")
    back = read_volume(out)
    _assert_same_geometry(ref, back, exact=False)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    img = nib.load(out)  # other tools see the same grid: nibabel affine == LPS geometry flipped to RAS
    assert img.shape == ref.shape_xyz
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ np.asarray(ref.direction).reshape(3, 3) @ np.diag(ref.spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(ref.origin)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)


def test_label_map_dtype_and_exact_geometry_in_nrrd(tmp_path):
    ref = read_volume(CT_SERIES)
    labels = np.zeros(ref.array.shape, dtype=np.int64)
    labels[2, 3, 4] = 300
    back = read_volume(write_label_map(labels, ref, tmp_path / "seg.nrrd"))
    assert back.array.dtype == np.uint16 and back.array[2, 3, 4] == 300
    _assert_same_geometry(ref, back, exact=True)
    back = read_volume(write_label_map(labels > 0, ref, tmp_path / "seg.nii.gz"))
    assert back.array.dtype == np.uint8 and back.array.sum() == 1
    _assert_same_geometry(ref, back, exact=False)


def test_label_map_rejects_bad_input(tmp_path):
    ref = _volume("lps", shape=(2, 3, 4))
    with pytest.raises(ValueError, match="shape"):
        write_label_map(np.zeros((4, 3, 2), np.uint8), ref, tmp_path / "l.nii.gz")
    with pytest.raises(ValueError, match=">= 0"):
        write_label_map(-np.ones((2, 3, 4), np.int8), ref, tmp_path / "l.nii.gz")
    with pytest.raises(ValueError, match="whole numbers"):
        write_label_map(np.full((2, 3, 4), 0.5), ref, tmp_path / "l.nii.gz")
    with pytest.raises(DataError, match=r"l\.png"):
        write_label_map(np.zeros((2, 3, 4), np.uint8), ref, tmp_path / "l.png")
    assert list(tmp_path.iterdir()) == []


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    vol = _volume("oblique")
    target = tmp_path / "out" / "vol.png"  # PNG cannot hold a 3D int16 volume with this geometry
    target.parent.mkdir()
    target.write_bytes(b"old content")
    with pytest.raises(DataError, match=r"vol\.png"):
        write_volume(vol, target)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["vol.png"]
    with pytest.raises(DataError, match=r"vol\.xyz.*cannot write"):
        write_volume(vol, tmp_path / "vol.xyz")
    # header + data pairs keep their internal reference (the temp folder holds the final names)
    write_volume(vol, tmp_path / "pair" / "vol.mhd")
    names = sorted(p.name for p in (tmp_path / "pair").iterdir())
    assert names[0] == "vol.mhd" and len(names) == 2 and not any(n.startswith(".") for n in names)
    back = read_volume(tmp_path / "pair" / "vol.mhd")
    np.testing.assert_array_equal(back.array, vol.array)
    _assert_same_geometry(vol, back, exact=True)


def test_index_world_transforms_and_sitk_agree():
    vol = _volume("oblique")
    image = vol.to_sitk()
    ijk = np.array([[0, 0, 0], [1.5, 2.0, 3.25], [6, 5, 4]])
    world = vol.index_to_world(ijk)
    for idx, p in zip(ijk, world, strict=True):
        np.testing.assert_allclose(p, image.TransformContinuousIndexToPhysicalPoint(idx.tolist()), atol=1e-9)
    np.testing.assert_allclose(vol.world_to_index(world), ijk, atol=1e-9)
    np.testing.assert_allclose(vol.index_to_world([0, 0, 0]), vol.origin)
    back = Volume.from_sitk(image)
    _assert_same_geometry(vol, back, exact=True)
    np.testing.assert_array_equal(back.array, vol.array)


def test_volume_shapes_2d_rgb_and_4d():
    flat = Volume.from_sitk(sitk.GetImageFromArray(np.zeros((5, 7), np.uint8)))
    assert flat.array.shape == (1, 5, 7) and flat.shape_xyz == (7, 5, 1) and not flat.is_rgb
    assert flat.metadata["modality"] == "" and flat.metadata["source"] == ""
    rgb = Volume.from_sitk(sitk.GetImageFromArray(np.zeros((5, 7, 3), np.uint8), isVector=True))
    assert rgb.array.shape == (1, 5, 7, 3) and rgb.is_rgb and rgb.shape_xyz == (7, 5, 1)
    assert rgb.to_sitk().GetNumberOfComponentsPerPixel() == 3
    array4d = np.arange(3 * 2 * 4 * 5).reshape(3, 2, 4, 5).astype(np.int16)
    four = Volume.from_sitk(sitk.GetImageFromArray(array4d, isVector=False))
    assert four.array.shape == (2, 4, 5)
    np.testing.assert_array_equal(four.array, array4d[0])
    assert any("4D" in w and "first of 3 volumes" in w for w in four.warnings)
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 3, 4)), spacing=(1, 0, 1))


# ------------------------------------------------------------------------------------------------------ DICOM


def test_ct_series_listing():
    series = list_series(CT_SERIES)
    assert len(series) == 1
    info = series[0]
    assert isinstance(info, SeriesInfo)
    assert info.modality == "CT"
    assert info.description == "SmartScore - Gated 0.5 sec"
    assert info.size == (16, 16, 5)
    assert info.spacing == pytest.approx((0.488281, 0.488281, 2.5))
    assert len(info.files) == 5
    zs = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in info.files]
    assert zs == sorted(zs)


def _check_ct5n(vol: Volume) -> None:
    assert vol.array.shape == (5, 16, 16)  # the shipped series is downsampled to 16 x 16
    assert vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx((0.488281, 0.488281, 2.5))
    assert orientation_code(vol.direction) == "LPS"
    # physical order: slice 0 is the lowest along the normal (+z), z = -1.2375; pixels are HU
    assert vol.origin == pytest.approx((-72.2, -143.0, -1.2375), abs=1e-5)
    by_z = sorted(CT_SERIES.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for k, f in enumerate(by_z):
        ds = pydicom.dcmread(f)
        np.testing.assert_allclose(vol.index_to_world([0, 0, k]), [float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_array_equal(vol.array[k], ds.pixel_array.astype(np.float32) - 1024)
    assert vol.array.min() < -850  # air in HU (raw minimum is 136 before the -1024 intercept)
    assert vol.metadata["modality"] == "CT"
    assert vol.metadata["patient_id"] == "98890234" and vol.metadata["study_date"] == "20010101"
    assert vol.metadata["series_uid"] == "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"


def test_ct_series_reads_in_physical_order_with_hu():
    vol = read_volume(CT_SERIES)
    _check_ct5n(vol)
    assert vol.warnings == []
    assert vol.metadata["source"] == str(CT_SERIES)


def test_ct_series_order_does_not_depend_on_file_names(tmp_path):
    files = sorted(CT_SERIES.iterdir())
    names = [f"img{n}" for n in random.Random(3).sample(range(100), len(files))]
    for f, name in zip(files, names, strict=True):
        shutil.copy(f, tmp_path / (name + ".dcm" if name.endswith("1") else name))
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "DICOMDIR").write_bytes((DICOM_DATA / "dicomdirtests" / "DICOMDIR").read_bytes())
    vol = read_volume(tmp_path)
    _check_ct5n(vol)
    assert vol.warnings == []


def test_several_series_default_to_largest_with_warning_naming_others():
    folder = CT_SERIES.parent  # CT5N (5 slices) + CT2N scout (2 differently oriented images)
    infos = list_series(folder)
    assert [i.description for i in infos] == ["Scout", "SmartScore - Gated 0.5 sec"]
    vol = read_volume(folder)
    _check_ct5n(vol)
    text = " ".join(vol.warnings)
    assert "2 DICOM series" in text and "Scout" in text and infos[0].uid in text
    scout = read_volume(folder, series_uid=infos[0].uid)
    assert scout.metadata["description"] == "Scout" and scout.array.shape[1:] == (16, 16)
    assert not any("DICOM series" in w for w in scout.warnings)
    assert any("orientations" in w for w in scout.warnings)  # the scout's two images are orthogonal
    with pytest.raises(DataError, match=r"98892001.*no DICOM series with uid 1\.2\.3"):
        read_volume(folder, series_uid="1.2.3")


def write_two_series(folder: Path) -> dict:
    """Two series of different sizes in one folder: 'large' (6 slices of 10 x 12 at z = 10..20: 720 voxels) and
    'small' (4 slices of 12 x 14: more pixels per slice, 672 voxels). File names and instance numbers are shuffled, so
    neither name order nor instance order is slice order; every slice of 'large' holds 100 + its z position."""
    rng = random.Random(5)
    z = [10.0 + 2.0 * k for k in range(6)]
    large = np.stack([np.full((10, 12), 100 + int(v), np.int16) for v in z])
    names = [f"IM{n:04d}" for n in rng.sample(range(1000), 10)]
    instances = rng.sample(range(1, 50), 10)
    order = rng.sample(range(6), 6)  # the file of slice k is written in position order[k]
    write_series(folder, large[order], [(0.0, 0.0, z[k]) for k in order], names=names[:6], instances=instances[:6],
                 description="large", series_uid="1.2.826.0.1.9")
    small = np.full((4, 12, 14), 7, np.int16)
    write_series(folder, small, [(0.0, 0.0, 3.0 * k) for k in range(4)], names=names[6:], instances=instances[6:],
                 description="small", series_uid="1.2.826.0.1.10")
    return {"large_uid": "1.2.826.0.1.9", "small_uid": "1.2.826.0.1.10", "z": z}


def test_two_series_read_the_larger_one_in_position_order(tmp_path):
    """The one series choice and slice order that the app, the CLI and every bundle get through read_volume."""
    facts = write_two_series(tmp_path / "two")
    vol = read_volume(tmp_path / "two")
    assert vol.metadata["series_uid"] == facts["large_uid"] and vol.metadata["description"] == "large"
    assert vol.array.shape == (6, 10, 12)
    assert list(vol.array[:, 0, 0]) == [100 + int(v) for v in facts["z"]]  # slice k at the k-th lowest position
    assert vol.origin == (0.0, 0.0, 10.0) and vol.spacing == pytest.approx((0.75, 0.5, 2.0))
    [warning] = vol.warnings
    assert "holds 2 DICOM series" in warning and "'large'" in warning
    assert "'small'" in warning and facts["small_uid"] in warning and str(tmp_path / "two") in warning
    infos = {info.uid: info for info in list_series(tmp_path / "two")}
    assert infos[facts["large_uid"]].size == (12, 10, 6) and infos[facts["small_uid"]].size == (14, 12, 4)
    small = read_volume(tmp_path / "two", series_uid=facts["small_uid"])
    assert small.array.shape == (4, 12, 14) and small.warnings == []


def test_irregular_slice_gaps_are_refused_naming_the_gaps(capfd):
    """pydicom's CT2 (gaps 202.5, 1.25, 1.25 mm) on a regular grid would put slices 134 mm from where they were
    scanned: refused, naming the gaps; ITK says nothing on stderr."""
    from core.errors import DataError

    with pytest.raises(DataError, match=r"CT2: irregular slice gaps \(1\.2.* to 202\.5 mm.*134") as info:
        read_volume(NONUNIFORM_CT)
    assert "between slices 1 and 2 of 4" in str(info.value)
    assert capfd.readouterr().err == ""


def test_slightly_non_uniform_spacing_is_a_warning_saying_how_far_off(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 6.0, 8.5, 10.5)]  # mean step 2.1: at most 0.3 mm off
    planes = np.stack([np.full((4, 5), k, np.int16) for k in range(6)])
    write_series(tmp_path / "s", planes, positions)
    vol = read_volume(tmp_path / "s")
    assert vol.spacing[2] == pytest.approx(2.1)
    assert any("non-uniform slice spacing" in w and "up to 0.3 mm" in w for w in vol.warnings), vol.warnings


def test_gantry_tilt_is_a_warning(tmp_path):
    tilt = np.radians(15)
    positions = [(0.0, -10.0 + k * 2.0 * np.tan(tilt), 50.0 + k * 2.0) for k in range(4)]
    _write_ct_series(tmp_path / "tilted", positions[::-1], gantry_tilt=15.0)
    vol = read_volume(tmp_path / "tilted")
    assert vol.array.shape == (4, 6, 8)
    assert vol.spacing == pytest.approx((0.75, 0.5, 2.0))
    assert vol.origin == pytest.approx(positions[0])
    np.testing.assert_array_equal(vol.array[:, 0, 0], [400 - 1024, 300 - 1024, 200 - 1024, 100 - 1024])
    [warning] = vol.warnings
    assert "gantry tilt of 15.00 degrees" in warning and "tilted" in warning


def test_repeated_positions_keep_one_slice_each_with_warning(tmp_path):
    _write_ct_series(tmp_path / "echoes", [(0.0, 0.0, float(k // 2)) for k in range(6)])
    vol = read_volume(tmp_path / "echoes")
    assert vol.array.shape == (3, 6, 8) and vol.spacing[2] == pytest.approx(1.0)
    assert list(vol.array[:, 0, 0]) == [100 - 1024, 300 - 1024, 500 - 1024]  # lowest instance at each position
    assert any("3 slices share a position" in w and "echoes" in w for w in vol.warnings)


def test_synthetic_oblique_series_geometry(tmp_path):
    rot = _rotation(0.2, 0.1, -0.3)
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = np.array([-30.0, 12.5, 7.0])
    positions = [origin + k * 3.0 * normal for k in range(3)]
    files = _write_ct_series(tmp_path / "obl", positions, iop=list(row) + list(col))
    random.Random(0).shuffle(files)
    vol = read_volume(tmp_path / "obl")
    assert vol.warnings == []
    np.testing.assert_allclose(np.asarray(vol.direction).reshape(3, 3), rot, atol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-6)
    assert vol.spacing == pytest.approx((0.75, 0.5, 3.0))
    np.testing.assert_allclose(vol.index_to_world([0, 0, 2]), positions[2], atol=1e-6)
    assert list(vol.array[:, 0, 0]) == [100 - 1024, 200 - 1024, 300 - 1024]


class _RecordingSeriesReader(sitk.ImageSeriesReader):
    calls: list[list[str]] = []

    def SetFileNames(self, names):  # noqa: N802 - SimpleITK's name
        type(self).calls.append(list(names))
        return super().SetFileNames(names)


def test_a_series_is_read_by_one_series_reader_in_the_planned_order(tmp_path, monkeypatch):
    """The planner's file list (physical order, whatever the file names and instance numbers say) is what one
    ImageSeriesReader reads; ITK's own warnings (non-uniform sampling) stay off stderr."""
    positions = [(0.0, 0.0, z) for z in (0.0, 1.0, 2.0, 3.3)]  # non-uniform: ITK would warn on stderr
    planes = np.stack([np.full((4, 5), 10 * (k + 1), np.int16) for k in range(4)])
    write_series(tmp_path / "s", planes, positions, names=["b.dcm", "d.dcm", "a.dcm", "c.dcm"],
                 instances=[3, 1, 4, 2])
    monkeypatch.setattr(sitk, "ImageSeriesReader", _RecordingSeriesReader)
    _RecordingSeriesReader.calls = []
    vol = read_volume(tmp_path / "s")
    assert _RecordingSeriesReader.calls == [list_series(tmp_path / "s")[0].files]
    assert [Path(f).name for f in _RecordingSeriesReader.calls[0]] == ["b.dcm", "d.dcm", "a.dcm", "c.dcm"]
    assert list(vol.array[:, 0, 0]) == [10, 20, 30, 40] and vol.array.dtype == np.int16
    assert vol.origin == (0.0, 0.0, 0.0) and vol.spacing == pytest.approx((0.75, 0.5, 1.1))
    assert any("non-uniform slice spacing" in w for w in vol.warnings)


def test_series_falls_back_to_pydicom_when_gdcm_cannot_decode(tmp_path, monkeypatch):
    expected = read_volume(CT_SERIES)

    def gdcm_fails(self):
        raise RuntimeError("Exception thrown in SimpleITK ImageSeriesReader_Execute: GDCM cannot decode")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", gdcm_fails)
    vol = read_volume(CT_SERIES)
    np.testing.assert_array_equal(vol.array, expected.array)
    assert vol.array.dtype == expected.array.dtype
    assert (vol.spacing, vol.origin, vol.direction) == (expected.spacing, expected.origin, expected.direction)


def test_series_of_mixed_integer_types_keeps_every_value(tmp_path):
    """Files of one series may store different integer types: the series type holds all of their values (GDCM
    alone would cast every slice to the first file's type)."""
    folder = tmp_path / "mixed"
    write_series(folder, np.full((1, 4, 5), 60000, np.uint16), [(0.0, 0.0, 0.0)], names=["a.dcm"],
                 series_uid="1.2.3.4")
    write_series(folder, np.full((1, 4, 5), -7, np.int16), [(0.0, 0.0, 1.0)], names=["b.dcm"], series_uid="1.2.3.4")
    vol = read_volume(folder)
    assert list(vol.array[:, 0, 0]) == [60000, -7] and vol.array.dtype == np.int32


def test_rgb_series(tmp_path):
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    write_series(tmp_path / "rgb", planes, [(0.0, 0.0, 2.0 * k) for k in range(3)], modality="OT",
                 names=["z.dcm", "y.dcm", "x.dcm"])
    vol = read_volume(tmp_path / "rgb")
    assert vol.is_rgb and vol.array.shape == (3, 4, 5, 3)
    np.testing.assert_array_equal(vol.array, planes)


def test_single_dicom_file_and_transfer_syntaxes():
    ct = read_volume(DICOM_DATA / "CT_small.dcm")
    assert ct.array.shape == (1, 128, 128) and ct.array.dtype == np.float32
    assert (ct.array.min(), ct.array.max()) == (-896, 1167)
    assert ct.metadata["modality"] == "CT" and ct.metadata["patient_id"] == "1CT1"
    assert ct.origin == pytest.approx((-158.135803, -179.035797, -75.699997))
    reference = read_volume(DICOM_DATA / "MR_small.dcm").array
    assert reference.shape == (1, 64, 64)
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        np.testing.assert_array_equal(read_volume(DICOM_DATA / name).array, reference, err_msg=name)
    rgb = read_volume(DICOM_DATA / "SC_rgb_rle_2frame.dcm")
    assert rgb.is_rgb and rgb.array.shape == (2, 100, 100, 3)


@pytest.mark.parametrize(("dtype", "stored"), [(np.uint8, np.uint8), (np.uint16, np.uint16), (np.int16, np.int16)])
@pytest.mark.parametrize("series", [False, True])
def test_monochrome1_is_inverted_within_its_range(tmp_path, monkeypatch, dtype, stored, series):
    """MONOCHROME1 (low values displayed white) reads inverted so that bright means dense, within the values' own
    range (min + max - v; 255 - v for uint8), whether GDCM or pydicom decodes it, for a file or a series."""
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    planes = rng.integers(max(info.min, -3000), min(info.max, 3000), (3 if series else 1, 4, 5)).astype(dtype)
    files = write_series(tmp_path / "m1", planes, [(0.0, 0.0, float(k)) for k in range(len(planes))],
                         photometric="MONOCHROME1")
    source = tmp_path / "m1" if series else files[0]
    raw = planes.astype(np.float64)
    expected = 255 - raw if dtype == np.uint8 else raw.max() + raw.min() - raw
    for decoder in ("gdcm", "pydicom"):
        if decoder == "pydicom":
            def gdcm_fails(self):
                raise RuntimeError("GDCM cannot decode")

            monkeypatch.setattr(sitk.ImageFileReader, "Execute", gdcm_fails)
            monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", gdcm_fails)
        vol = read_volume(source)
        assert vol.array.dtype == stored, decoder
        np.testing.assert_array_equal(vol.array, expected, err_msg=decoder)
        assert vol.metadata["photometric"] == "MONOCHROME1"


def test_monochrome1_with_rescale_and_ct(tmp_path):
    ds = pydicom.dcmread(DICOM_DATA / "CT_small.dcm")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    vol = read_volume(tmp_path / "m1.dcm")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array[0], hu.max() + hu.min() - hu)
    rescaled = write_series(tmp_path / "r", np.arange(40, dtype=np.int16).reshape(2, 4, 5) - 20,
                            [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)], photometric="MONOCHROME1", rescale=(0.5, -10.25))
    values = (np.arange(40).reshape(2, 4, 5) - 20) * 0.5 - 10.25
    np.testing.assert_allclose(read_volume(rescaled[0].parent).array, values.max() + values.min() - values)


def test_palette_colour_reads_as_rgb_with_gdcm_and_pydicom(monkeypatch):
    from pydicom.pixels import apply_color_lut

    path = DICOM_DATA / "examples_palette.dcm"
    ds = pydicom.dcmread(path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)  # a 16-bit lookup table
    vol = read_volume(path)
    assert vol.is_rgb and vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array[0], expected)

    def gdcm_fails(self):
        raise RuntimeError("GDCM cannot decode")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", gdcm_fails)
    fallback = read_volume(path)
    assert fallback.is_rgb and fallback.array.dtype == np.uint8
    np.testing.assert_array_equal(fallback.array[0], expected)


def test_ybr_colour_reads_as_rgb():
    rgb = read_volume(DICOM_DATA / "SC_rgb_rle.dcm").array
    ybr = read_volume(DICOM_DATA / "SC_ybr_full_422_uncompressed.dcm").array  # the same picture stored as YBR
    assert ybr.shape == rgb.shape == (1, 100, 100, 3)
    assert np.abs(ybr.astype(int) - rgb.astype(int)).max() <= 8


# ------------------------------------------------------------------------------------------------ NIfTI MNI152


def test_mni152_reads_with_ras_orientation_matching_nibabel():
    vol = read_volume(MNI_T1)
    assert vol.shape_xyz == (197, 233, 189)
    assert vol.array.shape == (189, 233, 197) and vol.array.dtype == np.uint8
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert orientation_code(vol.direction) == "RAS"
    assert vol.origin == pytest.approx((98.0, 134.0, -72.0))  # RAS (-98, -134, -72) in LPS
    assert vol.metadata["source"] == str(MNI_T1) and vol.warnings == []
    points = np.array([[0.0, 0.0, 0.0], [12.3, -45.6, 7.8], [-70.0, 60.0, 80.0]])
    np.testing.assert_allclose(vol.index_to_world(vol.world_to_index(points)), points, atol=1e-9)
    img = nib.load(MNI_T1)
    ijk = np.array([[0, 0, 0], [196, 232, 188], [98, 116.5, 94]])
    ras = (img.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    np.testing.assert_allclose(vol.index_to_world(ijk), ras @ LPS_TO_RAS, atol=1e-5)
    i, j, k = 98, 120, 70
    assert vol.array[k, j, i] == np.asarray(img.dataobj[i, j, k])


def test_4d_nifti_reads_first_volume_with_warning():
    path = NIBABEL_DATA / "example4d.nii.gz"  # 128 x 96 x 24 x 2, oblique
    vol = read_volume(path)
    data = np.asarray(nib.load(path).dataobj)
    assert vol.array.shape == (24, 96, 128)
    np.testing.assert_array_equal(vol.array, data[..., 0].T)
    assert any("4D" in w and "first of 2 volumes read" in w and "example4d" in w for w in vol.warnings)


# ------------------------------------------------------------------------------------------------ 2D images


def test_2d_images_are_one_slice_volumes(tmp_path):
    grey = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)
    np.save(tmp_path / "slice.npy", grey.astype(np.float32))
    for name, shape in [("grey.png", (1, 20, 30)), ("rgb.png", (1, 20, 30, 3)), ("photo.jpg", (1, 20, 30, 3)),
                        ("slice.npy", (1, 20, 30))]:
        vol = read_volume(tmp_path / name)
        assert vol.array.shape == shape, name
        assert vol.spacing == (1.0, 1.0, 1.0) and vol.origin == (0.0, 0.0, 0.0)
        assert vol.metadata["source"] == str(tmp_path / name)
    np.testing.assert_array_equal(read_volume(tmp_path / "grey.png").array[0], grey)
    stack = np.arange(2 * 3 * 5, dtype=np.int16).reshape(2, 3, 5)
    np.save(tmp_path / "stack.npy", stack)
    vol = read_volume(tmp_path / "stack.npy")
    np.testing.assert_array_equal(vol.array, stack)
    assert any("no geometry" in w for w in vol.warnings)
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb.png").array[0], rgb)


def test_bmp_tiff_and_channel_npy_are_one_slice_volumes(tmp_path):
    rng = np.random.default_rng(6)
    grey = rng.integers(0, 256, (20, 33), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 33, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (17, 9), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.bmp")
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    Image.fromarray(deep).save(tmp_path / "d.tiff")
    for name, array in (("g.bmp", grey), ("c.tif", rgb), ("d.tiff", deep)):
        vol = read_volume(tmp_path / name)
        assert vol.array.dtype == array.dtype and vol.warnings == [], name
        np.testing.assert_array_equal(vol.array[0], array, err_msg=name)
    pages = [Image.fromarray(grey), Image.fromarray(255 - grey)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    vol = read_volume(tmp_path / "pages.tif")
    np.testing.assert_array_equal(vol.array[0], grey)
    assert any("multi-page image, first of 2 frames" in w for w in vol.warnings)
    shutil.copy(tmp_path / "g.bmp", tmp_path / "g.tif")
    _assert_error(tmp_path / "g.tif", "not a TIFF file", "BMP")
    (tmp_path / "notes.bmp").write_text("BM but not a bitmap")
    _assert_error(tmp_path / "notes.bmp", "not a BMP file", "text")
    np.save(tmp_path / "channel.npy", grey[..., None])
    np.testing.assert_array_equal(read_volume(tmp_path / "channel.npy").array, grey[None])
    np.save(tmp_path / "mask.npy", grey > 128)
    mask = read_volume(tmp_path / "mask.npy")
    assert mask.array.dtype == np.uint8 and mask.metadata["stored_dtype"] == "bool"


# ------------------------------------------------------------------------------------------------ errors


def _assert_error(path, *fragments):
    with pytest.raises(DataError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_empty_and_unknown_files(tmp_path):
    _assert_error(tmp_path / "nope.nii.gz", "no such file")
    (tmp_path / "empty.nii.gz").touch()
    _assert_error(tmp_path / "empty.nii.gz", "empty")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    _assert_error(tmp_path / "table.csv", "unsupported file type", ".csv")
    (tmp_path / "notdicom.dcm").write_text("hello")
    _assert_error(tmp_path / "notdicom.dcm", "not a DICOM file")


def test_damaged_nifti_files(tmp_path):
    data = MNI_T1.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    _assert_error(tmp_path / "cut.nii.gz", "truncated NIfTI")
    vol = _volume("ras")
    raw = write_volume(vol, tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:-10])
    _assert_error(tmp_path / "cut.nii", "truncated NIfTI")
    (tmp_path / "header.nii").write_bytes(raw[:200])
    _assert_error(tmp_path / "header.nii", "truncated NIfTI")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "scan.png")
    shutil.copy(tmp_path / "scan.png", tmp_path / "scan.nii.gz")
    _assert_error(tmp_path / "scan.nii.gz", "not a NIfTI file", "PNG")
    shutil.copy(tmp_path / "scan.png", tmp_path / "scan.nrrd")
    _assert_error(tmp_path / "scan.nrrd", "not an NRRD file", "PNG")


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("version", [1, 2])
def test_nifti_headers_of_both_versions_and_byte_orders(tmp_path, version, endian):
    """The header check (nibabel's parser) reads NIfTI-1 and NIfTI-2 in either byte order: files cut short are
    reported as truncated, a header without its .img is not, whole NIfTI-1 files read (this ITK reads no NIfTI-2)."""
    from core.io.nifti import nifti_header

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = (nib.Nifti1Image if version == 1 else nib.Nifti2Image)(data.astype(endian + "i2"), np.eye(4))
    image.header.set_data_dtype(np.dtype(endian + "i2"))
    raw = image.to_bytes()
    header = nifti_header(raw)
    assert header is not None and header.single and header.dims[:4] == (3, 4, 5, 6) and header.bitpix == 16
    assert header.vox_offset == len(raw) - data.nbytes
    if version == 1:
        (tmp_path / "whole.nii").write_bytes(raw)
        np.testing.assert_array_equal(read_volume(tmp_path / "whole.nii").array, data.T)
    (tmp_path / "cut.nii").write_bytes(raw[:-7])
    _assert_error(tmp_path / "cut.nii", "truncated NIfTI", f"the header needs {len(raw)}")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[:-7]))
    _assert_error(tmp_path / "cut.nii.gz", "truncated NIfTI")
    pair = nib.Nifti1Pair(data, np.eye(4)) if version == 1 else nib.Nifti2Pair(data, np.eye(4))
    assert not nifti_header(pair.header.binaryblock).single  # .hdr/.img: the voxels are in the .img
    assert nifti_header(raw[:200]) is None and nifti_header(b"\x00" * 600) is None


def test_damaged_gzip_nifti_is_reported(tmp_path):
    raw = gzip.compress(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_bytes())
    (tmp_path / "bad.nii.gz").write_bytes(raw[:10] + bytes(b ^ 0xFF for b in raw[10:40]) + raw[40:])
    _assert_error(tmp_path / "bad.nii.gz", "damaged gzip-compressed NIfTI")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("test-SR.dcm", "SR"),
        ("reportsi.dcm", "Basic Text SR"),
        ("waveform_ecg.dcm", "ECG"),
        ("rtplan.dcm", "RT Plan"),
        ("rtstruct.dcm", "RT Structure Set"),
    ],
)
def test_non_image_dicom_is_rejected(name, kind):
    path = DICOM_DATA / name
    assert path.is_file()
    _assert_error(path, "not an image", kind)


def test_dicom_without_pixel_data_and_damaged_pixels(tmp_path):
    _assert_error(DICOM_DATA / "dicomdirtests" / "TINY_ALPHA" / "PT000000" / "ST000000" / "SE000000" / "IM000000",
                  "without pixel data")
    ds = pydicom.dcmread(DICOM_DATA / "CT_small.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    _assert_error(tmp_path / "nopixels.dcm", "CT Image Storage without pixel data")
    _assert_error(DICOM_DATA / "MR_truncated.dcm", "truncated")
    _assert_error(DICOM_DATA / "dicomdirtests" / "DICOMDIR", "DICOMDIR")


def test_folders_without_dicom_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    _assert_error(empty, "no DICOM images")
    assert list_series(empty) == []
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("test-SR.dcm", "waveform_ecg.dcm"):
        shutil.copy(DICOM_DATA / name, reports / name)
    _assert_error(reports, "no DICOM images", "without pixel data", "ECG")
    with pytest.raises(DataError, match="no such folder"):
        list_series(tmp_path / "missing")


def test_non_image_files_beside_a_series_are_skipped_with_warning(tmp_path):
    for f in CT_SERIES.iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(DICOM_DATA / "rtplan.dcm", tmp_path / "plan")
    vol = read_volume(tmp_path)
    assert vol.array.shape == (5, 16, 16)
    assert any("skipped 1 DICOM file" in w and "RT Plan" in w for w in vol.warnings)
    assert os.path.basename(list_series(tmp_path)[0].files[0]) == "3353"


# ---------------------------------------------------------------------------------------------- DICOM SEG


@pytest.mark.parametrize("oblique", [False, True])
def test_dicom_seg_round_trip(tmp_path, oblique):
    """A generated CT series -> labels -> DICOM SEG -> read back with highdicom: frames, segment labels and the
    geometry of every frame match the source slices."""
    import highdicom as hd

    from core.io.dicom_seg import dicom_source_files, write_dicom_seg

    rot = _rotation(0.2, 0.1, -0.3) if oblique else np.eye(3)
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = np.array([-30.0, 12.5, 7.0])
    positions = [origin + k * 2.0 * normal for k in range(4)]
    files = _write_ct_series(tmp_path / "ct", positions, iop=list(row) + list(col), size=(8, 6))
    random.Random(1).shuffle(files)  # file order is not slice order
    vol = read_volume(tmp_path / "ct")
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[0, 1:3, 2:5] = 1
    labels[2, 3:6, 0:4] = 2
    labels[3, 0, 0] = 1  # slice 1 stays empty
    sources = dicom_source_files(vol)
    assert sorted(sources) == sorted(files)
    out = write_dicom_seg(labels, vol, sources, tmp_path / "out" / "seg.dcm", ["liver", "spleen"])
    assert out.is_file() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]

    seg = hd.seg.segread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.get_segment_numbers()] == ["liver", "spleen"]
    ds0 = pydicom.dcmread(files[0])
    assert seg.StudyInstanceUID == ds0.StudyInstanceUID and seg.FrameOfReferenceUID == ds0.FrameOfReferenceUID
    # every labelled slice comes back on its own source instance
    by_z = []
    for z in range(labels.shape[0]):
        world = vol.index_to_world([0, 0, z])
        by_z.append(min(files, key=lambda f: np.linalg.norm(
            np.asarray(pydicom.dcmread(f).ImagePositionPatient, float) - world)))
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in by_z]
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    np.testing.assert_array_equal(np.asarray(back), labels)
    # frame geometry: orientation and pixel spacing of the source, positions on the source slices
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               list(row) + list(col), atol=1e-6)
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, [0.5, 0.75])
    source_positions = [np.asarray(pydicom.dcmread(f).ImagePositionPatient, float) for f in files]
    frames = seg.PerFrameFunctionalGroupsSequence
    assert len(frames) == int(seg.NumberOfFrames) == 3  # one frame per non-empty (slice, segment); slice 1 is empty
    for frame in frames:
        ipp = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        assert min(np.linalg.norm(ipp - p) for p in source_positions) < 1e-4


def test_dicom_seg_needs_a_dicom_image(tmp_path):
    from core.io.dicom_seg import dicom_source_files, write_dicom_seg

    vol = _volume("oblique")
    with pytest.raises(DataError, match="DICOM"):
        dicom_source_files(vol)
    files = _write_ct_series(tmp_path / "ct", [(0, 0, 2.0 * k) for k in range(3)])
    ct = read_volume(tmp_path / "ct")
    with pytest.raises(ValueError, match="no name"):
        write_dicom_seg(np.full(ct.array.shape, 3, np.uint8), ct, files, tmp_path / "x.dcm", ["a"])
    with pytest.raises(DataError, match="source DICOM files"):
        write_dicom_seg(np.zeros(ct.array.shape, np.uint8), ct, files[:2], tmp_path / "x.dcm", ["a"])
    assert not (tmp_path / "x.dcm").exists()


def test_nifti_nan_voxels_and_4d_files_are_recorded_by_the_reader(tmp_path):
    data = np.ones((6, 7, 8), np.float32)
    data[1, 2, 3] = np.nan
    data[2, 2, 2] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    vol = read_volume(tmp_path / "nan.nii.gz")
    assert vol.metadata["nonfinite_voxels"] == "2" and np.isfinite(vol.array).all()  # ITK reads them as 0
    assert any("2 NaN or infinite" in w for w in vol.warnings)

    nib.save(nib.Nifti1Image(np.zeros((6, 7, 8, 3), np.int16), np.eye(4)), tmp_path / "four.nii.gz")
    four = read_volume(tmp_path / "four.nii.gz")
    assert four.metadata["volumes"] == "3" and four.metadata["stored_size"] == "6 x 7 x 8"
    assert four.array.shape == (8, 7, 6)
    assert read_volume(tmp_path / "nan.nii.gz").metadata["volumes"] == "1"


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_a_nifti_without_a_real_voxel_size_is_refused(tmp_path, bad):
    """ITK would read pixdim 0 or NaN as 1 mm and every result would carry that invented geometry: refused, the
    message naming the file and the header field."""
    from core.errors import DataError
    from core.io import read_volume

    image = nib.Nifti1Image(np.zeros((6, 7, 8), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    image.header["pixdim"][2] = bad  # nibabel writes the header as given
    path = tmp_path / "bad.nii.gz"
    nib.save(image, path)
    with pytest.raises(DataError, match=r"pixdim\[2\]") as info:
        read_volume(path)
    assert str(path) in str(info.value)
