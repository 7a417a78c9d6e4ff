"""`lorkd apply EXPERT IMAGE --out OUT`: score one image with an exported expert bundle.

Same code path and numbers as `python -m monai.bundle run` on the bundle: the network comes from
`load_bundle` (files present, SHA-256 checked, weights_only, strict) and the scoring from
`runtime.classify` (the function the bundle's inference.json calls). `classify_array` scores an image
already in memory (the viewer's slice) through the same `runtime.classify_plane`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import BundleError, DataError, OutsideEnvelope
from core.io import read_volume
from core.kinds.classification import runtime
from core.kinds.classification.bundle import load_bundle


def apply_expert(
    bundle_dir: str | os.PathLike, image_path: str | os.PathLike, out_path: str | os.PathLike | None,
    strict: bool = False,
) -> dict:
    """Score `image_path` with the expert bundle at `bundle_dir`; write `out_path` (.json or .csv).

    Returns the record (image, task, kind, scores {label: p}, prediction, expert, applicability: one sentence per
    way the image lies outside what the expert was trained on, research_use_only, calibration); with `out_path`
    None or empty nothing is written. `strict`: an image outside raises `OutsideEnvelope` before scoring.
    Raises `BundleError` for a missing, incomplete or tampered bundle and `DataError` for a missing or
    unreadable image or an unsupported output extension; every message is one line naming the file.
    """
    if out_path and Path(out_path).suffix.lower() not in runtime.SCORE_SUFFIXES:
        suffix = Path(out_path).suffix
        raise DataError(f"output file {out_path}: unsupported extension {suffix!r} (use .json or .csv)")
    net, metadata = load_bundle(bundle_dir)
    lorkd = metadata["lorkd"]
    if int(lorkd["preprocessing"]["spatial_dims"]) != 2:
        raise BundleError(f"expert bundle {bundle_dir} is 3D; apply scores 2D images only")
    try:
        if not Path(image_path).is_file():
            raise runtime.ImageReadError(f"{image_path}: no such file")
        try:
            volume = read_volume(image_path)
        except DataError as error:
            raise runtime.ImageReadError(runtime.one_line(error)) from error
        image = runtime.scored_plane(volume, image_path)
    except runtime.ImageReadError as error:
        raise DataError(f"cannot read image {runtime.one_line(error)}") from error
    outside = runtime.outside_envelope(image, lorkd, volume.metadata.get("modality") or None)
    if strict and outside:
        raise OutsideEnvelope(str(image_path), outside)
    probs = runtime.classify_plane(net, image, lorkd)
    task = str(lorkd.get("task", {}).get("name", ""))
    notes = runtime.annotations(metadata, outside)
    if out_path:
        return runtime.write_scores(out_path, probs, lorkd["label_names"], lorkd["kind"], image_path, task, notes)
    return {**runtime.scores_record(probs, lorkd["label_names"], lorkd["kind"], image_path, task), **notes}


def classify_array(
    bundle_dir: str | os.PathLike,
    image: np.ndarray,
    *,
    source: str = "<array>",
    progress: Callable[[float, str], None] | None = None,
    modality: str | None = None,
    strict: bool = False,
) -> dict:
    """Score a 2D image in memory with the expert bundle at `bundle_dir`; nothing is written.

    `image`: (H, W) grey or (H, W, 3|4) colour, pixels in display order and in the dtype `load_image` would
    give for the same file (uint8 is divided by 255, anything else min-max scaled between percentiles), so
    the numbers equal `apply_expert` on that file. `source` is recorded as the record's "image".
    `progress(fraction, message)` is called between steps (it may raise to abandon the work).
    `modality`: the image's modality where its file records it (DICOM). Returns `apply_expert`'s record (`strict`:
    an image outside what the expert was trained on raises `OutsideEnvelope`). Raises `BundleError` for a bad or
    3D bundle and `DataError` for an array that is not a 2D image.
    """

    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    step(0.0, "loading the expert")
    net, metadata = load_bundle(bundle_dir)
    lorkd = metadata["lorkd"]
    if int(lorkd["preprocessing"]["spatial_dims"]) != 2:
        raise BundleError(f"expert bundle {bundle_dir} is 3D; classify_array scores 2D images only")
    try:
        plane = runtime._check_plane(np.asarray(image), Path(source))
    except runtime.ImageReadError as error:
        raise DataError(f"cannot score image {runtime.one_line(error)}") from error
    outside = runtime.outside_envelope(plane, lorkd, modality)
    if strict and outside:
        raise OutsideEnvelope(source, outside)
    step(0.5, "scoring")
    probs = runtime.classify_plane(net, plane, lorkd)
    step(1.0, "done")
    task = str(lorkd.get("task", {}).get("name", ""))
    return {**runtime.scores_record(probs, lorkd["label_names"], lorkd["kind"], source, task),
            **runtime.annotations(metadata, outside)}
