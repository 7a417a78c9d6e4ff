"""The expert bundle container, shared by every task kind: layout, scripts, atomic publishing and verification.

Bundle layout (DESIGN.md, "Expert bundle")::

    configs/metadata.json    MONAI metadata (valid against resources/schema/meta_schema_20240725.json)
                             + our `lorkd` block: kind, task, labels, network args, preprocessing, SHA-256
    configs/inference.json   `python -m monai.bundle run --config_file BUNDLE/configs/inference.json
                             --bundle_root BUNDLE --image IN --output OUT`
    configs/logging.conf     the usual MONAI bundle logging set-up (INFO to stdout)
    models/model.pt          plain merged state_dict (strict-loads into network_def)
    scripts/                 the bundle-portable part of LoRKD Studio the expert needs (the kind's network and
                             runtime, `preprocess`, `io`, `export/weights.py`, `files.py`, `errors.py`), copied
                             with the package layout of `core/`, so their relative imports work unchanged
    docs/README.md           model card
    labels.json, labels.csv

What differs per kind (network, metadata, model card, scripts, entry point) comes in a `BundleParts` from the
kind's own bundle module; `write_bundle` does the rest. A bundle is built in a hidden temporary folder next to
`out_dir` and renamed into place only when it is complete; an existing bundle is replaced only then.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import importlib.metadata
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from core.errors import BundleError
from core.export.schema import SCHEMA_URL, validate_metadata
from core.export.weights import METADATA_FILE, MODEL_FILE, one_line, read_bundle_metadata, sha256_file
from core.files import atomic_save, write_bytes_atomic, write_text_atomic

INFERENCE_FILE = "configs/inference.json"
LOGGING_FILE = "configs/logging.conf"
CORE_ROOT = Path(__file__).resolve().parents[1]  # the `core` package: scripts keep their paths relative to it
# what every bundle's scripts need besides the kind's own network and runtime modules
PORTABLE_MODULES = ("core.errors", "core.files", "core.io", "core.preprocess", "core.export.weights")
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
REFERENCES = [
    "Zhou et al., Low-Rank Knowledge Decomposition for Medical Foundation Models, CVPR 2024, arXiv:2404.17184",
    "Li et al., LoRKD: Low-Rank Knowledge Decomposition for Medical Foundation Models, arXiv:2409.19540",
]


def bundle_command(bundle_dir: str | os.PathLike, image: str = "IMAGE", output: str = "OUT.json") -> list[str]:
    """The command line (argv after `python`) that runs a bundle outside the app."""
    root = Path(bundle_dir)
    return ["-m", "monai.bundle", "run", "--config_file", str(root / INFERENCE_FILE), "--bundle_root", str(root),
            "--image", str(image), "--output", str(output)]


# ------------------------------------------------------------------------------------------------ JSON helpers
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, Path | _dt.datetime | _dt.date):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def jsonable(value: Any) -> Any:
    """A plain-JSON copy (numpy scalars, tensors and paths converted)."""
    return json.loads(json.dumps(value, default=_json_default))


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=4, default=_json_default) + "\n")


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of those of `names` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


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


def plain_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (no views into training tensors, no autograd history)."""
    return {str(k): v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------------- scripts
def module_files(modules: Sequence[str]) -> list[str]:
    """The files (relative to `core/`, POSIX) of dotted module or package names under `core`; a package brings
    every `.py` file in it."""
    files: list[str] = []
    for name in modules:
        module = importlib.import_module(name)
        path = Path(module.__file__).resolve()
        found = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
        files += [p.relative_to(CORE_ROOT).as_posix() for p in found]
    return sorted(dict.fromkeys(files))


def script_files(modules: Sequence[str]) -> list[str]:
    """Bundle-relative paths (`scripts/...`) of the scripts a bundle with `modules` holds, package markers
    included."""
    files = set(module_files(modules))
    for rel in list(files):
        parent = Path(rel).parent
        while parent != Path("."):
            files.add((parent / "__init__.py").as_posix())
            parent = parent.parent
    return ["scripts/__init__.py"] + [f"scripts/{f}" for f in sorted(files)]


def copy_scripts(root: Path, modules: Sequence[str]) -> None:
    """Copy the files of `modules` into `root/scripts/` keeping their paths relative to `core/`; a package folder
    whose own `__init__.py` is not copied gets a marker `__init__.py` (the engine's ones import the whole engine)."""
    marker = '"""Code of a LoRKD expert bundle (copied from LoRKD Studio at export)."""\n'
    copied = set(module_files(modules))
    for rel in script_files(modules):
        inner = rel[len("scripts/"):]
        if inner in copied:
            write_bytes_atomic(root / rel, (CORE_ROOT / inner).read_bytes())
        else:
            write_text_atomic(root / rel, marker)


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
            "_target_": "scripts.export.weights.load_weights",
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


def write_labels(root: Path, task: dict) -> None:
    labels = task["label_names"]
    write_json(root / "labels.json", {"task": task["name"], "kind": task["kind"],
                                      "labels": [{"index": i, "name": label} for i, label in enumerate(labels)]})
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["index", "name"])
    writer.writerows(enumerate(labels))
    write_text_atomic(root / "labels.csv", text.getvalue())


# ---------------------------------------------------------------------------------------------------- writing
@dataclass
class BundleParts:
    """What a task kind puts into its bundle (see `write_bundle`).

    network: the keyword arguments of the network class (recorded in metadata and inference.json);
    net_class: the class, to check that `state` strict-loads before anything is written;
    modules: the kind's bundle-portable modules (its network and runtime), copied besides PORTABLE_MODULES;
    action/action_target: the inference.json entry point `action_target(bundle_root, image_path, out_path, net)`;
    metadata: `metadata(model_sha256) -> configs/metadata.json` content; card: `card(metadata) -> docs/README.md`.
    """

    task: dict
    network: dict
    net_class: type
    state: dict[str, torch.Tensor]
    modules: Sequence[str]
    action: str
    action_target: str
    metadata: Callable[[str], dict]
    card: Callable[[dict], str]


def network_target(parts: BundleParts) -> str:
    """The dotted path of the network class inside the bundle (`scripts.` + its path under `core.`)."""
    return "scripts." + parts.net_class.__module__.removeprefix("core.") + "." + parts.net_class.__name__


def write_bundle(out_dir: str | os.PathLike, parts: BundleParts) -> Path:
    """Export one expert as a MONAI bundle at `out_dir` (atomically, see `publish_bundle`) and return its path.

    `parts.state` is checked to strict-load into `parts.net_class(**parts.network)` before anything is written;
    the metadata is checked against the MONAI metadata schema before the bundle is published."""
    state = plain_state(parts.state)
    try:
        parts.net_class(**parts.network).load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"state_dict does not fit {parts.net_class.__name__}({parts.network}): {one_line(error)[:500]}"
        ) from error

    def build(root: Path) -> None:
        atomic_save(state, root / MODEL_FILE)
        copy_scripts(root, [*PORTABLE_MODULES, *parts.modules])
        write_labels(root, parts.task)
        write_json(root / INFERENCE_FILE, inference_config(parts.network, network_target(parts), parts.action,
                                                           parts.action_target))
        write_text_atomic(root / LOGGING_FILE, LOGGING_CONF)
        metadata = parts.metadata(sha256_file(root / MODEL_FILE))
        validate_metadata(metadata)
        write_text_atomic(root / "docs" / "README.md", parts.card(metadata))
        write_json(root / METADATA_FILE, metadata)  # last: a folder with metadata is a complete bundle

    return publish_bundle(out_dir, build)


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


# ---------------------------------------------------------------------------------------------------- reading
def bundle_kind(bundle_dir: str | os.PathLike) -> str | None:
    """The task kind recorded in a bundle's metadata (None when it is not a readable LoRKD bundle)."""
    try:
        kind = read_bundle_metadata(bundle_dir)["lorkd"].get("run_kind")
    except ValueError:
        return None
    return kind if isinstance(kind, str) else None


def read_verified(
    bundle_dir: str | os.PathLike, modules: Sequence[str], network_keys: Sequence[str],
    required_lorkd: Sequence[str] = (),
) -> tuple[Path, dict, dict, dict[str, torch.Tensor]]:
    """(root, metadata, network kwargs, state_dict) of an exported bundle of any kind, after the checks every
    bundle gets: its files exist (metadata, inference config, weights and the scripts of `modules`), the metadata
    names the network (`network_keys`) and `required_lorkd` entries, models/model.pt has the SHA-256 recorded at
    export and is read with `torch.load(weights_only=True)`. Raises `BundleError` with a one-line message."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"expert bundle {root} does not exist")
    for rel in (METADATA_FILE, INFERENCE_FILE, MODEL_FILE, *script_files([*PORTABLE_MODULES, *modules])):
        if not (root / rel).is_file():
            what = "model file" if rel == MODEL_FILE else "file"
            raise BundleError(f"expert bundle {root} is incomplete: {what} {rel} is missing")
    try:
        metadata = read_bundle_metadata(root)
        lorkd = metadata["lorkd"]
        network = {k: lorkd["network"][k] for k in network_keys}
        expected = str(lorkd["model_sha256"])
        missing = [key for key in required_lorkd if key not in lorkd]
        if missing:
            raise KeyError(f"lorkd block lacks {', '.join(missing)}")
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(f"expert bundle {root}: invalid {METADATA_FILE} ({one_line(error)})") from error
    model_path = root / lorkd.get("model_file", MODEL_FILE)
    if sha256_file(model_path) != expected:
        raise BundleError(
            f"model file {model_path} does not match the SHA-256 recorded at export (tampered or corrupted)"
        )
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, refused globals under weights_only
        raise BundleError(f"model file {model_path} cannot be read ({one_line(error)})") from error
    return root, metadata, network, state


def load_network(net_class: type, root: Path, network: dict, state: dict) -> torch.nn.Module:
    """`net_class(**network)` in eval mode with `state` loaded strictly; `BundleError` when it cannot be built or
    the weights do not fit."""
    try:
        net = net_class(**network)
    except (ValueError, TypeError) as error:
        raise BundleError(f"expert bundle {root}: cannot build network {network} ({error})") from error
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BundleError(
            f"model file {root / MODEL_FILE} does not fit {network} ({one_line(error)[:300]})"
        ) from error
    return net.eval()
