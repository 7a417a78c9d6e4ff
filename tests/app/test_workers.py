"""app.workers.Worker: the one way the app runs work off the GUI thread (signals on the GUI thread and in order,
throttled progress, user and unexpected errors, cooperative abort with stale results dropped, the registry that
keeps running workers alive, await_workers)."""

from __future__ import annotations

import gc
import threading
import time

import pytest
from PySide6.QtCore import QThread

from app.workers import Cancelled, Worker, active_workers, await_workers, error_message
from core.errors import LorkdError, RunStopped
from core.events import Control


def record(worker: Worker) -> list[tuple]:
    """Every signal of `worker` as (name, args..., on the GUI thread?) in the order it arrived."""
    seen: list[tuple] = []

    def on(name):
        return lambda *args: seen.append((name, *args, threading.current_thread() is threading.main_thread()))

    for name in ("started", "progressed", "returned", "errored", "cancelled", "finished"):
        getattr(worker, name).connect(on(name))
    return seen


def names(seen: list[tuple]) -> list[str]:
    return [s[0] for s in seen]


def test_result_and_progress_arrive_on_the_gui_thread_in_order(qtbot):
    ran_in = []

    def work(progress):
        ran_in.append(threading.current_thread())
        progress(0.25, "first")
        progress(1.0, "done")
        return 42

    worker = Worker(work, owner="test")
    seen = record(worker)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert ran_in[0] is not threading.main_thread()
    assert seen == [("started", True), ("progressed", 25, "first", True), ("progressed", 100, "done", True),
                    ("returned", 42, True), ("finished", True)]
    with pytest.raises(RuntimeError):
        worker.start()  # once only


def test_progress_is_throttled_but_keeps_message_changes_and_the_end(qtbot):
    def work(progress):
        for i in range(2000):
            progress(i / 2000, "working")
        progress(0.5, "second phase")
        progress(1.0, "second phase")

    worker = Worker(work)
    seen = record(worker)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    progressed = [s[1:3] for s in seen if s[0] == "progressed"]
    assert progressed[0] == (0, "working")
    assert len(progressed) < 100  # 2000 calls in far less than 100 x 50 ms
    assert progressed[-2:] == [(50, "second phase"), (100, "second phase")]


@pytest.mark.parametrize(
    ("kind", "text", "message", "user_error"),
    [
        (LorkdError, "scan.nii: not a NIfTI file\n  (truncated)", "scan.nii: not a NIfTI file (truncated)", True),
        (RuntimeError, "simulated bug", "RuntimeError: simulated bug", False),
        (KeyError, "x", "KeyError: 'x'", False),
    ],
)
def test_errors_give_one_line_message_traceback_and_kind(qtbot, kind, text, message, user_error):
    def work(_progress):
        raise kind(text)  # made here: a raised exception keeps the worker's frames alive through its traceback

    worker = Worker(work)
    seen = record(worker)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert names(seen) == ["started", "errored", "finished"]
    _, got_message, details, got_user_error, on_gui = seen[1]
    assert (got_message, got_user_error, on_gui) == (message, user_error, True)
    assert "Traceback" in details and kind.__name__ in details
    assert error_message(kind(text)) == message


def test_abort_raises_in_progress_and_stops_the_control_token(qtbot):
    control = Control()
    running = threading.Event()

    def work(progress):
        running.set()
        while True:
            progress(0.5, "looping")
            time.sleep(0.001)

    worker = Worker(work, control=control)
    seen = record(worker)
    worker.start()
    assert running.wait(10)
    assert worker.is_running and not worker.abort_requested
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.abort()
    assert control.stopping and worker.abort_requested and not worker.is_running
    assert names(seen)[-2:] == ["cancelled", "finished"] and "returned" not in names(seen)
    assert all(s[1:3] == (50, "looping") for s in seen if s[0] == "progressed")


def test_a_result_that_arrives_after_abort_is_dropped(qtbot):
    gate = threading.Event()

    def work(_progress):  # never looks at progress: finishes its work whatever happens
        assert gate.wait(10)
        return "stale"

    worker = Worker(work)
    seen = record(worker)
    worker.start()
    worker.abort()
    gate.set()
    assert worker.wait(10_000)
    assert names(seen) == ["started", "cancelled", "finished"]


def test_engine_stop_counts_as_cancelled(qtbot):
    def work(_progress):
        raise RunStopped("stopped by the user")

    worker = Worker(work)
    seen = record(worker)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert names(seen) == ["started", "cancelled", "finished"]


def test_the_progress_callback_raises_cancelled_once_aborted(qtbot):
    gate, raised = threading.Event(), []

    def work(progress):
        assert gate.wait(10)
        try:
            progress(0.1, "next step")
        except Cancelled:
            raised.append(True)
            raise

    worker = Worker(work)
    seen = record(worker)
    worker.start()
    worker.abort()
    gate.set()
    assert worker.wait(10_000)
    assert raised == [True] and names(seen) == ["started", "cancelled", "finished"]


def test_registry_keeps_an_unreferenced_worker_alive_until_it_has_delivered(qtbot):
    gate, results = threading.Event(), []

    def start_and_forget():
        worker = Worker(lambda _progress: gate.wait(10) and "done", owner="forgotten")
        worker.returned.connect(results.append)
        worker.start()

    start_and_forget()
    gc.collect()
    assert len(active_workers("forgotten")) == 1
    gate.set()
    qtbot.waitUntil(lambda: results == ["done"], timeout=10_000)
    qtbot.waitUntil(lambda: not active_workers("forgotten"), timeout=10_000)
    qtbot.wait(20)  # the registry lets go from a timer, then Qt deletes the worker and its thread
    gc.collect()
    assert not [o for o in gc.get_objects() if issubclass(type(o), QThread) and type(o).__module__ == "app.workers"]


def test_wait_and_await_workers_deliver_before_returning(qtbot):
    gates = {name: threading.Event() for name in ("a", "b")}
    workers = {name: Worker(lambda _progress, g=gate, n=name: g.wait(10) and n, owner=name)
               for name, gate in gates.items()}
    seen = {name: record(worker) for name, worker in workers.items()}
    for worker in workers.values():
        worker.start()
    assert await_workers(50) is False  # both still blocked
    gates["a"].set()
    assert await_workers(10_000, owner="a")
    assert names(seen["a"]) == ["started", "returned", "finished"]  # delivered without running the event loop
    assert workers["b"].is_running and not workers["a"].is_running
    assert active_workers("b") == [workers["b"]] and not active_workers("a")
    gates["b"].set()
    assert workers["b"].wait()
    assert seen["b"][-2][:2] == ("returned", "b")
    assert await_workers(0)
    qtbot.wait(20)  # the queued end of each thread is ignored: delivered once
    assert names(seen["a"]).count("finished") == names(seen["b"]).count("finished") == 1


def test_cyclic_garbage_is_collected_on_the_gui_thread_while_a_worker_runs(qtbot):
    """A collection triggered in a worker thread could destroy GUI objects there and deadlock with the GUI thread
    (it hung a GUI test): while a worker runs automatic collection is off and the GUI thread collects cycles on a
    timer; when the last worker has delivered, automatic collection is back."""
    from app.workers import _COLLECTOR

    class Cycle:
        def __init__(self, tag: str = "") -> None:
            self.me = self
            self.tag = tag

        def __del__(self) -> None:
            collected_in.append(threading.current_thread())
            tags.append(self.tag)

    collected_in: list = []
    tags: list[str] = []
    release = threading.Event()

    def work(progress):
        for _ in range(3 * gc.get_threshold()[0]):  # enough allocations to trigger a collection if it were on
            Cycle()
        release.wait(5)
        return "done"

    assert gc.isenabled() and gc.get_freeze_count() == 0
    old = Cycle("old")  # alive when the worker starts: frozen with the libraries' objects, not scanned meanwhile
    worker = Worker(work)
    worker.start()
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0  # a full collection meanwhile scans only what was made since (not 300 ms)
    del old
    qtbot.waitUntil(lambda: len(collected_in) > 0, timeout=5000)  # the GUI thread's timer collected them
    assert "old" not in tags  # frozen meanwhile
    release.set()
    with qtbot.waitSignal(worker.finished, timeout=5000):
        pass
    qtbot.waitUntil(lambda: _COLLECTOR.users == 0 and gc.isenabled(), timeout=5000)
    assert collected_in and all(t is threading.main_thread() for t in collected_in)
    assert gc.get_freeze_count() == 0  # unfrozen: their cyclic garbage is collectable again
    gc.collect()
    assert "old" in tags  # the cycle made before the worker started, freed once unfrozen
