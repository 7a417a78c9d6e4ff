"""core.kinds.classification.tasks and core.data.sampling: task specs from a config, the mixed-task dataset, its batch
sampler and loader, augmentation and the per-task label views."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.sampling import MultiTaskBatchSampler, collate_batch, counter_uniform, make_loader
from core.errors import ConfigError, DataError
from core.kinds import load_config
from core.kinds.classification.dataset import MultiTaskDataset, affine_matrices, task_labels
from core.kinds.classification.medmnist import read_split
from core.kinds.classification.synthetic import write_fake_medmnist
from core.kinds.classification.tasks import TaskSpec, build_task_specs, resolve_in_channels
from core.preprocess.image import prepare

SIZE = 28
# name -> write_fake_medmnist arguments: grey flat labels, RGB at 64 px (resized to 28), multi-label
FILES = {
    "organ": {"n": 40, "num_classes": 3, "flat_labels": True, "seed": 1},
    "blood": {"n": 24, "num_classes": 4, "rgb": True, "size": 64, "seed": 2},
    "chest": {"n": 32, "num_classes": 5, "multilabel": True, "seed": 3},
}
TOTAL = sum(f["n"] for f in FILES.values())  # 96


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multitask")
    paths = {name: write_fake_medmnist(root / f"{name}.npz", **kwargs) for name, kwargs in FILES.items()}
    paths["volume"] = write_fake_medmnist(root / "volume.npz", n=8, size=16, spatial_dims=3, num_classes=2)
    return paths


def config(files: dict[str, Path], names=("organ", "blood", "chest"), tasks=None, **data):
    raw = {"tasks": tasks or [{"name": name, "medmnist": str(files[name])} for name in names], "data": data}
    return load_config(raw)


@pytest.fixture(scope="module")
def specs(files) -> list[TaskSpec]:
    return build_task_specs(config(files))


@pytest.fixture(scope="module")
def train_set(specs) -> MultiTaskDataset:
    return MultiTaskDataset(specs, "train", SIZE, 3, augment=False)


# ------------------------------------------------------------------------------------------ task specs
def test_build_task_specs_resolves_kind_classes_names_and_geometry(files, specs):
    assert [(s.name, s.kind, s.num_classes, s.rgb, s.spatial_dims) for s in specs] == [
        ("organ", "multiclass", 3, False, 2),
        ("blood", "multiclass", 4, True, 2),
        ("chest", "multilabel", 5, False, 2),
    ]
    assert specs[0].label_names == ["0", "1", "2"]
    assert specs[2].label_names == ["0", "1", "2", "3", "4"]
    assert [s.metric for s in specs] == ["acc", "acc", "auc"]
    assert specs[1].source == str(files["blood"])
    for spec in specs:
        assert TaskSpec.from_dict({**spec.to_dict(), "future_key": 1}) == spec


def test_in_channels_rgb_task_gives_3_grey_only_gives_1_explicit_wins(files, specs):
    assert resolve_in_channels(config(files), specs) == 3
    grey = config(files, names=("organ", "chest"))
    assert resolve_in_channels(grey, build_task_specs(grey)) == 1
    explicit = config(files, in_channels=1)
    assert resolve_in_channels(explicit, build_task_specs(explicit)) == 1  # RGB averaged to grey


def test_configured_label_names_and_extra_classes(files):
    names = ["liver", "kidney", "spleen", "absent"]  # a class absent from the file
    specs = build_task_specs(config(files, tasks=[{"name": "organ", "medmnist": str(files["organ"]), "labels": names}]))
    assert (specs[0].num_classes, specs[0].label_names) == (4, names)
    # and the dataset reads the file with the configured class count
    assert MultiTaskDataset(specs, "val", SIZE, 1).label_width == 1


@pytest.mark.parametrize(
    ("task", "field", "words"),
    [
        ({"name": "organ", "labels": ["a", "b"]}, "tasks.0.labels", ["2 names given", "3 classes"]),
        ({"name": "chest", "labels": ["a", "b", "c"]}, "tasks.0.labels", ["5 label columns"]),
        ({"name": "organ", "labels": ["a", "a", "b"]}, "tasks.0.labels", ["unique"]),
        ({"name": "organ", "kind": "multilabel"}, "tasks.0.kind", ["multiclass labels"]),
        ({"name": "chest", "kind": "multiclass"}, "tasks.0.kind", ["multilabel labels"]),
    ],
)
def test_config_mismatches_raise_config_error_naming_the_field(files, task, field, words):
    task = {**task, "medmnist": str(files[task["name"]])}
    with pytest.raises(ConfigError) as info:
        build_task_specs(config(files, tasks=[task]))
    message = str(info.value)
    assert message.startswith(f"{field}: ")
    assert all(word in message for word in words), message


def test_mixing_2d_and_3d_tasks_is_a_config_error_naming_the_file(files):
    with pytest.raises(ConfigError) as info:
        build_task_specs(config(files, names=("organ", "volume")))
    message = str(info.value)
    assert message.startswith("tasks.1.medmnist: ") and str(files["volume"]) in message
    assert "3D" in message and "2D" in message


def test_missing_task_file_is_a_data_error_naming_it(files, tmp_path):
    absent = tmp_path / "absent.npz"
    with pytest.raises(DataError, match="absent.npz: no such file"):
        build_task_specs(config(files, tasks=[{"name": "x", "medmnist": str(absent)}]))


# ------------------------------------------------------------------------------------------ dataset
def test_dataset_layout_items_and_preprocessing(files, specs, train_set):
    ds = train_set
    assert len(ds) == TOTAL and ds.task_sizes == [40, 24, 32] and ds.task_offsets == [0, 40, 64]
    assert ds.label_width == 5 and not ds.augment
    assert [ds.task_of(i) for i in (0, 39, 40, 63, 64, 95)] == [0, 0, 1, 1, 2, 2]
    image, label, task = ds[41]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert label.shape == (5,) and label.dtype == torch.float32 and task == 1
    # the images are exactly the shared inference preprocessing of the file
    for t, name in enumerate(("organ", "blood", "chest")):
        raw, _ = read_split(files[name], "train")
        rows = torch.stack([ds[ds.task_offsets[t] + i][0] for i in range(ds.task_sizes[t])])
        torch.testing.assert_close(rows, prepare(raw, SIZE, 3), rtol=0, atol=1e-6)
    with pytest.raises(IndexError):
        ds[TOTAL]


def test_grey_tasks_repeat_to_three_channels_rgb_keeps_colour(train_set):
    grey = train_set[3][0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    colour = train_set[45][0]
    assert not torch.equal(colour[0], colour[2])
    batch = train_set.__getitems__([3, 45, 70])
    assert batch["image"].shape == (3, 3, SIZE, SIZE)
    assert torch.equal(batch["image"][0, 1], batch["image"][0, 0])
    assert torch.equal(batch["image"][2, 2], batch["image"][2, 0])


def test_single_channel_dataset(specs):
    ds = MultiTaskDataset(specs, "val", SIZE, 1)
    assert ds.__getitems__(list(range(len(ds))))["image"].shape == (len(ds), 1, SIZE, SIZE)


def test_labels_and_task_labels(files, specs, train_set):
    ds = train_set
    everything = ds.__getitems__(list(range(len(ds))))
    label, task = everything["label"], everything["task"]
    assert task.dtype == torch.int64 and task.tolist() == [0] * 40 + [1] * 24 + [2] * 32
    for t, name in enumerate(("organ", "blood", "chest")):
        _, expected = read_split(files[name], "train")
        got = task_labels(label[task == t], specs[t])
        if specs[t].kind == "multiclass":
            assert got.dtype == torch.int64 and got.shape == (ds.task_sizes[t],)
            assert torch.equal(label[task == t][:, 1:], torch.zeros(ds.task_sizes[t], 4))  # unused columns 0
        else:
            assert got.dtype == torch.float32 and got.shape == (ds.task_sizes[t], 5)
            assert set(got.unique().tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(got.numpy(), expected)


def test_getitem_and_getitems_agree(train_set):
    indices = [70, 2, 50, 2]
    batch = train_set.__getitems__(indices)
    one_by_one = collate_batch([train_set[i] for i in indices])
    for key in ("image", "label", "task"):
        torch.testing.assert_close(batch[key], one_by_one[key])
    assert collate_batch(batch) is batch


def test_max_per_task_caps_with_a_seeded_subset(files, specs, train_set):
    full = train_set
    capped = MultiTaskDataset(specs, "train", SIZE, 3, max_per_task=30, seed=0)
    assert capped.task_sizes == [30, 24, 30] and len(capped) == 84
    again = MultiTaskDataset(specs, "train", SIZE, 3, max_per_task=30, seed=0)
    other = MultiTaskDataset(specs, "train", SIZE, 3, max_per_task=30, seed=1)
    assert torch.equal(capped.labels, again.labels) and torch.equal(capped._images[0], again._images[0])
    assert not torch.equal(capped._images[0], other._images[0])
    # every kept sample is one of the file's samples with its own label
    for t in (0, 2):
        for i in range(capped.task_sizes[t]):
            match = (full._images[t] == capped._images[t][i]).flatten(1).all(1).nonzero().flatten()
            assert len(match) == 1
            row = full.task_offsets[t] + int(match[0])
            assert torch.equal(full.labels[row], capped.labels[capped.task_offsets[t] + i])


def test_specs_that_no_longer_fit_the_file_raise_data_error(files, specs):
    """Specs restored from a run (TaskSpec.from_dict) against a file that changed since."""
    as_multiclass = TaskSpec(**{**specs[2].to_dict(), "kind": "multiclass"})
    with pytest.raises(DataError, match=r"chest.npz: holds multi-label labels, but task 'chest' is multiclass"):
        MultiTaskDataset([as_multiclass], "val", SIZE, 1)
    as_multilabel = TaskSpec(**{**specs[0].to_dict(), "kind": "multilabel"})
    with pytest.raises(DataError, match=r"organ.npz: holds multi-class labels, but task 'organ' is multilabel"):
        MultiTaskDataset([as_multilabel], "val", SIZE, 1)
    more_columns = TaskSpec(**{**specs[2].to_dict(), "num_classes": 6, "label_names": list("abcdef")})
    with pytest.raises(DataError, match=r"chest.npz: 5 label columns, but 6 labels are configured"):
        MultiTaskDataset([more_columns], "val", SIZE, 1)


def test_dataset_rejects_bad_arguments(specs, files):
    with pytest.raises(ValueError):
        MultiTaskDataset([], "train", SIZE, 1)
    with pytest.raises(ValueError):
        MultiTaskDataset(specs, "dev", SIZE, 1)
    with pytest.raises(ValueError):
        MultiTaskDataset(specs, "train", SIZE, 2)


# ------------------------------------------------------------------------------------------ loader
def test_loader_batches(train_set):
    loader = make_loader(train_set, batch_size=16, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == TOTAL // 16
    mixed = 0
    for batch in batches:
        assert set(batch) == {"image", "label", "task"}
        assert batch["image"].shape == (16, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (16, 5) and batch["label"].dtype == torch.float32
        assert batch["task"].shape == (16,) and batch["task"].dtype == torch.int64
        tasks = batch["task"].tolist()
        assert tasks == sorted(tasks)  # contiguous task segments
        mixed += len(set(tasks)) > 1
    assert mixed >= len(batches) - 1
    # natural sampling: one epoch covers every sample exactly once (96 = 6 batches of 16)
    seen = Counter(batches_task for b in batches for batches_task in b["task"].tolist())
    assert [seen[t] for t in range(3)] == train_set.task_sizes
    indices = [i for batch in loader.batch_sampler for i in batch]
    assert sorted(indices) == list(range(TOTAL))


def test_eval_loader_covers_everything_in_order_and_keeps_the_last_batch(train_set):
    loader = make_loader(train_set, batch_size=20, train=False)
    batches = list(loader)
    assert [len(b["task"]) for b in batches] == [20, 20, 20, 20, 16] and len(loader) == 5
    assert torch.equal(torch.cat([b["label"] for b in batches]), train_set.labels)


def test_workers_give_the_same_batches(specs):
    ds = MultiTaskDataset(specs, "train", SIZE, 3, augment=True, seed=3)
    ds.set_epoch(2)
    batches = {}
    for workers in (0, 2):
        loader = make_loader(ds, batch_size=32, seed=3, num_workers=workers)
        loader.batch_sampler.set_epoch(2)
        batches[workers] = list(loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])


def _epoch(sampler: MultiTaskBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_order_is_a_function_of_seed_and_epoch():
    sampler = MultiTaskBatchSampler([40, 24, 32], 16, seed=7)
    first = _epoch(sampler, 0)
    assert _epoch(MultiTaskBatchSampler([40, 24, 32], 16, seed=7), 0) == first
    assert _epoch(sampler, 1) != first
    assert _epoch(sampler, 0) == first  # going back replays exactly
    assert _epoch(MultiTaskBatchSampler([40, 24, 32], 16, seed=8), 0) != first
    balanced = MultiTaskBatchSampler([40, 24, 32], 16, sampling="balanced", seed=7)
    assert _epoch(balanced, 3) == _epoch(balanced, 3) != _epoch(balanced, 4)


def test_balanced_sampling_gives_tasks_equal_shares():
    sizes = [300, 30, 30]
    counts = {}
    for sampling in ("natural", "balanced"):
        sampler = MultiTaskBatchSampler(sizes, 32, sampling=sampling, seed=0)
        assert len(sampler) == sum(sizes) // 32
        task_of = np.repeat(np.arange(3), sizes)
        tally = Counter()
        for epoch in range(12):
            for batch in _epoch(sampler, epoch):
                assert len(batch) == 32 and all(0 <= i < sum(sizes) for i in batch)
                tally.update(task_of[batch].tolist())
        total = sum(tally.values())
        counts[sampling] = [tally[t] / total for t in range(3)]
    assert counts["natural"][0] == pytest.approx(300 / 360, abs=0.02)
    assert counts["balanced"] == pytest.approx([1 / 3] * 3, abs=0.04)


def test_balanced_sampling_draws_from_every_sample_of_a_small_task():
    sampler = MultiTaskBatchSampler([200, 10], 20, sampling="balanced", seed=0)
    drawn = {i for epoch in range(5) for batch in _epoch(sampler, epoch) for i in batch if i >= 200}
    assert drawn == set(range(200, 210))


def test_sampler_edge_cases():
    # an empty task is skipped: the two others share the draws
    sampler = MultiTaskBatchSampler([10, 0, 30], 8, sampling="balanced", seed=0)
    drawn = [i for b in _epoch(sampler, 0) for i in b]
    assert len(drawn) == 40 and all(0 <= i < 40 for i in drawn)
    assert 10 <= sum(i < 10 for i in drawn) <= 30
    # fewer samples than one batch: one (short) batch
    small = MultiTaskBatchSampler([3, 2], 16, seed=0)
    assert len(small) == 1 and [sorted(b) for b in small] == [[0, 1, 2, 3, 4]]
    # drop_last only drops in shuffled mode
    assert [len(b) for b in MultiTaskBatchSampler([10], 4, seed=0)] == [4, 4]
    assert [len(b) for b in MultiTaskBatchSampler([10], 4, seed=0, drop_last=False)] == [4, 4, 2]
    assert len(MultiTaskBatchSampler([], 4)) == 0 and list(MultiTaskBatchSampler([], 4)) == []
    for kwargs in ({"sampling": "uniform"}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            MultiTaskBatchSampler([4], **{"batch_size": 2, **kwargs})
    with pytest.raises(ValueError):
        MultiTaskBatchSampler([4, -1], 2)


def test_negative_seed_works(specs):
    """`seed: -1` in a config used to crash numpy's default_rng (negative seeds are rejected there)."""
    sampler = MultiTaskBatchSampler([10, 10], 4, seed=-1, sampling="balanced")
    assert len(_epoch(sampler, 0)) == 5
    assert _epoch(sampler, 0) != _epoch(MultiTaskBatchSampler([10, 10], 4, seed=1, sampling="balanced"), 0)
    ds = MultiTaskDataset(specs, "train", SIZE, 3, augment=True, max_per_task=10, seed=-1)
    assert ds.task_sizes == [10, 10, 10] and torch.isfinite(ds.__getitems__([0, 15])["image"]).all()


# ------------------------------------------------------------------------------------------ augmentation
def test_augmentation_is_train_only(specs, train_set):
    val_plain = MultiTaskDataset(specs, "val", SIZE, 3)
    for split in ("val", "test"):
        ds = MultiTaskDataset(specs, split, SIZE, 3, augment=True)
        assert not ds.augment
        if split == "val":
            ds.set_epoch(5)
            assert torch.equal(ds.__getitems__([0, 9])["image"], val_plain.__getitems__([0, 9])["image"])
    augmented = MultiTaskDataset(specs, "train", SIZE, 3, augment=True)
    assert augmented.augment
    a, plain = augmented.__getitems__(list(range(TOTAL)))["image"], train_set.__getitems__(list(range(TOTAL)))["image"]
    assert a.shape == plain.shape and torch.isfinite(a).all()
    assert not torch.equal(a, plain)
    # a small perturbation: same images, mildly moved and rescaled
    assert (a - plain).abs().mean() < 0.35 * plain.abs().mean()
    assert torch.equal(augmented.labels, train_set.labels)


def test_augmentation_depends_only_on_seed_epoch_and_index(specs):
    ds = MultiTaskDataset(specs, "train", SIZE, 3, augment=True, seed=11)
    twin = MultiTaskDataset(specs, "train", SIZE, 3, augment=True, seed=11)
    other_seed = MultiTaskDataset(specs, "train", SIZE, 3, augment=True, seed=12)
    ds.set_epoch(4)
    twin.set_epoch(4)
    other_seed.set_epoch(4)
    reference = ds.__getitems__([5, 50, 80])["image"]
    assert torch.equal(twin.__getitems__([5, 50, 80])["image"], reference)
    # whatever the batch it sits in or its position
    torch.testing.assert_close(ds.__getitems__([80, 1, 5])["image"][[2, 0]], reference[[0, 2]])
    torch.testing.assert_close(ds[50][0], reference[1])
    assert not torch.equal(other_seed.__getitems__([5, 50, 80])["image"], reference)
    ds.set_epoch(5)
    assert not torch.equal(ds.__getitems__([5, 50, 80])["image"], reference)
    ds.set_epoch(4)
    assert torch.equal(ds.__getitems__([5, 50, 80])["image"], reference)
    params = ds.augment_params([5, 50])
    assert params["angles"].shape == (2, 1) and params["shift"].shape == (2, 2)
    assert np.all(np.abs(params["angles"]) <= np.radians(10)) and np.all(np.abs(params["zoom"] - 1) <= 0.1)


def test_counter_uniform_is_uniform_and_keyed():
    u = counter_uniform(0, 0, np.arange(20000), 4)
    assert u.shape == (20000, 4) and u.min() >= 0 and u.max() < 1
    assert np.allclose(u.mean(0), 0.5, atol=0.01) and np.allclose(u.std(0), np.sqrt(1 / 12), atol=0.01)
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    np.testing.assert_array_equal(counter_uniform(0, 0, [7, 3], 4), u[[7, 3]])
    assert not np.array_equal(counter_uniform(0, 1, [7], 4), u[[7]])
    assert not np.array_equal(counter_uniform(1, 0, [7], 4), u[[7]])


def test_affine_convention_identity_and_rotation_about_the_centre(specs):
    ds = MultiTaskDataset(specs[:1], "train", SIZE, 1)
    images = ds.__getitems__([0, 1])["image"]
    identity = affine_matrices(np.zeros((2, 1)), np.ones(2), np.zeros((2, 2)))
    out = ds._affine(images, torch.as_tensor(identity, dtype=torch.float32))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    # a 90 degree turn about the image centre is a pure rotation of the pixel grid (no shift)
    quarter = affine_matrices(np.full((2, 1), np.pi / 2), np.ones(2), np.zeros((2, 2)))
    out = ds._affine(images, torch.as_tensor(quarter, dtype=torch.float32))
    turned = [torch.rot90(images, k, dims=(2, 3)) for k in (1, -1)]
    assert min((out - t).abs().max().item() for t in turned) < 1e-4


def test_3d_dataset_and_augmentation(files):
    specs = build_task_specs(config(files, names=("volume",)))
    ds = MultiTaskDataset(specs, "train", 16, 1, augment=True)
    batch = ds.__getitems__([0, 3, 7])
    assert batch["image"].shape == (3, 1, 16, 16, 16) and torch.isfinite(batch["image"]).all()
    assert ds.augment_params([0])["angles"].shape == (1, 3)
    plain = MultiTaskDataset(specs, "train", 16, 1).__getitems__([0, 3, 7])["image"]
    assert not torch.equal(batch["image"], plain)


# ----------------------------------------------------------------------------------- streaming from disk
def _uncompressed_copy(src: Path, dst: Path) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def test_open_array_maps_stored_members_in_place_and_caches_compressed_ones(files, tmp_path, monkeypatch):
    from core.kinds.classification.medmnist import open_array

    monkeypatch.setenv("LORKD_CACHE", str(tmp_path / "cache"))
    stored = _uncompressed_copy(files["blood"], tmp_path / "blood_stored.npz")
    with np.load(files["blood"]) as npz:
        expected = npz["train_images"]
    mapped = open_array(stored, "train_images")
    assert isinstance(mapped, np.memmap) and Path(mapped.filename) == stored.resolve()
    np.testing.assert_array_equal(mapped, expected)
    assert not (tmp_path / "cache").exists()  # nothing unpacked for a stored member

    unpacked = open_array(files["blood"], "train_images")  # savez_compressed: unpacked once, then mapped
    assert isinstance(unpacked, np.memmap)
    np.testing.assert_array_equal(unpacked, expected)
    cached = list((tmp_path / "cache" / "medmnist").glob("*.npy"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    open_array(files["blood"], "train_images")
    assert cached[0].stat().st_mtime_ns == before
    with pytest.raises(DataError, match="has no array 'nope'"):
        open_array(files["blood"], "nope")


@pytest.mark.parametrize("augment,max_per_task", [(False, None), (True, 7)])
def test_streamed_dataset_equals_the_in_memory_one(specs, tmp_path, monkeypatch, augment, max_per_task):
    monkeypatch.setenv("LORKD_CACHE", str(tmp_path / "cache"))
    kwargs = {"augment": augment, "max_per_task": max_per_task, "seed": 3}
    in_ram = MultiTaskDataset(specs, "train", SIZE, 3, **kwargs)
    streamed = MultiTaskDataset(specs, "train", SIZE, 3, stream=True, **kwargs)
    assert len(streamed) == len(in_ram) and streamed.task_sizes == in_ram.task_sizes
    assert all(isinstance(x, np.memmap) for x in streamed._images)
    order = list(np.random.default_rng(0).permutation(len(in_ram)))  # unsorted indices, tasks mixed
    for epoch in (0, 1):
        in_ram.set_epoch(epoch)
        streamed.set_epoch(epoch)
        a, b = in_ram.__getitems__(order), streamed.__getitems__(order)
        torch.testing.assert_close(b["image"], a["image"], rtol=0, atol=1e-6)
        assert torch.equal(b["label"], a["label"]) and torch.equal(b["task"], a["task"])
    image, label, task = streamed[5]
    torch.testing.assert_close(image, in_ram[5][0], rtol=0, atol=1e-6)


def test_stream_auto_switches_on_size(files, monkeypatch):
    from core.kinds.classification import kind

    cfg = config(files)
    found = build_task_specs(cfg)
    assert kind.stream_images(cfg.data, found, 3, 2) is False
    monkeypatch.setattr(kind, "STREAM_AUTO_BYTES", 1000)
    assert kind.stream_images(cfg.data, found, 3, 2) is True
    assert kind.stream_images(config(files, stream="off").data, found, 3, 2) is False
    with pytest.raises(ConfigError, match="data.stream"):
        config(files, stream="sometimes")
