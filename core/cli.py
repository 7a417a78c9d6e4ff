"""`lorkd`: the headless twin of every GUI action.

    lorkd demo [--kind segmentation|classification] [--out RUN] [--quick]
    lorkd decompose CONFIG [--out RUN] [--device D] [--set key=value ...] [--no-export] [--trust-bundle]
    lorkd evaluate RUN
    lorkd export RUN [--out DIR]
    lorkd apply EXPERT IMAGE --out OUT   (segmentation experts: VOLUME --out LABELS.nii.gz, or a DICOM series
                                          --out SEG.dcm for a DICOM SEG referencing it)
    lorkd verify BUNDLE                  (folder or .zip: files against SHA256SUMS, metadata, weights; runs nothing)
    lorkd bench [--quick] [--json FILE] [--only steps,unet3d,inference,loader,sliding] [--device cuda --amp]

Bad input prints one line `error: ...` and exits with code 2 (`--debug` shows the traceback).
Ctrl-C stops a run at the next step; running the same command again resumes it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from core.errors import LorkdError
from core.events import Control, EvalEvent, NullObserver, RunInfo, StepEvent, metrics_line


class ProgressObserver(NullObserver):
    """Terminal progress: one tqdm bar per phase, evaluation lines, log lines."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None
        self.phase = None

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def on_start(self, info: RunInfo) -> None:
        self._write(f"run {info.run_dir}: tasks {', '.join(info.tasks)} on {info.device}")

    def on_step(self, event: StepEvent) -> None:
        from tqdm import tqdm

        if self.phase != event.phase:
            self._close()
            self.phase = event.phase
            self.bar = tqdm(total=event.steps_total, initial=event.step, desc=event.phase, unit="step",
                            file=self.stream, dynamic_ncols=True, leave=True)
        self.bar.n = event.step
        self.bar.set_postfix(loss=f"{event.loss:.3f}", lr=f"{event.lr:.2g}", refresh=False)
        self.bar.refresh()
        if event.step >= event.steps_total:
            self._close()

    def on_eval(self, event: EvalEvent) -> None:
        self._write(f"[{event.phase} epoch {event.epoch + 1} {event.model}] {metrics_line(event.metrics)}")

    def on_log(self, message: str) -> None:
        self._write(message)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._close()

    def on_error(self, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _interruptible(control: Control):
    def handler(signum, frame):
        if control.stopping:
            raise KeyboardInterrupt
        print("\nstopping at the next step (Ctrl-C again to abort)...", file=sys.stderr)
        control.stop()

    return signal.signal(signal.SIGINT, handler)


def _run(config, out: str | None, export: bool = True) -> dict:
    from core import distributed
    from core.train.pipeline import Pipeline

    control = Control()
    run_dir = out or str(Path("runs") / config.name)
    previous = _interruptible(control)
    try:
        summary = Pipeline(config, run_dir, ProgressObserver(), control).run(export=export)
    finally:
        signal.signal(signal.SIGINT, previous)
        distributed.shutdown()
    if distributed.from_env().is_main:
        _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    if summary.get("status") != "completed":
        print(f"run {summary.get('status')}: {summary.get('run_dir', '')}")
        return
    print(f"\n{'task':<20}{'metric':<8}{'teacher':>9}{'expert':>9}{'single':>9}  {'expert - teacher (95% CI)':<28}"
          f"{'MACs ratio':>11}")
    for task in summary["tasks"]:
        ci = task.get("expert_minus_teacher_ci") or [None, None]
        diff = "-" if task.get("expert_minus_teacher") is None else (
            f"{task['expert_minus_teacher']:+.3f}" + ("" if None in ci else f" ({ci[0]:+.3f} to {ci[1]:+.3f})"))
        print(f"{task['name']:<20}{task['metric']:<8}{_num(task['teacher']):>9}{_num(task['expert']):>9}"
              f"{_num(task.get('single_task')):>9}  {diff:<28}{task.get('macs_ratio') or 0:>10.1f}x")
    for task in summary["tasks"]:
        if task["metric"] == "agreement":  # a label-free task: what its number means
            print(f"note: {task['name']}: {task['test']}")
        for flag in task.get("flags") or []:
            print(f"warning: {task['name']}: {flag}")
    for task in summary["tasks"]:  # per-label metrics ("dice/grey matter", ...) where the kind reports them
        tm, em = task.get("teacher_metrics") or {}, task.get("expert_metrics") or {}
        per_label = sorted({k.split("/", 1)[1] for k in em if "/" in k}, key=list(task["labels"]).index)
        for label in per_label:
            metrics = dict.fromkeys(k.split("/", 1)[0] for k in em if k.endswith("/" + label))
            units = summary.get("units") or {}
            parts = [f"{m}{f' ({units[m]})' if m in units else ''} teacher {_num(tm.get(f'{m}/{label}'))} expert "
                     f"{_num(em.get(f'{m}/{label}'))}" for m in metrics]
            print(f"  {task['name']}/{label}: " + "; ".join(parts))
    t, b = summary["teacher"], summary["backbone"]
    print(f"foundation model {t['arch']}: {t['params']:,} params, {t['macs']:,} MACs; "
          f"backbone {b['arch']}: {b['params']:,} params, {b['macs']:,} MACs")


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _open_run(run_dir: str):
    """A finished run of any kind, ready to evaluate or export."""
    from core.train.pipeline import open_run

    return open_run(run_dir, ProgressObserver())


def cmd_decompose(args) -> int:
    from core.files import check_writable_folder
    from core.kinds import load_config

    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    if args.trust_bundle:
        overrides.append("teacher.trust_bundle=true")
    config = load_config(args.config, overrides)
    check_writable_folder(args.out or Path("runs") / config.name)  # before reading data or training
    summary = _run(config, args.out, export=not args.no_export)
    return 0 if summary.get("status") == "completed" else 130


def cmd_demo(args) -> int:
    from core.kinds import get_kind, load_config, prepare_demo

    kind = get_kind(args.kind)
    out = Path(args.out or Path("runs") / kind.demo_name)
    raw = prepare_demo(kind.name, out / "data", quick=args.quick)
    summary = _run(load_config(raw, list(args.set or [])), str(out))
    return 0 if summary.get("status") == "completed" else 130


def cmd_evaluate(args) -> int:
    from core.files import write_text_atomic

    run = _open_run(args.run)
    with run.folder.lock():
        summary = run.evaluate()
        write_text_atomic(run.folder.summary, json.dumps(summary, indent=2))
    summary["status"] = "completed"
    _print_summary(summary)
    return 0


def cmd_export(args) -> int:
    run = _open_run(args.run)
    with run.folder.lock():
        paths = run.export(args.out)
    for path in paths:
        print(path)
    return 0


def cmd_apply(args) -> int:
    from core.errors import BundleError
    from core.export.archive import is_bundle_archive, unpacked_bundle
    from core.files import WriteError

    if Path(args.out).is_dir():  # before the bundle is read and the (long) inference runs
        raise WriteError(f"{args.out}: cannot write: it is a folder, not a file (--out names the file to write)")

    if not is_bundle_archive(args.expert):
        return _apply(args.expert, args)
    with unpacked_bundle(args.expert) as bundle:  # a zipped bundle: checked member by member, then unpacked
        try:
            return _apply(str(bundle), args)
        except BundleError as exc:  # name the archive, not the temporary folder
            raise BundleError(str(exc).replace(str(bundle), f"{args.expert}!")) from None


def _apply(expert: str, args) -> int:
    from core.kinds import kind_of_bundle

    kind = kind_of_bundle(expert)
    record = kind.apply(expert, args.image, args.out, strict=args.strict)
    for message in record.get("warnings", []):
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
    for message in record.get("applicability", []):
        print(f"warning: outside what the expert was trained on: {message}", file=sys.stderr)
    print(json.dumps(kind.cli_record(record), indent=2))
    return 0


def cmd_verify(args) -> int:
    """Check an expert bundle (folder or .zip) without running it: what was checked on stdout, then exit 0; or one
    `error:` line per problem on stderr, exit 2."""
    from core.export.archive import is_bundle_archive, unpacked_bundle

    if not is_bundle_archive(args.bundle):
        return _verify(args.bundle, lambda text: text)
    with unpacked_bundle(args.bundle) as bundle:  # checked member by member, then unpacked
        return _verify(str(bundle), lambda text: text.replace(str(bundle), f"{args.bundle}!"))


def _verify(bundle: str, shown) -> int:
    from core.export.bundle import verify_bundle
    from core.kinds import kind_of_bundle

    report = verify_bundle(bundle, lambda root: kind_of_bundle(root).load_bundle(root))
    print(f"expert bundle {shown(bundle)}")
    for line in report.checked:
        print(f"  checked: {shown(line)}")
    for line in report.notes:
        print(f"  note: {shown(line)}")
    for line in report.problems:
        print(f"error: {' '.join(shown(line).split())}", file=sys.stderr)
    if report.problems:
        print(f"  {len(report.problems)} problem(s): do not run this bundle with `python -m monai.bundle run`")
        return 2
    print("  ok: unchanged since export")
    return 0


def cmd_bench(args) -> int:
    from benchmarks.run import main as bench_main

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    return bench_main(quick=args.quick, json_path=args.json, only=only, device=args.device, amp=args.amp)


def build_parser() -> argparse.ArgumentParser:
    from core.kinds import DEFAULT_DEMO, KINDS

    parser = argparse.ArgumentParser(prog="lorkd", description="LoRKD Studio: decompose a foundation model "
                                     "into low-rank task experts.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decompose", help="foundation -> decomposition -> evaluation -> export from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default runs/<name>); an existing one is resumed")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--no-export", action="store_true", help="skip writing expert bundles")
    p.add_argument("--trust-bundle", action="store_true",
                   help="build a foundation-model bundle whose config names code outside torch, monai, numpy and its "
                        "scripts/ (a bundle's config can run any Python code: only for bundles you trust)")
    p.set_defaults(func=cmd_decompose)

    p = sub.add_parser("demo", help="run the embedded demo (no downloads)")
    p.add_argument("--kind", default=DEFAULT_DEMO, choices=tuple(KINDS),
                   help=", ".join(f"{name}: {kind.demo_title}" for name, kind in KINDS.items())
                   + f" (default {DEFAULT_DEMO})")
    p.add_argument("--out", help="run folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="fewer samples and epochs (a smoke test)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="evaluate teacher and experts of a finished run on its test split")
    p.add_argument("run")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write one MONAI bundle per task")
    p.add_argument("run")
    p.add_argument("--out", help="folder for the bundles (default RUN/experts)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("apply", help="apply an exported expert to an image (PNG/JPEG, .npy, NIfTI, DICOM) or a "
                       "segmentation expert to a volume")
    p.add_argument("expert", help="expert bundle folder (or a .zip of one)")
    p.add_argument("image")
    p.add_argument("--out", required=True, help="scores file (.json or .csv); for segmentation a label map "
                   "(.nii.gz, .nrrd, .mha) or, for a DICOM input, a DICOM SEG (.dcm)")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2) an input outside what the expert was "
                   "trained on (modality, voxel size, field of view, channels, intensities; see the bundle's "
                   "model card) instead of warning")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("verify", help="check an expert bundle without running it: every file against its "
                       "SHA256SUMS, nothing added, the metadata, the weights (exit 2 on any problem)")
    p.add_argument("bundle", help="expert bundle folder (or a .zip of one)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="measure speed ratios (knowledge separation vs plain backbone, ...)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="also write the results as JSON")
    p.add_argument("--only", help="comma-separated sections: steps, unet3d, inference, loader, sliding")
    p.add_argument("--device", default="cpu", help="device of the training-step sections (steps, unet3d), e.g. cuda")
    p.add_argument("--amp", action="store_true", help="training steps under bf16 autocast (AMP)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LorkdError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a write (read-only, disk full, no permission...): one line
        from core.files import describe_refusal

        message = None if args.debug else describe_refusal(exc)
        if message is None:  # any other OSError is a bug: its traceback is kept
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
