"""The model card (`docs/README.md`) of an exported expert bundle."""

from __future__ import annotations

import json
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, default=str) + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metrics_table(metrics: dict) -> list[str]:
    """Expert vs teacher where the dict says so, else one row per entry.

    Understands `{"expert": {...}, "teacher": {...}}`, `{"metric": "auc", "expert": 0.9, "teacher": 0.92}`
    and flat `{"expert_auc": 0.9, "teacher_auc": 0.92, ...}`; anything else is listed as it is.
    """
    if not metrics:
        return ["No evaluation metrics were recorded for this export."]
    rows: dict[str, dict[str, Any]] = {}
    other: dict[str, Any] = {}
    expert, teacher = metrics.get("expert"), metrics.get("teacher")
    if isinstance(expert, dict) or isinstance(teacher, dict):
        for who, values in (("expert", expert or {}), ("teacher", teacher or {})):
            for name, value in values.items():
                rows.setdefault(str(name), {})[who] = value
        other = {k: v for k, v in metrics.items() if k not in ("expert", "teacher")}
    elif isinstance(expert, (int, float)) or isinstance(teacher, (int, float)):
        name = str(metrics.get("metric", "score"))
        rows[name] = {"expert": expert, "teacher": teacher}
        other = {k: v for k, v in metrics.items() if k not in ("expert", "teacher", "metric")}
    else:
        for key, value in metrics.items():
            for who in ("expert", "teacher"):
                if key.startswith(who + "_"):
                    rows.setdefault(key[len(who) + 1 :], {})[who] = value
                    break
            else:
                other[key] = value
    lines: list[str] = []
    if rows:
        lines += ["| metric | task expert | foundation model (teacher) |", "|---|---|---|"]
        for name, pair in rows.items():
            lines.append(
                f"| {_fmt(name)} | {_fmt(pair.get('expert', '-'))} | {_fmt(pair.get('teacher', '-'))} |"
            )
    if other:
        lines += ["", "| field | value |", "|---|---|"]
        lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in other.items()]
    return lines


def _intro(title: str, metadata: dict, facts: list[str]) -> list[str]:
    """Title, the research-use notice, the Task section with `facts` as bullets, and the labels."""
    lorkd = metadata["lorkd"]
    column = "index" if lorkd["kind"] != "segmentation" else "value"
    return [
        f"# {title}",
        "",
        "**Research use only.** Not a medical device; not validated for clinical diagnosis, screening or "
        "treatment decisions.",
        "",
        "## Task",
        "",
        f"{metadata['task']}. {metadata['description']}",
        "",
        *facts,
        f"- Weights: `{lorkd['model_file']}` (plain state_dict), SHA-256 `{lorkd['model_sha256']}`.",
        "",
        "## Labels",
        "",
        f"| {column} | label |",
        "|---|---|",
        *[f"| {i} | {_fmt(label)} |" for i, label in enumerate(lorkd["label_names"])],
        "",
        "Also in `labels.json` and `labels.csv`.",
        "",
    ]


def _how_to_run(metadata: dict, packages: str, image: str, output: str) -> list[str]:
    """Intended use, what the bundle needs and the `monai.bundle run` command line."""
    return [
        "## Intended use",
        "",
        f"{metadata['intended_use']}",
        "",
        "## How to run (without LoRKD Studio)",
        "",
        f"Needs Python with the packages and versions listed in `configs/metadata.json` ({packages}):",
        "",
        "```",
        "python -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\",
        f"    --image {image} --output {output}",
        "```",
        "",
    ]


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
        f"{net['num_classes']} outputs (logits), defined in `scripts/lorkd_nets.py`.",
    ]
    lines = [
        *_intro(f"LoRKD task expert: {task.get('name', 'task')}", metadata, facts),
        "## Evaluation",
        "",
        *_metrics_table(lorkd.get("metrics", {})),
        "",
        "## Training data and procedure",
        "",
        f"- Data source: {_fmt(task.get('source', metadata.get('data_source', 'not recorded')))}",
        "- Method: Low-Rank Knowledge Decomposition (LoRKD; Zhou et al., CVPR 2024, arXiv:2404.17184): "
        "a foundation model (teacher) is decomposed into a shared backbone plus one low-rank expert per "
        "task; this bundle is the backbone with this task's expert merged in, plus its task head.",
    ]
    training = lorkd.get("training", {})
    if training:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in training.items()]
    lines += [
        "",
        "## Preprocessing (applied by `scripts/lorkd_runtime.py`, identical inside and outside the app)",
        "",
        f"- Reading: {pre['reading']}",
        f"- Intensity: {pre['intensity']}",
        f"- Channels: {channels}; {pre['channels']}",
        f"- Size: resized to {size} with {pre['resize']}",
        f"- Normalisation: (x − {pre['mean']}) / {pre['std']}",
        "",
        *_how_to_run(metadata, "`monai`, `torch`, `numpy`, plus Pillow / nibabel / pydicom for PNG-JPEG / NIfTI / "
                     "DICOM input", "IMAGE", "scores.json"),
        "`BUNDLE` is this folder; `IMAGE` is a PNG, JPEG, BMP, TIFF, `.npy`, NIfTI or DICOM file with one 2D "
        "image (a 3D NIfTI or multi-frame DICOM is scored on its middle axial slice / middle frame); the "
        "output is `.json` or `.csv` with one probability per label and the prediction. Leave out `--output` "
        "to print the JSON. Add `--device cuda` to run on a GPU (needs a CUDA build of PyTorch).",
        "",
        "Within LoRKD Studio: `lorkd apply BUNDLE IMAGE --out scores.json` gives the same numbers.",
        "",
    ]
    return "\n".join(lines)


def render_seg_model_card(metadata: dict) -> str:
    """docs/README.md of a segmentation expert bundle."""
    lorkd = metadata["lorkd"]
    pre, net = lorkd["preprocessing"], lorkd["network"]
    facts = [
        f"- Network: MONAI `{net['arch']}` channels {net['channels']} -> {net['features']} features -> 1x1x1 head "
        f"to {net['num_classes']} classes (`scripts/lorkd_seg_nets.py`).",
    ]
    lines = [
        *_intro(f"LoRKD segmentation expert: {lorkd['task']['name']}", metadata, facts),
        "## Evaluation (held-out data; Dice and HD95 in mm, per label)",
        "",
        *_metrics_table(lorkd.get("metrics", {})),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {_fmt(k)} | {_fmt(v)} |" for k, v in lorkd.get("training", {}).items()],
        "",
        "## Preprocessing (`scripts/lorkd_seg_runtime.py`, identical inside and outside the app)",
        "",
        f"- Orientation: {pre['orientation']}",
        f"- Spacing: {pre['spacing']} mm; {pre['resample']}",
        f"- Intensity: {pre['intensity']} ({pre['intensity_note']})",
        f"- Sliding window: {pre['patch_size']} voxels, overlap {pre['overlap']}, {pre['blend']} blending",
        "",
        *_how_to_run(metadata, "`monai`, `torch`, `numpy`, `SimpleITK`", "VOLUME.nii.gz", "labels.nii.gz"),
        "The label map has the input's exact geometry (size, spacing, origin, direction). Within LoRKD Studio: "
        "`lorkd apply BUNDLE VOLUME --out labels.nii.gz` writes the same labels.",
        "",
    ]
    return "\n".join(lines)
