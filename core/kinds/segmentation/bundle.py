"""The segmentation expert bundle: metadata, model card and loading (the container is `core.export.bundle`).

The bundle's network is `nets.SegExpertNet` (the merged backbone + the task's 1x1x1 head); its entry point is
`runtime.segment`: read a volume (file or DICOM series folder), sliding-window inference as recorded in the
metadata, a label map written with the input's exact geometry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import BundleError
from core.export.bundle import (
    INTENDED_USE,
    REFERENCES,
    BundleParts,
    jsonable,
    load_network,
    metadata_header,
    now_iso,
    package_versions,
    read_verified,
)
from core.export.bundle import write_bundle as write_container
from core.export.model_card import envelope_section, evidence_section, fmt, how_to_run, intro, metrics_table
from core.export.weights import METADATA_FILE, MODEL_FILE
from core.kinds.segmentation.config import IntensityConfig, SegDataConfig
from core.kinds.segmentation.nets import SegExpertNet

KIND = "segmentation"
MODULES = ("core.kinds.segmentation.nets", "core.kinds.segmentation.runtime")
NETWORK_KEYS = ("arch", "in_channels", "num_classes", "channels", "features", "res_units")


def preprocessing(data: SegDataConfig, intensity: IntensityConfig | None = None) -> dict:
    """The preprocessing block `runtime.segment_array` reads (also the record of what was done); `intensity`: the
    task's own normalisation (default: the run's)."""
    intensity = intensity or data.intensity
    return {
        "function": "scripts/kinds/segmentation/runtime.py: "
        "segment_array(net, array, spacing, direction, preprocessing)",
        "orientation": "RAS canonical by permutation/flips of the voxel axes (closest axes for oblique volumes), "
        "undone exactly on the output",
        "spacing": [float(s) for s in data.spacing],
        "resample": "trilinear to the target spacing (labels: nearest); logits trilinear back to the input grid",
        "intensity": {"mode": intensity.mode, "low": float(intensity.low), "high": float(intensity.high)},
        "intensity_note": "percentile: clip to the volume's [low, high] percentiles; ct_window: to [low, high]; "
        "then linear to [0, 1]",
        "patch_size": [int(p) for p in data.patch_size],
        "overlap": float(data.overlap),
        "blend": data.blend,
        "spatial_dims": 3,
        "in_channels": 1,
    }


def _metadata(task: dict, network: dict, pre: dict, metrics: dict, training: dict, version: str,
              sha: str, label_codes: dict | None = None, envelope: dict | None = None) -> dict:
    labels = task["label_names"]
    label_def = {str(i): name for i, name in enumerate(labels)}
    patch = pre["patch_size"]
    now = now_iso()
    return {
        **metadata_header(version, now),
        "required_packages_version": package_versions(["SimpleITK", "nibabel", "pydicom"]),
        "name": f"LoRKD segmentation expert: {task['name']}",
        "task": f"{task['name']}: 3D segmentation of {len(labels) - 1} structure(s): {', '.join(labels[1:])}",
        "description": (
            f"Task expert for '{task['name']}' decomposed from a medical segmentation foundation model with "
            f"Low-Rank Knowledge Decomposition (LoRKD): the shared MONAI {network['arch'].removeprefix('monai.')} "
            f"backbone with this task's "
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
        "eval_metrics": jsonable(metrics),
        "intended_use": INTENDED_USE,
        "references": REFERENCES,
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
            "format_version": 2,
            "run_kind": KIND,
            "kind": KIND,
            "task": task,
            "label_names": labels,
            "network": network,
            "preprocessing": pre,
            "model_file": MODEL_FILE,
            "model_sha256": sha,
            "metrics": jsonable(metrics),
            "training": jsonable(training),
            "exported_at": now,
            # what the expert was trained on (`preprocess.applicability`): inputs outside it get a warning
            **({"envelope": envelope} if envelope else {}),
            # DICOM SEG codes the user chose for labels (`lorkd apply ... --out seg.dcm`); absent: by name
            **({"label_codes": label_codes} if label_codes else {}),
        },
    }


def render_model_card(metadata: dict) -> str:
    """docs/README.md of a segmentation expert bundle."""
    lorkd = metadata["lorkd"]
    pre, net = lorkd["preprocessing"], lorkd["network"]
    facts = [
        f"- Network: MONAI `{net['arch'].removeprefix('monai.')}` channels {net['channels']} -> {net['features']} "
        f"features -> 1x1x1 head "
        f"to {net['num_classes']} classes (`scripts/kinds/segmentation/nets.py`).",
    ]
    lines = [
        *intro(f"LoRKD segmentation expert: {lorkd['task']['name']}", metadata, facts, "value"),
        *evidence_section(lorkd.get("metrics", {})),
        *envelope_section(lorkd.get("envelope")),
        "## Evaluation (held-out data; Dice and HD95 in mm, per label)",
        "",
        *metrics_table(lorkd.get("metrics", {})),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {fmt(k)} | {fmt(v)} |" for k, v in lorkd.get("training", {}).items()],
        "",
        "## Preprocessing (`scripts/kinds/segmentation/runtime.py` and `scripts/preprocess/`, identical inside and "
        "outside the app)",
        "",
        f"- Orientation: {pre['orientation']}",
        f"- Spacing: {pre['spacing']} mm; {pre['resample']}",
        f"- Intensity: {pre['intensity']} ({pre['intensity_note']})",
        f"- Sliding window: {pre['patch_size']} voxels, overlap {pre['overlap']}, {pre['blend']} blending",
        "",
        *how_to_run(metadata, "`monai`, `torch`, `numpy`, `SimpleITK`", "VOLUME.nii.gz", "labels.nii.gz"),
        "The label map has the input's exact geometry (size, spacing, origin, direction). Within LoRKD Studio: "
        "`lorkd apply BUNDLE VOLUME --out labels.nii.gz` writes the same labels.",
        "",
    ]
    return "\n".join(lines)


def write_seg_bundle(
    out_dir: str | os.PathLike,
    *,
    task_name: str,
    class_names: Sequence[str],
    arch: str,
    channels: Sequence[int],
    features: int,
    state_dict: Mapping[str, torch.Tensor],
    data: SegDataConfig,
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    version: str = "0.1.0",
    res_units: int = 1,
    intensity: IntensityConfig | None = None,
    net: dict | None = None,
    label_codes: Mapping[int, Mapping[str, Sequence]] | None = None,
    envelope: Mapping[str, Any] | None = None,
) -> Path:
    """Export one segmentation expert (a `SegExpertNet` state_dict) as a MONAI bundle at `out_dir`, atomically;
    `intensity`: the task's own normalisation (default: the run's); `net`: the body's MONAI arguments when `arch`
    is "monai.<class>" (a student of the foundation model's own architecture); `label_codes`: the task's DICOM SEG
    codes of chosen labels ({label value: {"category": [scheme, value, meaning], "type": [...]}}), recorded as
    `lorkd.label_codes` (keys and codes as strings); `envelope`: what the expert was trained on
    (`preprocess.applicability.envelope`), recorded as `lorkd.envelope`."""
    labels = [str(c) for c in class_names]
    task = {"name": str(task_name), "kind": KIND, "num_classes": len(labels), "label_names": labels,
            "spatial_dims": 3, "source": str(training.get("source", "not recorded"))}
    network = {"arch": str(arch), "in_channels": 1, "num_classes": len(labels),
               "channels": [int(c) for c in channels], "features": int(features), "res_units": int(res_units)}
    if net is not None:
        network["net"] = jsonable(dict(net))
    pre = preprocessing(data, intensity)
    codes = {str(int(k)): {part: [str(v).strip() for v in entry[part]] for part in ("category", "type")}
             for k, entry in sorted((label_codes or {}).items(), key=lambda item: int(item[0]))}
    parts = BundleParts(
        task=task, network=network, net_class=SegExpertNet, state=dict(state_dict), modules=MODULES,
        action="segment", action_target="scripts.kinds.segmentation.runtime.segment",
        metadata=lambda sha: _metadata(task, network, pre, jsonable(dict(metrics)), jsonable(dict(training)),
                                       str(version), sha, codes, jsonable(dict(envelope)) if envelope else None),
        card=render_model_card,
    )
    return write_container(out_dir, parts)


def load_seg_bundle(bundle_dir: str | os.PathLike) -> tuple[SegExpertNet, dict]:
    """(network in eval mode on CPU, metadata) of a segmentation expert bundle; files, SHA-256 and strict load
    checked (`read_verified`); `BundleError` with a one-line message on any problem."""
    root, metadata, network, state = read_verified(bundle_dir, MODULES, NETWORK_KEYS,
                                                   ("kind", "label_names", "preprocessing"))
    kind = metadata["lorkd"]["kind"]
    if kind != KIND:
        raise BundleError(f"expert bundle {root}: invalid {METADATA_FILE} (not a segmentation bundle (kind {kind!r}))")
    if metadata["lorkd"]["network"].get("net") is not None:
        network["net"] = metadata["lorkd"]["network"]["net"]
    return load_network(SegExpertNet, root, network, state), metadata
