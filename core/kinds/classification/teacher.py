"""Classification foundation-model (teacher) checkpoints: save ours, load ours or a user's plain MONAI state_dict.

Our format is a dict {"format": "lorkd-teacher", "version", "arch", "spatial_dims", "in_channels",
"task_names", "num_classes", "out_features", "state_dict"} written atomically. `load_teacher` also
accepts a user's plain state_dict of the MONAI network for the named arch (e.g. the keys of
`monai.networks.nets.resnet50(...)`, with or without its `fc.*` classifier), of `FeatureNet`, or of
a `ClassifierNet`, optionally wrapped in {"state_dict": ...} and/or prefixed "module." (DataParallel).
Every load uses `torch.load(map_location="cpu", weights_only=True)`; anything that does not fit
raises `CheckpointError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.files import atomic_save, safe_load
from core.kinds.classification.heads import TaskHeads
from core.kinds.classification.models import MultiTaskNet
from core.kinds.classification.nets import FeatureNet
from core.models.checkpoint import load_strict

FORMAT = "lorkd-teacher"
VERSION = 1
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "network", "teacher")
# classifier layers of the MONAI networks that FeatureNet drops
_CLASSIFIER_KEYS = (
    "body.fc.weight",
    "body.fc.bias",
    "body.class_layers.out.weight",
    "body.class_layers.out.bias",
)


def save_teacher(
    path: str | os.PathLike,
    model: MultiTaskNet,
    arch: str,
    spatial_dims: int,
    in_channels: int,
    task_names: Sequence[str],
    num_classes: Sequence[int],
) -> None:
    """Write the foundation model with its metadata, atomically (temp file in the same folder,
    flush + fsync, os.replace): a crash never leaves a half-written checkpoint at `path`."""
    if len(task_names) != len(num_classes):
        raise ValueError(f"{len(task_names)} task names but {len(num_classes)} class counts")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "task_names": [str(n) for n in task_names],
        "num_classes": [int(n) for n in num_classes],
        "out_features": int(getattr(model.features, "out_features", 0)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_save(payload, path)


def load_teacher(
    path: str | os.PathLike,
    arch: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: Sequence[int] | None = None,
    task_names: Sequence[str] | None = None,
) -> tuple[MultiTaskNet, bool]:
    """Load a foundation model for `arch` -> (model, has_task_heads), on the CPU.

    Our own checkpoint comes back with its task heads when its class counts equal `num_classes`
    (and its task names equal `task_names`, when given); None accepts the saved ones. Otherwise, and
    for a user's plain state_dict, the model has only its feature part (`heads` None) and
    has_task_heads is False. The feature weights always load strictly.
    """
    path = Path(path)
    obj = safe_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return _load_own(path, obj, arch, spatial_dims, in_channels, num_classes, task_names)
    features = FeatureNet(arch, spatial_dims, in_channels)
    state = _feature_state(_unwrap(path, obj))
    load_strict(path, features, state, arch)
    return MultiTaskNet(features, None), False


def _load_own(
    path: Path,
    obj: Mapping,
    arch: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: Sequence[int] | None,
    task_names: Sequence[str] | None,
) -> tuple[MultiTaskNet, bool]:
    meta = {k: obj.get(k) for k in ("arch", "spatial_dims", "in_channels")}
    if meta["arch"] != arch:
        raise CheckpointError(f"checkpoint {path} holds a {meta['arch']} foundation model, not {arch}")
    if meta["spatial_dims"] != spatial_dims:
        raise CheckpointError(
            f"checkpoint {path} holds a {meta['spatial_dims']}D model; the data are {spatial_dims}D"
        )
    if meta["in_channels"] != in_channels:
        raise CheckpointError(
            f"checkpoint {path} was trained on {meta['in_channels']} input channels; the data have "
            f"{in_channels} (set data.in_channels: {meta['in_channels']})"
        )
    state = obj.get("state_dict")
    if not _is_state_dict(state):
        raise CheckpointError(f"checkpoint {path} has no state_dict")
    features = FeatureNet(arch, spatial_dims, in_channels)
    load_strict(path, features, _strip(state, "features."), arch)
    saved_classes = [int(n) for n in obj.get("num_classes") or []]
    saved_names = list(obj.get("task_names") or [])
    heads_match = (num_classes is None or list(num_classes) == saved_classes) and (
        task_names is None or list(task_names) == saved_names
    )
    if not heads_match or not saved_classes:
        return MultiTaskNet(features, None), False
    heads = TaskHeads(features.out_features, saved_classes)
    load_strict(path, heads, _strip(state, "heads."), f"{arch} task heads")
    return MultiTaskNet(features, heads), True


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(path: Path, obj: Any) -> Mapping[str, torch.Tensor]:
    """The state_dict inside a user's checkpoint (plain, or under a usual key like "state_dict")."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
    raise CheckpointError(f"checkpoint {path} does not hold a state_dict (a mapping of names to tensors)")


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _feature_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a user's keys onto FeatureNet's `body.*` keys and drop the network's classifier."""
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = _strip(state, "module.")
    if any(k.startswith("features.body.") for k in state):  # a ClassifierNet / MultiTaskNet state_dict
        state = _strip(state, "features.")
    elif not all(k.startswith("body.") for k in state):  # the bare MONAI network
        state = {f"body.{k}": v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _CLASSIFIER_KEYS}


