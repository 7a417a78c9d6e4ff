"""Evaluation of segmentation models.

Validation (every epoch, to keep each task's best state): a fixed set of patches centred on the validation cases,
scored on their held-out voxels only (`val_patches`, `validate`): cheap, on the working grid.

Test (`test`): what is deployed. Each standalone network (an exported expert loaded from its bundle, the teacher's
view of the task, a baseline) segments the whole input volume through the bundle's own code path
(`runtime.segment_volume` with the bundle's preprocessing block: the same label map `lorkd apply` writes, on the
input's native grid), and the label map is compared with the reference label map on the held-out voxels of each
test case. Dice is pooled over the test cases (2 sum|P.G| / (sum|P| + sum|G|) per structure, then the mean over
structures); per case, Dice and HD95 (mm, on the case's region) are kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from torch import nn

from core import distributed
from core.distributed import SINGLE, Dist
from core.experts import route
from core.io import Volume, read_volume
from core.kinds.base import RunContext, TaskScores
from core.kinds.segmentation.cache import CachedArray
from core.kinds.segmentation.data import IGNORE, HeldOutCase, crop, window_box
from core.kinds.segmentation.runtime import segment_volume

VAL_BATCH = 4


class TaskView(nn.Module):
    """A network restricted to one task's output channels (the teacher's slice for that task)."""

    def __init__(self, net: nn.Module, channels: slice) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.channels]


# ------------------------------------------------------------------------------------------------ validation
class LazyPatches:
    """Validation patches of streamed cases, read from the volume cache when a batch asks for them: indexes like
    the stacked tensor of the in-RAM path (`x[lo:hi]`, `x[lo:hi, 0]`, `len(x)`)."""

    def __init__(self, spots: list[tuple[HeldOutCase, list[int], tuple[slice, slice, slice]]], patch: Sequence[int],
                 part: str) -> None:
        self.spots, self.patch, self.part = spots, [int(p) for p in patch], part

    def __len__(self) -> int:
        return len(self.spots)

    def _one(self, i: int) -> torch.Tensor:
        case, start, region = self.spots[i]
        if self.part == "image":
            return crop(case.pair.image, start, self.patch)
        out = torch.full((1, *self.patch), IGNORE, dtype=torch.int64)  # IGNORE outside the region
        shape = case.pair.label.shape
        region = tuple(slice(r.start, min(r.stop, n)) for r, n in zip(region, shape, strict=True))  # a tile may
        # overhang a volume smaller than a patch
        box = window_box(region, start, self.patch)
        if box is not None:
            src = tuple(slice(b.start + s, b.stop + s) for b, s in zip(box, start, strict=True))
            out[(0, *box)] = torch.as_tensor(np.asarray(case.pair.label[src])).long()
        return out

    def __getitem__(self, index) -> torch.Tensor:
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        if isinstance(rows, slice):
            return torch.stack([self._one(i) for i in range(len(self))[rows]])[(slice(None), *rest)]
        return self._one(range(len(self))[rows])[rest]


def val_patches(cases: Sequence[HeldOutCase], patch: Sequence[int]
                ) -> tuple[torch.Tensor | LazyPatches, torch.Tensor | LazyPatches]:
    """(images (N, 1, *patch), labels (N, 1, *patch) int64) of a task's validation cases: one patch centred on each
    held-out region with the voxels outside the region labelled IGNORE; for a held-out whole volume, patches
    tiling it. Cases in the volume cache (streamed) give `LazyPatches`, read batch by batch."""
    spots = [(case, [(s.start + s.stop) // 2 - p // 2 for s, p in zip(region, patch, strict=True)], region)
             for case in cases for region in _val_regions(case, patch)]
    if any(isinstance(case.pair.image, CachedArray) for case in cases):
        return LazyPatches(spots, patch, "image"), LazyPatches(spots, patch, "label")
    images, labels = [], []
    for case, start, region in spots:
        pair = case.pair
        held = torch.full(pair.label.shape, IGNORE, dtype=torch.uint8)
        held[region] = pair.label[region]
        images.append(crop(pair.image, start, patch))
        labels.append(crop(held[None], start, patch, fill=IGNORE).long())
    return torch.stack(images), torch.stack(labels)


def _val_regions(case: HeldOutCase, patch: Sequence[int]) -> list[tuple[slice, slice, slice]]:
    """The working-grid regions `val_patches` centres a patch on: the case's region, or a tiling of its volume."""
    shape = tuple(case.pair.label.shape)
    if case.work_region is not None:
        return [case.work_region]
    steps = [range(0, max(n - p, 0) + 1, p) for n, p in zip(shape, patch, strict=True)]
    return [tuple(slice(int(a), int(a) + p) for a, p in zip(start, patch, strict=True))
            for start in np.array(np.meshgrid(*steps, indexing="ij")).reshape(3, -1).T]


def pooled_dice(counts: np.ndarray) -> np.ndarray:
    """Per structure Dice from summed (intersection, predicted, reference) voxel counts (S, 3); 1 where a structure
    is absent from both."""
    inter, pred, ref = counts[:, 0], counts[:, 1], counts[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pred + ref > 0, 2 * inter / np.maximum(pred + ref, 1), 1.0)


def overlap_counts(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, num_classes: int,
                   keep: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """(intersection, predicted, reference) voxel counts per structure 1..num_classes-1, over the voxels `keep`."""
    pred, ref = torch.as_tensor(np.asarray(pred)).long(), torch.as_tensor(np.asarray(ref)).long()
    if keep is not None:
        keep = torch.as_tensor(np.asarray(keep)).bool()
        pred, ref = pred[keep], ref[keep]
    out = np.zeros((num_classes - 1, 3))
    for k in range(1, num_classes):
        p, r = pred == k, ref == k
        out[k - 1] = (int((p & r).sum()), int(p.sum()), int(r.sum()))
    return out


@torch.no_grad()
def validate(run: RunContext, model: str, tasks: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """Validation Dice per task (pooled over the validation patches' held-out voxels) of the teacher or the routed
    student; `tasks`: only these (default all). In a distributed run each rank scores every world_size-th batch
    of patches and the voxel counts are summed over the ranks (the same numbers as one process)."""
    out = {}
    rank, world = run.dist.rank, run.dist.world_size
    for t in range(len(run.data.tasks)) if tasks is None else tasks:
        info = run.data.tasks[t]
        images, labels = run.data.extra["val_patches"][t]
        counts = np.zeros((info.num_classes - 1, 3))
        for lo in range(rank * VAL_BATCH, len(images), VAL_BATCH * world):
            x = images[lo:lo + VAL_BATCH].to(run.device)
            tid = torch.full((x.shape[0],), t, dtype=torch.int64, device=run.device)
            if model == "teacher":
                logits = run.teacher(x, tid)[1][t]
            else:
                with route(run.student, tid):
                    logits = run.student(x, tid)[1][t]
            y = labels[lo:lo + VAL_BATCH, 0]
            counts += overlap_counts(logits.argmax(dim=1).cpu(), y, info.num_classes, y != IGNORE)
        if run.dist.enabled:
            counts = np.asarray(distributed.all_reduce_sum(counts.ravel().tolist(), run.dist, run.device)
                                ).reshape(counts.shape)
        dice, metric = pooled_dice(counts), info.metric  # "agreement": a label-free task's Dice with the teacher
        out[info.name] = {metric: float(dice.mean()),
                          **{f"{metric}/{name}": float(d) for name, d in zip(info.labels[1:], dice, strict=True)}}
    return out


# ------------------------------------------------------------------------------------------------------ test
def _hd95(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float]) -> list[float]:
    """HD95 (mm) per structure between two label maps of one case (NaN where either lacks the structure)."""
    p = torch.nn.functional.one_hot(torch.as_tensor(pred).long(), num_classes).movedim(-1, 0)[None].float()
    r = torch.nn.functional.one_hot(torch.as_tensor(ref).long(), num_classes).movedim(-1, 0)[None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95, spacing=list(spacing))[0]
    out = []
    for k in range(1, num_classes):
        value = float(hd[k - 1]) if bool(p[0, k].any()) and bool(r[0, k].any()) else math.nan
        out.append(value if math.isfinite(value) else math.nan)
    return out


def _case_arrays(case: HeldOutCase, prediction: np.ndarray, reference: np.ndarray):
    """The prediction and reference of a case on its own region of the native grid (a box of it)."""
    box = case.native_box()
    return (prediction, reference) if box is None else (prediction[box], reference[box])


LabelSource = Callable[[Volume], np.ndarray]  # a volume -> a label map (Z, Y, X) on its grid (a teacher's)


def test_scores(cases: Sequence[HeldOutCase], labels: list[str], net: nn.Module, pre: dict, description: str,
                check=None, metric: str = "dice", reference: LabelSource | None = None,
                agreement: LabelSource | None = None, dist: Dist = SINGLE) -> TaskScores:
    """A task's test scores of one standalone network through the deployed path (see the module docstring).

    The network segments each input with `pre` (a user's foundation model, which has its own way, through its
    `label_map`). Reference: the case's label map, or `reference(volume)` (a label-free task: the foundation
    model's); `metric` names the headline ("dice", or "agreement" against a foundation model). `agreement`: a
    foundation model's label maps, also compared with (metrics "agreement", "agreement/<label>").
    Distributed (`dist`): each rank segments a share of the input volumes and the per-case results are gathered
    in case order, so that every number is the one a single process gives."""
    num_classes = len(labels)
    groups: list[list[HeldOutCase]] = []  # runs of cases on one input volume: each volume is segmented once
    for case in cases:
        if groups and str(groups[-1][0].image_path) == str(case.image_path):
            groups[-1].append(case)
        else:
            groups.append([case])

    def score_volume(g: int) -> list[tuple[dict, np.ndarray, np.ndarray | None]]:
        """(record, overlap counts, overlap counts with the foundation model or None) of each case of group g."""
        first = groups[g][0]
        volume = read_volume(first.image_path)
        if hasattr(net, "label_map"):
            prediction = net.label_map(volume, check)
        else:
            prediction = segment_volume(net, volume, pre, check=check)
        if first.pair.label_path is not None:
            ref_map = np.asarray(read_volume(first.pair.label_path).array).astype(np.int64)
        else:
            ref_map = reference(volume)
        teacher_map = agreement(volume) if agreement else None
        out = []
        for case in groups[g]:
            pred, ref = _case_arrays(case, prediction, ref_map)
            c = overlap_counts(pred, ref, num_classes)
            dice = pooled_dice(c)
            hd = _hd95(pred, ref, num_classes, volume.spacing[::-1])  # arrays are (Z, Y, X): spacing in that order
            record = {"case": case.name, metric: float(dice.mean())}
            for name, d, h in zip(labels[1:], dice, hd, strict=True):
                record[f"{metric}/{name}"] = float(d)
                record[f"hd95/{name}"] = h
            agree_counts = None
            if teacher_map is not None:
                agree_counts = overlap_counts(pred, _case_arrays(case, prediction, teacher_map)[1], num_classes)
                record["agreement"] = float(pooled_dice(agree_counts).mean())
            out.append((record, c, agree_counts))
        return out

    results = [r for group in distributed.shared_map(score_volume, len(groups), dist) for r in group]
    per_case = [record for record, _, _ in results]
    counts = [c for _, c, _ in results]
    agree = [a for _, _, a in results if a is not None]
    counts_array = np.stack(counts)
    dice = pooled_dice(counts_array.sum(axis=0))
    hds = [r[f"hd95/{name}"] for r in per_case for name in labels[1:] if not math.isnan(r[f"hd95/{name}"])]
    metrics = {metric: float(dice.mean()), "hd95": float(np.mean(hds)) if hds else math.nan}
    for k, name in enumerate(labels[1:]):
        metrics[f"{metric}/{name}"] = float(dice[k])
        values = [r[f"hd95/{name}"] for r in per_case if not math.isnan(r[f"hd95/{name}"])]
        metrics[f"hd95/{name}"] = float(np.mean(values)) if values else math.nan
    if agree:
        together = pooled_dice(np.stack(agree).sum(axis=0))
        metrics["agreement"] = float(together.mean())
        metrics.update({f"agreement/{name}": float(d) for name, d in zip(labels[1:], together, strict=True)})

    def headline(indices) -> float:
        return float(pooled_dice(counts_array[np.asarray(indices)].sum(axis=0)).mean())

    return TaskScores(metrics, per_case, headline, description)
