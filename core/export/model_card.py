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
                f"| {fmt(name)} | {fmt(pair.get('expert', '-'))} | {fmt(pair.get('teacher', '-'))} |"
            )
    if other:
        lines += ["", "| field | value |", "|---|---|"]
        lines += [f"| {fmt(k)} | {fmt(v)} |" for k, v in other.items()]
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
