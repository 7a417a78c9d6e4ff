"""DICOM SEG output (highdicom) for label maps of volumes that were read from DICOM.

`write_dicom_seg(labels, reference, source_files, out_path, label_names)` writes a DICOM Segmentation object
(binary segmentation, one segment per label value 1..K, empty frames omitted) that references the source
instances: every frame sits on its source slice (same Image Position / Orientation, Pixel Spacing, Frame of
Reference and study), so PACS viewers and `highdicom.seg.segread(...).get_pixels_by_source_instance` put it back
on the image. `dicom_source_files(volume)` finds the files a `read_volume` volume came from.

Each segment is coded (Segmented Property Category / Type Code Sequences) as the label's structure when its name is
a known one (`STRUCTURES`, matched case- and punctuation-insensitively with a few synonyms: "CSF", "grey matter"),
else as the generic SNOMED CT "Tissue"; `label_codes` overrides the codes of chosen labels. The segment label
always keeps the user's name.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
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

Code = tuple[str, str, str]  # (coding scheme designator, code value, code meaning)
ANATOMICAL_STRUCTURE: Code = ("SCT", "123037004", "Anatomical Structure")
TISSUE: Code = ("SCT", "85756007", "Tissue")
ALTERED_STRUCTURE: Code = ("SCT", "49755003", "Morphologically Altered Structure")
GENERIC: tuple[Code, Code] = (TISSUE, TISSUE)  # a label whose structure is not known
# Segmentation category and type codes (SNOMED CT) of common structures, copied from the terminology of 3D Slicer
# and dcmqi (SegmentationCategoryTypeModifier-DICOM-Master.json), so that Slicer recognises the segments. Its
# "Anatomical Structure" is SCT 123037004 (DICOM PS3.16 CID 7150 now lists SCT 91723000); the type codes equal
# pydicom's `codes.SCT` (DICOM PS3.16). Keys: the structure's name; other names in `SYNONYMS`.
STRUCTURES: dict[str, tuple[Code, Code]] = {
    "brain": (ANATOMICAL_STRUCTURE, ("SCT", "12738006", "Brain")),
    "gray matter": (ANATOMICAL_STRUCTURE, ("SCT", "389081007", "Gray Matter")),
    "white matter": (ANATOMICAL_STRUCTURE, ("SCT", "389080008", "White Matter")),
    "cerebrospinal fluid": (ANATOMICAL_STRUCTURE, ("SCT", "65216001", "Cerebrospinal Fluid")),
    "cerebellum": (ANATOMICAL_STRUCTURE, ("SCT", "113305005", "Cerebellum")),
    "brain stem": (ANATOMICAL_STRUCTURE, ("SCT", "119238007", "Brain stem")),
    "spinal cord": (ANATOMICAL_STRUCTURE, ("SCT", "2748008", "Spinal cord")),
    "liver": (ANATOMICAL_STRUCTURE, ("SCT", "10200004", "Liver")),
    "spleen": (ANATOMICAL_STRUCTURE, ("SCT", "78961009", "Spleen")),
    "kidney": (ANATOMICAL_STRUCTURE, ("SCT", "64033007", "Kidney")),
    "pancreas": (ANATOMICAL_STRUCTURE, ("SCT", "15776009", "Pancreas")),
    "lung": (ANATOMICAL_STRUCTURE, ("SCT", "39607008", "Lung")),
    "heart": (ANATOMICAL_STRUCTURE, ("SCT", "80891009", "Heart")),
    "aorta": (ANATOMICAL_STRUCTURE, ("SCT", "15825003", "Aorta")),
    "trachea": (ANATOMICAL_STRUCTURE, ("SCT", "44567001", "Trachea")),
    "esophagus": (ANATOMICAL_STRUCTURE, ("SCT", "32849002", "Esophagus")),
    "stomach": (ANATOMICAL_STRUCTURE, ("SCT", "69695003", "Stomach")),
    "colon": (ANATOMICAL_STRUCTURE, ("SCT", "71854001", "Colon")),
    "gallbladder": (ANATOMICAL_STRUCTURE, ("SCT", "28231008", "Gallbladder")),
    "bladder": (ANATOMICAL_STRUCTURE, ("SCT", "89837001", "Bladder")),
    "prostate": (ANATOMICAL_STRUCTURE, ("SCT", "41216001", "Prostate")),
    "thyroid": (ANATOMICAL_STRUCTURE, ("SCT", "69748006", "Thyroid")),
    "adrenal gland": (ANATOMICAL_STRUCTURE, ("SCT", "23451007", "Adrenal gland")),
    "bone": (TISSUE, ("SCT", "272673000", "Bone")),
    "muscle": (TISSUE, ("SCT", "71616004", "Muscle")),
    "skin": (TISSUE, ("SCT", "39937001", "Skin")),
    "blood": (TISSUE, ("SCT", "87612001", "Blood")),
    "neoplasm": (ALTERED_STRUCTURE, ("SCT", "108369006", "Neoplasm")),
    "mass": (ALTERED_STRUCTURE, ("SCT", "4147007", "Mass")),
}
SYNONYMS = {
    "grey matter": "gray matter", "csf": "cerebrospinal fluid", "brainstem": "brain stem", "brain mask": "brain",
    "kidneys": "kidney", "lungs": "lung", "bones": "bone", "oesophagus": "esophagus", "urinary bladder": "bladder",
    "thyroid gland": "thyroid", "adrenal": "adrenal gland", "adrenal glands": "adrenal gland",
    "tumour": "neoplasm", "tumor": "neoplasm", "tumours": "neoplasm", "tumors": "neoplasm",
}


def _key(name: str) -> str:
    """A label name for matching: lower case, letters and digits only ("Grey_Matter" -> "greymatter")."""
    return re.sub(r"[^0-9a-z]", "", str(name).casefold())


_LOOKUP = {_key(name): codes for name, codes in STRUCTURES.items()}
_LOOKUP.update({_key(alias): STRUCTURES[name] for alias, name in SYNONYMS.items()})


def structure_codes(name: str) -> tuple[Code, Code] | None:
    """(category, type) codes of the structure a label name names (`STRUCTURES`, `SYNONYMS`), None when unknown."""
    return _LOOKUP.get(_key(name))


def _code(value: object, where: str) -> Code:
    """[scheme, value, meaning] (a code of `label_codes`) as a `Code`; DataError when it is not one."""
    parts = value if isinstance(value, list | tuple) else ()
    code = tuple(str(v).strip() for v in parts if isinstance(v, str | int) and not isinstance(v, bool))
    if len(parts) != 3 or len(code) != 3 or not all(code) or len(code[0]) > 16 or len(code[2]) > 64:
        raise DataError(f"{where}: expected [coding scheme, code value, code meaning] such as "
                        f"[SCT, 10200004, Liver], got {value!r}")
    return code[0], code[1], code[2]


def segment_codes(label_names: Sequence[str],
                  label_codes: Mapping[int | str, Mapping[str, Sequence]] | None = None) -> list[tuple[Code, Code]]:
    """(category, type) codes of labels 1..K (`label_names[k-1]` names label k): `label_codes[k]` ({"category":
    [scheme, value, meaning], "type": [...]}; keys ints or their strings, as in a bundle's metadata) when given,
    else the table's codes of the name, else the generic "Tissue". DataError on a malformed `label_codes`."""
    chosen: dict[int, tuple[Code, Code]] = {}
    for value, entry in (label_codes or {}).items():
        where = f"label_codes.{value}"
        try:
            k = int(value)
        except (TypeError, ValueError):
            k = 0
        if not 1 <= k <= len(label_names) or isinstance(value, bool):
            raise DataError(f"{where}: not a label value 1..{len(label_names)}")
        if not isinstance(entry, Mapping) or set(entry) != {"category", "type"}:
            raise DataError(f"{where}: expected {{category: [scheme, value, meaning], type: [scheme, value, "
                            f"meaning]}}, got {entry!r}")
        chosen[k] = (_code(entry["category"], f"{where}.category"), _code(entry["type"], f"{where}.type"))
    return [chosen.get(k) or structure_codes(name) or GENERIC for k, name in enumerate(label_names, start=1)]


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
    label_codes: Mapping[int | str, Mapping[str, Sequence]] | None = None,
    series_description: str = "LoRKD segmentation",
    algorithm: str = "LoRKD expert",
) -> Path:
    """Write `labels` ((Z, Y, X) ints 0..K on `reference`'s grid; 0 background) as a DICOM SEG at `out_path`
    referencing `source_files` (the DICOM series `reference` was read from). `label_names[k-1]` names label k
    (its segment label); the segments' codes are `segment_codes(label_names, label_codes)`. Atomic (temp file +
    rename). Returns the path."""
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
    coded = segment_codes(names, label_codes)
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
    for ds in datasets:  # highdicom needs it for the pixel measures (type 2 in the sources: may be absent)
        if "NumberOfFrames" not in ds and not ds.get("SliceThickness"):
            ds.SliceThickness = float(reference.spacing[2])
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
            segmented_property_category=hd.sr.CodedConcept(category[1], category[0], category[2]),
            segmented_property_type=hd.sr.CodedConcept(kind[1], kind[0], kind[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            tracking_uid=hd.UID(),
            tracking_id=f"{name[:50]} {k}",
        )
        for k, (name, (category, kind)) in enumerate(zip(names, coded, strict=True), start=1)
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
