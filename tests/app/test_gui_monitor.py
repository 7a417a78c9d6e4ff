"""Monitor pieces without a live run: a past run folder, the loss plot, the state machine, About, settings."""

from __future__ import annotations

import numpy as np
import pytest
from gui_support import tiny_config
from PySide6.QtCore import QSettings

from app.about import about_html
from app.loss_plot import ema
from app.run_controller import ACTIONS, RunController, RunState, choose_run_dir
from core.events import Control
from core.kinds import load_config
from core.train.pipeline import Pipeline


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("past")
    (root / "data").mkdir()
    config = load_config(tiny_config(root / "data"))
    Pipeline(config, root / "run").run(export=False)
    return root / "run"


def test_open_run_shows_its_curves_and_metrics(window, finished_run, qtbot):
    assert window.open_run(finished_run)
    plot = window.monitor.plot
    assert plot.point_count("alpha") >= 8 and plot.point_count("beta") >= 8
    # one panel (and loss axis) per phase; the single-task baselines share one
    assert list(plot.panels) == ["foundation", "decompose", "single_task"]
    table = window.monitor.metrics
    for task in ("alpha", "beta"):
        assert table.value(task, "teacher", "acc") is not None
        assert table.value(task, "student", "acc") is not None
    # a finished run shows its test metrics, and says so
    assert window.monitor.metrics_title.text() == "Test metrics"
    assert table.where == {"teacher": "test", "student": "test"}
    assert window.tabs.currentWidget() is window.monitor
    assert str(finished_run.resolve()) in window.settings.recent("runs")

    # hover readout at a data point of beta
    series = plot.panels["decompose"].series["beta"]
    qtbot.waitUntil(lambda: plot.panels["decompose"].plot.vb.viewPixelSize()[0] > 0)
    text = plot.readout_at(series.x[3], series.y[3], "decompose")
    assert text.startswith("beta · decomposition, step") and f"{series.y[3]:.4g}" in text
    plot.set_log(True)
    assert plot.readout_at(series.x[3], float(np.log10(series.y[3])), "decompose").startswith("beta")
    plot.set_log(False)


def test_open_run_refuses_a_folder_that_is_not_a_run(window, tmp_path):
    assert not window.open_run(tmp_path)
    assert "not a run folder" in window.error_box.text().lower() or "no metrics.jsonl" in window.error_box.text()


def test_ema_matches_the_definition():
    values = np.array([1.0, 3.0, 2.0, 5.0])
    w = 0.6
    last, debias, expected = 0.0, 0.0, []
    for v in values:
        last = w * last + (1 - w) * v
        debias = w * debias + (1 - w)
        expected.append(last / debias)
    assert np.allclose(ema(values, w), expected)
    assert np.allclose(ema(values, 0.0), values)
    assert ema(values, w)[0] == pytest.approx(1.0)


def test_log_scale_toggle(window):
    plot = window.monitor.plot
    plot.add_points({"t": ([1, 2, 3], [1.0, 0.1, 0.01])}, "foundation")
    plot.log_box.setChecked(True)
    plot.add_points({"t": ([1, 2, 3], [1.0, 0.1, 0.01])}, "decompose")  # a panel made later follows the box
    assert all(p.plot.ctrl.logYCheck.isChecked() for p in plot.panels.values())
    plot.log_box.setChecked(False)
    assert not any(p.plot.ctrl.logYCheck.isChecked() for p in plot.panels.values())


@pytest.mark.parametrize("state", list(RunState))
def test_state_machine_enables_only_sensible_actions(qtbot, state):
    controller = RunController()
    controller._state = state
    controller.control = Control()
    for action, states in ACTIONS.items():
        assert controller.allowed(action) == (state in states), (state, action)
    controller.control.stop()  # after Cancel only the wait is left
    assert controller.allowed("cancel") == (state in (RunState.RUNNING, RunState.PAUSED))


def test_choose_run_dir_resumes_only_the_same_unfinished_config(tmp_path, data_dir):
    config = load_config(tiny_config(data_dir))
    first, resume = choose_run_dir(tmp_path, config)
    assert first == tmp_path / "tiny" and not resume
    first.mkdir()
    (first / "config.yaml").write_text(__import__("yaml").safe_dump(config.to_dict()))
    assert choose_run_dir(tmp_path, config) == (first, False)  # same config, no checkpoint yet
    (first / "summary.json").write_text("{}")
    assert choose_run_dir(tmp_path, config)[0] == tmp_path / "tiny-2"  # finished: a new folder
    other = load_config(tiny_config(data_dir, train_epochs=3))
    assert choose_run_dir(tmp_path, other)[0] == tmp_path / "tiny-2"


def test_about_names_the_data_licences_and_research_use():
    text = about_html()
    assert "McConnell Brain Imaging Centre" in text
    assert "Research use only" in text


def test_window_geometry_and_runs_folder_are_remembered(qtbot, tmp_path):
    from app.main_window import MainWindow

    path = str(tmp_path / "s.ini")
    first = MainWindow(QSettings(path, QSettings.Format.IniFormat), runs_dir=tmp_path / "r", load_demo=False)
    qtbot.addWidget(first)
    first.resize(810, 560)
    first.show()
    size = first.size()  # what the (offscreen) screen allows
    first.settings.runs_dir = tmp_path / "chosen"
    first.close()
    assert QSettings(path, QSettings.Format.IniFormat).value("window/geometry") is not None
    second = MainWindow(QSettings(path, QSettings.Format.IniFormat), load_demo=False)
    qtbot.addWidget(second)
    # restoreGeometry may trim a few pixels to fit the (800x600 offscreen) screen
    assert abs(second.width() - size.width()) <= 16 and abs(second.height() - size.height()) <= 16
    assert second.setup.runs_dir == tmp_path / "chosen"


def test_demo_loads_in_the_background(qtbot, tmp_path):
    from app.main_window import MainWindow

    win = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), data_dir=tmp_path / "demo",
                     runs_dir=tmp_path / "runs", demo_kwargs={"n_per_task": 20}, demo_kind="classification",
                     restore=False)
    qtbot.addWidget(win)
    assert not win.start_button.isEnabled()  # still preparing
    with qtbot.waitSignal(win.demo_ready, timeout=60_000):
        pass
    assert [t["name"] for t in win.setup.mapping()["tasks"]] == ["plane", "level", "tissue", "modality"]
    assert win.setup.is_valid and win.start_button.isEnabled()
