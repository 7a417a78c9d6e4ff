"""Shared helpers of the GUI tests (a module, not conftest.py: test folders each have a conftest)."""

from __future__ import annotations

from pathlib import Path

from core.kinds.classification.synthetic import write_fake_medmnist


def tiny_config(data_dir: Path, name: str = "tiny", train_epochs: int = 2, **extra) -> dict:
    """2 tasks, n=32, resnet10 teacher 1 epoch, resnet10 backbone, batch 16, cpu, a loss every step."""
    tasks = []
    for i, task in enumerate(("alpha", "beta")):
        path = data_dir / f"{task}.npz"
        if not path.is_file():
            write_fake_medmnist(path, n=32, num_classes=3, seed=i, rgb=i == 1)
        tasks.append({"name": task, "medmnist": str(path)})
    raw = {
        "name": name,
        "tasks": tasks,
        "teacher": {"arch": "resnet10", "epochs": 1},
        "backbone": {"arch": "resnet10", "rank": 4, "alpha": 16},
        "train": {"epochs": train_epochs, "batch_size": 16, "log_every": 1},
        "device": "cpu",
        "seed": 0,
    }
    for key, value in extra.items():
        section, field = key.split("__")
        raw[section][field] = value
    return raw
