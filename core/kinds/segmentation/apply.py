"""Apply a segmentation expert to a volume: sliding-window inference with progress and cancel, and a label
map in the input's exact geometry.

Same code path and numbers as `python -m monai.bundle run` on a segmentation bundle: the network comes from
`load_seg_bundle` (files, SHA-256, weights_only, strict) and the preprocessing, sliding window and inverse
geometry from `runtime.segment_volume` (the function the bundle's scripts call). Reading and writing go through
`core.io` (`read_volume`, `write_label_map`: exact geometry, atomic).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from core.errors import OutsideEnvelope
from core.files import refuse_overwriting_inputs
from core.io import Volume, read_volume, write_label_map
from core.kinds.segmentation.bundle import load_seg_bundle
from core.kinds.segmentation.runtime import applicability_warnings, segment_volume

Progress = Callable[[float, str], None]


def segment_loaded(
    bundle_dir: str | os.PathLike,
    volume: Volume,
    source: str,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
    strict: bool = False,
) -> dict:
    """Segment a volume already read with the expert bundle at `bundle_dir`; nothing is written. Returns
    {"image": source, "task", "expert": the bundle's name, "labels": {value: name}, "voxels": {name: count},
    "labels_array" (Z, Y, X) uint8, "warnings": the volume's reader warnings, "applicability": one sentence per way
    the volume lies outside what the expert was trained on}. `strict`: such a volume raises `OutsideEnvelope`
    before any inference. `check()` runs before each window (it may raise to cancel)."""
    if progress:
        progress(0.0, "loading the expert")
    net, metadata = load_seg_bundle(bundle_dir)
    lorkd = metadata["lorkd"]
    names = [str(n) for n in lorkd["label_names"]]
    outside, prepared = applicability_warnings(volume, metadata)
    if strict and outside:
        raise OutsideEnvelope(str(source), outside)
    report = (lambda f: progress(f, "segmenting")) if progress else None
    labels = segment_volume(net, volume, lorkd["preprocessing"], report, check, prepared=prepared)
    counts = np.bincount(labels.ravel(), minlength=len(names))
    if progress:
        progress(1.0, "done")
    return {
        "image": str(source),
        "task": str(lorkd["task"]["name"]),
        "expert": str(metadata.get("name", "")),
        "kind": "segmentation",
        "labels": {str(i): n for i, n in enumerate(names)},
        "voxels": {n: int(counts[i]) for i, n in enumerate(names)},
        "labels_array": labels,
        "warnings": list(volume.warnings),
        "applicability": outside,
        "research_use_only": True,
    }


def apply_segmentation(
    bundle_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    out_path: str | os.PathLike | None,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
    strict: bool = False,
) -> dict:
    """`lorkd apply` for a segmentation bundle: read the volume, segment it, write `out_path` (NIfTI, NRRD or
    MHA) with the input's geometry, or a DICOM SEG (`.dcm`) referencing the source instances when the input is a
    DICOM series folder or file. Returns `segment_loaded`'s record plus "out". A volume that is not one finite 3D
    volume (4D, 2D, NaN/Inf voxels) raises `DataError`."""
    dicom_seg = bool(out_path) and str(out_path).lower().endswith(".dcm")
    if progress:
        progress(0.0, "reading the volume")
    volume = read_volume(image_path)
    if out_path:  # before the (long) inference; the writers check again, whoever calls them
        refuse_overwriting_inputs(out_path, [image_path, volume.metadata.get("source")])
    sources = None
    if dicom_seg:  # before the (long) inference: a non-DICOM input fails at once
        from core.io.dicom_seg import dicom_source_files

        sources = dicom_source_files(volume)
    record = segment_loaded(bundle_dir, volume, str(image_path), progress, check, strict)
    labels = record["labels_array"]
    if dicom_seg:
        from core.export.weights import read_bundle_metadata
        from core.io.dicom_seg import write_dicom_seg

        names = list(record["labels"].values())
        # the codes the user chose for labels (absent in older bundles: coded by name)
        label_codes = read_bundle_metadata(bundle_dir)["lorkd"].get("label_codes")
        write_dicom_seg(labels, volume, sources, out_path, names[1:], label_codes=label_codes,
                        algorithm=f"LoRKD expert {record['task']}"[:64])
    elif out_path:
        write_label_map(labels, volume, out_path)
    return {**record, "out": str(out_path) if out_path else None}
