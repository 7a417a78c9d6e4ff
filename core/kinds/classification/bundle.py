"""The classification expert bundle: metadata, model card and loading (the container is `core.export.bundle`).

The bundle's network is `nets.ClassifierNet` (the merged backbone + the task's linear head); its entry point is
`runtime.classify`, which reads one 2D image, preprocesses it as recorded in the metadata and writes the scores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

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
from core.export.weights import MODEL_FILE
from core.kinds.classification import nets, runtime
from core.kinds.classification.nets import ClassifierNet
from core.preprocess import image as preprocess_image

KIND_NAME = "classification"
MODULES = ("core.kinds.classification.nets", "core.kinds.classification.runtime")
NETWORK_KEYS = ("arch", "spatial_dims", "in_channels", "num_classes")
OPTIONAL_READERS = {"SimpleITK": "NIfTI/NRRD/MetaImage/DICOM", "pillow": "PNG/JPEG/BMP/TIFF", "nibabel": "NIfTI",
                    "pydicom": "DICOM"}


def _check_task(task: Mapping, spatial_dims: int, in_channels: int) -> dict:
    """A plain copy of the task dict with label_names filled in; ValueError on contradictions."""
    task = jsonable(dict(task))
    name = str(task.get("name", "")).strip()
    if not name:
        raise ValueError("task has no name")
    kind = task.get("kind")
    if kind not in runtime.KINDS:
        raise ValueError(f"task {name!r}: kind must be one of {runtime.KINDS}, got {kind!r}")
    labels = task.get("label_names") or [f"class_{i}" for i in range(int(task.get("num_classes", 0)))]
    num_classes = int(task.get("num_classes", len(labels)))
    if num_classes < 1 or len(labels) != num_classes:
        raise ValueError(f"task {name!r}: {len(labels)} label names for num_classes={num_classes}")
    if len({str(x) for x in labels}) != len(labels):
        raise ValueError(f"task {name!r}: label names are not unique: {labels}")
    if "spatial_dims" in task and int(task["spatial_dims"]) != int(spatial_dims):
        raise ValueError(f"task {name!r} is {task['spatial_dims']}D but spatial_dims={spatial_dims}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    task.update(name=name, kind=kind, num_classes=num_classes, label_names=[str(x) for x in labels])
    return task



def _build_metadata(
    *,
    task: dict,
    network: dict,
    image_size: int,
    metrics: dict,
    training: dict,
    version: str,
    model_sha256: str,
    envelope: dict | None = None,
) -> dict:
    name, kind, labels = task["name"], task["kind"], task["label_names"]
    spatial_dims, in_channels, num_classes = network["spatial_dims"], network["in_channels"], len(labels)
    spatial_shape = [int(image_size)] * int(spatial_dims)
    channel_def = {"0": "grey"} if in_channels == 1 else {"0": "R", "1": "G", "2": "B"}
    label_def = {str(i): label for i, label in enumerate(labels)}
    decision = "softmax over labels" if kind == "multiclass" else "independent sigmoid per label"
    versions = package_versions(list(OPTIONAL_READERS))
    readers = ", ".join(f"{OPTIONAL_READERS[k]} via {k}" for k in versions)
    now = now_iso()
    return {
        **metadata_header(version, now),
        "required_packages_version": versions,
        "name": f"LoRKD expert: {name}",
        "task": f"{name}: {kind} classification of {spatial_dims}D medical images into {num_classes} labels",
        "description": (
            f"Task expert for '{name}' decomposed from a medical foundation model with Low-Rank Knowledge "
            f"Decomposition (LoRKD): the shared backbone with this task's low-rank expert merged in, plus "
            f"the task head. MONAI {network['arch']} ({spatial_dims}D, {in_channels} input channel(s)) "
            f"outputs {num_classes} logits; {decision} gives the probabilities."
        ),
        "authors": "LoRKD Studio export",
        "copyright": "Copyright the LoRKD Studio user who trained this expert",
        "data_source": str(task.get("source", "not recorded")),
        "data_type": f"2D image file ({readers}, NumPy .npy)" if spatial_dims == 2 else "3D volume",
        "image_classes": f"{'RGB' if in_channels == 3 else 'single channel grey'} image, "
        f"{'x'.join(map(str, spatial_shape))} after preprocessing, intensity normalised to [-1, 1]",
        "pred_classes": "; ".join(f"{i}: {label}" for i, label in enumerate(labels)),
        "eval_metrics": jsonable(metrics),
        "intended_use": INTENDED_USE,
        "references": REFERENCES,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "any",
                    "num_channels": int(in_channels),
                    "spatial_shape": spatial_shape,
                    "dtype": "float32",
                    "value_range": [-1, 1],
                    "is_patch_data": False,
                    "channel_def": channel_def,
                }
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classes" if kind == "multiclass" else "multilabel",
                    "num_channels": num_classes,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": label_def,
                }
            },
            "post_processed_outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes" if kind == "multiclass" else "multilabel",
                    "num_channels": num_classes,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": label_def,
                }
            },
        },
        "lorkd": {
            "format_version": 2,
            "run_kind": KIND_NAME,
            "task": task,
            "kind": kind,
            "label_names": labels,
            "network": network,
            "preprocessing": {
                "function": "scripts/kinds/classification/runtime.py: "
                "prepare(load_image(path)[None], image_size, in_channels, spatial_dims)",
                "image_size": int(image_size),
                "in_channels": int(in_channels),
                "spatial_dims": int(spatial_dims),
                "reading": "scripts/io: read_volume then display_plane: pixels in the DICOM viewer's (LPS) "
                "display order (never transposed), 3D volumes -> middle axial slice, multi-frame DICOM -> middle "
                "frame; DICOM rescale slope/intercept applied, MONOCHROME1 inverted, palette/YBR to RGB, no VOI "
                "window",
                "orientation": "display order (row 0 at the top)",
                "spacing": "ignored: the image is resized to image_size pixels per side",
                "intensity": "uint8 -> x / 255; any other dtype -> per-image min-max between the 0.5th and "
                "99.5th percentiles, clipped to [0, 1]",
                "channels": "grey repeated to 3 channels or RGB averaged to grey, as in_channels asks; alpha "
                "dropped",
                "resize": "MONAI Resize, bilinear (trilinear in 3D), anti-aliased",
                "mean": float(preprocess_image.MEAN),
                "std": float(preprocess_image.STD),
            },
            "model_file": MODEL_FILE,
            "model_sha256": model_sha256,
            "metrics": jsonable(metrics),
            "training": jsonable(training),
            "exported_at": now,
            # what the expert was trained on (`preprocess.applicability`): inputs outside it get a warning
            **({"envelope": envelope} if envelope else {}),
        },
    }



def render_model_card(metadata: dict) -> str:
    """docs/README.md of a classification expert bundle."""
    lorkd = metadata["lorkd"]
    task = lorkd["task"]
    pre = lorkd["preprocessing"]
    net = lorkd["network"]
    kind = lorkd["kind"]
    size = "×".join([str(pre["image_size"])] * int(pre["spatial_dims"]))
    channels = "RGB (3 channels)" if int(pre["in_channels"]) == 3 else "grey (1 channel)"
    decision = (
        "the label with the highest probability (softmax over labels)"
        if kind == "multiclass"
        else "every label whose probability (independent sigmoid) is ≥ 0.5"
    )
    facts = [
        f"- Kind: {kind} ({len(lorkd['label_names'])} labels); prediction: {decision}.",
        f"- Network: MONAI `{net['arch']}`, {net['spatial_dims']}D, {net['in_channels']} input channel(s), "
        f"{net['num_classes']} outputs (logits), defined in `scripts/kinds/classification/nets.py`.",
    ]
    lines = [
        *intro(f"LoRKD task expert: {task.get('name', 'task')}", metadata, facts),
        *evidence_section(lorkd.get("metrics", {})),
        *envelope_section(lorkd.get("envelope")),
        "## Evaluation",
        "",
        *metrics_table(lorkd.get("metrics", {})),
        "",
        "## Training data and procedure",
        "",
        f"- Data source: {fmt(task.get('source', metadata.get('data_source', 'not recorded')))}",
        "- Method: Low-Rank Knowledge Decomposition (LoRKD; Zhou et al., CVPR 2024, arXiv:2404.17184): "
        "a foundation model (teacher) is decomposed into a shared backbone plus one low-rank expert per "
        "task; this bundle is the backbone with this task's expert merged in, plus its task head.",
    ]
    training = lorkd.get("training", {})
    if training:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {fmt(k)} | {fmt(v)} |" for k, v in training.items()]
    lines += [
        "",
        "## Preprocessing (applied by `scripts/kinds/classification/runtime.py` and `scripts/preprocess/image.py`, "
        "identical inside and outside the app)",
        "",
        f"- Reading: {pre['reading']}",
        f"- Intensity: {pre['intensity']}",
        f"- Channels: {channels}; {pre['channels']}",
        f"- Size: resized to {size} with {pre['resize']}",
        f"- Normalisation: (x − {pre['mean']}) / {pre['std']}",
        "",
        *how_to_run(metadata, "`monai`, `torch`, `numpy`, `SimpleITK`, plus Pillow / nibabel / pydicom for "
                     "PNG-JPEG-BMP-TIFF / NIfTI / DICOM input", "IMAGE", "scores.json"),
        "`BUNDLE` is this folder; `IMAGE` is a PNG, JPEG, BMP, TIFF, `.npy`, NIfTI, NRRD, MetaImage or DICOM "
        "file with one 2D image (a 3D volume or multi-frame DICOM is scored on its middle axial slice / middle "
        "frame); the "
        "output is `.json` or `.csv` with one probability per label and the prediction. Leave out `--output` "
        "to print the JSON. Add `--device cuda` to run on a GPU (needs a CUDA build of PyTorch).",
        "",
        "Within LoRKD Studio: `lorkd apply BUNDLE IMAGE --out scores.json` gives the same numbers.",
        "",
    ]
    return "\n".join(lines)



def write_bundle(
    out_dir: str | os.PathLike,
    *,
    task: Mapping[str, Any],
    arch: str,
    spatial_dims: int,
    in_channels: int,
    image_size: int,
    state_dict: Mapping[str, torch.Tensor],
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    version: str = "0.1.0",
    envelope: Mapping[str, Any] | None = None,
) -> Path:
    """Export one classification expert as a MONAI bundle at `out_dir` and return its path.

    task: TaskSpec.to_dict() (name, kind, num_classes, label_names, spatial_dims, rgb, source).
    arch/spatial_dims/in_channels: the `ClassifierNet` the weights belong to; image_size: the side length
    `prepare` resizes to. state_dict: the plain merged ClassifierNet state_dict (checked to strict-load
    before anything is written). metrics: expert and teacher evaluation (see the model card for the
    shapes it tabulates); training: run settings for the model card. Both must be JSON-serialisable
    (numpy scalars, tensors and paths are converted); envelope: what the expert was trained on
    (`preprocess.applicability.envelope`), recorded as `lorkd.envelope`. Atomic (`core.export.bundle.publish_bundle`).
    """
    task_d = _check_task(task, spatial_dims, in_channels)
    network = {"arch": str(arch), "spatial_dims": int(spatial_dims), "in_channels": int(in_channels),
               "num_classes": int(task_d["num_classes"])}
    nets.check_image_size(network["arch"], int(image_size))
    parts = BundleParts(
        task=task_d, network=network, net_class=ClassifierNet, state=dict(state_dict), modules=MODULES,
        action="classify", action_target="scripts.kinds.classification.runtime.classify",
        metadata=lambda sha: _build_metadata(task=task_d, network=network, image_size=int(image_size),
                                             metrics=dict(metrics), training=dict(training), version=str(version),
                                             model_sha256=sha,
                                             envelope=jsonable(dict(envelope)) if envelope else None),
        card=render_model_card,
    )
    return write_container(out_dir, parts)


def load_bundle(bundle_dir: str | os.PathLike) -> tuple[ClassifierNet, dict]:
    """Load an exported classification expert: `(network in eval mode on CPU, metadata dict)`.

    `read_verified` checks files, metadata and SHA-256 and reads the weights with weights_only; they are
    loaded with strict=True into the `ClassifierNet` that the metadata describes.
    """
    root, metadata, network, state = read_verified(bundle_dir, MODULES, NETWORK_KEYS,
                                                   ("kind", "label_names", "preprocessing"))
    return load_network(ClassifierNet, root, network, state), metadata
