"""`metrics.jsonl`: append-only, one JSON object per logged step and task, and per evaluation and task."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.events import EvalEvent, StepEvent
from core.files import writing


class NullLog:
    """What the ranks other than 0 of a distributed run log to: nothing."""

    def step(self, event: StepEvent) -> None:
        pass

    def eval(self, event: EvalEvent, step: int) -> None:
        pass


class MetricsLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)

    def write(self, records: list[dict[str, Any]]) -> None:
        with writing(self.path), self.path.open("a") as fh:
            for record in records:
                fh.write(json.dumps(record, allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def step(self, event: StepEvent) -> None:
        base = {"phase": event.phase, "kind": "train", "epoch": event.epoch, "step": event.step}
        records = [{**base, "task": task, "loss": loss} for task, loss in event.task_losses.items()]
        overall = {"task": "all", "loss": event.loss, "lr": event.lr, "samples_per_s": event.samples_per_s}
        records.append({**base, **overall})
        self.write(records)

    def eval(self, event: EvalEvent, step: int) -> None:
        base = {"phase": event.phase, "kind": "eval", "model": event.model, "epoch": event.epoch, "step": step}
        self.write([{**base, "task": task, **values} for task, values in event.metrics.items()])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (crash mid-write) and any damaged line (not UTF-8 JSON of an
    object) are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for raw in path.read_bytes().splitlines():
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):  # json.JSONDecodeError is a ValueError
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _drop_torn_tail(path: Path) -> None:
    """Cut an incomplete last line so appended records start on a line of their own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(cut)
