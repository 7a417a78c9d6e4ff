"""Look at what segmentation experts draw: their label maps over a volume as one PNG a clinician can read.

Issue 13: the demo experts score well on held-out cubes of their training volume (MNI152), but a number is not
a picture. This renders each expert's label map, made exactly as `lorkd apply` makes it (the kind's `apply`,
written in the input's geometry and read back), over the image: one row per task, the axial, coronal and sagittal
planes through the centre of the labelled region (or `--slices N` axial slices), in radiological display order
(`core.io.orientation`: axial with anterior up and the patient's right on the left, coronal and sagittal with
superior up), each voxel's physical aspect kept. Run it on the training volume and on another head, e.g.
Colin27 (/usr/share/mricron/templates/ch2.nii.gz, scalp and skull included), to see whether the experts follow
the anatomy. Only numpy and Pillow draw.

    python -m benchmarks.overlays RUN_OR_BUNDLES --image VOLUME --out OUT.png [--title TEXT] [--slices N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.io import read_volume
from core.io.orientation import display_axes, to_display
from core.kinds import kind_of_bundle

PANEL_H = 256
GAP = 6
CAPTION_H = 22
ALPHA = 0.45
COLOURS = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], dtype=np.float32)


def find_bundles(root: Path) -> list[Path]:
    """The expert bundles (folders with configs/metadata.json) of a run folder (RUN/experts/*) or bundle folder."""
    base = root / "experts" if (root / "experts").is_dir() else root
    if (base / "configs" / "metadata.json").is_file():
        return [base]
    return sorted(p for p in base.iterdir() if (p / "configs" / "metadata.json").is_file())


def bundle_labels(bundle: Path, record: dict) -> tuple[str, dict[int, str]]:
    """(task name, {label value: name}) from the bundle's labels.json, else from the apply record."""
    try:
        info = json.loads((bundle / "labels.json").read_text())
        return str(info.get("task") or bundle.name), {int(x["index"]): str(x["name"]) for x in info["labels"]}
    except (OSError, ValueError, KeyError, TypeError):
        return str(record.get("task") or bundle.name), {int(k): str(v) for k, v in record.get("labels", {}).items()}


def colour(value: int) -> np.ndarray:
    return COLOURS[(value - 1) % len(COLOURS)]


def window(image: np.ndarray) -> np.ndarray:
    """The image scaled to [0, 255] between its 1st and 99th percentiles."""
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255


def planes(display: np.ndarray, centre: tuple[int, int, int], spacing: tuple[float, float, float],
           slices: list[int] | None) -> list[tuple[str, np.ndarray, float]]:
    """(name, 2D plane with row 0 at the top, row/column spacing ratio) of a display-ordered (z, y, x) array:
    display z runs inferior -> superior, y anterior -> posterior, x the patient's right -> left."""
    sx, sy, sz = spacing
    if slices is not None:
        return [(f"axial z={k}", display[k], sy / sx) for k in slices]
    z, y, x = centre
    return [("axial", display[z], sy / sx), ("coronal", display[::-1, y, :], sz / sx),
            ("sagittal", display[::-1, :, x], sz / sy)]


def resize(plane: np.ndarray, aspect: float, nearest: bool) -> np.ndarray:
    """`plane` scaled to PANEL_H rows, its width following the physical row/column spacing ratio `aspect`."""
    rows, cols = plane.shape
    width = max(1, round(PANEL_H * cols / (rows * aspect)))
    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((width, PANEL_H), mode))


def render_panel(image: np.ndarray, labels: np.ndarray | None, aspect: float) -> np.ndarray:
    """One RGB panel: the windowed image in grey, each label value a translucent colour with an opaque outline."""
    grey = resize(image, aspect, nearest=False)
    rgb = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2)
    if labels is not None:
        lab = np.rint(resize(labels, aspect, nearest=True)).astype(np.int32)
        edge = np.zeros(lab.shape, dtype=bool)
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        for value in np.unique(lab[lab > 0]):
            mask = lab == value
            rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * colour(int(value))
            rgb[mask & edge] = colour(int(value))
    return rgb.astype(np.uint8)


def compose(rows: list[tuple[str, list[tuple[str, np.ndarray]], dict[int, str]]], title: str) -> Image.Image:
    """The figure: a title, then per row a caption line over its panels (with the legend of its label names)."""
    font = ImageFont.load_default(size=14)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [sum(p.shape[1] for _, p in panels) + GAP * (len(panels) + 1)
              + sum(25 + int(measure.textlength(n, font=font)) for v, n in names.items() if v > 0)
              for _, panels, names in rows]
    canvas = Image.new("RGB", (max(widths + [400]), CAPTION_H + len(rows) * (CAPTION_H + PANEL_H + GAP) + GAP))
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 3), title, fill=(255, 255, 255), font=font)
    top = CAPTION_H
    for name, panels, names in rows:
        left = GAP
        for plane, panel in panels:
            draw.text((left, top + 3), f"{name} - {plane}", fill=(255, 255, 255), font=font)
            canvas.paste(Image.fromarray(panel), (left, top + CAPTION_H))
            left += panel.shape[1] + GAP
        for value, label in names.items():
            if value > 0:
                fill = tuple(int(c) for c in colour(value))
                draw.rectangle((left, top + 5, left + 11, top + 16), fill=fill)
                draw.text((left + 15, top + 3), label, fill=fill, font=font)
                left += 25 + int(draw.textlength(label, font=font))
        top += CAPTION_H + PANEL_H + GAP
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", type=Path, help="a finished run folder (RUN/experts/*) or a folder of bundles")
    parser.add_argument("--image", type=Path, required=True, help="the volume to segment and show")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default=None, help="the figure's title (default: image and bundles)")
    parser.add_argument("--slices", type=int, default=None, help="N axial slices per task instead of 3 planes")
    args = parser.parse_args(argv)
    bundles = find_bundles(args.bundles) if args.bundles.is_dir() else []
    if not bundles:
        parser.error(f"no expert bundles (folders with configs/metadata.json) under {args.bundles}")
    volume = read_volume(args.image)
    perm, flips = display_axes(volume.direction, volume.shape_xyz)
    spacing = tuple(volume.spacing[perm[w]] for w in range(3))
    image = to_display(window(volume.array), perm, flips)
    tasks: list[tuple[str, np.ndarray, dict[int, str]]] = []
    with tempfile.TemporaryDirectory(prefix="overlays-") as tmp:
        for bundle in bundles:
            out = Path(tmp) / f"{bundle.name}.nii.gz"
            record = kind_of_bundle(bundle).apply(bundle, args.image, out)
            labels = to_display(read_volume(out).array, perm, flips)
            task, names = bundle_labels(bundle, record)
            tasks.append((task, labels, names))
            print(f"{task}: {np.count_nonzero(labels) / labels.size:.4f} of the voxels labelled "
                  + ", ".join(f"{names.get(v, v)} {np.mean(labels == v):.4f}" for v in np.unique(labels) if v))
    union = np.any([labels > 0 for _, labels, _ in tasks], axis=0)
    found = np.argwhere(union)
    centre = tuple(int(c) for c in (found.mean(axis=0) if len(found) else np.array(image.shape) // 2))
    # the labelled slices' 1st-99th percentiles, so stray voxels at the volume's faces do not stretch the range
    z_range = np.percentile(found[:, 0], [1, 99]) if len(found) else (0, image.shape[0] - 1)
    slices = None
    if args.slices:
        slices = [int(round(z)) for z in np.linspace(*z_range, args.slices + 2)[1:-1]]
    rows = [("image", [(n, render_panel(p, None, a)) for n, p, a in planes(image, centre, spacing, slices)], {})]
    for task, labels, names in tasks:
        label_planes = planes(labels, centre, spacing, slices)
        panels = [(n, render_panel(p, lp, a)) for (n, p, a), (_, lp, _) in
                  zip(planes(image, centre, spacing, slices), label_planes, strict=True)]
        rows.append((task, panels, names))
    title = args.title or f"{args.image.name}: experts of {args.bundles}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compose(rows, title).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
