"""The segmentation sanity floor (issue 13): a plain MONAI UNet of the foundation model's size, trained with a
standard MONAI recipe for the same budget as a finished run's foundation model, tested exactly like it.

The floor answers "is our foundation model a sensible one?": if a textbook MONAI training of the same network
beats it, the run's foundation model (and so its experts' comparison with it) is weak. The recipe: MONAI `UNet`
with the run's `teacher.channels`, stride-2 levels, two residual units per level and batch norm (MONAI's 3D
tutorials), one output slice per task, Dice + cross-entropy (`monai.losses.DiceLoss` + CE, the held-out voxels
ignored), Adam at 1e-3 with a constant rate, no distillation. It trains on the run's own training patches (the
same data, split and number of samples: `teacher.epochs` passes over the run's patch set, or `--steps`) and is
tested through the deployed path on the run's test regions (`kind.test`: the bundle's sliding window on the
native grid), so its Dice sits beside the summary's foundation model and experts.

    python -m benchmarks.seg_floor runs/demo-seg [--steps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from monai.networks.nets import UNet

from core.kinds import load_config
from core.kinds.segmentation.evaluate import TaskView
from core.kinds.segmentation.losses import seg_task_loss
from core.train.pipeline import Pipeline


def plain_unet(channels: list[int], num_classes: list[int]) -> UNet:
    return UNet(spatial_dims=3, in_channels=1, out_channels=sum(num_classes), channels=channels,
                strides=[2] * (len(channels) - 1), num_res_units=2, norm="batch")


def train_floor(pipeline: Pipeline, steps: int, lr: float = 1e-3) -> tuple[UNet, float, int]:
    """(network, seconds, steps) of the floor's training on the run's training patches."""
    data, config = pipeline.data, pipeline.config
    classes = [t.num_classes for t in data.tasks]
    offsets = [sum(classes[:t]) for t in range(len(classes))]
    torch.manual_seed(config.seed)
    net = plain_unet(list(config.teacher.channels), classes).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loader = pipeline._train_loader(config.teacher.batch_size)
    done, epoch, started = 0, 0, time.time()
    while done < steps:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            x, y, tid = batch["image"], batch["label"], batch["task"]
            logits = net(x)
            loss = 0.0
            for t, (k, o) in enumerate(zip(classes, offsets, strict=True)):
                mask = tid == t
                if mask.any():
                    loss = loss + seg_task_loss(logits[mask, o:o + k], y[mask]) * int(mask.sum())
            optimizer.zero_grad(set_to_none=True)
            (loss / x.shape[0]).backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
        epoch += 1
    return net.eval(), time.time() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished segmentation run folder (config.yaml, summary.json)")
    parser.add_argument("--steps", type=int, help="training steps (default: the run's foundation-model steps)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)
    raw = yaml.safe_load((args.run / "config.yaml").read_text())
    summary = json.loads((args.run / "summary.json").read_text())
    config = load_config({**raw, "evaluate": {**raw.get("evaluate", {}), "single_task": False}})
    if config.kind != "segmentation":
        print(f"{args.run} is a {config.kind} run; the floor is for segmentation", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(config, Path(tmp) / "floor")
        steps = args.steps or config.teacher.epochs * len(pipeline._train_loader(config.teacher.batch_size))
        net, seconds, steps = train_floor(pipeline, steps)
        classes = [t.num_classes for t in pipeline.data.tasks]
        views = {t: TaskView(net, slice(sum(classes[:t]), sum(classes[:t + 1])))
                 for t in range(len(classes))}
        scores = pipeline.kind.test(pipeline.context(), views)
    rows = []
    print(f"plain MONAI UNet {list(config.teacher.channels)} (2 residual units, batch norm, Adam 1e-3, Dice+CE), "
          f"{steps} steps in {seconds:.0f} s; tested like the run ({summary['tasks'][0].get('test', '')})")
    print("| task | MONAI floor | foundation model | expert | single-task |\n|---|---|---|---|---|")
    for task in summary["tasks"]:
        floor = scores[task["name"]].metrics["dice"]
        rows.append({"task": task["name"], "floor": floor, "teacher": task.get("teacher"),
                     "expert": task.get("expert"), "single_task": task.get("single_task")})
        cells = [f"{v:.3f}" if isinstance(v, float) else "-" for v in
                 (floor, task.get("teacher"), task.get("expert"), task.get("single_task"))]
        print(f"| {task['name']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "seconds": round(seconds, 1), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
