"""Segmentation data: image/label volume pairs per task, preprocessed once and cached in memory, and a
multi-task patch dataset with mixed-task, task-sorted batches.

Every volume is read with `core.io.read_volume`, reoriented to RAS canonical and resampled to
`data.spacing` by `core.kinds.segmentation.runtime` (the same functions apply and exported bundles use), and its
intensity normalised to [0, 1]. Labels follow the image's reorientation and are resampled with nearest
neighbour. A task with several volumes holds out its last `holdout` fraction (at least one) for evaluation;
a task with a single volume holds out a central slab (`holdout` of its extent along `holdout_axis`).

`SegPatchDataset` yields patches `image (1, *patch)`, `label (1, *patch)` int64 with task-local values
(0 background, 1..K), `task`; patch centres fall on a structure with probability pos / (pos + neg), anywhere
otherwise; light intensity augmentation. Patch positions and augmentation are a function of
(seed, epoch, index) only (`counter_uniform`), so a resumed run replays exactly. Batches come from
`core.data.sampling.MultiTaskBatchSampler` (natural or balanced task sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import Config
from core.data.sampling import TaskLayout, counter_uniform
from core.errors import DataError
from core.io import read_volume
from core.kinds.segmentation.config import SegDataConfig, SegTaskConfig
from core.kinds.segmentation.runtime import check_3d_volume
from core.preprocess import volume as prep

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")
GAIN_RANGE = 0.10
OFFSET_RANGE = 0.05


@dataclass
class SegCase:
    """One preprocessed volume pair on the working grid (canonical RAS, target spacing)."""

    image: torch.Tensor  # (1, X, Y, Z) float32 in [0, 1]
    label: torch.Tensor  # (X, Y, Z) uint8, task-local values
    source: str
    spacing: tuple[float, float, float]  # the working grid's voxel size (mm)


def read_any_volume(path: str | Path, warn: Callable[[str], None] | None = None):
    """(array (Z, Y, X), spacing (x, y, z), direction 9 floats) through core.io.read_volume, checked
    to be one finite single-channel 3D volume (`check_3d_volume`); the reader's warnings (several DICOM series,
    non-uniform slice spacing, ...) go to `warn`."""
    vol = read_volume(path)
    check_3d_volume(vol, path)
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


def task_pairs(task: SegTaskConfig) -> list[tuple[Path, Path]]:
    images = list_files(task.images, "image", task.name)
    labels = list_files(task.labels, "label", task.name)
    if len(images) != len(labels):
        raise DataError(f"task {task.name!r}: {len(images)} images but {len(labels)} label maps")
    return list(zip(images, labels, strict=True))


def load_case(image_path: Path, label_path: Path, data: SegDataConfig, num_labels: int,
              warn: Callable[[str], None] | None = None) -> SegCase:
    """Read, reorient, normalise and resample one image/label pair (the readers' warnings go to `warn`)."""
    image, spacing, direction = read_any_volume(image_path, warn)
    label, l_spacing, l_direction = read_any_volume(label_path, warn)
    if image.shape != label.shape:
        raise DataError(f"label map {label_path} has shape {label.shape}, its image {image_path} {image.shape}")
    if not np.allclose(spacing, l_spacing, rtol=1e-3) or not np.allclose(direction, l_direction, atol=1e-3):
        raise DataError(f"label map {label_path} does not share the geometry (spacing/direction) of {image_path}")
    values = np.unique(label)
    if values.min() < 0 or values.max() > num_labels or not np.all(values == np.round(values)):
        raise DataError(f"label map {label_path} holds values {values[:10].tolist()}; expected 0..{num_labels}")
    pre = {"spacing": list(data.spacing), "intensity": vars(data.intensity)}
    tensor, info = prep.prepare_volume(image, spacing, direction, pre)
    canon = prep.to_canonical(label.astype(np.uint8), info["perm"], info["flips"])
    lab = prep.resample(canon, tensor.shape[1:], "nearest").to(torch.uint8)
    c_spacing = prep.canonical_spacing(spacing, info["perm"])
    work = tuple(float(n * s / m) for n, s, m in zip(canon.shape, c_spacing, tensor.shape[1:], strict=True))
    return SegCase(tensor.contiguous(), lab.contiguous(), str(image_path), work)


def split_case(case: SegCase, fraction: float, axis: int) -> tuple[list[SegCase], SegCase]:
    """(training parts, held-out slab): a central slab of `fraction` of the volume along `axis` is held out
    (the middle of a volume holds the structures; an end slab is often empty); the parts on either side train."""
    n = case.label.shape[axis]
    held = max(1, int(math.ceil(n * fraction)))
    if held >= n - 1:
        raise DataError(f"{case.source}: too small ({n} voxels along axis {axis}) to hold out a slab")
    c0 = (n - held) // 2
    c1 = c0 + held

    def part(lo: int, hi: int, source: str) -> SegCase:
        return SegCase(case.image.narrow(axis + 1, lo, hi - lo).contiguous(),
                       case.label.narrow(axis, lo, hi - lo).contiguous(), source, case.spacing)

    train = [part(lo, hi, case.source) for lo, hi in ((0, c0), (c1, n)) if hi > lo]
    return train, part(c0, c1, f"{case.source} (held-out slab: voxels {c0}..{c1 - 1} of axis {axis})")


def load_task_cases(config: Config, cache: dict | None = None, warn: Callable[[str], None] | None = None
                    ) -> tuple[list[list[SegCase]], list[list[SegCase]]]:
    """(train cases, held-out cases) per task. `cache` (keyed by the file pair) shares volumes read for
    several tasks (e.g. the demo's tasks on one image). Recoverable oddities of the files (several DICOM
    series in a folder, non-uniform slice spacing, ...) are passed to `warn` as one-line messages."""
    cache = {} if cache is None else cache
    train, test = [], []
    for task in config.tasks:
        pairs = task_pairs(task)
        cases = []
        for image_path, label_path in pairs:
            key = (str(image_path), str(label_path))
            if key not in cache:
                cache[key] = load_case(image_path, label_path, config.data, task.num_labels, warn)
            cases.append(cache[key])
        if len(cases) == 1:
            a, b = split_case(cases[0], config.data.holdout, config.data.holdout_axis)
            train.append(a)
            test.append([b])
        else:
            held = max(1, int(round(len(cases) * config.data.holdout)))
            held = min(held, len(cases) - 1)
            train.append(cases[: len(cases) - held])
            test.append(cases[len(cases) - held :])
    return train, test


def crop(x: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """x[..., start:start+size] over the last three axes, zero-padded where the window leaves the volume."""
    spatial = x.shape[-3:]
    out = torch.zeros((*x.shape[:-3], *size), dtype=x.dtype)
    src, dst = [], []
    for s, p, n in zip(start, size, spatial, strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = x[(..., *src)]
    return out


class SegPatchDataset(TaskLayout):
    """Mixed-task patches: task t occupies indices task_offsets[t] .. + task_sizes[t] - 1
    (samples_per_volume patches per training volume)."""

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
        self._foreground = [[torch.nonzero(c.label.flatten() > 0).flatten().numpy() for c in cs] for cs in self.cases]

    def _item(self, index: int, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
        task = self.task_of(index)
        local = (index - self.task_offsets[task]) // self.spv
        case, fg = self.cases[task][local], self._foreground[task][local]
        shape = case.label.shape
        if len(fg) and u[0] < self.pos_fraction:
            flat = int(fg[min(int(u[1] * len(fg)), len(fg) - 1)])
            centre = np.unravel_index(flat, shape)
        else:
            centre = [min(int(u[2 + i] * n), n - 1) for i, n in enumerate(shape)]
        start = []
        for c, p, n in zip(centre, self.patch, shape, strict=True):
            s = int(c) - p // 2
            s = min(max(s, 0), n - p) if n >= p else -((p - n) // 2)
            start.append(s)
        image = crop(case.image, start, self.patch)
        label = crop(case.label[None], start, self.patch).long()
        if self.augment:
            gain = 1 + (u[5] * 2 - 1) * GAIN_RANGE
            offset = (u[6] * 2 - 1) * OFFSET_RANGE
            image = image * float(gain) + float(offset)
        return image, label, task

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} patches")
        u = counter_uniform(self.seed, self.epoch, [index], 8)[0]
        return self._item(index, u)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        items = [self[i] for i in indices]
        return {
            "image": torch.stack([i[0] for i in items]),
            "label": torch.stack([i[1] for i in items]),
            "task": torch.as_tensor([i[2] for i in items], dtype=torch.int64),
        }
