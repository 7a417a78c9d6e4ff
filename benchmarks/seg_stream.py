"""Segmentation volumes streamed from disk (issue 17): peak memory of a run over many large volumes, the volume
cache's size, and its reuse by a second run.

Writes `--volumes` synthetic CT-like volumes (int16 NIfTI, 1.5 mm voxels, a few bright spheres labelled 1) and
their label maps, then runs the data side of a segmentation run in a child process with `data.stream: on`
(`kind.open_data`: every volume preprocessed into the cache; `--steps` training steps of the backbone with its
task expert on batches of 32^3 patches; one validation pass over `--val-batches` batches of the held-out
volumes' patches), and reports the child's peak resident memory (ru_maxrss, the kernel's high-water mark, which
counts the cache's mapped pages while they are mapped), the time to open the data, the cache's size on disk, and
the cache's own count of preprocessed and reused volumes. A second child with the same files and settings shows
the reuse (it preprocesses nothing). `--off-volumes N` also runs the in-RAM path (`data.stream: off`) on the
first N volumes, for the memory an in-RAM run needs per volume.

    python -m benchmarks.seg_stream [--volumes 200] [--shape 256 256 128] [--workdir DIR] [--keep]

The working folder is deleted at the end unless --keep (or a --workdir that existed before). Not a test: the
figures go into the README ("Running on a cluster").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def write_volumes(folder: Path, n: int, shape_xyz: tuple[int, int, int], seed: int = 0) -> tuple[Path, Path]:
    """n image/label NIfTI pairs (uncompressed, image int16 HU-like, label uint8) of shape (X, Y, Z)."""
    import SimpleITK as sitk

    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    zyx = shape_xyz[::-1]
    for i in range(n):
        if (labels / f"case{i:04d}.nii").exists():
            continue
        rng = np.random.default_rng([seed, i])
        image = rng.normal(0, 20, zyx).astype(np.int16)  # soft tissue around 0 HU
        image[:, :, : zyx[2] // 16] = -1000  # air at one side (a body edge for the foreground)
        label = np.zeros(zyx, np.uint8)
        z, y, x = np.ogrid[: zyx[0], : zyx[1], : zyx[2]]
        for _ in range(3):
            c = [rng.uniform(0.25, 0.75) * s for s in zyx]
            r = rng.uniform(0.06, 0.12) * min(zyx)
            inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
            image[inside] += 150
            label[inside] = 1
        for array, out in ((image, images / f"case{i:04d}.nii"), (label, labels / f"case{i:04d}.nii")):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing((1.5, 1.5, 1.5))
            sitk.WriteImage(img, str(out) + ".tmp.nii")
            os.replace(str(out) + ".tmp.nii", out)
    return images, labels


def raw_config(images: Path, labels: Path, cache: Path, stream: str, limit: int | None = None) -> dict:
    files = sorted(images.glob("*.nii"))[:limit], sorted(labels.glob("*.nii"))[:limit]
    return {
        "name": "seg-stream-bench", "kind": "segmentation",
        "tasks": [{"name": "spheres", "images": [str(p) for p in files[0]], "labels": [str(p) for p in files[1]],
                   "label_names": {1: "sphere"}, "intensity": {"mode": "ct_window", "low": -200, "high": 300}}],
        "data": {"spacing": [1.5, 1.5, 1.5], "patch_size": [32, 32, 32], "samples_per_volume": 4,
                 "stream": stream, "cache_dir": str(cache)},
        "teacher": {"channels": [8, 16, 32]}, "backbone": {"channels": [8, 16, 32, 64]},
        "train": {"batch_size": 4},
    }


def child(raw: dict, steps: int, val_batches: int) -> dict:
    """One run's data side (in this process): open the data, train `steps` steps, validate on some batches."""
    import torch

    from core.data.sampling import make_loader
    from core.distributed import Dist
    from core.experts import route
    from core.kinds import get_kind, load_config
    from core.kinds.segmentation.data import stream_volumes
    from core.kinds.segmentation.losses import seg_task_loss

    torch.set_num_threads(2)
    config = load_config(raw)
    kind = get_kind("segmentation")
    told: list[str] = []
    t0 = time.perf_counter()
    data = kind.open_data(config, Dist(), told.append)
    opened = time.perf_counter() - t0
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    student = kind.new_student(config, data)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-3)
    loader = make_loader(data.train_set, config.train.batch_size, seed=0)
    t0, done = time.perf_counter(), 0
    for batch in loader:
        if done >= steps:
            break
        with route(student, batch["task"]):
            logits = student(batch["image"], batch["task"])[1][0]
        loss = seg_task_loss(logits, batch["label"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        done += 1
    train_s = time.perf_counter() - t0
    images, labels = data.extra["val_patches"][0]
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, min(len(images), 4 * val_batches), 4):
            x = images[lo:lo + 4]
            with route(student, torch.zeros(x.shape[0], dtype=torch.int64)):
                student(x, torch.zeros(x.shape[0], dtype=torch.int64))
            _ = labels[lo:lo + 4, 0]
    val_s = time.perf_counter() - t0
    auto = load_config({**raw, "data": {**raw["data"], "stream": "auto"}})
    return {"open_s": opened, "rss_after_open_mib": rss_open, "train_steps": done, "train_s": train_s,
            "val_patches": len(images), "val_s": val_s, "auto_streams": stream_volumes(auto),
            "cache_log": [m for m in told if m.startswith("volume cache")],
            "train_volumes": len(data.extra["train_cases"][0]),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(raw: dict, steps: int, val_batches: int, workdir: Path, name: str) -> dict:
    spec = workdir / f"{name}.yaml"  # YAML keeps label_names' integer keys
    spec.write_text(yaml.safe_dump({"raw": raw, "steps": steps, "val_batches": val_batches}))
    out = subprocess.run([sys.executable, "-m", "benchmarks.seg_stream", "--child", str(spec)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 128], metavar=("X", "Y", "Z"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the volumes and the cache")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--val-batches", type=int, default=25)
    parser.add_argument("--off-volumes", type=int, default=0, help="also run the in-RAM path on this many volumes")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        spec = yaml.safe_load(args.child.read_text())
        print(json.dumps(child(spec["raw"], spec["steps"], spec["val_batches"])))
        return
    existed = args.workdir is not None and args.workdir.exists()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lorkd-seg-stream-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        images, labels = write_volumes(workdir / "data", args.volumes, tuple(args.shape))
        written = time.perf_counter() - t0
        input_bytes = sum(p.stat().st_size for p in (workdir / "data").rglob("*.nii"))
        cache = workdir / "cache"
        result: dict = {"volumes": args.volumes, "shape_xyz": args.shape, "write_s": written,
                        "input_gib": input_bytes / 2**30}
        raw = raw_config(images, labels, cache, "on")
        for name in ("first", "second"):
            result[name] = run_child(raw, args.steps, args.val_batches, workdir, name)
            print(f"{name} run: {json.dumps(result[name])}", flush=True)
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        result["cache_gib"] = size / 2**30
        result["cache_mib_per_volume"] = size / 2**20 / args.volumes
        result["children_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if args.off_volumes:
            result["in_ram"] = run_child(raw_config(images, labels, cache, "off", args.off_volumes), args.steps,
                                         args.val_batches, workdir, "in_ram")
            result["in_ram"]["volumes"] = args.off_volumes
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        if not args.keep and not existed:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
