"""Runs a `Pipeline` (core.train.pipeline) on a `Worker` (app.workers) and turns its observer events into throttled Qt
signals.

Pattern (napari / Orange3): one worker per run, owned by a `RunController` that lives in the GUI thread. The
engine calls `EventSink` (an Observer) from the worker thread; the sink only appends to a lock-protected list,
so the engine never waits on the GUI. A QTimer in the GUI thread drains the list at most `FLUSH_HZ` times a
second and re-emits the batch as signals (one batch of step events per flush), so a fast run cannot flood the
event loop: better than a signal per event. The GUI thread never waits on training: pause/resume/stop go through
the engine's `Control` token, which it checks at every step. That token (`StepCounter`) also counts those checks
and the time the engine waits paused, so the progress bar moves at every step although the engine logs a step
only every `log_every`, and rates and ETAs leave paused time out.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import QObject, QTimer, Signal, Slot

from app.workers import Worker
from core.config import Config
from core.errors import LorkdError
from core.events import Control, EvalEvent, PhaseEvent, RunInfo, StepEvent

FLUSH_HZ = 10
# how the engine's log line for a stopped run begins: its wording is the command line's ("run the same command
# again"); the GUI says what its own Start button does instead (`RunController.stopped_text`)
ENGINE_STOPPED = "run stopped; run the same command again"


def warm_up_engine() -> None:
    """Import what a run imports lazily, here in the GUI thread before any run.

    Creating the first torch optimizer imports torch._dynamo (and sympy, ~800 modules, over a second).
    Done inside the worker thread, those imports hold the GIL in long stretches (unmarshalling code) and
    the event loop stalls for 100-300 ms; done once at startup they cost nothing during a run."""
    import torch

    import core.train.pipeline  # noqa: F401 - every kind's data, models, export and apply (core.kinds)

    param = torch.zeros(1, requires_grad=True)
    torch.optim.SGD([param], lr=0.1)
    torch.optim.AdamW([param], lr=0.1)


class RunState(enum.Enum):
    """Where a run is: the states of `RunController`'s state machine."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """A worker thread exists for the run."""
        return self in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)


# Which run action makes sense in which state. `cancel` in STOPPING only while the stop is the
# gentle "after this epoch" one (see RunController.allowed).
ACTIONS: dict[str, tuple[RunState, ...]] = {
    "start": (RunState.IDLE, RunState.FINISHED, RunState.STOPPED, RunState.FAILED),
    "pause": (RunState.RUNNING,),
    "resume": (RunState.PAUSED,),
    "stop_after_epoch": (RunState.RUNNING,),
    "cancel": (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING),
}


@dataclass
class Timed:
    """An engine event with the worker-side time it happened (for rates and ETA): the run's active clock
    (`StepCounter.clock`, paused time left out), the steps the engine had begun and the seconds it had waited
    paused by then."""

    time: float
    event: Any
    ticks: int = 0
    paused_s: float = 0.0


@dataclass
class StepCount:
    """Between logged steps: the steps the engine has begun so far and whether the run is paused (the monitor's
    bar moves with it at every step); delivered at most once per flush, when it changed."""

    time: float
    ticks: int
    paused: bool


class StepCounter(Control):
    """The run's pause/stop token, which also counts the engine's checks of it (one per training step) and the time
    it waited paused there. Thread-safe; the check costs a lock and two clock reads."""

    def __init__(self) -> None:
        super().__init__()
        self._count_lock = threading.Lock()
        self.ticks = 0
        self._waited = 0.0
        self._waiting_since: float | None = None

    def checkpoint(self) -> None:
        start = time.monotonic()
        with self._count_lock:
            self.ticks += 1
            self._waiting_since = start
        try:
            super().checkpoint()
        finally:
            with self._count_lock:
                self._waited += time.monotonic() - start
                self._waiting_since = None

    def clock(self) -> tuple[float, int, float]:
        """(monotonic seconds less the time spent waiting paused, steps begun, seconds waited paused)."""
        with self._count_lock:
            now = time.monotonic()
            waited = self._waited + (now - self._waiting_since if self._waiting_since is not None else 0.0)
            return now - waited, self.ticks, waited


class EventSink:
    """The Observer the engine talks to. Thread-safe; never blocks for longer than a list append."""

    def __init__(self, counter: StepCounter | None = None) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []
        self.counter = counter or StepCounter()

    def _push(self, kind: str, payload: Any) -> None:
        with self._lock:
            self._pending.append((kind, payload))

    def _timed(self, event: Any) -> Timed:
        now, ticks, waited = self.counter.clock()
        return Timed(now, event, ticks, waited)

    def take(self) -> list[tuple[str, Any]]:
        """The events queued since the last call, oldest first, as (kind, payload)."""
        with self._lock:
            items, self._pending = self._pending, []
        return items

    # Observer protocol -------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        self._push("start", info)

    def on_step(self, event: StepEvent) -> None:
        self._push("step", self._timed(event))

    def on_phase(self, event: PhaseEvent) -> None:
        self._push("phase", event)

    def on_eval(self, event: EvalEvent) -> None:
        self._push("eval", event)

    def on_log(self, message: str) -> None:
        self._push("log", message)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._push("end", summary)

    def on_error(self, error: BaseException) -> None:
        # the Worker reports the exception itself (with its traceback), including errors raised
        # before the engine's run() starts, which never reach on_error
        pass


def same_config(folder: Path, config: Config) -> bool:
    """`folder/config.yaml` holds exactly `config` (False when it is missing or unreadable)."""
    path = folder / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) == config.to_dict()
    except (OSError, yaml.YAMLError):
        return False


def choose_run_dir(runs_root: Path, config: Config) -> tuple[Path, bool]:
    """The folder for a run of `config` under `runs_root`, and whether it resumes an earlier run.

    `<name>`, `<name>-2`, ...: the first that does not exist yet, or that holds an unfinished run
    (no summary.json) of exactly this config, which the engine then resumes from its last epoch.
    """
    for i in range(1, 10_000):
        folder = runs_root / (config.name if i == 1 else f"{config.name}-{i}")
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return folder, False
        if same_config(folder, config) and not (folder / "summary.json").exists():
            return folder, (folder / "checkpoints" / "last.pt").is_file()
    raise LorkdError(f"{runs_root}: too many runs named {config.name!r}; choose another name")


class RunController(QObject):
    """Starts, steers and watches one run at a time; the state machine behind the run buttons."""

    state_changed = Signal(object)  # RunState
    run_started = Signal(object)  # RunInfo
    # the run's progress, oldest first: Timed (a logged StepEvent), PhaseEvent (a stage without steps began: testing,
    # export), StepCount (steps begun since, paused or not; last in a batch, only when it changed)
    steps = Signal(list)
    evaluated = Signal(object)  # EvalEvent
    logged = Signal(str)
    finished = Signal(dict)  # summary, status "completed" or "stopped"
    failed = Signal(str, str, bool)  # one-line message, traceback, user error (LorkdError)
    flushed = Signal()  # after every drain that delivered something (tests, stall probes)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = RunState.IDLE
        self._worker: Worker | None = None
        self._sink: EventSink | None = None
        self.control: StepCounter | None = None
        self._count: tuple[int, bool] | None = None  # the last StepCount delivered (ticks, paused)
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None
        self.error: tuple[str, str, bool] | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / FLUSH_HZ))
        self._timer.timeout.connect(self.flush)

    # --------------------------------------------------------------------------- state
    @property
    def state(self) -> RunState:
        """The run's state now."""
        return self._state

    def _set_state(self, state: RunState) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def allowed(self, action: str) -> bool:
        """Whether `action` (a key of `ACTIONS`) makes sense in the current state."""
        if self._state not in ACTIONS[action]:
            return False
        if action == "cancel" and self._state == RunState.STOPPING:
            return self.control is not None and not self.control.stopping
        return True

    # ------------------------------------------------------------------------- actions
    def start(self, config: Config, run_dir: Path, export: bool = True) -> None:
        """Run `config` into `run_dir` on a worker (resuming an unfinished run there); `export` the experts."""
        if not self.allowed("start"):
            raise RuntimeError(f"cannot start a run while {self._state.value}")
        self.run_dir = Path(run_dir)
        self.summary, self.error = None, None
        self.control = control = StepCounter()
        self._sink = sink = EventSink(control)
        self._count = None
        run_dir = self.run_dir

        def run(_progress) -> None:  # the engine reports through the sink, not the progress callback
            from core.train.pipeline import Pipeline

            Pipeline(config, run_dir, sink, control).run(export=export)

        # no abort(): a cancel goes through `control` so the engine still ends the run cleanly (summary,
        # resumable checkpoint), and a failure while stopping is still reported
        self._worker = Worker(run, owner=self, name="lorkd-run")
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_worker_finished)
        self._set_state(RunState.RUNNING)
        self._timer.start()
        self._worker.start()

    def pause(self) -> None:
        """Pause at the next step."""
        if self.allowed("pause"):
            self.control.pause()
            self._set_state(RunState.PAUSED)
            self.logged.emit("paused (the run waits at the next step)")
            self._emit_count()

    def resume(self) -> None:
        """Continue a paused run."""
        if self.allowed("resume"):
            self.control.resume()
            self._set_state(RunState.RUNNING)
            self.logged.emit("resumed")
            self._emit_count()

    def stop_after_epoch(self) -> None:
        """Finish, checkpoint and evaluate the current epoch, then stop."""
        if self.allowed("stop_after_epoch"):
            self.control.stop_after_epoch()
            self._set_state(RunState.STOPPING)
            self.logged.emit("stopping after this epoch (checkpoint and evaluation first)")

    def cancel(self) -> None:
        """Stop at the next step; the last finished epoch stays resumable."""
        if self.allowed("cancel"):
            self.control.stop()
            self._set_state(RunState.STOPPING)
            # whether it is resumable is said once it has stopped (an epoch may still end before the next step)
            self.logged.emit("cancelling at the next step" + ("; the last finished epoch is kept" if self.resumable
                                                               else " (no epoch has finished yet)"))

    @property
    def resumable(self) -> bool:
        """The run folder holds an epoch checkpoint: Start with the same config resumes from it (else it begins
        again)."""
        return self.run_dir is not None and (self.run_dir / "checkpoints" / "last.pt").is_file()

    def stopped_text(self) -> str:
        """What a stopped run leaves, in the GUI's words."""
        if self.resumable:
            return "run stopped; press Start with the same configuration to resume from the last finished epoch"
        return "run stopped before any epoch finished: nothing to resume; Start begins the run again"

    def wait(self, msecs: int = -1) -> bool:
        """Block until the run's worker ends (closing the window only); its end (state, `finished` or `failed`)
        is delivered before this returns. True when it has ended."""
        if self._worker is None:
            return True
        return self._worker.wait(None if msecs < 0 else msecs)

    # -------------------------------------------------------------------------- events
    def _step_count(self) -> StepCount | None:
        """The engine's step count now, when it changed since the last one delivered."""
        if self.control is None:
            return None
        now, ticks, _ = self.control.clock()
        if self._count == (ticks, self.control.paused):
            return None
        self._count = (ticks, self.control.paused)
        return StepCount(now, ticks, self.control.paused)

    def _emit_count(self) -> None:
        count = self._step_count()
        if count is not None:
            self.steps.emit([count])

    @Slot()
    def flush(self) -> None:
        """Deliver the events the worker queued since the last flush (GUI thread, <= FLUSH_HZ)."""
        if self._sink is None:
            return
        items = self._sink.take()
        steps: list[Any] = []
        for kind, payload in items:
            if kind in ("step", "phase"):
                steps.append(payload)
                continue
            if steps:  # keep the order of steps relative to evaluations and log lines
                self.steps.emit(steps)
                steps = []
            if kind == "start":
                self.run_started.emit(payload)
            elif kind == "eval":
                self.evaluated.emit(payload)
            elif kind == "log":
                self.logged.emit(self.stopped_text() if payload.startswith(ENGINE_STOPPED) else payload)
            elif kind == "end":
                self.summary = payload
        count = self._step_count()
        if count is not None:
            steps.append(count)
        if steps:
            self.steps.emit(steps)
        if items:
            self.flushed.emit()

    @Slot(str, str, bool)
    def _on_error(self, message: str, details: str, user_error: bool) -> None:
        self.error = (message, details, user_error)

    @Slot()
    def _on_worker_finished(self) -> None:
        """The run's thread has ended (an engine RunStopped before its own handler counts as stopped)."""
        if self._worker is None:
            return
        self.flush()
        self._timer.stop()
        self._worker, self._sink = None, None
        if self.error is not None:
            self._set_state(RunState.FAILED)
            self.failed.emit(*self.error)
            return
        summary = self.summary or {"status": "stopped", "run_dir": str(self.run_dir)}
        if summary.get("status") != "completed":
            summary["resumable"] = self.resumable
        self.summary = summary
        self._set_state(RunState.FINISHED if summary.get("status") == "completed" else RunState.STOPPED)
        self.finished.emit(summary)
