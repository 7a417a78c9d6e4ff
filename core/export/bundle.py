"""Export one task expert as a MONAI bundle that runs without LoRKD Studio, and load it back.

Bundle layout (DESIGN.md, "Expert bundle")::

    configs/metadata.json    MONAI metadata (valid against resources/schema/meta_schema_20240725.json)
                             + our `lorkd` block: task, labels, network args, preprocessing, SHA-256
    configs/inference.json   `python -m monai.bundle run --config_file BUNDLE/configs/inference.json
                             --bundle_root BUNDLE --image IMG --output OUT.json|OUT.csv`
    configs/logging.conf     the usual MONAI bundle logging set-up (INFO to stdout)
    models/model.pt          plain merged ClassifierNet state_dict (strict-loads into network_def)
    scripts/__init__.py, scripts/lorkd_nets.py (= core/models/nets.py),
    scripts/lorkd_runtime.py (= core/infer/runtime.py)
    docs/README.md           model card
    labels.json, labels.csv

A bundle is built in a hidden temporary folder next to `out_dir` and renamed into place only when it is
complete; an existing bundle is replaced only after the new one is complete.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from core.errors import BundleError
from core.export.model_card import render_model_card
from core.export.schema import SCHEMA_URL, validate_metadata
from core.infer import runtime
from core.models import nets
from core.models.nets import ClassifierNet

__all__ = ["bundle_command", "load_bundle", "publish_bundle", "validate_metadata", "write_bundle"]

METADATA_FILE = runtime.METADATA_FILE
INFERENCE_FILE = "configs/inference.json"
MODEL_FILE = runtime.MODEL_FILE
REQUIRED_FILES = (
    METADATA_FILE,
    INFERENCE_FILE,
    MODEL_FILE,
    "scripts/lorkd_nets.py",
    "scripts/lorkd_runtime.py",
)
INTENDED_USE = (
    "research use only: not a medical device and not for clinical diagnosis, screening or treatment decisions"
)
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
_OPTIONAL_READERS = {"pillow": "PNG/JPEG/BMP/TIFF", "nibabel": "NIfTI", "pydicom": "DICOM"}


def bundle_command(
    bundle_dir: str | os.PathLike, image: str = "IMAGE", output: str = "OUT.json"
) -> list[str]:
    """The command line (argv after `python`) that runs a bundle outside the app."""
    root = Path(bundle_dir)
    return [
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(root / INFERENCE_FILE),
        "--bundle_root",
        str(root),
        "--image",
        str(image),
        "--output",
        str(output),
    ]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (Path, _dt.datetime, _dt.date)):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _jsonable(value: Any) -> Any:
    """A plain-JSON copy (numpy scalars, tensors and paths converted)."""
    return json.loads(json.dumps(value, default=_json_default))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, default=_json_default) + "\n", encoding="utf-8")


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _OPTIONAL_READERS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _check_task(task: Mapping, spatial_dims: int, in_channels: int) -> dict:
    """A plain copy of the task dict with label_names filled in; ValueError on contradictions."""
    task = _jsonable(dict(task))
    name = str(task.get("name", "")).strip()
    if not name:
        raise ValueError("task has no name")
    kind = task.get("kind")
    if kind not in runtime.KINDS:
        raise ValueError(f"task {name!r}: kind must be one of {runtime.KINDS}, got {kind!r}")
    labels = task.get("label_names") or [f"class_{i}" for i in range(int(task.get("num_classes", 0)))]
    num_classes = int(task.get("num_classes", len(labels)))
    if num_classes < 1 or len(labels) != num_classes:
        raise ValueError(f"task {name!r}: {len(labels)} label names for num_classes={num_classes}")
    if len({str(x) for x in labels}) != len(labels):
        raise ValueError(f"task {name!r}: label names are not unique: {labels}")
    if "spatial_dims" in task and int(task["spatial_dims"]) != int(spatial_dims):
        raise ValueError(f"task {name!r} is {task['spatial_dims']}D but spatial_dims={spatial_dims}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    task.update(name=name, kind=kind, num_classes=num_classes, label_names=[str(x) for x in labels])
    return task


def _plain_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (no views into training tensors, no autograd history)."""
    return {str(k): v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}


def metadata_header(version: str, now: str) -> dict[str, Any]:
    """The MONAI metadata fields every bundle starts with (schema, version, changelog, library versions)."""
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: f"exported by LoRKD Studio on {now}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__,
        "numpy_version": np.__version__,
    }


def _build_metadata(
    *,
    task: dict,
    network: dict,
    image_size: int,
    metrics: dict,
    training: dict,
    version: str,
    model_sha256: str,
) -> dict:
    name, kind, labels = task["name"], task["kind"], task["label_names"]
    spatial_dims, in_channels, num_classes = network["spatial_dims"], network["in_channels"], len(labels)
    spatial_shape = [int(image_size)] * int(spatial_dims)
    channel_def = {"0": "grey"} if in_channels == 1 else {"0": "R", "1": "G", "2": "B"}
    label_def = {str(i): label for i, label in enumerate(labels)}
    decision = "softmax over labels" if kind == "multiclass" else "independent sigmoid per label"
    versions = _package_versions()
    readers = ", ".join(f"{_OPTIONAL_READERS[k]} via {k}" for k in versions)
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {
        **metadata_header(version, now),
        "required_packages_version": versions,
        "name": f"LoRKD expert: {name}",
        "task": f"{name}: {kind} classification of {spatial_dims}D medical images into {num_classes} labels",
        "description": (
            f"Task expert for '{name}' decomposed from a medical foundation model with Low-Rank Knowledge "
            f"Decomposition (LoRKD): the shared backbone with this task's low-rank expert merged in, plus "
            f"the task head. MONAI {network['arch']} ({spatial_dims}D, {in_channels} input channel(s)) "
            f"outputs {num_classes} logits; {decision} gives the probabilities."
        ),
        "authors": "LoRKD Studio export",
        "copyright": "Copyright the LoRKD Studio user who trained this expert",
        "data_source": str(task.get("source", "not recorded")),
        "data_type": f"2D image file ({readers}, NumPy .npy)" if spatial_dims == 2 else "3D volume",
        "image_classes": f"{'RGB' if in_channels == 3 else 'single channel grey'} image, "
        f"{'x'.join(map(str, spatial_shape))} after preprocessing, intensity normalised to [-1, 1]",
        "pred_classes": "; ".join(f"{i}: {label}" for i, label in enumerate(labels)),
        "eval_metrics": _jsonable(metrics),
        "intended_use": INTENDED_USE,
        "references": [
            "Zhou et al., Low-Rank Knowledge Decomposition for Medical Foundation Models, CVPR 2024, "
            "arXiv:2404.17184",
            "Li et al., LoRKD: Low-Rank Knowledge Decomposition for Medical Foundation Models, "
            "arXiv:2409.19540",
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "any",
                    "num_channels": int(in_channels),
                    "spatial_shape": spatial_shape,
                    "dtype": "float32",
                    "value_range": [-1, 1],
                    "is_patch_data": False,
                    "channel_def": channel_def,
                }
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classes" if kind == "multiclass" else "multilabel",
                    "num_channels": num_classes,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": label_def,
                }
            },
            "post_processed_outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes" if kind == "multiclass" else "multilabel",
                    "num_channels": num_classes,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": label_def,
                }
            },
        },
        "lorkd": {
            "format_version": 1,
            "task": task,
            "kind": kind,
            "label_names": labels,
            "network": network,
            "preprocessing": {
                "function": "scripts/lorkd_runtime.py: "
                "prepare(load_image(path)[None], image_size, in_channels, spatial_dims)",
                "image_size": int(image_size),
                "in_channels": int(in_channels),
                "spatial_dims": int(spatial_dims),
                "reading": "pixels in display order (never transposed); NIfTI reoriented to the DICOM "
                "(LPS) display, 3D volumes -> middle axial slice; DICOM rescale slope/intercept applied, "
                "MONOCHROME1 inverted, no VOI window",
                "orientation": "display order (row 0 at the top)",
                "spacing": "ignored: the image is resized to image_size pixels per side",
                "intensity": "uint8 -> x / 255; any other dtype -> per-image min-max between the 0.5th and "
                "99.5th percentiles, clipped to [0, 1]",
                "channels": "grey repeated to 3 channels or RGB averaged to grey, as in_channels asks; alpha "
                "dropped",
                "resize": "MONAI Resize, bilinear (trilinear in 3D), anti-aliased",
                "mean": float(runtime.MEAN),
                "std": float(runtime.STD),
            },
            "model_file": MODEL_FILE,
            "model_sha256": model_sha256,
            "metrics": _jsonable(metrics),
            "training": _jsonable(training),
            "exported_at": now,
        },
    }


def inference_config(network: dict, net_target: str, action: str, action_target: str) -> dict:
    """configs/inference.json of a bundle: puts the bundle root on sys.path itself, builds `network_def`
    (`net_target` with the `network` arguments), loads the weights (SHA-256 checked, weights_only,
    strict) and runs `action_target(bundle_root, image_path, out_path, net)` as `action`."""
    return {
        "imports": ["$import os", "$import sys"],
        "bundle_root": ".",
        "image": "",
        "output": "",
        "device": "cpu",
        "initialize": ["$sys.path.insert(0, os.path.abspath(@bundle_root))"],
        "network_def": {"_target_": net_target, **network},
        "network": {
            "_target_": "scripts.lorkd_runtime.load_weights",
            "net": "@network_def",
            "bundle_root": "@bundle_root",
            "device": "@device",
        },
        action: {
            "_target_": action_target,
            "bundle_root": "@bundle_root",
            "image_path": "@image",
            "out_path": "@output",
            "net": "@network",
        },
        "run": [f"$@{action}"],
    }


def _write_labels(root: Path, task: dict) -> None:
    labels = task["label_names"]
    _write_json(
        root / "labels.json",
        {
            "task": task["name"],
            "kind": task["kind"],
            "labels": [{"index": i, "name": label} for i, label in enumerate(labels)],
        },
    )
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "name"])
        writer.writerows(enumerate(labels))


def _build_bundle(
    root: Path,
    *,
    task: dict,
    network: dict,
    image_size: int,
    state: dict[str, torch.Tensor],
    metrics: dict,
    training: dict,
    version: str,
) -> None:
    """Write every file of a bundle into the (empty, temporary) folder `root`; metadata last."""
    (root / "models").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "docs").mkdir()
    torch.save(state, root / MODEL_FILE)
    (root / "scripts" / "__init__.py").write_text(
        '"""Code of a LoRKD expert bundle (copied from LoRKD Studio at export)."""\n', encoding="utf-8"
    )
    shutil.copyfile(nets.__file__, root / "scripts" / "lorkd_nets.py")
    shutil.copyfile(runtime.__file__, root / "scripts" / "lorkd_runtime.py")
    _write_labels(root, task)
    _write_json(root / INFERENCE_FILE, inference_config(network, "scripts.lorkd_nets.ClassifierNet", "classify",
                                                        "scripts.lorkd_runtime.classify"))
    (root / "configs" / "logging.conf").write_text(LOGGING_CONF, encoding="utf-8")
    metadata = _build_metadata(
        task=task,
        network=network,
        image_size=image_size,
        metrics=metrics,
        training=training,
        version=version,
        model_sha256=runtime.sha256_file(root / MODEL_FILE),
    )
    validate_metadata(metadata)
    (root / "docs" / "README.md").write_text(render_model_card(metadata), encoding="utf-8")
    _write_json(root / METADATA_FILE, metadata)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _partial_prefix(name: str, what: str) -> str:
    return f".{name}.{what}-"


def _clean_stale(parent: Path, name: str) -> None:
    """Remove leftovers of exports of `name` whose process died (killed mid-write); if such a process died
    between moving the old bundle aside and moving the new one in, put the old bundle back first."""
    for what in ("old", "partial"):
        prefix = _partial_prefix(name, what)
        for path in sorted(parent.glob(prefix + "*")):
            try:
                pid = int(path.name[len(prefix) :].split("-", 1)[0])
            except ValueError:
                continue
            if not path.is_dir() or _pid_alive(pid):
                continue
            target = parent / name
            if what == "old" and not target.exists():
                os.rename(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _is_bundle_or_empty(path: Path) -> bool:
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return isinstance(json.loads((path / METADATA_FILE).read_text(encoding="utf-8")).get("lorkd"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def write_bundle(
    out_dir: str | os.PathLike,
    *,
    task: Mapping[str, Any],
    arch: str,
    spatial_dims: int,
    in_channels: int,
    image_size: int,
    state_dict: Mapping[str, torch.Tensor],
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    version: str = "0.1.0",
) -> Path:
    """Export one expert as a MONAI bundle at `out_dir` and return its path.

    task: TaskSpec.to_dict() (name, kind, num_classes, label_names, spatial_dims, rgb, source).
    arch/spatial_dims/in_channels: the `ClassifierNet` the weights belong to; image_size: the side length
    `prepare` resizes to. state_dict: the plain merged ClassifierNet state_dict (checked to strict-load
    before anything is written). metrics: expert and teacher evaluation (see the model card for the
    shapes it tabulates); training: run settings for the model card. Both must be JSON-serialisable
    (numpy scalars, tensors and paths are converted).

    Atomic: the bundle is built in a hidden `.NAME.partial-PID-*` folder next to `out_dir` and renamed into
    place when complete; an existing bundle at `out_dir` is replaced only then (and only if it is a LoRKD
    bundle or an empty folder: anything else raises `BundleError`). On any error nothing is left behind.
    """
    out_dir = Path(out_dir)
    task_d = _check_task(task, spatial_dims, in_channels)
    network = {
        "arch": str(arch),
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "num_classes": int(task_d["num_classes"]),
    }
    check_size = getattr(nets, "check_image_size", None)  # e.g. densenet121 needs >= 32 px
    if check_size is not None:
        check_size(network["arch"], int(image_size))
    state = _plain_state(state_dict)
    probe = ClassifierNet(**network)
    try:
        probe.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"state_dict does not fit ClassifierNet({network}): {runtime._one_line(error)[:500]}"
        ) from error
    del probe
    return publish_bundle(
        out_dir,
        lambda tmp: _build_bundle(
            tmp,
            task=task_d,
            network=network,
            image_size=int(image_size),
            state=state,
            metrics=dict(metrics),
            training=dict(training),
            version=str(version),
        ),
    )


def publish_bundle(out_dir: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a bundle with `build(tmp)` in a hidden `.NAME.partial-PID-*` folder next to `out_dir` and rename
    it into place when complete; an existing bundle at `out_dir` is replaced only then (and only if it is a
    LoRKD bundle or an empty folder: anything else raises `BundleError`). On any error nothing is left behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not _is_bundle_or_empty(out_dir):
        raise BundleError(f"refusing to replace {out_dir}: it exists and is not a LoRKD expert bundle")

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(parent, out_dir.name)
    tmp = parent / f"{_partial_prefix(out_dir.name, 'partial')}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # honours the umask (tempfile.mkdtemp would make the bundle private, mode 0700)
    try:
        build(tmp)
        if out_dir.exists():
            old = parent / f"{_partial_prefix(out_dir.name, 'old')}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_verified(
    bundle_dir: str | os.PathLike, required_files: tuple[str, ...], network_keys: tuple[str, ...],
    required_lorkd: tuple[str, ...] = (),
) -> tuple[Path, dict, dict, dict[str, torch.Tensor]]:
    """(root, metadata, network kwargs, state_dict) of an exported bundle of any kind, after the checks every
    bundle gets: its files exist, the metadata names the network (`network_keys`) and `required_lorkd`
    entries, models/model.pt has the SHA-256 recorded at export and is read with
    `torch.load(weights_only=True)`. Raises `BundleError` with a one-line message on any problem."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"expert bundle {root} does not exist")
    for rel in required_files:
        if not (root / rel).is_file():
            what = "model file" if rel == MODEL_FILE else "file"
            raise BundleError(f"expert bundle {root} is incomplete: {what} {rel} is missing")
    try:
        metadata = runtime.read_bundle_metadata(root)
        lorkd = metadata["lorkd"]
        network = {k: lorkd["network"][k] for k in network_keys}
        expected = str(lorkd["model_sha256"])
        missing = [key for key in required_lorkd if key not in lorkd]
        if missing:
            raise KeyError(f"lorkd block lacks {', '.join(missing)}")
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(
            f"expert bundle {root}: invalid {METADATA_FILE} ({runtime._one_line(error)})"
        ) from error
    model_path = root / lorkd.get("model_file", MODEL_FILE)
    if runtime.sha256_file(model_path) != expected:
        raise BundleError(
            f"model file {model_path} does not match the SHA-256 recorded at export (tampered or corrupted)"
        )
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, refused globals under weights_only
        raise BundleError(f"model file {model_path} cannot be read ({runtime._one_line(error)})") from error
    return root, metadata, network, state


def load_state_into(net: torch.nn.Module, state: dict, root: Path, network: dict) -> torch.nn.Module:
    """`net` in eval mode with `state` loaded strictly; `BundleError` when the weights do not fit."""
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BundleError(
            f"model file {root / MODEL_FILE} does not fit {network} ({runtime._one_line(error)[:300]})"
        ) from error
    return net.eval()


def load_bundle(bundle_dir: str | os.PathLike) -> tuple[ClassifierNet, dict]:
    """Load an exported classification expert: `(network in eval mode on CPU, metadata dict)`.

    `read_verified` checks files, metadata and SHA-256 and reads the weights with weights_only; they are
    loaded with strict=True into the `ClassifierNet` that the metadata describes (built from
    core.models.nets, the code the bundle's scripts/lorkd_nets.py was copied from).
    """
    root, metadata, network, state = read_verified(
        bundle_dir, REQUIRED_FILES, ("arch", "spatial_dims", "in_channels", "num_classes"),
        ("kind", "label_names", "preprocessing"),
    )
    try:
        net = ClassifierNet(**network)
    except (ValueError, TypeError) as error:
        raise BundleError(f"expert bundle {root}: cannot build network {network} ({error})") from error
    return load_state_into(net, state, root, network), metadata
