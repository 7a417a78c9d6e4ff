"""Applicability: what an expert was trained on (its envelope, recorded in its bundle at export) and the check of
an input against it, so that an expert applied to something it never saw says so instead of answering confidently.

Bundle-portable (the standard library and numpy only): export copies this file into every bundle, and the bundle's
entry point runs the same check as `lorkd apply` and the app.

An observation describes one input as the expert sees it (`observe`): the modality where the file records it
(DICOM), the channels, the voxel spacing and field of view in mm on the canonical (RAS) axes, the size in
voxels/pixels, the orientation code and whether the volume is oblique, and intensity statistics *after* the
expert's preprocessing (share of background voxels, foreground quantiles, colour). The envelope (`envelope`)
summarises the training inputs' observations: the values seen, or per-axis/per-statistic ranges (min..max over
a few volumes; the 1st..99th percentile over many images). `check` compares an observation with an envelope,
with the tolerances below, and returns one plain sentence per mismatch (empty: within the envelope).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

VERSION = 1
BACKGROUND = 0.02  # preprocessed intensity (in [0, 1]) at or below which a voxel counts as background
MAX_VALUES = 2_000_000  # voxels a statistic looks at (an even subsample of bigger inputs)
SPACING_FACTOR = 1.5  # voxel size up to this factor finer or coarser than the training range
EXTENT_FACTOR = 2.0  # field of view up to this factor smaller or larger
SIZE_FACTOR = (0.5, 8.0)  # 2D images: up to 2x smaller or 8x larger than the training images
INTENSITY_MARGIN = {"background": 0.15, "p10": 0.12, "p50": 0.12, "p90": 0.12, "colour": 0.08}
OBLIQUE_DEGREES = 1.0  # a volume whose axes are further than this from the nearest patient axes is oblique
ROBUST_FROM = 20  # with at least this many training inputs, ranges are their 1st..99th percentiles
STATISTICS = {
    "background": "share of background voxels",
    "p10": "10th percentile of the foreground intensity",
    "p50": "median foreground intensity",
    "p90": "90th percentile of the foreground intensity",
    "colour": "colourfulness",
}


def intensity_stats(image: np.ndarray, channel_axis: int | None = None) -> dict[str, float]:
    """Statistics of one preprocessed input (values about [0, 1]): background share, foreground quantiles and,
    with a channel axis of 3 channels, colourfulness (mean spread between channels)."""
    a = np.asarray(image, dtype=np.float32)
    colour = 0.0
    if channel_axis is not None:
        if a.shape[channel_axis] >= 3:
            rgb = np.moveaxis(a, channel_axis, 0)[:3]
            colour = float(np.mean(rgb.max(axis=0) - rgb.min(axis=0)))
        a = a.mean(axis=channel_axis)
    flat = a.ravel()
    if flat.size > MAX_VALUES:
        flat = flat[:: int(np.ceil(flat.size / MAX_VALUES))]
    fg = flat[flat > BACKGROUND]
    q = np.quantile(fg, [0.1, 0.5, 0.9]) if fg.size else np.zeros(3)
    return {"background": float(1 - fg.size / max(flat.size, 1)), "p10": float(q[0]), "p50": float(q[1]),
            "p90": float(q[2]), "colour": colour}


def axis_code(direction: Sequence[float]) -> tuple[str, bool]:
    """(orientation code such as "LPS" of the voxel axes i, j, k, whether the axes are oblique) of a 3x3 direction
    matrix (columns: the axes' directions in LPS patient space, as SimpleITK gives it, row-major)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code, oblique = "", False
    for axis in range(3):
        column = d[:, axis] / max(float(np.linalg.norm(d[:, axis])), 1e-12)
        k = int(np.argmax(np.abs(column)))
        code += letters[k][0] if column[k] > 0 else letters[k][1]
        oblique |= bool(np.degrees(np.arccos(min(1.0, abs(float(column[k]))))) > OBLIQUE_DEGREES)
    return code, oblique


def observe(*, channels: int, intensity: Mapping[str, float], modality: str | None = None,
            spacing_mm: Sequence[float] | None = None, size: Sequence[int] | None = None,
            direction: Sequence[float] | None = None) -> dict[str, Any]:
    """One input as the expert sees it (see the module docstring). `spacing_mm` and `size` on the canonical axes
    (3D) or as (height, width) pixels (2D, no spacing); `direction`: the 3x3 direction of a volume."""
    obs: dict[str, Any] = {"channels": int(channels), "intensity": {k: float(v) for k, v in intensity.items()}}
    if modality:
        obs["modality"] = str(modality).upper()
    if size is not None:
        obs["size"] = [int(n) for n in size]
    if spacing_mm is not None:
        obs["spacing_mm"] = [float(s) for s in spacing_mm]
        if size is not None:
            obs["extent_mm"] = [float(s * n) for s, n in zip(spacing_mm, size, strict=True)]
    if direction is not None:
        obs["orientation"], obs["oblique"] = axis_code(direction)
    return obs


def _range(values: Iterable[float]) -> list[float]:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size >= ROBUST_FROM:
        return [float(np.percentile(v, 1)), float(np.percentile(v, 99))]
    return [float(v.min()), float(v.max())]


def envelope(observations: Sequence[Mapping[str, Any]], modality: str | None = None) -> dict[str, Any]:
    """The envelope of the training inputs' observations; `modality`: the modality the user declared for the task
    (added to the ones the files record)."""
    if not observations:
        raise ValueError("an envelope needs at least one training input")
    out: dict[str, Any] = {"version": VERSION, "inputs": len(observations),
                           "channels": sorted({int(o["channels"]) for o in observations})}
    modalities = {str(o["modality"]) for o in observations if o.get("modality")}
    if modality:
        modalities.add(str(modality).upper())
    out["modality"] = sorted(modalities)
    for key in ("spacing_mm", "extent_mm", "size"):
        if all(key in o for o in observations):
            axes = len(observations[0][key])
            out[key] = [_range(o[key][a] for o in observations) for a in range(axes)]
    if all("orientation" in o for o in observations):
        out["orientation"] = sorted({str(o["orientation"]) for o in observations})
        out["oblique"] = any(bool(o["oblique"]) for o in observations)
    out["intensity"] = {k: _range(o["intensity"][k] for o in observations) for k in STATISTICS}
    return out


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


def _span(ranges: Sequence[Sequence[float]]) -> str:
    lo, hi = [r[0] for r in ranges], [r[1] for r in ranges]
    return _mm(lo) if np.allclose(lo, hi) else f"{_mm(lo)} to {_mm(hi)}"


def _outside(value: float, lo: float, hi: float, factor: float) -> bool:
    return value < lo / factor or value > hi * factor


def check(env: Mapping[str, Any] | None, obs: Mapping[str, Any]) -> list[str]:
    """One sentence per way the observed input lies outside the expert's training envelope (empty: none); no
    envelope (an older bundle): one sentence saying the input cannot be checked."""
    if not env:
        return ["this expert's bundle records no training envelope (exported by an older version): whether the "
                "input resembles its training data cannot be checked"]
    found: list[str] = []
    known = env.get("modality") or []
    if known and obs.get("modality") and obs["modality"] not in known:
        found.append(f"modality {obs['modality']}: the expert was trained on {', '.join(known)} only")
    if obs["channels"] not in env.get("channels", [obs["channels"]]):
        found.append(f"{obs['channels']} channel(s): the expert was trained on "
                     f"{' or '.join(str(c) for c in env['channels'])}-channel inputs")
    if "spacing_mm" in env and "spacing_mm" in obs and any(
            _outside(v, lo, hi, SPACING_FACTOR) for v, (lo, hi) in zip(obs["spacing_mm"], env["spacing_mm"],
                                                                         strict=True)):
        found.append(f"voxel size {_mm(obs['spacing_mm'])} mm: the expert was trained on "
                     f"{_span(env['spacing_mm'])} mm")
    if "extent_mm" in env and "extent_mm" in obs and any(
            _outside(v, lo, hi, EXTENT_FACTOR) for v, (lo, hi) in zip(obs["extent_mm"], env["extent_mm"],
                                                                        strict=True)):
        found.append(f"field of view {_mm(obs['extent_mm'])} mm: the expert was trained on "
                     f"{_span(env['extent_mm'])} mm")
    if "size" in env and "size" in obs and "spacing_mm" not in env:
        small, large = SIZE_FACTOR
        if any(v < lo * small or v > hi * large for v, (lo, hi) in zip(obs["size"], env["size"], strict=True)):
            found.append(f"image of {_mm(obs['size'])} pixels: the expert was trained on "
                         f"{_span(env['size'])} pixel images")
    if obs.get("oblique") and env.get("oblique") is False:
        found.append("an oblique volume: the expert was trained on axis-aligned volumes (it sees this one "
                     "resampled to the nearest axes)")
    differ = []
    for key, (lo, hi) in env.get("intensity", {}).items():
        value, margin = obs["intensity"].get(key), INTENSITY_MARGIN.get(key, 0.1)
        if value is None or key == "colour" and obs["channels"] < 3:
            continue
        if value < lo - margin or value > hi + margin:
            shown = (lambda v: f"{100 * v:.0f}%") if key == "background" else (lambda v: f"{v:.2f}")
            trained = shown(lo) if abs(hi - lo) < 1e-6 else f"{shown(lo)} to {shown(hi)}"
            differ.append(f"{STATISTICS[key]} {shown(value)} (training: {trained})")
    if differ:
        found.append("intensities unlike the training inputs' after the same preprocessing: " + "; ".join(differ))
    return found


def _is_range(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
            and value[0] <= value[1])


def invalid(env: Any) -> str | None:
    """What is wrong with a recorded envelope (a bundle's `lorkd.envelope`), in a few words; None: well formed."""
    if not isinstance(env, dict):
        return "not an object"
    if not (isinstance(env.get("channels"), list) and env["channels"]
            and all(isinstance(c, int) and c > 0 for c in env["channels"])):
        return "channels: not a list of channel counts"
    if not (isinstance(env.get("modality", []), list) and all(isinstance(m, str) for m in env.get("modality", []))):
        return "modality: not a list of modality codes"
    for key, axes in (("spacing_mm", 3), ("extent_mm", 3), ("size", 2 if "spacing_mm" not in env else 3)):
        if key in env and not (isinstance(env[key], list) and len(env[key]) == axes
                               and all(_is_range(r) for r in env[key])):
            return f"{key}: not {axes} ranges [low, high]"
    if "orientation" in env and not (isinstance(env["orientation"], list)
                                     and all(isinstance(c, str) for c in env["orientation"])):
        return "orientation: not a list of orientation codes"
    if "oblique" in env and not isinstance(env["oblique"], bool):
        return "oblique: not true/false"
    intensity = env.get("intensity")
    if not (isinstance(intensity, dict) and set(intensity) <= set(STATISTICS)
            and all(_is_range(r) for r in intensity.values())):
        return f"intensity: not ranges [low, high] of {', '.join(STATISTICS)}"
    return None
