"""The monitor fed with synthetic engine events (no training): loss panels per phase, the metrics table (titles,
units, per-structure rows, segmentation validation every epoch, stable task colours), the progress line (a bar
that moves at every step, stages without steps, the data-reading start, whole-run ETA, pause), and the run
controller's step counter and stop wording."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml
from gui_support import tiny_config

from app.loss_plot import PALETTE
from app.monitor import MonitorPanel
from app.run_controller import EventSink, RunController, StepCount, StepCounter, Timed
from core.events import EvalEvent, PhaseEvent, RunInfo, StepEvent

PLAN = {"kind": "classification", "steps": {"foundation": 20, "decompose": 40}, "epochs": {"foundation": 1,
                                                                                           "decompose": 2},
        "validation": True}


@pytest.fixture
def monitor(qtbot):
    panel = MonitorPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    panel.reset(["alpha", "beta"], title="Run folder: x")
    return panel


def info(extra=None, tasks=("alpha", "beta")) -> RunInfo:
    return RunInfo("runs/x", ["foundation", "decompose", "evaluate", "export"], list(tasks), "cpu",
                   dict(PLAN if extra is None else extra))


def step(phase, n, total, loss, t, ticks=None, epoch=0, sps=100.0, paused_s=0.0) -> Timed:
    event = StepEvent(phase, epoch, n, total, {"alpha": loss, "beta": 2 * loss}, 1.5 * loss, 1e-3, sps)
    return Timed(t, event, n if ticks is None else ticks, paused_s)


def test_each_phase_has_its_own_panel_axis_and_smoothing(monitor, qtbot):
    monitor.run_started(info())
    monitor.add_steps([step("foundation", s, 20, 5.0 - 0.1 * s, s) for s in range(1, 21)])
    monitor.add_steps([step("decompose", s, 40, 0.5 - 0.01 * s, 20 + s) for s in range(1, 21)])
    plot = monitor.plot
    assert list(plot.panels) == ["foundation", "decompose"]
    foundation, decompose = plot.panels["foundation"], plot.panels["decompose"]
    assert decompose.plot.titleLabel.text == "decomposition"  # the boundary, named
    smooth = decompose.series["alpha"].smoothed
    raw = np.asarray(decompose.series["alpha"].y)
    # the smoothing restarts at the boundary: no carry-over from the foundation losses (about 3 there)
    assert smooth[0] == pytest.approx(raw[0])
    assert np.all(np.diff(smooth) <= 1e-12)  # falls with the raw loss from the first step on
    # each phase on its own loss axis: decomposition's (<= 1) is not crushed by the foundation's (up to 5)
    def top(panel) -> float:
        return panel.plot.vb.viewRange()[1][1]

    qtbot.waitUntil(lambda: top(foundation) > 9.5 and 0.95 < top(decompose) < 1.5)  # beta: up to 9.8 / 0.98
    assert decompose.series["alpha"].x[0] == 1  # the phase's own steps
    assert plot.point_count("alpha") == 40


def test_the_runs_panels_are_laid_out_at_its_start_and_a_boundary_moves_none(monitor, qtbot):
    """Every training phase's panel is built and placed while the run starts (empty, grey title, the planned steps
    on its x axis); a phase that begins draws into its panel without changing the layout, so the other panels are
    not re-rendered (the longest GUI stall of a run was that relayout)."""
    plan = {**PLAN, "steps": {"foundation": 20, "decompose": 40, "single_task/alpha": 10, "single_task/beta": 12}}
    monitor.run_started(info(plan))
    plot = monitor.plot
    qtbot.waitUntil(lambda: plot._columns == ["foundation", "decompose", "single_task"])
    assert not plot.panels  # nothing has begun
    waiting = plot._ready["decompose"]
    assert waiting.plot.titleLabel.text == "decomposition" and "#999999" in waiting.plot.titleLabel.item.toHtml()
    assert waiting.plot.vb.viewRange()[0][1] == pytest.approx(40, rel=0.05)  # its planned steps
    assert plot._ready["single_task"].plot.vb.viewRange()[0][1] == pytest.approx(12, rel=0.05)  # the longest
    assert not waiting.legend.items  # no task listed before its curve exists
    qtbot.wait(50)
    geometry = {phase: panel.plot.geometry() for phase, panel in plot._ready.items()}

    monitor.add_steps([step("foundation", s, 20, 1.0 - 0.01 * s, s) for s in range(1, 6)])
    monitor.add_steps([step("decompose", s, 40, 0.5, 20 + s) for s in range(1, 3)])
    assert list(plot.panels) == ["foundation", "decompose"]
    assert plot.panels["decompose"] is waiting and "#333333" in waiting.plot.titleLabel.item.toHtml()
    assert [label.text for _, label in waiting.legend.items] == ["alpha", "beta"]
    assert plot.point_count("alpha") == 7
    qtbot.wait(50)
    assert {phase: panel.plot.geometry() for phase, panel in
            {**plot.panels, **plot._ready}.items()} == geometry  # nothing moved


def test_start_clears_the_previous_run_and_says_the_data_are_read(monitor):
    monitor.run_started(info())
    monitor.add_steps([step("foundation", s, 20, 1.0, s) for s in (5, 10)])
    assert monitor.plot.panels
    monitor.reset(["alpha", "beta"], title="Run folder: y")
    assert not monitor.plot.panels  # no curves or axes of the previous run
    assert monitor.phase_label.text() == "Reading and preprocessing the data…"
    assert monitor.plot.placeholder.toPlainText() == "Reading and preprocessing the data…"
    assert monitor.progress.maximum() == 0  # busy: nothing to count yet
    monitor.run_started(info())
    assert monitor.phase_label.text() == "Starting the foundation pre-training…"
    # a resumed run: its earlier curves are drawn before the engine starts
    monitor.reset(["alpha", "beta"], title="Run folder: y")
    monitor.show_records([{"phase": "foundation", "kind": "train", "epoch": 0, "step": 4, "task": "alpha",
                           "loss": 1.0}])
    monitor.run_started(info())
    assert monitor.plot.point_count("alpha") == 1


def test_bar_moves_at_every_step_between_logged_steps(monitor):
    monitor.run_started(info())
    monitor.add_steps([step("foundation", 5, 20, 1.0, 10.0)])
    assert monitor.progress.value() == 5 and monitor.progress.maximum() == 20
    monitor.add_steps([StepCount(12.0, 8, False)])  # steps 6, 7, 8 begun: 7 done
    assert monitor.progress.value() == 7
    monitor.add_steps([StepCount(13.0, 20, False)])  # the epoch's last step begun: its end is logged next
    assert monitor.progress.value() == 19
    monitor.add_steps([step("foundation", 20, 20, 1.0, 20.0)])
    assert "validating epoch 1" in monitor.phase_label.text()
    monitor.add_eval(EvalEvent("foundation", 0, {"alpha": {"acc": 0.5}}, "teacher"))
    monitor.add_steps([StepCount(22.0, 23, False)])  # the next phase's steps 1, 2, 3 begun
    assert monitor.phase_label.text().startswith("Decomposition (2/4), epoch 1/2")
    assert (monitor.progress.value(), monitor.progress.maximum()) == (2, 40)


def test_stages_without_steps_show_what_is_done_with_a_busy_bar(monitor):
    monitor.run_started(info())
    monitor.add_steps([step("decompose", 40, 40, 1.0, 10.0, epoch=1)])
    assert monitor.progress.value() == 40
    monitor.add_steps([PhaseEvent("evaluate", "Testing the experts on the test cases"), StepCount(11.0, 90, False)])
    assert monitor.phase_label.text() == "Testing the experts on the test cases…"
    assert monitor.progress.maximum() == 0  # busy, not "40/40 (100%) ETA 0:00"
    monitor.add_steps([PhaseEvent("export", "Exporting the expert bundles")])
    assert monitor.phase_label.text() == "Exporting the expert bundles…"
    assert "Testing the experts on the test cases…" in monitor.log_text()
    monitor.run_ended({"status": "completed"})
    assert monitor.phase_label.text() == "Finished" and monitor.progress.maximum() == 1


def test_eta_covers_the_whole_run_and_survives_a_pause(monitor):
    monitor.run_started(info())
    monitor.add_steps([step("foundation", 5, 20, 1.0, 10.0), step("foundation", 10, 20, 1.0, 20.0, sps=64.0)])
    # 2 s a step: 10 foundation steps left (20 s) and 40 decomposition steps planned (80 s more)
    assert "ETA 0:20, run ≈ 1:40" in monitor.progress.format()
    assert monitor.speed_label.text() == "64"
    monitor.add_steps([StepCount(20.5, 11, True)])
    assert monitor.phase_label.text().startswith("Paused — foundation pre-training")
    # resumed: the clock left the pause out; the window the engine waited in reports a low samples/s
    monitor.add_steps([StepCount(21.0, 11, False),
                       step("foundation", 12, 20, 1.0, 24.0, sps=3.0, paused_s=40.0)])
    assert not monitor.phase_label.text().startswith("Paused")
    assert monitor.speed_label.text() == "64"  # kept, not the pause-diluted 3
    assert "ETA 0:16, run ≈ 1:36" in monitor.progress.format()
    monitor.add_steps([step("foundation", 14, 20, 1.0, 28.0, sps=70.0, paused_s=40.0)])
    assert monitor.speed_label.text() == "70"


def test_metrics_table_says_what_each_column_holds(monitor):
    monitor.run_started(info())
    monitor.add_eval(EvalEvent("foundation", 1, {"alpha": {"acc": 0.7}}, "teacher"))
    monitor.add_eval(EvalEvent("decompose", 0, {"alpha": {"acc": 0.6}}, "student"))
    table = monitor.metrics
    headers = [table.horizontalHeaderItem(c).text() for c in (2, 3)]
    assert headers == ["Foundation\nvalidation ep. 2", "Experts\nvalidation ep. 1"]
    assert monitor.metrics_title.text() == "Validation metrics"  # no single epoch claimed for both columns
    monitor.add_eval(EvalEvent("single_task/alpha", 0, {"alpha": {"acc": 0.1}}, "student"))
    assert table.value("alpha", "student", "acc") == pytest.approx(0.6)  # a baseline is not the experts
    monitor.add_eval(EvalEvent("test", 1, {"alpha": {"acc": 0.65}}, "student"))
    assert monitor.metrics_title.text() == "Metrics"
    monitor.add_eval(EvalEvent("test", 1, {"alpha": {"acc": 0.72}}, "teacher"))
    assert monitor.metrics_title.text() == "Test metrics"
    assert table.horizontalHeaderItem(2).text() == "Foundation\ntest"


def seg_metrics(epoch: int) -> dict:
    d = 0.5 + 0.1 * epoch
    return {"grey": {"dice": d, "dice/grey matter": d},
            "brain": {"dice": d, "dice/grey matter": d - 0.05, "dice/white matter": d + 0.05}}


def test_segmentation_validation_dice_every_epoch(monitor):
    monitor.run_started(info({**PLAN, "kind": "segmentation"}, tasks=("grey", "brain")))
    table = monitor.metrics
    for epoch in range(3):
        monitor.add_eval(EvalEvent("decompose", epoch, seg_metrics(epoch), "student"))
        assert table.value("grey", "student", "dice") == pytest.approx(0.5 + 0.1 * epoch)
        assert table.horizontalHeaderItem(3).text() == f"Experts\nvalidation ep. {epoch + 1}"
    labels = [(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())]
    # one structure: its Dice is the task's Dice, shown once; two: each under the task's mean
    assert labels == [("grey", "Dice"), ("brain", "Dice"), ("", "    grey matter"), ("", "    white matter")]
    line = monitor.log_text().splitlines()[-1]  # the log says it once too
    assert "grey dice=0.700 |" in line and "dice/grey matter=0.650 dice/white matter=0.750" in line
    assert line.count("dice/grey matter") == 1
    monitor.add_eval(EvalEvent("test", 2, {"grey": {"dice": 0.8, "hd95": 2.5, "dice/grey matter": 0.8,
                                                    "hd95/grey matter": 2.5}}, "student"))
    labels = [table.item(r, 1).text() for r in range(table.rowCount())]
    assert "HD95 (mm)" in labels and not any("/" in label for label in labels)
    row = labels.index("HD95 (mm)")
    assert table.item(row, 3).text() == "2.50"
    assert table.item(row, 1).toolTip() == "HD95 (mm)"


def test_reopened_run_keeps_task_colours_and_titles_its_test_metrics(monitor, tmp_path):
    run = tmp_path / "seg_run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "segmentation", "tasks": [{"name": "grey"},
                                                                                       {"name": "white"}]}))
    records = [{"phase": "decompose", "kind": "train", "epoch": 0, "step": s, "task": t, "loss": 1.0 / s}
               for s in (1, 2) for t in ("white", "grey")]  # white logged first
    records += [{"phase": "decompose", "kind": "eval", "model": "student", "epoch": 0, "step": 2, "task": t,
                 "dice": 0.5} for t in ("white", "grey")]
    records += [{"phase": "test", "kind": "eval", "model": "student", "epoch": 0, "step": 0, "task": t,
                 "dice": 0.6, "hd95": 3.0} for t in ("white", "grey")]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert monitor.load_run(run) == len(records)
    series = monitor.plot.panels["decompose"].series
    assert series["grey"].smooth.opts["pen"].color().name().lower() == PALETTE[0].lower()
    assert series["white"].smooth.opts["pen"].color().name().lower() == PALETTE[1].lower()
    assert monitor.metrics_title.text() == "Test metrics"
    assert [monitor.metrics.item(r, 0).text() for r in range(monitor.metrics.rowCount())][0] == "grey"
    assert "HD95 (mm)" in [monitor.metrics.item(r, 1).text() for r in range(monitor.metrics.rowCount())]


def test_step_counter_counts_checks_and_leaves_paused_time_out():
    counter = StepCounter()
    counter.checkpoint()
    counter.checkpoint()
    assert counter.clock()[1] == 2
    counter.pause()
    worker = threading.Thread(target=counter.checkpoint)
    worker.start()
    time.sleep(0.3)
    _, _, waited_while_paused = counter.clock()
    counter.resume()
    worker.join(5)
    _, ticks, waited = counter.clock()
    assert ticks == 3 and waited_while_paused >= 0.25 and waited >= waited_while_paused
    sink = EventSink(counter)
    sink.on_step(StepEvent("decompose", 0, 1, 4, {}, 1.0, 1e-3, 10.0))
    timed = sink.take()[0][1]
    assert timed.ticks == 3 and timed.paused_s == pytest.approx(waited, abs=0.05)


def test_controller_delivers_the_step_count_and_the_gui_words_for_a_stop(qtbot, tmp_path):
    controller = RunController()
    controller.run_dir = tmp_path / "run"
    controller.control = counter = StepCounter()
    controller._sink = sink = EventSink(counter)
    batches, logs = [], []
    controller.steps.connect(batches.append)
    controller.logged.connect(logs.append)
    counter.checkpoint()
    controller.flush()
    assert [type(b).__name__ for b in batches[-1]] == ["StepCount"] and batches[-1][0].ticks == 1
    controller.flush()
    assert len(batches) == 1  # unchanged: nothing sent
    sink.on_phase(PhaseEvent("export", "Exporting the expert bundles"))
    sink.on_log("run stopped; run the same command again to resume from the last epoch")
    controller.flush()
    assert isinstance(batches[-1][0], PhaseEvent)
    assert logs[-1] == "run stopped before any epoch finished: nothing to resume; Start begins the run again"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"x")
    sink.on_log("run stopped; run the same command again to resume from the last epoch")
    controller.flush()
    assert "press Start with the same configuration to resume" in logs[-1] and "command" not in logs[-1]


def test_run_info_plans_the_steps_of_every_training_phase(tmp_path):
    from core.kinds import load_config
    from core.train.pipeline import Pipeline

    (tmp_path / "data").mkdir()
    pipeline = Pipeline(load_config(tiny_config(tmp_path / "data")), tmp_path / "run")
    extra = pipeline.run_info(["foundation", "decompose", "single_task", "evaluate"]).extra
    # 2 tasks x 32 samples, batch 16: 4 steps an epoch; teacher 1 epoch, decomposition and baselines 2
    assert extra["steps"] == {"foundation": 4, "decompose": 8, "single_task/alpha": 4, "single_task/beta": 4}
    assert extra["epochs"]["decompose"] == 2 and extra["validation"] is True
