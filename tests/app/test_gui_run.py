"""Runs started from the GUI: live curves, pause / resume / cancel, stop after the epoch, errors,
closing during a run, and how long the event loop stalls while the engine trains."""

from __future__ import annotations

import sys
import time

import pytest
from gui_support import tiny_config
from PySide6.QtCore import Qt

from app.run_controller import FLUSH_HZ, RunState
from core.files import safe_load


def points(window) -> dict[str, int]:
    return {task: window.monitor.plot.point_count(task) for task in ("alpha", "beta")}


def buttons(window) -> dict[str, bool]:
    return {
        "start": window.start_button.isEnabled(),
        "pause": window.pause_button.isEnabled(),
        "resume": window.resume_button.isEnabled(),
        "stop_after_epoch": window.stop_epoch_button.isEnabled(),
        "cancel": window.cancel_button.isEnabled(),
    }


def report(capsys, text: str) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\n    {text}\n")


def start(qtbot, window, raw: dict) -> None:
    window.setup.set_mapping(raw)
    assert window.setup.is_valid, window.setup.error
    assert window.start_button.isEnabled()
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    assert window.controller.state == RunState.RUNNING


def test_run_to_completion_fills_curves_and_metrics(qtbot, window, data_dir, tmp_path, stall_probe, capsys):
    flush_times = []
    window.controller.flushed.connect(lambda: flush_times.append(time.perf_counter()))
    stall_probe.start()
    start(qtbot, window, tiny_config(data_dir))
    assert buttons(window) == {"start": False, "pause": True, "resume": False, "stop_after_epoch": True,
                               "cancel": True}
    assert not window.setup.isEnabled()  # the config cannot change under a running engine
    qtbot.waitUntil(lambda: window.controller.state == RunState.FINISHED, timeout=90_000)
    stall = stall_probe.stop()
    report(capsys, f"longest GUI event-loop stall during a run: {stall * 1000:.1f} ms "
                   f"({stall_probe.ticks} ticks of a 5 ms timer)")
    assert stall < 1.0

    counts = points(window)
    # foundation: 4 steps (2 tasks x 32 / 16), decomposition: 2 epochs x 4 steps; both tasks at every step
    assert all(n >= 8 for n in counts.values()), counts
    table = window.monitor.metrics
    for task in ("alpha", "beta"):
        assert table.value(task, "teacher", "acc") is not None
        assert table.value(task, "student", "acc") is not None
    assert window.monitor.progress.value() == window.monitor.progress.maximum()
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "summary.json").is_file()
    assert window.controller.run_dir == run_dir
    assert buttons(window) == {"start": True, "pause": False, "resume": False, "stop_after_epoch": False,
                               "cancel": False}
    assert window.setup.isEnabled()
    assert "run finished" in window.monitor.log_text()
    # at most FLUSH_HZ deliveries a second (the last one may be the final flush when the worker thread ends). A
    # timeout that fires late (the GUI was busy) is followed by one due an interval after the late one was *due*,
    # so single gaps may be shorter than the interval; the rate over the run may not exceed FLUSH_HZ.
    timed = flush_times[:-1]
    assert len(timed) >= 5, flush_times
    gaps = [b - a for a, b in zip(timed[:-1], timed[1:], strict=False)]
    assert (len(timed) - 1) / (timed[-1] - timed[0]) <= FLUSH_HZ * 1.05, gaps
    assert min(gaps) >= 0.5 / FLUSH_HZ, gaps
    assert str(run_dir) in window.settings.recent("runs")


def test_pause_resume_cancel(qtbot, window, data_dir, tmp_path, stall_probe, capsys):
    stall_probe.start()
    start(qtbot, window, tiny_config(data_dir, train_epochs=50))
    qtbot.waitUntil(lambda: all(n >= 2 for n in points(window).values()), timeout=60_000)

    qtbot.mouseClick(window.pause_button, Qt.MouseButton.LeftButton)
    assert window.controller.state == RunState.PAUSED
    assert window.monitor.phase_label.text().startswith("Paused")
    assert buttons(window) == {"start": False, "pause": False, "resume": True, "stop_after_epoch": False,
                               "cancel": True}
    qtbot.wait(700)  # the step in flight when pausing still lands
    frozen = sum(points(window).values())
    qtbot.wait(1200)
    assert sum(points(window).values()) == frozen, "curves grew while paused"

    qtbot.mouseClick(window.resume_button, Qt.MouseButton.LeftButton)
    assert window.controller.state == RunState.RUNNING
    qtbot.waitUntil(lambda: sum(points(window).values()) > frozen + 2, timeout=30_000)

    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert window.controller.state == RunState.STOPPING
    assert not window.cancel_button.isEnabled() and not window.start_button.isEnabled()
    qtbot.waitUntil(lambda: window.controller.state == RunState.STOPPED, timeout=30_000)
    stall = stall_probe.stop()
    report(capsys, f"longest GUI event-loop stall (pause/resume/cancel run): {stall * 1000:.1f} ms")
    assert stall < 1.0
    assert window.start_button.isEnabled()
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert not (run_dir / "summary.json").exists()
    assert window.controller.summary["status"] == "stopped"
    # the GUI's words, not the command line's; resumable only when an epoch checkpoint exists
    log = window.monitor.log_text()
    resumable = (run_dir / "checkpoints" / "last.pt").is_file()
    assert window.controller.summary["resumable"] == resumable
    assert "same command" not in log
    assert ("resume from the last finished epoch" if resumable else "nothing to resume; Start begins") in log


def test_stop_after_epoch_leaves_a_checkpoint_and_start_resumes(qtbot, window, data_dir, tmp_path):
    start(qtbot, window, tiny_config(data_dir, train_epochs=3))
    qtbot.waitUntil(lambda: window.monitor.phase == "decompose", timeout=60_000)
    qtbot.mouseClick(window.stop_epoch_button, Qt.MouseButton.LeftButton)
    assert window.controller.state == RunState.STOPPING
    assert buttons(window) == {"start": False, "pause": False, "resume": False, "stop_after_epoch": False,
                               "cancel": True}
    qtbot.waitUntil(lambda: window.controller.state == RunState.STOPPED, timeout=60_000)
    run_dir = tmp_path / "runs" / "tiny"
    state = safe_load(run_dir / "checkpoints" / "last.pt")
    assert state["phase"] == "decompose" and 1 <= state["epoch"] < 3

    # Start with the same config resumes that folder from its checkpoint and finishes it
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    assert window.controller.run_dir == run_dir
    assert "resuming" in window.monitor.log_text()
    qtbot.waitUntil(lambda: window.controller.state == RunState.FINISHED, timeout=60_000)
    assert (run_dir / "summary.json").is_file()
    assert not (tmp_path / "runs" / "tiny-2").exists()


def test_engine_error_shows_its_one_line_message(qtbot, window, data_dir):
    bad = data_dir / "not_a_checkpoint.pt"
    bad.write_bytes(b"this is not a torch checkpoint")
    raw = tiny_config(data_dir)
    raw["teacher"]["checkpoint"] = str(bad)
    start(qtbot, window, raw)
    qtbot.waitUntil(lambda: window.controller.state == RunState.FAILED, timeout=60_000)
    box = window.error_box
    assert box is not None and box.isVisible()
    assert "not_a_checkpoint.pt" in box.text() and "\n" not in box.text()
    assert box.detailedText() == ""  # a user error: the message, no traceback
    assert "error:" in window.monitor.log_text()
    assert window.start_button.isEnabled()


def test_unexpected_error_shows_dialog_with_traceback(qtbot, window, data_dir, monkeypatch):
    import core.train.pipeline

    def broken(self, export=True):
        raise RuntimeError("simulated engine bug")

    monkeypatch.setattr(core.train.pipeline.Pipeline, "run", broken)
    start(qtbot, window, tiny_config(data_dir))
    qtbot.waitUntil(lambda: window.controller.state == RunState.FAILED, timeout=30_000)
    assert "RuntimeError" not in window.error_box.text() and "Details are in the log" in window.error_box.text()
    assert "RuntimeError: simulated engine bug" in window.error_box.detailedText()
    assert "Traceback" in window.monitor.log_text()  # the log keeps it after the dialog is closed


@pytest.mark.parametrize("answer", [False, True])
def test_closing_during_a_run_asks_then_stops_and_closes(qtbot, window, data_dir, answer):
    asked = []
    window.ask_stop_on_close = lambda: asked.append(True) or answer
    start(qtbot, window, tiny_config(data_dir, train_epochs=50))
    qtbot.waitUntil(lambda: sum(points(window).values()) > 0, timeout=60_000)
    window.close()
    assert asked == [True]
    assert window.isVisible()  # never blocks: closes once the worker has stopped
    if not answer:
        qtbot.wait(300)
        assert window.controller.state == RunState.RUNNING and window.isVisible()
        return
    assert window.controller.state == RunState.STOPPING
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    assert window.controller.state == RunState.STOPPED
