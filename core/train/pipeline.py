"""The one pipeline of every run, whatever its task kind: config -> tasks and data -> foundation model (load or
pre-train) -> decomposition -> evaluation (teacher vs experts) -> summary.json -> expert bundles. Used by the CLI
and the GUI. What differs between kinds comes from the run's `TaskKind` (`core.kinds`).

Run folder (DESIGN.md): config.yaml, metrics.jsonl, checkpoints/{last.pt,teacher.pt}, summary.json,
experts/<task>/. Running `decompose` again on a folder with a checkpoint resumes it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed
from core.config import Config, read_raw, save_config
from core.data.sampling import SingleTaskView, make_loader
from core.errors import CheckpointError, ConfigError, LorkdError, RunStopped
from core.events import Control, EvalEvent, NullObserver, Observer, PhaseEvent, RunInfo
from core.experts import expert_parameters, merge_expert, route
from core.files import (
    WriteError,
    atomic_save,
    make_folder,
    refusal_reason,
    remove_stale_temps,
    safe_load,
    write_text_atomic,
)
from core.kinds import config_from_raw, get_kind, load_config
from core.kinds.base import Distillation, RunContext, TaskBatch, TaskScores
from core.models.complexity import count_macs, count_parameters
from core.models.projector import Projector
from core.stats import paired_bootstrap
from core.train.loop import Phase, run_phase, seed_everything
from core.train.metrics_log import MetricsLog, NullLog


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{name} was asked for but no CUDA GPU is available (use auto or cpu)", "device")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def place(module: nn.Module, device: torch.device, spatial_dims: int) -> nn.Module:
    """Move a network to the run's device with its conv weights channels-last (2D) or channels-last-3d (3D).

    oneDNN (CPU) and cuDNN run convolutions faster on channels-last tensors; a weight in that layout makes
    every conv output (and so the next layer's input) channels-last, the batches need no copy. Values are
    unchanged up to float rounding. Measured on 2 CPU threads: a 2D decomposition step (ResNet-50 teacher +
    ResNet-18 student, 10 tasks, 28 px, B=128) 1.94 s -> 1.71 s (best of 8); a 3D UNet(16-128) training
    step on 64^3 patches, B=2, 4 tasks: 0.84x the time of the default layout for the routed network,
    0.88x for the plain one.
    """
    layout = {2: torch.channels_last, 3: torch.channels_last_3d}.get(spatial_dims)
    module = module.to(device)
    return module.to(memory_format=layout) if layout is not None else module


EXPORTED_METRICS = ("metric", "higher_is_better", "teacher", "expert", "single_task", "teacher_metrics",
                    "expert_metrics", "single_task_metrics", "expert_minus_teacher", "expert_minus_teacher_ci",
                    "expert_minus_single_task", "expert_minus_single_task_ci", "test_cases", "test",
                    "selected_epoch", "params_ratio", "macs_ratio", "latency_ratio", "flags")


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float (an undefined HD95, say) replaced by None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


@dataclass
class RunFolder:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def teacher(self) -> Path:
        return self.path / "checkpoints" / "teacher.pt"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def experts(self) -> Path:
        return self.path / "experts"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process: a second LoRKD process on the same folder (a decompose, evaluate
        or export) is refused at once instead of both writing into it. An advisory `flock` on `.lock`, released
        by the kernel when the process ends, however it ends (so a crash never leaves the folder locked). Once held,
        the temp files of a writer killed mid-write are removed. A folder it made that is still empty at the end
        (the run failed before writing: a wrong foundation checkpoint, say) is removed again. A folder the system
        does not let us write (read-only, no permission, a file of that name) is a one-line WriteError."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        made = not os.path.lexists(self.path)
        make_folder(self.path)
        try:
            handle = open(self.path / ".lock", "a+")
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot write into the run folder: {refusal_reason(exc)}") from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise LorkdError(f"{self.path}: in use by another LoRKD process ({holder}); wait for it to end, "
                                 "or use another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            for folder in (self.path, self.path / "checkpoints"):  # what a killed writer left (no one else writes)
                remove_stale_temps(folder)
            try:
                yield
            finally:
                if made:
                    self._remove_if_unused()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_if_unused(self) -> None:
        """Remove the folder when it holds nothing but its `.lock` (called while the lock is held)."""
        with contextlib.suppress(OSError):
            if [p.name for p in self.path.iterdir()] == [".lock"]:
                (self.path / ".lock").unlink()
                self.path.rmdir()


class Selection:
    """Each task's best validation epoch: the merged expert's weights at that epoch (experts are separable, so
    each task keeps its own best state); or the whole teacher at its best mean validation score."""

    def __init__(self, tasks: list, snapshot) -> None:
        self.tasks, self.snapshot = tasks, snapshot
        self.best: dict[int, dict[str, Any]] = {}

    def better(self, task: int, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if task not in self.best:
            return True
        old = self.best[task]["score"]
        return score > old if self.tasks[task].higher_is_better else score < old

    def update(self, epoch: int, metrics: dict[str, dict[str, float]] | None, tasks: list[int]) -> None:
        """Keep the state of every task in `tasks` whose validation headline improved at `epoch`."""
        if not metrics:
            return
        for t in tasks:
            info = self.tasks[t]
            score = float((metrics.get(info.name) or {}).get(info.metric, math.nan))
            if self.better(t, score):
                self.best[t] = {"epoch": epoch, "score": score, "state": self.snapshot(t)}

    def state(self) -> dict[str, Any]:
        return {"best": self.best}

    def load(self, extra: dict[str, Any]) -> None:
        self.best = dict(extra.get("best") or {})


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def latency_ms(nets: list[nn.Module], input_shape: tuple[int, ...], rounds: int = 15) -> list[list[float]]:
    """Milliseconds of one forward pass of each of `nets` (CPU copies, eval, no grad, a zero input), measured
    round-robin (`rounds` rounds of one pass each, after two warm-up rounds) so that load on a shared machine
    hits all of them alike: one list of times per net, in round order."""
    nets = [copy.deepcopy(net).cpu().eval() for net in nets]
    x = torch.zeros(input_shape)
    times: list[list[float]] = [[] for _ in nets]
    with torch.no_grad():
        for i in range(rounds + 2):
            for net, out in zip(nets, times, strict=True):
                start = time.perf_counter()
                net(x)
                if i >= 2:  # the first calls pay for allocations and lazy initialisation
                    out.append(1000.0 * (time.perf_counter() - start))
    return times


def latency_ratio(reference: nn.Module, net: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float]:
    """(median ms of `reference`, median over rounds of reference time / `net` time), measured side by side."""
    ref, other = latency_ms([reference, net], input_shape)
    return float(np.median(ref)), float(np.median(np.asarray(ref) / np.asarray(other)))


class Pipeline:
    """One run of any task kind: builds and trains the teacher (if needed) and the student, keeps each task's
    best validation state, trains the single-task baselines, evaluates what is deployed, exports.

    Distributed (torchrun, kinds with `distributed`): every rank trains on its share of each batch and validates and
    tests its share of the cases; only rank 0 reports and writes files."""

    def __init__(self, config: Config, run_dir: str | Path, observer: Observer | None = None,
                 control: Control | None = None) -> None:
        self.kind = get_kind(config.kind)
        if distributed.from_env().enabled and not self.kind.distributed:
            raise LorkdError(f"{self.kind.title} runs are single-process for now; run them without torchrun "
                             f"(distributed runs support classification tasks)")
        self.config = config
        self.folder = RunFolder(Path(run_dir))
        self.control = control or Control()
        self._check_folder()
        self.device = resolve_device(distributed.device_for(config.device, distributed.from_env()))
        self.dist = distributed.init(self.device)
        self.main = self.dist.is_main
        self.observer = (observer or NullObserver()) if self.main else NullObserver()
        # reads and checks all data before anything is written; the readers' warnings go to the log
        self.data = self.kind.open_data(config, self.dist, self._warn)
        self.teacher: nn.Module | None = None
        self.teacher_heads = False
        self.student: nn.Module | None = None
        self.projector: nn.Module | None = None
        self.kd_target = "logits"
        self.log: MetricsLog | NullLog = NullLog()
        self.selection = Selection(self.data.tasks, self._expert_state)
        self.baselines: dict[int, dict[str, Any]] = {}  # task -> {"epoch", "score", "state"} of its baseline

    def _warn(self, message: str) -> None:
        self.observer.on_log(f"warning: {message}")

    def _check_folder(self) -> None:
        if self.folder.config.is_file():
            try:  # bounded, one-line errors; a config.yaml that is not a mapping is not a run's
                previous, _ = read_raw(self.folder.config)
            except ConfigError as exc:
                raise ConfigError(f"{exc}; this is not the config.yaml of a LoRKD run: choose another output "
                                  "folder") from None
            current = self.config.to_dict()
            try:  # with the defaults of fields added since the folder was made
                previous = config_from_raw(previous).to_dict()
            except ConfigError:
                pass
            if previous != current:
                diff = [k for k in current if not isinstance(previous, dict) or previous.get(k) != current.get(k)]
                raise ConfigError(
                    f"{self.folder.path}: this run folder was made with a different config "
                    f"(differs in: {', '.join(diff)}); choose another output folder"
                )

    def place(self, module: nn.Module) -> nn.Module:
        return place(module, self.device, self.data.spatial_dims)

    def context(self, student: nn.Module | None = None) -> RunContext:
        return RunContext(self.config, self.data, self.teacher, student or self.student, self.device, self.dist,
                          self.control.checkpoint)

    def run_info(self, phases: list[str]) -> RunInfo:
        cfg = self.config
        plan = {"foundation": (self._train_loader(cfg.teacher.batch_size), cfg.teacher.epochs)} if (
            "foundation" in phases) else {}
        plan["decompose"] = (self._train_loader(None), cfg.train.epochs)
        if "single_task" in phases:
            plan.update({f"single_task/{info.name}": (self._single_task_loader(t), cfg.train.epochs)
                         for t, info in enumerate(self.data.tasks)})
        return RunInfo(str(self.folder.path), phases, self.data.names, device_label(self.device),
                       {"kind": self.kind.name, "steps": {k: len(lo) * e for k, (lo, e) in plan.items()},
                        "epochs": {k: e for k, (_, e) in plan.items()}, "validation": self.data.has_validation})

    @property
    def single_task_path(self) -> Path:
        return self.folder.path / "checkpoints" / "single_task.pt"

    # ------------------------------------------------------------------------------------------ lifecycle
    def run(self, export: bool = True) -> dict[str, Any]:
        """The whole pipeline; resumes from the checkpoints in the run folder when it has some. The folder is held
        (`RunFolder.lock`) for the whole run: a second process on it is refused before it writes anything."""
        if not self.main:
            return self._run(export)
        with self.folder.lock():
            return self._run(export)

    def _start_writing(self) -> None:
        """Record the config in the run folder (once) and open its metrics log: from here on the run writes."""
        if self.main and isinstance(self.log, NullLog):
            if not self.folder.config.is_file():
                save_config(self.config, self.folder.config)
            self.log = MetricsLog(self.folder.metrics)

    def _run(self, export: bool) -> dict[str, Any]:
        cfg, folder = self.config, self.folder
        resume = read_run_checkpoint(folder.last) if folder.last.is_file() else None
        phases = ([] if cfg.teacher.source else ["foundation"]) + ["decompose"]
        phases += (["single_task"] if cfg.evaluate.single_task else []) + ["evaluate"]
        phases += ["export"] if export else []
        self.observer.on_start(self.run_info(phases))
        started = time.time()
        try:
            # nothing is written into the run folder before the config and its inputs are checked: a foundation
            # model named by teacher.checkpoint is loaded (and fits) first, so that after a wrong path the
            # corrected command runs on the same folder; one pre-trained here writes checkpoints, after the config
            if not cfg.teacher.source:
                self._start_writing()
            self.build_teacher(resume)
            self.build_student()
            self._start_writing()
            self._decompose(resume if resume and resume["phase"] == "decompose" else None)
            if cfg.evaluate.single_task:
                self._train_baselines()
            summary = self.evaluate(stage_bundles=export)
            summary["seconds"] = round(time.time() - started, 1)
            if self.main:
                write_text_atomic(folder.summary, json.dumps(summary, indent=2))
                if export:
                    self.export()
            distributed.barrier(self.dist)
        except RunStopped:
            summary = {"status": "stopped", "run_dir": str(folder.path)}
            self.observer.on_log("run stopped; run the same command again to resume from the last epoch")
            self.observer.on_end(summary)
            return summary
        except BaseException as exc:
            self.observer.on_error(exc)
            raise
        summary["status"] = "completed"
        self.observer.on_end(summary)
        return summary

    def load_trained(self) -> None:
        """Rebuild teacher, student, each task's selected expert and the baselines of a finished run from its
        checkpoints (for evaluate / export)."""
        if not self.folder.last.is_file():
            raise LorkdError(f"{self.folder.path}: no checkpoints/last.pt — has this run been trained?")
        state = read_run_checkpoint(self.folder.last)
        if state.get("phase") != "decompose" or state.get("epoch") != self.config.train.epochs:
            raise LorkdError(f"{self.folder.path}: the run has not finished its decomposition; resume it first")
        self.log = MetricsLog(self.folder.metrics) if self.main else NullLog()
        self.build_teacher(None)
        self.build_student()
        modules = {"student": self.student}
        if self.projector is not None and "projector" in state["models"]:
            modules["projector"] = self.projector
        check_fits(self.folder.last, modules, state)
        for key, module in modules.items():
            module.load_state_dict(state["models"][key])
        self.selection.load(state.get("extra") or {})
        if self.config.evaluate.single_task:
            if not self.single_task_path.is_file():
                raise LorkdError(f"{self.folder.path}: the single-task baselines are missing; resume the run first")
            self.baselines = self._read_baselines()

    def _read_baselines(self) -> dict[int, dict[str, Any]]:
        """checkpoints/single_task.pt: {task index: {"epoch", "score", "state"}} for every task of the run."""
        path = self.single_task_path
        baselines = safe_load(path)
        tasks = range(len(self.data.tasks))
        if not (isinstance(baselines, dict) and sorted(baselines) == list(tasks)
                and all(isinstance(b, dict) and isinstance(b.get("state"), dict) for b in baselines.values())):
            raise CheckpointError(f"checkpoint {path} is not the single-task baselines of this run (one entry per "
                                  f"task with its state); move it away and resume the run to train them again")
        return dict(baselines)

    # -------------------------------------------------------------------------------------------- teacher
    def build_teacher(self, resume: dict | None) -> None:
        cfg, kind = self.config, self.kind
        seed_everything(cfg.seed)
        if cfg.teacher.source:
            self.teacher, self.teacher_heads = kind.load_teacher(cfg.teacher.source, cfg, self.data)
            self.observer.on_log(f"foundation model loaded from {cfg.teacher.source}")
        elif self.folder.teacher.is_file():
            self.teacher, self.teacher_heads = kind.load_teacher(self.folder.teacher, cfg, self.data)
            self.observer.on_log("foundation model loaded from this run's checkpoint")
        else:
            if cfg.teacher.epochs < 1:
                raise ConfigError("must be >= 1 when no teacher.checkpoint is given", "teacher.epochs")
            self.teacher = self.place(kind.new_teacher(cfg, self.data))
            self._pretrain(resume if resume and resume["phase"] == "foundation" else None)
            if self.main:
                kind.save_teacher(self.folder.teacher, self.teacher, cfg, self.data)
            distributed.barrier(self.dist)
            self.teacher_heads = True
        self.place(self.teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _pretrain(self, resume: dict | None) -> None:
        """Pre-train the foundation model on all tasks; with `evaluate.select: best` it ends at the epoch with the
        best mean validation headline (the same selection its experts get)."""
        cfg, teacher, tasks = self.config, self.teacher, self.data.tasks
        best: dict[str, Any] = {}

        def after_epoch(epoch: int, metrics: dict | None) -> None:
            if not metrics:
                return
            signs = [1.0 if t.higher_is_better else -1.0 for t in tasks]
            score = float(np.mean([s * metrics.get(t.name, {}).get(t.metric, math.nan)
                                   for s, t in zip(signs, tasks, strict=True)]))
            if math.isfinite(score) and ("score" not in best or score > best["score"]):
                best.update(epoch=epoch, score=score, state=_cpu_state(teacher))

        phase = Phase(
            name="foundation",
            modules={"teacher": teacher},
            params=list(teacher.parameters()),
            compute_loss=self._loss(teacher, routed=False, distill=None),
            loader=self._train_loader(cfg.teacher.batch_size),
            epochs=cfg.teacher.epochs,
            lr=cfg.teacher.lr or cfg.train.lr,
            evaluate=self._validation("teacher"),
            model="teacher",
            after_epoch=after_epoch,
            extra_state=lambda: {"best": dict(best)},
            load_extra=lambda extra: best.update(extra.get("best") or {}),
        )
        self._run_phase(phase, resume)
        if cfg.evaluate.select == "best" and "state" in best:
            teacher.load_state_dict(best["state"])
            self.observer.on_log(f"foundation model: kept epoch {best['epoch'] + 1} (best mean validation score)")

    # -------------------------------------------------------------------------------------------- student
    def build_student(self) -> None:
        self.student = self._new_student()
        cfg = self.config
        target = cfg.train.kd_target
        if target == "auto":
            target = "logits" if self.teacher_heads else "features"
        if target == "logits" and not self.teacher_heads:
            raise ConfigError("logits needs a foundation model with task heads; use features", "train.kd_target")
        if target == "features" and not self.kind.feature_distillation:
            raise ConfigError(f"{self.kind.title} runs distil logits only; use logits", "train.kd_target")
        self.kd_target = target
        self.projector = self._new_projector(self.student)

    def _new_student(self) -> nn.Module:
        seed_everything(self.config.seed + 1)
        return self.place(self.kind.new_student(self.config, self.data))

    def _new_projector(self, student: nn.Module) -> nn.Module | None:
        if self.kd_target == "features" and self.config.train.kd_weight > 0:
            return Projector(*self.kind.feature_sizes(student, self.teacher)).to(self.device)
        return None

    def _expert_state(self, task: int, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        return _cpu_state(self.kind.expert_model(student or self.student, task, self.config, self.data))

    def _decompose(self, resume: dict | None) -> None:
        student, projector = self.student, self.projector
        selection, tasks = self.selection, list(range(len(self.data.tasks)))
        self._run_phase(self._student_phase("decompose", student, projector, self._train_loader(None),
                                            selection, tasks), resume)

    def _student_phase(self, name: str, student: nn.Module, projector: nn.Module | None, loader,
                       selection: Selection, tasks: list[int]) -> Phase:
        """A phase training `student` (and the projector) with the decomposition loss; after every validation,
        `selection` keeps the best state of each of `tasks`."""
        cfg = self.config
        distill = Distillation(cfg.train.kd_weight, cfg.train.temperature, self.kd_target, projector)
        modules = {"student": student}
        params = list(student.parameters())
        if projector is not None:
            modules["projector"] = projector
            params += list(projector.parameters())
        return Phase(
            name=name,
            modules=modules,
            params=params,
            compute_loss=self._loss(student, routed=True, distill=distill),
            loader=loader,
            epochs=cfg.train.epochs,
            lr=cfg.train.lr,
            evaluate=self._validation("student", student, tasks),
            after_epoch=lambda epoch, metrics: selection.update(epoch, metrics, tasks),
            extra_state=selection.state,
            load_extra=selection.load,
        )

    # ------------------------------------------------------------------------------- single-task baselines
    def _train_baselines(self) -> None:
        """The same backbone trained on each task alone, with the same loss (distillation included), the same
        epochs over that task's data and the same selection: what a researcher would do without LoRKD."""
        if self.single_task_path.is_file():
            self.baselines = self._read_baselines()
            return
        cfg = self.config
        for t, info in enumerate(self.data.tasks):
            student = self._new_student()
            projector = self._new_projector(student)
            selection = Selection(self.data.tasks, lambda task, s=student: self._expert_state(task, s))
            loader = self._single_task_loader(t)
            path = self.folder.path / "checkpoints" / f"single_task_{t}.pt"
            resume = read_run_checkpoint(path) if path.is_file() else None
            self._run_phase(self._student_phase(f"single_task/{info.name}", student, projector, loader, selection,
                                                [t]), resume, path)
            if cfg.evaluate.select == "best" and t in selection.best:
                self.baselines[t] = selection.best[t]
            else:
                self.baselines[t] = {"epoch": cfg.train.epochs - 1, "score": None,
                                     "state": self._expert_state(t, student)}
        if self.main:
            atomic_save(self.baselines, self.single_task_path)
        distributed.barrier(self.dist)

    # ---------------------------------------------------------------------------------------------- glue
    def _loss(self, model: nn.Module, routed: bool, distill: Distillation | None):
        """The phase's loss: each task's `kind.objective` (summed over its samples), summed over the tasks and
        divided by the batch size; with `routed`, each sample goes through its own task's experts."""
        kind, data, teacher = self.kind, self.data, self.teacher
        distilling = distill is not None and distill.beta > 0
        features = distilling and distill.target == "features"

        def compute_loss(batch):
            x, y, tid = batch["image"], batch["label"], batch["task"]
            t_feats = t_logits = None
            if distilling and "teacher" in batch:  # the teacher's outputs came with the data (computed once)
                soft = batch["teacher"]
                t_logits = [soft[tid == t][:, :info.num_classes] for t, info in enumerate(data.tasks)]
            elif distilling:
                with torch.no_grad():
                    t_feats, t_logits = teacher(x, tid)
            if routed:
                with route(model, tid):
                    feats, logits = model(x, tid)
            else:
                feats, logits = model(x, tid)
            total, per_task = 0.0, {}
            for t, lg in enumerate(logits):
                if lg is None:
                    continue
                mask = tid == t
                part = TaskBatch(
                    task=t, logits=lg, labels=y[mask],
                    features=feats[mask] if features else None,
                    teacher_logits=t_logits[t] if t_logits is not None else None,
                    teacher_features=t_feats[mask] if features else None,
                )
                loss = kind.objective(part, data, distill)
                total = total + loss
                per_task[data.tasks[t].name] = (float(loss.detach()), lg.shape[0])
            return total / y.shape[0], per_task

        return compute_loss

    def _single_task_loader(self, t: int):
        cfg = self.config
        return make_loader(SingleTaskView(self.data.train_set, t), cfg.train.batch_size, cfg.data.sampling, cfg.seed,
                           train=True, num_workers=cfg.data.num_workers, rank=self.dist.rank,
                           world_size=self.dist.world_size)

    def _train_loader(self, batch_size: int | None):
        cfg = self.config
        return make_loader(self.data.train_set, batch_size or cfg.train.batch_size, cfg.data.sampling, cfg.seed,
                           train=True, num_workers=cfg.data.num_workers, rank=self.dist.rank,
                           world_size=self.dist.world_size)

    def _validation(self, model: str, student: nn.Module | None = None, tasks: list[int] | None = None):
        """The per-epoch validation of `model` on `tasks` (None when the kind's data have no validation split)."""
        if not self.data.has_validation:
            return None
        return lambda epoch: self._evaluate(model, student, tasks)

    def _run_phase(self, phase: Phase, resume: dict | None, checkpoint: Path | None = None) -> None:
        if resume is not None:
            check_fits(checkpoint or self.folder.last, phase.modules, resume)
        run_phase(phase, self.config.train, seed=self.config.seed, device=self.device,
                  checkpoint_path=checkpoint or self.folder.last, observer=self.observer, control=self.control,
                  log=self.log, resume_state=resume, dist_info=self.dist)

    def _evaluate(self, model: str, student: nn.Module | None = None,
                  tasks: list[int] | None = None) -> dict[str, dict[str, float]]:
        """`kind.evaluate` on the validation split with every model in eval mode (modes restored after)."""
        modules = [m for m in (self.teacher, student or self.student, self.projector) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            return self.kind.evaluate(self.context(student), model, "val", tasks)
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)

    # ----------------------------------------------------------------------------------------- evaluation
    def expert_model(self, task: int) -> nn.Module:
        """The standalone expert of `task` that is exported: the merged backbone + head at its selected epoch
        (`evaluate.select`: its best validation epoch, or the last), CPU, eval."""
        net = self.kind.expert_model(self.student, task, self.config, self.data)
        chosen = self.selection.best.get(task) if self.config.evaluate.select == "best" else None
        if chosen is not None:
            net.load_state_dict(chosen["state"])
        return net.eval()

    def baseline_model(self, task: int) -> nn.Module:
        """The single-task baseline of `task` as a standalone network (same architecture as the expert)."""
        net = self.kind.expert_model(self.student, task, self.config, self.data)
        net.load_state_dict(self.baselines[task]["state"])
        return net.eval()

    def evaluate(self, stage_bundles: bool = False) -> dict[str, Any]:
        """Test what is deployed and build the summary: the experts (loaded back from bundles written to the run's
        experts/ folder when `stage_bundles`), the foundation model and the single-task baselines through the
        kind's deployed path on the test cases; paired bootstrap intervals of expert minus foundation model (and
        minus the baseline); flags; sizes, MACs and CPU latency of foundation model / expert.

        Distributed: every rank tests a share of the test cases (`kind.test`, results gathered in case order: the
        numbers of one process); the bundles are written by rank 0 and read back by every rank (the run folder is
        shared, as for resuming); only rank 0 builds the summary and reports."""
        cfg, data, kind = self.config, self.data, self.kind
        tasks = range(len(data.tasks))
        experts = {t: self.expert_model(t) for t in tasks}
        if stage_bundles:
            paths = distributed.gather_objects(self.export() if self.main else None, self.dist)[0]  # rank 0's
            experts = {t: kind.load_bundle(path)[0] for t, path in zip(tasks, paths, strict=True)}
        summary: dict[str, Any] = {}
        for m in (self.teacher, self.student, self.projector):
            if m is not None:
                m.eval()
        context = self.context()
        self.observer.on_phase(PhaseEvent("evaluate", "Testing the experts on the test cases"))
        scores = {"expert": kind.test(context, experts)}
        if self.teacher_heads:
            scores["teacher"] = kind.test(context, {t: kind.teacher_view(self.teacher, t, cfg, data) for t in tasks})
        if cfg.evaluate.single_task:
            scores["single_task"] = kind.test(context, {t: self.baseline_model(t) for t in tasks})
        if self.main:
            summary = self._summary(scores, experts)
            for model in ("teacher", "expert"):
                if model in scores:
                    metrics = {name: s.metrics for name, s in scores[model].items()}
                    event = EvalEvent(phase="test", epoch=cfg.train.epochs - 1, metrics=metrics,
                                      model="student" if model == "expert" else model)
                    self.log.eval(event, 0)
                    self.observer.on_eval(event)
        distributed.barrier(self.dist)
        return summary

    def _summary(self, scores: dict[str, dict[str, TaskScores]], experts: dict[int, nn.Module]) -> dict[str, Any]:
        cfg, data, kind = self.config, self.data, self.kind
        shape = data.input_shape
        teacher_params, teacher_macs = count_parameters(self.teacher), count_macs(self.teacher, shape)
        teacher_ms = []
        backbone = merge_expert(self.student.backbone, None)
        tasks = []
        for t, info in enumerate(data.tasks):
            expert = experts[t]
            expert_scores = scores["expert"][info.name]
            teacher_scores = scores.get("teacher", {}).get(info.name)
            single = scores.get("single_task", {}).get(info.name)
            params, macs = count_parameters(expert), count_macs(expert, shape)
            ms, latency = latency_ratio(self.teacher, expert, shape)
            teacher_ms.append(ms)
            record = {
                "name": info.name,
                "kind": info.kind,
                "num_classes": info.num_classes,
                "labels": info.labels,
                "spatial_dims": data.spatial_dims,
                "metric": info.metric,
                "higher_is_better": info.higher_is_better,
                "expert": expert_scores.metrics[info.metric],
                "teacher": teacher_scores.metrics[info.metric] if teacher_scores else None,
                "single_task": single.metrics[info.metric] if single else None,
                "expert_metrics": expert_scores.metrics,
                "teacher_metrics": teacher_scores.metrics if teacher_scores else None,
                "single_task_metrics": single.metrics if single else None,
                **self._difference("teacher", expert_scores, teacher_scores),
                **self._difference("single_task", expert_scores, single),
                "test_cases": expert_scores.cases,
                "test": expert_scores.description,
                "selected_epoch": self._selected_epoch(t),
                **kind.task_record(data, t),
                "params": {
                    "expert_model": params,
                    "expert_low_rank": sum(p.numel() for p in expert_parameters(self.student.backbone, t)),
                },
                "macs": {"expert_model": macs},
                "params_ratio": teacher_params / params,
                "macs_ratio": teacher_macs / macs,
                "latency_ratio": latency,
                "per_case": self._per_case(expert_scores, teacher_scores, single),
            }
            record["flags"] = self._flags(info, record)
            tasks.append(record)
        teacher_extra, backbone_extra = kind.model_records(cfg)
        return finite_or_none({
            "name": cfg.name,
            "kind": kind.name,
            "units": dict(kind.units),
            "device": device_label(self.device),
            "evaluation": {
                "test": "experts as exported, through the code path of `lorkd apply` and the bundle, on test "
                        "cases no model trained on",
                "validation": "each expert (and the foundation model) kept at its best validation epoch"
                              if cfg.evaluate.select == "best" else "the last epoch of every model",
                "interval": f"paired bootstrap over the test cases, {cfg.evaluate.bootstrap} resamples, 95%",
                "single_task": "the same backbone trained on each task alone, same loss, epochs and selection"
                               if cfg.evaluate.single_task else None,
            },
            "teacher": {"arch": cfg.teacher.arch, **teacher_extra, "params": teacher_params, "macs": teacher_macs,
                        "latency_ms": float(np.median(teacher_ms)), "kd_target": self.kd_target},
            "backbone": {"arch": cfg.backbone.arch, "form": cfg.backbone.form, "rank": cfg.backbone.rank,
                         "alpha": cfg.backbone.alpha, **backbone_extra, "params": count_parameters(backbone),
                         "macs": count_macs(backbone, shape)},
            "tasks": tasks,
        })

    def _selected_epoch(self, task: int) -> int | None:
        chosen = self.selection.best.get(task) if self.config.evaluate.select == "best" else None
        return int(chosen["epoch"]) + 1 if chosen is not None else self.config.train.epochs

    def _difference(self, other: str, expert: TaskScores, reference: TaskScores | None) -> dict[str, Any]:
        """expert_minus_<other> and its paired bootstrap interval over the test cases."""
        if reference is None:
            return {f"expert_minus_{other}": None, f"expert_minus_{other}_ci": None}
        point, low, high = paired_bootstrap(
            expert.cases, lambda idx: expert.headline(idx) - reference.headline(idx),
            samples=self.config.evaluate.bootstrap, seed=self.config.seed)
        return {f"expert_minus_{other}": point, f"expert_minus_{other}_ci": [low, high]}

    @staticmethod
    def _per_case(expert: TaskScores, teacher: TaskScores | None, single: TaskScores | None) -> list[dict]:
        out = []
        for i, case in enumerate(expert.per_case):
            record = {"case": case["case"], "expert": {k: v for k, v in case.items() if k != "case"}}
            for name, scores in (("teacher", teacher), ("single_task", single)):
                if scores is not None:
                    record[name] = {k: v for k, v in scores.per_case[i].items() if k != "case"}
            out.append(record)
        return out

    @staticmethod
    def _flags(info, record: dict[str, Any]) -> list[str]:
        """Warnings a reader of the summary, the app and the model card must see."""
        flags, value, sign = [], record["expert"], 1.0 if info.higher_is_better else -1.0
        if info.near_chance is not None and value is not None and sign * value <= sign * info.near_chance:
            flags.append(f"near chance: {info.metric} {value:.3f} (a guess scores about {info.near_chance:.2f})")
        ci = record.get("expert_minus_teacher_ci")
        if ci is not None and math.isfinite(ci[1]) and sign * max(sign * ci[0], sign * ci[1]) < 0:
            flags.append(f"below the foundation model: {info.metric} difference "
                         f"{record['expert_minus_teacher']:+.3f}, 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}")
        return flags

    # --------------------------------------------------------------------------------------------- export
    def export(self, out_dir: str | Path | None = None) -> list[Path]:
        """One MONAI bundle per task (the selected merged expert + head) in experts/<task>/ (or out_dir/<task>/),
        with the metrics of summary.json when it exists."""
        cfg, data = self.config, self.data
        summary = json.loads(self.folder.summary.read_text()) if self.folder.summary.is_file() else {}
        out = Path(out_dir) if out_dir else self.folder.experts
        paths = []
        self.observer.on_phase(PhaseEvent("export", "Exporting the expert bundles"))
        self.student.eval()
        for t, info in enumerate(data.tasks):
            net = self.expert_model(t)
            task_summary = next((s for s in summary.get("tasks", []) if s["name"] == info.name), {})
            metrics = {k: task_summary.get(k) for k in EXPORTED_METRICS}
            training = {"run": cfg.name, "teacher_arch": cfg.teacher.arch, "backbone_arch": cfg.backbone.arch,
                        "form": cfg.backbone.form, "rank": cfg.rank_of(info.name), "alpha": cfg.backbone.alpha,
                        "epochs": cfg.train.epochs, "selected_epoch": self._selected_epoch(t), "tasks": data.names,
                        **self.kind.training_record(data, t), "source": info.source}
            paths.append(self.kind.export(out / info.name, net, t, cfg, data, metrics, training))
            self.observer.on_log(f"exported expert {info.name} -> {paths[-1]}")
        return paths


RUN_CHECKPOINT_KEYS = ("phase", "epoch", "step", "models", "optimizer", "schedule", "scaler")


def read_run_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint of a LoRKD run (`core.train.loop.run_phase` writes it: phase, epoch, step, models,
    optimizer, schedule, scaler): CheckpointError naming it when it is another weights file (a state_dict put in
    its place, a foundation model) or damaged."""
    state = safe_load(path)
    if not isinstance(state, dict):
        problem = f"it holds a {type(state).__name__}, not a mapping"
    elif missing := [k for k in RUN_CHECKPOINT_KEYS if k not in state]:
        problem = f"no {', '.join(missing)}"
    elif not isinstance(state["models"], dict) or not isinstance(state["epoch"], int):
        problem = "its models or epoch have the wrong type"
    else:
        return state
    raise CheckpointError(f"checkpoint {path} is not a training checkpoint of a LoRKD run ({problem}): another "
                          "weights file in its place? Move it away to train the phase again, or use another --out")


def check_fits(path: Path, modules: dict[str, nn.Module], state: dict[str, Any]) -> None:
    """CheckpointError naming `path` unless `state["models"]` holds, for every one of `modules`, weights of exactly
    its names and shapes (a checkpoint of another run or config would otherwise fail deep inside torch)."""
    for key, module in modules.items():
        saved = state["models"].get(key)
        own = module.state_dict()
        fits = isinstance(saved, dict) and saved.keys() == own.keys() and all(
            getattr(saved[k], "shape", None) == v.shape for k, v in own.items() if isinstance(v, torch.Tensor))
        if not fits:
            raise CheckpointError(f"checkpoint {path} does not hold weights of this run's {key} (made by another "
                                  "run or config?); move it away to train the phase again, or use another --out")


def open_run(run_dir: str | Path, observer: Observer | None = None) -> Pipeline:
    """A finished run folder of any kind, ready to evaluate or export."""
    folder = RunFolder(Path(run_dir))
    if not folder.config.is_file():
        raise LorkdError(f"{folder.path}: not a run folder (no config.yaml)")
    run = Pipeline(load_config(folder.config), folder.path, observer)
    run.load_trained()
    return run
