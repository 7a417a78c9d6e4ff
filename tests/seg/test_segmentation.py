"""3D segmentation experts end to end on tiny synthetic volumes: decomposition, sliding-window apply in the
input's geometry, flip equivariance through the direction matrix, and bundle run == lorkd apply."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.io import Volume, read_volume, write_volume
from core.kinds import load_config
from core.kinds.segmentation.apply import segment_volume
from core.kinds.segmentation.models import build_seg_backbone
from core.kinds.segmentation.nets import is_decoder
from core.kinds.segmentation.synthetic import synthetic_volume, write_synthetic_task
from core.preprocess import volume as prep
from tests.bundle_env import bundle_argv, isolated_env, project_importable


def _config(root: Path, epochs: int = 3) -> dict:
    a = write_synthetic_task(root / "a", 4, "sphere", seed=1)
    b = write_synthetic_task(root / "b", 4, "cube", seed=2)
    return {
        "name": "tiny-seg", "kind": "segmentation",
        "tasks": [
            {"name": "balls", "images": str(a[0]), "labels": str(a[1]), "label_names": {1: "ball"}},
            {"name": "cubes", "images": str(b[0]), "labels": str(b[1]), "label_names": {1: "shell", 2: "core"}},
        ],
        "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 24,
                 "test_fraction": 0.25, "val_fraction": 0.25},
        "teacher": {"channels": [8, 16, 32], "epochs": epochs},
        "backbone": {"channels": [4, 8, 16]},
        "train": {"epochs": epochs, "batch_size": 4, "lr": 0.01},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from core.train.pipeline import Pipeline

    root = tmp_path_factory.mktemp("seg")
    config = load_config(_config(root))
    summary = Pipeline(config, root / "run").run()
    return root, summary


def test_config_kind_and_defaults(tmp_path):
    raw = _config(tmp_path, 1)
    config = load_config(raw)
    assert config.kind == "segmentation" and config.teacher.arch == "unet" and config.backbone.decoder_rank_factor == 2
    assert config.tasks[1].class_names == ["background", "shell", "core"]
    with pytest.raises(ConfigError, match="label_names"):
        load_config({**raw, "tasks": [{**raw["tasks"][0], "label_names": {2: "x"}}]})
    with pytest.raises(ConfigError, match="teacher.arch"):
        load_config({**raw, "teacher": {"arch": "resnet50"}})
    assert load_config({"tasks": [{"name": "t", "medmnist": "x.npz"}]}).kind == "classification"


def test_decoder_convs_get_twice_the_rank():
    net = build_seg_backbone("unet", 1, [2, 3], [4, 8, 16], ranks=[2, 3], decoder_rank_factor=2)
    layers = {n: m for n, m in net.body.named_modules() if hasattr(m, "lora_A")}
    assert layers
    for name, layer in layers.items():
        factor = 2 if is_decoder("unet", name) else 1
        assert layer.ranks == [2 * factor, 3 * factor], name
    assert any(is_decoder("unet", n) for n in layers) and not all(is_decoder("unet", n) for n in layers)


def test_decomposition_experts_beat_empty_prediction(trained):
    root, summary = trained
    assert summary["status"] == "completed"
    for task in summary["tasks"]:
        # an empty prediction scores Dice 0 on every (present) structure
        assert task["expert"] > 0.3, task
        assert set(task["expert_metrics"]) >= {"dice", "hd95"}
    run = root / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} >= {"foundation", "decompose", "test"}
    assert json.loads((run / "summary.json").read_text())["kind"] == "segmentation"
    labels = json.loads((run / "experts" / "cubes" / "labels.json").read_text())
    assert [x["name"] for x in labels["labels"]] == ["background", "shell", "core"]


def _test_volume(tmp_path: Path) -> tuple[Volume, Path]:
    image, _ = synthetic_volume((20, 26, 30), "cube", seed=7)
    # anisotropic spacing and a permuted, flipped direction: exercises the canonical reorientation
    vol = Volume(image, spacing=(1.2, 1.6, 2.1), origin=(3.0, -7.0, 11.0),
                 direction=(0, 0, 1, -1, 0, 0, 0, 1, 0))
    path = tmp_path / "vol.nii.gz"
    write_volume(vol, path)
    return read_volume(path), path


def test_apply_writes_label_map_with_input_geometry(trained, tmp_path):
    from core.kinds.segmentation.apply import apply_segmentation

    root, _ = trained
    vol, path = _test_volume(tmp_path)
    fractions = []
    result = apply_segmentation(root / "run" / "experts" / "cubes", path, tmp_path / "seg.nii.gz",
                                progress=lambda f, m: fractions.append(f))
    out = read_volume(tmp_path / "seg.nii.gz")
    assert out.array.shape == vol.array.shape
    np.testing.assert_allclose(out.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(out.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(out.direction, vol.direction, atol=1e-6)
    assert set(np.unique(out.array)) <= {0, 1, 2} and out.array.any()
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert sum(result["voxels"].values()) == out.array.size


def test_apply_cancel(trained, tmp_path):
    from core.errors import RunStopped
    from core.events import Control
    from core.kinds.segmentation.apply import apply_segmentation

    root, _ = trained
    _, path = _test_volume(tmp_path)
    control = Control()
    control.stop()
    with pytest.raises(RunStopped):
        apply_segmentation(root / "run" / "experts" / "cubes", path, tmp_path / "x.nii.gz", check=control.checkpoint)
    assert not (tmp_path / "x.nii.gz").exists()


def test_flipped_copy_gives_flipped_labels(trained, tmp_path):
    from core.kinds.segmentation.apply import segment_volume
    from core.kinds.segmentation.bundle import load_seg_bundle

    root, _ = trained
    net, meta = load_seg_bundle(root / "run" / "experts" / "cubes")
    pre = meta["lorkd"]["preprocessing"]
    vol, _ = _test_volume(tmp_path)
    nx = vol.array.shape[2]
    d = np.asarray(vol.direction).reshape(3, 3).copy()
    d[:, 0] *= -1  # index axis x now runs the other way ...
    flipped = Volume(vol.array[:, :, ::-1].copy(), vol.spacing, tuple(vol.index_to_world([nx - 1, 0, 0])),
                     tuple(d.ravel()))  # ... from the old last voxel: the same world image
    np.testing.assert_allclose(flipped.index_to_world([0, 0, 0]), vol.index_to_world([nx - 1, 0, 0]))
    labels = segment_volume(net, vol, pre)
    labels_f = segment_volume(net, flipped, pre)
    np.testing.assert_array_equal(labels_f, labels[:, :, ::-1])


def test_canonical_round_trip():
    a = np.random.default_rng(0).random((4, 5, 6))
    for direction in [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 1, -1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, 1, 0, -1, 0)]:
        perm, flips = prep.canonical_axes(direction)
        canon = prep.to_canonical(a, perm, flips)
        np.testing.assert_array_equal(prep.from_canonical(canon, perm, flips), a)
    # identity LPS direction: x and y run towards L and P, so RAS canonical flips them
    assert prep.canonical_axes((1, 0, 0, 0, 1, 0, 0, 0, 1)) == ([0, 1, 2], [True, True, False])


def test_bundle_run_equals_lorkd_apply(trained, tmp_path):
    from core.cli import main

    root, _ = trained
    bundle = root / "run" / "experts" / "cubes"
    _, path = _test_volume(tmp_path)
    assert main(["apply", str(bundle), str(path), "--out", str(tmp_path / "apply.nii.gz")]) == 0
    assert not project_importable(tmp_path)  # the bundle runs on its own scripts only
    argv = bundle_argv(bundle, path, tmp_path / "bundle.nii.gz")
    proc = subprocess.run(argv, cwd=tmp_path, env=isolated_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    a, b = read_volume(tmp_path / "apply.nii.gz"), read_volume(tmp_path / "bundle.nii.gz")
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing and a.origin == b.origin and a.direction == b.direction


def test_bundle_reads_the_series_and_slice_order_of_read_volume(trained, tmp_path):
    """A folder with two DICOM series of different sizes, names and instance numbers shuffled: the bundle's own
    copy of the code (`runtime.segment` under `python -m monai.bundle run`, the project not importable) segments
    the series read_volume picks, slices in read_volume's order, and writes the label map in its exact geometry."""
    from core.kinds.segmentation.bundle import load_seg_bundle
    from tests.dicom_files import write_series

    root, _ = trained
    bundle = root / "run" / "experts" / "cubes"
    image, _ = synthetic_volume((12, 26, 30), "cube", seed=7)
    rng = np.random.default_rng(3)
    order = rng.permutation(12)
    names = [f"IM{n:04d}" for n in rng.choice(10_000, 16, replace=False)]
    folder = tmp_path / "two"
    write_series(folder, np.round(image[order]).astype(np.int16), [(-20.0, 15.0, 40.0 + 2.0 * k) for k in order],
                 names=names[:12], instances=list(rng.permutation(12) + 1), pixel_spacing=(1.25, 1.5),
                 description="volume")
    write_series(folder, np.full((4, 40, 40), 50, np.int16), [(0.0, 0.0, 3.0 * k) for k in range(4)],
                 names=names[12:], instances=[4, 2, 3, 1], description="localizer")
    volume = read_volume(folder)
    assert volume.metadata["description"] == "volume" and volume.array.shape == (12, 26, 30)
    np.testing.assert_array_equal(volume.array, np.round(image).astype(np.int16))  # position order, not file order
    net, meta = load_seg_bundle(bundle)
    expected = segment_volume(net, volume, meta["lorkd"]["preprocessing"])
    assert expected.any()

    argv = bundle_argv(bundle, folder, tmp_path / "bundle.nrrd")  # NRRD: the geometry round-trips exactly
    proc = subprocess.run(argv, cwd=tmp_path, env=isolated_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "holds 2 DICOM series" in proc.stdout and "'localizer'" in proc.stdout
    out = read_volume(tmp_path / "bundle.nrrd")
    np.testing.assert_array_equal(out.array, expected)
    assert (out.spacing, out.origin, out.direction) == (volume.spacing, volume.origin, volume.direction)


def test_kd_and_dice_losses():
    from core.kinds.segmentation.losses import seg_kd_loss, seg_task_loss

    target = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    target[:, :, 1:3, 1:3, 1:3] = 1
    perfect = torch.nn.functional.one_hot(target[:, 0], 2).movedim(-1, 1).float() * 20
    assert seg_task_loss(perfect, target) < 1e-3
    assert seg_kd_loss(perfect, perfect, 2.0) < 1e-6
    assert seg_kd_loss(perfect, -perfect, 2.0) > 0.1


def _reference_dice_ce(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The soft Dice + CE the engine used before MONAI's DiceCELoss: 1 - mean over samples and foreground classes
    of (2 |P.Y| + eps) / (|P| + |Y| + eps), plus the mean cross-entropy."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = torch.nn.functional.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = tuple(range(2, logits.ndim))
    dice = (2 * (probs * onehot).sum(dims) + eps) / (probs.sum(dims) + onehot.sum(dims) + eps)
    return 1 - dice[:, 1:].mean() + torch.nn.functional.cross_entropy(logits.float(), target[:, 0].long())


def test_dice_ce_is_the_documented_formula():
    """MONAI's DiceCELoss as configured equals the formula in the module docstring (and the loss the engine used
    before it), with absent structures, several classes and a gradient."""
    from core.kinds.segmentation.losses import seg_task_loss

    gen = torch.Generator().manual_seed(0)
    for classes in (2, 4):
        logits = torch.randn(3, classes, 6, 5, 4, generator=gen, requires_grad=True)
        target = torch.randint(0, classes, (3, 1, 6, 5, 4), generator=gen)
        target[1] = 0  # a sample without any structure
        ours, reference = seg_task_loss(logits, target), _reference_dice_ce(logits, target)
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
        (g1,) = torch.autograd.grad(ours, logits)
        (g2,) = torch.autograd.grad(reference, logits)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_seg_demo_data(tmp_path):
    from core.kinds.segmentation.demo import build_seg_demo

    raw = build_seg_demo(tmp_path, quick=True)
    config = load_config(raw)
    assert [t.name for t in config.tasks] == ["grey_matter", "white_matter", "csf", "brain"]
    t1 = read_volume(config.tasks[0].images[0])
    maps = {t.name: read_volume(t.labels[0]) for t in config.tasks}
    for vol in maps.values():
        assert vol.array.shape == t1.array.shape == (189, 233, 197)
        np.testing.assert_allclose(vol.origin, t1.origin, atol=1e-4)
        np.testing.assert_allclose(vol.direction, t1.direction, atol=1e-6)
    brain = maps["brain"].array.astype(bool)
    parts = [maps[k].array.astype(bool) for k in ("grey_matter", "white_matter", "csf")]
    assert np.array_equal(parts[0] | parts[1] | parts[2], brain)  # the three tissues partition the brain
    assert not (parts[0] & parts[1]).any()
    assert 0.3 < parts[0].sum() / brain.sum() < 0.7


def _write_dicom_series(folder: Path, image: np.ndarray, spacing=(1.5, 1.25, 2.0), origin=(-20.0, 15.0, 40.0)):
    """image (Z, Y, X) as an axial MR series (one pydicom-written file per slice, int16)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for z, plane in enumerate(image):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{z:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesDescription, ds.PatientID, ds.PatientName = "MR", "synthetic", "P1", "Test^Seg"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "19700101", "O", "20240101", "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName, ds.SeriesNumber = "1", "A1", "", 5
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + z * spacing[2]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.round(plane).astype(np.int16).tobytes()
        ds.save_as(folder / f"im{z:03d}.dcm", enforce_file_format=True)
    return folder


def test_apply_to_dicom_series_writes_dicom_seg(trained, tmp_path, capsys):
    """`lorkd apply` on a DICOM series with --out X.dcm writes a DICOM SEG whose frames, segment labels and
    geometry match the source series and the NIfTI label map of the same input."""
    import highdicom as hd
    import pydicom

    from core.cli import main

    root, _ = trained
    bundle = root / "run" / "experts" / "cubes"
    image, _ = synthetic_volume((12, 26, 30), "cube", seed=7)
    folder = _write_dicom_series(tmp_path / "series", image)
    assert main(["apply", str(bundle), str(folder), "--out", str(tmp_path / "labels.nii.gz")]) == 0
    assert main(["apply", str(bundle), str(folder), "--out", str(tmp_path / "seg.dcm")]) == 0
    expected = read_volume(tmp_path / "labels.nii.gz").array
    assert expected.any()
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    numbers = seg.get_segment_numbers()
    assert [seg.get_segment_description(n).SegmentLabel for n in numbers] == ["shell", "core"]
    files = sorted(folder.iterdir())
    sources = [pydicom.dcmread(f) for f in files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    back = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID) for ds in sources], combine_segments=True)
    np.testing.assert_array_equal(np.asarray(back), expected)
    nonempty = {(z, v) for z in range(expected.shape[0]) for v in (1, 2) if (expected[z] == v).any()}
    assert int(seg.NumberOfFrames) == len(nonempty)
    positions = {tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 4)) for ds in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ipp = tuple(np.round(np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float), 4))
        assert ipp in positions
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, [1.25, 1.5])
    # a DICOM SEG needs DICOM input: a NIfTI input is refused before any inference
    capsys.readouterr()
    assert main(["apply", str(bundle), str(tmp_path / "labels.nii.gz"), "--out", str(tmp_path / "x.dcm")]) == 2
    assert "DICOM" in capsys.readouterr().err and not (tmp_path / "x.dcm").exists()


def _dice_of_lorkd_apply(run: Path, config, tmp_path: Path) -> dict[str, dict[str, float]]:
    """Per task and label: Dice pooled over the test cases' voxels of `lorkd apply`'s output (run from the CLI on
    each test image with the exported bundle), counted here with numpy."""
    from core.cli import main
    from core.train.pipeline import Pipeline

    data = Pipeline(config, tmp_path / "split-only").data  # the same split (it is a function of files and seed)
    out: dict[str, dict[str, float]] = {}
    for t, info in enumerate(data.tasks):
        counts = np.zeros((info.num_classes - 1, 3))
        for i, case in enumerate(data.extra["test_cases"][t]):
            written = tmp_path / f"{info.name}-{i}.nii.gz"
            assert main(["apply", str(run / "experts" / info.name), str(case.image_path), "--out", str(written)]) == 0
            pred = read_volume(written).array.astype(int)
            ref = read_volume(case.pair.label_path).array.astype(int)
            keep = case.native_mask()
            keep = np.ones(ref.shape, bool) if keep is None else keep
            for k in range(1, info.num_classes):
                p, r = (pred == k) & keep, (ref == k) & keep
                counts[k - 1] += ((p & r).sum(), p.sum(), r.sum())
        total = counts[:, 1] + counts[:, 2]
        dice = np.where(total > 0, 2 * counts[:, 0] / np.maximum(total, 1), 1)
        out[info.name] = {"dice": float(dice.mean()),
                          **{f"dice/{name}": float(d) for name, d in zip(info.labels[1:], dice, strict=True)}}
    return out


@pytest.mark.parametrize("split", ["volumes", "regions"])
def test_summary_dice_is_the_dice_of_lorkd_apply_on_the_held_out_voxels(trained, tmp_path, split):
    """What the summary (and so the model card and the app) reports is what a user gets: `lorkd apply` on the
    held-out images, scored on the held-out voxels of the native grid."""
    from core.train.pipeline import Pipeline

    if split == "volumes":  # tasks with four volumes: one held-out test volume each
        root, summary = trained
        run, config = root / "run", load_config(_config(root))
    else:  # one task on two volumes: held-out cubes of each volume
        images, labels = write_synthetic_task(tmp_path / "cubes", 2, "cube", shape=(16, 20, 24), seed=2)
        config = load_config({
            "name": "regions", "kind": "segmentation",
            "tasks": [{"name": "cubes", "images": str(images), "labels": str(labels),
                       "label_names": {1: "shell", 2: "core"}}],
            "data": {"spacing": [2, 2, 2], "patch_size": [16, 16, 16], "samples_per_volume": 8, "region_mm": 8},
            "teacher": {"channels": [4, 8, 16], "epochs": 1}, "backbone": {"channels": [4, 8, 16]},
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01}, "evaluate": {"single_task": False},
        })
        run = tmp_path / "run"
        summary = Pipeline(config, run).run()
    measured = _dice_of_lorkd_apply(run, config, tmp_path)
    for task in summary["tasks"]:
        if split == "regions":
            assert "region" in task["test"] and task["test_cases"] >= 2, task["test"]
        for key, value in measured[task["name"]].items():
            assert task["expert_metrics"][key] == pytest.approx(value, abs=1e-9), (task["name"], key)


def test_a_held_out_cube_is_a_box_of_the_native_grid_and_argmax_is_exact():
    """`HeldOutCase.native_box` (what the test scores) is exactly the native-grid image of the canonical cube
    (`native_mask`), for every reorientation; `channel_argmax` (label maps) equals torch.argmax, ties included."""
    from types import SimpleNamespace

    from core.kinds.segmentation.data import HeldOutCase

    shape = (7, 9, 11)  # (Z, Y, X)
    for direction in [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 1, -1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, 1, 0, -1, 0)]:
        perm, flips = prep.canonical_axes(direction)
        canonical_shape = prep.to_canonical(np.zeros(shape), perm, flips).shape
        pair = SimpleNamespace(info={"perm": perm, "flips": flips, "canonical_shape": canonical_shape})
        region = tuple(slice(1, n - 2) if j % 2 else slice(0, 3) for j, n in enumerate(canonical_shape))
        case = HeldOutCase("c", pair, region)
        mask = case.native_mask()
        assert mask.shape == shape
        box = case.native_box()
        assert mask[box].all() and mask.sum() == mask[box].size, direction
    logits = torch.randn(4, 6, 7, 8)
    logits[:, :2] = 0.5  # ties: the first channel wins, as in torch.argmax
    assert torch.equal(prep.channel_argmax(logits), torch.argmax(logits, dim=0).to(torch.uint8))


def test_lorkd_apply_never_overwrites_its_input(trained, tmp_path, capsys):
    """`lorkd apply EXPERT VOL --out VOL` (or a link to it, or a file inside the input DICOM folder) is refused
    with one error line and exit 2 before any work; the input is untouched."""
    from core.cli import main

    root, _ = trained
    bundle = root / "run" / "experts" / "cubes"
    _, path = _test_volume(tmp_path)
    before = path.read_bytes()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(path)
    for out in (path, link):
        assert main(["apply", str(bundle), str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "overwritten" in err[0], err
    assert path.read_bytes() == before


def test_writers_refuse_to_write_over_or_into_their_source(tmp_path):
    """The label-map and DICOM SEG writers (used by the CLI and the app's Save) refuse an output that is the
    volume's source file or lies inside its source folder."""
    from core.errors import DataError
    from core.files import refuse_overwriting_inputs
    from core.io import write_label_map

    vol, path = _test_volume(tmp_path)
    labels = np.zeros(vol.array.shape, np.uint8)
    with pytest.raises(DataError, match="overwritten"):
        write_label_map(labels, vol, path)
    folder = tmp_path / "series"
    folder.mkdir()
    with pytest.raises(DataError, match="is inside the input"):
        refuse_overwriting_inputs(folder / "seg.dcm", [folder])
    refuse_overwriting_inputs(tmp_path / "other.nii.gz", [path, folder, None, ""])  # elsewhere: fine
    assert write_label_map(labels, vol, tmp_path / "labels.nii.gz").is_file()
