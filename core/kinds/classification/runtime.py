"""Classification inference of an expert on one 2D image, score files, and the exported bundle's entry point.

Bundle-portable (the standard library, numpy, torch, MONAI, and the project's `errors`, `io`, `preprocess` and
`export.weights` modules through relative imports): export copies this file into each classification bundle, so
`python -m monai.bundle run` on the bundle gives the same scores as `lorkd apply` and the app. Images are read by
the one reader, `io.read_volume`, and `io.display_plane` takes the plane that is scored: the same pixels as the
app's viewer shows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ...export.weights import load_weights, one_line, read_bundle_metadata
from ...files import write_text_atomic
from ...io import Volume, display_plane, read_volume
from ...preprocess import applicability
from ...preprocess.image import intensity_to_unit, prepare

KINDS = ("multiclass", "multilabel")
SCORE_SUFFIXES = (".json", ".csv")
MULTILABEL_THRESHOLD = 0.5


class ImageReadError(ValueError):
    """A file that `load_image` cannot turn into a 2D image; the message names the file."""


def _check_plane(image: np.ndarray, path: Path) -> np.ndarray:
    """Accept (H, W) or (H, W, 3|4) with H, W > 1; drop an alpha channel; refuse everything else."""
    if image.dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * np.uint8(255)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or min(image.shape[:2]) < 2:
        raise ImageReadError(
            f"{path}: expected a 2D image of shape (H, W) or (H, W, 3), got an array of shape {image.shape}"
        )
    return np.ascontiguousarray(image)


def scored_plane(volume: Volume, path: str | os.PathLike) -> np.ndarray:
    """The 2D image an expert scores from `volume` (read from `path`): `io.display_plane`, i.e. the single slice
    of a 2D image or one-slice volume, else the middle axial slice (a `UserWarning` says so), in radiological
    display order; checked to be (H, W) or (H, W, 3). A 4D file raises `ImageReadError`."""
    path = Path(path)
    volumes = int(volume.metadata.get("volumes", "1"))  # read_volume keeps the first volume of a 4D file
    if volumes > 1:
        raise ImageReadError(f"{path}: a 4D image ({volumes} volumes of {volume.metadata.get('stored_size')}); "
                             f"expected a 2D image or a volume")
    if min(volume.shape_xyz) > 1:
        if volume.metadata.get("series_uid"):  # a multi-frame DICOM file
            message = f"{path} has {volume.array.shape[0]} frames: classifying the middle one"
        else:
            message = f"{path} is a 3D volume {volume.shape_xyz}: classifying its middle axial slice"
        warnings.warn(message, stacklevel=3)
    plane = display_plane(volume)
    if volume.metadata.get("stored_dtype") == "bool":  # read_volume stores bool as 0/1; an image is 0/255
        plane = plane.astype(bool)
    return _check_plane(plane, path)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2D image as a numpy array, pixels in display order (row 0 at the top; never transposed).

    Returns (H, W) for grey images or (H, W, 3) for colour, in the file's own dtype where that is
    meaningful (uint8 stays uint8, so `prepare` divides it by 255; anything else is min-max scaled there).
    The file is read by `io.read_volume` (every format it reads) and the plane taken by `scored_plane`:

    - PNG, JPEG, BMP, TIFF (Pillow): grey modes give (H, W), colour (H, W, 3); alpha is dropped; palette
      images become RGB; 16-bit grey stays 16-bit; the EXIF orientation tag is applied; a multi-page
      TIFF gives its first page.
    - `.npy`: an (H, W), (H, W, 1), (H, W, 3) or (1, H, W) array (no pickles); a (Z, H, W) array is a volume.
    - NIfTI, NRRD, MetaImage and DICOM files are shown the way a DICOM viewer shows them (rows
      anterior->posterior, columns patient right->left; a single coronal or sagittal slice with superior at
      the top), so a NIfTI converted from a DICOM slice reads back equal to that slice. A 3D volume gives its
      MIDDLE AXIAL SLICE and a multi-frame DICOM its middle frame (a `UserWarning` says so) - use a 3D expert
      for whole volumes.
    - DICOM (`.dcm`, `.ima`, `.dicom`, no extension, or any name with DICOM content): RescaleSlope/Intercept
      applied (e.g. CT in HU), MONOCHROME1 inverted so that bright means dense, YBR converted to RGB, PALETTE
      COLOR expanded to RGB. VOI LUT / window settings are NOT applied: `prepare` scales each image between its
      percentiles.

    Raises `ImageReadError` (a `ValueError`) naming the file when it is missing, not an image, or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        volume = read_volume(path)
    except DataError as error:
        raise ImageReadError(one_line(error)) from error
    return scored_plane(volume, path)


def predict(net: torch.nn.Module, batch: torch.Tensor, kind: str) -> np.ndarray:
    """Class probabilities (N, C) as float32: softmax over classes for "multiclass", an independent sigmoid
    per label for "multilabel". Puts `net` in eval mode and runs without gradients on the net's device."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    net.eval()
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad():
        logits = net(batch.to(device)).float()
        probs = torch.softmax(logits, dim=1) if kind == "multiclass" else torch.sigmoid(logits)
    return probs.cpu().numpy()


def scores_record(
    probs: np.ndarray, label_names: list[str], kind: str, image_path: str | os.PathLike, task: str = ""
) -> dict:
    """The result of one image as a dict: image, task, kind, scores {label: p} and prediction (the top
    label for multiclass; the list of labels with p >= threshold for multilabel, with "threshold": 0.5)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if p.size != len(label_names):
        raise ValueError(f"{p.size} scores for {len(label_names)} labels")
    scores = {str(name): float(v) for name, v in zip(label_names, p, strict=True)}
    if kind == "multiclass":
        prediction: str | list[str] = str(label_names[int(np.argmax(p))])
    else:
        prediction = [str(name) for name, v in zip(label_names, p, strict=True) if v >= MULTILABEL_THRESHOLD]
    record = {"image": str(image_path), "task": task, "kind": kind, "scores": scores, "prediction": prediction}
    if kind == "multilabel":
        record["threshold"] = MULTILABEL_THRESHOLD
    return record


def write_scores(
    path: str | os.PathLike,
    probs: np.ndarray,
    label_names: list[str],
    kind: str,
    image_path: str | os.PathLike,
    task: str = "",
    notes: dict | None = None,
) -> dict:
    """Write one image's scores to `path` and return the record (see `scores_record`), with `notes` (`annotations`:
    expert, applicability, research use, calibration) added.

    `.json`: `{"image", "task", "kind", "scores": {label: p}, "prediction", ...notes}`.
    `.csv`: a header `image,task,kind,prediction,<label 1>,...` and one row; a multilabel prediction is
    the predicted labels joined by ";". Other extensions raise ValueError. Parent folders are created.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise ValueError(f"{path}: unsupported output extension {path.suffix!r} (use .json or .csv)")
    record = {**scores_record(probs, label_names, kind, image_path, task), **(notes or {})}
    if suffix == ".json":
        write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    else:
        prediction = record["prediction"]
        shown = prediction if isinstance(prediction, str) else ";".join(prediction)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["image", "task", "kind", "prediction", *record["scores"]])
        writer.writerow([record["image"], task, kind, shown, *(repr(v) for v in record["scores"].values())])
        write_text_atomic(path, text.getvalue())
    return record










def observe_plane(image: np.ndarray, modality: str | None = None) -> dict:
    """A 2D image (H, W) or (H, W, 3) as `load_image` returns it, as the expert sees it
    (`applicability.observe`): its channels and size, intensity statistics after `prepare`'s intensity scaling
    (colour kept; at the image's own size: resizing would cost more than the scoring and barely move them)."""
    image = np.asarray(image)
    unit = intensity_to_unit(image[None])[0]
    rgb = image.ndim == 3
    return applicability.observe(channels=3 if rgb else 1, size=image.shape[:2], modality=modality,
                                 intensity=applicability.intensity_stats(unit, channel_axis=-1 if rgb else None))


def outside_envelope(image: np.ndarray, lorkd: dict, modality: str | None = None) -> list[str]:
    """One sentence per way `image` lies outside what the expert was trained on (its bundle's envelope)."""
    observed = observe_plane(image, modality)
    return applicability.check(lorkd.get("envelope"), observed)


CALIBRATION = ("probabilities are the network's softmax/sigmoid outputs, not calibrated risks: a high value is "
               "no guarantee, least of all on inputs unlike the training data")


def annotations(metadata: dict, outside: list[str]) -> dict:
    """What a reader of a result must know beside the scores: which expert gave them, how the input lies outside
    what it was trained on (`outside_envelope`), research use only, the probabilities' caveat."""
    return {"expert": str(metadata.get("name", "")), "applicability": list(outside), "research_use_only": True,
            "calibration": CALIBRATION}


def classify_plane(net: torch.nn.Module, image: np.ndarray, lorkd: dict) -> np.ndarray:
    """Probabilities (C,) of one 2D image (H, W) or (H, W, 3) as `load_image` returns it, preprocessed as the
    bundle's `lorkd` metadata block records (the one scoring path of `classify` and the app's viewer)."""
    pre = lorkd["preprocessing"]
    batch = prepare(np.asarray(image)[None], int(pre["image_size"]), int(pre["in_channels"]), 2)
    return predict(net, batch, lorkd["kind"])[0]


def classify(
    bundle_root: str | os.PathLike,
    image_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    net: torch.nn.Module | None = None,
    echo: bool = True,
) -> dict:
    """Score one 2D image with an expert bundle: the function the bundle's `configs/inference.json` runs.

    `net` is the expert with its weights loaded (inference.json passes its `network`; `lorkd apply` passes
    the network from `load_bundle`); when None it is built from the bundle's `scripts/lorkd_nets.py` and
    `models/model.pt`. The preprocessing, labels and kind come from `configs/metadata.json`.
    Writes the scores to `out_path` (`.json` or `.csv`, see `write_scores`) or, when `out_path` is empty
    and `echo` is true, prints them as JSON. Returns the record. A bad image raises `ImageReadError`.
    """
    root = Path(bundle_root)
    if not str(image_path):
        raise ValueError("no image given (pass --image PATH)")
    metadata = read_bundle_metadata(root)
    lorkd = metadata["lorkd"]
    pre = lorkd["preprocessing"]
    if int(pre["spatial_dims"]) != 2:
        raise ValueError(f"{root}: a {pre['spatial_dims']}D expert; classify handles 2D images only")
    if net is None:
        from .nets import ClassifierNet

        net = load_weights(ClassifierNet(**lorkd["network"]), root)
    image = load_image(image_path)
    outside = outside_envelope(image, lorkd)
    if echo:  # the bundle's entry point (`lorkd apply` reports them itself)
        for message in outside:
            print(f"warning: outside what the expert was trained on: {message}")
    probs = classify_plane(net, image, lorkd)
    task = str(lorkd.get("task", {}).get("name", ""))
    notes = annotations(metadata, outside)
    if out_path:
        return write_scores(out_path, probs, lorkd["label_names"], lorkd["kind"], image_path, task, notes)
    record = {**scores_record(probs, lorkd["label_names"], lorkd["kind"], image_path, task), **notes}
    if echo:
        print(json.dumps(record, indent=2))
    return record
