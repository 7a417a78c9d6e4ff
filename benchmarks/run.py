"""Knowledge-separation training step vs the plain backbone, every expert form side by side.

Timings on shared machines are noisy, so forms are measured round-robin on the same batch and
only medians of ratios to the plain step of the same round are reported, never absolute times.

    lorkd bench [--quick] [--json FILE]        (or: python -m benchmarks.run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from monai.networks import nets as monai_nets

from core.experts import attach_experts, expert_layers, route

FORMS = ("factorized", "factorized-branch", "factorized-dense", "paper", "per-task-loop", "paper-reference")


def _model(arch: str, form: str, tasks: int, in_channels: int = 3):
    torch.manual_seed(0)
    model = getattr(monai_nets, arch)(spatial_dims=2, n_input_channels=in_channels, num_classes=10)
    if form == "plain":
        return model
    attach_experts(model, tasks, rank=4, alpha=16.0, form="paper" if form.startswith("paper") else "factorized")
    if form in ("factorized-branch", "factorized-dense"):
        for layer in expert_layers(model):
            layer.strategy = form.split("-")[1]
    return model


def _stepper(model, form: str, x, y, task_ids):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        if form == "plain":
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        elif form == "per-task-loop":  # naive: one forward/backward per task present
            for t in task_ids.unique():
                mask = task_ids == t
                with route(model, task_ids[mask]):
                    (F.cross_entropy(model(x[mask]), y[mask], reduction="sum") / len(y)).backward()
        else:
            with route(model, task_ids, impl="reference" if form == "paper-reference" else "fast"):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
        opt.step()

    return step


def step_ratios(arch="resnet18", image_size=28, batch=128, tasks=10, forms=FORMS, repeats=5, warmup=1):
    """Median over rounds of (form step time / plain step time in the same round)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    task_ids = torch.sort(torch.randint(0, tasks, (batch,), generator=g)).values  # mixed batch, sorted by task
    steps = {f: _stepper(_model(arch, f, tasks), f, x, y, task_ids) for f in ("plain", *forms)}
    for step in steps.values():
        for _ in range(warmup):
            step()
    ratios = {f: [] for f in forms}
    for _ in range(repeats):
        times = {}
        for form, step in steps.items():
            start = time.perf_counter()
            step()
            times[form] = time.perf_counter() - start
        for form in forms:
            ratios[form].append(times[form] / times["plain"])
    return {f: round(statistics.median(r), 3) for f, r in ratios.items()}


def grid(quick: bool):
    if quick:
        return [dict(arch="resnet10", image_size=28, batch=64, tasks=10, repeats=3,
                     forms=("factorized", "paper", "per-task-loop"))]
    fast_forms = ("factorized", "factorized-branch", "factorized-dense", "paper", "per-task-loop")
    rows = [dict(image_size=28, batch=128, tasks=10, repeats=5, forms=fast_forms)]
    rows += [dict(image_size=28, batch=128, tasks=t, repeats=3, forms=("factorized", "paper")) for t in (1, 4, 32)]
    rows += [dict(image_size=28, batch=b, tasks=10, repeats=3, forms=("factorized", "paper")) for b in (32, 512)]
    rows += [dict(image_size=64, batch=128, tasks=10, repeats=3, forms=("factorized", "paper"))]
    rows += [dict(image_size=224, batch=16, tasks=10, repeats=2, forms=("factorized", "paper"))]
    rows += [dict(image_size=28, batch=32, tasks=10, repeats=1, warmup=0, forms=("paper-reference",))]
    return rows


def main(quick: bool = False, json_path: str | None = None) -> int:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = []
    print(f"knowledge-separation training step / plain step (median of paired rounds), "
          f"{torch.get_num_threads()} CPU threads, rank 4")
    print(f"{'arch':<10}{'size':>5}{'batch':>6}{'tasks':>6}  ratios")
    for row in grid(quick):
        row = {"arch": "resnet18", **row}
        ratios = step_ratios(**row)
        results.append({**{k: v for k, v in row.items() if k != "forms"}, "ratios": ratios})
        print(f"{row['arch']:<10}{row['image_size']:>5}{row['batch']:>6}{row['tasks']:>6}  "
              + "  ".join(f"{f} {r:.2f}x" for f, r in ratios.items()), flush=True)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.exit(main(args.quick, args.json))
