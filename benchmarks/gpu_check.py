"""`make gpu-check`: everything that needs a CUDA GPU, in one command that fits in eight minutes on one GPU.

CI never has a GPU, so the CUDA paths are written and tested on the CPU; this is what to run the day a GPU is lent
(and then to put its table in the README). Steps, each a subprocess with its own time limit (a step that runs over
is recorded as timed out and the check goes on):

1. the CUDA-marked tests (`pytest -m cuda`: the expert layers, the sliding window and a whole small run on the GPU
   against the CPU; skipped without CUDA);
2. both demos on `--device cuda` with AMP (`train.amp: true`, bf16/fp16 autocast on CUDA), full size;
3. a two-process NCCL run (torchrun) of the classification demo when two GPUs exist, else a note;
4. `lorkd bench --device cuda --amp` (the paper's setting: MONAI ResNet-18, 28 px, B=128, T=10, rank 4).

Writes `OUT/gpu_check.json` (every step: command, exit code, seconds, what it measured) and `OUT/gpu_check.md` (one
Markdown table, the GPU's name in every row); OUT defaults to runs/gpu-check. Without a CUDA device it prints one
line saying so and exits 0.

    python -m benchmarks.gpu_check [--out runs/gpu-check] [--budget 480]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout: float
    summary: str | None = None  # a run folder whose summary.json the step writes
    json_out: str | None = None  # a JSON file the step writes


@dataclass
class Result:
    name: str
    command: str
    status: str  # passed | failed | timed out | skipped
    seconds: float
    returncode: int | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    tail: str = ""


def steps(out: Path, gpus: int) -> list[Step]:
    py, cli = sys.executable, [sys.executable, "-m", "core.cli"]
    cls, seg = out / "demo-classification", out / "demo-segmentation"
    plan = [
        Step("CUDA tests", [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests"], 120),
        Step("classification demo (cuda, AMP)", [*cli, "demo", "--kind", "classification", "--out", str(cls),
                                                "--set", "device=cuda", "--set", "train.amp=true"], 110,
             summary=str(cls)),
        Step("segmentation demo (cuda, AMP)", [*cli, "demo", "--kind", "segmentation", "--out", str(seg),
                                              "--set", "device=cuda", "--set", "train.amp=true"], 110,
             summary=str(seg)),
    ]
    if gpus >= 2:
        ddp = out / "demo-classification-ddp"
        plan.append(Step("2-process NCCL (torchrun)", [py, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc_per_node", "2", "-m", "core.cli", "demo", "--kind",
                                                       "classification", "--quick", "--out", str(ddp),
                                                       "--set", "device=cuda"], 50, summary=str(ddp)))
    bench = str(out / "bench.json")
    plan.append(Step("lorkd bench --device cuda --amp",
                     [*cli, "bench", "--device", "cuda", "--amp", "--json", bench], 80, json_out=bench))
    return plan


def measured(step: Step) -> dict[str, Any]:
    """What a finished step measured: each task's expert and foundation-model headline from summary.json, or the
    bench's JSON."""
    if step.summary and (Path(step.summary) / "summary.json").is_file():
        summary = json.loads((Path(step.summary) / "summary.json").read_text())
        return {"seconds_in_run": summary.get("seconds"), "device": summary.get("device"),
                "tasks": {t["name"]: {"metric": t["metric"], "expert": t["expert"], "teacher": t["teacher"]}
                          for t in summary.get("tasks", [])}}
    if step.json_out and Path(step.json_out).is_file():
        return json.loads(Path(step.json_out).read_text())
    return {}


def run_step(step: Step, remaining: float, env: dict[str, str] | None = None) -> Result:
    command = " ".join(step.argv)
    limit = min(step.timeout, remaining)
    if remaining < 5:
        return Result(step.name, command, "skipped", 0.0, tail="no time left in the budget")
    start = time.perf_counter()
    try:
        proc = subprocess.run(step.argv, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired as error:
        out = (error.stdout or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return Result(step.name, command, "timed out", round(time.perf_counter() - start, 1), None,
                      tail=text[-2000:])
    status = "passed" if proc.returncode == 0 else "failed"
    return Result(step.name, command, status, round(time.perf_counter() - start, 1), proc.returncode,
                  measured(step) if status == "passed" else {}, (proc.stdout + proc.stderr)[-2000:])


def markdown(results: list[Result], gpu: str) -> str:
    lines = ["| GPU | step | status | seconds | measured |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {gpu} | {r.name} | {r.status} | {r.seconds:g} | {_brief(r.measured)} |")
    return "\n".join(lines) + "\n"


def _brief(measured: dict[str, Any]) -> str:
    tasks = measured.get("tasks")
    if tasks:
        return "; ".join(f"{name} {t['metric']} {_num(t['expert'])} (foundation {_num(t['teacher'])})"
                         for name, t in tasks.items())
    if measured:
        return ", ".join(f"{k} {v}" for k, v in list(measured.items())[:6] if not isinstance(v, dict | list))
    return ""


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def check(out: Path, budget: float, plan: list[Step], gpu: str) -> list[Result]:
    """Run `plan` within `budget` seconds; write OUT/gpu_check.json and OUT/gpu_check.md."""
    out.mkdir(parents=True, exist_ok=True)
    start, results = time.perf_counter(), []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for step in plan:
        result = run_step(step, budget - (time.perf_counter() - start), env)
        results.append(result)
        print(f"{gpu} | {result.name}: {result.status} in {result.seconds:g} s", flush=True)
    record = {"gpu": gpu, "torch": torch.__version__, "budget_s": budget,
              "seconds": round(time.perf_counter() - start, 1), "steps": [asdict(r) for r in results]}
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2))
    (out / "gpu_check.md").write_text(markdown(results, gpu))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              f"nothing to check")
        return 0
    gpus = torch.cuda.device_count()
    gpu = f"{torch.cuda.get_device_name(0)}" + (f" x{gpus}" if gpus > 1 else "")
    if gpus < 2:
        print(f"{gpu} | 2-process NCCL (torchrun): not run, one GPU only")
    results = check(Path(args.out), args.budget, steps(Path(args.out), gpus), gpu)
    print(markdown(results, gpu))
    return 0 if all(r.status == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
