"""Run one function in a QThread with throttled progress and cooperative cancel (Orange3-style).

The function receives `progress(fraction, message)`; after `cancel()` that callback raises `Cancelled`, so
the work stops at its next step, and a result that still arrives is dropped (never emitted). With a `control`
(`core.events.Control`, the engine's pause/stop token) `cancel()` also stops it, so work that checks the
token between steps (sliding-window inference) ends before its next window.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QThread, Signal

from core.errors import LorkdError, RunStopped
from core.events import Control

ProgressFn = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised inside the worker function by its progress callback once the user cancelled."""


def error_message(error: BaseException) -> str:
    """A user-facing one-line message: a LorkdError's own text, anything else prefixed by its type."""
    text = " ".join(str(error).split())
    if isinstance(error, LorkdError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TaskThread(QThread):
    """`TaskThread(fn)`: `fn(progress) -> result` runs off the GUI thread.

    Signals (delivered on the GUI thread): `progressed(percent, message)` at most every 50 ms (and on every
    message change), then exactly one of `succeeded(result)`, `failed(message)` or `cancelled()`.
    """

    progressed = Signal(int, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    THROTTLE_S = 0.05

    def __init__(self, fn: Callable[[ProgressFn], Any], parent=None, control: Control | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self._cancel = False
        self._last = (-1.0, None)
        self.control = control

    def cancel(self) -> None:
        """Ask the function to stop at its next progress call (or control checkpoint); its result, if any, is
        dropped."""
        self._cancel = True
        if self.control is not None:
            self.control.stop()

    @property
    def is_cancelled(self) -> bool:
        return self._cancel

    def _progress(self, fraction: float, message: str) -> None:
        if self._cancel:
            raise Cancelled
        now = time.monotonic()
        last_time, last_message = self._last
        if message != last_message or now - last_time >= self.THROTTLE_S or fraction >= 1.0:
            self._last = (now, message)
            self.progressed.emit(int(round(100 * max(0.0, min(1.0, fraction)))), message)

    def run(self) -> None:  # noqa: D401 - QThread API
        try:
            result = self._fn(self._progress)
        except (Cancelled, RunStopped):
            self.cancelled.emit()
        except Exception as error:  # shown to the user in a dialog; the traceback goes to the log
            if not isinstance(error, LorkdError):
                traceback.print_exc()
            if self._cancel:
                self.cancelled.emit()
            else:
                self.failed.emit(error_message(error))
        else:
            if self._cancel:
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
