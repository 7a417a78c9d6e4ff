"""`lorkd-studio` / `python -m app`: the desktop app.

    python -m app                   the main window with the embedded demo loaded; Start runs it
    python -m app --smoke OUT.png   run a quick segmentation demo (MNI152 brain) end to end through the GUI,
                                    apply the first expert to the demo volume, show its label map over the
                                    volume in the Viewer tab, save a screenshot there (and OUT-monitor.png),
                                    exit 0 (non-zero on any error or after --timeout)
    python -m app --smoke OUT.png --smoke-kind classification   the same with the 2D classification demo
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from core.kinds import DEFAULT_DEMO, KINDS

# the smoke run: the kind's quick demo, one epoch of each phase, a step logged every step
SMOKE_DEMO = {"quick": True}
SMOKE_OVERRIDES = ["teacher.epochs=1", "train.epochs=1", "train.log_every=1", "name=smoke"]


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="lorkd-studio", description="LoRKD Studio desktop app")
    parser.add_argument("--smoke", metavar="OUT.png", help="quick demo run through the GUI, screenshot, exit")
    parser.add_argument("--smoke-kind", choices=tuple(KINDS), default=DEFAULT_DEMO,
                        help=f"the demo --smoke runs (default: {DEFAULT_DEMO}, the app's default demo)")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds before --smoke gives up (exit 3)")
    parser.add_argument("--open", metavar="RUN", dest="open_run",
                        help="with --smoke --full: take the screenshots of a finished demo run folder (e.g. from "
                        "`lorkd demo`) instead of training one")
    parser.add_argument("--full", action="store_true",
                        help="with --smoke: the demo at its full setting (the README's screenshots: OUT, OUT-monitor, "
                        "OUT-running, OUT-experts and, for label maps, OUT-outside: the first expert on a CT series "
                        "it was not trained for)")
    return parser.parse_known_args(argv)


def _application(qt_args: list[str]):
    from PySide6.QtWidgets import QApplication

    from app.settings import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    return app


def apply_first_expert(window) -> bool:
    """Apply the run's first expert to what the viewer shows (the demo's input) through the Experts panel
    (asynchronous: the panel emits `applied` when done). False when it could not be started."""
    if window.viewer.volume is None:
        return False
    window.tabs.setCurrentWidget(window.experts)
    if not window.experts.experts:
        return False
    window.experts.select_task(window.experts.experts[0]["name"])
    window.experts.apply_to_image()
    return window.experts.is_busy()


def run_smoke(out: Path, timeout: float, qt_args: list[str], kind: str = DEFAULT_DEMO, full: bool = False,
              run: Path | None = None) -> int:
    from PySide6.QtCore import QSettings, QTimer

    from app.main_window import MainWindow
    from app.setup_panel import demo_note, prepare_demo_with_volume
    from app.workers import Worker, await_workers

    app = _application(qt_args)
    work = Path(tempfile.mkdtemp(prefix="lorkd-smoke-"))
    # a hard limit that holds even when the event loop is stuck
    killer = threading.Timer(timeout + 30, lambda: (print("smoke: hard timeout", file=sys.stderr), os._exit(3)))
    killer.daemon = True
    killer.start()
    outcome = {"code": 1}

    def fail(message: str, code: int = 1) -> None:
        print(f"smoke: FAILED: {message}", file=sys.stderr)
        outcome["code"] = code
        app.exit(code)

    def excepthook(kind_, value, tb) -> None:
        traceback.print_exception(kind_, value, tb)
        fail(f"{kind_.__name__}: {value}")

    sys.excepthook = excepthook
    settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, data_dir=work / "demo", runs_dir=work / "runs", load_demo=False, restore=False)
    window.resize(1280, 820)
    window.show()

    def demo_loaded(result) -> None:
        raw, volume = result
        try:
            window.setup.set_mapping(raw, note=demo_note(raw))
            if volume is not None:
                window.viewer.load_volume(volume)
        except Exception as error:  # noqa: BLE001
            fail(f"loading the demo: {error}")
            return
        QTimer.singleShot(200, ready)

    def ready() -> None:
        if run is not None:  # a finished run: its curves, metrics and experts, as after training it here
            if not window.open_run(run):
                fail(f"could not open {run}")
                return
            QTimer.singleShot(300, after_run)
            return
        print(f"smoke: {kind} demo ready, starting the run in {window.setup.runs_dir}", file=sys.stderr)
        if not window.start_button.isEnabled():
            fail(f"Start is disabled: {window.setup.error}")
            return
        window.start_button.click()
        if full:  # the monitor while it runs (decomposition under way)
            QTimer.singleShot(int(min(timeout / 3, 240) * 1000), lambda: shot("running", window.monitor))

    def shot(name: str, tab) -> None:
        window.tabs.setCurrentWidget(tab)
        app.processEvents()
        window.grab().save(str(out.with_name(f"{out.stem}-{name}{out.suffix}")))
        print(f"smoke: screenshot {name}", file=sys.stderr)

    def finished(summary: dict) -> None:
        if summary.get("status") != "completed":
            fail(f"run ended with status {summary.get('status')}")
            return
        print(f"smoke: run completed in {summary.get('seconds')} s", file=sys.stderr)
        window.tabs.setCurrentWidget(window.monitor)
        QTimer.singleShot(300, after_run)

    def after_run() -> None:
        try:
            window.grab().save(str(out.with_name(out.stem + "-monitor" + out.suffix)))
            # a dialog would wait for a click that never comes: fail instead
            window.experts._show_error = lambda message, title="": fail(f"Experts panel: {message}")
            window.experts._show_info = lambda message, title="": fail(f"Experts panel: {message}")
            window.experts.applied.connect(applied)
            if not apply_first_expert(window):
                fail("could not apply the first expert to the demo's input")
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            fail("applying the first expert failed")

    def applied(record: dict) -> None:
        if "outside" in taken:  # the CT series: the banner is the point, whatever the overlay holds
            print(f"smoke: outside the envelope: {record.get('applicability')}", file=sys.stderr)
            QTimer.singleShot(500, lambda: (shot("outside", window.experts), app.exit(0)))
            return
        if KINDS[kind].result == "label_map":
            print(f"smoke: expert {record.get('task')} on {record.get('image')}: voxels {record.get('voxels')}",
                  file=sys.stderr)
            if window.viewer.overlay_labels is None or not window.viewer.overlay_labels.any():
                fail("the label-map overlay is empty")
                return
            window.tabs.setCurrentWidget(window.viewer)
        else:
            print(f"smoke: expert {record.get('task')} on {record.get('image')}: {record.get('prediction')}",
                  file=sys.stderr)
        if full and "experts" not in taken:
            taken.add("experts")
            QTimer.singleShot(300, lambda: shot("experts", window.experts))
        if full and KINDS[kind].result == "label_map" and "outside" not in taken:
            QTimer.singleShot(800, lambda: (screenshot(finish=False), outside()))
            return
        QTimer.singleShot(500, screenshot)

    taken: set[str] = set()

    def outside() -> None:
        """The first expert on pydicom's small CT series: the Experts tab's banner names the mismatch."""
        from pydicom.data import get_testdata_file

        taken.add("outside")
        series = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
        if not window.viewer.load_path(series) or not apply_first_expert(window):
            fail("could not apply the first expert to the CT series")

    def screenshot(finish: bool = True) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if full and KINDS[kind].result == "label_map":
            window.tabs.setCurrentWidget(window.viewer)
            app.processEvents()
        if not window.grab().save(str(out)):
            fail(f"could not write {out}")
            return
        print(f"smoke: screenshot {out}", file=sys.stderr)
        outcome["code"] = 0
        if finish:
            app.exit(0)

    demo, overrides = ({}, []) if full else (SMOKE_DEMO, SMOKE_OVERRIDES)
    loader = Worker(lambda _progress: prepare_demo_with_volume(work / "demo", kind, demo, overrides),
                    name="lorkd-demo")
    loader.returned.connect(demo_loaded)
    loader.errored.connect(lambda message, details, _user_error: (print(details, file=sys.stderr),
                                                                  fail(f"demo could not be prepared: {message}")))
    window.run_finished.connect(finished)
    window.run_failed.connect(lambda message: fail(f"run failed: {message}"))
    QTimer.singleShot(int(timeout * 1000), lambda: fail(f"timeout after {timeout:.0f} s", 3))
    QTimer.singleShot(0, loader.start)
    app.exec()
    if window.controller.state.active:
        window.controller.cancel()
        window.controller.wait(30_000)
    loader.abort()  # still preparing after a failure or timeout: its result is of no use any more
    window.viewer.shutdown()
    window.experts.shutdown()
    await_workers()
    window.hide()
    killer.cancel()
    shutil.rmtree(work, ignore_errors=True)
    return outcome["code"]


def report_internal_error(window, kind, value, tb) -> None:
    """The app's excepthook: an exception no panel caught. The dialog says it in plain words; the exception's type
    and traceback go to stderr and the Monitor log."""
    from app.errors import plain_message

    details = "".join(traceback.format_exception(kind, value, tb))
    print(details, file=sys.stderr)
    window.monitor.log(f"internal error: {kind.__name__}: {value}")
    window.monitor.log(details.rstrip())
    window.show_error("Something went wrong", plain_message(value), details)


def main(argv: list[str] | None = None) -> int:
    args, qt_args = _parse(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        return run_smoke(Path(args.smoke).expanduser().resolve(), args.timeout, qt_args, args.smoke_kind, args.full,
                         Path(args.open_run).expanduser().resolve() if args.open_run else None)

    from app.main_window import MainWindow

    app = _application(qt_args)
    window = MainWindow()

    sys.excepthook = lambda kind, value, tb: report_internal_error(window, kind, value, tb)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
