"""core.export.bundle: write_bundle / load_bundle / validate_metadata (in-process, small, fast)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from monai.bundle import ConfigParser

import core.kinds.classification.bundle as bundle_mod
from core.errors import BundleError
from core.export.schema import SCHEMA_PATH, load_schema, validate_metadata
from core.export.weights import sha256_file
from core.kinds.classification import nets, runtime
from core.kinds.classification.bundle import load_bundle, write_bundle
from core.kinds.classification.nets import ClassifierNet
from core.preprocess import image as preprocess_image

TASK = {
    "name": "toymnist",
    "kind": "multiclass",
    "num_classes": 3,
    "label_names": ["benign", "malignant", "normal"],
    "spatial_dims": 2,
    "rgb": False,
    "source": "toymnist.npz",
}
METRICS = {"metric": "accuracy", "expert": 0.91, "teacher": 0.93, "expert_metrics": {"accuracy": 0.91, "auc": 0.95},
           "teacher_metrics": {"accuracy": 0.93, "auc": 0.97}, "expert_minus_teacher": -0.02,
           "expert_minus_teacher_ci": [-0.05, 0.01], "test_cases": 90}
TRAINING = {"run": "demo", "teacher": "resnet18", "rank": 4, "epochs": 2}


def _state(in_channels: int = 1, num_classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return ClassifierNet("resnet10", 2, in_channels, num_classes).state_dict()


def _export(out: Path, **over) -> Path:
    kwargs = dict(
        task=TASK,
        arch="resnet10",
        spatial_dims=2,
        in_channels=1,
        image_size=28,
        state_dict=_state(),
        metrics=METRICS,
        training=TRAINING,
    )
    kwargs.update(over)
    return write_bundle(out, **kwargs)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "experts" / "toymnist")


def test_layout_and_copies(bundle):
    for rel in (
        "configs/metadata.json",
        "configs/inference.json",
        "configs/logging.conf",
        "models/model.pt",
        "scripts/__init__.py",
        "scripts/kinds/classification/nets.py",
        "scripts/kinds/classification/runtime.py",
        "scripts/preprocess/image.py",
        "scripts/export/weights.py",
        "docs/README.md",
        "labels.json",
        "labels.csv",
    ):
        assert (bundle / rel).is_file(), rel
    assert (bundle / "scripts/kinds/classification/nets.py").read_bytes() == Path(nets.__file__).read_bytes()
    assert (bundle / "scripts/kinds/classification/runtime.py").read_bytes() == Path(runtime.__file__).read_bytes()
    assert not [p.name for p in bundle.parent.iterdir() if p.name != "toymnist"]  # no temp litter


def test_metadata_validates_against_the_shipped_monai_schema(bundle):
    schema = load_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert SCHEMA_PATH.name in json.loads((bundle / "configs/metadata.json").read_text())["schema"]
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    validate_metadata(meta)
    jsonschema.validate(meta, schema)  # also straight through jsonschema, as MONAI's verify_metadata does
    assert "research use only" in meta["intended_use"]
    for key in ("monai_version", "pytorch_version", "numpy_version", "required_packages_version"):
        assert meta[key]
    inputs = meta["network_data_format"]["inputs"]["image"]
    assert inputs["num_channels"] == 1 and inputs["spatial_shape"] == [28, 28]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    lorkd = meta["lorkd"]
    assert lorkd["label_names"] == TASK["label_names"]
    assert lorkd["preprocessing"]["image_size"] == 28 and lorkd["preprocessing"]["mean"] == preprocess_image.MEAN
    assert lorkd["model_sha256"] == sha256_file(bundle / "models/model.pt")

    broken = dict(meta)
    del broken["authors"]
    with pytest.raises(BundleError, match="authors"):
        validate_metadata(broken)
    with pytest.raises(BundleError, match=r"network_data_format\.inputs\.image"):
        validate_metadata(
            {**meta, "network_data_format": {"inputs": {"image": {"type": "image"}}, "outputs": {}}}
        )


def test_labels_and_model_card(bundle):
    labels = json.loads((bundle / "labels.json").read_text())
    assert [x["name"] for x in labels["labels"]] == TASK["label_names"]
    rows = list(csv.reader((bundle / "labels.csv").open()))
    assert rows == [["index", "name"], ["0", "benign"], ["1", "malignant"], ["2", "normal"]]
    card = (bundle / "docs/README.md").read_text()
    for text in (
        "Research use only",
        "toymnist",
        "malignant",
        "| accuracy | 0.9100 | 0.9300 | - |",
        "Expert 0.910 vs foundation model 0.930 (accuracy): difference -0.020, 95% CI -0.050 to +0.010, 90 test cases",
        "monai.bundle run",
    ):
        assert text in card, text


def test_model_loads_strict_into_network_def(bundle, monkeypatch):
    """Instantiate `network_def` exactly as MONAI does from configs/inference.json."""
    monkeypatch.syspath_prepend(str(bundle))
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        monkeypatch.delitem(sys.modules, name)
    parser = ConfigParser()
    parser.read_config(bundle / "configs/inference.json")
    parser["bundle_root"] = str(bundle)
    try:
        net = parser.get_parsed_content("network_def")
        assert type(net).__module__ == "scripts.kinds.classification.nets"
        state = torch.load(bundle / "models/model.pt", map_location="cpu", weights_only=True)
        assert net.load_state_dict(state, strict=True).missing_keys == []
    finally:
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]


def test_load_bundle_roundtrip(bundle):
    net, meta = load_bundle(bundle)
    assert not net.training
    expected = _state()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    assert meta["lorkd"]["kind"] == "multiclass"


def test_tampered_or_missing_model_is_refused(tmp_path):
    out = _export(tmp_path / "b")
    model = out / "models/model.pt"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the SHA-256 recorded at export") as info:
        load_bundle(out)
    assert "model.pt" in str(info.value) and "\n" not in str(info.value)
    model.unlink()
    with pytest.raises(BundleError, match="model file models/model.pt is missing"):
        load_bundle(out)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "experts" / "toymnist"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption mid-write")

    monkeypatch.setattr(bundle_mod, "render_model_card", boom)  # after model.pt and the scripts are written
    with pytest.raises(KeyboardInterrupt):
        _export(out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_interrupted_reexport_keeps_the_old_bundle(tmp_path, monkeypatch):
    out = _export(tmp_path / "toymnist")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(bundle_mod.torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        _export(out, state_dict=_state(seed=1))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["toymnist"]
    monkeypatch.undo()
    _export(out, state_dict=_state(seed=1), version="0.2.0")  # a complete re-export replaces it
    assert json.loads((out / "configs/metadata.json").read_text())["version"] == "0.2.0"
    assert [p.name for p in tmp_path.iterdir()] == ["toymnist"]


def test_stale_partials_of_dead_exports_are_cleaned(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".toymnist.partial-{pid}-deadbeef"
    (stale / "models").mkdir(parents=True)
    _export(tmp_path / "toymnist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toymnist"]


def test_refuses_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        _export(tmp_path / "a", state_dict=_state(num_classes=4))
    with pytest.raises(ValueError, match="label names"):
        _export(tmp_path / "a", task={**TASK, "label_names": ["x", "y"]})
    with pytest.raises(ValueError, match="kind"):
        _export(tmp_path / "a", task={**TASK, "kind": "segmentation"})
    assert not (tmp_path / "a").exists()
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(BundleError, match="refusing to replace"):
        _export(precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"
