"""The image viewer's state and arithmetic, without Qt (napari's components / _qt split): the volume in display
order, the crosshair, slices and their counters, the voxel readout, window/level and the label-map overlay.

The Qt views (`app.viewer.slice_view`, `app.viewer.widget`) only render this model and forward input to it; a
test imports this module and checks that no Qt or pyqtgraph module is loaded.

Display convention (radiological, as DICOM viewers show it): the volume's index axes (i, j, k) are matched to the
nearest patient axes through the direction cosines (`core.io.display_axes`, the rule the classification experts'
reader uses too) and shown without resampling, so the axial view has anterior at the top and the patient's right
on the left of the screen; coronal and sagittal views have superior at the top (sagittal: anterior on the left).
A single slice is shown alone, in its own plane (a coronal slice with superior at the top). The letters on each
side come from the direction cosines of what is shown (an oblique volume gets two letters, e.g. "LA"). World
coordinates are LPS millimetres (the DICOM / ITK convention), labelled so in the readout.

Slice counters and the readout agree: both give 0-based voxel indices of the volume as loaded (i, j, k, the
array's own grid, whichever way the display flips it): the coronal counter "j = 154 (0–232)" is the j of the
readout's "voxel (i, j, k)". A 2D picture without patient orientation (a PNG/JPEG/BMP/TIFF photograph or a 2D
.npy array: its geometry is made up, `core.io.images`) gets no plane name, no orientation letters and no LPS
position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import DataError
from core.io import Volume, display_axes, orientation_code, to_display
from core.io.images import IMAGE_2D

__all__ = [
    "CUSTOM",
    "META_FIELDS",
    "PALETTE",
    "PLANES",
    "PRESETS",
    "DisplayAxes",
    "Overlay",
    "Plane",
    "ViewerModel",
    "direction_letters",
    "plane_image",
    "rgba",
]

# name -> (window, level); None = 1st-99th percentile of the volume
PRESETS: dict[str, tuple[float, float] | None] = {
    "Auto (1-99 %)": None,
    "CT brain 80/40": (80.0, 40.0),
    "CT abdomen 400/40": (400.0, 40.0),
    "CT lung 1500/-600": (1500.0, -600.0),
    "CT bone 1800/400": (1800.0, 400.0),
}
CUSTOM = "Custom"

# ITK-SNAP-like label colours for labels without a given colour (label value -> colour, cycled)
PALETTE = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 239, 213),
    (0, 0, 205), (205, 133, 63), (210, 180, 140), (102, 205, 170), (0, 0, 128), (0, 139, 139),
    (46, 139, 87), (255, 228, 225), (106, 90, 205), (221, 160, 221), (233, 150, 122), (165, 42, 42),
]
META_FIELDS = ("Modality", "Description", "Source", "Size", "Spacing", "Origin", "Orientation", "Values")
AXIS_NAMES = ("i", "j", "k")
_UNORIENTED_FORMATS = (*IMAGE_2D, ".npy")  # pictures without a patient geometry (core.io.images)
_POSITIVE = "LPS"  # LPS: +x toward the patient's left, +y posterior, +z superior
_NEGATIVE = "RAI"


# --------------------------------------------------------------------------------------------- geometry
def direction_letters(vector: np.ndarray, threshold: float = 0.25) -> str:
    """Patient side a direction (LPS) points to: "L", "P", ... or two/three letters for an oblique one,
    strongest first (components below `threshold` of a unit vector are left out)."""
    v = np.asarray(vector, dtype=float)
    order = np.argsort(-np.abs(v))
    letters = [(_POSITIVE if v[a] > 0 else _NEGATIVE)[a] for a in order if abs(v[a]) >= threshold]
    return "".join(letters) or "?"


@dataclass(frozen=True)
class DisplayAxes:
    """How the volume's index axes (i, j, k) map to the display axes x (R->L), y (A->P), z (I->S), as
    `core.io.display_axes` says (a single coronal or sagittal slice is shown in its own plane as x and y).

    `world_of[c]`: the display axis (0 x, 1 y, 2 z) index axis c is shown along; `flip[c]`: index axis c runs
    against it; `sizes`: (n_i, n_j, n_k); `vectors[:, w]`: LPS direction of increasing display index along
    display axis w. The display array is a view (no copy) indexed [z, y, x].
    """

    world_of: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    sizes: tuple[int, int, int]
    spacing: tuple[float, float, float]
    vectors: np.ndarray

    @classmethod
    def from_volume(cls, volume: Volume) -> DisplayAxes:
        """The display axes of `volume` (a degenerate direction is treated as the identity)."""
        array = volume.array
        sizes = (int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
        m = np.asarray(volume.direction, dtype=float).reshape(3, 3)  # m[world, index axis]
        if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-6:
            m = np.eye(3)
        perm, flips = display_axes(m, sizes)  # display axis w is index axis perm[w]
        world_of = tuple(perm.index(c) for c in range(3))
        flip = tuple(flips[world_of[c]] for c in range(3))
        vectors = np.zeros((3, 3))
        for c in range(3):
            vectors[:, world_of[c]] = m[:, c] * (-1.0 if flip[c] else 1.0)
        spacing = tuple(float(s) for s in volume.spacing)
        return cls(world_of, flip, sizes, spacing, vectors)

    def index_axis(self, w: int) -> int:
        """The index axis (0 i, 1 j, 2 k) shown along display axis w."""
        return self.world_of.index(w)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Display sizes along (x, y, z)."""
        return tuple(self.sizes[self.index_axis(w)] for w in range(3))

    @property
    def display_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along display (x, y, z)."""
        return tuple(abs(self.spacing[self.index_axis(w)]) or 1.0 for w in range(3))

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """View of a (k, j, i[, c]) array indexed [z, y, x(, c)] in display order."""
        perm = [self.index_axis(w) for w in range(3)]
        return to_display(array, perm, [self.flip[c] for c in perm])

    def to_index(self, display: tuple[int, int, int]) -> tuple[int, int, int]:
        """Display (x, y, z) -> voxel index (i, j, k)."""
        ijk = [0, 0, 0]
        for w in range(3):
            c = self.index_axis(w)
            ijk[c] = self.sizes[c] - 1 - int(display[w]) if self.flip[c] else int(display[w])
        return tuple(ijk)

    def to_display_index(self, ijk: tuple[int, int, int]) -> tuple[int, int, int]:
        """Voxel index (i, j, k) -> display (x, y, z)."""
        d = [0, 0, 0]
        for c in range(3):
            w = self.world_of[c]
            d[w] = self.sizes[c] - 1 - int(ijk[c]) if self.flip[c] else int(ijk[c])
        return tuple(d)


@dataclass(frozen=True)
class Plane:
    """One view: the display axis it cuts across, the axes shown as rows and columns, rows flipped (so that
    superior is at the top)."""

    name: str
    normal: int
    rows: int
    cols: int
    flip_rows: bool


PLANES = {
    "axial": Plane("axial", normal=2, rows=1, cols=0, flip_rows=False),
    "coronal": Plane("coronal", normal=1, rows=2, cols=0, flip_rows=True),
    "sagittal": Plane("sagittal", normal=0, rows=2, cols=1, flip_rows=True),
}


def plane_image(display: np.ndarray, plane: Plane, cursor: tuple[int, int, int]) -> np.ndarray:
    """The 2D (rows, cols[, c]) image a plane shows through `cursor` (display x, y, z) of a [z, y, x] array."""
    index: list = [slice(None)] * 3
    index[2 - plane.normal] = int(cursor[plane.normal])
    image = display[tuple(index)]  # the two remaining axes are (rows, cols) for every plane
    return image[::-1] if plane.flip_rows else image


# ---------------------------------------------------------------------------------------------- overlay
def rgba(colour: Any) -> tuple[int, int, int, int]:
    """(r, g, b[, a]) as 0-255 ints or 0-1 floats -> (r, g, b, a) 0-255 ints (alpha 255 when left out).

    Colour names and QColor are converted by the Qt side (`app.viewer.widget`) before they reach the model."""
    values = [int(round(float(v) * 255)) if isinstance(v, float) and v <= 1.0 else int(v) for v in colour]
    if len(values) == 3:
        values.append(255)
    if len(values) != 4:
        raise ValueError(f"a colour needs 3 or 4 components, got {colour!r}")
    return tuple(int(np.clip(v, 0, 255)) for v in values)


@dataclass
class Overlay:
    """A label map on the image's grid with its names, colours and per-label visibility."""

    labels: np.ndarray  # (k, j, i) as given
    keys: np.ndarray  # sorted distinct values present (always with background 0)
    index: np.ndarray  # labels -> position in keys (small int type), same shape
    names: dict[int, str]
    colours: dict[int, tuple[int, int, int, int]]
    visible: dict[int, bool]

    @classmethod
    def from_labels(
        cls,
        labels: np.ndarray,
        shape: tuple[int, ...],
        names: dict[int, str] | None = None,
        colours: dict[int, Any] | list | tuple | None = None,
    ) -> Overlay:
        """Check a (Z, Y, X) integer label map against the image `shape` and index it for display.

        names: label value -> name (others are called "label N"); colours: label value -> colour (see `rgba`), or
        a list in the order of the sorted non-zero labels; labels without one get `PALETTE` colours."""
        labels = np.asarray(labels)
        if labels.shape != tuple(shape):
            raise ValueError(f"overlay shape {labels.shape} differs from the image's {tuple(shape)}")
        if labels.dtype.kind not in "biu":
            raise ValueError(f"overlay labels must be integers, got {labels.dtype}")
        if labels.dtype.kind == "b":
            labels = labels.astype(np.uint8)
        if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
            # a whole-brain label map has ~10 M voxels: counting is O(n), np.unique sorts (~10x slower)
            counts = np.bincount(labels.reshape(-1))
            counts[0] = 1  # background is always a key
            keys = np.flatnonzero(counts).astype(np.int64)
            lut = np.zeros(len(counts), dtype=np.uint8 if len(keys) <= 256 else np.int32)
            lut[keys] = np.arange(len(keys))
            index = lut[labels]
        else:
            keys = np.unique(labels)
            if not (keys == 0).any():
                keys = np.unique(np.concatenate([keys, [0]]))
            keys = keys.astype(np.int64)
            index = np.searchsorted(keys, labels).astype(np.uint8 if len(keys) <= 256 else np.int32)
        present = [int(k) for k in keys if k != 0]
        names = {int(k): str(v) for k, v in (names or {}).items()}
        if isinstance(colours, (list, tuple)):
            colours = dict(zip(present, colours, strict=False))
        given = {int(k): rgba(v) for k, v in (colours or {}).items()}
        table = {k: given.get(k, (*PALETTE[(k - 1) % len(PALETTE)], 255)) for k in present}
        return cls(
            labels=labels,
            keys=keys,
            index=index,
            names={k: names.get(k, f"label {k}") for k in present} | names,
            colours=table,
            visible={k: True for k in present},
        )

    def table(self) -> np.ndarray:
        """RGBA lookup (len(keys), 4) uint8: background (0) and hidden labels transparent."""
        table = np.zeros((len(self.keys), 4), dtype=np.uint8)
        for pos, key in enumerate(self.keys.tolist()):
            if key != 0 and self.visible.get(key, True):
                table[pos] = self.colours[key]
        return table


# ------------------------------------------------------------------------------------------------ model
class ViewerModel:
    """One volume in display order with the crosshair, window/level and overlay state of the viewer.

    Mutators change the state only; the caller (the Qt widget) redraws. Cursor positions are display indices
    (x, y, z) (see `DisplayAxes`); `cursor_for_*` compute a new position without moving there."""

    def __init__(self) -> None:
        self.volume: Volume | None = None
        self.axes: DisplayAxes | None = None
        self.display: np.ndarray | None = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        self.window: tuple[float, float] = (1.0, 0.5)  # (width, level)
        self.preset = CUSTOM
        self.auto_range = (0.0, 1.0)  # 1st-99th percentile (the Auto preset)
        self.data_range = (0.0, 1.0)  # finite min and max
        self.overlay: Overlay | None = None
        self.overlay_display: tuple[np.ndarray, np.ndarray] | None = None  # (index as [z, y, x], RGBA table)
        self.opacity = 0.5

    # ------------------------------------------------------------------------------------------ volume
    def load(self, volume: Volume) -> None:
        """Show `volume`: display axes, value ranges, no overlay, the crosshair at the centre, the Auto preset
        (RGB: the full 0-255 or data range)."""
        array = np.asarray(volume.array)
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (3, 4)) or min(array.shape[:3]) < 1:
            raise DataError(f"cannot show an array of shape {array.shape}: expected (Z, Y, X) or (Z, Y, X, 3)")
        self.volume = volume
        self.axes = DisplayAxes.from_volume(volume)
        self.display = self.axes.to_display(array[..., :3] if array.ndim == 4 else array)
        self.overlay = None
        self.overlay_display = None
        self._compute_ranges(array)
        self.cursor = tuple(n // 2 for n in self.axes.shape)
        if self.is_rgb:
            lo, hi = self.image_levels()
            self.window = (hi - lo, (hi + lo) / 2.0)
        else:
            self.apply_preset(next(iter(PRESETS)))

    @property
    def is_rgb(self) -> bool:
        """An RGB(A) image (shown in colour, without window/level)."""
        return self.volume is not None and np.asarray(self.volume.array).ndim == 4

    @property
    def oriented(self) -> bool:
        """Whether the image has a patient orientation: False for a single-slice picture read from a PNG, JPEG,
        BMP, TIFF or .npy file (or marked `geometry: none`), whose 1 mm identity geometry is made up."""
        if self.volume is None:
            return False
        meta = self.volume.metadata or {}
        if str(meta.get("geometry", "")).lower() == "none":
            return False
        source = str(meta.get("source") or "")
        return not (self.planar and source.lower().endswith(_UNORIENTED_FORMATS))

    @property
    def planar(self) -> bool:
        """A single slice (a 2D image): only the axial view is shown (a coronal or sagittal slice in its own
        plane, see `core.io.display_axes`)."""
        return self.axes is not None and self.axes.shape[2] == 1

    def _compute_ranges(self, array: np.ndarray) -> None:
        flat = np.asarray(array).reshape(-1)
        step = max(1, flat.size // 2_000_000)  # percentiles of a sample: fast on big volumes
        sample = flat[::step].astype(np.float64)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            sample = np.zeros(1)
        lo, hi = np.percentile(sample, [1.0, 99.0])
        if hi <= lo:
            lo, hi = float(sample.min()), float(sample.max())
        if hi <= lo:
            hi = lo + 1.0
        self.auto_range = (float(lo), float(hi))
        full = np.asarray(array)
        finite = full if full.dtype.kind in "biu" else full[np.isfinite(full)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        self.data_range = (low, max(high, low + 1e-6))

    def metadata_texts(self) -> dict[str, str]:
        """What the metadata panel shows: the `META_FIELDS` and "Warnings" (one "• ..." line each, or "none")."""
        volume = self.volume
        meta = dict(volume.metadata or {})
        array = np.asarray(volume.array)
        size = (array.shape[2], array.shape[1], array.shape[0])
        warnings = [str(w) for w in (volume.warnings or [])]
        return {
            "Modality": str(meta.get("modality") or "—"),
            "Description": str(meta.get("description") or "—"),
            "Source": str(meta.get("source") or "—"),
            "Size": " × ".join(map(str, size)) + (" (RGB)" if self.is_rgb else "") + "  (i × j × k)",
            "Spacing": " × ".join(f"{float(s):.4g}" for s in volume.spacing) + " mm",
            "Origin": "(" + ", ".join(f"{float(v):.2f}" for v in volume.origin) + ") mm LPS",
            "Orientation": self._orientation_text(),
            "Values": f"{array.dtype}, {self.data_range[0]:.6g} … {self.data_range[1]:.6g}",
            "Warnings": "\n".join(f"• {w}" for w in warnings) if warnings else "none",
        }

    def _orientation_text(self) -> str:
        if not self.oriented:
            return "none (a 2D picture without patient orientation)"
        try:
            return str(orientation_code(tuple(float(v) for v in self.volume.direction)))
        except Exception:  # an odd direction must not stop the image from showing
            return "?"

    # ----------------------------------------------------------------------------------------- cursor
    def set_cursor(self, display: tuple[int, int, int]) -> tuple[int, int, int]:
        """Move the crosshair to display index (x, y, z), clipped to the volume; returns where it is."""
        shape = self.axes.shape
        self.cursor = tuple(int(np.clip(int(v), 0, shape[w] - 1)) for w, v in enumerate(display))
        return self.cursor

    def cursor_voxel(self) -> tuple[int, int, int] | None:
        """Voxel index (i, j, k) under the crosshair; None when nothing is loaded."""
        return None if self.volume is None else self.axes.to_index(self.cursor)

    def cursor_for_voxel(self, ijk: tuple[int, int, int]) -> tuple[int, int, int]:
        """The display position of voxel index (i, j, k)."""
        return self.axes.to_display_index(ijk)

    # ----------------------------------------------------------------------------------------- planes
    def plane_size(self, plane: Plane) -> tuple[int, int]:
        """(rows, cols) of the image `plane` shows."""
        shape = self.axes.shape
        return shape[plane.rows], shape[plane.cols]

    def pixel_size(self, plane: Plane) -> tuple[float, float]:
        """(width, height) in mm of one pixel of the image `plane` shows."""
        sp = self.axes.display_spacing
        return sp[plane.cols], sp[plane.rows]

    def slice_image(self, plane: Plane) -> np.ndarray:
        """The 2D image `plane` shows through the crosshair, (rows, cols) or (rows, cols, 3) (row 0 at the top)."""
        return plane_image(self.display, plane, self.cursor)

    def overlay_image(self, plane: Plane) -> np.ndarray | None:
        """The overlay's RGBA (rows, cols, 4) uint8 image for `plane`; None without an overlay."""
        if self.overlay_display is None:
            return None
        index, table = self.overlay_display
        return table[plane_image(index, plane, self.cursor)]

    def cursor_pixel(self, plane: Plane) -> tuple[int, int]:
        """(row, column) of the crosshair in the image `plane` shows."""
        row = int(self.cursor[plane.rows])
        if plane.flip_rows:
            row = self.axes.shape[plane.rows] - 1 - row
        return row, int(self.cursor[plane.cols])

    def pixel_at(self, plane: Plane, x_mm: float, y_mm: float) -> tuple[int, int]:
        """(row, column) of the pixel at position (x, y) in mm in `plane`'s image (clipped to the image)."""
        sx, sy = self.pixel_size(plane)
        n_rows, n_cols = self.plane_size(plane)
        col = int(np.clip(np.floor(x_mm / sx), 0, n_cols - 1))
        row = int(np.clip(np.floor(y_mm / sy), 0, n_rows - 1))
        return row, col

    def cursor_for_pixel(self, plane: Plane, row: int, col: int) -> tuple[int, int, int]:
        """The crosshair moved to pixel (row, col) of `plane`'s image (its slice stays)."""
        cursor = list(self.cursor)
        cursor[plane.cols] = int(col)
        cursor[plane.rows] = self.axes.shape[plane.rows] - 1 - int(row) if plane.flip_rows else int(row)
        return tuple(cursor)

    def slice_index(self, plane: Plane) -> int:
        """Which slice `plane` shows, as a position along the display axis (0 at the patient's right, anterior or
        inferior side): what the wheel steps through. The counter shows `slice_voxel` instead."""
        return int(self.cursor[plane.normal])

    def slice_count(self, plane: Plane) -> int:
        """How many slices `plane` can show."""
        return self.axes.shape[plane.normal]

    def slice_axis(self, plane: Plane) -> int:
        """The voxel index axis (0 i, 1 j, 2 k) that `plane`'s slices run along."""
        return self.axes.index_axis(plane.normal)

    def slice_flipped(self, plane: Plane) -> bool:
        """Whether the voxel index of `plane`'s slices falls as `slice_index` rises."""
        return bool(self.axes.flip[self.slice_axis(plane)])

    def slice_voxel(self, plane: Plane) -> int:
        """The voxel index (0-based, along `slice_axis`) of the slice `plane` shows: the readout's i, j or k."""
        return int(self.cursor_voxel()[self.slice_axis(plane)])

    def slice_text(self, plane: Plane) -> str:
        """The slice counter of a view: the readout's voxel index along the slice axis and its range, e.g.
        "j = 154 (0–232)" (0-based, as the readout's "voxel (i, j, k)")."""
        n = self.slice_count(plane)
        return f"{AXIS_NAMES[self.slice_axis(plane)]} = {self.slice_voxel(plane)} (0–{n - 1})"

    def cursor_for_slice_voxel(self, plane: Plane, index: int) -> tuple[int, int, int]:
        """The crosshair moved to the slice of `plane` at voxel index `index` along `slice_axis` (clipped)."""
        n = self.slice_count(plane)
        index = int(np.clip(index, 0, n - 1))
        return self.cursor_for_slice(plane, n - 1 - index if self.slice_flipped(plane) else index)

    def plane_title(self, plane: Plane) -> str:
        """The name over a view: "Axial", "Coronal", "Sagittal"; "2D image" for a picture without orientation."""
        return plane.name.capitalize() if self.oriented or self.volume is None else "2D image"

    def cursor_for_slice(self, plane: Plane, index: int) -> tuple[int, int, int]:
        """The crosshair moved to slice `index` of `plane` (clipped to the slices there are)."""
        cursor = list(self.cursor)
        cursor[plane.normal] = int(np.clip(index, 0, self.slice_count(plane) - 1))
        return tuple(cursor)

    def letters(self, plane: Plane) -> dict[str, str]:
        """Orientation letters on each side of `plane`'s image: {"top", "bottom", "left", "right"} (empty for a
        picture without patient orientation)."""
        if not self.oriented:
            return dict.fromkeys(("top", "bottom", "left", "right"), "")
        col_vec = self.axes.vectors[:, plane.cols]
        row_vec = self.axes.vectors[:, plane.rows] * (-1.0 if plane.flip_rows else 1.0)
        return {
            "top": direction_letters(-row_vec),
            "bottom": direction_letters(row_vec),
            "left": direction_letters(-col_vec),
            "right": direction_letters(col_vec),
        }

    # ---------------------------------------------------------------------------------------- readout
    def readout(self) -> dict | None:
        """Voxel index (i, j, k), world position (LPS mm), value and overlay label under the crosshair."""
        if self.volume is None:
            return None
        i, j, k = self.cursor_voxel()
        value = np.asarray(self.volume.array)[k, j, i]
        value = tuple(v.item() for v in value) if np.ndim(value) else value.item()
        world = tuple(float(v) for v in np.asarray(self.volume.index_to_world((i, j, k)), dtype=float))
        label = None
        label_name = ""
        if self.overlay is not None:
            label = int(self.overlay.labels[k, j, i])
            label_name = self.overlay.names.get(label, f"label {label}") if label != 0 else ""
        return {"index": (i, j, k), "world": world, "value": value, "label": label, "label_name": label_name}

    def readout_text(self) -> str:
        """The readout line under the views."""
        r = self.readout()
        if r is None:
            return "No image loaded"
        value = r["value"]
        if isinstance(value, tuple):
            shown = "(" + ", ".join(f"{v:.6g}" for v in value) + ")"
        else:
            shown = f"{value:.6g}"
        text = f"voxel (i, j, k) = ({r['index'][0]}, {r['index'][1]}, {r['index'][2]})    "
        if self.oriented:  # a photograph's made-up geometry is no patient position
            text += f"LPS (mm) = ({r['world'][0]:.2f}, {r['world'][1]:.2f}, {r['world'][2]:.2f})    "
        text += f"value = {shown}"
        if r["label"] is not None:
            text += f"    label = {r['label']} {r['label_name'] or '(background)'}"
        return text

    # ---------------------------------------------------------------------------------- window / level
    def window_level(self) -> tuple[float, float]:
        """(window width, level) now shown."""
        return self.window

    def image_levels(self) -> tuple[float, float]:
        """(low, high) display levels of the image (RGB: 0-255 for 8 bits, else the data range)."""
        if self.is_rgb:
            return (0.0, 255.0) if self.volume.array.dtype == np.uint8 else self.data_range
        w, c = self.window
        return (c - w / 2.0, c + w / 2.0)

    def drag_rate(self) -> float:
        """Window/level change per screen pixel of a right/middle drag."""
        lo, hi = self.data_range
        return max((hi - lo) / 500.0, 1e-6)

    def apply_preset(self, name: str) -> None:
        """Apply a preset of `PRESETS` (Auto = 1st-99th percentile of the volume); `CUSTOM` changes nothing."""
        if name == CUSTOM:
            self.preset = CUSTOM
            return
        if name not in PRESETS:
            raise ValueError(f"unknown window/level preset {name!r}; choose from {list(PRESETS)}")
        preset = PRESETS[name]
        if preset is None:
            lo, hi = self.auto_range
            preset = (hi - lo, (hi + lo) / 2.0)
        self.set_window_level(*preset, preset=name)

    def set_window_level(self, window: float, level: float, preset: str = CUSTOM) -> None:
        """Show intensities level ± window / 2 (from black to white); `preset` names where they came from."""
        self.window = (max(float(window), 1e-6), float(level))
        self.preset = preset

    def window_for_drag(self, start: tuple[float, float], dx: float, dy: float) -> tuple[float, float]:
        """(window, level) after dragging (dx, dy) screen pixels from `start`: right widens, up raises the level."""
        w0, l0 = start
        rate = self.drag_rate()
        return max(w0 + dx * rate, rate), l0 - dy * rate

    # ---------------------------------------------------------------------------------------- overlay
    def set_overlay(
        self,
        labels: np.ndarray,
        names: dict[int, str] | None = None,
        colours: dict[int, Any] | list | tuple | None = None,
    ) -> None:
        """Show a (Z, Y, X) integer label map on the image's grid (see `Overlay.from_labels`); label 0 is
        background (transparent)."""
        if self.volume is None:
            raise RuntimeError("load an image before setting an overlay")
        shape = np.asarray(self.volume.array).shape[:3]
        self.overlay = Overlay.from_labels(labels, shape, names, colours)
        self._refresh_overlay_display()

    def clear_overlay(self) -> None:
        """Remove the overlay."""
        self.overlay = None
        self.overlay_display = None

    def set_label_visible(self, label: int, visible: bool) -> None:
        """Show or hide one label of the overlay."""
        if self.overlay is None or int(label) not in self.overlay.visible:
            raise KeyError(f"no label {label} in the overlay")
        self.overlay.visible[int(label)] = bool(visible)
        self._refresh_overlay_display()

    def label_visible(self, label: int) -> bool:
        """Whether a label of the overlay is shown (False for labels not in it)."""
        return bool(self.overlay is not None and self.overlay.visible.get(int(label), False))

    def set_opacity(self, opacity: float) -> None:
        """Opacity of the overlay, 0-1."""
        self.opacity = float(np.clip(opacity, 0.0, 1.0))

    @property
    def overlay_labels(self) -> np.ndarray | None:
        """The label map (Z, Y, X) shown, or None."""
        return None if self.overlay is None else self.overlay.labels

    @property
    def overlay_names(self) -> dict[int, str]:
        """Label value -> name of the overlay's labels (empty without an overlay)."""
        return {} if self.overlay is None else dict(self.overlay.names)

    def _refresh_overlay_display(self) -> None:
        overlay = self.overlay
        if overlay is None or self.axes is None:
            self.overlay_display = None
        else:
            self.overlay_display = (self.axes.to_display(overlay.index), overlay.table())

    # ------------------------------------------------------------------------------------ for experts
    def current_slice_image(self) -> np.ndarray | None:
        """The 2D array the axial view shows, (H, W) or (H, W, 3), in the image's own dtype (row 0 at the
        top, patient's right on the left); None when nothing is loaded."""
        if self.volume is None:
            return None
        return np.ascontiguousarray(self.slice_image(PLANES["axial"]))

    def current_slice_description(self) -> str:
        """Where the axial slice comes from, e.g. 'ct.nii.gz (axial slice 12 of 40)'."""
        if self.volume is None:
            return ""
        source = str((self.volume.metadata or {}).get("source") or "image")
        n = self.axes.shape[2]
        return source if n == 1 else f"{source} (axial slice {self.cursor[2] + 1} of {n})"
