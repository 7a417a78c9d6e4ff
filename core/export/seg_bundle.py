"""Export one segmentation task expert as a MONAI bundle that runs without LoRKD Studio, and load it back.

Layout (as core/export/bundle.py, whose atomic publishing, JSON and schema helpers this module reuses)::

    configs/metadata.json    MONAI metadata (schema-valid) + `lorkd` block: kind "segmentation", label names,
                             network args, preprocessing (orientation, spacing, intensity, window), SHA-256
    configs/inference.json   `python -m monai.bundle run --config_file BUNDLE/configs/inference.json
                             --bundle_root BUNDLE --image IMG.nii.gz --output OUT.nii.gz`
    configs/logging.conf
    models/model.pt          plain merged SegExpertNet state_dict (strict-loads into network_def)
    scripts/__init__.py, scripts/lorkd_seg_nets.py (= core/models/seg_nets.py),
    scripts/lorkd_seg_runtime.py (= core/infer/seg_runtime.py), scripts/lorkd_runtime.py (weights loading)
    docs/README.md           model card
    labels.json, labels.csv  label value -> name (0 = background)
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.config import DataConfig
from core.errors import BundleError
from core.export.bundle import (
    INFERENCE_FILE,
    INTENDED_USE,
    LOGGING_CONF,
    METADATA_FILE,
    MODEL_FILE,
    _jsonable,
    _package_versions,
    _plain_state,
    _write_json,
    _write_labels,
    inference_config,
    load_state_into,
    metadata_header,
    publish_bundle,
    read_verified,
)
from core.export.model_card import render_seg_model_card
from core.export.schema import validate_metadata
from core.infer import runtime, seg_runtime
from core.models import seg_nets
from core.models.seg_nets import SegExpertNet

KIND = "segmentation"
REQUIRED_FILES = (METADATA_FILE, INFERENCE_FILE, MODEL_FILE, "scripts/lorkd_seg_nets.py",
                  "scripts/lorkd_seg_runtime.py", "scripts/lorkd_runtime.py")


def preprocessing(data: DataConfig) -> dict:
    """The preprocessing block `seg_runtime.segment_array` reads (also the record of what was done)."""
    return {
        "function": "scripts/lorkd_seg_runtime.py: segment_array(net, array, spacing, direction, preprocessing)",
        "orientation": "RAS canonical by permutation/flips of the voxel axes (closest axes for oblique volumes), "
        "undone exactly on the output",
        "spacing": [float(s) for s in data.spacing],
        "resample": "trilinear to the target spacing (labels: nearest); logits trilinear back to the input grid",
        "intensity": {"mode": data.intensity.mode, "low": float(data.intensity.low),
                      "high": float(data.intensity.high)},
        "intensity_note": "percentile: clip to the volume's [low, high] percentiles; ct_window: to [low, high]; "
        "then linear to [0, 1]",
        "patch_size": [int(p) for p in data.patch_size],
        "overlap": float(data.overlap),
        "blend": data.blend,
        "spatial_dims": 3,
        "in_channels": 1,
    }


def _metadata(task: dict, network: dict, pre: dict, metrics: dict, training: dict, version: str,
              sha: str) -> dict:
    labels = task["label_names"]
    label_def = {str(i): name for i, name in enumerate(labels)}
    patch = pre["patch_size"]
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {
        **metadata_header(version, now),
        "required_packages_version": {"SimpleITK": _sitk_version(), **_package_versions()},
        "name": f"LoRKD segmentation expert: {task['name']}",
        "task": f"{task['name']}: 3D segmentation of {len(labels) - 1} structure(s): {', '.join(labels[1:])}",
        "description": (
            f"Task expert for '{task['name']}' decomposed from a medical segmentation foundation model with "
            f"Low-Rank Knowledge Decomposition (LoRKD): the shared MONAI {network['arch']} backbone with this task's "
            f"low-rank expert merged in, plus the task's 1x1x1 head; sliding-window inference gives a label map "
            f"in the input's geometry."
        ),
        "authors": "LoRKD Studio export",
        "copyright": "Copyright the LoRKD Studio user who trained this expert",
        "data_source": str(task.get("source", "not recorded")),
        "data_type": "3D volume (NIfTI, NRRD, MHA or a DICOM series folder, read with SimpleITK)",
        "image_classes": "single channel volume, reoriented to RAS, resampled to "
        f"{'x'.join(f'{s:g}' for s in pre['spacing'])} mm, intensity normalised to [0, 1]",
        "label_classes": "; ".join(f"{i}: {name}" for i, name in enumerate(labels)),
        "pred_classes": "; ".join(f"{i}: {name}" for i, name in enumerate(labels)),
        "eval_metrics": _jsonable(metrics),
        "intended_use": INTENDED_USE,
        "references": [
            "Zhou et al., Low-Rank Knowledge Decomposition for Medical Foundation Models, CVPR 2024, arXiv:2404.17184",
            "Li et al., LoRKD: Low-Rank Knowledge Decomposition for Medical Foundation Models, arXiv:2409.19540",
        ],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "any", "num_channels": 1,
                "spatial_shape": patch, "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": {"0": "image"},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(labels), "spatial_shape": patch,
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": label_def,
            }},
        },
        "lorkd": {
            "format_version": 1,
            "kind": KIND,
            "task": task,
            "label_names": labels,
            "network": network,
            "preprocessing": pre,
            "model_file": MODEL_FILE,
            "model_sha256": sha,
            "metrics": _jsonable(metrics),
            "training": _jsonable(training),
            "exported_at": now,
        },
    }


def _sitk_version() -> str:
    try:
        import SimpleITK as sitk

        return str(sitk.Version.VersionString())
    except ImportError:  # pragma: no cover
        return "not installed"


def write_seg_bundle(
    out_dir: str | os.PathLike,
    *,
    task_name: str,
    class_names: Sequence[str],
    arch: str,
    channels: Sequence[int],
    features: int,
    state_dict: Mapping[str, torch.Tensor],
    data: DataConfig,
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    version: str = "0.1.0",
) -> Path:
    """Export one segmentation expert (a `SegExpertNet` state_dict) as a MONAI bundle at `out_dir`, atomically."""
    labels = [str(c) for c in class_names]
    task = {"name": str(task_name), "kind": KIND, "num_classes": len(labels), "label_names": labels,
            "spatial_dims": 3, "source": str(training.get("source", "not recorded"))}
    network = {"arch": str(arch), "in_channels": 1, "num_classes": len(labels),
               "channels": [int(c) for c in channels], "features": int(features)}
    state = _plain_state(state_dict)
    try:
        SegExpertNet(**network).load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"state_dict does not fit SegExpertNet({network}): {runtime._one_line(error)[:500]}"
        ) from error
    pre = preprocessing(data)

    def build(root: Path) -> None:
        (root / "models").mkdir(parents=True)
        (root / "scripts").mkdir()
        (root / "docs").mkdir()
        torch.save(state, root / MODEL_FILE)
        (root / "scripts" / "__init__.py").write_text(
            '"""Code of a LoRKD expert bundle (copied from LoRKD Studio at export)."""\n', encoding="utf-8")
        shutil.copyfile(seg_nets.__file__, root / "scripts" / "lorkd_seg_nets.py")
        shutil.copyfile(seg_runtime.__file__, root / "scripts" / "lorkd_seg_runtime.py")
        shutil.copyfile(runtime.__file__, root / "scripts" / "lorkd_runtime.py")
        _write_labels(root, task)
        _write_json(root / INFERENCE_FILE, inference_config(network, "scripts.lorkd_seg_nets.SegExpertNet", "segment",
                                                            "scripts.lorkd_seg_runtime.segment"))
        (root / "configs" / "logging.conf").write_text(LOGGING_CONF, encoding="utf-8")
        metadata = _metadata(task, network, pre, _jsonable(dict(metrics)), _jsonable(dict(training)), str(version),
                             runtime.sha256_file(root / MODEL_FILE))
        validate_metadata(metadata)
        (root / "docs" / "README.md").write_text(render_seg_model_card(metadata), encoding="utf-8")
        _write_json(root / METADATA_FILE, metadata)

    return publish_bundle(out_dir, build)


def is_seg_bundle(bundle_dir: str | os.PathLike) -> bool:
    try:
        return runtime.read_bundle_metadata(bundle_dir)["lorkd"].get("kind") == KIND
    except ValueError:
        return False


def load_seg_bundle(bundle_dir: str | os.PathLike) -> tuple[SegExpertNet, dict]:
    """(network in eval mode on CPU, metadata) of a segmentation expert bundle; files, SHA-256 and strict load
    checked (`read_verified`); `BundleError` with a one-line message on any problem."""
    root, metadata, network, state = read_verified(
        bundle_dir, REQUIRED_FILES, ("arch", "in_channels", "num_classes", "channels", "features"),
        ("kind", "label_names", "preprocessing"),
    )
    kind = metadata["lorkd"]["kind"]
    if kind != KIND:
        raise BundleError(f"expert bundle {root}: invalid {METADATA_FILE} (not a segmentation bundle (kind {kind!r}))")
    try:
        net = SegExpertNet(**network)
    except (ValueError, TypeError) as error:
        raise BundleError(f"expert bundle {root}: cannot build network {network} ({error})") from error
    return load_state_into(net, state, root, network), metadata
