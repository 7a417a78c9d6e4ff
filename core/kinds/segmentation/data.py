"""Segmentation data: image/label volume pairs per task, preprocessed once, split into training data and held-out
cases that training never sees, and a multi-task patch dataset with mixed-task, task-sorted batches.

Every volume is read with `core.io.read_volume`, reoriented to RAS canonical and resampled to `data.spacing` by
`core.preprocess.volume` (the functions apply and exported bundles use), its intensity normalised to [0, 1] (the
task's own `intensity`, else `data.intensity`). Labels follow the image's reorientation, resampled with nearest
neighbour.

Held-out cases (`split_regions`, `load_task_cases`): a task with at least three volumes holds out whole volumes
(`data.test_fraction` for the test, `data.val_fraction` for validation, at least one each). A task with fewer
holds out regions of its volumes: each volume's foreground is cut into cubes of about `data.region_mm` mm on its
native grid and a seeded share of them is held out for the test and for validation. The cubes depend on the volume
and the seed only, so tasks labelled on one volume share them (the labels of one task in a region tell much about
another's there). Training sees held-out labels as `IGNORE` (they count in no loss, no patch is centred there);
the image stays whole, so training patches keep their context. Test metrics are computed on the held-out voxels
of the native grid, through the deployed path (`kind.test`).

`SegPatchDataset` yields patches `image (1, *patch)`, `label (1, *patch)` int64 with task-local values
(0 background, 1..K, IGNORE), `task` (and `teacher`, a user's foundation model's log-probabilities, when the run
has one: `core.kinds.segmentation.teacher`); patch centres fall on a structure with probability pos / (pos + neg),
anywhere in the training region otherwise; light intensity augmentation. Patch positions and augmentation are a
function of (seed, epoch, index) only (`counter_uniform`), so a resumed run replays exactly.

Streaming (`data.stream`, `stream_volumes`): the prepared volumes are kept in the volume cache on disk
(`core.kinds.segmentation.cache`) instead of RAM. `Prepared` and `SegCase` then hold `CachedArray`s (a label-free
task's labels, from the foundation model, stay in RAM, as its `soft` targets do), a training case's held-out regions
are applied when a patch is read (`SegCase.held`), patches copy only their window out of the cache, and patch
centres are drawn from a bounded sample of each volume's voxels (`fg_index`, at most `cache.FOREGROUND_CAP`
structure voxels; every voxel, or that many, anywhere). With at most that many voxels per pool (small volumes),
a streamed dataset gives exactly the in-RAM dataset's patches.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from core.config import Config
from core.data.sampling import TaskLayout, counter_uniform, seed_word
from core.errors import DataError
from core.io import read_volume
from core.kinds.segmentation.cache import (
    FOREGROUND_CAP,
    IN_RAM_BYTES_PER_VOXEL,
    STREAM_AUTO_BYTES,
    CachedArray,
    VolumeCache,
    cache_root,
    entry_key,
    foreground_sample,
    header_voxels,
)
from core.kinds.segmentation.config import IntensityConfig, SegDataConfig, SegTaskConfig
from core.kinds.segmentation.runtime import check_3d_volume, observe_volume
from core.preprocess import volume as prep

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")
GAIN_RANGE = 0.10
OFFSET_RANGE = 0.05
IGNORE = 255  # label of voxels training must not see (held-out regions); no loss counts them
REGION_FOREGROUND = 0.25  # a cube is a candidate held-out region when this share of it is foreground


@dataclass
class Prepared:
    """One image/label pair on the working grid (canonical RAS, target spacing), with what maps it back."""

    image: torch.Tensor | CachedArray  # (1, X, Y, Z) float32 in [0, 1]
    label: torch.Tensor | CachedArray  # (X, Y, Z) uint8, task-local values (label-free: the foundation model's argmax)
    info: dict  # prepare_volume's perm, flips, canonical_shape; foreground (canonical native grid)
    spacing: tuple[float, float, float]  # the working grid's voxel size (mm)
    native_spacing: tuple[float, float, float]  # canonical native voxel size (mm)
    image_path: Path
    label_path: Path | None  # None: a label-free task's volume
    fg_index: np.ndarray | None = None  # streamed: sorted flat indices of (a sample of) the label's structure voxels


@dataclass
class SegCase:
    """A training volume on the working grid; held-out voxels carry the label IGNORE."""

    image: torch.Tensor | CachedArray  # (1, X, Y, Z) float32 in [0, 1]
    label: torch.Tensor | CachedArray  # (X, Y, Z) uint8, task-local values or IGNORE (streamed: no IGNORE, see held)
    source: str
    spacing: tuple[float, float, float]
    soft: torch.Tensor | None = None  # (K+1, X, Y, Z) float16 log-probabilities of a user's foundation model
    held: list[tuple[slice, slice, slice]] = field(default_factory=list)  # streamed: working-grid regions read as
    # IGNORE
    fg_index: np.ndarray | None = None  # streamed: Prepared.fg_index (None: the case is in RAM)
    observed: dict | None = None  # the volume as the expert sees it (`runtime.observe_volume`): its envelope


@dataclass
class HeldOutCase:
    """A test or validation case: a whole volume, or a region (a cube of the canonical native grid) of one."""

    name: str
    pair: Prepared
    region: tuple[slice, slice, slice] | None = None  # canonical native index ranges; None: the whole volume
    work_region: tuple[slice, slice, slice] | None = field(default=None, repr=False)  # the same on the working grid

    @property
    def image_path(self) -> Path:
        return self.pair.image_path

    def native_box(self) -> tuple[slice, slice, slice] | None:
        """The region as (Z, Y, X) index ranges of the input's own grid (None: the whole volume). A box of the
        canonical grid is a box of the input's grid: canonical axis j is the input's x/y/z axis perm[j],
        reversed when flips[j] (`core.preprocess.volume.to_canonical`)."""
        if self.region is None:
            return None
        info = self.pair.info
        xyz: list[slice] = [slice(0)] * 3
        for j, (s, n) in enumerate(zip(self.region, info["canonical_shape"], strict=True)):
            xyz[info["perm"][j]] = slice(n - s.stop, n - s.start) if info["flips"][j] else s
        return xyz[2], xyz[1], xyz[0]

    def native_mask(self) -> np.ndarray | None:
        """The region as a boolean (Z, Y, X) mask on the input's own grid (None: the whole volume)."""
        if self.region is None:
            return None
        info = self.pair.info
        mask = np.zeros(info["canonical_shape"], np.uint8)
        mask[self.region] = 1
        return prep.from_canonical(mask, info["perm"], info["flips"]).astype(bool)


def read_any_volume(path: str | Path, warn: Callable[[str], None] | None = None, header: dict | None = None):
    """(array (Z, Y, X), spacing (x, y, z), direction 9 floats) through core.io.read_volume, checked
    to be one finite single-channel 3D volume (`check_3d_volume`); the reader's warnings (several DICOM series,
    non-uniform slice spacing, ...) go to `warn`; `header` (a dict) receives the file's modality where it has one."""
    vol = read_volume(path)
    check_3d_volume(vol, path)
    if header is not None:
        header["modality"] = vol.metadata.get("modality") or None
    if warn is not None:
        for message in vol.warnings:
            warn(message)
    return np.asarray(vol.array), tuple(vol.spacing), tuple(vol.direction)


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or any(name.endswith(s) for s in VOLUME_SUFFIXES)


def list_files(value: str | list[str], what: str, task: str) -> list[Path]:
    """A folder (its volumes / DICOM series sub-folders, sorted by name) or a list of paths."""
    if isinstance(value, list):
        paths = [Path(v) for v in value]
    else:
        folder = Path(value)
        if folder.is_file():
            paths = [folder]
        elif folder.is_dir():
            paths = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and _is_volume(p))
        else:
            raise DataError(f"task {task!r}: {what} {folder} does not exist")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DataError(f"task {task!r}: {what} file {missing[0]} does not exist")
    if not paths:
        raise DataError(f"task {task!r}: no {what} volumes found in {value}")
    return paths


def label_values(labels: str | list[str]) -> list[int]:
    """The structure values (> 0) in the first label map of a folder or list of label maps, e.g. to propose
    a new task's label names."""
    array, _, _ = read_any_volume(list_files(labels, "label", "new task")[0])
    values = np.unique(array)
    if not np.all(values == np.round(values)):
        raise DataError(f"label maps in {labels} hold non-integer values")
    return [int(v) for v in values if v > 0]


def task_pairs(task: SegTaskConfig) -> list[tuple[Path, Path | None]]:
    images = list_files(task.images, "image", task.name)
    if task.label_free:
        return [(image, None) for image in images]
    labels = list_files(task.labels, "label", task.name)
    if len(images) != len(labels):
        raise DataError(f"task {task.name!r}: {len(images)} images but {len(labels)} label maps")
    return list(zip(images, labels, strict=True))


def intensity_of(task: SegTaskConfig, data: SegDataConfig) -> IntensityConfig:
    """The intensity normalisation of a task: its own, else the run's."""
    return task.intensity or data.intensity


def load_pair(image_path: Path, label_path: Path | None, data: SegDataConfig, intensity: IntensityConfig,
              num_labels: int, warn: Callable[[str], None] | None = None,
              soft: torch.Tensor | None = None) -> Prepared:
    """Read, check, reorient, normalise and resample one image/label pair (the readers' warnings go to `warn`);
    without a label map (`label_path` None) the label is the argmax of `soft` (a foundation model's
    log-probabilities on the working grid)."""
    header: dict = {}
    image, spacing, direction = read_any_volume(image_path, warn, header)
    if label_path is not None:
        label, l_spacing, l_direction = read_any_volume(label_path, warn)
        if image.shape != label.shape:
            raise DataError(f"label map {label_path} has shape {label.shape}, its image {image_path} {image.shape}")
        if not np.allclose(spacing, l_spacing, rtol=1e-3) or not np.allclose(direction, l_direction, atol=1e-3):
            raise DataError(f"label map {label_path} does not share the geometry (spacing/direction) of "
                            f"{image_path}")
        values = np.unique(label)
        if values.min() < 0 or values.max() > num_labels or not np.all(values == np.round(values)):
            raise DataError(f"label map {label_path} holds values {values[:10].tolist()}; expected 0..{num_labels}")
    pre = {"spacing": list(data.spacing), "intensity": vars(intensity)}
    tensor, info = prep.prepare_volume(image, spacing, direction, pre)
    if label_path is not None:
        canon = prep.to_canonical(label.astype(np.uint8), info["perm"], info["flips"])
        lab = prep.resample(canon, tensor.shape[1:], "nearest").to(torch.uint8)
    else:
        lab = prep.channel_argmax(soft.float())
    canon_shape = info["canonical_shape"]
    c_spacing = prep.canonical_spacing(spacing, info["perm"])
    work = tuple(float(n * s / m) for n, s, m in zip(canon_shape, c_spacing, tensor.shape[1:], strict=True))
    info = {**info, "foreground": _foreground(prep.to_canonical(image, info["perm"], info["flips"])),
            "observed": observe_volume(tensor, info, spacing, direction, header["modality"])}
    return Prepared(tensor.contiguous(), lab.contiguous(), info, work, tuple(c_spacing), image_path, label_path)


def cached_pair(disk: VolumeCache, image_path: Path, label_path: Path | None, data: SegDataConfig,
                intensity: IntensityConfig, num_labels: int, warn: Callable[[str], None] | None = None,
                soft: torch.Tensor | None = None) -> Prepared:
    """`load_pair` through the volume cache: preprocessed and stored on the first use of the files and settings,
    then read from the cache (memory-mapped); the reader's warnings are replayed on reuse. A label-free pair's
    label (the argmax of `soft`) is not stored: it stays in RAM."""
    settings = {"orientation": "RAS", "spacing": [float(v) for v in data.spacing],
                "intensity": {"mode": intensity.mode, "low": float(intensity.low), "high": float(intensity.high)},
                "num_labels": int(num_labels) if label_path is not None else None}
    key = entry_key(image_path, label_path, settings)
    told: list[str] = []

    def build() -> tuple[dict[str, np.ndarray], dict]:
        pair = load_pair(image_path, label_path, data, intensity, num_labels, told.append, soft)
        info = pair.info
        arrays = {"image": pair.image.numpy(), "foreground": np.packbits(info["foreground"], axis=-1),
                  "fg_index": foreground_sample(pair.label.numpy(), key) if label_path is not None
                  else np.zeros(0, np.int64)}
        if label_path is not None:
            arrays["label"] = pair.label.numpy()
        meta = {"image": str(image_path), "label": str(label_path) if label_path is not None else None,
                "settings": settings, "has_label": label_path is not None, "warnings": told,
                "perm": [int(v) for v in info["perm"]], "flips": [bool(v) for v in info["flips"]],
                "canonical_shape": [int(v) for v in info["canonical_shape"]],
                "work_shape": [int(v) for v in pair.image.shape[1:]],
                "spacing": [float(v) for v in pair.spacing], "native_spacing": [float(v) for v in pair.native_spacing],
                "observed": info.get("observed")}
        return arrays, meta

    entry = disk.get(key, build)
    meta = entry.meta
    if warn is not None:
        for message in meta.get("warnings", []):
            warn(message)
    info = {"perm": list(meta["perm"]), "flips": list(meta["flips"]),
            "canonical_shape": tuple(meta["canonical_shape"]), "foreground": entry.foreground}
    if meta.get("observed") is not None:
        info["observed"] = meta["observed"]
    if label_path is None:
        label: torch.Tensor | CachedArray = prep.channel_argmax(soft.float()).contiguous()
        fg_index = foreground_sample(label.numpy(), key)
    else:
        label, fg_index = entry.label, entry.fg_index
    return Prepared(entry.image, label, info, tuple(meta["spacing"]), tuple(meta["native_spacing"]), image_path,
                    label_path, fg_index)


def stream_volumes(config: Config) -> bool:
    """Whether the run keeps its prepared volumes in the volume cache on disk (data.stream; "auto": when they
    would take more than STREAM_AUTO_BYTES of RAM, estimated from the files' headers)."""
    data = config.data
    if data.stream != "auto":
        return data.stream == "on"
    total = 0.0
    for task in config.tasks:
        for image_path, _ in task_pairs(task):
            total += header_voxels(image_path, data.spacing) * IN_RAM_BYTES_PER_VOXEL
            if total > STREAM_AUTO_BYTES:
                return True
    return False


def _foreground(canonical_image: np.ndarray) -> np.ndarray:
    """Voxels clearly above the volume's lowest intensity (the body, or a skull-stripped brain)."""
    a = np.asarray(canonical_image, dtype=np.float32)
    low, high = float(a.min()), float(a.max())
    return a > low + 0.05 * (high - low)


def split_regions(pair: Prepared, data: SegDataConfig, seed: int
                  ) -> tuple[list[tuple[slice, slice, slice]], list[tuple[slice, slice, slice]]]:
    """(validation cubes, test cubes) of a volume: its canonical native grid cut into cubes of about
    `data.region_mm` mm, those with at least REGION_FOREGROUND foreground are candidates, and a share of them
    chosen by a generator seeded with (seed, the image's path) is held out."""
    shape = pair.info["canonical_shape"]
    counts = [max(1, int(round(n * s / data.region_mm))) for n, s in zip(shape, pair.native_spacing, strict=True)]
    edges = [np.linspace(0, n, k + 1).round().astype(int) for n, k in zip(shape, counts, strict=True)]
    foreground = pair.info["foreground"]
    cubes = []
    for i in range(counts[0]):
        for j in range(counts[1]):
            for k in range(counts[2]):
                cube = tuple(slice(int(e[a]), int(e[a + 1])) for e, a in zip(edges, (i, j, k), strict=True))
                if foreground[cube].mean() >= REGION_FOREGROUND:
                    cubes.append(cube)
    n_test = max(1, int(round(len(cubes) * data.test_fraction)))
    n_val = max(1, int(round(len(cubes) * data.val_fraction)))
    if len(cubes) < n_test + n_val + 1:
        raise DataError(f"{pair.image_path}: too little foreground to hold out {n_test} test and {n_val} validation "
                        f"regions of {data.region_mm:g} mm (found {len(cubes)}); lower data.region_mm or add volumes")
    rng = np.random.default_rng([seed_word(seed), zlib.crc32(str(pair.image_path).encode())])
    order = rng.permutation(len(cubes))
    test = sorted((cubes[i] for i in order[:n_test]), key=lambda c: tuple(s.start for s in c))
    val = sorted((cubes[i] for i in order[n_test:n_test + n_val]), key=lambda c: tuple(s.start for s in c))
    return val, test


def _work_region(pair: Prepared, region: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    """A canonical native region's index ranges on the working grid (edges scaled, at least one voxel)."""
    out = []
    for s, n, m in zip(region, pair.info["canonical_shape"], pair.label.shape, strict=True):
        lo, hi = int(round(s.start * m / n)), int(round(s.stop * m / n))
        out.append(slice(min(lo, m - 1), max(hi, min(lo, m - 1) + 1)))
    return tuple(out)


def _held_out(pair: Prepared, regions: list[tuple[slice, slice, slice]], what: str) -> list[HeldOutCase]:
    cases = []
    for region in regions:
        span = "x".join(f"{s.start}-{s.stop - 1}" for s in region)
        cases.append(HeldOutCase(f"{pair.image_path.name} {what} region {span}", pair, region,
                                 _work_region(pair, region)))
    return cases


def _training_case(pair: Prepared, held: list[tuple[slice, slice, slice]], soft: torch.Tensor | None) -> SegCase:
    """The pair's working-grid volume with the labels of `held` (canonical native regions) set to IGNORE (streamed:
    when a patch is read)."""
    if pair.fg_index is not None:
        return SegCase(pair.image, pair.label, str(pair.image_path), pair.spacing, soft,
                       held=[_work_region(pair, region) for region in held], fg_index=pair.fg_index,
                       observed=pair.info.get("observed"))
    label = pair.label.clone()
    for region in held:
        label[_work_region(pair, region)] = IGNORE
    return SegCase(pair.image, label, str(pair.image_path), pair.spacing, soft, observed=pair.info.get("observed"))


def foundation_targets(config: Config, teacher, warn: Callable[[str], None] | None = None
                       ) -> dict[tuple[int, str], torch.Tensor]:
    """{(task, image path): the task's class log-probabilities on the image's working grid} from a user's
    foundation model (`teacher.ForeignSegTeacher`), each volume segmented once for all tasks that read it."""
    by_image: dict[str, list[int]] = {}
    for t, task in enumerate(config.tasks):
        for image_path, _ in task_pairs(task):
            by_image.setdefault(str(image_path), []).append(t)
    out = {}
    for path, tasks in by_image.items():
        array, spacing, direction = read_any_volume(path)
        work = prep.working_grid(array.shape, spacing, direction, {"spacing": config.data.spacing})[3]  # load_pair's
        for t in tasks:
            out[(t, path)] = teacher.targets_on(t, path, array, spacing, direction, work)
    return out


def load_task_cases(config: Config, cache: dict | None = None, warn: Callable[[str], None] | None = None,
                    targets: dict[tuple[int, str], torch.Tensor] | None = None
                    ) -> tuple[list[list[SegCase]], list[list[HeldOutCase]], list[list[HeldOutCase]]]:
    """(training cases, validation cases, test cases) per task (see the module docstring). `cache` (keyed by the
    files and the intensity settings) shares volumes read for several tasks (the demo's tasks on one image).
    Recoverable oddities of the files (several DICOM series in a folder, non-uniform slice spacing, ...) are
    passed to `warn` as one-line messages. `targets`: a user's foundation model's targets (`foundation_targets`):
    the labels of label-free tasks and every training case's `soft` distillation targets. Streaming
    (`stream_volumes`): the volumes come from the volume cache, and `warn` is told how many were preprocessed and
    how many reused."""
    cache = {} if cache is None else cache
    targets = targets or {}
    data = config.data
    disk = VolumeCache(cache_root(data.cache_dir)) if stream_volumes(config) else None
    train, val, test = [], [], []
    for t, task in enumerate(config.tasks):
        intensity = intensity_of(task, data)
        pairs = []
        for image_path, label_path in task_pairs(task):
            key = (str(image_path), str(label_path) if label_path else ("teacher", t), intensity.mode,
                   intensity.low, intensity.high)
            if key not in cache:
                load = load_pair if disk is None else partial(cached_pair, disk)
                cache[key] = load(image_path, label_path, data, intensity, task.num_labels, warn,
                                  targets.get((t, str(image_path))))
            pairs.append(cache[key])

        def soft(pair: Prepared, t=t) -> torch.Tensor | None:
            return targets.get((t, str(pair.image_path)))

        if len(pairs) >= 3:
            rng = np.random.default_rng([seed_word(config.seed), zlib.crc32(task.name.encode())])
            order = [int(i) for i in rng.permutation(len(pairs))]
            n_test = max(1, int(round(len(pairs) * data.test_fraction)))
            n_val = max(1, min(int(round(len(pairs) * data.val_fraction)), len(pairs) - n_test - 1))
            test.append([HeldOutCase(pairs[i].image_path.name, pairs[i]) for i in sorted(order[:n_test])])
            val.append([HeldOutCase(pairs[i].image_path.name, pairs[i])
                        for i in sorted(order[n_test:n_test + n_val])])
            train.append([_training_case(pairs[i], [], soft(pairs[i])) for i in sorted(order[n_test + n_val:])])
            continue
        task_val, task_test, task_train = [], [], []
        for pair in pairs:
            val_regions, test_regions = split_regions(pair, data, config.seed)
            task_val += _held_out(pair, val_regions, "validation")
            task_test += _held_out(pair, test_regions, "test")
            task_train.append(_training_case(pair, val_regions + test_regions, soft(pair)))
        train.append(task_train)
        val.append(task_val)
        test.append(task_test)
    if disk is not None and warn is not None:
        warn(disk.summary())
    return train, val, test


def crop(x: torch.Tensor | CachedArray, start: Sequence[int], size: Sequence[int], fill: float = 0) -> torch.Tensor:
    """x[..., start:start+size] over the last three axes, padded with `fill` where the window leaves the volume
    (of a `CachedArray`, only the window is read)."""
    spatial = x.shape[-3:]
    dtype = torch.from_numpy(np.zeros(0, x.dtype)).dtype if isinstance(x, CachedArray) else x.dtype
    out = torch.full((*x.shape[:-3], *size), fill, dtype=dtype)
    src, dst = [], []
    for s, p, n in zip(start, size, spatial, strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    part = x[(..., *src)]
    out[(..., *dst)] = torch.from_numpy(part) if isinstance(part, np.ndarray) else part
    return out


def window_box(region: tuple[slice, slice, slice], start: Sequence[int], size: Sequence[int]
               ) -> tuple[slice, slice, slice] | None:
    """The part of `region` inside the window start..start+size, in the window's coordinates (None: no part)."""
    box = []
    for r, s, p in zip(region, start, size, strict=True):
        lo, hi = max(r.start, s), min(r.stop, s + p)
        if lo >= hi:
            return None
        box.append(slice(lo - s, hi - s))
    return tuple(box)


def _in_regions(flat: np.ndarray, shape: Sequence[int], regions: Sequence[tuple[slice, slice, slice]]) -> np.ndarray:
    """Whether each flat index of a `shape` grid lies in one of `regions`."""
    coords = np.unravel_index(flat, tuple(shape))
    inside = np.zeros(len(flat), bool)
    for region in regions:
        inside |= np.logical_and.reduce([(c >= s.start) & (c < s.stop) for c, s in zip(coords, region, strict=True)])
    return inside


def _streamed_pools(case: SegCase, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(structure voxels, training voxels (None: every voxel)) a streamed case's patch centres are drawn from, as
    sorted flat indices: its fg_index outside the held-out regions, and the voxels outside them: all of them when
    the volume has at most FOREGROUND_CAP voxels, else that many drawn by a generator seeded by (seed, source)."""
    if not case.held:
        return case.fg_index, None
    shape = tuple(case.label.shape)
    fg = case.fg_index[~_in_regions(case.fg_index, shape, case.held)]
    n = int(np.prod(shape))
    if n <= FOREGROUND_CAP:
        candidates = np.arange(n)
    else:
        rng = np.random.default_rng([seed_word(seed), zlib.crc32(case.source.encode())])
        candidates = np.sort(rng.choice(n, size=FOREGROUND_CAP, replace=False))
    return fg, candidates[~_in_regions(candidates, shape, case.held)]


class SegPatchDataset(TaskLayout):
    """Mixed-task patches: task t occupies indices task_offsets[t] .. + task_sizes[t] - 1
    (samples_per_volume patches per training volume), centred on training voxels only."""

    def __init__(
        self,
        cases: Sequence[Sequence[SegCase]],
        patch_size: Sequence[int],
        samples_per_volume: int,
        pos_neg_ratio: float = 2.0,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        self.cases = [list(c) for c in cases]
        self.patch = [int(p) for p in patch_size]
        self.spv = int(samples_per_volume)
        self.pos_fraction = pos_neg_ratio / (pos_neg_ratio + 1.0)
        self.seed, self.epoch, self.augment = int(seed), 0, bool(augment)
        self._lay_out([len(c) * self.spv for c in self.cases])
        # a user's foundation model's targets, padded to one channel count so that batches stack
        self.soft_channels = max((c.soft.shape[0] for cs in self.cases for c in cs if c.soft is not None), default=0)
        self._foreground: list[list[np.ndarray]] = []
        self._trainable: list[list[np.ndarray | None]] = []  # None: every voxel (a streamed case, nothing held out)
        for cs in self.cases:
            pools = []
            for c in cs:
                if c.fg_index is not None:  # streamed: bounded pools
                    pools.append(_streamed_pools(c, self.seed))
                    continue
                y = c.label.flatten()
                pools.append((torch.nonzero((y > 0) & (y != IGNORE)).flatten().numpy(),
                              torch.nonzero(y != IGNORE).flatten().numpy()))
            self._foreground.append([fg for fg, _ in pools])
            self._trainable.append([anywhere for _, anywhere in pools])

    def _item(self, index: int, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
        task = self.task_of(index)
        local = (index - self.task_offsets[task]) // self.spv
        case, fg = self.cases[task][local], self._foreground[task][local]
        anywhere = self._trainable[task][local]
        shape = tuple(case.label.shape)
        pool = fg if len(fg) and u[0] < self.pos_fraction else anywhere
        if pool is None:  # a streamed case without held-out regions: any voxel (as the in-RAM pool arange(n))
            n = int(np.prod(shape))
            flat = min(int(u[1] * n), n - 1)
        else:
            flat = int(pool[min(int(u[1] * len(pool)), len(pool) - 1)])
        centre = np.unravel_index(flat, shape)
        start = []
        for c, p, n in zip(centre, self.patch, shape, strict=True):
            s = int(c) - p // 2
            s = min(max(s, 0), n - p) if n >= p else -((p - n) // 2)
            start.append(s)
        image = crop(case.image, start, self.patch)
        if case.fg_index is None:
            label = crop(case.label[None], start, self.patch).long()
        else:  # streamed: the held-out regions read as IGNORE
            label = crop(case.label, start, self.patch)
            for region in case.held:
                box = window_box(region, start, self.patch)
                if box is not None:
                    label[box] = IGNORE
            label = label[None].long()
        soft = None
        if self.soft_channels:
            soft = crop(case.soft.float(), start, self.patch)
            if soft.shape[0] < self.soft_channels:
                pad = torch.zeros((self.soft_channels - soft.shape[0], *soft.shape[1:]))
                soft = torch.cat([soft, pad])
        if self.augment:
            gain = 1 + (u[5] * 2 - 1) * GAIN_RANGE
            offset = (u[6] * 2 - 1) * OFFSET_RANGE
            image = image * float(gain) + float(offset)
        return image, label, task, soft

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} patches")
        u = counter_uniform(self.seed, self.epoch, [index], 8)[0]
        return self._item(index, u)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        items = [self[i] for i in indices]
        batch = {
            "image": torch.stack([i[0] for i in items]),
            "label": torch.stack([i[1] for i in items]),
            "task": torch.as_tensor([i[2] for i in items], dtype=torch.int64),
        }
        if self.soft_channels:  # the foundation model's log-probabilities, task t's classes in channels 0..K_t
            batch["teacher"] = torch.stack([i[3] for i in items])
        return batch
