"""One training phase (foundation pre-training or decomposition): optimizer, schedule, AMP, clipping,
events, pause/stop, metrics.jsonl, and an atomic checkpoint after every epoch for exact resume.

Exact resume: each epoch's data order and augmentation are a function of (seed, phase, epoch) only
(`seed_epoch` + the sampler's `set_epoch`), and the checkpoint holds model, optimizer, schedule and
scaler state, so a run resumed at an epoch boundary replays exactly what an uninterrupted run does.

Out of GPU memory (torch.OutOfMemoryError in a step of a single-process run): the cache is freed and the step
is redone with each batch split in two (then four, ...) parts whose gradients accumulate, so the effective
batch and the numbers stay the same (up to batch-norm statistics); the user is told in a `warning:` log line.
When the parts would hold fewer than MIN_CHUNK samples the run stops with `OutOfMemory` (a LorkdError that
suggests the CPU or a smaller batch; the last epoch checkpoint stays resumable).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed
from core.config import TrainConfig
from core.distributed import SINGLE, Dist
from core.errors import LorkdError, RunStopped
from core.events import Control, EvalEvent, Observer, StepEvent
from core.files import atomic_save
from core.train.metrics_log import MetricsLog

# compute_loss(batch) -> (mean loss over the batch, {task name: (summed loss, sample count)})
LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, tuple[float, int]]]]
EvalFn = Callable[[int], dict[str, dict[str, float]]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, phase: str, epoch: int) -> None:
    """Reseed every RNG at an epoch start from (seed, phase, epoch) only."""
    seed_everything((seed * 1_000_003 + zlib.crc32(phase.encode()) * 7919 + epoch) % 2**31)


def build_optimizer(params: Iterable[nn.Parameter], train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int, steps_per_epoch: int):
    warmup = int(round(train.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 autocast on CUDA GPUs that support it, fp16 otherwise; none on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class Phase:
    """Everything one phase needs; `modules` are saved in the checkpoint under their names."""

    name: str
    modules: dict[str, nn.Module]
    params: list[nn.Parameter]
    compute_loss: LossFn
    loader: Any  # DataLoader whose batch_sampler has set_epoch
    epochs: int
    lr: float
    evaluate: EvalFn | None = None
    model: str = "student"  # which model the phase trains, for the eval events
    # after each epoch's evaluation: (epoch, its metrics or None); e.g. keeping each task's best state
    after_epoch: Callable[[int, dict[str, dict[str, float]] | None], None] | None = None
    # what else the epoch checkpoint holds (under "extra") and how a resumed phase gets it back
    extra_state: Callable[[], dict[str, Any]] | None = None
    load_extra: Callable[[dict[str, Any]], None] | None = None


NAN_LR_FACTOR = 0.1  # the learning rate is lowered once by this factor after a non-finite loss


class Diverged(LorkdError):
    """The loss became NaN/inf again after the learning rate had already been lowered."""


class OutOfMemory(LorkdError):
    """Out of accelerator memory even with the batch split into the smallest parts (MIN_CHUNK samples)."""


MIN_CHUNK = 2  # smallest part of a batch split after running out of memory (batch norm needs > 1 sample)


def _split_batch(batch: dict[str, torch.Tensor], chunks: int) -> list[dict[str, torch.Tensor]]:
    """`chunks` contiguous parts of a batch (task-sorted batches stay task-sorted); fewer for a small batch, so
    that every part holds at least MIN_CHUNK samples."""
    size = int(batch["task"].shape[0])
    chunks = max(1, min(chunks, size // MIN_CHUNK))
    bounds = [round(i * size / chunks) for i in range(chunks + 1)]
    return [{k: v[lo:hi] for k, v in batch.items()} for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            if hi > lo]


def _free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class GoodState:
    """An in-memory copy of the models and optimizer at the last epoch start: what a
    non-finite loss rolls back to."""

    def __init__(self, phase: Phase, optimizer) -> None:
        self.phase, self.optimizer = phase, optimizer
        self.save()

    def save(self) -> None:
        self.models = {k: _deep_clone(m.state_dict()) for k, m in self.phase.modules.items()}
        self.optim = _deep_clone(self.optimizer.state_dict())

    def restore(self) -> None:
        for key, module in self.phase.modules.items():
            module.load_state_dict(self.models[key])
        self.optimizer.load_state_dict(self.optim)


def _deep_clone(obj):
    if torch.is_tensor(obj):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _deep_clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_clone(v) for v in obj]
    return obj


class StepModule(nn.Module):
    """The phase's trainable modules under one nn.Module whose forward is the phase's loss, so that
    DistributedDataParallel sees the whole step (the loss function still calls the modules itself)."""

    def __init__(self, phase: Phase) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(phase.modules)
        self.compute_loss = phase.compute_loss

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.compute_loss(batch)


def wrap_ddp(phase: Phase, device: torch.device, info: Dist) -> nn.Module:
    """The step module, under DistributedDataParallel in a distributed run.

    find_unused_parameters=True: a task absent from this rank's share of the batch leaves its experts
    and head without gradient, which plain DDP reports as an error (benchmarks/ddp.py measures the cost).
    """
    net = StepModule(phase)
    if not info.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)


def _merge_windows(windows: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for window in windows:
        for task, (total, count) in window.items():
            acc = merged.setdefault(task, [0.0, 0])
            acc[0] += total
            acc[1] += count
    return merged


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_phase(
    phase: Phase,
    train: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    checkpoint_path: Path,
    observer: Observer,
    control: Control,
    log: MetricsLog,
    resume_state: dict[str, Any] | None = None,
    dist_info: Dist = SINGLE,
) -> None:
    """Train one phase to its last epoch (or resume it), checkpointing after every epoch.

    Raises RunStopped when `control` asks to stop (after the epoch checkpoint when stopping after
    the epoch). The checkpoint dict: phase, epoch (epochs done), step, models, optimizer, schedule,
    scaler, and "extra": `phase.extra_state()` (given back to `phase.load_extra` on resume).
    Distributed (`dist_info.enabled`): DDP over the ranks; the loss, the stop request and a non-finite loss are
    agreed on by all ranks every step (one small all-reduce); only rank 0 logs, reports and writes the checkpoint.
    """
    steps_per_epoch = len(phase.loader)
    total = steps_per_epoch * phase.epochs
    optimizer = build_optimizer(phase.params, train, phase.lr)
    schedule = build_schedule(optimizer, train, total, steps_per_epoch)
    dtype = amp_dtype(device, train.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, step = 0, 0
    if resume_state is not None:
        for key, module in phase.modules.items():
            module.load_state_dict(resume_state["models"][key])
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["schedule"])
        scaler.load_state_dict(resume_state["scaler"])
        start_epoch, step = int(resume_state["epoch"]), int(resume_state["step"])
        if phase.load_extra is not None and "extra" in resume_state:
            phase.load_extra(resume_state["extra"])
        observer.on_log(f"{phase.name}: resuming after epoch {start_epoch} (step {step})")
    lowered = bool(resume_state.get("lr_lowered")) if resume_state else False
    good = GoodState(phase, optimizer)
    net = wrap_ddp(phase, device, dist_info)
    main = dist_info.is_main
    chunks = 1  # > 1 after running out of memory: each batch in this many parts, gradients accumulated

    def accumulate(batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, tuple[float, int]]]:
        """Forward and backward of a batch in `chunks` parts; the loss and gradients are those of the whole
        batch (each part's mean loss weighted by its share of the samples)."""
        size = int(batch["task"].shape[0])
        total, merged = 0.0, {}
        for part in _split_batch(batch, chunks):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss, part_tasks = net(part)
            value = float(loss.detach())
            weight = int(part["task"].shape[0]) / size
            if math.isfinite(value):
                scaler.scale(loss * weight).backward()
            total += value * weight
            for task, (task_loss, count) in part_tasks.items():
                acc = merged.setdefault(task, [0.0, 0])
                acc[0] += task_loss
                acc[1] += count
            del loss
        return total, {task: (v[0], v[1]) for task, v in merged.items()}

    for epoch in range(start_epoch, phase.epochs):
        seed_epoch(seed, phase.name, epoch)
        phase.loader.batch_sampler.set_epoch(epoch)
        if hasattr(phase.loader.dataset, "set_epoch"):
            phase.loader.dataset.set_epoch(epoch)
        for module in phase.modules.values():
            module.train()
        window: dict[str, list[float]] = {}
        window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
        good.save()
        for batch in phase.loader:
            if not dist_info.enabled:
                control.checkpoint()  # pause waits here; stop raises RunStopped
            batch = to_device(batch, device)
            n = int(batch["task"].shape[0])
            while True:  # once, unless the step runs out of memory: then again in smaller parts
                optimizer.zero_grad(set_to_none=True)
                loss = None
                try:
                    if chunks == 1:
                        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                            loss, per_task = net(batch)
                        loss_value = float(loss.detach())
                    else:
                        loss_value, per_task = accumulate(batch)
                    if dist_info.enabled:  # every rank takes the same decisions
                        total_loss, n, bad, stop = distributed.all_reduce_sum(
                            [loss_value * n, n, float(not math.isfinite(loss_value)), float(control.stopping)],
                            dist_info, device,
                        )
                        if stop:
                            raise RunStopped()
                        loss_value = total_loss / max(n, 1) if not bad else float("nan")
                        n = int(n)
                    if chunks == 1 and math.isfinite(loss_value):
                        scaler.scale(loss).backward()
                    break
                except torch.OutOfMemoryError:
                    if dist_info.enabled:  # the ranks would disagree on the step; stop with the error
                        raise
                # out of memory (here the exception and the frames holding the step's tensors are gone)
                loss = None
                optimizer.zero_grad(set_to_none=True)
                _free_memory(device)
                part = n // (chunks * 2)
                if part < MIN_CHUNK:
                    raise OutOfMemory(
                        f"{phase.name}: out of {device} memory at step {step + 1} even with the batch of {n} "
                        f"split into parts of {n // chunks} samples; the run stopped (resumable from its "
                        f"last epoch checkpoint {checkpoint_path}). Run on the CPU (device: cpu, or --device "
                        f"cpu) or lower train.batch_size / data.patch_size"
                    ) from None
                chunks *= 2
                observer.on_log(
                    f"warning: {phase.name}: out of {device} memory at step {step + 1}; from now on each batch "
                    f"of {n} runs in {chunks} parts of about {part} samples with accumulated gradients (same "
                    f"effective batch size, more time per step)"
                )
            if not math.isfinite(loss_value):
                if lowered:
                    raise Diverged(
                        f"{phase.name}: the loss became {loss_value} again at step {step + 1} after the learning "
                        f"rate was lowered; the run stopped (last good checkpoint: {checkpoint_path}). Try a "
                        f"lower lr, a smaller kd_weight or grad_clip"
                    )
                good.restore()
                for group in optimizer.param_groups:
                    group["lr"] *= NAN_LR_FACTOR
                schedule.base_lrs = [b * NAN_LR_FACTOR for b in schedule.base_lrs]
                lowered = True
                if main:
                    observer.on_log(
                        f"{phase.name}: the loss became {loss_value} at step {step + 1}; restored the state of "
                        f"the epoch start and lowered the learning rate to {NAN_LR_FACTOR:g}x"
                    )
                optimizer.zero_grad(set_to_none=True)
                continue
            if train.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(phase.params, train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            window_loss += loss_value * n
            window_samples += n
            for task, (total_loss, count) in per_task.items():
                acc = window.setdefault(task, [0.0, 0])
                acc[0] += total_loss
                acc[1] += count
            if step % train.log_every == 0 or step % steps_per_epoch == 0:
                if dist_info.enabled:
                    window = _merge_windows(distributed.gather_objects(window, dist_info))
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                event = StepEvent(
                    phase=phase.name,
                    epoch=epoch,
                    step=step,
                    steps_total=total,
                    task_losses={t: s / max(c, 1) for t, (s, c) in window.items()},
                    loss=window_loss / max(window_samples, 1),
                    lr=optimizer.param_groups[0]["lr"],
                    samples_per_s=window_samples / elapsed,
                )
                if main:
                    log.step(event)
                    observer.on_step(event)
                window, window_loss, window_samples, window_start = {}, 0.0, 0, time.perf_counter()
        metrics = None
        if phase.evaluate is not None:
            metrics = phase.evaluate(epoch)
            event = EvalEvent(phase=phase.name, epoch=epoch, metrics=metrics, model=phase.model)
            if main:
                log.eval(event, step)
                observer.on_eval(event)
        if phase.after_epoch is not None:
            phase.after_epoch(epoch, metrics)
        state = {
            "phase": phase.name,
            "epoch": epoch + 1,
            "step": step,
            "models": {k: m.state_dict() for k, m in phase.modules.items()},
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "lr_lowered": lowered,
        }
        if phase.extra_state is not None:
            state["extra"] = phase.extra_state()
        if main:
            atomic_save(state, checkpoint_path)
        distributed.barrier(dist_info)
        stop_after = distributed.all_reduce_sum([float(control.stopping_after_epoch)], dist_info, device)[0]
        if stop_after and epoch + 1 < phase.epochs:
            if main:
                observer.on_log(f"{phase.name}: stopped after epoch {epoch + 1} as asked; the run can be resumed")
            raise RunStopped()

