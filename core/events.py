"""How the engine reports progress and is steered, without knowing who listens.

The engine calls an `Observer` (on_start, on_step, on_eval, on_phase, on_end, on_error, on_log) and checks a
`Control` token at every step. The GUI adapts the observer to Qt signals; the CLI draws progress
bars; tests record events. Nothing here imports Qt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import RunStopped


@dataclass
class StepEvent:
    phase: str  # "foundation" | "decompose"
    epoch: int  # 0-based
    step: int  # global step within the phase, 1-based
    steps_total: int  # planned steps of the phase
    task_losses: dict[str, float]  # mean loss per task present in the logged window
    loss: float  # mean total loss over the window
    lr: float
    samples_per_s: float


@dataclass
class EvalEvent:
    phase: str
    epoch: int
    metrics: dict[str, dict[str, float]]  # task -> {"acc": .., "auc": .., ...}
    model: str = "student"  # "teacher" | "student"


def repeats_its_metric(key: str, keys) -> bool:
    """Whether `key` is the only per-structure value of a metric that is also among `keys` ("dice/grey matter"
    beside "dice" and no other "dice/..."): it repeats the metric, so displays leave it out."""
    head, _, part = key.partition("/")
    return bool(part) and head in keys and sum(k.startswith(head + "/") for k in keys) == 1


def metrics_line(metrics: dict[str, dict[str, float]]) -> str:
    """An evaluation's metrics in one line ("grey dice=0.812 hd95=3.100 | brain ..."), for the CLI and the app's
    log: numbers only, without the values that repeat their metric."""
    return " | ".join(f"{task} " + " ".join(f"{k}={v:.3f}" for k, v in m.items()
                                            if isinstance(v, int | float) and not repeats_its_metric(k, m))
                      for task, m in metrics.items())


@dataclass
class PhaseEvent:
    """A stage of the run that reports no steps has begun (testing, exporting), for a progress display."""

    phase: str  # "evaluate" | "export"
    text: str  # what the engine is doing now, in words ("Testing the experts on the test cases")


@dataclass
class RunInfo:
    run_dir: str
    phases: list[str]
    tasks: list[str]
    device: str
    # "kind": the task kind; "steps" / "epochs": {phase as in StepEvent: planned steps / epochs} of the phases
    # that train; "validation": whether every epoch ends with a validation (an EvalEvent)
    extra: dict[str, Any] = field(default_factory=dict)


class Observer(Protocol):
    def on_start(self, info: RunInfo) -> None: ...
    def on_step(self, event: StepEvent) -> None: ...
    def on_eval(self, event: EvalEvent) -> None: ...
    def on_phase(self, event: PhaseEvent) -> None: ...
    def on_log(self, message: str) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...
    def on_error(self, error: BaseException) -> None: ...


class NullObserver:
    """Ignores everything; subclass and override what you need."""

    def on_start(self, info: RunInfo) -> None:
        pass

    def on_step(self, event: StepEvent) -> None:
        pass

    def on_eval(self, event: EvalEvent) -> None:
        pass

    def on_phase(self, event: PhaseEvent) -> None:
        pass

    def on_log(self, message: str) -> None:
        pass

    def on_end(self, summary: dict[str, Any]) -> None:
        pass

    def on_error(self, error: BaseException) -> None:
        pass


class Observers(NullObserver):
    """Fans every event out to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = [o for o in observers if o is not None]

    def _each(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            getattr(observer, name)(*args)

    def on_start(self, info: RunInfo) -> None:
        self._each("on_start", info)

    def on_step(self, event: StepEvent) -> None:
        self._each("on_step", event)

    def on_eval(self, event: EvalEvent) -> None:
        self._each("on_eval", event)

    def on_phase(self, event: PhaseEvent) -> None:
        self._each("on_phase", event)

    def on_log(self, message: str) -> None:
        self._each("on_log", message)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._each("on_end", summary)

    def on_error(self, error: BaseException) -> None:
        self._each("on_error", error)


class Control:
    """Thread-safe pause / resume / stop token, checked by the engine at every step.

    `stop()` ends the run at the next step (the last epoch checkpoint stays resumable);
    `stop_after_epoch()` lets the current epoch finish, checkpoint and evaluate first.
    """

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._stop_after_epoch = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def stop_after_epoch(self) -> None:
        self._stop_after_epoch.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stopping_after_epoch(self) -> bool:
        return self._stop_after_epoch.is_set()

    def checkpoint(self) -> None:
        """Block while paused; raise RunStopped when a stop was asked for."""
        while not self._running.wait(timeout=0.1):
            if self._stop.is_set():
                break
        if self._stop.is_set():
            raise RunStopped()
