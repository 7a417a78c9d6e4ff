"""2D images (PNG, JPEG, BMP, TIFF through Pillow) and NumPy `.npy` arrays as one-slice (or, for `.npy`, plain) volumes.

Neither format has a geometry: the volume gets 1 mm spacing, the origin at 0 and the identity direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .volume import Volume

IMAGE_2D = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_2d_image(p: Path) -> Volume:
    """A PNG/JPEG/BMP/TIFF file as a one-slice volume: EXIF orientation applied, grey modes (L, 16-bit, 32-bit,
    float) kept, palette and other colour modes as RGB, the alpha channel and further animation frames or TIFF
    pages dropped (with a warning)."""
    from PIL import Image, ImageOps

    warnings: list[str] = []
    try:
        with Image.open(p) as im:
            if getattr(im, "n_frames", 1) > 1:
                what = "multi-page" if im.format == "TIFF" else "animated"
                warnings.append(f"{p}: {what} image, first of {im.n_frames} frames read")
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info):
                warnings.append(f"{p}: alpha channel dropped")
            if mode in ("1", "LA", "La"):
                im = im.convert("L")
            elif mode not in ("L", "I", "F", "RGB") and not mode.startswith("I;16"):
                im = im.convert("RGB")
            array = np.asarray(im)
    except Image.DecompressionBombError:
        raise DataError(f"{p}: the image claims more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels (a damaged or "
                        "malicious file, far larger than a 2D medical image); not decoded") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{p}: unreadable or truncated image ({exc})") from None
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return Volume(np.ascontiguousarray(array)[None], metadata={"source": str(p)}, warnings=warnings)


def read_npy(p: Path) -> Volume:
    """A `.npy` array (no pickles) as a volume: (Y, X), (Y, X, 1) and (Y, X, 3|4) are one slice (alpha dropped
    with a warning), (Z, Y, X) a volume without geometry (with a warning); bool becomes uint8 (metadata
    `stored_dtype` says so) and float16 float32."""
    try:
        array = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{p}: unreadable .npy file ({exc})") from None
    warnings: list[str] = []
    metadata = {"source": str(p)}
    if array.dtype == np.bool_:
        metadata["stored_dtype"] = "bool"
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind not in "iuf":
        raise DataError(f"{p}: .npy array of dtype {array.dtype} is not an image (need numbers)")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] == 1:  # (Y, X, 1) grey image with a channel axis
        array = array[None, ..., 0]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):  # (Y, X, 3) RGB / RGBA photo
        if array.shape[-1] == 4:
            warnings.append(f"{p}: alpha channel dropped")
        array = array[None, ..., :3]
    elif array.ndim == 3:
        warnings.append(f"{p}: .npy volume has no geometry; read as (Z, Y, X) with 1 mm spacing")
    elif not (array.ndim == 4 and array.shape[-1] == 3):
        raise DataError(f"{p}: .npy array of shape {array.shape} is not an image ((Y, X), (Y, X, 3) or (Z, Y, X))")
    return Volume(np.ascontiguousarray(array), metadata=metadata, warnings=warnings)
