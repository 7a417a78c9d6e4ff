"""Untrusted files and crash safety: weights are only ever loaded with weights_only=True, zipped bundles
apply like folders (and hostile archives are refused: see the corpus), an interrupted segmentation-bundle
export leaves nothing that looks like a bundle, and a torn last line of metrics.jsonl is survived."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from badinput_corpus import cls_bundle, copy_bundle, leftovers, seg_bundle, zip_bundle

from core.cli import main as lorkd

REPO = Path(__file__).resolve().parents[2]


def _sources():
    for folder in ("core", "app", "benchmarks"):
        yield from (REPO / folder).rglob("*.py")


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    calls = 0
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\((.*?)\)\s*$", text, flags=re.M):
            calls += 1
            assert "weights_only=True" in match.group(1), f"{path}: {match.group(0)}"
        assert "allow_pickle=True" not in text, path
        assert not re.search(r"\bpickle\.loads?\(", text), path
        # TorchScript is loaded in one place only: a foundation model the user names as TorchScript (issue 14)
        if path.name != "foundation.py":
            assert "torch.jit.load" not in text, path
    assert calls >= 3  # core/files.py, the bundle loaders


def test_zipped_bundle_applies_like_its_folder(tmp_path, capsys):
    from PIL import Image

    bundle = cls_bundle(tmp_path / "toy")
    image = tmp_path / "x.png"
    Image.new("L", (28, 28), 90).save(image)
    assert lorkd(["apply", str(bundle), str(image), "--out", str(tmp_path / "a.json")]) == 0
    archive = zip_bundle(bundle, tmp_path / "toy.zip")
    assert lorkd(["apply", str(archive), str(image), "--out", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["scores"] == pytest.approx(b["scores"]) and a["prediction"] == b["prediction"]
    # a tampered model inside an archive: the message names the archive, not the temporary folder
    tampered = copy_bundle(bundle, tmp_path / "tampered", "tampered")
    archive = zip_bundle(tampered, tmp_path / "tampered.zip")
    code = lorkd(["apply", str(archive), str(image), "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert f"{archive}!" in err and "SHA-256" in err and ".lorkd-bundle-" not in err, err
    assert not (tmp_path / "c.json").exists()


def test_interrupted_segmentation_export_leaves_no_bundle(tmp_path, monkeypatch):
    import core.export.bundle as container

    good = seg_bundle(tmp_path / "good")
    calls = {"n": 0}
    real = container.write_bytes_atomic

    def failing_copy(path, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the second script copy: the model is already written, metadata not yet
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(container, "write_bytes_atomic", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        seg_bundle(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # re-exporting over an existing bundle and failing keeps the old bundle untouched
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    calls["n"] = 0
    with pytest.raises(OSError):
        seg_bundle(good)
    after = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    assert after == before
    assert leftovers(tmp_path) == []


def test_metrics_log_survives_a_torn_last_line(tmp_path):
    from core.events import StepEvent
    from core.train.metrics_log import MetricsLog, read_metrics

    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.step(StepEvent(phase="decompose", epoch=0, step=1, steps_total=4, task_losses={"a": 1.0}, loss=1.0,
                       lr=0.1, samples_per_s=10.0))
    complete = read_metrics(path)
    assert len(complete) == 2
    with path.open("a") as fh:  # a crash in the middle of writing a record
        fh.write('{"phase": "decompose", "kind": "train", "epoch": 0, "step": 2, "task": "a", "lo')
    assert read_metrics(path) == complete
    MetricsLog(path).step(StepEvent(phase="decompose", epoch=0, step=2, steps_total=4, task_losses={"a": 0.5},
                                    loss=0.5, lr=0.1, samples_per_s=10.0))  # a resumed run appends
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 1, 2, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # every line is whole again
    # garbage in the middle (a disk error) costs only that line
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "\x00\x00garbage", *lines[1:]]) + "\n")
    assert len(read_metrics(path)) == 4
