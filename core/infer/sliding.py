"""Apply a segmentation expert to a volume: sliding-window inference with progress and cancel, and a label
map in the input's exact geometry.

Same code path and numbers as `python -m monai.bundle run` on a segmentation bundle: the network comes from
`load_seg_bundle` (files, SHA-256, weights_only, strict) and the preprocessing, sliding window and inverse
geometry from `core.infer.seg_runtime.segment_array` (the function the bundle's scripts call). Reading and
writing go through `core.data.volume` (`read_volume`, `write_label_map`: exact geometry, atomic).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from core.data.segmentation import check_3d_volume
from core.data.volume import Volume, read_volume, write_label_map
from core.export.seg_bundle import load_seg_bundle
from core.infer import seg_runtime
from core.train.events import Control

Progress = Callable[[float, str], None]


def segment_volume(
    net: torch.nn.Module,
    volume: Volume,
    preprocessing: dict,
    progress: Progress | None = None,
    control: Control | None = None,
) -> np.ndarray:
    """uint8 label map (Z, Y, X) of `volume` on its own voxel grid (canonical reorientation and resampling
    inverted), with the preprocessing block of a segmentation bundle."""
    check_3d_volume(volume)
    report = (lambda f: progress(f, "segmenting")) if progress else None
    check = control.checkpoint if control is not None else None
    return seg_runtime.segment_array(net, volume.array, volume.spacing, volume.direction, preprocessing,
                                     progress=report, check=check)


def apply_segmentation(
    bundle_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    out_path: str | os.PathLike | None,
    progress: Progress | None = None,
    control: Control | None = None,
) -> dict:
    """`lorkd apply` for a segmentation bundle: read the volume, segment it, write `out_path` (NIfTI, NRRD or
    MHA) with the input's geometry, or a DICOM SEG (`.dcm`) referencing the source instances when the input is a
    DICOM series folder or file. Returns {"image", "task", "out", "labels": {value: name}, "voxels":
    {name: count}, "labels_array", "warnings": the reader's warnings (several series, non-uniform spacing, ...)}.
    A volume that is not one finite 3D volume (4D, 2D, NaN/Inf voxels) raises `DataError`."""
    dicom_seg = bool(out_path) and str(out_path).lower().endswith(".dcm")
    net, metadata = load_seg_bundle(bundle_dir)
    lorkd = metadata["lorkd"]
    names = lorkd["label_names"]
    if progress:
        progress(0.0, "reading the volume")
    volume = read_volume(image_path)
    sources = None
    if dicom_seg:  # before the (long) inference: a non-DICOM input fails at once
        from core.data.dicom_seg import dicom_source_files

        sources = dicom_source_files(volume)
    labels = segment_volume(net, volume, lorkd["preprocessing"], progress, control)
    if dicom_seg:
        from core.data.dicom_seg import write_dicom_seg

        write_dicom_seg(labels, volume, sources, out_path, [str(n) for n in names[1:]],
                        algorithm=f"LoRKD expert {lorkd['task']['name']}"[:64])
    elif out_path:
        write_label_map(labels, volume, out_path)
    counts = np.bincount(labels.ravel(), minlength=len(names))
    if progress:
        progress(1.0, "done")
    return {
        "image": str(image_path),
        "task": lorkd["task"]["name"],
        "out": str(out_path) if out_path else None,
        "labels": {str(i): n for i, n in enumerate(names)},
        "voxels": {n: int(counts[i]) for i, n in enumerate(names)},
        "labels_array": labels,
        "warnings": list(volume.warnings),
    }
