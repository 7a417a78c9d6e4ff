"""The applicability check (`core.preprocess.applicability`): what an expert was trained on, recorded in its bundle,
and the warning (or, with --strict, the refusal) when an input lies outside it, through `lorkd apply`, the app's
path (`apply_loaded` / `classify_array`) and the bundle's own entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from core.errors import BundleError, OutsideEnvelope
from core.io import Volume, read_volume, write_volume
from core.preprocess import applicability as ap

CT_SERIES = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"


def _obs(spacing=(1.0, 1.0, 1.0), size=(100, 120, 90), background=0.7, p50=0.6, modality=None,
         direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), channels=1):
    intensity = {"background": background, "p10": p50 - 0.2, "p50": p50, "p90": p50 + 0.2, "colour": 0.0}
    return ap.observe(channels=channels, intensity=intensity, modality=modality, spacing_mm=spacing, size=size,
                      direction=direction)


def test_envelope_ranges_and_each_mismatch_named_once():
    env = ap.envelope([_obs(), _obs(spacing=(1.2, 1.2, 1.0), background=0.75)], modality="mr")
    assert env["modality"] == ["MR"] and env["channels"] == [1] and env["inputs"] == 2
    assert env["spacing_mm"][0] == [1.0, 1.2] and env["extent_mm"][2] == [90.0, 90.0]
    assert env["orientation"] == ["LPS"] and env["oblique"] is False
    assert ap.invalid(env) is None
    assert ap.check(env, _obs(spacing=(1.1, 1.1, 1.1))) == []  # within the tolerances
    cases = {
        "voxel size": _obs(spacing=(2.0, 2.0, 2.0), size=(50, 60, 45)),
        "field of view": _obs(size=(20, 20, 20)),
        "modality CT": _obs(modality="CT"),
        "share of background voxels": _obs(background=0.05),
        "median foreground": _obs(p50=0.95),  # with its 10th and 90th percentiles: one sentence
        "channel": _obs(channels=3),
        "oblique": _obs(direction=(np.cos(0.3), np.sin(0.3), 0, -np.sin(0.3), np.cos(0.3), 0, 0, 0, 1)),
    }
    for name, observation in cases.items():
        found = ap.check(env, observation)
        assert len(found) == 1 and name in found[0], (name, found)
    # many training images: robust (1st..99th percentile) ranges, an outlier does not widen them
    many = [_obs(background=0.5 + 0.001 * i) for i in range(99)] + [_obs(background=0.0)]
    assert ap.envelope(many)["intensity"]["background"][0] > 0.45
    # a bundle exported before envelopes: one sentence saying so
    assert "no training envelope" in ap.check(None, _obs())[0]


def test_axis_code_and_invalid_envelopes():
    assert ap.axis_code((-1, 0, 0, 0, -1, 0, 0, 0, 1)) == ("RAS", False)
    assert ap.axis_code((0, 0, 1, 1, 0, 0, 0, 1, 0))[0] == "PSL"
    env = ap.envelope([_obs()])
    for broken in ({**env, "channels": []}, {**env, "spacing_mm": [[1, 0.5]] * 3}, {**env, "oblique": "no"},
                   {**env, "intensity": {"p50": [0.2]}}, {**env, "modality": "MR"}, [env]):
        assert ap.invalid(broken), broken


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny segmentation bundle whose envelope comes from one synthetic 1 mm "brain" (an ellipsoid on a black
    background, declared MR), computed as training does (`data.load_pair`); and that volume's file."""
    from core.kinds.segmentation.bundle import write_seg_bundle
    from core.kinds.segmentation.config import IntensityConfig, SegDataConfig
    from core.kinds.segmentation.data import load_pair
    from core.kinds.segmentation.nets import SegExpertNet

    root = tmp_path_factory.mktemp("envelope")
    z, y, x = np.mgrid[:48, :56, :52]
    inside = ((x - 26) / 22) ** 2 + ((y - 28) / 25) ** 2 + ((z - 24) / 20) ** 2 < 1
    rng = np.random.default_rng(0)
    array = np.where(inside, 120 + 40 * np.sin(x / 3.0) + rng.normal(0, 5, inside.shape), 0).astype(np.float32)
    brain = write_volume(Volume(array, spacing=(1.0, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)),
                         root / "brain.nii.gz")
    data = SegDataConfig(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16])
    pair = load_pair(brain, None, data, IntensityConfig(), 1, soft=torch.zeros(2, 26, 28, 24))
    env = ap.envelope([pair.info["observed"]], "MR")
    torch.manual_seed(0)
    net = SegExpertNet("unet", 1, 2, [4, 8, 16], 4)
    bundle = write_seg_bundle(root / "expert", task_name="brain", class_names=["background", "brain"],
                              arch="unet", channels=[4, 8, 16], features=4, state_dict=net.state_dict(), data=data,
                              metrics={}, training={}, envelope=env)
    return bundle, brain


def test_lorkd_apply_warns_outside_and_strict_refuses(seg_bundle, tmp_path, capsys):
    from core.cli import main

    bundle, brain = seg_bundle
    lorkd = json.loads((bundle / "configs" / "metadata.json").read_text())["lorkd"]
    assert lorkd["envelope"]["modality"] == ["MR"] and lorkd["envelope"]["spacing_mm"] == [[1.0, 1.0]] * 3
    assert "What this expert was trained on" in (bundle / "docs" / "README.md").read_text()
    # the training volume itself: no warning
    assert main(["apply", str(bundle), str(brain), "--out", str(tmp_path / "a.nii.gz"), "--strict"]) == 0
    out, err = capsys.readouterr()
    assert "outside" not in err and json.loads(out)["applicability"] == []
    assert json.loads(out)["research_use_only"] is True and "brain" in json.loads(out)["expert"]
    # a CT series (DICOM records CT; 0.5 x 0.5 x 2.5 mm; 8 mm field of view): warned, in the JSON too
    assert main(["apply", str(bundle), str(CT_SERIES), "--out", str(tmp_path / "b.nii.gz")]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning: outside what the expert")]
    record = json.loads(out)
    assert len(warnings) == len(record["applicability"]) >= 3
    assert any("modality CT" in w for w in warnings) and any("voxel size" in w for w in warnings)
    assert (tmp_path / "b.nii.gz").is_file()
    # --strict: exit 2, one error line, nothing written
    assert main(["apply", str(bundle), str(CT_SERIES), "--out", str(tmp_path / "c.nii.gz"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--strict" in err[0] and "modality CT" in err[0]
    assert not (tmp_path / "c.nii.gz").exists()


def test_the_bundle_entry_point_and_the_app_path_give_the_same_warnings(seg_bundle, tmp_path, capsys):
    from core.kinds.segmentation.apply import segment_loaded
    from core.kinds.segmentation.bundle import load_seg_bundle
    from core.kinds.segmentation.runtime import segment

    bundle, brain = seg_bundle
    # the brain at half the resolution and cropped to its middle: voxel size and field of view
    volume = read_volume(brain)
    small = write_volume(Volume(np.asarray(volume.array)[16:32:2, 18:38:2, 17:35:2], spacing=(2.0, 2.0, 2.0),
                                direction=volume.direction), tmp_path / "small.nii.gz")
    loaded = read_volume(small)
    record = segment_loaded(bundle, loaded, "small")
    assert any("voxel size" in m for m in record["applicability"])
    assert any("field of view" in m for m in record["applicability"])
    with pytest.raises(OutsideEnvelope):
        segment_loaded(bundle, loaded, "small", strict=True)
    net, _ = load_seg_bundle(bundle)
    segment(bundle, str(small), str(tmp_path / "entry.nii.gz"), net)  # the file copied into the bundle
    printed = [line.removeprefix("warning: outside what the expert was trained on: ")
               for line in capsys.readouterr().out.splitlines() if "outside what the expert" in line]
    assert printed == record["applicability"]


def test_a_tampered_envelope_is_refused_at_load(seg_bundle, tmp_path):
    import shutil

    from core.export.bundle import check_metadata

    bundle, _ = seg_bundle
    copy = shutil.copytree(bundle, tmp_path / "copy")
    metadata = json.loads((copy / "configs" / "metadata.json").read_text())
    metadata["lorkd"]["envelope"]["spacing_mm"] = "1 mm"
    with pytest.raises(BundleError, match="lorkd.envelope: spacing_mm"):
        check_metadata(copy, metadata)


def test_classification_envelope_flags_a_colour_photo_for_a_grey_expert(tmp_path, capsys):
    from core.cli import main
    from core.kinds.classification.apply import classify_array
    from core.kinds.classification.bundle import write_bundle
    from core.kinds.classification.nets import ClassifierNet
    from core.kinds.classification.runtime import observe_plane

    rng = np.random.default_rng(1)
    slices = []
    for _ in range(30):  # grey "slices": a bright disc on black
        yy, xx = np.mgrid[:28, :28]
        disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < rng.integers(60, 120)) * rng.integers(150, 250)
        slices.append(np.clip(disc + rng.normal(0, 8, (28, 28)), 0, 255).astype(np.uint8))
    env = ap.envelope([observe_plane(s) for s in slices])
    torch.manual_seed(0)
    task = {"name": "toy", "kind": "multiclass", "num_classes": 2, "label_names": ["a", "b"], "spatial_dims": 2,
            "rgb": False, "source": "toy.npz"}
    bundle = write_bundle(tmp_path / "expert", task=task, arch="compact", spatial_dims=2, in_channels=1,
                          image_size=28, state_dict=ClassifierNet("compact", 2, 1, 2).state_dict(), metrics={},
                          training={}, envelope=env)
    assert classify_array(bundle, slices[0])["applicability"] == []
    photo = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)  # colourful, no background
    record = classify_array(bundle, photo)
    assert any("channel" in m for m in record["applicability"]) and "calibrated" in record["calibration"]
    with pytest.raises(OutsideEnvelope):
        classify_array(bundle, photo, strict=True)
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert main(["apply", str(bundle), str(tmp_path / "photo.png"), "--out", str(tmp_path / "s.json"),
                 "--strict"]) == 2
    assert "outside what the expert was trained on" in capsys.readouterr().err


def test_a_bundle_exported_before_envelopes_still_loads_and_says_it_cannot_check(seg_bundle, tmp_path):
    """As exported by the previous version: no applicability.py among its scripts, no envelope in its metadata, a
    manifest without them. It loads; applying it warns that the input cannot be checked (and --strict refuses)."""
    import shutil

    from core.export.manifest import manifest_text
    from core.kinds.segmentation.apply import segment_loaded
    from core.kinds.segmentation.bundle import load_seg_bundle

    bundle, brain = seg_bundle
    old = shutil.copytree(bundle, tmp_path / "old")
    (old / "scripts" / "preprocess" / "applicability.py").unlink()
    metadata = json.loads((old / "configs" / "metadata.json").read_text())
    del metadata["lorkd"]["envelope"]
    (old / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (old / "SHA256SUMS").write_text(manifest_text(old))
    load_seg_bundle(old)
    record = segment_loaded(old, read_volume(brain), "brain")
    assert len(record["applicability"]) == 1 and "records no training envelope" in record["applicability"][0]
    with pytest.raises(OutsideEnvelope):
        segment_loaded(old, read_volume(brain), "brain", strict=True)
    # a new bundle missing the file its manifest lists is still refused
    new = shutil.copytree(bundle, tmp_path / "new")
    (new / "scripts" / "preprocess" / "applicability.py").unlink()
    with pytest.raises(BundleError, match="applicability.py"):
        load_seg_bundle(new)
