"""A user's own foundation model: a MONAI bundle (Model Zoo layout) or a TorchScript file decomposed label-free into
region experts; its preprocessing reproduced exactly; its config checked before anything of it runs; one-line
errors for what cannot work."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai import transforms as mt

from core.cli import main
from core.errors import CheckpointError, ConfigError
from core.io import read_volume
from core.kinds import load_config
from core.kinds.segmentation.demo import mni_files
from core.models.foundation import load_bundle_foundation, read_preprocessing
from core.preprocess import volume as prep
from core.train.pipeline import Pipeline
from tests.bundle_batch import start_bundles
from tests.foundation_bundle import (
    CHANNELS,
    NETWORK_DEF,
    inference_config,
    metadata,
    train_unet,
    write_bundle,
    write_torchscript,
)

AGREEMENT_FLOOR = 0.8  # the issue's acceptance: each expert agrees with the foundation model above this Dice


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    """The foundation model trained once: (folder, bundle folder, TorchScript file, the tissue label map)."""
    root = tmp_path_factory.mktemp("foundation")
    net, label = train_unet(300)
    return root, write_bundle(root / "bundle", net), write_torchscript(root / "model.ts", net), label


def _raw(teacher: dict, tasks: list[dict], backbone: dict, epochs: int = 20) -> dict:
    return {"name": "byo", "kind": "segmentation", "tasks": tasks,
            "data": {"spacing": [3.0, 3.0, 3.0], "patch_size": [16, 16, 16], "samples_per_volume": 48},
            "teacher": teacher, "backbone": {"rank": 2, **backbone},
            "train": {"epochs": epochs, "batch_size": 4, "kd_weight": 0.5},
            "evaluate": {"single_task": False}}


def _label_free(t1: str) -> list[dict]:
    return [{"name": "grey", "images": [t1], "teacher_labels": ["grey matter"]},
            {"name": "white", "images": [t1], "teacher_labels": [2]}]


def _check_agreement(summary: dict, names: list[str]) -> None:
    tasks = {t["name"]: t for t in summary["tasks"]}
    for name in names:
        task = tasks[name]
        assert task["metric"] == "agreement" and task["kind"] == "segmentation, label-free"
        assert "agreement (Dice) with the foundation model" in task["test"]
        assert task["teacher"] is None  # the foundation model is not scored against itself
        assert task["expert"] > AGREEMENT_FLOOR, (name, task["expert_metrics"])


def _bundles_run(run: Path, names: list[str], tmp_path: Path) -> None:
    """Each exported expert runs with `python -m monai.bundle run` (the project not importable; one interpreter start
    for all, `tests.bundle_batch`) and writes the label map `lorkd apply` writes."""
    t1 = mni_files()["t1"]
    runs = start_bundles([(run / "experts" / name, t1, tmp_path / f"{name}.nii.gz") for name in names], tmp_path,
                         tmp_path / "logs")  # beside the applies below
    for name in names:
        bundle = run / "experts" / name
        assert main(["apply", str(bundle), str(t1), "--out", str(tmp_path / f"{name}_apply.nii.gz")]) == 0
    for name, (code, output) in zip(names, runs.results(timeout=300), strict=True):
        assert code == 0, output[-3000:]
        a, b = read_volume(tmp_path / f"{name}_apply.nii.gz"), read_volume(tmp_path / f"{name}.nii.gz")
        np.testing.assert_array_equal(a.array, b.array)
        assert set(np.unique(b.array)) == {0, 1}


def test_bundle_decomposed_label_free_into_region_experts(foundation, tmp_path, capsys):
    """The acceptance of the issue: a Model Zoo bundle, two label-free region experts from images only, a student
    of the foundation model's own architecture at half its width; agreement > 0.8 on held-out regions; both
    exported bundles run with `python -m monai.bundle run`."""
    _, bundle, _, _ = foundation
    t1 = str(mni_files()["t1"])
    config = load_config(_raw({"bundle": str(bundle)}, _label_free(t1), {"arch": "same", "width": 0.5}))
    summary = Pipeline(config, tmp_path / "run").run()
    _check_agreement(summary, ["grey", "white"])
    assert summary["teacher"]["arch"] == "MONAI bundle bundle"
    assert summary["tasks"][0]["labels"] == ["background", "grey matter"]
    assert summary["tasks"][1]["labels"] == ["background", "white matter"]  # named from the metadata by index
    meta = json.loads((tmp_path / "run/experts/grey/configs/metadata.json").read_text())
    network = meta["lorkd"]["network"]
    assert network["arch"] == "monai.UNet" and network["net"]["channels"] == [8, 16, 32]
    assert network["net"]["num_res_units"] == NETWORK_DEF["num_res_units"]
    assert meta["lorkd"]["training"]["labels_from"] == "the foundation model (label-free)"
    card = (tmp_path / "run/experts/grey/docs/README.md").read_text()
    assert "agreement (Dice) with the foundation model" in card and "| agreement/grey matter |" in card
    from core.cli import _print_summary

    _print_summary(summary)
    printed = capsys.readouterr().out
    assert "note: grey: agreement (Dice) with the foundation model" in printed
    _bundles_run(tmp_path / "run", ["grey", "white"], tmp_path)


def test_torchscript_decomposed_with_label_free_and_labelled_tasks(foundation, tmp_path):
    """The same from the model saved as TorchScript (its preprocessing given in the config), with a labelled task
    beside a label-free one: it gets Dice against its labels and its agreement with the foundation model, and
    the foundation model is scored on its labels too. (A label-free task picked by channel index: the bundle test
    above.)"""
    root, _, script, label = foundation
    t1 = mni_files()["t1"]
    volume = read_volume(t1)
    labels = root / "grey_labels.nii.gz"
    from core.io import write_label_map

    write_label_map((label == 1).astype(np.uint8), volume, labels)
    teacher = {"torchscript": str(script), "spacing": [3.0, 3.0, 3.0], "roi_size": [32, 32, 32],
               "intensity": {"mode": "range", "a_min": 0, "a_max": 228, "b_min": 0.0, "b_max": 1.0, "clip": True},
               "labels": CHANNELS}
    tasks = [_label_free(str(t1))[0], {"name": "grey_labelled", "images": [str(t1)], "labels": [str(labels)],
                                       "teacher_labels": ["grey matter"]}]
    config = load_config(_raw(teacher, tasks, {"arch": "unet", "channels": [8, 16, 32], "res_units": 1}))
    summary = Pipeline(config, tmp_path / "run").run()
    _check_agreement(summary, ["grey"])
    labelled = summary["tasks"][1]
    assert labelled["metric"] == "dice" and labelled["teacher"] is not None
    assert labelled["expert_metrics"]["agreement"] > AGREEMENT_FLOOR
    assert labelled["labels"] == ["background", "grey matter"]  # named after the channel it takes


# --------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_read_from_the_bundle():
    pre = read_preprocessing(inference_config(), "b")
    assert pre.axcodes == "RAS" and pre.spacing == [3.0, 3.0, 3.0] and pre.roi_size == [32, 32, 32]
    assert pre.intensity == {"mode": "range", "a_min": 0.0, "a_max": 228.0, "b_min": 0.0, "b_max": 1.0,
                             "clip": True}
    assert pre.activation == "softmax" and pre.overlap == 0.25
    config = inference_config()
    config["preprocessing"]["transforms"].insert(3, {"_target_": "RandFlipd", "keys": "image"})
    with pytest.raises(ConfigError, match="RandFlipd: LoRKD cannot reproduce"):
        read_preprocessing(config, "b")


@pytest.mark.parametrize("spec, transform", [
    ({"mode": "range", "a_min": -57, "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True},
     mt.ScaleIntensityRange(-57, 164, 0.0, 1.0, clip=True)),
    ({"mode": "range", "a_min": -100, "a_max": 300, "b_min": -1.0, "b_max": 1.0, "clip": False},
     mt.ScaleIntensityRange(-100, 300, -1.0, 1.0, clip=False)),
    ({"mode": "zscore", "nonzero": True}, mt.NormalizeIntensity(nonzero=True)),
    ({"mode": "zscore", "nonzero": False}, mt.NormalizeIntensity(nonzero=False)),
    ({"mode": "percentile", "low": 1, "high": 99, "b_min": 0.0, "b_max": 1.0, "clip": True},
     mt.ScaleIntensityRangePercentiles(1, 99, 0.0, 1.0, clip=True)),
    ({"mode": "minmax", "b_min": 0.0, "b_max": 1.0}, mt.ScaleIntensity(minv=0.0, maxv=1.0)),
])
def test_foundation_intensity_is_monais(spec, transform):
    """Each intensity transform a bundle names gives MONAI's own numbers."""
    rng = np.random.default_rng(0)
    a = rng.normal(40, 80, (12, 10, 8)).astype(np.float32)
    a[:3] = 0
    expected = np.asarray(transform(torch.as_tensor(a[None])))[0]
    np.testing.assert_allclose(prep.normalise_intensity(a, **spec), expected, rtol=1e-5, atol=1e-5)


def test_orientation_of_the_foundation_model_maps_back_exactly():
    """Values on a grid of one orientation, reoriented to another, equal the other's own preprocessing."""
    rng = np.random.default_rng(1)
    a = rng.random((6, 7, 8)).astype(np.float32)
    direction = [0, 0, 1, -1, 0, 0, 0, -1, 0]  # an oblique-free but permuted, flipped volume
    lps = prep.orientation(direction, "LPS")
    ras = prep.orientation(direction, "RAS")
    x = torch.from_numpy(prep.to_canonical(a, *lps).copy())[None]
    y = prep.reorient_grid(x, lps, ras)
    np.testing.assert_array_equal(y[0].numpy(), prep.to_canonical(a, *ras))


# ---------------------------------------------------------------------------------------- bundle trust
def _tiny_bundle(folder: Path, config: dict | None = None, meta: dict | None = None, weights=None) -> Path:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"})
    return write_bundle(folder, net, config, meta, weights)


def test_a_zipped_bundle_loads_and_a_zip_slip_is_refused(tmp_path):
    bundle = _tiny_bundle(tmp_path / "spleen")
    archive = tmp_path / "spleen.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in bundle.rglob("*"):
            z.write(f, Path("spleen") / f.relative_to(bundle))
    found = load_bundle_foundation(archive)
    assert found.channels == CHANNELS and found.net_class == "UNet" and found.out_channels == 4
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(CheckpointError, match="outside the extraction folder"):
        load_bundle_foundation(evil)
    assert not (tmp_path / "outside.txt").exists()


def test_a_bundle_scripts_network_is_allowed(tmp_path):
    """network_def may name a class of the bundle's own scripts/ (the Model Zoo does)."""
    config = inference_config({"_target_": "scripts.net.Tiny", "out_channels": 4})
    bundle = _tiny_bundle(tmp_path / "b", config, weights={})
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "net.py").write_text(
        "import torch\nclass Tiny(torch.nn.Module):\n    def __init__(self, out_channels):\n"
        "        super().__init__()\n        self.conv = torch.nn.Conv3d(1, out_channels, 1)\n"
        "    def forward(self, x):\n        return self.conv(x)\n")
    torch.save({"conv.weight": torch.ones(4, 1, 1, 1, 1), "conv.bias": torch.zeros(4)}, bundle / "models/model.pt")
    found = load_bundle_foundation(bundle)
    assert found.net_class == "Tiny" and type(found.network).__name__ == "Tiny"
    assert float(found.network.conv.weight.detach().sum()) == 4.0
    import sys

    assert "scripts" not in sys.modules or not str(getattr(sys.modules["scripts"], "__file__", "")).startswith(
        str(bundle))  # the bundle's scripts/ do not stay importable


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, (out.err + out.out).strip()


def _bad_config(tmp_path: Path, teacher: dict, tasks: list[dict] | None = None) -> Path:
    t1 = str(mni_files()["t1"])
    raw = _raw(teacher, tasks or _label_free(t1), {"arch": "unet", "channels": [8, 16, 32]}, epochs=1)
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def _error_line(code: int, text: str) -> str:
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def test_bad_foundation_models_get_one_error_line(foundation, tmp_path, capsys):
    _, bundle, script, _ = foundation
    # a bundle without network_def
    config = inference_config()
    del config["network_def"]
    no_def = _tiny_bundle(tmp_path / "no_def", config)
    line = _error_line(*_cli(capsys, "decompose", str(_bad_config(tmp_path, {"bundle": str(no_def)}))))
    assert "no network_def" in line
    # weights that do not fit it: the first mismatching key is named
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    key = next(iter(state))
    wrong = _tiny_bundle(tmp_path / "wrong", weights={k: v for k, v in state.items() if k != key})
    line = _error_line(*_cli(capsys, "decompose", str(_bad_config(tmp_path, {"bundle": str(wrong)}))))
    assert "does not fit" in line and key in line
    # teacher_labels naming a channel the model does not have
    t1 = str(mni_files()["t1"])
    for label, expected in (("liver", "no output channel named 'liver'"), (7, "no channel 7")):
        tasks = [{"name": "x", "images": [t1], "teacher_labels": [label]}]
        line = _error_line(*_cli(capsys, "decompose", str(_bad_config(tmp_path, {"bundle": str(bundle)}, tasks))))
        assert expected in line and "tasks.0.teacher_labels.0" in line
    # a TorchScript model whose output channels do not match the labels given for it
    teacher = {"torchscript": str(script), "labels": ["background", "liver", "spleen"]}
    line = _error_line(*_cli(capsys, "decompose", str(_bad_config(tmp_path, teacher))))
    assert "gives 4 output channels" in line and "name 3" in line


def test_a_target_outside_the_allowed_modules_is_refused_and_nothing_runs(tmp_path, capsys):
    witness = tmp_path / "ran.txt"
    expression = f"$open('{witness}', 'w') and [16, 32, 64]"
    for name, config in (
        ("target", {**inference_config(), "handlers": [{"_target_": "os.system", "command": f"touch {witness}"}]}),
        ("builtin", {**inference_config(), "network_def": {"_target_": "exec",
                                                            "source": f"open('{witness}', 'w')"}}),
        ("expression", {**inference_config(), "network_def": {**NETWORK_DEF, "channels": expression}}),
    ):
        bad = _tiny_bundle(tmp_path / name, config)
        code, text = _cli(capsys, "decompose", str(_bad_config(tmp_path, {"bundle": str(bad)})))
        line = _error_line(code, text)
        assert "nothing was executed" in line and "--trust-bundle" in line, line
        assert not witness.exists()
    # the Model Zoo's own expressions outside network_def (datalist globbing, the device) are never evaluated
    zoo = _tiny_bundle(tmp_path / "zoo")
    assert load_bundle_foundation(zoo).net_class == "UNet"
    shutil.rmtree(tmp_path / "zoo")


# ------------------------------------------------------------------------------------------ task classes
def _teacher(activation: str, channels: list[list[int]]):
    from core.kinds.segmentation.teacher import ForeignSegTeacher
    from core.models.foundation import ForeignPre, Foundation

    found = Foundation(torch.nn.Conv3d(1, 4, 1), None, ForeignPre(activation=activation), "m", "torchscript",
                       out_channels=4)
    return ForeignSegTeacher(found, channels)


def test_a_task_takes_a_subset_of_the_channels_with_the_rest_as_background():
    probs = torch.tensor([[0.1, 0.6], [0.2, 0.1], [0.3, 0.2]])  # used channels 1, 2, 3 at two voxels
    softmax = _teacher("softmax", [[2, 1], [3]])
    classes = softmax.task_probabilities(0, probs)
    torch.testing.assert_close(classes, torch.tensor([[0.7, 0.3], [0.2, 0.1], [0.1, 0.6]]))  # bg, ch 2, ch 1
    torch.testing.assert_close(softmax.task_probabilities(1, probs).sum(0), torch.ones(2))
    sigmoid = _teacher("sigmoid", [[1, 2]])  # independent channels: bg = prod(1 - p), the rest shared
    classes = sigmoid.task_probabilities(0, probs)
    torch.testing.assert_close(classes[0], torch.tensor([0.9 * 0.8, 0.4 * 0.9]))
    torch.testing.assert_close(classes.sum(0), torch.ones(2))
    assert classes[1, 1] > classes[2, 1]  # the more likely channel keeps the larger share


def test_a_bundle_without_channel_names_is_used_by_index(tmp_path):
    meta = metadata(None)
    bundle = _tiny_bundle(tmp_path / "nameless", meta=meta)
    found = load_bundle_foundation(bundle)
    assert found.channels is None and found.channel_index(3, "x") == 3 and found.label_of(3) == "channel 3"
    with pytest.raises(ConfigError, match="names no channels: use indices"):
        found.channel_index("liver", "tasks.0.teacher_labels.0")


@pytest.mark.parametrize("name, kwargs", [
    ("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 5, "channels": [16, 32, 64], "strides": [2, 2],
              "num_res_units": 1}),
    ("BasicUNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 5, "features": [16, 16, 32, 64, 128, 16]}),
    ("SegResNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 5, "init_filters": 32,
                   "blocks_down": [1, 2, 2], "blocks_up": [1, 1]}),
    ("DynUNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 5, "kernel_size": [3, 3, 3],
                 "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [16, 32, 64],
                 "deep_supervision": True, "deep_supr_num": 1}),
])
def test_a_student_of_the_same_architecture_is_narrower_and_its_experts_merge_exactly(name, kwargs):
    """arch same: the foundation model's class at a quarter of its width, experts on every conv (decoder convs at
    twice the rank), each merged expert equal to the routed backbone."""
    from core.experts import expert_layers, merge_expert, route
    from core.kinds.segmentation.models import build_seg_backbone, same_architecture, seg_expert_network

    arch, channels, spec = same_architecture(name, kwargs, 0.25, "backbone.arch")
    assert arch == f"monai.{name}"
    net = build_seg_backbone(arch, 1, [2, 3], channels, ranks=[2, 2], spec=spec)
    import monai.networks.nets as nets

    teacher_params = sum(p.numel() for p in getattr(nets, name)(**kwargs).parameters())
    assert sum(p.numel() for p in merge_expert(net.body, None).parameters()) < teacher_params / 4
    ranks = {layer.ranks[0] for layer in expert_layers(net.body)}
    assert ranks == {2, 4}  # encoder and decoder convs
    torch.manual_seed(0)
    for layer in expert_layers(net.body):  # non-zero experts, so that merging has something to merge
        for p in layer.parameters():
            if p.requires_grad and p.dim() > 1:
                torch.nn.init.normal_(p, std=0.05)
    net.eval()
    x = torch.randn(1, 1, 32, 32, 32)  # BasicUNet halves four times
    tid = torch.tensor([1])
    with torch.no_grad(), route(net, tid):
        routed = net(x, tid)[1][1]
    expert = seg_expert_network(merge_expert(net.body, 1), net.heads[1], arch, 1, channels, spec=spec)
    with torch.no_grad():
        torch.testing.assert_close(expert(x), routed, rtol=1e-4, atol=1e-4)


def test_a_foundation_model_that_cannot_be_shrunk_says_why():
    from core.kinds.segmentation.models import same_architecture

    with pytest.raises(ConfigError, match="backbone.arch: arch same works for UNet, BasicUNet, SegResNet and "
                                          "DynUNet.*SwinUNETR"):
        same_architecture("SwinUNETR", {"img_size": 96}, 0.25, "backbone.arch")
    with pytest.raises(ConfigError, match="without a network_def"):
        same_architecture(None, None, 0.25, "backbone.arch")
