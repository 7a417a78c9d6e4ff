"""DICOM series written with pydicom for tests (uncompressed, one file per slice), with the file names, instance
numbers and series of the test's choosing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def new_dataset(path: Path, sop_class: str):
    """An empty pydicom dataset of `sop_class` for `path`: file meta (explicit VR little endian), SOP class and a
    fresh instance UID; the caller adds the rest and saves it."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_series(
    folder: Path,
    planes: np.ndarray,
    positions: Sequence[Sequence[float]],
    *,
    names: Sequence[str] | None = None,
    instances: Sequence[int] | None = None,
    modality: str = "MR",
    description: str = "synthetic",
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    rescale: tuple[float, float] | None = None,
    photometric: str | None = None,
    series_uid: str | None = None,
) -> list[Path]:
    """Write `planes` (Z, Y, X) or (Z, Y, X, 3) as one series: plane z at `positions[z]`, in file `names[z]` with
    InstanceNumber `instances[z]` (defaults: im000.dcm, ... and 1, 2, ...). Integer planes keep their dtype
    (uint8/uint16 unsigned, int16 signed); `rescale` = (slope, intercept). Returns the paths in plane order."""
    from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

    sop = {"CT": CTImageStorage, "MR": MRImageStorage, "OT": SecondaryCaptureImageStorage}[modality]
    folder.mkdir(parents=True, exist_ok=True)
    study, frame = generate_uid(), generate_uid()
    series_uid = series_uid or generate_uid()
    colour = planes.ndim == 4
    paths = []
    for z, plane in enumerate(planes):
        path = folder / (names[z] if names else f"im{z:03d}.dcm")
        ds = new_dataset(path, sop)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.Modality, ds.SeriesDescription, ds.PatientID, ds.PatientName = modality, description, "P1", "Test^Series"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "19700101", "O", "20240101", "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName, ds.SeriesNumber = "1", "A1", "", 7
        ds.InstanceNumber = int(instances[z]) if instances else z + 1
        ds.ImagePositionPatient = [float(v) for v in positions[z]]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = plane.shape[:2]
        if colour:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        else:
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric or "MONOCHROME2"
        bits = plane.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = int(plane.dtype.kind == "i")
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
