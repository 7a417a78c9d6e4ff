"""The embedded default demo: four small MedMNIST-format tasks built from real images that ship
inside installed packages (no downloads).

Sources (see /work/shared/DATA.md):
- MNI ICBM152 2009a symmetric T1 template with its grey/white-matter probability maps (nilearn's
  package data, read with nibabel; nilearn itself is never imported). Template licence: Copyright (C)
  1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill
  University; permissive notice, see `MNI_NOTICE`.
- pydicom's test CT image `CT_small.dcm` (128 x 128; the `dicomdirtests` CT series are only 16 x 16,
  see `MIN_CT_SIDE`), skimage's bundled fundus photograph (`retina`) and immunohistochemistry image.

Tasks (every sample is a random oblique crop with a small rotation, intensity change and noise, so
the tasks are learnable but not trivial):
- plane (3 classes, grey): orientation of an MNI slice: axial / coronal / sagittal.
- level (3 classes, grey): where an axial slice cuts the brain: inferior / middle / superior third.
- tissue (multi-label, grey): grey matter / white matter / CSF covering at least their share in
  `TISSUE_MIN_FRACTION` of a small random crop (CSF = filled brain mask - GM - WM).
- modality (4 classes, RGB): brain MRI / CT / fundus photo / histology (grey sources repeated to 3
  channels; colour sources sometimes turned grey).

`build_demo(out_dir)` writes one `.npz` per task (train/val/test 70/15/15) atomically and returns a
config mapping that `core.config.load_config` accepts. Files for the same (size, n_per_task, seed) are
reused.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.errors import DataError
from core.files import write_atomic
from core.kinds.classification.medmnist import SPLITS

DEMO_VERSION = 2  # bump when the generator changes: cached files of other versions are not reused
TASK_LABELS: dict[str, list[str]] = {
    "plane": ["axial", "coronal", "sagittal"],
    "level": ["inferior", "middle", "superior"],
    "tissue": ["grey matter", "white matter", "csf"],
    "modality": ["brain MRI", "CT", "fundus photo", "histology"],
}
TASK_KINDS = {"plane": "multiclass", "level": "multiclass", "tissue": "multilabel", "modality": "multiclass"}
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
# CT sources with a shorter side below this are skipped: pydicom's CT5N series is stored at 16 x 16, and its
# crops upsampled to 28+ px are near-uniform grey squares, not CT images
MIN_CT_SIDE = 64
# a tissue is "present" when its probability is > 0.5 on at least this share of the crop (about half the
# crops have each label)
TISSUE_MIN_FRACTION = {"grey matter": 0.45, "white matter": 0.25, "csf": 0.03}
DEMO_NOTE = (
    "The embedded demo: four small 2D tasks built from real images that ship with the installed packages "
    "(MNI152 brain MRI slices: slice plane, slice level, tissue; modality: MRI / CT / fundus photo / "
    "histology). A ResNet-18 foundation model is pre-trained on them, then decomposed into a compact backbone "
    "(14x fewer multiply-adds) with rank-4 task experts; foundation model, experts and single-task baselines are "
    "tested on images no model trained on. Press Start; about five minutes on a laptop CPU. Research use only."
)
MNI_NOTICE = (
    "MNI ICBM152 non-linear symmetric 2009a template: Copyright (C) 1993-2009 Louis Collins, McConnell "
    "Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, "
    "modify, and distribute this software and its documentation for any purpose and without fee is hereby "
    "granted, provided that the above copyright notice appear in all copies. The authors and McGill "
    "University make no representations about the suitability of this software for any purpose. It is "
    "provided 'as is' without express or implied warranty."
)

# Voxel-space directions of the MNI grid (RAS: axis 0 -> right, 1 -> anterior, 2 -> superior), as a
# radiological viewer shows them: (row direction, column direction).
PLANES = {
    "axial": (np.array([0.0, -1.0, 0.0]), np.array([-1.0, 0.0, 0.0])),  # rows A->P, columns R->L
    "coronal": (np.array([0.0, 0.0, -1.0]), np.array([-1.0, 0.0, 0.0])),  # rows S->I, columns R->L
    "sagittal": (np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])),  # rows S->I, columns A->P
}
NORMAL_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def demo_file_name(task: str, size: int, n_per_task: int, seed: int) -> str:
    """File name of one demo task (encodes everything the content depends on)."""
    return f"demo_{task}_{size}px_n{n_per_task}_seed{seed}_v{DEMO_VERSION}.npz"


# ----------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------


class _Pyramid:
    """An image or volume with 2x block-averaged coarser levels, sampled without aliasing:
    `sample(points)` reads the level whose voxel size is just below the sampling step."""

    def __init__(self, data: np.ndarray, spatial_dims: int, levels: int = 4) -> None:
        self.spatial_dims = spatial_dims
        self.scale = 255.0 if data.dtype == np.uint8 else 1.0
        self.levels = [data]
        current = data.astype(np.float32)
        for _ in range(levels - 1):
            shape = current.shape[:spatial_dims]
            if min(shape) < 8:
                break
            even = tuple(slice(0, n - n % 2) for n in shape)
            current = current[even]
            split = [v for n in current.shape[:spatial_dims] for v in (n // 2, 2)] + list(current.shape[spatial_dims:])
            current = current.reshape(split).mean(axis=tuple(range(1, 2 * spatial_dims, 2)))
            self.levels.append(current)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape[: self.spatial_dims]

    def sample(self, points: np.ndarray, step: float) -> np.ndarray:
        """Values in [0, 1] at `points` (spatial_dims, *out) in level-0 voxel coordinates, bilinear,
        read from the level matching `step` (level-0 voxels per output pixel). Outside: 0.
        Returns (*out) or (*out, channels)."""
        level = int(np.clip(np.floor(np.log2(max(step, 1.0))), 0, len(self.levels) - 1))
        factor = 2.0**level
        coords = (points - (factor - 1) / 2) / factor
        data = self.levels[level]
        if data.ndim == self.spatial_dims:
            out = ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=0.0, output=np.float32)
        else:
            out = np.stack(
                [
                    ndimage.map_coordinates(data[..., c], coords, order=1, mode="constant", cval=0.0,
                                            output=np.float32)
                    for c in range(data.shape[-1])
                ],
                axis=-1,
            )
        return out / np.float32(self.scale)


def _package_dir(name: str) -> Path:
    """A package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo needs the {name} package (its bundled data); install it with pip")
    return Path(list(spec.submodule_search_locations)[0])


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: demo source image missing")
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.ascontiguousarray(np.asanyarray(image.dataobj))


class _Brain:
    """The MNI T1 template and its tissue maps, with the brain's extent."""

    def __init__(self) -> None:
        folder = _package_dir("nilearn") / "datasets" / "data"
        stem = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
        t1 = _read_nifti(folder / stem.format("t1"))
        gm = _read_nifti(folder / stem.format("gm"))
        wm = _read_nifti(folder / stem.format("wm"))
        if not (t1.shape == gm.shape == wm.shape):
            raise DataError(f"{folder}: MNI T1 and tissue maps are on different grids")
        brain = ndimage.binary_fill_holes(t1 > 0.05 * 255)
        csf = np.clip(brain.astype(np.float32) - (gm.astype(np.float32) + wm.astype(np.float32)) / 255.0, 0, 1)
        self.t1 = _Pyramid(t1, 3)
        self.gm = _Pyramid(gm, 3, levels=1)
        self.wm = _Pyramid(wm, 3, levels=1)
        self.csf = _Pyramid(csf, 3, levels=1)
        where = np.nonzero(brain)
        self.lo = np.array([w.min() for w in where], dtype=np.float64)
        self.hi = np.array([w.max() for w in where], dtype=np.float64)
        self.centre = (self.lo + self.hi) / 2
        # brain voxels on a 3 mm lattice: centres for the tissue crops
        coarse = brain[::3, ::3, ::3]
        self.voxels = np.argwhere(coarse).astype(np.float64) * 3


def _ct_images() -> list[np.ndarray]:
    """pydicom's real CT test images in Hounsfield units (CT_small plus any CT5N series slice of at least
    `MIN_CT_SIDE` pixels; pydicom 3.0 ships those at 16 x 16, so today only CT_small)."""
    import pydicom
    from pydicom.data import get_testdata_file

    small = get_testdata_file("CT_small.dcm")
    if small is None:
        raise DataError("the demo needs pydicom's bundled test file CT_small.dcm")
    files = [Path(str(small))]
    files += sorted((Path(str(small)).parent / "dicomdirtests" / "98892001" / "CT5N").glob("*"))
    images = []
    for path in files:
        if not path.is_file():
            continue
        ds = pydicom.dcmread(path)
        if min(int(ds.Rows), int(ds.Columns)) < MIN_CT_SIDE:
            continue
        hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
        images.append(hu + float(ds.get("RescaleIntercept", 0) or 0))
    if not images:
        raise DataError(f"{small}: pydicom's CT test images are smaller than {MIN_CT_SIDE} px; the demo needs one")
    return images


def _photos() -> tuple[np.ndarray, np.ndarray]:
    """skimage's bundled fundus photograph and immunohistochemistry image (uint8 RGB)."""
    from skimage import data

    return np.asarray(data.retina())[..., :3], np.asarray(data.immunohistochemistry())[..., :3]


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------


def _rotation(angles: np.ndarray) -> np.ndarray:
    """3x3 rotation from three small angles (radians) about the axes 0, 1, 2."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _plane_points(
    centre: np.ndarray, rows: np.ndarray, cols: np.ndarray, fov: float, size: int, spin: float
) -> tuple[np.ndarray, float]:
    """(dims, size, size) sample points of a square window of side `fov` (voxels) centred on `centre`,
    spanned by the unit vectors `rows`/`cols` turned by `spin` radians in their plane; and the step."""
    r = np.cos(spin) * rows + np.sin(spin) * cols
    c = -np.sin(spin) * rows + np.cos(spin) * cols
    step = fov / size
    offsets = (np.arange(size) - (size - 1) / 2) * step
    points = (
        centre[:, None, None] + r[:, None, None] * offsets[None, :, None] + c[:, None, None] * offsets[None, None, :]
    )
    return points, step


def _slice_points(
    brain: _Brain, rng: np.random.Generator, plane: str, centre: np.ndarray, fov: float, size: int,
    spin_deg: float, tilt_deg: float,
) -> tuple[np.ndarray, float]:
    """Points of an oblique slice of orientation `plane` through `centre`."""
    rows, cols = PLANES[plane]
    tilt = _rotation(np.radians(rng.uniform(-tilt_deg, tilt_deg, 3)))
    spin = np.radians(rng.uniform(-spin_deg, spin_deg))
    return _plane_points(centre, tilt @ rows, tilt @ cols, fov, size, spin)


def _in_plane_extent(brain: _Brain, plane: str) -> float:
    extent = brain.hi - brain.lo
    axes = [a for a in range(3) if a != NORMAL_AXIS[plane]]
    return float(max(extent[axes]))


def _brain_slice(brain: _Brain, rng: np.random.Generator, plane: str, size: int, position: float) -> np.ndarray:
    """A T1 slice of orientation `plane` at relative `position` (0..1) along the slice normal, with a
    random crop/zoom, rotation and tilt. Values in [0, 1]."""
    axis = NORMAL_AXIS[plane]
    centre = brain.centre + rng.normal(0, 5, 3)
    centre[axis] = brain.lo[axis] + position * (brain.hi[axis] - brain.lo[axis])
    fov = _in_plane_extent(brain, plane) * rng.uniform(0.85, 1.25)
    points, step = _slice_points(brain, rng, plane, centre, fov, size, spin_deg=12, tilt_deg=6)
    return brain.t1.sample(points, step)


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, contrast, brightness and Gaussian noise on an image in [0, 1]; returns uint8."""
    out = np.clip(image, 0, 1) ** rng.uniform(0.75, 1.35)
    out = out * rng.uniform(0.85, 1.15) + rng.uniform(-0.06, 0.06)
    out = out + rng.normal(0, rng.uniform(0.005, 0.04), out.shape)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _balanced_classes(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(count) % num_classes)


def _plane_task(brain: _Brain, classes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    names = TASK_LABELS["plane"]
    return np.stack(
        [_jitter(_brain_slice(brain, rng, names[k], size, rng.uniform(0.3, 0.7)), rng) for k in classes]
    )


def _level_task(brain: _Brain, classes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    images = []
    for k in classes:
        low, high = 0.05 + 0.9 * k / 3, 0.05 + 0.9 * (k + 1) / 3
        position = rng.uniform(low + 0.015, high - 0.015)
        images.append(_jitter(_brain_slice(brain, rng, "axial", size, position), rng))
    return np.stack(images)


def _tissue_task(brain: _Brain, count: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    planes = list(PLANES)
    for _ in range(count):
        centre = brain.voxels[rng.integers(len(brain.voxels))] + rng.uniform(-1.5, 1.5, 3)
        plane = planes[rng.integers(3)]
        points, step = _slice_points(brain, rng, plane, centre, rng.uniform(14, 36), size, spin_deg=30, tilt_deg=10)
        fractions = [float((m.sample(points, step) > 0.5).mean()) for m in (brain.gm, brain.wm, brain.csf)]
        thresholds = TISSUE_MIN_FRACTION.values()
        labels.append([int(f >= t) for f, t in zip(fractions, thresholds, strict=True)])
        images.append(_jitter(brain.t1.sample(points, step), rng))
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def _crop_2d(
    pyramid: _Pyramid, rng: np.random.Generator, size: int, fov_range: tuple[float, float], spin_deg: float,
    shift: float,
) -> np.ndarray:
    """A rotated square crop of a 2D image (fov and shift as fractions of the shorter side)."""
    side = float(min(pyramid.shape))
    centre = np.array(pyramid.shape, dtype=np.float64) / 2 - 0.5 + rng.uniform(-shift, shift, 2) * side
    fov = rng.uniform(*fov_range) * side
    points, step = _plane_points(
        centre, np.array([1.0, 0.0]), np.array([0.0, 1.0]), fov, size, np.radians(rng.uniform(-spin_deg, spin_deg))
    )
    return pyramid.sample(points, step)


def _modality_task(
    brain: _Brain, ct: list[_Pyramid], photos: tuple[_Pyramid, _Pyramid], classes: np.ndarray, size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    images = []
    planes = list(PLANES)
    for k in classes:
        if k == 0:  # brain MRI
            grey = _brain_slice(brain, rng, planes[rng.integers(3)], size, rng.uniform(0.25, 0.75))
            image = np.repeat(grey[..., None], 3, axis=-1)
        elif k == 1:  # CT (HU), random window
            source = ct[0] if rng.random() < 0.7 or len(ct) == 1 else ct[1 + rng.integers(len(ct) - 1)]
            hu = _crop_2d(source, rng, size, (0.55, 1.0), 20, 0.1)
            centre, width = rng.uniform(0, 120), rng.uniform(350, 1500)
            grey = np.clip((hu - (centre - width / 2)) / width, 0, 1)
            image = np.repeat(grey[..., None], 3, axis=-1)
        else:  # fundus photograph or histology, colour-jittered, sometimes grey
            if k == 2:
                image = _crop_2d(photos[0], rng, size, (0.35, 1.0), 30, 0.15)
            else:
                image = _crop_2d(photos[1], rng, size, (0.12, 0.5), 180, 0.25)
            image = image * rng.uniform(0.85, 1.15, 3)
            if rng.random() < 0.2:
                image = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
        images.append(_jitter(image, rng))
    return np.stack(images)


# ----------------------------------------------------------------------------------------------------
# Files and config
# ----------------------------------------------------------------------------------------------------


def _split_counts(n: int) -> list[int]:
    train = int(round(n * SPLIT_FRACTIONS[0]))
    val = int(round(n * SPLIT_FRACTIONS[1]))
    return [train, val, n - train - val]


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (`core.files.write_atomic`)."""
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


def _task_seed(seed: int, task: str) -> np.random.Generator:
    # % 2**64: default_rng rejects negative seeds; identity for the usual non-negative ones
    return np.random.default_rng([seed % 2**64, list(TASK_LABELS).index(task), DEMO_VERSION])


def _generate(paths: dict[str, Path], size: int, n_per_task: int, seed: int) -> None:
    brain = _Brain()
    counts = _split_counts(n_per_task)
    makers: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {}

    def multiclass(task: str, make: Callable) -> Callable:
        def run(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
            classes = _balanced_classes(count, len(TASK_LABELS[task]), rng)
            return make(classes, rng), classes.astype(np.uint8)[:, None]

        return run

    makers["plane"] = multiclass("plane", lambda c, rng: _plane_task(brain, c, size, rng))
    makers["level"] = multiclass("level", lambda c, rng: _level_task(brain, c, size, rng))
    makers["tissue"] = lambda rng, count: _tissue_task(brain, count, size, rng)
    if not paths["modality"].exists():
        ct = [_Pyramid(image, 2) for image in _ct_images()]
        photos = tuple(_Pyramid(image, 2) for image in _photos())
        makers["modality"] = multiclass("modality", lambda c, rng: _modality_task(brain, ct, photos, c, size, rng))
    for task, path in paths.items():
        if path.exists():
            continue
        rng = _task_seed(seed, task)
        arrays: dict[str, np.ndarray] = {}
        for split, count in zip(SPLITS, counts, strict=True):
            images, labels = makers[task](rng, count)
            arrays[f"{split}_images"] = images
            arrays[f"{split}_labels"] = labels
        _write_npz(path, arrays)


def build_demo(out_dir: str | os.PathLike, size: int = 28, n_per_task: int = 600, seed: int = 0) -> dict[str, Any]:
    """Write the demo tasks' MedMNIST-format files into `out_dir` and return the demo config mapping.

    size: image side in pixels; n_per_task: samples per task over the three splits (70/15/15);
    seed: everything generated is a function of (size, n_per_task, seed). Existing files for the same
    parameters are reused. The mapping has the shape of a YAML config (name "demo", four tasks with
    absolute file paths and label names, a small teacher and backbone) and loads with
    `core.config.load_config`.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if n_per_task < 20:
        raise ValueError(f"n_per_task must be >= 20 (every split needs samples), got {n_per_task}")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = {task: out / demo_file_name(task, size, n_per_task, seed) for task in TASK_LABELS}
    if not all(path.is_file() for path in paths.values()):
        _generate(paths, size, n_per_task, seed)
    return {
        "name": "demo",
        "tasks": [
            {"name": task, "medmnist": str(paths[task]), "kind": TASK_KINDS[task], "labels": list(labels)}
            for task, labels in TASK_LABELS.items()
        ],
        "data": {"image_size": size, "sampling": "natural", "augment": True},
        "teacher": {"arch": "resnet18", "epochs": 4},
        "backbone": {"arch": "compact_small", "rank": 4},
        "train": {"epochs": 15, "batch_size": 64},
        "seed": seed,
    }
