"""DICOM SEG output (highdicom) for label maps of volumes that were read from DICOM.

`write_dicom_seg(labels, reference, source_files, out_path, label_names)` writes a DICOM Segmentation object
(binary segmentation, one segment per label value 1..K, empty frames omitted) that references the source
instances: every frame sits on its source slice (same Image Position / Orientation, Pixel Spacing, Frame of
Reference and study), so PACS viewers and `highdicom.seg.segread(...).get_pixels_by_source_instance` put it back
on the image. `dicom_source_files(volume)` finds the files a `read_volume` volume came from.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import refuse_overwriting_inputs, write_atomic
from .dicom import list_series
from .volume import Volume

MANUFACTURER = "LoRKD Studio"
SOFTWARE_VERSION = "0.1.0"
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "AccessionNumber", "ReferringPhysicianName")


def dicom_source_files(volume: Volume) -> list[Path]:
    """The DICOM files `volume` was read from (a DICOM file, or the series of a DICOM folder); DataError when the
    volume did not come from DICOM."""
    md = volume.metadata or {}
    source = Path(md.get("source") or "")
    if not md.get("series_uid") or not str(source) or not source.exists():
        raise DataError(
            f"{source or 'this image'}: DICOM SEG needs an image read from DICOM files (save NIfTI instead)"
        )
    if source.is_file():
        return [source]
    for info in list_series(source):
        if info.uid == md["series_uid"]:
            return [Path(f) for f in info.files]
    raise DataError(f"{source}: the DICOM series {md['series_uid']} is no longer in this folder")


def _order_sources(datasets: list, reference: Volume) -> list:
    """The source datasets in the volume's slice (Z) order, matched by Image Position (Patient)."""
    nz = reference.array.shape[0]
    if len(datasets) == 1 and nz > 1:
        frames = int(getattr(datasets[0], "NumberOfFrames", 1) or 1)
        if frames != nz:
            raise DataError(f"{nz} slices in the volume but the DICOM file has {frames} frame(s)")
        return datasets
    if len(datasets) != nz:
        raise DataError(f"{nz} slices in the volume but {len(datasets)} source DICOM files")
    if nz == 1:
        return datasets
    positions = []
    for ds in datasets:
        ipp = getattr(ds, "ImagePositionPatient", None)
        if ipp is None:
            raise DataError(f"{getattr(ds, 'filename', 'a source file')}: no ImagePositionPatient")
        positions.append([float(v) for v in ipp])
    positions = np.asarray(positions)
    ordered = []
    for z in range(nz):
        world = reference.index_to_world([0, 0, z])
        distance = np.linalg.norm(positions - world, axis=1)
        k = int(np.argmin(distance))
        if distance[k] > 0.01 + 0.5 * min(reference.spacing):
            raise DataError(f"slice {z} of the volume matches no source DICOM file (nearest {distance[k]:.2f} mm away)")
        ordered.append(datasets[k])
    if len({id(ds) for ds in ordered}) != nz:
        raise DataError("the source DICOM files do not map one to one onto the volume's slices")
    return ordered


def write_dicom_seg(
    labels: np.ndarray,
    reference: Volume,
    source_files: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    label_names: Sequence[str],
    *,
    series_description: str = "LoRKD segmentation",
    algorithm: str = "LoRKD expert",
) -> Path:
    """Write `labels` ((Z, Y, X) ints 0..K on `reference`'s grid; 0 background) as a DICOM SEG at `out_path`
    referencing `source_files` (the DICOM series `reference` was read from). `label_names[k-1]` names label k.
    Atomic (temp file + rename). Returns the path."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    refuse_overwriting_inputs(out_path, [reference.metadata.get("source"), *source_files])
    labels = np.asarray(labels)
    if labels.shape != reference.array.shape[:3]:
        raise ValueError(f"labels have shape {labels.shape}, the reference volume (Z, Y, X) is "
                         f"{reference.array.shape[:3]}")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    high = int(labels.max(initial=0))
    if int(labels.min(initial=0)) < 0:
        raise ValueError("labels must be >= 0")
    names = [str(n) for n in label_names]
    if high > len(names):
        raise ValueError(f"label value {high} has no name ({len(names)} label names given)")
    if not names:
        raise ValueError("at least one label name is needed")
    sources = [Path(f) for f in source_files]
    if not sources:
        raise DataError("DICOM SEG needs the source DICOM files")
    datasets = []
    for f in sources:
        try:
            datasets.append(pydicom.dcmread(f))
        except Exception as error:  # noqa: BLE001 - pydicom raises many types
            raise DataError(f"{f}: cannot read the source DICOM file ({error})") from error
    for ds in datasets:  # type-2 attributes highdicom copies: present but empty when a source lacks them
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    datasets = _order_sources(datasets, reference)
    if (int(datasets[0].Rows), int(datasets[0].Columns)) != labels.shape[1:]:
        raise DataError(f"the source images are {datasets[0].Rows} x {datasets[0].Columns} pixels but the labels "
                        f"are {labels.shape[1]} x {labels.shape[2]}")
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, version=SOFTWARE_VERSION, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name[:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            tracking_uid=hd.UID(),
            tracking_id=f"{name[:50]} {k}",
        )
        for k, name in enumerate(names, start=1)
    ]
    pixels = labels.astype(np.uint8 if len(names) < 256 else np.uint16)
    if len(datasets) == 1 and pixels.shape[0] == 1:
        pixels = pixels[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns about optional attributes of foreign sources
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=SOFTWARE_VERSION,
            device_serial_number="0",
            content_description=series_description[:64],
        )
    seg.SeriesDescription = series_description[:64]
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, seg.save_as)
