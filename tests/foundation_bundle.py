"""A user's own foundation model for the tests, made the way a MONAI user makes one: a MONAI UNet trained briefly on
the MNI152 brain (background, grey matter, white matter, CSF) with MONAI's loss, saved in the Model Zoo bundle
layout (configs/inference.json with network_def, preprocessing, inferer and postprocessing; configs/metadata.json
naming the output channels; models/model.pt), and as a TorchScript file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from core.io import read_volume
from core.kinds.segmentation.demo import mni_files, tissue_labels
from core.preprocess import volume as prep

CHANNELS = ["background", "grey matter", "white matter", "CSF"]
NETWORK_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4,
               "channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 1}
SPACING = [3.0, 3.0, 3.0]
INTENSITY = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 228, "b_min": 0.0,
             "b_max": 1.0, "clip": True}


def inference_config(network_def: dict | None = None) -> dict:
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def or NETWORK_DEF,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": SPACING, "mode": "bilinear"},
            INTENSITY,
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 4,
                    "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]},
    }


def metadata(channels: list[str] | None = CHANNELS) -> dict:
    outputs = {"type": "image", "format": "segmentation", "num_channels": 4, "spatial_shape": [32, 32, 32],
               "dtype": "float32", "value_range": [0, 1], "is_patch_data": True}
    if channels is not None:
        outputs["channel_def"] = {str(i): name for i, name in enumerate(channels)}
    return {"version": "0.1.0", "monai_version": "1.6.1", "name": "MNI152 brain tissues (test foundation model)",
            "network_data_format": {"inputs": {"image": {"type": "image", "num_channels": 1}},
                                    "outputs": {"pred": outputs}}}


def train_unet(steps: int = 150, seed: int = 0) -> tuple[UNet, np.ndarray]:
    """A MONAI UNet trained for `steps` Adam steps on batches of four 32^3 patches of the MNI152 T1 at 3 mm, and
    that T1's tissue label map (0 background, 1 grey matter, 2 white matter, 3 CSF) on its own grid."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    files = mni_files()
    t1 = read_volume(files["t1"])
    maps = tissue_labels(t1.array, read_volume(files["gm"]).array, read_volume(files["wm"]).array)
    label = np.zeros(t1.array.shape, np.uint8)
    for value, name in ((1, "grey_matter"), (2, "white_matter"), (3, "csf")):
        label[maps[name]] = value
    pre = {"axcodes": "RAS", "spacing": SPACING,
           "intensity": {"mode": "range", "a_min": 0, "a_max": 228, "b_min": 0.0, "b_max": 1.0, "clip": True}}
    image, info = prep.prepare_volume(t1.array, t1.spacing, t1.direction, pre)
    canon = prep.to_canonical(label, info["perm"], info["flips"])
    target = prep.resample(canon, image.shape[1:], "nearest").long()
    net = UNet(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"})
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    shape, p = image.shape[1:], 32
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(4):
            c = [int(rng.integers(0, n - p + 1)) for n in shape]
            box = tuple(slice(a, a + p) for a in c)
            xs.append(image[(slice(None), *box)])
            ys.append(target[box][None])
        x, y = torch.stack(xs), torch.stack(ys)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    return net.eval(), label


def write_bundle(folder: Path, net: torch.nn.Module, config: dict | None = None,
                 meta: dict | None = None, weights: dict | None = None) -> Path:
    """The Model Zoo layout at `folder`: configs/inference.json, configs/metadata.json, models/model.pt."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "inference.json").write_text(json.dumps(config or inference_config(), indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta or metadata(), indent=2))
    torch.save(weights if weights is not None else net.state_dict(), folder / "models" / "model.pt")
    return folder


def write_torchscript(path: Path, net: torch.nn.Module) -> Path:
    torch.jit.trace(net, torch.zeros(1, 1, 32, 32, 32)).save(str(path))
    return path
