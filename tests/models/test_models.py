"""core.models: network shapes, the compact backbone's size, task heads, checkpoints, MAC counting."""

import os

import pytest
import torch
from monai.networks.nets import resnet10
from torch import nn

from core.errors import CheckpointError
from core.kinds.classification.heads import TaskHeads
from core.kinds.classification.models import MultiTaskNet, build_backbone, build_teacher, expert_network
from core.kinds.classification.nets import ARCHS, ClassifierNet, CompactNet, FeatureNet, channel_shuffle, min_image_size
from core.kinds.classification.teacher import load_teacher, save_teacher
from core.models.complexity import count_macs, count_parameters, summarize
from core.models.projector import Projector

ARCHS_2D = ["compact", "compact_small", "resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _image(batch: int, channels: int, size: int, dims: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *([size] * dims))


# ------------------------------------------------------------------------------------------ nets
def test_every_arch_is_tested():
    assert sorted(ARCHS_2D) == sorted(ARCHS)


@pytest.mark.parametrize("arch", ARCHS_2D)
def test_feature_shapes_2d(arch):
    size = max(28, min_image_size(arch))
    net = FeatureNet(arch, spatial_dims=2, in_channels=3, image_size=size).eval()
    with torch.no_grad():
        out = net(_image(2, 3, size))
    assert out.shape == (2, net.out_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["compact", "resnet10"])
def test_feature_shapes_3d(arch):
    net = FeatureNet(arch, spatial_dims=3, in_channels=1).eval()
    with torch.no_grad():
        out = net(_image(2, 1, 16, dims=3))
    assert out.shape == (2, net.out_features)


def test_compact_1d_and_train_mode_backward():
    net = FeatureNet("compact", spatial_dims=1, in_channels=2)
    out = net(_image(3, 2, 32, dims=1))
    assert out.shape == (3, net.out_features)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_classifier_net_key_layout():
    net = ClassifierNet("compact", 2, 1, num_classes=4)
    keys = list(net.state_dict())
    assert all(k.startswith(("features.body.", "head.")) for k in keys)
    assert net(_image(2, 1, 28)).shape == (2, 4)


def test_compact_only_depthwise_convs_are_grouped():
    convs = [m for m in CompactNet(2, 3).modules() if isinstance(m, nn.Conv2d)]
    grouped = [m for m in convs if m.groups != 1]
    dense = [m for m in convs if m.groups == 1]
    assert grouped and dense
    assert all(m.groups == m.in_channels == m.out_channels for m in grouped)
    # apart from the stem every dense conv is 1x1: the experts sit on the pointwise convs
    assert all(m.kernel_size == (1, 1) for m in dense[1:])


def test_compact_is_10x_smaller_than_resnet50():
    shape = (1, 3, 28, 28)
    compact = summarize(FeatureNet("compact", 2, 3), shape)
    big = summarize(FeatureNet("resnet50", 2, 3), shape)
    assert 0.3e6 <= compact["params"] <= 1.5e6
    assert big["params"] >= 10 * compact["params"]
    assert big["macs"] >= 10 * compact["macs"]


def test_channel_shuffle_interleaves_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    y = torch.arange(8.0).view(1, 4, 2)  # 1D: spatial values move with their channel
    assert channel_shuffle(y)[0, 1].tolist() == [4.0, 5.0]


def test_image_size_checks():
    assert min_image_size("densenet121") == 32
    assert min_image_size("compact") == 1
    with pytest.raises(ValueError, match="densenet121 needs images of at least 32 px"):
        FeatureNet("densenet121", 2, 3, image_size=28)
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        FeatureNet("vgg", 2, 3)
    with pytest.raises(ValueError, match="unknown architecture"):
        min_image_size("vgg")


def test_densenet_rejects_small_input_at_run_time():
    net = FeatureNet("densenet121", 2, 1).eval()
    with pytest.raises(ValueError, match="at least 32 px per side, got 28x28"):
        net(_image(1, 1, 28))


# ----------------------------------------------------------------------------------------- heads
def _per_sample(heads: TaskHeads, feats: torch.Tensor, tid: torch.Tensor) -> list:
    out = [[] for _ in heads.heads]
    for f, t in zip(feats, tid.tolist(), strict=True):
        out[t].append(heads.heads[t](f[None]))
    return [torch.cat(o) if o else None for o in out]


@pytest.mark.parametrize(
    "ids",
    [[0, 0, 1, 1, 1, 3], [3, 0, 1, 0, 3, 1, 1], [2, 2, 2], [1]],
    ids=["sorted", "unsorted", "one-task", "single"],
)
def test_task_heads_match_per_sample_loop(ids):
    heads = TaskHeads(16, [2, 3, 4, 5])
    tid = torch.tensor(ids)
    feats = torch.randn(len(ids), 16)
    got = heads(feats, tid)
    want = _per_sample(heads, feats, tid)
    assert len(got) == 4
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        if w is None:
            assert g is None
        else:
            assert g.shape == (int((tid == t).sum()), heads.num_classes[t])
            torch.testing.assert_close(g, w)


def test_task_heads_gradients_reach_only_present_tasks():
    heads = TaskHeads(8, [2, 2, 2])
    feats = torch.randn(4, 8, requires_grad=True)
    out = heads(feats, torch.tensor([2, 0, 2, 0]))
    sum(o.sum() for o in out if o is not None).backward()
    assert heads.heads[1].weight.grad is None
    assert heads.heads[0].weight.grad is not None and heads.heads[2].weight.grad is not None
    assert feats.grad is not None and feats.grad.abs().sum(1).gt(0).all()


def test_task_heads_bad_input():
    heads = TaskHeads(8, [2, 2])
    assert heads(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)) == [None, None]
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 2\)"):
        heads(torch.zeros(2, 8), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 2\)"):
        heads(torch.zeros(2, 8), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="expected features"):
        heads(torch.zeros(2, 8), torch.tensor([0]))
    with pytest.raises(ValueError):
        TaskHeads(8, [])


def test_projector_shapes():
    proj = Projector(64, 512)
    assert proj(torch.randn(5, 64)).shape == (5, 512)
    assert proj(torch.randn(2, 3, 64)).shape == (2, 3, 512)
    normed = Projector(64, 32, norm=True)
    assert normed(torch.randn(4, 64)).shape == (4, 32)
    assert normed(torch.randn(2, 3, 64)).shape == (2, 3, 32)
    assert count_parameters(proj) == 64 * 512 + 512


# ------------------------------------------------------------------------------------ multitask
def test_multitask_forward_and_expert_network():
    net = build_backbone("compact", 2, 1, [3, 2]).eval()
    x, tid = _image(4, 1, 28), torch.tensor([1, 0, 1, 1])
    with torch.no_grad():
        feats, logits = net(x, tid)
        assert feats.shape == (4, net.features.out_features)
        assert logits[0].shape == (1, 3) and logits[1].shape == (3, 2)
        assert net(x)[1] is None
        expert = expert_network(net.features, net.heads.heads[1], "compact", 2, 1)
        assert isinstance(expert, ClassifierNet)
        torch.testing.assert_close(expert(x[tid == 1]), logits[1])
    teacher = build_teacher("resnet10", 2, 1, [3, 2])
    assert isinstance(teacher, MultiTaskNet) and teacher.num_tasks == 2
    assert MultiTaskNet(teacher.features, None)(x)[1] is None


def test_builders_check_image_size():
    with pytest.raises(ValueError, match="densenet121"):
        build_teacher("densenet121", 2, 3, [2], image_size=28)


# ---------------------------------------------------------------------------------- checkpoints
def _outputs(model: MultiTaskNet, x: torch.Tensor, tid: torch.Tensor):
    model.eval()
    with torch.no_grad():
        return model(x, tid)


def test_teacher_round_trip(tmp_path):
    teacher = build_teacher("resnet10", 2, 1, [2, 3])
    teacher(_image(4, 1, 28), torch.tensor([0, 1, 0, 1]))  # move the BN running stats off their defaults
    path = tmp_path / "sub" / "teacher.pt"
    save_teacher(path, teacher, "resnet10", 2, 1, ["a", "b"], [2, 3])
    assert os.listdir(path.parent) == ["teacher.pt"]  # no temp file left behind
    x, tid = _image(3, 1, 28), torch.tensor([1, 0, 1])
    want_f, want_l = _outputs(teacher, x, tid)

    loaded, has_heads = load_teacher(path, "resnet10", 2, 1, [2, 3])
    assert has_heads
    got_f, got_l = _outputs(loaded, x, tid)
    torch.testing.assert_close(got_f, want_f, rtol=0, atol=0)
    for g, w in zip(got_l, want_l, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)

    assert load_teacher(path, "resnet10", 2, 1)[1]  # no task list given: keep the saved heads
    for kwargs in ({"num_classes": [2, 4]}, {"num_classes": [2, 3], "task_names": ["a", "c"]}):
        features_only, has_heads = load_teacher(path, "resnet10", 2, 1, **kwargs)
        assert not has_heads and features_only.heads is None
        torch.testing.assert_close(_outputs(features_only, x, tid)[0], want_f, rtol=0, atol=0)

    save_teacher(path, teacher, "resnet10", 2, 1, ["a", "b"], [2, 3])  # overwriting is fine too
    assert os.listdir(path.parent) == ["teacher.pt"]


@pytest.mark.parametrize("style", ["plain", "with-fc", "wrapped-dataparallel", "featurenet", "classifier"])
def test_user_state_dict_loads(tmp_path, style):
    monai_net = resnet10(spatial_dims=2, n_input_channels=3, feed_forward=style == "with-fc", num_classes=5)
    monai_net.eval()
    state = monai_net.state_dict()
    if style == "wrapped-dataparallel":
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif style == "featurenet":
        state = {f"body.{k}": v for k, v in state.items()}
    elif style == "classifier":
        state = {f"features.body.{k}": v for k, v in state.items()} | {"head.weight": torch.zeros(2, 512)}
    path = tmp_path / "user.pt"
    torch.save(state, path)
    model, has_heads = load_teacher(path, "resnet10", 2, 3, [2])
    assert not has_heads and model.heads is None
    x = _image(2, 3, 28)
    feats = _outputs(model, x, None)[0]
    if style == "with-fc":
        monai_net.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(feats, monai_net(x))


def _user_checkpoint(tmp_path, name="r10.pt", **kwargs) -> str:
    path = tmp_path / name
    torch.save(resnet10(spatial_dims=2, n_input_channels=3, feed_forward=False, **kwargs).state_dict(), path)
    return path


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "missing.pt", "resnet10", 2, 3)

    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file \\(damaged"):
        load_teacher(text, "resnet10", 2, 3)

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_teacher(tmp_path / "list.pt", "resnet10", 2, 3)

    path = _user_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"does not fit resnet18: \d+ missing keys \(e\.g\. body\.layer1\.1"):
        load_teacher(path, "resnet18", 2, 3)
    with pytest.raises(CheckpointError, match=r"does not fit densenet121: .* unexpected"):
        load_teacher(path, "densenet121", 2, 3)
    with pytest.raises(CheckpointError, match=r"trained on 3 input channels; the data have 1"):
        load_teacher(path, "resnet10", 2, 1)
    with pytest.raises(CheckpointError, match=r"holds a 2D network; the data are 3D"):
        load_teacher(path, "resnet10", 3, 3)


def test_checkpoint_shape_and_value_errors(tmp_path):
    state = resnet10(spatial_dims=2, n_input_channels=3, feed_forward=False).state_dict()
    bad = dict(state)
    bad["layer2.0.bn1.weight"] = torch.ones(7)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"body\.layer2\.0\.bn1\.weight has shape \(7,\), expected \(128,\)"):
        load_teacher(tmp_path / "shape.pt", "resnet10", 2, 3)
    nan = dict(state)
    nan["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], float("nan"))
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"non-finite values .* in body\.layer1\.0\.conv1\.weight"):
        load_teacher(tmp_path / "nan.pt", "resnet10", 2, 3)


def test_own_checkpoint_metadata_mismatch(tmp_path):
    teacher = build_teacher("compact", 2, 1, [2])
    path = tmp_path / "t.pt"
    save_teacher(path, teacher, "compact", 2, 1, ["a"], [2])
    with pytest.raises(CheckpointError, match="holds a compact foundation model, not resnet10"):
        load_teacher(path, "resnet10", 2, 1)
    with pytest.raises(CheckpointError, match="trained on 1 input channels; the data have 3"):
        load_teacher(path, "compact", 2, 3)
    with pytest.raises(CheckpointError, match="holds a 2D model; the data are 3D"):
        load_teacher(path, "compact", 3, 1)


# ----------------------------------------------------------------------------------- complexity
def test_macs_of_a_hand_computed_net():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # out 8x10x10 = 800 elements x 3 x 9 = 21600
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # out 8x5x5 = 200 x 1 x 9 = 1800
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # in 200 elements x 4 x 4 = 3200
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),  # 4 x 6 = 24
    )
    net.train()
    assert count_macs(net, (1, 3, 10, 10)) == 21600 + 1800 + 3200 + 24
    assert count_macs(net, (2, 3, 10, 10)) == 2 * (21600 + 1800 + 3200 + 24)
    assert net.training  # mode restored
    assert count_parameters(net) == (3 * 8 * 9 + 8) + (8 * 9 + 8) + (8 * 4 * 4 + 4) + (4 * 6 + 6)
    conv3d = nn.Conv3d(2, 4, 3, padding=1)  # out 4x4x4x4 = 256 x 2 x 27
    assert summarize(conv3d, (1, 2, 4, 4, 4)) == {"params": 2 * 4 * 27 + 4, "macs": 256 * 2 * 27}
    conv1d = nn.Conv1d(2, 3, 5)  # out 3 x 6 = 18 x 2 x 5
    assert count_macs(conv1d, (1, 2, 10)) == 180


def test_compact_small_is_over_ten_times_lighter_than_resnet18():
    """The classification demo's backbone: >= 10x fewer multiply-adds than its ResNet-18 foundation model."""
    shape = (1, 3, 28, 28)
    ratio = count_macs(ClassifierNet("resnet18", 2, 3, 4), shape) / count_macs(ClassifierNet("compact_small", 2, 3, 4),
                                                                                shape)
    assert ratio >= 10, ratio
