"""What the monitor's progress line says about a run (Qt-free): the phase being worked on, the bar, the ETA.

Fed with the engine's events as the run controller delivers them:
- `started(info)`: the phases and, in `RunInfo.extra`, the planned steps and epochs of each training phase;
- `step(event, time, ticks)`: a logged step (`time`: the run's active clock, pauses excluded; `ticks`: how many
  steps the engine had begun then, counted at its pause/stop check, which it makes once per step);
- `count(time, ticks, paused)`: between logged steps (every few tenths of a second), so the bar moves every step;
- `evaluated(event)`, `stage(event)`: an epoch's validation ended; a stage without steps (testing, export) began.

`display()` gives the label, the bar (maximum 0: busy) and its text. The bar covers the current phase; the ETA is
given for the phase and for the whole run (every planned training step left, at the speed measured so far).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.events import EvalEvent, PhaseEvent, RunInfo, StepEvent

PHASE_TITLES = {"foundation": "foundation pre-training", "decompose": "decomposition", "single_task": "single-task "
                "baselines", "evaluate": "testing", "export": "export"}


def phase_title(phase: str) -> str:
    """A phase name for people: "decomposition", "single-task baseline (alpha)"."""
    if phase.startswith("single_task/"):
        return f"single-task baseline ({phase.split('/', 1)[1]})"
    return PHASE_TITLES.get(phase, phase)


def phase_group(phase: str) -> str:
    """The entry of `RunInfo.phases` a step event's phase belongs to ("single_task/alpha" -> "single_task")."""
    return phase.split("/", 1)[0]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Display:
    label: str  # what is being worked on
    value: int
    maximum: int  # 0: busy (no steps to count)
    text: str  # on the bar


@dataclass
class _Ref:
    """The last logged step: what the step counter counts on from."""

    phase: str
    step: int
    steps_total: int
    epoch: int
    ticks: int
    validating: bool  # an epoch ended here and its validation has not reported yet


class RunProgress:
    def __init__(self) -> None:
        self.reset()

    def reset(self, note: str = "") -> None:
        self.phases: list[str] = []
        self.planned: dict[str, int] = {}  # training phase -> planned steps
        self.epochs: dict[str, int] = {}
        self.validation = False
        self.note = note  # what happens before the first step ("Reading and preprocessing the data…")
        self.ref: _Ref | None = None
        self.ticks = 0
        self.now = 0.0
        self.paused = False
        self.stage_text: str | None = None  # a stage without steps in progress
        self.anchor: dict[str, tuple[float, int]] = {}  # phase -> (time, step) of its first logged step

    # ------------------------------------------------------------------------------------------- events
    def started(self, info: RunInfo) -> None:
        self.phases = list(info.phases)
        extra: dict[str, Any] = info.extra or {}
        self.planned = {k: int(v) for k, v in (extra.get("steps") or {}).items()}
        self.epochs = {k: max(1, int(v)) for k, v in (extra.get("epochs") or {}).items()}
        self.validation = bool(extra.get("validation"))
        first = next(iter(self.planned), None) or next(iter(self.phases), None)
        self.note = f"Starting the {phase_title(first)}…" if first else "Starting…"

    def step(self, event: StepEvent, time: float, ticks: int) -> None:
        self.stage_text = None
        self.anchor.setdefault(event.phase, (time, event.step))
        epoch_end = event.step % self._per_epoch(event.phase, event.steps_total) == 0
        self.ref = _Ref(event.phase, event.step, event.steps_total, event.epoch, ticks,
                        epoch_end and self.validation)
        self.planned[event.phase] = event.steps_total
        self.now, self.ticks = max(self.now, time), max(self.ticks, ticks)

    def count(self, time: float, ticks: int, paused: bool) -> None:
        self.now, self.ticks, self.paused = max(self.now, time), ticks, paused

    def evaluated(self, event: EvalEvent) -> None:
        if self.ref is not None and event.phase == self.ref.phase and self.ref.validating:
            self.ref.validating = False
            self.ref.ticks = self.ticks  # validation makes no step checks: what comes next are steps

    def stage(self, event: PhaseEvent) -> None:
        self.stage_text = event.text

    # ------------------------------------------------------------------------------------------ display
    def _per_epoch(self, phase: str, total: int) -> int:
        return max(1, total // self.epochs.get(phase, 1)) if phase in self.epochs else max(1, total)

    def position(self) -> tuple[str, int, int, int] | None:
        """(phase, steps done, planned steps, epoch) now, counting the steps begun since the last logged one."""
        ref = self.ref
        if ref is None:
            return None
        delta = max(0, self.ticks - ref.ticks - 1)  # the step begun last is not done yet
        if self.stage_text is not None or ref.validating:
            delta = 0
        if ref.step < ref.steps_total:
            per_epoch = self._per_epoch(ref.phase, ref.steps_total)
            epoch_end = (ref.step // per_epoch + 1) * per_epoch
            step = min(ref.step + delta, epoch_end - 1, ref.steps_total)
            return ref.phase, step, ref.steps_total, ref.epoch if step == ref.step else step // per_epoch
        following = self._next_phase(ref.phase)
        if following is None or delta == 0:
            return ref.phase, ref.steps_total, ref.steps_total, ref.epoch
        total = self.planned[following]
        per_epoch = self._per_epoch(following, total)
        step = min(delta, per_epoch - 1)
        return following, step, total, 0

    def _next_phase(self, phase: str) -> str | None:
        names = list(self.planned)
        if phase not in names or names.index(phase) + 1 >= len(names):
            return None
        return names[names.index(phase) + 1]

    def rate(self, phase: str, step: int) -> float | None:
        """Seconds per step of `phase` measured so far (active time: pauses excluded), None before two points."""
        if phase not in self.anchor:
            return None
        t0, s0 = self.anchor[phase]
        if step <= s0 or self.now <= t0:
            return None
        return (self.now - t0) / (step - s0)

    def eta(self) -> tuple[float, float] | None:
        """(seconds left in the current phase, seconds left in all planned training) or None (no speed yet)."""
        where = self.position()
        if where is None:
            return None
        phase, step, total, _ = where
        sec = self.rate(phase, step)
        if sec is None:
            return None
        left = max(0, total - step) * sec
        names = list(self.planned)
        later = names[names.index(phase) + 1:] if phase in names else []
        # the phases after this one (the earlier ones are done): at this phase's speed, the closest measure there is
        return left, left + sum(self.planned[p] for p in later) * sec

    def display(self) -> Display:
        if self.stage_text is not None:
            return self._paused(Display(f"{self.stage_text}…", 0, 0, ""))
        where = self.position()
        if where is None:
            return self._paused(Display(self.note or "Starting…", 0, 0, ""))
        phase, step, total, epoch = where
        group = phase_group(phase)
        index = self.phases.index(group) + 1 if group in self.phases else 0
        of = f" ({index}/{len(self.phases)})" if index else ""
        epochs = self.epochs.get(phase)
        label = f"{phase_title(phase).capitalize()}{of}, epoch {epoch + 1}" + (f"/{epochs}" if epochs else "")
        ref = self.ref
        if ref is not None and ref.validating and phase == ref.phase:
            label = f"{phase_title(phase).capitalize()}{of}: validating epoch {ref.epoch + 1}…"
        text = f"step {step}/{total} (%p%)"
        eta = self.eta()
        if eta is not None:
            text += f" · ETA {format_duration(eta[0])}"
            if eta[1] > eta[0] + 0.5:
                text += f", run ≈ {format_duration(eta[1])}"
        return self._paused(Display(label, min(step, total), max(1, total), text))

    def _paused(self, display: Display) -> Display:
        if self.paused:
            display.label = f"Paused — {display.label[0].lower()}{display.label[1:]}"
        return display
