"""DICOM: scan a folder, plan each series (which files, in which physical order, with which geometry), read it.

A folder may hold several series, non-image objects (reports, plans, DICOMDIRs) and files that are not DICOM at
all. `list_series` and `read_volume` see the same plan: one consistent stack per series (same size, samples and
orientation), one slice per position, slices sorted along the slice normal, the geometry from Image Position /
Orientation (Patient). The planned files, in that order, are read by one SimpleITK `ImageSeriesReader` (GDCM;
pydicom when GDCM cannot decode them) and given the planned geometry; a single file (a slice or a multi-frame
image) is read with the geometry GDCM finds in it. Recoverable oddities (several series, non-uniform spacing,
gantry tilt, repeated positions) become warnings; files that cannot be read raise `DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings as _pywarnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import DataError
from .sniff import head, sniff
from .volume import IDENTITY, Volume

DICOM_EXTS = ("", ".dcm", ".dicom", ".ima")
# files a folder scan never opens as DICOM
_NOT_DICOM_EXTS = {
    ".nii", ".gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".raw", ".zraw", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
    ".tif", ".tiff", ".npy", ".npz", ".txt", ".md", ".json", ".csv", ".xml", ".html", ".htm", ".pdf", ".zip", ".py",
    ".yaml", ".yml", ".pt", ".pth", ".log", ".dump", ".icc", ".ini", ".exe", ".dll", ".so",
}
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


@dataclass
class SeriesInfo:
    """One DICOM image series in a folder. `size`/`spacing` are (x, y, z) as `read_volume` will give them, and
    `files` are the files it will read, in physical slice order."""

    uid: str
    description: str
    modality: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    files: list[str]


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM image series under `folder` (recursive), sorted by description then uid; [] if none."""
    p = Path(folder).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such folder")
    if not p.is_dir():
        raise DataError(f"{p}: not a folder (list_series lists the DICOM series in a folder)")
    series, _ = _scan_dicom_folder(p)
    infos = [_plan_series(uid, slices, p).info for uid, slices in series.items()]
    return sorted(infos, key=lambda s: (s.description.lower(), s.uid))


@dataclass
class _Slice:
    path: str
    series_uid: str
    sop_class: str
    sop_name: str
    modality: str
    description: str
    rows: int
    cols: int
    frames: int
    samples: int
    bits: int  # BitsAllocated
    bits_stored: int
    signed: bool  # PixelRepresentation 1
    photometric: str  # PhotometricInterpretation
    has_pixels: bool
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None  # (row spacing = y, column spacing = x)
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness
    instance: int
    slope: float
    intercept: float
    dose_scaling: float | None
    extra: dict[str, str]

    @property
    def colour(self) -> bool:
        """RGB pixels once read (palette colour images are expanded through their lookup table)."""
        return self.samples > 1 or self.photometric == "PALETTE COLOR"


def _ds_float(ds: Any, keyword: str) -> float | None:
    """First value of a numeric attribute as float (multi-valued ones give their first), None if absent/bad."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__"):
            value = value[0]
        value = float(value)
        return value if math.isfinite(value) else None
    except (TypeError, ValueError, IndexError):
        return None


def _ds_floats(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    try:
        value = ds.get(keyword)
        if value is None:
            return None
        arr = np.array([float(v) for v in value], dtype=float)
        return arr if arr.size == n and np.all(np.isfinite(arr)) else None
    except (TypeError, ValueError):
        return None


def _ds_str(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom raises on some malformed values
        return ""
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _read_slice(path: Path, force: bool) -> _Slice | None:
    """Header facts of one DICOM file (pixel data not loaded), or None if it is not DICOM."""
    import pydicom

    with _pywarnings.catch_warnings():
        _pywarnings.simplefilter("ignore")  # pydicom warns about every odd value in foreign files
        try:
            ds = pydicom.dcmread(path, defer_size=1024, force=force)
            return _slice_from_header(path, ds)
        except Exception:  # pydicom raises many types on foreign or malformed files
            return None


def _slice_from_header(path: Path, ds: Any) -> _Slice | None:
    sop_uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    sop = str(sop_uid or "").strip()
    rows = int(_ds_float(ds, "Rows") or 0)
    cols = int(_ds_float(ds, "Columns") or 0)
    if not sop and not (rows and cols) and not _ds_str(ds, "Modality"):
        return None  # force-parsed junk
    sop_name = getattr(sop_uid, "name", "") if sop else ""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    extra = {}
    for key, keyword in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = _ds_float(ds, keyword)
        if value is not None:
            extra[key] = f"{value:g}"
    for key, keyword in (("patient_id", "PatientID"), ("study_date", "StudyDate"),
                         ("study_description", "StudyDescription"), ("series_number", "SeriesNumber")):
        value = _ds_str(ds, keyword)
        if value:
            extra[key] = value
    ps = _ds_floats(ds, "PixelSpacing", 2)
    if ps is None:
        ps = _ds_floats(ds, "ImagerPixelSpacing", 2)
    step = _ds_float(ds, "SpacingBetweenSlices") or _ds_float(ds, "SliceThickness")
    return _Slice(
        path=str(path),
        series_uid=_ds_str(ds, "SeriesInstanceUID"),
        sop_class=sop,
        sop_name=str(sop_name or sop or "unknown SOP class"),
        modality=_ds_str(ds, "Modality"),
        description=_ds_str(ds, "SeriesDescription"),
        rows=rows,
        cols=cols,
        frames=max(int(_ds_float(ds, "NumberOfFrames") or 1), 1),
        samples=max(int(_ds_float(ds, "SamplesPerPixel") or 1), 1),
        bits=int(_ds_float(ds, "BitsAllocated") or 16),
        bits_stored=int(_ds_float(ds, "BitsStored") or _ds_float(ds, "BitsAllocated") or 16),
        signed=_ds_float(ds, "PixelRepresentation") == 1,
        photometric=_ds_str(ds, "PhotometricInterpretation").upper() or "MONOCHROME2",
        has_pixels=has_pixels,
        ipp=_ds_floats(ds, "ImagePositionPatient", 3),
        iop=_ds_floats(ds, "ImageOrientationPatient", 6),
        pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None and np.all(ps > 0) else None,
        slice_step=step if step and step > 0 else None,
        instance=int(_ds_float(ds, "InstanceNumber") or 0),
        slope=_ds_float(ds, "RescaleSlope") or 1.0,
        intercept=_ds_float(ds, "RescaleIntercept") or 0.0,
        dose_scaling=_ds_float(ds, "DoseGridScaling"),
        extra=extra,
    )


def _scan_dicom_folder(folder: Path) -> tuple[dict[str, list[_Slice]], list[_Slice]]:
    """Image slices grouped by series uid, and the non-image DICOM objects found (DICOMDIRs excluded)."""
    series: dict[str, list[_Slice]] = {}
    non_images: list[_Slice] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() in _NOT_DICOM_EXTS:
                continue
            path = Path(root) / name
            try:
                if path.stat().st_size < 132:
                    continue
                has_magic = head(path, 132)[128:132] == b"DICM"
            except OSError:
                continue
            suffix = Path(name).suffix.lower()
            if not has_magic and suffix not in DICOM_EXTS and not suffix[1:].isdigit():
                continue
            sl = _read_slice(path, force=not has_magic)
            if sl is None or sl.sop_class == _DICOMDIR_SOP or name.upper().startswith("DICOMDIR"):
                continue
            if sl.has_pixels and sl.rows and sl.cols:
                series.setdefault(sl.series_uid, []).append(sl)
            else:
                non_images.append(sl)
    return series, non_images


@dataclass
class _Plan:
    info: SeriesInfo
    slices: list[_Slice]
    geometry: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None  # spacing, origin, direction
    warnings: list[str]


def _plan_series(uid: str, slices: list[_Slice], folder: Path) -> _Plan:
    """Choose the slices of a series to read, their physical order and the volume geometry (no pixels read)."""
    first = slices[0]
    label = f"series '{first.description or uid}' in {folder}"
    warnings: list[str] = []
    # one consistent stack: same size, samples and orientation
    groups: dict[tuple, list[_Slice]] = {}
    for sl in slices:
        iop_key = tuple(np.round(sl.iop, 4)) if sl.iop is not None else None
        groups.setdefault((sl.rows, sl.cols, sl.samples, iop_key), []).append(sl)
    chosen = max(groups.values(), key=lambda g: (sum(s.frames for s in g), -slices.index(g[0])))
    if len(groups) > 1:
        warnings.append(
            f"{label} mixes {len(groups)} image sizes/orientations; read the largest consistent group "
            f"({_slices(len(chosen))}), {_slices(len(slices) - len(chosen))} skipped"
        )
    chosen = sorted(chosen, key=lambda s: (s.instance, s.path))
    multi = [s for s in chosen if s.frames > 1]
    if multi and len(chosen) > 1:
        chosen = [multi[0]]
        warnings.append(f"{label} has several multi-frame files; read only {multi[0].path}")
    ref = chosen[0]
    ps_y, ps_x = ref.pixel_spacing or (1.0, 1.0)
    if len(chosen) == 1:  # single (possibly multi-frame) file: ITK/GDCM reads its geometry
        info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, ref.frames),
                          (ps_x, ps_y, ref.slice_step or 1.0), [ref.path])
        return _Plan(info, chosen, None, warnings)
    if any(s.ipp is None or s.iop is None for s in chosen):
        warnings.append(f"{label} has no ImagePositionPatient/ImageOrientationPatient: slices stacked by instance "
                        f"number, geometry approximate")
        spacing = (ps_x, ps_y, ref.slice_step or 1.0)
        info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, len(chosen)), spacing,
                          [s.path for s in chosen])
        return _Plan(info, chosen, (spacing, (0.0, 0.0, 0.0), IDENTITY), warnings)
    row = ref.iop[:3] / np.linalg.norm(ref.iop[:3])
    col = ref.iop[3:] - row * float(row @ ref.iop[3:])
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    chosen = sorted(chosen, key=lambda s: (float(s.ipp @ normal), s.instance, s.path))
    proj = np.array([float(s.ipp @ normal) for s in chosen])
    keep = [0]
    for i in range(1, len(chosen)):
        if proj[i] - proj[keep[-1]] > 1e-3:
            keep.append(i)
    if len(keep) < len(chosen):  # sorted by (position, instance): the lowest instance number at each position
        warnings.append(f"{label}: {len(chosen) - len(keep)} slices share a position with another slice (several "
                        f"acquisitions or echoes?); kept one per position")
        chosen = [chosen[i] for i in keep]
        proj = proj[keep]
    if len(chosen) == 1:
        step = ref.slice_step or 1.0
    else:
        step = float(proj[-1] - proj[0]) / (len(chosen) - 1)
        gaps = np.diff(proj)
        if gaps.max() - gaps.min() > max(0.01, 0.01 * step):
            # a regular grid of the mean step puts slice k at proj[0] + k * step: how far from where it was scanned
            off = float(np.abs(proj - (proj[0] + step * np.arange(len(proj)))).max())
            if off > 0.5 * step:  # a slice would sit nearer another slice's place than its own: refuse, never regrid
                worst = int(np.argmax(np.abs(gaps - np.median(gaps))))
                raise DataError(
                    f"{label}: irregular slice gaps ({gaps.min():.4g} to {gaps.max():.4g} mm; {gaps[worst]:.4g} mm "
                    f"between slices {worst + 1} and {worst + 2} of {len(proj)}): on a regular grid slices would be "
                    f"placed up to {off:.4g} mm from their scanned positions; read the contiguous part of the series "
                    f"(copy those files to their own folder)"
                )
            warnings.append(
                f"{label}: non-uniform slice spacing (gaps {gaps.min():.4g} to {gaps.max():.4g} mm); the volume "
                f"uses the mean {step:.4g} mm, so slices are placed up to {off:.3g} mm from their scanned positions"
            )
        span = chosen[-1].ipp - chosen[0].ipp
        along = float(span @ normal)
        lateral = float(np.linalg.norm(span - along * normal))
        tilt = math.degrees(math.atan2(lateral, abs(along)))
        if tilt > 0.05:
            warnings.append(
                f"{label}: gantry tilt of {tilt:.2f} degrees (sheared slices); the volume stacks them along the slice "
                f"normal, so in-plane positions drift by up to {lateral:.3g} mm"
            )
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())
    spacing = (ps_x, ps_y, step)
    origin = tuple(float(v) for v in chosen[0].ipp)
    info = SeriesInfo(uid, ref.description, ref.modality, (ref.cols, ref.rows, len(chosen)), spacing,
                      [s.path for s in chosen])
    return _Plan(info, chosen, (spacing, origin, direction), warnings)


def _slices(n: int) -> str:
    return f"{n} slice" if n == 1 else f"{n} slices"


def _needs_float(slices: list[_Slice]) -> bool:
    return any(
        s.modality == "CT" or s.slope != 1.0 or s.intercept != 0.0 or (s.modality == "RTDOSE" and s.dose_scaling)
        for s in slices
    )


# numpy dtype -> SimpleITK pixel type, for series whose files store different integer types
_SITK_INTEGER_TYPES = {
    np.dtype(np.uint8): sitk.sitkUInt8, np.dtype(np.int8): sitk.sitkInt8,
    np.dtype(np.uint16): sitk.sitkUInt16, np.dtype(np.int16): sitk.sitkInt16,
    np.dtype(np.uint32): sitk.sitkUInt32, np.dtype(np.int32): sitk.sitkInt32,
    np.dtype(np.uint64): sitk.sitkUInt64, np.dtype(np.int64): sitk.sitkInt64,
}


def _series_pixel_type(slices: list[_Slice], as_float: bool) -> int | None:
    """The pixel type to ask GDCM for: float32 when rescaled, the common integer type when the files store
    different ones (GDCM would cast every slice to the first file's type), else None (GDCM's own choice)."""
    if as_float:
        return sitk.sitkFloat32
    stored = {(s.bits, s.signed) for s in slices}
    if len(stored) == 1 or any(s.samples > 1 for s in slices):
        return None
    try:
        dtypes = [np.dtype(f"{'i' if signed else 'u'}{max(bits, 8) // 8}") for bits, signed in stored]
    except TypeError:  # an odd BitsAllocated: leave the choice to GDCM
        return None
    return _SITK_INTEGER_TYPES.get(np.result_type(*dtypes))


_ITK_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's warnings on stderr while reading a series: ITK warns about non-uniform sampling from its own
    geometry, which the planned geometry replaces (the plan reports such problems as Volume.warnings), and the
    CLI promises one-line messages. The switch is global to ITK, so reads in other threads wait (a lock) rather
    than restore each other's setting out of order."""
    with _ITK_WARNINGS_LOCK:
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            yield
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_series_pixels(slices: list[_Slice], as_float: bool) -> np.ndarray:
    """The voxels (Z, Y, X[, 3]) of the planned files, in the planned order, through one SimpleITK
    ImageSeriesReader (GDCM): rescale slope/intercept applied (float32 when `as_float`), RT dose grid scaling per
    slice, MONOCHROME1 inverted (`_as_monochrome2`). When GDCM cannot decode a file, pydicom reads the series
    instead."""
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([s.path for s in slices])
    pixel_type = _series_pixel_type(slices, as_float)
    if pixel_type is not None:
        reader.SetOutputPixelType(pixel_type)
    try:
        with _itk_warnings_off():
            array = sitk.GetArrayFromImage(reader.Execute())
        gdcm = True
    except RuntimeError:
        array = _read_series_pydicom(slices, as_float)
        gdcm = False
    array = _as_monochrome2(array, slices, gdcm)
    scaling = [s.dose_scaling if s.modality == "RTDOSE" and s.dose_scaling else 1.0 for s in slices]
    if any(v != 1.0 for v in scaling):
        per_slice = np.asarray(scaling, dtype=np.float32).reshape((-1,) + (1,) * (array.ndim - 1))
        array = array.astype(np.float32) * per_slice
    return array


def _read_series_pydicom(slices: list[_Slice], as_float: bool) -> np.ndarray:
    planes = []
    for sl in slices:
        pixels = _pydicom_pixels(sl, as_float)
        if pixels.shape[:2] != (sl.rows, sl.cols):
            raise DataError(f"{sl.path}: pixel data of shape {pixels.shape} does not match Rows x Columns "
                            f"{sl.rows} x {sl.cols}")
        planes.append(pixels)
    return np.stack(planes)  # promotes to a type that holds every slice's values


def _read_dicom_pixels(sl: _Slice, as_float: bool) -> sitk.Image:
    """One DICOM file (a slice or a multi-frame image) as a SimpleITK image with the geometry GDCM reads (rescale
    applied, MONOCHROME1 inverted), GDCM first, pydicom as a fallback."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(sl.path)
    if as_float:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
        gdcm = True
    except RuntimeError:
        image = _read_dicom_pixels_pydicom(sl, as_float)
        gdcm = False
    if sl.photometric == "MONOCHROME1":
        inverted = sitk.GetImageFromArray(_as_monochrome2(sitk.GetArrayFromImage(image), [sl], gdcm))
        inverted.CopyInformation(image)
        image = inverted
    if sl.modality == "RTDOSE" and sl.dose_scaling:
        image = sitk.Cast(image, sitk.sitkFloat32) * float(sl.dose_scaling)
    return image


def _pydicom_pixels(sl: _Slice, as_float: bool) -> np.ndarray:
    """The pixels of one file as pydicom decodes them ((rows, cols[, 3]), or frames first): rescale applied to
    grey images, palette colour expanded to 8-bit RGB and YBR converted to RGB as GDCM does."""
    import pydicom

    try:
        ds = pydicom.dcmread(sl.path, force=True)
        array = ds.pixel_array
        if sl.photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
            if array.dtype != np.uint8:  # 16-bit lookup tables: their high byte, as GDCM gives
                array = (array >> 8).astype(np.uint8)
        elif sl.samples > 1 and sl.photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            from pydicom.pixels import convert_color_space  # pydicom >= 3 converts in pixel_array

            array = convert_color_space(array, sl.photometric, "RGB")
    except Exception as exc:  # pydicom raises many types for damaged or unsupported pixel data
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{sl.path}: damaged, truncated or unsupported DICOM pixel data ({reason})") from None
    if not sl.colour:
        array = array * sl.slope + sl.intercept if (sl.slope != 1.0 or sl.intercept != 0.0) else array
        if as_float:
            array = array.astype(np.float32)
    return array


def _as_monochrome2(array: np.ndarray, slices: list[_Slice], gdcm: bool) -> np.ndarray:
    """MONOCHROME1 pixels (low values are displayed white) inverted so that bright means dense, within their own
    range: min + max - value over the whole read (255 - value for uint8), the rule every reader of the project
    applies. `array` holds one slice per entry of `slices` (a single file: all its frames).

    GDCM has already inverted them, but in the range of the stored type (stored -> min + max of that type, then
    the rescale): its value is c - v, with v the rescaled value and c = slope * K + 2 * intercept (K = -1 for
    signed, 2^BitsStored - 1 for unsigned), so v is recovered first."""
    if len(slices) == 1:
        slices = slices * array.shape[0]  # a single file: every frame has its header
    flags = np.array([s.photometric == "MONOCHROME1" for s in slices])
    if not flags.any():
        return array
    per_slice = (-1,) + (1,) * (array.ndim - 1)
    mask = flags.reshape(per_slice)
    values = array.astype(np.float64)
    if gdcm:
        c = np.array([s.slope * (-1 if s.signed else 2**s.bits_stored - 1) + 2 * s.intercept for s in slices])
        values = np.where(mask, c.reshape(per_slice) - values, values)
    if array.dtype == np.uint8:
        inverted = 255 - values
    else:
        selected = values[flags]
        inverted = float(selected.max()) + float(selected.min()) - values
    return np.where(mask, inverted, values).astype(array.dtype)


def _read_dicom_pixels_pydicom(sl: _Slice, as_float: bool) -> sitk.Image:
    color = sl.colour
    array = _pydicom_pixels(sl, as_float)
    if array.ndim == (3 if color else 2):
        array = array[None]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=color)
    ps_y, ps_x = sl.pixel_spacing or (1.0, 1.0)
    image.SetSpacing((ps_x, ps_y, sl.slice_step or 1.0))
    if sl.ipp is not None and sl.iop is not None:
        row = sl.iop[:3] / np.linalg.norm(sl.iop[:3])
        col = sl.iop[3:] / np.linalg.norm(sl.iop[3:])
        image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, np.cross(row, col)]).ravel()))
        image.SetOrigin(tuple(float(v) for v in sl.ipp))
    return image


def _dicom_metadata(sl: _Slice, source: Path) -> dict[str, str]:
    md = {"modality": sl.modality, "description": sl.description, "source": str(source),
          "series_uid": sl.series_uid, "sop_class": sl.sop_name, "photometric": sl.photometric}
    md.update(sl.extra)
    if sl.modality == "CT":
        md["units"] = "HU"
    return md


def _not_an_image_message(sl: _Slice) -> str:
    if "Image" in sl.sop_name or sl.rows:
        return f"{sl.path}: DICOM {sl.sop_name} without pixel data (no image to read)"
    return f"{sl.path}: not an image (DICOM {sl.sop_name}, modality {sl.modality or '?'}, has no pixel data)"


def read_dicom_file(p: Path) -> Volume:
    """One DICOM file (a slice or a multi-frame image) as a volume; DataError for non-image objects."""
    sl = _read_slice(p, force=True)
    if sl is None:
        raise DataError(f"{p}: not a DICOM file (the content is {sniff(p)})")
    if sl.sop_class == _DICOMDIR_SOP:
        raise DataError(f"{p}: a DICOMDIR index, not an image (open the folder that holds it instead)")
    if not sl.has_pixels:
        raise DataError(_not_an_image_message(sl))
    image = _read_dicom_pixels(sl, _needs_float([sl]))
    return Volume.from_sitk(image, _dicom_metadata(sl, p))


def read_dicom_folder(folder: Path, series_uid: str | None) -> Volume:
    """The series `series_uid` of `folder` (default: the largest, with a warning naming the others)."""
    series, non_images = _scan_dicom_folder(folder)
    if not series:
        if non_images:
            kinds = sorted({s.sop_name for s in non_images})
            raise DataError(f"{folder}: no DICOM images (found {len(non_images)} DICOM files without pixel data: "
                            f"{', '.join(kinds[:4])})")
        raise DataError(f"{folder}: no DICOM images found in this folder or its subfolders")
    plans = {uid: _plan_series(uid, slices, folder) for uid, slices in series.items()}
    warnings: list[str] = []
    if series_uid is not None:
        if series_uid not in plans:
            found = ", ".join(f"{uid} ('{pl.info.description}')" for uid, pl in plans.items())
            raise DataError(f"{folder}: no DICOM series with uid {series_uid} (found: {found})")
        plan = plans[series_uid]
    else:
        ordered = sorted(plans.values(), key=lambda pl: (pl.info.description.lower(), pl.info.uid))
        plan = max(ordered, key=lambda pl: math.prod(pl.info.size))
        if len(plans) > 1:
            others = "; ".join(f"'{pl.info.description}' ({_slices(pl.info.size[2])}, uid {pl.info.uid})"
                               for pl in ordered if pl is not plan)
            warnings.append(
                f"{folder} holds {len(plans)} DICOM series; read the largest, '{plan.info.description}' "
                f"({_slices(plan.info.size[2])}, uid {plan.info.uid}); others: {others}"
            )
    warnings += plan.warnings
    if non_images:
        kinds = sorted({s.sop_name for s in non_images})
        n = len(non_images)
        files = "file" if n == 1 else "files"
        warnings.append(f"{folder}: skipped {n} DICOM {files} without pixel data ({', '.join(kinds[:4])})")
    as_float = _needs_float(plan.slices)
    md = _dicom_metadata(plan.slices[0], folder)
    if plan.geometry is None:
        image = _read_dicom_pixels(plan.slices[0], as_float)
        return Volume.from_sitk(image, md, warnings)
    array = _read_series_pixels(plan.slices, as_float)
    spacing, origin, direction = plan.geometry
    return Volume(array, spacing, origin, direction, md, warnings)
