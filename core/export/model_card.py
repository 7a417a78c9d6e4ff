"""The frame of an expert bundle's model card (`docs/README.md`); each kind's bundle module fills it."""

from __future__ import annotations

import json
from typing import Any


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, default=str) + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def metrics_table(metrics: dict) -> list[str]:
    """Every test metric of the expert beside the foundation model's and the single-task baseline's."""
    expert = metrics.get("expert_metrics") if metrics else None
    if not expert:
        return ["No evaluation metrics were recorded for this export."]
    teacher = metrics.get("teacher_metrics") or {}
    single = metrics.get("single_task_metrics") or {}
    lines = ["| metric | task expert | foundation model | single-task baseline |", "|---|---|---|---|"]
    for name, value in expert.items():
        lines.append(f"| {fmt(name)} | {fmt(value)} | {fmt(teacher.get(name, '-'))} | {fmt(single.get(name, '-'))} |")
    return lines


def intro(title: str, metadata: dict, facts: list[str], label_column: str = "index") -> list[str]:
    """Title, the research-use notice, the Task section with `facts` as bullets, and the labels (`label_column`
    names the first column: the output index, or the label value of a label map)."""
    lorkd = metadata["lorkd"]
    column = label_column
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
        *[f"| {i} | {fmt(label)} |" for i, label in enumerate(lorkd["label_names"])],
        "",
        "Also in `labels.json` and `labels.csv`.",
        "",
    ]


def how_to_run(metadata: dict, packages: str, image: str, output: str) -> list[str]:
    """Intended use, how to check the bundle first, what it needs and the `monai.bundle run` command line.

    `packages`: what the kind's scripts import (e.g. "`monai`, `torch`, `numpy`, `SimpleITK`"); `fire`, which
    MONAI's command line imports, is added here."""
    return [
        "## Intended use",
        "",
        f"{metadata['intended_use']}",
        "",
        "## How to run (without LoRKD Studio)",
        "",
        "**Check the bundle first.** `python -m monai.bundle run` executes this bundle's configs "
        "(`configs/inference.json`) and Python code (`scripts/`): a changed bundle can run any program on your "
        "computer. In this folder run",
        "",
        "```",
        "sha256sum -c SHA256SUMS",
        "```",
        "",
        "(macOS: `shasum -a 256 -c SHA256SUMS`): every line must end in `OK`. It does not notice added files: "
        "`configs/`, `scripts/` and `models/` must hold no file that `SHA256SUMS` does not list, and the bundle no "
        "other `.py` file. With LoRKD Studio, `lorkd verify BUNDLE` checks all of this, and the metadata. "
        "Whoever changes a bundle can rewrite its "
        "`SHA256SUMS` too: if the sender gave you its SHA-256 (`sha256sum SHA256SUMS`; `lorkd verify` prints it "
        "as the fingerprint), compare them.",
        "",
        f"Then run it with Python and {packages}, and `fire` (which `python -m monai.bundle` imports); the "
        "versions it was exported with are in `configs/metadata.json`. `-B` keeps Python from writing "
        "`__pycache__` folders into `scripts/`:",
        "",
        "```",
        "python -B -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\",
        f"    --image {image} --output {output}",
        "```",
        "",
    ]


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def evidence_sentence(record: dict, other: str = "teacher") -> str:
    """One sentence a clinician reads: "expert 0.910 vs foundation model 0.890 (dice): difference +0.020, 95% CI
    -0.010 to +0.050, 40 test cases" (`other`: "teacher" or "single_task"); "" when the record lacks it."""
    expert, reference = record.get("expert"), record.get(other)
    if expert is None or reference is None:
        return ""
    name = "foundation model" if other == "teacher" else "single-task baseline"
    text = f"expert {expert:.3f} vs {name} {reference:.3f} ({record.get('metric', 'score')})"
    difference, ci = record.get(f"expert_minus_{other}"), record.get(f"expert_minus_{other}_ci")
    if difference is not None:
        text += f": difference {_signed(difference)}"
        if ci and None not in ci:
            text += f", 95% CI {_signed(ci[0])} to {_signed(ci[1])}"
    if record.get("test_cases"):
        text += f", {record['test_cases']} test cases"
    return text


def evidence_section(metrics: dict) -> list[str]:
    """The "Evidence" section of a model card: the expert against its foundation model and against the same
    backbone trained on the task alone, with intervals; warnings; what was tested and how the expert was chosen."""
    if not metrics or metrics.get("expert") is None:
        return ["## Evidence", "", "No test results were recorded for this export.", ""]
    lines = ["## Evidence", ""]
    for flag in metrics.get("flags") or []:
        lines.append(f"**Warning: {flag}.**")
        lines.append("")
    for other in ("teacher", "single_task"):
        sentence = evidence_sentence(metrics, other)
        if sentence:
            lines.append(f"- {sentence[0].upper()}{sentence[1:]}.")
    if metrics.get("test"):
        lines.append(f"- Test: {metrics['test']}; the expert as exported, run through this bundle's own code.")
    if metrics.get("selected_epoch"):
        lines.append(f"- Chosen at epoch {metrics['selected_epoch']} (its best validation score; validation data "
                     "are never test data).")
    ratios = [(key, label) for key, label in (("params_ratio", "parameters"), ("macs_ratio", "multiply-adds"),
                                              ("latency_ratio", "CPU time per input")) if metrics.get(key)]
    if ratios:
        lines.append("- Foundation model / expert: " + ", ".join(f"{metrics[k]:.1f}x the {label}"
                                                                 for k, label in ratios) + ".")
    return lines + [""]


def envelope_section(envelope: dict | None) -> list[str]:
    """What the expert was trained on (its applicability envelope, `preprocess.applicability`): inputs outside it
    get a warning from `lorkd apply`, the app and the bundle's own entry point."""
    if not envelope:
        return []
    rows = [("inputs", envelope.get("inputs")), ("modality", ", ".join(envelope.get("modality") or []) or
                                                 "not recorded (no DICOM inputs, none declared)"),
            ("channels", envelope.get("channels"))]
    names = {"spacing_mm": "voxel size (mm, R-L / A-P / S-I)", "extent_mm": "field of view (mm)",
             "size": "image size (pixels)", "orientation": "orientation (voxel axes)", "oblique": "oblique"}
    rows += [(text, envelope[key]) for key, text in names.items() if key in envelope]
    rows += [(f"intensity after preprocessing: {k}", v) for k, v in (envelope.get("intensity") or {}).items()]
    return [
        "## What this expert was trained on (applicability)",
        "",
        "Applying it to an input outside these ranges (with the tolerances of "
        "`scripts/preprocess/applicability.py`) prints a `warning:` naming the mismatch; `lorkd apply --strict` "
        "refuses such inputs. Outside them its output has no evidence behind it.",
        "",
        "| property | training inputs |",
        "|---|---|",
        *[f"| {fmt(k)} | {fmt(v)} |" for k, v in rows],
        "",
    ]
