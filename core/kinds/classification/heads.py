"""Per-task classification heads on shared pooled features."""

from __future__ import annotations

import torch
from torch import nn


class TaskHeads(nn.Module):
    """One linear classifier per task on shared pooled features.

    `heads[t]` is task t's `nn.Linear(in_features, num_classes[t])`. The forward routes each sample to
    its own task's head: samples of one task go through that head together, in batch order.
    """

    def __init__(self, in_features: int, num_classes: list[int]) -> None:
        super().__init__()
        if not num_classes:
            raise ValueError("num_classes needs at least one task")
        if any(int(n) < 1 for n in num_classes):
            raise ValueError(f"every task needs at least one class, got num_classes={list(num_classes)}")
        self.in_features = in_features
        self.num_classes = [int(n) for n in num_classes]
        self.heads = nn.ModuleList(nn.Linear(in_features, n) for n in self.num_classes)

    @property
    def num_tasks(self) -> int:
        return len(self.heads)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor) -> list[torch.Tensor | None]:
        """Logits per task: element t holds `heads[t]` applied to the samples with task_ids == t (in
        batch order), shape (n_t, num_classes[t]); None when no sample of task t is in the batch.

        features: (B, in_features); task_ids: (B,) integer task indices in [0, num_tasks).
        A batch sorted by task is split into contiguous views (no copy); any other batch is first
        gathered into task order by a stable sort (one gather).
        """
        if features.dim() != 2 or task_ids.shape != features.shape[:1]:
            raise ValueError(
                f"expected features (B, F) and task_ids (B,), got {tuple(features.shape)} and "
                f"{tuple(task_ids.shape)}"
            )
        num_tasks = len(self.heads)
        if task_ids.numel() == 0:
            return [None] * num_tasks
        task_ids = task_ids.long()
        try:
            counts = torch.bincount(task_ids, minlength=num_tasks)
        except RuntimeError:  # negative ids
            raise ValueError(f"task ids must be in [0, {num_tasks}), got {task_ids.min().item()}") from None
        is_sorted = (task_ids[1:] >= task_ids[:-1]).all()
        # one host sync for both the counts and the sortedness
        info = torch.cat((counts, is_sorted.long().view(1))).tolist()
        counts_list, sorted_batch = info[:-1], bool(info[-1])
        if len(counts_list) > num_tasks:
            raise ValueError(f"task ids must be in [0, {num_tasks}), got {len(counts_list) - 1}")
        if not sorted_batch:
            features = features[torch.argsort(task_ids, stable=True)]
        chunks = features.split(counts_list)
        pairs = zip(self.heads, chunks, counts_list, strict=True)
        return [head(chunk) if n else None for head, chunk, n in pairs]
