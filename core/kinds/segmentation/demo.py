"""The embedded 3D segmentation demo: the MNI152 2009a T1 brain and tissue maps shipped inside nilearn's package
data (found by path through `importlib.util.find_spec`; nilearn itself is never imported: it is slow and pulls
pandas and scikit-learn). Template data: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University (permissive notice; keep it with the docs / about box).

Tasks (binary, one expert each), derived from the tissue probability maps (0-255) on the T1's grid:
- grey_matter: GM probability >= 50 % and >= WM
- white_matter: WM probability >= 50 % and > GM
- csf: the rest of the brain (brain minus GM and WM)
- brain: brain mask = T1 > 5 % of its maximum, holes filled, largest component
Held out from training: 20 % of the brain's 24 mm cubes for the test and 10 % for validation (the same cubes for
every task: `core.kinds.segmentation.data.split_regions`); teacher, experts and single-task baselines are tested on
the test cubes of the native 1 mm grid, through the exported bundle's code path.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError

T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
TASKS = {"grey_matter": "grey matter", "white_matter": "white matter", "csf": "CSF", "brain": "brain"}
DEMO_NOTE = (
    "The embedded demo: 3D segmentation of the MNI152 2009a brain MRI shipped in nilearn's package data "
    "(four tasks: grey matter, white matter, CSF, brain mask; the T1 volume is loaded in the Viewer). A MONAI "
    "UNet foundation model is pre-trained on them, then decomposed into a 5x lighter UNet backbone with low-rank "
    "task experts; foundation model, experts and single-task baselines are tested on held-out regions of the brain "
    "that no model trained on (Dice, HD95, a 95% interval). Press Start; about five minutes on a laptop CPU. "
    "The template is skull-stripped, so are the volumes these experts understand. Research use only."
)
NOTICE = ("MNI ICBM152 2009a template: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
          "Montreal Neurological Institute, McGill University (shipped in nilearn's package data)")


def mni_files() -> dict[str, Path]:
    """Paths of the T1, GM and WM files inside the installed nilearn package (not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.origin:
        raise DataError("the segmentation demo needs the nilearn package (pip install nilearn) for its MNI152 "
                        "template files; or run `lorkd demo --kind classification`")
    folder = Path(spec.origin).parent / "datasets" / "data"
    files = {"t1": folder / T1, "gm": folder / GM, "wm": folder / WM}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"nilearn's MNI152 template file {missing[0]} is missing")
    return files


def tissue_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> dict[str, np.ndarray]:
    """The four demo label maps (uint8 0/1) from the T1 and the GM/WM probability maps (0-255)."""
    from scipy import ndimage

    t1 = t1.astype(np.float32)
    brain = ndimage.binary_fill_holes(t1 > 0.05 * float(t1.max()))
    comp, n = ndimage.label(brain)
    if n > 1:
        sizes = ndimage.sum(brain, comp, range(1, n + 1))
        brain = comp == (1 + int(np.argmax(sizes)))
    g, w = gm.astype(np.float32), wm.astype(np.float32)
    grey = brain & (g >= 128) & (g >= w)
    white = brain & (w >= 128) & (w > g)
    csf = brain & ~grey & ~white
    return {"grey_matter": grey, "white_matter": white, "csf": csf, "brain": brain}


def build_seg_demo(out_dir: str | os.PathLike, quick: bool = False) -> dict[str, Any]:
    """Write the demo label maps into `out_dir` (reused when present) and return the demo config mapping."""
    from core.io import read_volume, write_label_map

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = mni_files()
    paths = {task: out / f"mni152_{task}.nii.gz" for task in TASKS}
    if not all(p.is_file() for p in paths.values()):
        t1 = read_volume(files["t1"])
        gm, wm = read_volume(files["gm"]).array, read_volume(files["wm"]).array
        if gm.shape != t1.array.shape or wm.shape != t1.array.shape:
            raise DataError("nilearn's MNI152 tissue maps are not on the T1's grid")
        for task, mask in tissue_labels(t1.array, gm, wm).items():
            write_label_map(mask.astype(np.uint8), t1, paths[task])
    return {
        "name": "demo-seg",
        "kind": "segmentation",
        "tasks": [
            {"name": task, "images": [str(files["t1"])], "labels": [str(paths[task])], "label_names": {1: label},
             "modality": "MR"}
            for task, label in TASKS.items()
        ],
        "data": {
            "spacing": [3.0, 3.0, 3.0] if quick else [1.5, 1.5, 1.5],
            "patch_size": [24, 24, 24],
            "intensity": {"mode": "percentile", "low": 0.5, "high": 99.5},
            "samples_per_volume": 12 if quick else 200,
            "pos_neg_ratio": 2.0,
            "test_fraction": 0.2,
            "val_fraction": 0.1,
            "region_mm": 24.0,
        },
        "teacher": {"arch": "unet", "channels": [24, 48, 96, 192], "res_units": 0, "epochs": 2 if quick else 4},
        "backbone": {"arch": "unet", "channels": [8, 16, 32, 64], "res_units": 0, "rank": 2,
                     "decoder_rank_factor": 2},
        "train": {"epochs": 2 if quick else 13, "batch_size": 4, "optimizer": "adamw", "lr": 0.003,
                  "kd_weight": 0.5, "temperature": 1.0, "log_every": 10},
        "seed": 0,
    }
