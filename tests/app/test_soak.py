"""Soak: in one running app, three decompositions back to back and twenty start/cancel cycles. Memory (RSS),
open file descriptors and threads must come back near their level after the first (warm-up) run: nothing
leaks per run (models, datasets, QThreads, worker objects, open files)."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from gui_support import tiny_config
from PySide6.QtCore import QThread

from app.run_controller import RunState

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc (Linux)")

RSS_TOLERANCE_MB = 50
FD_TOLERANCE = 5
THREAD_TOLERANCE = 2


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _trim_malloc() -> None:
    """Hand the memory glibc's allocator keeps for reuse back to the system, so RSS counts what is still in use
    (freed tensors and arrays otherwise stay in its arenas: RSS 60-180 MB higher after runs that leak nothing,
    the same before and after the GC change of this test's neighbours)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS as it is
        pass


def snapshot() -> dict[str, float]:
    gc.collect()
    _trim_malloc()
    qthreads = [o for o in gc.get_objects() if issubclass(type(o), QThread)]
    return {
        "rss_mb": _status("VmRSS") / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "os_threads": _status("Threads"),
        "py_threads": threading.active_count(),
        "qthreads": len(qthreads),
        "running_qthreads": sum(1 for t in qthreads if t.isRunning()),
    }


def settle(qtbot, window) -> None:
    qtbot.waitUntil(lambda: not window.controller.state.active, timeout=60_000)
    qtbot.wait(50)  # let queued signals and deleteLater run


def run_once(qtbot, window) -> None:
    window.start_run()
    assert window.controller.state == RunState.RUNNING
    qtbot.waitUntil(lambda: window.controller.state == RunState.FINISHED, timeout=60_000)
    settle(qtbot, window)


def report(capsys, text: str) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\n    {text}\n")


def test_three_runs_and_twenty_cancels_leak_nothing(qtbot, window, data_dir, capsys):
    raw = tiny_config(data_dir, name="soak", train_epochs=1, backbone__arch="compact")
    raw["train"]["log_every"] = 2
    window.setup.set_mapping(raw)
    assert window.setup.is_valid, window.setup.error
    started = time.perf_counter()

    run_once(qtbot, window)  # warm-up: first imports, allocator pools, Qt caches
    base = snapshot()
    for _ in range(2):
        run_once(qtbot, window)
    after_runs = snapshot()
    runs_s = time.perf_counter() - started

    for _ in range(20):
        window.start_run()
        assert window.controller.state == RunState.RUNNING
        window.controller.cancel()
        settle(qtbot, window)
        assert window.controller.state in (RunState.STOPPED, RunState.FINISHED), window.controller.state
        if window.error_box is not None:
            pytest.fail(f"a cancelled run showed an error: {window.error_box.text()}")
    after_cancels = snapshot()
    report(capsys, f"soak: 3 runs in {runs_s:.1f} s, 20 cancels in {time.perf_counter() - started - runs_s:.1f} s; "
                   f"base {base}; after runs {after_runs}; after cancels {after_cancels}")

    for label, now in (("after 3 runs", after_runs), ("after 20 cancels", after_cancels)):
        assert now["rss_mb"] <= base["rss_mb"] + RSS_TOLERANCE_MB, (label, base, now)
        assert now["fds"] <= base["fds"] + FD_TOLERANCE, (label, base, now)
        assert now["os_threads"] <= base["os_threads"] + THREAD_TOLERANCE, (label, base, now)
        assert now["py_threads"] <= base["py_threads"] + THREAD_TOLERANCE, (label, base, now)
        assert now["running_qthreads"] == 0, (label, now)
        assert now["qthreads"] <= base["qthreads"] + 1, (label, base, now)  # no QThread wrapper per run
    assert window.controller.state in (RunState.STOPPED, RunState.FINISHED)
    assert window.start_button.isEnabled()
