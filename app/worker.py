"""Runs a `Decomposition` in a QThread and turns its observer events into throttled Qt signals.

Pattern (napari / Orange3): one worker per run, owned by a `RunController` that lives in the GUI
thread. The engine calls `EventSink` (an Observer) from the worker thread; the sink only appends to
a lock-protected list, so the engine never waits on the GUI. A QTimer in the GUI thread drains the
list at most `FLUSH_HZ` times a second and re-emits the batch as signals, so a fast run cannot flood
the event loop. The GUI thread never waits on training: pause/resume/stop go through the engine's
`Control` token, which it checks at every step.
"""

from __future__ import annotations

import enum
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from core.config import Config
from core.errors import LorkdError, RunStopped
from core.events import Control, EvalEvent, RunInfo, StepEvent

FLUSH_HZ = 10


def warm_up_engine() -> None:
    """Import what a run imports lazily, here in the GUI thread before any run.

    Creating the first torch optimizer imports torch._dynamo (and sympy, ~800 modules, over a second).
    Done inside the worker thread, those imports hold the GIL in long stretches (unmarshalling code) and
    the event loop stalls for 100-300 ms; done once at startup they cost nothing during a run."""
    import torch

    import core.kinds.classification.bundle  # noqa: F401 - export phase
    import core.kinds.segmentation.apply  # noqa: F401 - the experts panel's segmentation
    import core.kinds.segmentation.bundle  # noqa: F401 - segmentation export phase
    import core.train.run  # noqa: F401
    import core.train.seg_run  # noqa: F401 - the default demo is a segmentation run

    param = torch.zeros(1, requires_grad=True)
    torch.optim.SGD([param], lr=0.1)
    torch.optim.AdamW([param], lr=0.1)


class RunState(enum.Enum):
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
    """An engine event with the worker-side time it happened (for rates and ETA)."""

    time: float
    event: Any


class EventSink:
    """The Observer the engine talks to. Thread-safe; never blocks for longer than a list append."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []

    def _push(self, kind: str, payload: Any) -> None:
        with self._lock:
            self._pending.append((kind, payload))

    def take(self) -> list[tuple[str, Any]]:
        with self._lock:
            items, self._pending = self._pending, []
        return items

    # Observer protocol -------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        self._push("start", info)

    def on_step(self, event: StepEvent) -> None:
        self._push("step", Timed(time.monotonic(), event))

    def on_eval(self, event: EvalEvent) -> None:
        self._push("eval", event)

    def on_log(self, message: str) -> None:
        self._push("log", message)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._push("end", summary)

    def on_error(self, error: BaseException) -> None:
        # the worker reports the exception itself (with its traceback), including errors raised
        # before the engine's run() starts, which never reach on_error
        pass

    def fail(self, message: str, details: str, user_error: bool) -> None:
        self._push("error", (message, details, user_error))


class RunWorker(QObject):
    """Runs one run of either kind (classification `Decomposition`, segmentation `SegDecomposition`); lives in
    its own QThread."""

    done = Signal()

    def __init__(self, config: Config, run_dir: Path, sink: EventSink, control: Control, export: bool = True):
        super().__init__()
        self.config, self.run_dir, self.sink, self.control, self.export = config, run_dir, sink, control, export

    @Slot()
    def run(self) -> None:
        from core.train.run import decomposition_for

        try:
            decomposition_for(self.config, self.run_dir, self.sink, self.control).run(export=self.export)
        except RunStopped:  # a stop asked for before the engine's own handler was in place
            self.sink.on_end({"status": "stopped", "run_dir": str(self.run_dir)})
        except LorkdError as exc:
            self.sink.fail(str(exc), traceback.format_exc(), True)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the GUI
            self.sink.fail(f"{type(exc).__name__}: {exc}", traceback.format_exc(), False)
        finally:
            self.done.emit()


def same_config(folder: Path, config: Config) -> bool:
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
    steps = Signal(list)  # list[Timed] with StepEvent payloads, oldest first
    evaluated = Signal(object)  # EvalEvent
    logged = Signal(str)
    finished = Signal(dict)  # summary, status "completed" or "stopped"
    failed = Signal(str, str, bool)  # one-line message, traceback, user error (LorkdError)
    flushed = Signal()  # after every drain that delivered something (tests, stall probes)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = RunState.IDLE
        self._thread: QThread | None = None
        self._worker: RunWorker | None = None
        self._sink: EventSink | None = None
        self.control: Control | None = None
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None
        self.error: tuple[str, str, bool] | None = None
        self._retired: tuple = ()
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / FLUSH_HZ))
        self._timer.timeout.connect(self.flush)

    # --------------------------------------------------------------------------- state
    @property
    def state(self) -> RunState:
        return self._state

    def _set_state(self, state: RunState) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def allowed(self, action: str) -> bool:
        if self._state not in ACTIONS[action]:
            return False
        if action == "cancel" and self._state == RunState.STOPPING:
            return self.control is not None and not self.control.stopping
        return True

    # ------------------------------------------------------------------------- actions
    def start(self, config: Config, run_dir: Path, export: bool = True) -> None:
        if not self.allowed("start"):
            raise RuntimeError(f"cannot start a run while {self._state.value}")
        self.run_dir = Path(run_dir)
        self.summary, self.error = None, None
        self.control = Control()
        self._sink = EventSink()
        self._thread = QThread()
        self._thread.setObjectName("lorkd-run")
        self._worker = RunWorker(config, self.run_dir, self._sink, self.control, export)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        # direct: quit from the worker thread itself, so a GUI thread blocked in wait() cannot deadlock
        self._worker.done.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.finished.connect(self._on_thread_finished)
        self._set_state(RunState.RUNNING)
        self._timer.start()
        self._thread.start()

    def pause(self) -> None:
        if self.allowed("pause"):
            self.control.pause()
            self._set_state(RunState.PAUSED)
            self.logged.emit("paused (the run waits at the next step)")

    def resume(self) -> None:
        if self.allowed("resume"):
            self.control.resume()
            self._set_state(RunState.RUNNING)
            self.logged.emit("resumed")

    def stop_after_epoch(self) -> None:
        if self.allowed("stop_after_epoch"):
            self.control.stop_after_epoch()
            self._set_state(RunState.STOPPING)
            self.logged.emit("stopping after this epoch (checkpoint and evaluation first)")

    def cancel(self) -> None:
        if self.allowed("cancel"):
            self.control.stop()
            self._set_state(RunState.STOPPING)
            self.logged.emit("cancelling at the next step (the last finished epoch stays resumable)")

    def wait(self, msecs: int = -1) -> bool:
        """Block until the worker thread ends (closing the window only). True when it has ended."""
        if self._thread is None:
            return True
        ended = self._thread.wait() if msecs < 0 else self._thread.wait(msecs)
        if ended:
            self._on_thread_finished()
        return ended

    # -------------------------------------------------------------------------- events
    @Slot()
    def flush(self) -> None:
        """Deliver the events the worker queued since the last flush (GUI thread, <= FLUSH_HZ)."""
        if self._sink is None:
            return
        items = self._sink.take()
        if not items:
            return
        steps: list[Timed] = []
        for kind, payload in items:
            if kind == "step":
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
                self.logged.emit(payload)
            elif kind == "end":
                self.summary = payload
            elif kind == "error":
                self.error = payload
        if steps:
            self.steps.emit(steps)
        self.flushed.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        if self._thread is None:
            return
        self.flush()
        self._timer.stop()
        # keep the finished thread's wrappers until the next start: deleting a QThread from inside
        # the handling of its own finished signal is asking for trouble
        self._retired = (self._thread, self._worker)
        self._thread, self._worker, self._sink = None, None, None
        if self.error is not None:
            self._set_state(RunState.FAILED)
            self.failed.emit(*self.error)
            return
        summary = self.summary or {"status": "stopped", "run_dir": str(self.run_dir)}
        self.summary = summary
        self._set_state(RunState.FINISHED if summary.get("status") == "completed" else RunState.STOPPED)
        self.finished.emit(summary)


class FunctionWorker(QObject):
    """Runs a callable in a QThread (e.g. generating the demo data); emits its result or error."""

    result = Signal(object)
    error = Signal(str, str)  # one-line message, traceback

    def __init__(self, fn, *args: Any, parent: QObject | None = None, **kwargs: Any) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._runner = _Runner(fn, args, kwargs)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.done.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.finished.connect(self._finished)

    def start(self) -> None:
        self._thread.start()

    def wait(self, msecs: int = -1) -> bool:
        return self._thread.wait() if msecs < 0 else self._thread.wait(msecs)

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    @Slot()
    def _finished(self) -> None:
        if self._runner.failure is None:
            self.result.emit(self._runner.value)
        else:
            self.error.emit(*self._runner.failure)


class _Runner(QObject):
    done = Signal()

    def __init__(self, fn, args, kwargs) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.value: Any = None
        self.failure: tuple[str, str] | None = None

    @Slot()
    def run(self) -> None:
        try:
            self.value = self.fn(*self.args, **self.kwargs)
        except LorkdError as exc:
            self.failure = (str(exc), traceback.format_exc())
        except Exception as exc:  # noqa: BLE001
            self.failure = (f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            self.done.emit()
