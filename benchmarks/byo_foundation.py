"""The worked example of README "Decompose your own foundation model", measured: a user's MONAI bundle decomposed
label-free into region experts, and what each expert agrees with.

Builds the foundation model a MONAI user would bring (the tests' `tests/foundation_bundle.py`: a MONAI UNet
16-32-64 trained with DiceCE on the MNI152 T1 at 3 mm for background / grey matter / white matter / CSF, saved in
the Model Zoo layout with its preprocessing in configs/inference.json and its channels in configs/metadata.json),
then runs `lorkd decompose` on a config with two label-free tasks (images only, `teacher_labels`) and a student of
the bundle's own architecture at half its width, and prints per expert: agreement with the foundation model on the
held-out regions (Dice per label), HD95, and size / MACs / CPU latency against the foundation model.

    python -m benchmarks.byo_foundation [--out runs/byo] [--steps 300] [--epochs 20] [--width 0.5]

Then look at the experts: `python -m benchmarks.overlays runs/byo/run --image MNI152_T1 --out byo.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from core.cli import main as lorkd
from core.kinds.segmentation.demo import mni_files
from tests.foundation_bundle import train_unet, write_bundle


def config(bundle: Path, epochs: int, width: float) -> dict:
    t1 = str(mni_files()["t1"])
    return {
        "name": "byo", "kind": "segmentation",
        "tasks": [{"name": "grey", "images": [t1], "teacher_labels": ["grey matter"]},
                  {"name": "white", "images": [t1], "teacher_labels": ["white matter"]}],
        "data": {"spacing": [3.0, 3.0, 3.0], "patch_size": [24, 24, 24], "samples_per_volume": 48},
        "teacher": {"bundle": str(bundle)},
        "backbone": {"arch": "same", "width": width, "rank": 2},
        "train": {"epochs": epochs, "batch_size": 4, "kd_weight": 0.5},
        "evaluate": {"single_task": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/byo")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the foundation model")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=float, default=0.5, help="the student's share of the foundation model's width")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    start = time.perf_counter()
    net, _ = train_unet(args.steps)
    bundle = write_bundle(out / "foundation_bundle", net)
    trained = time.perf_counter() - start
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config(bundle, args.epochs, args.width), sort_keys=False))
    start = time.perf_counter()
    code = lorkd(["decompose", str(path), "--out", str(out / "run")])
    if code:
        raise SystemExit(code)
    summary = json.loads((out / "run" / "summary.json").read_text())
    print(f"\nfoundation model trained in {trained:.0f} s; decomposition, test and export in "
          f"{time.perf_counter() - start:.0f} s (2 CPU threads)")
    print("| expert | labels | agreement (Dice) per label | HD95 mm | params | MACs | latency |")
    print("|---|---|---|---|---|---|---|")
    for task in summary["tasks"]:
        metrics = task["expert_metrics"]
        per_label = ", ".join(f"{name} {metrics[f'agreement/{name}']:.3f}" for name in task["labels"][1:])
        print(f"| {task['name']} | {', '.join(task['labels'][1:])} | {per_label} | {metrics['hd95']:.1f} | "
              f"{task['params_ratio']:.1f}x fewer | {task['macs_ratio']:.1f}x fewer | "
              f"{task['latency_ratio']:.1f}x faster |")


if __name__ == "__main__":
    main()
