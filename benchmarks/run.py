"""The benchmark suite: every figure is a ratio of two things measured side by side in one run.

Timings on shared machines are noisy, so the things compared are run round-robin on the same input
and only medians of the per-round ratios are reported, never absolute times (the one exception is
the sliding-window apply of the MNI152 volume, whose target is a time: it is reported in seconds).

Sections (`--only a,b`):
  steps      knowledge-separation training step / plain backbone step, every expert form, over tasks,
             batch and image size (2D MONAI ResNet-18), with saved-activation memory / plain
  unet3d     the same on a 3D MONAI UNet, 64^3 patches
  inference  merged expert / plain backbone (should be 1.0x) and / the foundation model
  loader     samples/s of the multi-task loader (in RAM and streamed from disk) / samples/s the
             training step consumes (> 1: the loader keeps up)
  sliding    sliding-window apply of the full 197x233x189 MNI152 T1 with the demo's expert UNet

    lorkd bench [--quick] [--json FILE] [--only steps,inference]   (or: python -m benchmarks.run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks import nets as monai_nets

from benchmarks.peft_reference import attach_peft_lora, peft_available, peft_route
from core.errors import LorkdError
from core.experts import attach_experts, expert_layers, merge_expert, route

FORMS = ("factorized", "factorized-branch", "factorized-dense", "paper", "per-task-loop", "peft-lora",
         "paper-reference")
SECTIONS = ("steps", "unet3d", "inference", "loader", "sliding")


# ------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Where:
    """Where the training steps run: a device ("cpu", "cuda", "cuda:1") and whether under AMP (bf16 autocast).

    Task ids stay on the CPU, as the batch sampler makes them: a route reads its segments there and copies
    the ids to the device once, so the step has no host sync of its own. On CUDA every timed step ends with
    a synchronize (kernels are asynchronous)."""

    device: str = "cpu"
    amp: bool = False

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.amp)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.cuda else f"{torch.get_num_threads()} CPU threads"
        return f"{name}, {'AMP bf16' if self.amp else 'float32'}"


CPU = Where()


def paired_ratios(fns: dict[str, Callable[[], None]], base: str, repeats: int, warmup: int = 1,
                  best: bool = False) -> dict[str, float]:
    """Median over rounds of time(fn) / time(fns[base]) in the same round (order rotated every round).

    With best, also `name + " best"`: min time(fn) / min time(base) over the rounds. Interference from
    other work on a shared machine only ever adds time, so the minima are the least noisy pair.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    out = {}
    for n in names:
        if n != base:
            out[n] = round(statistics.median(a / b for a, b in zip(times[n], times[base], strict=True)), 3)
            if best:
                out[f"{n} best"] = round(min(times[n]) / min(times[base]), 3)
    return out


def format_ratios(ratios: dict[str, float]) -> str:
    """'form 1.23x (best 1.10x, mem 1.16x)' for every form of a {form[ suffix]: ratio} dict."""
    forms = [k for k in ratios if " " not in k]
    parts = []
    for f in forms:
        extra = [f"{k.split(' ', 1)[1]} {v:.2f}x" for k, v in ratios.items() if k.startswith(f + " ")]
        parts.append(f"{f} {ratios[f]:.2f}x" + (f" ({', '.join(extra)})" if extra else ""))
    return "  ".join(parts)


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward during `fn()` (the activation memory of a step)."""
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.sum().backward()
    return total


def _net2d(arch: str, form: str, tasks: int, in_channels: int = 3):
    torch.manual_seed(0)
    model = getattr(monai_nets, arch)(spatial_dims=2, n_input_channels=in_channels, num_classes=10)
    if form == "plain":
        return model
    if form == "peft-lora":
        return attach_peft_lora(model, tasks, rank=4, alpha=16.0)
    attach_experts(model, tasks, rank=4, alpha=16.0, form="paper" if form.startswith("paper") else "factorized")
    if form in ("factorized-branch", "factorized-dense"):
        for layer in expert_layers(model):
            layer.strategy = form.split("-")[1]
    return model


def _forward(model, form: str, x, task_ids, loss_of, where: Where = CPU):
    """The loss of one routed forward (per-task-loop: the summed per-task losses), under `where`'s autocast."""
    with where.autocast():
        if form == "plain":
            return loss_of(model(x), slice(None))
        if form == "per-task-loop":  # naive: one forward per task present
            total = 0
            for t in task_ids.unique():
                mask = task_ids == t
                with route(model, task_ids[mask]):
                    total = total + loss_of(model(x[mask]), mask)
            return total
        if form == "peft-lora":
            with peft_route(model, task_ids):
                return loss_of(model(x), slice(None))
        with route(model, task_ids, impl="reference" if form == "paper-reference" else "fast"):
            return loss_of(model(x), slice(None))


def _stepper(model, form: str, x, task_ids, loss_of, where: Where = CPU):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        _forward(model, form, x, task_ids, loss_of, where).backward()
        opt.step()
        where.sync()

    return step


# --------------------------------------------------------------------------------------------- steps
def step_ratios(arch="resnet18", image_size=28, batch=128, tasks=10, forms=FORMS, repeats=5, warmup=1,
                memory=False, channels_last=False, where: Where = CPU):
    """{form: median(step time / plain step time), form + " best": best / best}; with memory, also
    {form + " mem": saved bytes / plain}. channels_last: every network's weights channels-last (as
    classification runs train), the plain one too. `where`: device and AMP."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=g).to(where.device)
    y = torch.randint(0, 10, (batch,), generator=g).to(where.device)
    task_ids = torch.sort(torch.randint(0, tasks, (batch,), generator=g)).values  # mixed batch, sorted by task

    def loss_of(out, rows):
        return F.cross_entropy(out.float(), y[rows], reduction="sum") / batch

    models = {f: _net2d(arch, f, tasks).to(where.device) for f in ("plain", *forms)}
    if channels_last:
        models = {f: m.to(memory_format=torch.channels_last) for f, m in models.items()}
    ratios = paired_ratios({f: _stepper(m, f, x, task_ids, loss_of, where) for f, m in models.items()}, "plain",
                           repeats, warmup, best=repeats > 1)
    if memory:
        mem = {f: saved_bytes(lambda m=m, f=f: _forward(m, f, x, task_ids, loss_of, where)) for f, m in models.items()}
        ratios.update({f"{f} mem": round(mem[f] / mem["plain"], 3) for f in forms})
    return ratios


def step_grid(quick: bool, where: Where = CPU) -> list[dict]:
    peft = ("peft-lora",) if peft_available() else ()
    if quick:
        return [dict(arch="resnet10", image_size=28, batch=64, tasks=10, repeats=3,
                     forms=("factorized", "paper", "per-task-loop", *peft))]
    fast = ("factorized", "factorized-branch", "factorized-dense", "paper", "per-task-loop", *peft)
    two = ("factorized", "paper")
    if where.cuda:  # the paper's setting (224 px, B=128-1024, T=10) and the CPU headline row
        rows = [dict(image_size=224, batch=b, tasks=10, repeats=7, forms=fast, memory=True) for b in (128, 512, 1024)]
        rows += [dict(image_size=224, batch=512, tasks=10, repeats=7, forms=two, channels_last=True)]
        rows += [dict(image_size=28, batch=128, tasks=t, repeats=11, forms=fast, memory=True) for t in (10, 32)]
        return rows
    rows = [dict(image_size=28, batch=128, tasks=10, repeats=11, forms=fast, memory=True)]
    rows += [dict(image_size=28, batch=128, tasks=t, repeats=5, forms=two, memory=True) for t in (1, 4, 32)]
    rows += [dict(image_size=28, batch=b, tasks=10, repeats=5, forms=two, memory=True) for b in (32, 512)]
    rows += [dict(image_size=64, batch=128, tasks=10, repeats=7, forms=fast, memory=True)]
    rows += [dict(image_size=s, batch=128, tasks=10, repeats=7, forms=("factorized",), channels_last=True)
             for s in (28, 64)]
    rows += [dict(image_size=224, batch=32, tasks=10, repeats=3, forms=two, memory=True)]
    rows += [dict(image_size=28, batch=32, tasks=10, repeats=1, warmup=0, forms=("paper-reference",))]
    return rows


def bench_steps(quick: bool, report, where: Where = CPU) -> list[dict]:
    results = []
    report("\n[steps] training step / plain backbone step (median of paired rounds; 'best': fastest / fastest), "
           f"rank 4; 'mem': saved activations / plain; {where.describe()}")
    if not peft_available():
        report("(peft is not installed: no peft-lora reference; `pip install -e .[dev]` installs it)")
    for row in step_grid(quick, where):
        row = {"arch": "resnet18", **row}
        ratios = step_ratios(**row, where=where)
        results.append({"section": "steps", **{k: v for k, v in row.items() if k != "forms"},
                        "device": where.describe(), "ratios": ratios})
        report(f"{row['arch']:<9} {row['image_size']:>4}px B={row['batch']:<4} T={row['tasks']:<3} "
               + ("channels-last  " if row.get("channels_last") else "") + format_ratios(ratios))
    return results


# -------------------------------------------------------------------------------------------- unet3d
def bench_unet3d(quick: bool, report, where: Where = CPU) -> list[dict]:
    size, batch, tasks = (32, 2, 4) if quick else (64, 2, 4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, size, generator=g).to(where.device)
    y = torch.randint(0, 3, (batch, size, size, size), generator=g).to(where.device)
    task_ids = torch.arange(batch) % tasks

    def net(form):
        torch.manual_seed(0)
        model = monai_nets.UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128),
                                strides=(2, 2, 2), num_res_units=1)
        if form != "plain":
            attach_experts(model, tasks, rank=4, alpha=16.0, form=form)
        return model.to(where.device)

    def loss_of(out, rows):
        return F.cross_entropy(out.float(), y[rows])

    forms = ("factorized", "paper")
    models = {f: net(f) for f in ("plain", *forms)}
    ratios = paired_ratios({f: _stepper(m, f, x, task_ids, loss_of, where) for f, m in models.items()}, "plain",
                           repeats=3 if quick else 5)
    mem = {f: saved_bytes(lambda m=m, f=f: _forward(m, f, x, task_ids, loss_of, where)) for f, m in models.items()}
    ratios.update({f"{f} mem": round(mem[f] / mem["plain"], 3) for f in forms})
    report(f"\n[unet3d] UNet(16-128) {size}^3 B={batch} T={tasks}, training step / plain ({where.describe()}): "
           + format_ratios(ratios))
    rows = [{"section": "unet3d", "patch": size, "batch": batch, "tasks": tasks, "device": where.describe(),
             "ratios": ratios}]
    if not quick:  # as segmentation runs train (core.train.pipeline.place): weights channels-last-3d, plain too
        layout = torch.channels_last_3d
        placed = {f: net(f).to(memory_format=layout) for f in ("plain", "factorized")}
        x_last = x.contiguous(memory_format=layout)
        fns = {f: _stepper(m, f, x_last, task_ids, loss_of, where) for f, m in placed.items()}
        fns["factorized default layout"] = _stepper(models["factorized"], "factorized", x, task_ids, loss_of, where)
        cl = paired_ratios(fns, "plain", repeats=5, best=True)
        default = cl["factorized default layout"] / cl["factorized"]
        report(f"[unet3d] channels-last-3d (as segmentation runs train), training step / plain channels-last-3d: "
               f"factorized {cl['factorized']:.2f}x (best {cl['factorized best']:.2f}x); the default-layout "
               f"factorized step takes {default:.2f}x the channels-last-3d one")
        rows.append({"section": "unet3d", "patch": size, "batch": batch, "tasks": tasks, "channels_last": True,
                     "device": where.describe(), "ratios": cl})
    return rows


# ----------------------------------------------------------------------------------------- inference
def forward_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on `x` (PyTorch's FlopCounterMode: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(x)
    return counter.get_total_flops()


def bench_inference(quick: bool, report) -> list[dict]:
    from core.kinds.classification.models import build_backbone, build_teacher

    batch, size, tasks = (32, 28, 4) if quick else (128, 28, 10)
    x = torch.randn(batch, 3, size, size)
    rows = []
    for arch in ("compact", "resnet18"):
        student = build_backbone(arch, 2, 3, [2] * tasks, size)
        plain = build_backbone(arch, 2, 3, [2] * tasks, size)
        attach_experts(student.features, tasks, rank=4, alpha=16.0)
        for layer in expert_layers(student.features):
            torch.nn.init.normal_(layer.lora_B[0], std=0.02)
        expert = merge_expert(student.features, 0)
        teacher = build_teacher("resnet50", 2, 3, [2] * tasks, size)
        nets = {"plain": plain.features, "expert": expert, "foundation": teacher.features}
        for n in nets.values():
            n.eval()

        def run(n):
            def fn():
                with torch.inference_mode():
                    n(x)
            return fn

        ratios = paired_ratios({k: run(n) for k, n in nets.items()}, "plain", repeats=3 if quick else 7)
        params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
        flops = {k: forward_flops(n, x[:1]) for k, n in nets.items()}
        out = {"expert / plain backbone": ratios["expert"],
               "expert / foundation": round(ratios["expert"] / ratios["foundation"], 3),
               "params expert / foundation": round(params["expert"] / params["foundation"], 3),
               "FLOPs expert / foundation": round(flops["expert"] / flops["foundation"], 3)}
        rows.append({"section": "inference", "backbone": arch, "batch": batch, "image_size": size, "ratios": out})
        report(f"\n[inference] merged expert ({arch}) B={batch} {size}px: "
               + "  ".join(f"{k} {v:.2f}x" for k, v in out.items()) + "  (foundation: MONAI ResNet-50)")
    return rows


# -------------------------------------------------------------------------------------------- loader
def bench_loader(quick: bool, report) -> list[dict]:
    from core.data.sampling import make_loader
    from core.kinds import load_config
    from core.kinds.classification.dataset import MultiTaskDataset
    from core.kinds.classification.synthetic import write_fake_medmnist
    from core.kinds.classification.tasks import build_task_specs

    n, batch, tasks = (256, 64, 4) if quick else (2048, 128, 10)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_fake_medmnist(Path(tmp) / f"t{i}.npz", n=n, num_classes=4, rgb=i % 2 == 0, size=28, seed=i)
                 for i in range(tasks)]
        specs = build_task_specs(load_config({"tasks": [{"name": f"t{i}", "medmnist": str(p)}
                                                        for i, p in enumerate(paths)]}))
        model = _net2d("resnet18", "factorized", tasks)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, 28, 28)
        ids = torch.sort(torch.randint(0, tasks, (batch,))).values
        y = torch.randint(0, 4, (batch,))

        def step():
            opt.zero_grad(set_to_none=True)
            with route(model, ids):
                F.cross_entropy(model(x), y).backward()
            opt.step()

        rows = []
        for stream in (False, True):
            data = MultiTaskDataset(specs, "train", 28, 3, augment=True, stream=stream)
            loader = make_loader(data, batch, seed=0, train=True)
            def batches(loader=loader):
                while True:
                    yield from loader

            it = batches()

            def load(it=it):
                next(it)

            ratio = paired_ratios({"step": step, "load": load}, "load", repeats=5 if quick else 9)["step"]
            rows.append({"section": "loader", "stream": stream, "batch": batch, "tasks": tasks,
                         "ratios": {"loader samples/s / step samples/s": ratio}})
            report(f"\n[loader] {'streamed from disk' if stream else 'in RAM':<18} B={batch} T={tasks}, augmented: "
                   f"loader samples/s / training-step samples/s = {ratio:.1f}x (1 process, no workers)")
    return rows


# ------------------------------------------------------------------------------------------- sliding
def bench_sliding(quick: bool, report) -> list[dict]:
    """Seconds to segment the full MNI152 T1 with an expert UNet of the demo's configuration."""
    from core.io import read_volume
    from core.kinds import load_config
    from core.kinds.segmentation.demo import build_seg_demo, mni_files
    from core.kinds.segmentation.nets import SegExpertNet
    from core.kinds.segmentation.runtime import segment_array
    from core.preprocess.sliding import count_windows
    from core.preprocess.volume import prepare_volume

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(build_seg_demo(Path(tmp)))
    volume = read_volume(mni_files()["t1"])
    data = config.data
    pre = {"spacing": data.spacing, "patch_size": data.patch_size, "overlap": data.overlap, "blend": data.blend,
           "intensity": {"mode": data.intensity.mode, "low": data.intensity.low, "high": data.intensity.high}}
    channels = config.backbone.channels
    net = SegExpertNet(config.backbone.arch, 1, 2, channels, channels[0]).eval()
    image, _ = prepare_volume(volume.array, volume.spacing, volume.direction, pre)
    windows = count_windows(image.shape[1:], data.patch_size, data.overlap)
    times = []
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        segment_array(net, volume.array, volume.spacing, volume.direction, pre)
        times.append(time.perf_counter() - start)
    seconds = round(statistics.median(times), 2)
    report(f"\n[sliding] MNI152 T1 {tuple(reversed(volume.array.shape))} -> working grid "
           f"{tuple(image.shape[1:])} at {data.spacing} mm, {windows} windows of {data.patch_size}, "
           f"{data.blend} blend: {seconds} s on {torch.get_num_threads()} CPU threads (median of {len(times)})")
    return [{"section": "sliding", "seconds": seconds, "windows": windows, "threads": torch.get_num_threads()}]


def main(quick: bool = False, json_path: str | None = None, only: list[str] | None = None,
         device: str = "cpu", amp: bool = False) -> int:
    """Run the sections (quick: steps and inference, small). `device`/`amp` apply to the training-step
    sections (steps, unet3d); inference, loader and sliding measure the CPU."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    where = Where(device, amp)
    if where.cuda and not torch.cuda.is_available():
        raise LorkdError(f"--device {device}: this PyTorch build or machine has no CUDA device")
    sections = only or (["steps", "inference"] if quick else list(SECTIONS))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise LorkdError(f"unknown benchmark section(s) {names}; choose from {', '.join(SECTIONS)}")
    print(f"LoRKD Studio benchmarks, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; training steps "
          f"on {where.describe()}", flush=True)
    report = lambda line: print(line, flush=True)  # noqa: E731
    results = []
    for name in sections:
        fn = globals()[f"bench_{name}"]
        results += fn(quick, report, where) if name in ("steps", "unet3d") else fn(quick, report)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cpu", help="device of the training-step sections, e.g. cuda")
    parser.add_argument("--amp", action="store_true", help="training steps under bf16 autocast")
    args = parser.parse_args()
    sys.exit(main(args.quick, args.json, args.only.split(",") if args.only else None, args.device, args.amp))
