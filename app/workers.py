"""Run a function off the GUI thread: the app's one worker abstraction (modelled on superqt's `WorkerBase` /
`thread_worker` and Orange3's `concurrent` helpers).

    worker = Worker(fn, control=None, owner=self)   # fn(progress) -> result, run in its own QThread
    worker.progressed.connect(...)                  # (percent, message), at most every THROTTLE_S
    worker.returned.connect(...)                    # the result
    worker.errored.connect(...)                     # (one-line message, traceback, user error)
    worker.start()
    worker.abort()                                  # cooperative: fn stops at its next progress call

Every signal is emitted on the GUI thread, in this order: `started`, any number of `progressed`, then exactly
one of `returned`, `errored` or `cancelled`, then `finished`. The outcome is decided on the GUI thread when the
thread has ended, so after `abort()` a result or error that still arrives is dropped (`cancelled` instead),
whatever the timing. A module-level registry keeps each started worker alive until it has delivered its outcome
(no keep-alive sets in the panels); `await_workers` waits for them at shutdown.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from core.errors import LorkdError, RunStopped
from core.events import Control

__all__ = ["Cancelled", "ProgressFn", "Worker", "active_workers", "await_workers", "error_message"]

ProgressFn = Callable[[float, str], None]

# started workers that have not delivered their outcome yet (they must outlive the code that started them)
_REGISTRY: set[Worker] = set()


class _GuiThreadCollector:
    """Python's cyclic garbage collector runs in whichever thread happens to allocate past its threshold. Run in a
    worker thread it frees whatever cyclic garbage there is, GUI objects included (the widgets of a closed
    window), and destroying a QObject off the GUI thread deadlocks against the GUI thread: the worker holds Qt's
    connection lock and waits for the GIL, the GUI thread holds the GIL and waits for that lock (seen as a hung
    GUI test, both threads in ~QObject). So while any worker runs, automatic collection is off and the GUI thread
    collects on a timer, with the interpreter's own thresholds; reference counting still frees everything else at
    once. Started and stopped from the GUI thread only (`Worker.start` and the outcome delivery).

    The objects alive when the first worker starts (the imported libraries: half a million objects with torch and
    MONAI loaded) are frozen (`gc.freeze`) until the last one ends: a full collection then scans only what was
    created since, ~0.01 ms instead of ~300 ms, which the GUI would otherwise feel as a stall every few seconds
    of a run. Unfrozen at the end, so cyclic garbage among them is still collected later."""

    INTERVAL_MS = 250

    def __init__(self) -> None:
        self.users = 0
        self.was_enabled = True
        self.timer: QTimer | None = None

    def acquire(self) -> None:
        self.users += 1
        if self.users > 1:
            return
        self.was_enabled = gc.isenabled()
        gc.disable()
        gc.freeze()
        if self.timer is None:
            self.timer = QTimer()
            self.timer.setInterval(self.INTERVAL_MS)
            self.timer.timeout.connect(self.collect)
        self.timer.start()

    def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users or self.timer is None:
            return
        self.timer.stop()
        self.collect()
        gc.unfreeze()  # into the oldest generation: collected when the interpreter next decides to
        if self.was_enabled:
            gc.enable()

    @staticmethod
    def collect() -> None:
        """One collection of the generation the interpreter would collect now (if any)."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] <= thresholds[0]:
            return
        generation = 2 if counts[2] > thresholds[2] else 1 if counts[1] > thresholds[1] else 0
        gc.collect(generation)


_COLLECTOR = _GuiThreadCollector()


class Cancelled(Exception):
    """Raised inside the worker function by its progress callback once the worker was aborted."""


def error_message(error: BaseException) -> str:
    """A user-facing one-line message: a LorkdError's own text, anything else prefixed by its type."""
    text = " ".join(str(error).split())
    if isinstance(error, LorkdError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Thread(QThread):
    """The QThread a `Worker` runs its function in; the outcome is stored here for the GUI thread to read
    after the thread has ended (plain attributes: written before `finished`, read after it)."""

    progress = Signal(int, str)

    def __init__(
        self, fn: Callable[[ProgressFn], Any], abort: threading.Event, throttle_s: float, parent: QObject
    ) -> None:
        super().__init__(parent)
        self._fn = fn
        self._abort = abort
        self._throttle_s = throttle_s
        self._last: tuple[float, str | None] = (-1.0, None)
        self.result: Any = None
        self.failure: tuple[str, str, bool] | None = None
        self.was_cancelled = False

    def report(self, fraction: float, message: str) -> None:
        """The progress callback handed to the function (worker thread)."""
        if self._abort.is_set():
            raise Cancelled
        now = time.monotonic()
        last_time, last_message = self._last
        if message != last_message or now - last_time >= self._throttle_s or fraction >= 1.0:
            self._last = (now, message)
            self.progress.emit(int(round(100 * max(0.0, min(1.0, fraction)))), message)

    def run(self) -> None:  # noqa: D401 - QThread API
        try:
            self.result = self._fn(self.report)
        except (Cancelled, RunStopped):
            self.was_cancelled = True
        except BaseException as error:  # noqa: BLE001 - every failure must reach the GUI thread
            details = traceback.format_exc()
            user_error = isinstance(error, LorkdError)
            if not user_error:  # a bug: the traceback also goes to the log (stderr)
                traceback.print_exc()
            self.failure = (error_message(error), details, user_error)


class Worker(QObject):
    """`Worker(fn)`: `fn(progress) -> result` runs in its own QThread once `start()` is called.

    `progress(fraction, message)` reports progress (fraction 0-1) and raises `Cancelled` after `abort()`. With a
    `control` (`core.events.Control`, the engine's pause/stop token) `abort()` stops it too, so work that
    checks the token between steps ends before its next step. `owner` is any object the worker is started for
    (a panel); `active_workers(owner)` and `await_workers(owner=...)` select by it.
    """

    started = Signal()
    progressed = Signal(int, str)  # percent 0-100, message
    returned = Signal(object)
    errored = Signal(str, str, bool)  # one-line message, traceback, user error (LorkdError)
    cancelled = Signal()
    finished = Signal()

    THROTTLE_S = 0.05

    def __init__(
        self,
        fn: Callable[[ProgressFn], Any],
        *,
        control: Control | None = None,
        owner: object | None = None,
        name: str = "lorkd-worker",
    ) -> None:
        super().__init__()
        self.control = control
        self.owner = owner
        self._abort = threading.Event()
        self._thread = _Thread(fn, self._abort, self.THROTTLE_S, self)
        self._thread.setObjectName(name)
        self._thread.progress.connect(self._on_progress)
        self._thread.finished.connect(self._deliver)
        self._state = "new"  # new -> running -> done

    # ------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the function in the worker's thread (once)."""
        if self._state != "new":
            raise RuntimeError("a worker can be started only once")
        self._state = "running"
        _REGISTRY.add(self)
        _COLLECTOR.acquire()
        self.started.emit()
        self._thread.start()

    def abort(self) -> None:
        """Ask the function to stop at its next progress call (and stop `control`); whatever it still returns
        or raises is dropped: the worker ends with `cancelled`. Does nothing once the outcome was delivered."""
        if self._state == "done":
            return
        self._abort.set()
        if self.control is not None:
            self.control.stop()

    @property
    def abort_requested(self) -> bool:
        """True once `abort()` was called."""
        return self._abort.is_set()

    @property
    def is_running(self) -> bool:
        """Started and its outcome not delivered yet."""
        return self._state == "running"

    def wait(self, timeout_ms: int | None = None) -> bool:
        """Block (GUI thread) until the function has ended, at most `timeout_ms` (None: however long it takes),
        then deliver its outcome at once. True when it has ended (or was never started)."""
        if self._state != "running":  # never started, or delivered (its thread may be deleted by now)
            return True
        ended = self._thread.wait() if timeout_ms is None else self._thread.wait(max(0, int(timeout_ms)))
        if ended:
            self._deliver()
        return ended

    # ------------------------------------------------------------------------------------- GUI thread
    @Slot(int, str)
    def _on_progress(self, percent: int, message: str) -> None:
        if self._state == "running" and not self._abort.is_set():
            self.progressed.emit(percent, message)

    @Slot()
    def _deliver(self) -> None:
        """The thread has ended: emit the outcome (once; `wait()` may have delivered it already)."""
        if self._state != "running":
            return
        self._state = "done"
        self._thread.wait()  # `finished` is emitted just before the thread really ends
        thread = self._thread
        if self._abort.is_set() or thread.was_cancelled:
            self.cancelled.emit()
        elif thread.failure is not None:
            self.errored.emit(*thread.failure)
        else:
            self.returned.emit(thread.result)
        self.finished.emit()
        # forget it from a timer, not here: dropping the last reference inside the worker's own slot would
        # delete the object while Qt is still delivering to it
        QTimer.singleShot(0, lambda: _release(self))


def _release(worker: Worker) -> None:
    if worker in _REGISTRY:
        _REGISTRY.discard(worker)
        _COLLECTOR.release()
    # deleteLater also frees a worker that slots (lambdas) still reference, with its thread
    worker.deleteLater()


def active_workers(owner: object | None = None) -> list[Worker]:
    """Workers started and still running (of `owner`, when given)."""
    return [w for w in list(_REGISTRY) if w.is_running and (owner is None or w.owner is owner)]


def await_workers(timeout_ms: int | None = None, owner: object | None = None) -> bool:
    """Block until every running worker (of `owner`, when given) has ended and delivered its outcome, at most
    `timeout_ms` in all (None: however long it takes). True when all have ended (app shutdown, tests)."""
    deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
    for worker in active_workers(owner):
        left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if not worker.wait(left):
            return False
    return True
