"""Cost of DDP's find_unused_parameters=True, which routed experts need (benchmarks for issue "Scale out").

A rank whose share of a mixed-task batch lacks a task leaves that task's experts and head without
gradient; plain DDP then fails with "Expected to have finished reduction". `core.train.loop.wrap_ddp`
therefore turns on find_unused_parameters, which walks the autograd graph after every forward.
This measures that walk: the same model under two DDP wrappers, one with the option and one
without, stepped round-robin on batches that hold every task on every rank (so both are legal),
and reports the median ratio of step times. Gloo on CPU (2 processes) unless run on GPUs.

    python -m benchmarks.ddp [--tasks 10] [--batch 64] [--size 28] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.networks import nets as monai_nets


def _worker(args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    from torch.nn.parallel import DistributedDataParallel

    from core.experts import attach_experts, route

    def build():
        torch.manual_seed(0)
        net = monai_nets.resnet18(spatial_dims=2, n_input_channels=3, num_classes=10)
        attach_experts(net, args.tasks, rank=4, alpha=16.0)
        return net

    wrapped = {flag: DistributedDataParallel(build(), find_unused_parameters=flag) for flag in (False, True)}
    opts = {flag: torch.optim.SGD(m.parameters(), lr=1e-3) for flag, m in wrapped.items()}
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    tasks = torch.arange(args.batch) * args.tasks // args.batch  # every task present, sorted

    def step(flag):
        opts[flag].zero_grad(set_to_none=True)
        with route(wrapped[flag].module, tasks):
            loss = F.cross_entropy(wrapped[flag](x), y)
        loss.backward()
        opts[flag].step()

    for flag in wrapped:
        step(flag)
    ratios = []
    for i in range(args.rounds):
        times = {}
        for flag in ((False, True) if i % 2 == 0 else (True, False)):  # alternate the order of the pair
            dist.barrier()
            start = time.perf_counter()
            step(flag)
            dist.barrier()
            times[flag] = time.perf_counter() - start
        ratios.append(times[True] / times[False])
    if rank == 0:
        result = {"world_size": dist.get_world_size(), "tasks": args.tasks, "batch_per_rank": args.batch,
                  "image_size": args.size, "find_unused_ratio": round(statistics.median(ratios), 3)}
        print(f"DDP step with find_unused_parameters=True / without: {result['find_unused_ratio']:.3f}x "
              f"(median of {args.rounds} paired rounds; {result['world_size']} gloo processes, resnet18, "
              f"{args.tasks} tasks, {args.batch} images of {args.size} px per rank)")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if "RANK" in os.environ:
        _worker(args)
        return 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "benchmarks.ddp", *(argv if argv is not None else sys.argv[1:])]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
