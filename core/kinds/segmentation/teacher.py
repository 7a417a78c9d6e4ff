"""A user's own segmentation foundation model (a MONAI bundle or TorchScript file, `core.models.foundation`) behind
the teacher interface of segmentation runs.

The foundation model sees volumes its own way (orientation, spacing, intensity, sliding window: `ForeignPre`),
which is not the student's working grid. So it is not run on the student's patches: it segments each whole volume
once, with its own preprocessing, and its probabilities are brought onto the student's working grid (reoriented,
resampled trilinearly; grids share the volume's outer edges), where they are the targets of a label-free task
(their argmax) and the distillation targets of every task (`SegCase.soft`). At test time it segments each held-out
volume the same way onto the input's native grid: the reference of a label-free task (agreement with the
foundation model) and, where labels exist, the foundation model's own score.

A task takes the channels `teacher_labels` names: its classes are (background = everything else, those
channels). With a softmax model, p(background) = 1 - sum of the chosen channels' probabilities; with a sigmoid
model (channels independent), p(background) = prod(1 - p_k) and the rest is shared in proportion to p_k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from core.config import Config
from core.errors import CheckpointError, ConfigError
from core.io import Volume
from core.models.foundation import ForeignPre, Foundation, load_bundle_foundation, load_torchscript, probe_out_channels
from core.preprocess import volume as prep
from core.preprocess.sliding import sliding_logits

EPS = 1e-4  # probabilities are clamped to [EPS, 1] before their log is a distillation target


class _Window(nn.Module):
    """The foundation model's activated outputs, only the channels the run uses (memory: a whole-body model may
    have a hundred channels)."""

    def __init__(self, net: nn.Module, channels: Sequence[int], activation: str) -> None:
        super().__init__()
        self.net, self.activation = net, activation
        self.register_buffer("channels", torch.as_tensor(list(channels), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, list | tuple):
            out = out[0]
        out = out.float()
        out = torch.sigmoid(out) if self.activation == "sigmoid" else torch.softmax(out, dim=1)
        return out.index_select(1, self.channels.to(out.device))


class ForeignSegTeacher(nn.Module):
    """The foundation model of a run: `forward(x)` gives its raw outputs (counted for size, MACs and latency);
    `task_probabilities` / `label_map` give a task's classes on the student's grid / the input's native grid."""

    def __init__(self, foundation: Foundation, task_channels: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = foundation.network
        self.foundation = foundation
        self.task_channels = [list(c) for c in task_channels]
        self.used = sorted({c for chans in self.task_channels for c in chans})
        self.window = _Window(self.net, self.used, foundation.pre.activation)
        self._cache: dict[str, tuple[torch.Tensor, dict]] = {}
        self._maps: dict[tuple[int, str], np.ndarray] = {}  # test volumes' label maps (segmented once per task)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, list | tuple) else out

    @property
    def pre(self) -> dict:
        return self.foundation.pre.as_dict()

    def probabilities(self, key: str, array_zyx: np.ndarray, spacing: Sequence[float], direction: Sequence[float],
                      check: Callable[[], None] | None = None) -> tuple[torch.Tensor, dict]:
        """(probabilities of the used channels (U, ...) on the model's own grid, that grid's geometry info), for
        the volume `key` (kept for the volume's next task)."""
        if key not in self._cache:
            pre = self.pre
            image, info = prep.prepare_volume(array_zyx, spacing, direction, pre)
            roi = pre["roi_size"] or [int(n) for n in image.shape[1:]]
            probs = sliding_logits(self.window, image, roi, pre["overlap"], pre["blend"], check=check)
            self._cache = {key: (probs.half(), info)}  # one volume at a time: tasks on one volume come together
        return self._cache[key]

    def task_probabilities(self, task: int, probs: torch.Tensor) -> torch.Tensor:
        """(K+1, ...) class probabilities of task `task` from the used channels' probabilities."""
        chosen = torch.stack([probs[self.used.index(c)].float() for c in self.task_channels[task]])
        if self.foundation.pre.activation == "sigmoid":
            background = torch.prod(1 - chosen, dim=0)
            chosen = chosen / chosen.sum(dim=0).clamp_min(1e-6) * (1 - background)
        else:
            background = (1 - chosen.sum(dim=0)).clamp_min(0)
        return torch.cat([background[None], chosen])

    def targets_on(self, task: int, key: str, array_zyx: np.ndarray, spacing: Sequence[float],
                   direction: Sequence[float], work_shape: Sequence[int]) -> torch.Tensor:
        """Task `task`'s class log-probabilities (K+1, *work_shape) float16 on the student's working grid (RAS
        canonical) of the volume."""
        probs, info = self.probabilities(key, array_zyx, spacing, direction)
        task_probs = self.task_probabilities(task, probs)
        ras = prep.canonical_axes(direction)
        task_probs = prep.reorient_grid(task_probs, (info["perm"], info["flips"]), ras)
        task_probs = prep.resample(task_probs, work_shape, "trilinear")
        return torch.log(task_probs.clamp(EPS, 1.0)).half()

    def label_map(self, task: int, volume: Volume, check: Callable[[], None] | None = None) -> np.ndarray:
        """Task `task`'s label map (Z, Y, X) uint8 on the volume's own grid, as the foundation model gives it."""
        key = str(volume.metadata.get("source") or id(volume))
        if (task, key) not in self._maps:
            probs, info = self.probabilities(key, volume.array, volume.spacing, volume.direction, check)
            self._maps[(task, key)] = prep.restore_labels(self.task_probabilities(task, probs), info)
        return self._maps[(task, key)]


class ForeignTaskView(nn.Module):
    """The foundation model as one task's standalone segmenter (what `test` scores for the teacher); it segments
    whole volumes its own way (`label_map`), not patches."""

    def __init__(self, teacher: ForeignSegTeacher, task: int) -> None:
        super().__init__()
        self.teacher, self.task = teacher, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)

    def label_map(self, volume: Volume, check: Callable[[], None] | None = None) -> np.ndarray:
        return self.teacher.label_map(self.task, volume, check)


def load_foreign_teacher(config: Config, device: torch.device) -> ForeignSegTeacher:
    """The run's foundation model from `teacher.bundle` or `teacher.torchscript`, the config's teacher fields
    overriding what a bundle says, each task's `teacher_labels` resolved to channels (checked against the model's
    output channels)."""
    t = config.teacher
    if t.bundle:
        foundation = load_bundle_foundation(t.bundle, trust=t.trust_bundle)
    else:
        defaults = ForeignPre(axcodes="RAS", spacing=list(config.data.spacing),
                              intensity=dict(vars(config.data.intensity)), roi_size=list(config.data.patch_size))
        foundation = Foundation(load_torchscript(t.torchscript), None, defaults, str(t.torchscript), "torchscript")
    pre = foundation.pre
    for key in ("spacing", "roi_size", "overlap", "activation", "intensity"):
        value = getattr(t, key)
        if value is not None:
            setattr(pre, key, dict(value) if key == "intensity" else value)
    if t.orientation is not None:
        pre.axcodes = None if t.orientation == "none" else t.orientation
    if t.labels:
        foundation.channels = list(t.labels)
    if foundation.out_channels is None or foundation.form == "torchscript":
        count = probe_out_channels(foundation, pre.roi_size or config.data.patch_size)
        if foundation.channels and len(foundation.channels) != count:
            raise CheckpointError(f"{foundation.source}: the model gives {count} output channels but its labels "
                                  f"name {len(foundation.channels)} ({', '.join(foundation.channels)})")
        foundation.out_channels = count
    channels = []
    for i, task in enumerate(config.tasks):
        chosen = [foundation.channel_index(label, f"tasks.{i}.teacher_labels.{j}")
                  for j, label in enumerate(task.teacher_labels or [])]
        if not chosen:
            raise ConfigError("a task of a bundle or TorchScript foundation model needs teacher_labels (the "
                              "model's channels this expert segments)", f"tasks.{i}.teacher_labels")
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"names a channel twice ({chosen})", f"tasks.{i}.teacher_labels")
        if task.label_names and len(task.label_names) != len(chosen):
            raise ConfigError(f"the task has {len(task.label_names)} label(s) in its label maps but "
                              f"{len(chosen)} teacher_labels; they must match one for one", f"tasks.{i}.teacher_labels")
        channels.append(chosen)
    teacher = ForeignSegTeacher(foundation, channels)
    return teacher.to(device).eval()

