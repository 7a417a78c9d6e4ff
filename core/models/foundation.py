"""A user's own foundation model: a MONAI bundle (Model Zoo layout, folder or zip) or a bare TorchScript file.

What is read, and how (nothing of the bundle runs that was not checked first):
- `configs/inference.json|yaml` is read as data. Every `_target_` anywhere in it must name torch, monai, numpy or
  the bundle's own `scripts/` (a bare name such as "UNet" is MONAI's own: MONAI's component locator only finds
  classes inside monai). Only `network_def` is ever built, with MONAI's `ConfigParser` from a config that holds
  nothing but `network_def` and the entries it refers to; `$` expressions among those may only use literals,
  arithmetic and calls into torch/monai/numpy. Anything else is refused with one line naming the key, unless the
  user trusts the bundle (`--trust-bundle`, `teacher.trust_bundle: true`): a bundle's config can run arbitrary
  Python, so a refused bundle executes nothing.
- `models/model.pt` is loaded with `torch.load(weights_only=True)` and strictly into `network_def` (the first key
  that does not fit is named); `models/model.ts` (used when there is no `model.pt`) with `torch.jit.load`.
- `configs/metadata.json` `network_data_format.outputs.pred.channel_def` names the output channels (a bundle
  without it is usable by channel index).
- The preprocessing (`Orientationd`, `Spacingd`, the intensity transform) and the sliding-window settings of the
  `inferer`, and the activation of `postprocessing` (softmax / sigmoid), become a `ForeignPre` block that
  `core.preprocess.volume` reproduces (the one preprocessing layer; resampling grids keep the volume's outer edges,
  which can differ from MONAI's `Spacingd` by under a voxel). A transform that changes what the network sees and
  is not reproduced is named in an error; the config's `teacher` fields override what the bundle says.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.files import safe_load
from core.models.checkpoint import load_strict

ALLOWED_ROOTS = ("torch", "monai", "numpy", "scripts")
EXPRESSION_NAMES = ("torch", "monai", "numpy", "np")
REF = re.compile(r"@([A-Za-z0-9_]+(?:(?:::|#)[A-Za-z0-9_]+)*)")
TRUST_HINT = ("a bundle's config can run any Python code; pass --trust-bundle (teacher.trust_bundle: true) only for "
              "a bundle from a source you trust")
# transforms that only read, type-cast or add a channel: nothing to reproduce
PASSIVE = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst", "EnsureTyped", "EnsureType",
           "CastToTyped", "CastToType", "ToTensord", "ToTensor", "ToDeviced", "ToDevice", "AddChanneld",
           "Compose", "CopyItemsd", "Identityd", "Identity", "DeleteItemsd", "SqueezeDimd", "ToNumpyd",
           "CropForegroundd", "CropForeground", "SaveImaged"}


@dataclass
class ForeignPre:
    """How the foundation model sees a volume (`core.preprocess.volume.prepare_volume` reads it as a dict).

    axcodes: the orientation its arrays are put in ("RAS", "LPS", ...; None: the file's own index order);
    spacing: voxel size in mm (None: not resampled); intensity: {"mode": ...} (see `normalise_intensity`);
    roi_size / overlap / blend: the sliding window; activation: softmax (one label per voxel) or sigmoid (each
    channel on its own)."""

    axcodes: str | None = "RAS"
    spacing: list[float] | None = None
    intensity: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    roi_size: list[int] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    activation: str = "softmax"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"axcodes": self.axcodes, "spacing": self.spacing, "intensity": dict(self.intensity),
                "roi_size": self.roi_size, "overlap": self.overlap, "blend": self.blend,
                "activation": self.activation}


@dataclass
class Foundation:
    """A user's foundation model as loaded: the network (CPU, eval), the names of its output channels (None: use
    indices), how it sees volumes, what it came from, and (bundles with a `network_def`) the MONAI class name and
    arguments that built it (for a student of the same architecture)."""

    network: nn.Module
    channels: list[str] | None
    pre: ForeignPre
    source: str
    form: str  # "bundle" or "torchscript"
    net_class: str | None = None
    net_kwargs: dict[str, Any] | None = None
    out_channels: int | None = None

    def channel_index(self, label: str | int, where: str) -> int:
        """The output channel of a `teacher_labels` entry (a channel name from the metadata, or an index)."""
        count = self.out_channels
        if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
            index = int(label)
            if count is not None and not 0 <= index < count:
                raise ConfigError(f"the foundation model has channels 0..{count - 1}; there is no channel {index}",
                                  where)
            return index
        names = self.channels or []
        for i, name in enumerate(names):
            if name == label or name.lower() == str(label).lower():
                return i
        known = ", ".join(names) if names else "none (the model's metadata names no channels: use indices)"
        raise ConfigError(f"the foundation model has no output channel named {label!r} (its channels: {known})",
                          where)

    def label_of(self, index: int) -> str:
        names = self.channels or []
        return names[index] if index < len(names) else f"channel {index}"


# --------------------------------------------------------------------------------------------- bundle files
@contextlib.contextmanager
def bundle_folder(path: str | Path) -> Iterator[Path]:
    """The bundle's root folder (the one holding configs/): the folder itself, or a zip extracted to a temporary
    folder (names that would leave it are refused), removed afterwards."""
    path = Path(path).expanduser()
    if path.is_dir():
        yield _root_in(path, path)
        return
    if not path.is_file():
        raise CheckpointError(f"foundation model bundle {path} not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is neither a bundle folder nor a zip file")
    tmp = Path(tempfile.mkdtemp(prefix="lorkd-bundle-"))
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                target = (tmp / member.filename).resolve()
                if not target.is_relative_to(tmp.resolve()) or member.filename.startswith("/"):
                    raise CheckpointError(f"{path}: refusing the zip member {member.filename!r} (it would be "
                                          f"written outside the extraction folder)")
            archive.extractall(tmp)
        yield _root_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _root_in(folder: Path, shown: Path) -> Path:
    if (folder / "configs").is_dir():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / "configs").is_dir()]
    if len(inner) == 1:
        return inner[0]
    raise CheckpointError(f"{shown} is not a MONAI bundle: no configs/ folder (Model Zoo layout: configs/inference."
                          f"json, configs/metadata.json, models/model.pt)")


def _read_config(root: Path, shown: Path) -> dict:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        file = root / "configs" / name
        if file.is_file():
            try:
                text = file.read_text(encoding="utf-8")
                data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
            except (ValueError, UnicodeDecodeError, yaml.YAMLError) as error:
                raise CheckpointError(f"{shown}: configs/{name} cannot be read ({str(error).splitlines()[0]})") \
                    from None
            if not isinstance(data, dict):
                raise CheckpointError(f"{shown}: configs/{name} is not a mapping")
            return data
    raise CheckpointError(f"{shown}: no configs/inference.json (or .yaml) in the bundle")


def read_channel_names(root: Path) -> list[str] | None:
    """Output channel names from configs/metadata.json (network_data_format.outputs.pred.channel_def)."""
    file = root / "configs" / "metadata.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
        outputs = meta["network_data_format"]["outputs"]
        pred = outputs.get("pred") or next(iter(outputs.values()))
        channel_def = pred["channel_def"]
        keys = sorted(channel_def, key=int)
        if keys != [str(i) for i in range(len(keys))] or not keys:
            return None
        return [str(channel_def[k]) for k in keys]
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------ allow-list
def _walk(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{where}::{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}::{i}" if where else str(i))


def check_targets(config: dict, shown: str) -> None:
    """Refuse a `_target_` anywhere in the config outside torch/monai/numpy/the bundle's scripts/."""
    for where, node in _walk(config, ""):
        if isinstance(node, dict) and "_target_" in node:
            target = node["_target_"]
            if not isinstance(target, str):
                raise ConfigError(f"{shown}: {where}: _target_ must be a name, got {target!r}; {TRUST_HINT}",
                                  "teacher.bundle")
            root = target.split(".")[0]
            outside = root not in ALLOWED_ROOTS if "." in target else not _monai_component(target)
            if outside or target.startswith(("$", "@")):
                raise ConfigError(f"{shown}: {where}: _target_ {target!r} is outside torch, monai, numpy and the "
                                  f"bundle's scripts/; nothing was executed ({TRUST_HINT})", "teacher.bundle")


def _monai_component(name: str) -> bool:
    """Whether MONAI's component locator resolves a bare `_target_` name inside monai (otherwise MONAI would look
    it up as a Python path, e.g. a builtin)."""
    from monai.bundle.config_item import ComponentLocator

    global _LOCATOR
    if _LOCATOR is None:
        _LOCATOR = ComponentLocator()
    return _LOCATOR.get_component_module_name(name) is not None


_LOCATOR = None


def _closure(config: dict, start: str) -> dict[str, Any]:
    """The top-level entries `start` needs (itself and every entry it refers to, transitively)."""
    needed, todo = {}, [start]
    while todo:
        key = todo.pop()
        top = re.split(r"::|#", key)[0]
        if top in needed:
            continue
        if top not in config:
            raise ConfigError(f"network_def refers to @{key}, which the bundle's config does not have",
                              "teacher.bundle")
        needed[top] = config[top]
        for _, node in _walk(config[top], ""):
            if isinstance(node, str) and (node.startswith("$") or node.startswith("@")):
                todo += REF.findall(node)
    return needed


def _check_expression(text: str, where: str, shown: str) -> None:
    """A `$` expression may only use literals, arithmetic, comparisons, references and calls into
    torch/monai/numpy (no imports, no dunders, no other names)."""
    code = REF.sub("_ref_", text[1:])
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        tree = None
    allowed = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp,
               ast.Compare, ast.IfExp, ast.Call, ast.Attribute, ast.Name, ast.Load, ast.keyword, ast.operator,
               ast.unaryop, ast.boolop, ast.cmpop, ast.Subscript, ast.Slice)
    for node in ast.walk(tree) if tree is not None else [None]:
        bad = node is None or not isinstance(node, allowed)
        if isinstance(node, ast.Name) and node.id not in (*EXPRESSION_NAMES, "_ref_", "True", "False", "None"):
            bad = True
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            bad = True
        if bad:
            raise ConfigError(f"{shown}: {where}: the expression {text!r} runs code LoRKD does not run unchecked; "
                              f"nothing was executed ({TRUST_HINT})", "teacher.bundle")


@contextlib.contextmanager
def _scripts_importable(root: Path) -> Iterator[None]:
    """The bundle root on sys.path (its scripts/ package importable as `scripts`), restored afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def build_network_def(config: dict, root: Path, shown: str, trust: bool) -> tuple[nn.Module, str, dict]:
    """(network, class name, its arguments as data) from the bundle's `network_def`, built by MONAI's
    ConfigParser from `network_def` and what it refers to only."""
    from monai.bundle import ConfigParser

    if "network_def" not in config:
        raise CheckpointError(f"{shown}: configs/inference has no network_def, so its models/model.pt cannot be "
                              f"loaded (give a bundle with network_def, or its models/model.ts)")
    needed = _closure(config, "network_def")
    if not trust:
        for where, node in _walk(needed, ""):
            if isinstance(node, str) and node.startswith("$"):
                _check_expression(node, where, shown)
    spec = config["network_def"]
    name = spec.get("_target_", "") if isinstance(spec, dict) else ""
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")} if isinstance(spec, dict) else {}
    with _scripts_importable(root):
        try:
            parser = ConfigParser({**needed, "bundle_root": str(root)}, globals={"np": "numpy"})
            network = parser.get_parsed_content("network_def", instantiate=True)
        except Exception as error:  # MONAI wraps every failure of building a component in a RuntimeError
            reason = " ".join(str(error).split())[:300]
            raise CheckpointError(f"{shown}: network_def cannot be built ({reason})") from None
    if not isinstance(network, nn.Module):
        raise CheckpointError(f"{shown}: network_def builds a {type(network).__name__}, not a torch network")
    return network, str(name).split(".")[-1], kwargs


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "network"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------------------- preprocessing
def _transforms(node: Any) -> list[dict]:
    if isinstance(node, dict):
        inner = node.get("transforms")
        return _transforms(inner) if inner is not None and node.get("_target_", "").endswith("Compose") else [node]
    if isinstance(node, list):
        return [t for item in node for t in _transforms(item)]
    return []


def _number(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith(("$", "@")):
        raise ConfigError(f"{where}: {value!r} is computed by the bundle; set it in the config's teacher section",
                          "teacher.bundle")
    return value


def read_preprocessing(config: dict, shown: str) -> ForeignPre:
    """The bundle's preprocessing, sliding window and activation as a `ForeignPre` (see the module docstring)."""
    pre = ForeignPre(axcodes=None)
    for t in _transforms(config.get("preprocessing")):
        name = str(t.get("_target_", "")).split(".")[-1]
        where = f"{shown}: preprocessing {name}"
        if name in ("Orientationd", "Orientation"):
            pre.axcodes = str(_number(t.get("axcodes", "RAS"), where))
        elif name in ("Spacingd", "Spacing"):
            pixdim = _number(t.get("pixdim"), where)
            pre.spacing = [float(v) for v in (pixdim if isinstance(pixdim, list) else [pixdim] * 3)]
        elif name in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            pre.intensity = {"mode": "range", **{k: float(_number(t.get(k, d), where)) for k, d in
                                                 (("a_min", 0.0), ("a_max", 1.0), ("b_min", 0.0), ("b_max", 1.0))},
                             "clip": bool(t.get("clip", False))}
        elif name in ("ScaleIntensityRangePercentilesd", "ScaleIntensityRangePercentiles"):
            pre.intensity = {"mode": "percentile", "low": float(_number(t.get("lower"), where)),
                             "high": float(_number(t.get("upper"), where)),
                             "b_min": float(t.get("b_min", 0.0)), "b_max": float(t.get("b_max", 1.0)),
                             "clip": bool(t.get("clip", False))}
        elif name in ("NormalizeIntensityd", "NormalizeIntensity"):
            pre.intensity = {"mode": "zscore", "nonzero": bool(t.get("nonzero", False))}
        elif name in ("ScaleIntensityd", "ScaleIntensity"):
            pre.intensity = {"mode": "minmax", "b_min": float(t.get("minv", 0.0)), "b_max": float(t.get("maxv", 1.0))}
        elif name in PASSIVE:
            if name.startswith("CropForeground"):
                pre.notes.append("CropForegroundd is not reproduced: the whole volume is segmented")
        else:
            raise ConfigError(f"{where}: LoRKD cannot reproduce this transform; give the foundation model's "
                              f"preprocessing in the config (teacher.spacing, teacher.intensity, ...)",
                              "teacher.bundle")
    inferer = config.get("inferer")
    if isinstance(inferer, dict):
        roi = inferer.get("roi_size")
        if isinstance(roi, list) and all(isinstance(v, int) for v in roi):
            pre.roi_size = [int(v) for v in roi]
        if isinstance(inferer.get("overlap"), int | float):
            pre.overlap = float(inferer["overlap"])
        if inferer.get("mode") in ("gaussian", "constant"):
            pre.blend = inferer["mode"]
    for t in _transforms(config.get("postprocessing")):
        if str(t.get("_target_", "")).split(".")[-1] in ("Activationsd", "Activations"):
            pre.activation = "sigmoid" if t.get("sigmoid") else "softmax"
    return pre


# ------------------------------------------------------------------------------------------------- loading
def load_bundle_foundation(path: str | Path, trust: bool = False) -> Foundation:
    """A MONAI bundle (folder or zip) as a `Foundation` (see the module docstring); one-line errors."""
    shown = Path(path)
    with bundle_folder(path) as root:
        config = _read_config(root, shown)
        if not trust:
            check_targets(config, str(shown))
        channels = read_channel_names(root)
        pre = read_preprocessing(config, str(shown))
        weights, script = root / "models" / "model.pt", root / "models" / "model.ts"
        if weights.is_file() or not script.is_file():
            network, net_class, kwargs = build_network_def(config, root, str(shown), trust)
            if not weights.is_file():
                raise CheckpointError(f"{shown}: no models/model.pt (nor models/model.ts) in the bundle")
            state = _state_dict(safe_load(weights), weights)
            load_strict(weights, network, state, f"the bundle's network_def ({net_class})")
        else:
            network, net_class, kwargs = load_torchscript(script), None, None
    return Foundation(network.eval(), channels, pre, str(shown), "bundle", net_class, kwargs,
                      _out_channels(kwargs))


def load_torchscript(path: str | Path) -> nn.Module:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"TorchScript file {path} not found")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:  # torch raises RuntimeError and others for files that are not TorchScript
        raise CheckpointError(f"{path} is not a TorchScript model ({' '.join(str(error).split())[:200]})") from None


def _out_channels(kwargs: dict | None) -> int | None:
    value = (kwargs or {}).get("out_channels")
    return int(value) if isinstance(value, int) else None


def probe_out_channels(foundation: Foundation, shape: list[int]) -> int:
    """The number of output channels of the model, by one forward pass on a zero input of `shape` (spatial)."""
    with torch.no_grad():
        try:
            out = foundation.network(torch.zeros(1, 1, *shape))
        except Exception as error:  # a scripted model raises whatever its code raises
            raise CheckpointError(f"{foundation.source}: the foundation model fails on a 1-channel input of "
                                  f"{list(shape)} voxels ({' '.join(str(error).split())[:200]})") from None
    if isinstance(out, list | tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 5:
        raise CheckpointError(f"{foundation.source}: the foundation model does not give 3D label logits "
                              f"(B, C, X, Y, Z)")
    return int(out.shape[1])


def describe(path: str | Path, trust: bool = False) -> tuple[str, list[str]]:
    """(form, channel names or "channel i") of a foundation model file or bundle, for the app's setup form."""
    path = Path(path).expanduser()
    if path.is_dir() or path.suffix.lower() == ".zip":  # (a TorchScript file is a zip archive too)
        found = load_bundle_foundation(path, trust)
        count = found.out_channels or (len(found.channels) if found.channels else None)
        if count is None:
            count = probe_out_channels(found, found.pre.roi_size or [32, 32, 32])
        return "bundle", [found.label_of(i) for i in range(count)]
    return "torchscript", []
