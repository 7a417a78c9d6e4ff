"""Does torch.compile close the gap? The knowledge-separation training step and the plain backbone's, eager
and compiled with inductor, stepped round-robin on the same batch (the 28 px, B=128, T=10 setting).

The route's task segments are Python values, so a compiled routed network is specialised to one batch
composition: a run whose batches mix tasks differently recompiles. Measured here on one fixed batch, the
most favourable case. Compiling takes minutes, so this is not part of `lorkd bench` (`make bench` runs it).

    python -m benchmarks.compiled [--size 28] [--batch 128] [--tasks 10] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.run import _net2d, _stepper, paired_ratios


def _compiled_stepper(form: str, compiled: bool, x, y, task_ids):
    """`run._stepper` on a fresh network, compiled or eager (a compiled module shares the network's layers,
    so `route` still finds its expert layers)."""
    model = _net2d("resnet18", form, int(task_ids.max()) + 1)
    return _stepper(torch.compile(model) if compiled else model, form, x, task_ids,
                    lambda out, rows: F.cross_entropy(out, y[rows]))


def main(size: int = 28, batch: int = 128, tasks: int = 10, rounds: int = 7) -> dict[str, float]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    task_ids = torch.sort(torch.randint(0, tasks, (batch,), generator=g)).values
    fns = {}
    for form in ("plain", "factorized"):
        for compiled in (False, True):
            name = form + (" compiled" if compiled else "")
            fns[name] = _compiled_stepper(form, compiled, x, y, task_ids)
            start = time.perf_counter()
            fns[name]()  # compiles
            print(f"{name}: first step {time.perf_counter() - start:.1f} s", flush=True)
    ratios = paired_ratios(fns, "plain", rounds, best=True)
    ratios["factorized compiled / plain compiled"] = round(ratios["factorized compiled"] / ratios["plain compiled"], 3)
    print(f"resnet18 {size}px B={batch} T={tasks}, step / eager plain step: "
          + "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), flush=True)
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    main(args.size, args.batch, args.tasks, args.rounds)
