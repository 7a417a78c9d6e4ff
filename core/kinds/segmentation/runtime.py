"""Segmentation inference of an expert on a whole volume, and the exported bundle's entry point.

Bundle-portable (the standard library, numpy, torch, MONAI, and the project's `io` and `preprocess` layers through
relative imports): export copies this file into each segmentation bundle, so `python -m monai.bundle run` on the
bundle gives the same label map as `lorkd apply` and the app. Reading and writing go through the one volume
reader/writer (`io.read_volume`, `io.write_label_map`): same DICOM series, same slice order, the input's exact
geometry, atomic writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ...io import Volume, read_volume, write_label_map
from ...preprocess import applicability
from ...preprocess.sliding import sliding_logits
from ...preprocess.volume import canonical_spacing, prepare_volume, restore_labels

METADATA_FILE = "configs/metadata.json"


def check_3d_volume(volume: Volume, path: str | Path | None = None) -> None:
    """Raise `DataError` (naming `path`, or the volume's source) unless `volume` is what segmentation needs:
    one single-channel 3D volume (not RGB, not a 2D image, not 4D) with finite intensities."""
    where = str(path or volume.metadata.get("source") or "the volume")
    if volume.is_rgb:
        raise DataError(f"{where}: an RGB image; segmentation needs single-channel 3D volumes")
    volumes = int(volume.metadata.get("volumes", "1"))  # recorded by read_volume: a 4D file keeps its first volume
    if volumes > 1:
        raise DataError(f"{where}: a 4D image ({volumes} volumes of {volume.metadata.get('stored_size')}); "
                        f"segmentation needs one 3D volume per file (extract the volume to use)")
    array = np.asarray(volume.array)
    if array.shape[0] == 1:
        raise DataError(f"{where}: a 2D image ({array.shape[1]} x {array.shape[2]}); segmentation needs a 3D volume")
    # NIfTI NaN/Inf are zeroed by the reader, which records how many there were
    bad = int(np.count_nonzero(~np.isfinite(array))) if array.dtype.kind in "fc" else 0
    bad = bad or int(volume.metadata.get("nonfinite_voxels", "0"))
    if bad:
        raise DataError(f"{where}: {bad} voxel{'s are' if bad > 1 else ' is'} NaN or infinite; segmentation needs "
                        f"finite intensities (fill or mask them first)")


def observe_volume(image: torch.Tensor, info: dict, spacing_xyz: Sequence[float], direction: Sequence[float],
                   modality: str | None) -> dict:
    """A volume as the expert sees it (`applicability.observe`): `image` and `info` from `prepare_volume`, the
    file's spacing, direction and modality (None where the file does not record it)."""
    return applicability.observe(
        channels=1, intensity=applicability.intensity_stats(image.numpy()), modality=modality,
        spacing_mm=canonical_spacing(spacing_xyz, info["perm"]), size=info["canonical_shape"], direction=direction)


def segment_array(
    net: torch.nn.Module,
    array_zyx: np.ndarray,
    spacing_xyz: Sequence[float],
    direction: Sequence[float],
    pre: dict,
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
    prepared: tuple[torch.Tensor, dict] | None = None,
) -> np.ndarray:
    """Label map (Z, Y, X) uint8 of a volume, on the input's own voxel grid (`preprocess.volume`).
    `pre`: the bundle's preprocessing block (spacing, intensity, patch_size, overlap, blend); `prepared`:
    `prepare_volume`'s result for this volume when the caller has it already."""
    image, info = prepared or prepare_volume(array_zyx, spacing_xyz, direction, pre)
    logits = sliding_logits(net, image, pre["patch_size"], float(pre.get("overlap", 0.25)),
                            str(pre.get("blend", "gaussian")), progress=progress, check=check)
    return restore_labels(logits, info)


def applicability_warnings(volume: Volume, metadata: dict) -> tuple[list[str], tuple[torch.Tensor, dict]]:
    """(one sentence per way `volume` lies outside the envelope the bundle's `metadata` records, the volume
    prepared for the expert): the check `lorkd apply`, the app and the bundle's entry point all run."""
    lorkd = metadata["lorkd"]
    check_3d_volume(volume)
    prepared = prepare_volume(volume.array, volume.spacing, volume.direction, lorkd["preprocessing"])
    observed = observe_volume(*prepared, volume.spacing, volume.direction, volume.metadata.get("modality") or None)
    return applicability.check(lorkd.get("envelope"), observed), prepared


def segment_volume(
    net: torch.nn.Module,
    volume: Volume,
    pre: dict,
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
    prepared: tuple[torch.Tensor, dict] | None = None,
) -> np.ndarray:
    """uint8 label map (Z, Y, X) of `volume` on its own voxel grid, after checking it is one finite 3D volume."""
    check_3d_volume(volume)
    return segment_array(net, volume.array, volume.spacing, volume.direction, pre, progress=progress, check=check,
                         prepared=prepared)


def segment(
    bundle_root: str | os.PathLike, image_path: str, out_path: str, net: torch.nn.Module
) -> np.ndarray:
    """The bundle's entry point: segment `image_path` (a volume file or a DICOM series folder), write the label
    map to `out_path` (NIfTI, NRRD or MHA) with the input's exact geometry; return the labels."""
    metadata = json.loads((Path(bundle_root) / METADATA_FILE).read_text(encoding="utf-8"))
    pre = metadata["lorkd"]["preprocessing"]
    volume = read_volume(image_path)
    for message in volume.warnings:
        print(f"warning: {' '.join(str(message).split())}")
    outside, prepared = applicability_warnings(volume, metadata)
    for message in outside:
        print(f"warning: outside what the expert was trained on: {message}")
    labels = segment_volume(net, volume, pre, prepared=prepared)
    write_label_map(labels, volume, out_path)
    print(f"wrote {out_path}: labels {sorted(int(v) for v in np.unique(labels))}")
    return labels
