"""Classification data: every task's MedMNIST split preprocessed once, as one mixed-task dataset.

- `MultiTaskDataset` loads each task's split once (`read_split` + `core.preprocess.image.prepare`, the one
  preprocessing function shared with inference) and concatenates the tasks: task t occupies the indices
  `task_offsets[t] .. task_offsets[t] + task_sizes[t] - 1` (`core.data.sampling.TaskLayout`), so
  `core.data.sampling.make_loader` gives mixed-task, task-sorted batches.

Labels of all tasks share one float tensor of width `label_width` (L): a multi-class sample stores
its class index in column 0 (the other columns are 0); a multi-label sample stores its C 0/1 labels in
columns 0..C-1. `task_labels` turns the rows of one task back into class indices or label columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.layers import AffineTransform

from core.data.sampling import TaskLayout, counter_uniform, seed_word
from core.errors import DataError
from core.kinds.classification.medmnist import SPLITS, read_split
from core.kinds.classification.tasks import TaskSpec
from core.preprocess.image import prepare

# Training augmentation: small random affine and mild intensity jitter (no flips: left/right and
# up/down carry meaning in some medical labels, e.g. organ laterality).
ROTATE_DEGREES = 10.0
SCALE_RANGE = 0.10  # zoom factor in [0.9, 1.1]
TRANSLATE_FRACTION = 0.06  # shift up to 6 % of the image side along each axis
GAIN_RANGE = 0.10  # intensity x (1 +- 0.1)
OFFSET_RANGE = 0.10  # intensity + (+-0.1), in normalised units ((x - 0.5) / 0.5 lies in [-1, 1])

PREPARE_CHUNK = 4096  # images per `prepare` call: bounds the float copies of a large split

class MultiTaskDataset(TaskLayout):
    """All tasks' samples of one split, preprocessed once at construction.

    Items are `(image float32 (C, S, S[, S]), label float32 (L,), task_id int)` with C = `in_channels`
    and L = `label_width`. Grey tasks under `in_channels=3` are stored with one channel and repeated
    on access (the same values `prepare(..., in_channels=3)` gives, at a third of the memory).

    augment: random affine + intensity jitter, applied to the `train` split only. The random
    parameters of sample i in epoch e depend only on (seed, e, i) (see `set_epoch`), so augmentation
    is reproducible whatever the batch order or the number of loader workers.
    max_per_task: keep the first `max_per_task` samples of each task after a shuffle seeded by
    (seed, task index).
    stream: keep the stored uint8 images on disk (memory-mapped, `open_array`) and prepare each batch
    when it is read, so a split larger than RAM trains; the values are the same as in-memory
    preparation (`prepare` works image by image).
    """

    def __init__(
        self,
        specs: Sequence[TaskSpec],
        split: str,
        image_size: int,
        in_channels: int,
        augment: bool = False,
        max_per_task: int | None = None,
        seed: int = 0,
        stream: bool = False,
    ) -> None:
        if not specs:
            raise ValueError("MultiTaskDataset needs at least one task")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        dims = {spec.spatial_dims for spec in specs}
        if len(dims) != 1:
            raise ValueError(f"all tasks must have the same spatial_dims, got {sorted(dims)}")
        self.specs = list(specs)
        self.split = split
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.spatial_dims = dims.pop()
        self.augment = bool(augment) and split == "train"
        self.seed = int(seed)
        self.epoch = 0
        self.label_width = max(spec.num_classes if spec.kind == "multilabel" else 1 for spec in self.specs)
        self.stream = bool(stream)

        self._images: list[torch.Tensor | np.ndarray] = []  # prepared tensors, or raw memory maps when streaming
        self._rows: list[np.ndarray | None] = []  # streaming with max_per_task: the kept rows of the raw array
        self._kept: list[np.ndarray | None] = []  # the rows of the stored split each task keeps (None: all)
        labels: list[torch.Tensor] = []
        for t, spec in enumerate(self.specs):
            raw, lab = read_split(spec.source, split, spec.num_classes, stream=self.stream)
            if (lab.ndim == 2) != (spec.kind == "multilabel"):  # the file changed since the specs were made
                found = "multi-label" if lab.ndim == 2 else "multi-class"
                raise DataError(f"{spec.source}: holds {found} labels, but task {spec.name!r} is {spec.kind}")
            keep = None
            if max_per_task is not None and len(raw) > max_per_task:
                rng = np.random.default_rng([seed_word(self.seed), t])
                keep = np.sort(rng.permutation(len(raw))[:max_per_task])
                lab = lab[keep]
                if self.stream:
                    self._rows.append(keep)
                else:
                    raw = raw[keep]
            if len(self._rows) <= t:
                self._rows.append(None)
            self._kept.append(keep)
            self._images.append(raw if self.stream else self._prepare(raw, spec))
            rows = torch.zeros(len(lab), self.label_width, dtype=torch.float32)
            if spec.kind == "multiclass":
                rows[:, 0] = torch.as_tensor(lab, dtype=torch.float32)
            else:
                rows[:, : spec.num_classes] = torch.as_tensor(lab, dtype=torch.float32)
            labels.append(rows)
        self._lay_out([len(lab) for lab in labels])
        self.labels = torch.cat(labels)
        self.task_ids = torch.repeat_interleave(
            torch.arange(len(self.specs), dtype=torch.int64), torch.as_tensor(self.task_sizes)
        )
        self._affine = AffineTransform(normalized=False, padding_mode="border", zero_centered=True)

    def stored_images(self, task: int) -> np.ndarray:
        """The task's images as the file stores them (uint8, in this dataset's order): what a user would give
        `lorkd apply` for these samples."""
        spec = self.specs[task]
        raw, _ = read_split(spec.source, self.split, spec.num_classes, stream=True)
        keep = self._kept[task]
        return np.asarray(raw if keep is None else raw[keep])

    def task_targets(self, task: int) -> torch.Tensor:
        """The task's targets in this dataset's order (class indices, or 0/1 label columns)."""
        lo = self.task_offsets[task]
        return task_labels(self.labels[lo:lo + self.task_sizes[task]], self.specs[task])

    def _prepare(self, raw: np.ndarray, spec: TaskSpec) -> torch.Tensor:
        """`prepare` on the whole split (in chunks of PREPARE_CHUNK images)."""
        channels = 1 if (not spec.rgb and self.in_channels == 3) else self.in_channels
        chunks = [
            prepare(raw[i : i + PREPARE_CHUNK], self.image_size, channels, self.spatial_dims)
            for i in range(0, len(raw), PREPARE_CHUNK)
        ]
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        return index

    def _image(self, task: int, local: torch.Tensor) -> torch.Tensor:
        if self.stream:
            rows = local.numpy() if self._rows[task] is None else self._rows[task][local.numpy()]
            order = np.argsort(rows, kind="stable")  # read the memory map front to back
            raw = np.asarray(self._images[task][rows[order]])
            prepared = self._prepare(raw, self.specs[task])
            x = torch.empty_like(prepared)
            x[torch.as_tensor(order)] = prepared
        else:
            x = self._images[task].index_select(0, local)
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, *x.shape[2:])
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = self._check(index)
        task = self.task_of(index)
        image = self._image(task, torch.tensor([index - self.task_offsets[task]]))
        if self.augment:
            image = self._augment(image, [index])
        return image[0].contiguous(), self.labels[index].clone(), task

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (DataLoader uses this instead of one `__getitem__` per sample)."""
        idx = torch.as_tensor([self._check(i) for i in indices], dtype=torch.int64)
        tasks = self.task_ids[idx]
        images = torch.empty((len(idx), self.in_channels) + (self.image_size,) * self.spatial_dims)
        for task in torch.unique(tasks).tolist():
            where = torch.nonzero(tasks == task).flatten()
            images[where] = self._image(task, idx[where] - self.task_offsets[task])
        if self.augment:
            images = self._augment(images, idx.tolist())
        return {"image": images, "label": self.labels[idx], "task": tasks}

    def augment_params(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The random augmentation of the given samples in the current epoch, a pure function of
        (seed, epoch, index): "angles" (n, 1 or 3) radians, "zoom" (n,), "shift" (n, dims) pixels,
        "gain" (n,), "offset" (n,)."""
        dims = self.spatial_dims
        n_angles = 1 if dims == 2 else 3
        u = counter_uniform(self.seed, self.epoch, indices, n_angles + 1 + dims + 2)
        limit = math.radians(ROTATE_DEGREES)
        cols = iter(range(u.shape[1]))
        take = lambda k: u[:, [next(cols) for _ in range(k)]] * 2 - 1  # noqa: E731 - uniform in [-1, 1)
        return {
            "angles": take(n_angles) * limit,
            "zoom": 1 + take(1)[:, 0] * SCALE_RANGE,
            "shift": take(dims) * TRANSLATE_FRACTION * self.image_size,
            "gain": 1 + take(1)[:, 0] * GAIN_RANGE,
            "offset": take(1)[:, 0] * OFFSET_RANGE,
        }

    def _augment(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """Random affine (MONAI `AffineTransform`, one matrix per sample, border padding, about the image
        centre) + intensity jitter, for the whole batch in one call."""
        p = self.augment_params(indices)
        theta = affine_matrices(p["angles"], p["zoom"], p["shift"])
        out = self._affine(images.contiguous(), torch.as_tensor(theta, dtype=torch.float32))
        shape = (-1,) + (1,) * (out.ndim - 1)
        gain = torch.as_tensor(p["gain"], dtype=out.dtype).reshape(shape)
        offset = torch.as_tensor(p["offset"], dtype=out.dtype).reshape(shape)
        return out * gain + offset


def affine_matrices(angles: np.ndarray, zoom: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(n, d+1, d+1) homogeneous matrices `translate @ rotate @ scale` (output -> input pixel coordinates,
    about the image centre; the convention of MONAI's `create_rotate`/`create_scale`/`create_translate`).
    angles: (n, 1) in 2D or (n, 3) in 3D (intrinsic rotations about axes 0, 1, 2, MONAI's "XYZ" order)."""
    n, dims = shift.shape
    c, s = np.cos(angles), np.sin(angles)
    if dims == 2:
        rot = np.stack([np.stack([c[:, 0], -s[:, 0]], -1), np.stack([s[:, 0], c[:, 0]], -1)], 1)
    else:
        one, zero = np.ones(n), np.zeros(n)
        rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c[:, 0], -s[:, 0]], -1),
                       np.stack([zero, s[:, 0], c[:, 0]], -1)], 1)
        ry = np.stack([np.stack([c[:, 1], zero, s[:, 1]], -1), np.stack([zero, one, zero], -1),
                       np.stack([-s[:, 1], zero, c[:, 1]], -1)], 1)
        rz = np.stack([np.stack([c[:, 2], -s[:, 2], zero], -1), np.stack([s[:, 2], c[:, 2], zero], -1),
                       np.stack([zero, zero, one], -1)], 1)
        rot = rx @ ry @ rz
    out = np.zeros((n, dims + 1, dims + 1))
    out[:, :dims, :dims] = rot * zoom[:, None, None]
    out[:, :dims, dims] = shift
    out[:, dims, dims] = 1.0
    return out


def task_labels(label: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
    """One task's targets from its (n, L) batch rows: (n,) int64 class indices for a multi-class task,
    (n, C) float 0/1 labels for a multi-label task."""
    if spec.kind == "multiclass":
        return label[:, 0].round().long()
    return label[:, : spec.num_classes].float()
