"""Segmentation volumes streamed from the volume cache (`data.stream`): the same patches as in RAM, the cache reused
and redone when a file or setting changes, entries that stay whole when written twice or left half-written."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.kinds import load_config
from core.kinds.segmentation import data as seg_data
from core.kinds.segmentation.cache import CachedArray, VolumeCache, foreground_sample
from core.kinds.segmentation.data import SegPatchDataset, load_task_cases
from core.kinds.segmentation.evaluate import LazyPatches, val_patches
from core.kinds.segmentation.synthetic import synthetic_volume, write_synthetic_task


def _raw(root, stream="off", spacing=(2, 2, 2)) -> dict:
    a = write_synthetic_task(root / "a", 3, "sphere", seed=1) if not (root / "a").exists() else \
        (root / "a" / "images", root / "a" / "labels")
    b = write_synthetic_task(root / "b", 1, "cube", seed=2) if not (root / "b").exists() else \
        (root / "b" / "images", root / "b" / "labels")
    return {
        "name": "stream", "kind": "segmentation",
        "tasks": [  # three volumes: whole volumes held out; one volume: regions of it held out
            {"name": "balls", "images": str(a[0]), "labels": str(a[1]), "label_names": {1: "ball"}},
            {"name": "cubes", "images": str(b[0]), "labels": str(b[1]), "label_names": {1: "shell", 2: "core"}},
        ],
        "data": {"spacing": list(spacing), "patch_size": [16, 16, 16], "samples_per_volume": 6, "region_mm": 12,
                 "test_fraction": 0.25, "val_fraction": 0.25, "stream": stream, "cache_dir": str(root / "cache")},
        "teacher": {"channels": [8, 16, 32]}, "backbone": {"channels": [4, 8, 16]},
    }


def _load(raw):
    told: list[str] = []
    cases = load_task_cases(load_config(raw), warn=told.append)
    return cases, [m for m in told if m.startswith("volume cache")]


def test_streamed_patches_and_validation_patches_equal_the_in_ram_ones(tmp_path):
    (train_ram, val_ram, test_ram), told = _load(_raw(tmp_path, "off"))
    assert told == [] and not (tmp_path / "cache").exists()
    (train_disk, val_disk, test_disk), told = _load(_raw(tmp_path, "on"))
    assert told == [f"volume cache {tmp_path / 'cache'}: preprocessed 4 volume(s), reused 0"]
    assert all(isinstance(c.image, CachedArray) and isinstance(c.label, CachedArray) for cs in train_disk for c in cs)
    assert train_disk[1][0].held and not train_disk[0][0].held  # the one-volume task holds out regions
    assert [[c.name for c in cs] for cs in test_disk] == [[c.name for c in cs] for cs in test_ram]
    ram = SegPatchDataset(train_ram, [16, 16, 16], 6, 2.0, seed=3)
    disk = SegPatchDataset(train_disk, [16, 16, 16], 6, 2.0, seed=3)
    assert len(ram) == len(disk)
    saw_ignore = False
    for epoch in (0, 1):
        ram.set_epoch(epoch)
        disk.set_epoch(epoch)
        a, b = ram.__getitems__(range(len(ram))), disk.__getitems__(range(len(disk)))
        for key in ("image", "label", "task"):  # float32 in the cache: exactly equal
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        saw_ignore |= bool((b["label"] == seg_data.IGNORE).any())
    assert saw_ignore  # the held-out regions read as IGNORE in streamed patches too
    for cases_ram, cases_disk in zip(val_ram, val_disk, strict=True):
        (xi, yi), (xd, yd) = val_patches(cases_ram, [16, 16, 16]), val_patches(cases_disk, [16, 16, 16])
        assert isinstance(xd, LazyPatches) and len(xd) == len(xi) > 0
        assert torch.equal(xd[0:len(xd)], xi) and torch.equal(yd[0:4, 0], yi[0:4, 0]) and torch.equal(yd[-1], yi[-1])


def test_a_second_open_reuses_the_cache_and_a_changed_file_or_spacing_is_redone(tmp_path, monkeypatch):
    _load(_raw(tmp_path, "on"))
    real = seg_data.load_pair
    calls = []
    monkeypatch.setattr(seg_data, "load_pair", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    (train, _, _), told = _load(_raw(tmp_path, "on"))
    assert told == [f"volume cache {tmp_path / 'cache'}: preprocessed 0 volume(s), reused 4"] and calls == []
    import SimpleITK as sitk

    changed = tmp_path / "a" / "images" / "case01.nii.gz"
    img = sitk.GetImageFromArray(synthetic_volume(seed=99)[0])
    img.SetSpacing((1.5, 1.5, 2.0))
    img.SetOrigin((-10.0, 5.0, 2.0))
    sitk.WriteImage(img, str(changed))
    _, told = _load(_raw(tmp_path, "on"))
    assert told[0].endswith("preprocessed 1 volume(s), reused 3") and calls == [changed]
    _, told = _load(_raw(tmp_path, "on", spacing=(2, 2, 3)))
    assert told[0].endswith("preprocessed 4 volume(s), reused 0")


def _entry():
    label = np.zeros((4, 5, 6), np.uint8)
    label[1:3, 2:4, 3:5] = 1
    image = np.random.default_rng(0).random((1, 4, 5, 6), dtype=np.float32)
    arrays = {"image": image, "label": label, "foreground": np.packbits(np.ones((4, 5, 6), bool), axis=-1),
              "fg_index": foreground_sample(label, "ab" * 32)}
    meta = {"has_label": True, "canonical_shape": [4, 5, 6], "work_shape": [4, 5, 6]}
    return arrays, meta


def test_entries_written_at_once_or_left_half_written_stay_whole(tmp_path):
    key = "cd" * 32
    arrays, meta = _entry()
    # a killed writer's temporary folder, and a damaged entry: ignored / rebuilt
    (tmp_path / f".tmp-{key[:16]}-1-dead").mkdir()
    (tmp_path / f".tmp-{key[:16]}-1-dead" / "image.npy").write_bytes(b"\x93NUMPY half")
    broken = tmp_path / key
    broken.mkdir()
    (broken / "meta.json").write_text('{"format": 1, "has_label": true')
    caches = [VolumeCache(tmp_path) for _ in range(4)]
    barrier = threading.Barrier(4)
    entries = [None] * 4

    def build():
        return arrays, meta

    def work(i):
        barrier.wait()
        entries[i] = caches[i].get(key, build)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c.prepared for c in caches) == 1 and sum(c.reused for c in caches) == 3  # one built, the others waited
    for entry in entries:
        assert np.array_equal(entry.image[...], arrays["image"])
        assert np.array_equal(entry.label[1:3], arrays["label"][1:3])
        assert entry.foreground[1:3, 0:5, 2:6].all() and entry.fg_index.tolist() == arrays["fg_index"].tolist()
    caches[0]._write(key, *_entry())  # a second writer of a finished entry: its rename fails, the entry stays
    assert np.array_equal(caches[0].open(key).image[...], arrays["image"])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == \
        sorted([key, f".tmp-{key[:16]}-1-dead"])


def test_patch_centres_come_from_bounded_samples(tmp_path, monkeypatch):
    label = np.zeros((40, 40, 40), np.uint8)
    label[5:35, 5:35, 5:35] = 1
    sample = foreground_sample(label, "ef" * 32, cap=50)
    assert len(sample) == 50 and np.all(np.diff(sample) > 0) and np.all(label.reshape(-1)[sample] == 1)
    assert np.array_equal(sample, foreground_sample(label, "ef" * 32, cap=50))  # seeded by the key
    monkeypatch.setattr(seg_data, "FOREGROUND_CAP", 100)
    held = [(slice(0, 20), slice(0, 40), slice(0, 40))]
    case = seg_data.SegCase(torch.zeros(1, 40, 40, 40), torch.as_tensor(label), "x", (1.0, 1.0, 1.0),
                            held=held, fg_index=sample)
    fg, anywhere = seg_data._streamed_pools(case, seed=0)
    assert len(anywhere) <= 100 and np.all(np.unravel_index(anywhere, (40, 40, 40))[0] >= 20)
    assert np.all(np.unravel_index(fg, (40, 40, 40))[0] >= 20) and 0 < len(fg) < 50


def test_stream_and_cache_dir_are_validated(tmp_path, monkeypatch):
    raw = _raw(tmp_path)
    with pytest.raises(ConfigError, match="data.stream"):
        load_config({**raw, "data": {**raw["data"], "stream": "sometimes"}})
    with pytest.raises(ConfigError, match="data.cache_dir"):
        load_config({**raw, "data": {**raw["data"], "cache_dir": " "}})
    config = load_config({**raw, "data": {**raw["data"], "stream": "auto"}})
    assert not seg_data.stream_volumes(config)  # tiny volumes stay in RAM
    monkeypatch.setattr(seg_data, "STREAM_AUTO_BYTES", 1000)
    assert seg_data.stream_volumes(config)
    monkeypatch.setenv("LORKD_CACHE", str(tmp_path / "shared"))
    from core.kinds.segmentation.cache import cache_root

    assert cache_root(None) == tmp_path / "shared" / "volumes" and cache_root("~/x").name == "x"
