"""A routing plan: the task segments of one mixed-task batch, computed once and shared by every expert layer."""

from __future__ import annotations

import torch


class RoutePlan:
    """Task segments of one batch, computed once and shared by every expert layer."""

    def __init__(self, task_ids: torch.Tensor, num_tasks: int) -> None:
        if task_ids.ndim != 1 or task_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"task_ids must be a 1-D integer tensor, got {task_ids.dtype} {tuple(task_ids.shape)}")
        ids = task_ids.detach().to("cpu", torch.long)
        if ids.numel() == 0:
            raise ValueError("task_ids is empty")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= num_tasks:
            raise ValueError(f"task ids must be in 0..{num_tasks - 1}, got {low}..{high}")
        self.task_ids = task_ids.long()
        self.batch_size = ids.numel()
        self.num_tasks = num_tasks
        counts = torch.bincount(ids, minlength=num_tasks)
        self.tasks = [t for t in range(num_tasks) if counts[t] > 0]
        self.sizes = [int(counts[t]) for t in self.tasks]
        if bool((ids[1:] >= ids[:-1]).all()):
            self._perm = self._inverse = None
        else:
            perm = torch.argsort(ids, stable=True)
            self._perm, self._inverse = perm, torch.argsort(perm)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._ids_on: dict[torch.device, torch.Tensor] = {}

    @property
    def is_sorted(self) -> bool:
        return self._perm is None

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._perm.to(device), self._inverse.to(device))
        return self._on[device]

    def task_ids_on(self, device: torch.device) -> torch.Tensor:
        """The task ids on `device` (copied once per device, not once per layer)."""
        if device not in self._ids_on:
            self._ids_on[device] = self.task_ids.to(device)
        return self._ids_on[device]

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The samples of each present task, in `self.tasks` order."""
        if self._perm is not None:
            x = x.index_select(0, self._indices(x.device)[0])
        return [x] if len(self.tasks) == 1 else list(x.split(self.sizes))

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of `split`: per-task results back in batch order."""
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self._inverse is not None:
            y = y.index_select(0, self._indices(y.device)[1])
        return y
