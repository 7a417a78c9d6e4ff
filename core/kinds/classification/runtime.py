"""Classification inference of an expert on one 2D image, score files, and the exported bundle's entry point.

Bundle-portable (the standard library, numpy, torch, MONAI, and the project's `preprocess` and `export.weights`
modules through relative imports; Pillow, nibabel and pydicom inside the readers that need them): export copies
this file into each classification bundle, so `python -m monai.bundle run` on the bundle gives the same scores as
`lorkd apply` and the app.
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

from ...export.weights import load_weights, one_line, read_bundle_metadata
from ...files import write_text_atomic
from ...preprocess.image import prepare

KINDS = ("multiclass", "multilabel")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SCORE_SUFFIXES = (".json", ".csv")
MULTILABEL_THRESHOLD = 0.5


class ImageReadError(ValueError):
    """A file that `load_image` cannot turn into a 2D image; the message names the file."""




def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


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


def _read_pil(path: Path) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError as error:  # pragma: no cover - Pillow is a dependency of the app
        raise ImageReadError(
            f"{path}: reading {path.suffix} files needs Pillow (pip install pillow)"
        ) from error
    try:
        with Image.open(path) as img:
            img.seek(0)  # multi-page TIFF: the first page
            img = ImageOps.exif_transpose(img)  # JPEG/TIFF orientation tag: pixels as displayed
            if img.mode in ("1", "LA", "La"):
                img = img.convert("L")
            elif img.mode in ("P", "PA"):
                img = img.convert("RGBA")
            elif img.mode not in ("L", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
                img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
            array = np.array(img)
    except (OSError, ValueError, SyntaxError) as error:  # PIL.UnidentifiedImageError is an OSError
        raise ImageReadError(f"{path}: not a readable image ({one_line(error)})") from error
    return array


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable .npy array ({one_line(error)})") from error
    if not isinstance(array, np.ndarray):
        raise ImageReadError(f"{path}: expected one array, found an archive")
    if array.ndim == 3 and array.shape[0] == 1:  # (1, H, W): a single image with a leading axis
        array = array[0]
    return array


def _axial_display(volume: np.ndarray) -> np.ndarray:
    """RAS-ordered (x, y, z[, rgb]) data -> the plane as a DICOM viewer displays it.

    A single-slice volume gives that slice (axial, coronal or sagittal); a real volume gives its middle
    axial slice. Rows run anterior->posterior (superior->inferior for coronal/sagittal planes) and columns
    run from the patient's right to left (anterior->posterior for sagittal): the radiological convention of
    DICOM's LPS pixel grid, so a NIfTI converted from a DICOM slice reads back as that slice.
    """
    x, y, z = volume.shape[:3]
    if z == 1 or (x > 1 and y > 1 and z > 1):
        plane = volume[:, :, z // 2]  # (x, y)
        return np.swapaxes(plane[::-1, ::-1], 0, 1)  # rows: A->P, columns: R->L
    if y == 1:  # coronal
        plane = volume[:, 0, :]  # (x, z)
        return np.swapaxes(plane[::-1, ::-1], 0, 1)  # rows: S->I, columns: R->L
    plane = volume[0, :, :]  # sagittal (y, z)
    return np.swapaxes(plane[::-1, ::-1], 0, 1)  # rows: S->I, columns: A->P


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel as nib
    except ImportError as error:  # pragma: no cover - nibabel is a dependency of the app
        raise ImageReadError(f"{path}: reading NIfTI files needs nibabel (pip install nibabel)") from error
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = img.affine
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib errors, ...)
        raise ImageReadError(f"{path}: not a readable NIfTI file ({one_line(error)})") from error
    if data.dtype.names:  # RGB24 / RGBA32 NIfTI: structured dtype with one field per colour
        data = np.stack([data[name] for name in data.dtype.names[:3]], axis=-1)
        rgb = True
    else:
        rgb = False
    spatial = data.shape[:-1] if rgb else data.shape
    extra = spatial[3:]
    if any(n != 1 for n in extra):
        raise ImageReadError(
            f"{path}: a {len(spatial)}D NIfTI with shape {spatial}; expected a 2D image or a volume"
        )
    data = data.reshape(spatial[:3] + (1,) * (3 - len(spatial[:3])) + data.shape[len(spatial) :])
    if data.ndim - int(rgb) != 3:
        raise ImageReadError(f"{path}: unexpected NIfTI data shape {data.shape}")
    ornt = nib.orientations.io_orientation(affine[:4, :4] if affine is not None else np.eye(4))
    if np.isnan(ornt).any():  # degenerate affine (a zero axis): keep the voxel order
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    data = nib.orientations.apply_orientation(data, ornt)  # voxel axes -> RAS (a colour axis stays last)
    if min(data.shape[:3]) > 1:
        warnings.warn(
            f"{path} is a 3D volume {data.shape[:3]}: classifying its middle axial slice", stacklevel=3
        )
    return _axial_display(data)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as error:  # pragma: no cover - pydicom is a dependency of the app
        raise ImageReadError(f"{path}: reading DICOM files needs pydicom (pip install pydicom)") from error
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as error:
        raise ImageReadError(f"{path}: not a DICOM file and not a known image format") from error
    except Exception as error:  # truncated files raise EOFError, OSError, struct.error, ...
        raise ImageReadError(f"{path}: unreadable DICOM file ({one_line(error)})") from error
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = ds.get("SOPClassUID")
        kind = getattr(kind, "name", kind) or "unknown SOP class"
        raise ImageReadError(f"{path}: DICOM file without pixel data ({kind})")
    try:
        pixels = ds.pixel_array
    except Exception as error:  # missing decoder plugins, truncated pixel data, ...
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({one_line(error)})") from error
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    colour = ds.get("SamplesPerPixel", 1) == 3 or photometric == "PALETTE COLOR"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:  # (frames, rows, cols[, 3]): the middle frame
        warnings.warn(f"{path} has {frames} frames: classifying the middle one", stacklevel=3)
        pixels = pixels[frames // 2]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
        if pixels.dtype != np.uint8:  # 16-bit palettes: keep 8 bits like the other colour images
            pixels = (pixels >> 8).astype(np.uint8)
    elif colour and photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
        from pydicom.pixels import convert_color_space  # pydicom >= 3 converts in pixel_array

        pixels = convert_color_space(pixels, photometric, "RGB")
    if not colour:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1.0 or intercept != 0.0:
            if slope == 1.0 and intercept.is_integer():
                pixels = pixels.astype(np.int32) + int(intercept)
            else:
                pixels = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if photometric == "MONOCHROME1":  # low values are displayed white: invert
            if pixels.dtype == np.uint8:
                pixels = np.uint8(255) - pixels
            else:
                pixels = pixels.max() + pixels.min() - pixels
    return pixels


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2D image as a numpy array, pixels in display order (row 0 at the top; never transposed).

    Returns (H, W) for grey images or (H, W, 3) for colour, in the file's own dtype where that is
    meaningful (uint8 stays uint8, so `prepare` divides it by 255; anything else is min-max scaled there).

    - PNG, JPEG, BMP, TIFF (Pillow): grey modes give (H, W), colour (H, W, 3); alpha is dropped; palette
      images become RGB; 16-bit grey stays 16-bit; the EXIF orientation tag is applied; a multi-page
      TIFF gives its first page.
    - `.npy`: an (H, W), (H, W, 3) or (1, H, W) array (no pickles).
    - NIfTI `.nii` / `.nii.gz` (nibabel): the data are reoriented through the affine to RAS and shown
      the way a DICOM viewer shows them (rows anterior->posterior, columns patient right->left), so a
      NIfTI converted from a DICOM slice reads back equal to that slice. A 2D or single-slice file gives
      its slice; a real 3D volume gives its MIDDLE AXIAL SLICE (a `UserWarning` says so) - use a 3D
      expert for whole volumes.
    - DICOM (`.dcm`, `.ima`, `.dicom` or any other name that pydicom reads): RescaleSlope/Intercept
      applied (e.g. CT in HU), MONOCHROME1 inverted so that bright means dense, YBR converted to RGB,
      PALETTE COLOR expanded to RGB; a multi-frame file gives its middle frame (with a `UserWarning`).
      VOI LUT / window settings are NOT applied: `prepare` scales each image between its percentiles.

    Raises `ImageReadError` (a `ValueError`) naming the file when it is missing, not an image, or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in PIL_SUFFIXES:
        image = _read_pil(path)
    elif suffix == ".npy":
        image = _read_npy(path)
    elif suffix in NIFTI_SUFFIXES:
        image = _read_nifti(path)
    else:  # .dcm or a DICOM file without an extension; anything else fails with a clear message
        image = _read_dicom(path)
    return _check_plane(np.asarray(image), path)


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
) -> dict:
    """Write one image's scores to `path` and return the record (see `scores_record`).

    `.json`: `{"image", "task", "kind", "scores": {label: p}, "prediction"}`.
    `.csv`: a header `image,task,kind,prediction,<label 1>,...` and one row; a multilabel prediction is
    the predicted labels joined by ";". Other extensions raise ValueError. Parent folders are created.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise ValueError(f"{path}: unsupported output extension {path.suffix!r} (use .json or .csv)")
    record = scores_record(probs, label_names, kind, image_path, task)
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
    probs = classify_plane(net, load_image(image_path), lorkd)
    task = str(lorkd.get("task", {}).get("name", ""))
    if out_path:
        return write_scores(out_path, probs, lorkd["label_names"], lorkd["kind"], image_path, task)
    record = scores_record(probs, lorkd["label_names"], lorkd["kind"], image_path, task)
    if echo:
        print(json.dumps(record, indent=2))
    return record
