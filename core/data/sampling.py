"""Mixed-task sampling shared by every task kind: task layout, task-sorted batches and the loader.

- `TaskLayout`: a dataset whose tasks lie contiguously (task t holds indices `task_offsets[t] ..` `+ task_sizes[t]
  - 1`); a kind's dataset subclasses it.
- `MultiTaskBatchSampler` yields mixed-task batches of dataset indices, each sorted by task so the
  knowledge-separation convolutions see contiguous task segments; epoch e's batches are a function of
  (seed, e) only, so a resumed run replays them exactly.
- `make_loader` wraps both in a `DataLoader` whose batches are dicts `{"image", "label", "task"}`.
- `counter_uniform`: counter-based randomness (a sample's augmentation depends on (seed, epoch, index) only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def collate_batch(items: dict[str, torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict:
    """Collate `(image, label, task_id)` items into `{"image", "label", "task"}`; a dict that a dataset's
    `__getitems__` already built is returned as is."""
    if isinstance(items, dict):
        return items
    images, labels, tasks = zip(*items, strict=True)
    return {
        "image": torch.stack(images),
        "label": torch.stack(labels),
        "task": torch.as_tensor(tasks, dtype=torch.int64),
    }


class TaskLayout(Dataset):
    """A dataset whose tasks lie contiguously: task t holds indices `task_offsets[t] ..` `+ task_sizes[t] - 1`
    (what `MultiTaskBatchSampler` draws from); `set_epoch` selects the epoch's augmentation."""

    def _lay_out(self, task_sizes: Sequence[int]) -> None:
        self.task_sizes: list[int] = [int(n) for n in task_sizes]
        self.task_offsets: list[int] = [int(v) for v in np.cumsum([0] + self.task_sizes[:-1])]
        self._ends = np.cumsum(self.task_sizes)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s augmentation (a function of (seed, epoch, sample index) only)."""
        self.epoch = int(epoch)

    def task_of(self, index: int) -> int:
        """The task id of dataset index `index`."""
        return int(np.searchsorted(self._ends, index, side="right"))


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def seed_word(value: int) -> int:
    """`value` as a non-negative 64-bit word for `np.random.default_rng`, which rejects negative seeds
    (a config may say `seed: -1`; torch accepts it). Identity for 0 <= value < 2**64."""
    return int(value) % 2**64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def counter_uniform(seed: int, epoch: int, indices: Sequence[int], count: int) -> np.ndarray:
    """(len(indices), count) floats in [0, 1) that depend only on (seed, epoch, index, column):
    counter-based randomness, so a sample's augmentation does not depend on batch order or workers."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    key = _splitmix64(np.full(1, seed % 2**64, dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(epoch % 2**64))
    rows = _splitmix64(key ^ idx)[:, None]
    z = _splitmix64(rows ^ np.arange(count, dtype=np.uint64)[None] * np.uint64(0xD1B54A32D192ED03))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices over tasks laid out contiguously (sizes `task_sizes`).

    sampling "natural": every sample equally likely (a shuffled pass over the data);
    "balanced": every task equally likely, samples drawn with replacement within the task, with as many
    batches per epoch as "natural". Every batch is sorted by task id (stable: random order within a task).
    The order of epoch e depends only on (seed, e): call `set_epoch(e)` before iterating.
    shuffle=False: every sample once, in index order (for evaluation; `sampling` is ignored).
    drop_last: drop a final incomplete batch (a dataset smaller than one batch still gives one batch).
    rank/world_size (distributed runs): training batches are global batches of `batch_size`, of which
    this rank keeps every world_size-th sample (still mixed and task-sorted), so the union over the
    ranks is exactly the single-process batch; evaluation (shuffle=False) gives every rank whole
    batches in turn.
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        sampling: str = "natural",
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got {rank} of {world_size}")
        if shuffle and batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the {world_size} processes")
        self.rank, self.world_size = int(rank), int(world_size)
        if sampling not in ("natural", "balanced"):
            raise ValueError(f"sampling must be natural or balanced, got {sampling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.task_sizes = [int(n) for n in task_sizes]
        if any(n < 0 for n in self.task_sizes):
            raise ValueError(f"task sizes must be >= 0, got {self.task_sizes}")
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.total = sum(self.task_sizes)
        self._offsets = np.cumsum([0] + self.task_sizes[:-1]).astype(np.int64)
        self._task_of = np.repeat(np.arange(len(self.task_sizes)), self.task_sizes)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield epoch `epoch`'s batches."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.total == 0:
            return 0
        if self.drop_last and self.shuffle:
            return max(1, self.total // self.batch_size)
        batches = math.ceil(self.total / self.batch_size)
        if self.shuffle:
            return batches
        return len(range(self.rank, batches, self.world_size))

    def _sizes(self) -> list[int]:
        """Batch sizes of one epoch."""
        n, b = self.total, self.batch_size
        full = n // b
        if self.shuffle and self.drop_last:
            return [b] * full if full else ([n] if n else [])
        return [b] * full + ([n - full * b] if n % b else [])

    def __iter__(self) -> Iterator[list[int]]:
        sizes = self._sizes()
        if not self.shuffle:
            starts = np.cumsum([0] + sizes[:-1])
            for start, size in list(zip(starts, sizes, strict=True))[self.rank :: self.world_size]:
                yield list(range(int(start), int(start) + size))
            return
        rng = np.random.default_rng([seed_word(self.seed), seed_word(self.epoch)])
        count = sum(sizes)
        if self.sampling == "natural":
            order = rng.permutation(self.total)[:count]
        else:
            present = np.flatnonzero(np.asarray(self.task_sizes) > 0)
            tasks = present[rng.integers(0, len(present), count)]
            sizes_of = np.asarray(self.task_sizes)[tasks]
            within = np.minimum((rng.random(count) * sizes_of).astype(np.int64), sizes_of - 1)
            order = self._offsets[tasks] + within
        start = 0
        for size in sizes:
            batch = order[start : start + size]
            start += size
            batch = batch[np.argsort(self._task_of[batch], kind="stable")][self.rank :: self.world_size]
            yield [int(i) for i in batch]


def make_loader(
    dataset: TaskLayout,
    batch_size: int,
    sampling: str = "natural",
    seed: int = 0,
    train: bool = True,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """DataLoader over `dataset` with a `MultiTaskBatchSampler` as its `batch_sampler`.

    train=True: shuffled task-sorted batches (`sampling`), incomplete last batch dropped;
    train=False: every sample once in order, last batch kept. Batches are dicts
    `{"image": (B, C, S, S[, S]) float32, "label": (B, L) float32, "task": (B,) int64}`.
    Call `loader.batch_sampler.set_epoch(e)` (and `dataset.set_epoch(e)`) at each epoch start.
    rank/world_size: this process's share in a distributed run (see MultiTaskBatchSampler).
    """
    sampler = MultiTaskBatchSampler(
        dataset.task_sizes,
        batch_size,
        sampling=sampling if train else "natural",
        seed=seed,
        shuffle=train,
        drop_last=train,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_batch,
        pin_memory=torch.cuda.is_available(),
    )


class SingleTaskView(TaskLayout):
    """One task of a mixed-task dataset, laid out as the same task (task `task`, the others empty), so that the
    same sampler and loader train on it alone: item i is the base dataset's i-th sample of that task, with the same
    augmentation as in the mixed-task run (a function of the base index)."""

    def __init__(self, base: TaskLayout, task: int) -> None:
        self.base, self.task = base, int(task)
        self.offset = base.task_offsets[task]
        self._lay_out([n if t == task else 0 for t, n in enumerate(base.task_sizes)])

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, index: int):
        return self.base[self.offset + int(index)]

    def __getitems__(self, indices: Sequence[int]):
        return self.base.__getitems__([self.offset + int(i) for i in indices])
