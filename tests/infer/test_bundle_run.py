"""An exported expert gives the same numbers through `python -m monai.bundle run` (a fresh interpreter of the
installed packages only, another working directory; the bundles one after the other in one interpreter start:
`tests.bundle_batch`), through `apply_expert`, and as a direct ClassifierNet forward pass."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from core.errors import BundleError, DataError
from core.kinds.classification.apply import apply_expert
from core.kinds.classification.bundle import write_bundle
from core.kinds.classification.nets import ClassifierNet
from core.kinds.classification.runtime import load_image
from core.preprocess.image import prepare
from tests.bundle_batch import start_bundles
from tests.bundle_env import project_importable

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
SIZE = 28
TASKS = {
    "grey": {
        "name": "toygrey",
        "kind": "multiclass",
        "num_classes": 3,
        "label_names": ["normal", "benign", "malignant"],
        "spatial_dims": 2,
        "rgb": False,
        "source": "toygrey.npz",
    },
    "rgb": {
        "name": "toyrgb",
        "kind": "multilabel",
        "num_classes": 4,
        "label_names": ["effusion", "nodule", "mass", "edema"],
        "spatial_dims": 2,
        "rgb": True,
        "source": "toyrgb.npz",
    },
}


def _net(in_channels: int, num_classes: int, seed: int) -> ClassifierNet:
    torch.manual_seed(seed)
    net = ClassifierNet("resnet10", 2, in_channels, num_classes)
    with torch.no_grad():
        net.head.weight.mul_(30.0)  # random but decisive: probabilities far from uniform
    return net.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two bundles, four images, and every case run through `monai.bundle run` (one interpreter start)."""
    root = tmp_path_factory.mktemp("bundle_run")
    nets = {"grey": _net(1, 3, seed=1), "rgb": _net(3, 4, seed=2)}
    bundles = {}
    for key, net in nets.items():
        bundles[key] = write_bundle(
            root / "experts" / key,
            task=TASKS[key],
            arch="resnet10",
            spatial_dims=2,
            in_channels=net.features.body.conv1.in_channels,
            image_size=SIZE,
            state_dict=net.state_dict(),
            metrics={"metric": "accuracy", "expert": 0.5, "teacher": 0.6},
            training={"run": "test"},
        )
    tampered = root / "experts" / "tampered"
    shutil.copytree(bundles["grey"], tampered)
    data = bytearray((tampered / "models/model.pt").read_bytes())
    data[-64] ^= 0x01
    (tampered / "models/model.pt").write_bytes(bytes(data))

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    grey = np.zeros((40, 52), np.uint8)
    grey[5:20, 30:50] = 220  # asymmetric content: a transposed or flipped read would change the scores
    grey += rng.integers(0, 30, grey.shape, dtype=np.uint8)
    Image.fromarray(grey).save(images / "grey.png")
    np.save(images / "slice.npy", rng.normal(100.0, 30.0, (33, 21)).astype(np.float32))
    shutil.copyfile(CT_SMALL, images / "ct.dcm")
    rgb = rng.integers(0, 256, (36, 30, 3), dtype=np.uint8)
    rgb[:10, :, 0] = 255
    Image.fromarray(rgb).save(images / "rgb.png")

    cwd = root / "elsewhere"  # another working directory, with a decoy `scripts` package in it
    (cwd / "scripts").mkdir(parents=True)
    (cwd / "scripts" / "__init__.py").write_text("raise ImportError('decoy scripts package imported')\n")
    cases = {
        "png": ("grey", images / "grey.png", "png.json"),
        "npy": ("grey", images / "slice.npy", "npy.json"),
        "dcm": ("grey", images / "ct.dcm", "dcm.csv"),
        "rgb": ("rgb", images / "rgb.png", "rgb.json"),
        "tampered": (None, images / "grey.png", "tampered.json"),
    }
    jobs = [(bundles[key] if key else tampered, image, root / "out" / out) for key, image, out in cases.values()]
    runs = start_bundles(jobs, cwd, root / "logs").results(timeout=240)
    results = {name: (code, log, root / "out" / cases[name][2])
               for name, (code, log) in zip(cases, runs, strict=True)}
    return {"bundles": bundles, "nets": nets, "cases": cases, "results": results, "tampered": tampered, "cwd": cwd}


def test_bundles_run_where_the_project_cannot_be_imported(setup):
    """The bundle processes above ran with `python -S` and no project on the path: their scripts import only
    each other and installed packages (a script importing `core` would have failed every case)."""
    assert not project_importable(setup["cwd"])
    assert all(setup["results"][case][0] == 0 for case in ("png", "npy", "dcm", "rgb"))


def _scores(path: Path) -> dict[str, float]:
    if path.suffix == ".json":
        return json.loads(path.read_text())["scores"]
    header, row = list(csv.reader(path.open()))
    return {label: float(v) for label, v in zip(header[4:], row[4:], strict=True)}


@pytest.mark.parametrize("case", ["png", "npy", "dcm", "rgb"])
def test_bundle_run_equals_apply_expert_and_direct_forward(setup, case, tmp_path):
    key, image, _ = setup["cases"][case]
    code, log, out = setup["results"][case]
    assert code == 0, log[-3000:]
    from_bundle = _scores(out)

    applied = apply_expert(setup["bundles"][key], image, tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == applied
    assert list(applied["scores"]) == TASKS[key]["label_names"]

    net = setup["nets"][key]
    in_channels = net.features.body.conv1.in_channels
    with torch.no_grad():
        logits = net(prepare(load_image(image)[None], SIZE, in_channels, 2))
    kind = TASKS[key]["kind"]
    direct = (torch.softmax(logits, 1) if kind == "multiclass" else torch.sigmoid(logits))[0].numpy()

    names = TASKS[key]["label_names"]
    np.testing.assert_allclose([from_bundle[n] for n in names], direct, rtol=0, atol=1e-5)
    np.testing.assert_allclose([applied["scores"][n] for n in names], direct, rtol=0, atol=1e-5)
    assert np.ptp(direct) > 0.05  # the check has teeth: scores are not all alike
    if kind == "multiclass":
        assert applied["prediction"] == names[int(np.argmax(direct))]
    else:
        assert applied["prediction"] == [n for n, p in zip(names, direct, strict=True) if p >= 0.5]


def test_bundle_run_refuses_a_tampered_model(setup):
    code, log, out = setup["results"]["tampered"]
    assert code != 0
    assert "does not match the SHA-256 recorded at export" in log
    assert not out.exists()


def test_bundle_run_did_not_touch_the_bundle(setup):
    for bundle in setup["bundles"].values():
        assert not list(bundle.rglob("__pycache__"))


def test_apply_expert_errors_are_one_line(setup, tmp_path):
    grey, image = setup["bundles"]["grey"], setup["cases"]["png"][1]
    cases = [
        (BundleError, "does not exist", lambda: apply_expert(tmp_path / "nope", image, tmp_path / "o.json")),
        (BundleError, "SHA-256", lambda: apply_expert(setup["tampered"], image, tmp_path / "o.json")),
        (
            DataError,
            "no such file",
            lambda: apply_expert(grey, tmp_path / "missing.png", tmp_path / "o.json"),
        ),
        (DataError, "use .json or .csv", lambda: apply_expert(grey, image, tmp_path / "o.txt")),
    ]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases.append((DataError, "broken.png", lambda: apply_expert(grey, tmp_path / "broken.png", None)))
    incomplete = tmp_path / "incomplete"
    shutil.copytree(grey, incomplete)
    (incomplete / "models/model.pt").unlink()
    cases.append(
        (BundleError, "model file models/model.pt is missing", lambda: apply_expert(incomplete, image, None))
    )
    for error, message, call in cases:
        with pytest.raises(error, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.txt").exists()
