"""`lorkd apply EXPERT IMAGE --out OUT`: score one image with an exported expert bundle.

Same code path and numbers as `python -m monai.bundle run` on the bundle: the network comes from
`load_bundle` (files present, SHA-256 checked, weights_only, strict) and the scoring from
`runtime.classify` (the function the bundle's inference.json calls).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import BundleError, DataError
from core.export.bundle import load_bundle
from core.infer import runtime


def apply_expert(
    bundle_dir: str | os.PathLike, image_path: str | os.PathLike, out_path: str | os.PathLike | None
) -> dict:
    """Score `image_path` with the expert bundle at `bundle_dir`; write `out_path` (.json or .csv).

    Returns the record (image, task, kind, scores {label: p}, prediction); with `out_path` None or empty
    nothing is written. Raises `BundleError` for a missing, incomplete or tampered bundle and `DataError`
    for a missing or unreadable image or an unsupported output extension; every message is one line
    naming the file.
    """
    if out_path and Path(out_path).suffix.lower() not in runtime.SCORE_SUFFIXES:
        suffix = Path(out_path).suffix
        raise DataError(f"output file {out_path}: unsupported extension {suffix!r} (use .json or .csv)")
    net, metadata = load_bundle(bundle_dir)
    if int(metadata["lorkd"]["preprocessing"]["spatial_dims"]) != 2:
        raise BundleError(f"expert bundle {bundle_dir} is 3D; apply scores 2D images only")
    try:
        return runtime.classify(bundle_dir, image_path, out_path or None, net=net, echo=False)
    except runtime.ImageReadError as error:
        raise DataError(f"cannot read image {runtime._one_line(error)}") from error
