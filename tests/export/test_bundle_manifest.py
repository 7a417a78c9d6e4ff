"""Untrusted bundles (issue 16): SHA256SUMS at export, every load checked against it before anything else is read,
the metadata checked field by field, `lorkd verify`, and model cards that say to check a bundle before running it.

`lorkd apply` on each tampering of `TAMPERINGS` is in the bad-input corpus (tests/badinput); here: `lorkd verify`
on the same tamperings, `sha256sum -c`, bundles exported before the manifest, and the metadata checks one by one.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main as lorkd
from core.errors import BundleError
from core.export.bundle import check_metadata
from core.export.manifest import MANIFEST_FILE, parse_manifest, walk
from core.export.weights import load_weights, sha256_file
from tests.badinput.badinput_corpus import (
    TAMPERINGS,
    cls_bundle,
    edit_metadata,
    good_pair,
    seg_bundle,
    tamper_bundle,
    zip_bundle,
)

pytestmark = pytest.mark.timeout(120)  # a bundle that made a reader block (/dev/zero, a FIFO) fails, not hangs


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    image = root / "x.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    volume, _ = good_pair(root / "volume")
    return {"cls": cls_bundle(root / "toy"), "seg": seg_bundle(root / "cubes"), "image": image, "volume": volume}


def run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """`lorkd ARGV` in-process: (exit code, stdout, the non-empty stderr lines)."""
    capsys.readouterr()
    code = lorkd(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def apply_argv(bundles: dict, bundle: Path, kind: str, out: Path) -> list[str]:
    return ["apply", str(bundle), str(bundles["volume" if kind == "seg" else "image"]), "--out", str(out)]


def make_legacy(bundle: Path) -> Path:
    """`bundle` as LoRKD Studio wrote it before SHA256SUMS existed."""
    (bundle / MANIFEST_FILE).unlink()
    (bundle / "scripts" / "export" / "manifest.py").unlink()
    edit_metadata(bundle, lambda lorkd: lorkd.pop("manifest"))
    return bundle


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_manifest_lists_every_other_file_with_its_size_and_sha256(bundles, kind):
    bundle = bundles[kind]
    entries = parse_manifest((bundle / MANIFEST_FILE).read_text())
    files, others = walk(bundle)
    assert not others
    assert set(entries) == set(files) - {MANIFEST_FILE}
    for rel in ("configs/metadata.json", "configs/inference.json", "docs/README.md", "labels.json",
                "scripts/export/manifest.py", "models/model.pt"):
        assert rel in entries, rel
    for rel, entry in entries.items():
        assert entry.size == (bundle / rel).stat().st_size and entry.sha256 == sha256_file(bundle / rel), rel
    lorkd_block = json.loads((bundle / "configs/metadata.json").read_text())["lorkd"]
    assert lorkd_block["manifest"] == MANIFEST_FILE
    assert lorkd_block["model_sha256"] == entries["models/model.pt"].sha256  # the metadata's own record stays


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="no sha256sum on this machine")
def test_sha256sum_checks_a_bundle_without_our_app(bundles, tmp_path):
    result = subprocess.run(["sha256sum", "--strict", "-c", MANIFEST_FILE], cwd=bundles["cls"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.endswith(": OK") for line in lines) and "configs/inference.json: OK" in lines
    tamper_bundle(bundles["cls"], tmp_path / "b", "configs/inference.json runs os.system")
    result = subprocess.run(["sha256sum", "-c", MANIFEST_FILE], cwd=tmp_path / "b", capture_output=True, text=True)
    assert result.returncode != 0 and "configs/inference.json: FAILED" in result.stdout


# ------------------------------------------------------------------------------------------------ lorkd verify
@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_verify_passes_an_untouched_bundle_folder_or_zip(bundles, kind, tmp_path, capsys):
    fingerprint = sha256_file(bundles[kind] / MANIFEST_FILE)
    for target in (bundles[kind], zip_bundle(bundles[kind], tmp_path / "bundle.zip")):
        code, out, err = run(["verify", str(target)], capsys)
        assert code == 0 and not err, err
        for words in ("SHA256SUMS: the", "every field the loaders use is valid", "weights_only", fingerprint,
                      "ok: unchanged since export"):
            assert words in out, (words, out)


@pytest.mark.parametrize("problem", list(TAMPERINGS))
def test_verify_names_what_differs(bundles, problem, tmp_path, capsys):
    kind, words = TAMPERINGS[problem]
    if problem in ("script is a symlink", "model file is a FIFO") and not hasattr(os, "mkfifo"):
        pytest.skip("no symlinks or FIFOs here")
    bad = tamper_bundle(bundles[kind], tmp_path / "bundle", problem)
    code, out, err = run(["verify", str(tmp_path / "bundle")], capsys)
    assert code == 2 and err and all(line.startswith("error: ") for line in err), err
    assert "Traceback" not in out + "".join(err)
    assert any(str(bad) in line and all(w in line for w in words) for line in err), (bad, words, err)
    assert "do not run this bundle" in out
    assert not (tmp_path / "PWNED").exists()


def test_verify_lists_every_problem_and_apply_the_first(bundles, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    tamper_bundle(bundles["cls"], bundle, "scripts/evil.py added")
    (bundle / "labels.csv").unlink()
    model = bundle / "models" / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    code, _, err = run(["verify", str(bundle)], capsys)
    assert code == 2 and len(err) == 3, err
    assert "labels.csv is missing" in err[0]
    assert f"{model} does not match the SHA-256" in err[1]
    assert f"{bundle / 'scripts' / 'evil.py'} is not listed" in err[2]
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "scores.json"), capsys)
    assert code == 2 and len(err) == 1 and "labels.csv is missing" in err[0], err
    assert "(and 2 more problems: `lorkd verify" in err[0]
    assert not (tmp_path / "scores.json").exists()


def test_unlisted_files_that_cannot_run_are_notes(bundles, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["cls"], bundle)
    (bundle / "docs" / "my notes.txt").write_text("read me")
    (bundle / ".DS_Store").write_bytes(b"\0" * 10)
    code, out, err = run(["verify", str(bundle)], capsys)
    assert code == 0 and not err, err
    assert "note: " in out and "my notes.txt is not listed in SHA256SUMS (not part of the export" in out
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "scores.json"), capsys)
    assert code == 0 and (tmp_path / "scores.json").is_file(), err
    (bundle / "SimpleITK.py").write_text("import os\n")  # the bundle root is on sys.path when MONAI runs it
    code, _, err = run(["verify", str(bundle)], capsys)
    assert code == 2 and len(err) == 1 and "SimpleITK.py is not listed" in err[0] and "Python code" in err[0], err


def test_verify_refuses_what_is_not_a_bundle(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and len(err) == 1 and "does not exist" in err[0], err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["verify", str(tmp_path / "empty")], capsys)
    assert code == 2 and len(err) == 1 and "configs/metadata.json" in err[0], err


# ------------------------------------------------------------------------------------------------ old bundles
def test_bundle_exported_before_the_manifest_still_loads_but_does_not_verify(bundles, tmp_path, capsys):
    bundle = make_legacy(shutil.copytree(bundles["cls"], tmp_path / "old"))
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "scores.json"), capsys)
    assert code == 0 and (tmp_path / "scores.json").is_file(), err
    code, out, err = run(["verify", str(bundle)], capsys)
    assert code == 2 and len(err) == 1 and f"{bundle} has no SHA256SUMS" in err[0] and "re-export" in err[0], err
    assert "models/model.pt: the SHA-256 recorded in the metadata" in out  # what could be checked was
    # its weights are still checked, and model_file still confined: no manifest is no way around the checks
    model = bundle / "models" / "model.pt"
    edit_metadata(bundle, lambda lorkd: lorkd.update(model_file="/dev/zero"))
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "b.json"), capsys)
    assert code == 2 and "lorkd.model_file '/dev/zero' is an absolute path" in err[0], err
    edit_metadata(bundle, lambda lorkd: lorkd.pop("model_file"))
    model.unlink()
    model.symlink_to("/dev/zero")
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "b.json"), capsys)
    assert code == 2 and len(err) == 1 and f"{model} is a symbolic link" in err[0], err
    assert not (tmp_path / "b.json").exists()


def test_a_deleted_manifest_is_not_a_way_around_it(bundles, tmp_path, capsys):
    bundle = shutil.copytree(bundles["cls"], tmp_path / "b")
    (bundle / MANIFEST_FILE).unlink()
    code, _, err = run(apply_argv(bundles, bundle, "cls", tmp_path / "scores.json"), capsys)
    assert code == 2 and len(err) == 1 and "SHA256SUMS is missing although configs/metadata.json records one" in \
        err[0], err


# ------------------------------------------------------------------------------------------------ the metadata
CHANGES = {  # lorkd block change -> words of the error
    "label_names duplicated": (lambda m: m.update(label_names=["a", "a", "c"]), "lorkd.label_names must be unique"),
    "label_names not strings": (lambda m: m.update(label_names=[1, 2, 3]), "lorkd.label_names must be a list"),
    "num_classes a bool": (lambda m: m["network"].update(num_classes=True), "lorkd.network.num_classes"),
    "num_classes a float": (lambda m: m["network"].update(num_classes=3.0), "lorkd.network.num_classes"),
    "network missing": (lambda m: m.pop("network"), "lacks network"),
    "network arg missing": (lambda m: m["network"].pop("arch"), "lorkd.network lacks arch"),
    "spatial_dims 4": (lambda m: m["network"].update(spatial_dims=4), "lorkd.network.spatial_dims must be one of 2"),
    "in_channels disagree": (lambda m: m["preprocessing"].update(in_channels=3),
                             "lorkd.preprocessing.in_channels must be network.in_channels (1)"),
    "image_size zero": (lambda m: m["preprocessing"].update(image_size=0), "lorkd.preprocessing.image_size"),
    "image_size missing": (lambda m: m["preprocessing"].pop("image_size"), "lorkd.preprocessing lacks image_size"),
    "kind unknown": (lambda m: m.update(kind="regression"), "lorkd.kind must be one of multiclass, multilabel"),
    "task a string": (lambda m: m.update(task="toy"), "lorkd.task must be an object with a name"),
    "task num_classes": (lambda m: m["task"].update(num_classes=5), "lorkd.task.num_classes is 5"),
    "sha256 short": (lambda m: m.update(model_sha256="abc"), "lorkd.model_sha256 must be 64 hexadecimal digits"),
    "model_file ..": (lambda m: m.update(model_file="../model.pt"), "points outside the bundle"),
    "preprocessing a list": (lambda m: m.update(preprocessing=[]), "lorkd.preprocessing must be an object"),
}
SEG_CHANGES = {
    "patch_size floats": (lambda m: m["preprocessing"].update(patch_size=[16.0, 16, 16]),
                          "lorkd.preprocessing.patch_size must be a list of 3 positive integers"),
    "spacing two values": (lambda m: m["preprocessing"].update(spacing=[1, 1]), "lorkd.preprocessing.spacing"),
    "spacing NaN": (lambda m: m["preprocessing"].update(spacing=[1, float("nan"), 1]), "lorkd.preprocessing.spacing"),
    "overlap 1": (lambda m: m["preprocessing"].update(overlap=1.0), "lorkd.preprocessing.overlap must be a number"),
    "blend": (lambda m: m["preprocessing"].update(blend="max"), "lorkd.preprocessing.blend must be one of gaussian"),
    "axcodes": (lambda m: m["preprocessing"].update(axcodes="XYZ"), "lorkd.preprocessing.axcodes must be one of RAS"),
    "intensity low > high": (lambda m: m["preprocessing"]["intensity"].update(low=99.0, high=1.0), "low < high"),
    "percentile 150": (lambda m: m["preprocessing"]["intensity"].update(high=150), "within [0, 100]"),
    "intensity low a string": (lambda m: m["preprocessing"]["intensity"].update(low="0.5"),
                               "lorkd.preprocessing.intensity.low must be a finite number"),
    "range without a_min": (lambda m: m["preprocessing"]["intensity"].update(mode="range"),
                            "lorkd.preprocessing.intensity.a_min is missing"),
    "channels with a zero": (lambda m: m["network"].update(channels=[4, 0, 16]), "lorkd.network.channels"),
    "res_units negative": (lambda m: m["network"].update(res_units=-1), "lorkd.network.res_units"),
    "task missing": (lambda m: m.pop("task"), "lacks task"),
    "label_names vs num_classes": (lambda m: m.update(label_names=["background", "shell"]),
                                   "lorkd.label_names has 2 names but network.num_classes is 3"),
}


def _metadata(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("kind, name", [("cls", n) for n in CHANGES] + [("seg", n) for n in SEG_CHANGES])
def test_every_metadata_field_the_loaders_use_is_checked(bundles, kind, name):
    change, words = (CHANGES if kind == "cls" else SEG_CHANGES)[name]
    metadata = _metadata(bundles[kind])
    keys = ("arch", "spatial_dims", "in_channels", "num_classes") if kind == "cls" else ("arch", "num_classes")
    assert check_metadata(bundles[kind], metadata, keys)  # untouched: fine
    change(metadata["lorkd"])
    with pytest.raises(BundleError) as info:
        check_metadata(bundles[kind], metadata, keys)
    message = str(info.value)
    assert words in message and "\n" not in message, message
    assert message.startswith(f"expert bundle {bundles[kind]}: invalid configs/metadata.json: "), message


# ------------------------------------------------------------------------------------------------ the bundle's own code
def test_the_bundles_own_loader_checks_the_listed_files(bundles, tmp_path):
    from core.kinds.classification.nets import ClassifierNet

    bundle = shutil.copytree(bundles["cls"], tmp_path / "b")
    lorkd_block = _metadata(bundle)["lorkd"]
    net = ClassifierNet(**lorkd_block["network"])
    cache = bundle / "scripts" / "__pycache__"  # what a run without `python -B` leaves: not refused at run time
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    assert not load_weights(net, bundle).training
    (bundle / "labels.json").write_text('{"labels": []}')
    with pytest.raises(ValueError, match=r"labels\.json .*SHA256SUMS"):
        load_weights(net, bundle)
    shutil.copyfile(bundles["cls"] / "labels.json", bundle / "labels.json")
    (bundle / MANIFEST_FILE).unlink()
    with pytest.raises(ValueError, match="SHA256SUMS is missing although configs/metadata.json records one"):
        load_weights(net, bundle)
    edit_metadata(bundle, lambda lorkd: lorkd.update(model_file="/dev/zero"))
    with pytest.raises(ValueError, match="model_file '/dev/zero' is an absolute path"):
        load_weights(net, bundle)


# ------------------------------------------------------------------------------------------------ model cards
def _module_level_imports(bundle: Path) -> set[str]:
    """Top-level packages the bundle's scripts import when loaded, besides the standard library."""
    names = set()
    for path in (bundle / "scripts").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_model_card_says_to_check_first_and_what_running_needs(bundles, kind):
    card = (bundles[kind] / "docs" / "README.md").read_text()
    run_at = card.index("python -B -m monai.bundle run --config_file BUNDLE/configs/inference.json")
    for words in ("sha256sum -c SHA256SUMS", "lorkd verify BUNDLE", "executes this bundle's configs"):
        assert -1 < card.index(words) < run_at, words
    needs = card[card.index("Then run it with Python and"):run_at]
    imported = _module_level_imports(bundles[kind])
    assert imported >= {"torch", "numpy", "monai", "SimpleITK"}, imported
    for name in [*imported, "fire"]:
        assert f"`{name}`" in needs, (name, needs)
    versions = _metadata(bundles[kind])["required_packages_version"]
    assert "fire" in versions and "SimpleITK" in versions
