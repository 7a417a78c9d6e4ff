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
    SHA256SUMS               SHA-256 and size of every other file (`sha256sum -c SHA256SUMS`; core/export/manifest.py)

What differs per kind (network, metadata, model card, scripts, entry point) comes in a `BundleParts` from the
kind's own bundle module; `write_bundle` does the rest. A bundle is built in a hidden temporary folder next to
`out_dir` and renamed into place only when it is complete; an existing bundle is replaced only then.

A bundle is untrusted input when it is read back (`read_verified`, the one door of every kind's loading, and
`verify_bundle`, `lorkd verify`): every file is checked against SHA256SUMS before anything else is read, and
every metadata field the loaders use is checked before they use it (`check_metadata`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from core.errors import BundleError
from core.export.manifest import MANIFEST_FILE, FileCheck, bundle_file, check_files, manifest_text, read_regular
from core.export.schema import SCHEMA_URL, validate_metadata
from core.export.weights import (
    MAX_METADATA_BYTES,
    MAX_MODEL_BYTES,
    METADATA_FILE,
    MODEL_FILE,
    one_line,
    read_bundle_metadata,
    sha256_file,
)
from core.files import atomic_save, write_bytes_atomic, write_text_atomic
from core.preprocess import applicability
from core.preprocess.volume import INTENSITY_MODES

INFERENCE_FILE = "configs/inference.json"
LOGGING_FILE = "configs/logging.conf"
CORE_ROOT = Path(__file__).resolve().parents[1]  # the `core` package: scripts keep their paths relative to it
# what every bundle's scripts need besides the kind's own network and runtime modules
PORTABLE_MODULES = ("core.errors", "core.files", "core.io", "core.preprocess", "core.export.weights",
                    "core.export.manifest")
# scripts that bundles exported before SHA256SUMS existed lack (they still load: see `read_verified`)
# scripts bundles hold since a later version (with SHA256SUMS; the applicability check): required only where the
# bundle's manifest lists them; a bundle exported before has none, its own scripts never import them, it loads
ADDED_LATER = ("scripts/export/manifest.py", "scripts/preprocess/applicability.py")
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
    """The command line (argv after `python`) that runs a bundle outside the app; `-B`: Python writes no
    `__pycache__` into the bundle's scripts (which `lorkd verify` would refuse as unlisted code)."""
    root = Path(bundle_dir)
    return ["-B", "-m", "monai.bundle", "run", "--config_file", str(root / INFERENCE_FILE), "--bundle_root", str(root),
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
        metadata["lorkd"]["manifest"] = MANIFEST_FILE  # a bundle without it then is refused, not read unchecked
        # `python -m monai.bundle run` imports fire (MONAI's command line)
        metadata.setdefault("required_packages_version", {}).update(package_versions(["fire"]))
        validate_metadata(metadata)
        write_text_atomic(root / "docs" / "README.md", parts.card(metadata))
        write_json(root / METADATA_FILE, metadata)  # a folder with metadata is a complete bundle
        write_text_atomic(root / MANIFEST_FILE, manifest_text(root))  # every file above, with size and SHA-256

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


@dataclass(frozen=True)
class KindFields:
    """What a kind's loaders read from the `lorkd` block beyond the common fields: `lorkd` entries, keys of
    `preprocessing` they need and keys they use when present (checked by `_check_preprocessing`; the other keys
    there only describe), and the values `kind` may take."""

    lorkd: tuple[str, ...]
    preprocessing: tuple[str, ...]
    optional: tuple[str, ...]
    kinds: tuple[str, ...]


# By `run_kind`: what `classification.runtime.classify`/`apply` and `segmentation.apply`/`runtime.segment` index
# without a default. A kind not listed here gets the common checks of `check_metadata` only.
KIND_FIELDS = {
    "classification": KindFields(("kind", "label_names", "preprocessing", "network"),
                                 ("image_size", "in_channels", "spatial_dims"), (), ("multiclass", "multilabel")),
    "segmentation": KindFields(("kind", "label_names", "preprocessing", "network", "task"),
                               ("spacing", "patch_size", "intensity"),
                               ("overlap", "blend", "axcodes", "in_channels", "spatial_dims"), ("segmentation",)),
}
BLENDS = ("gaussian", "constant")  # MONAI sliding_window_inference modes
AXCODES = ("RAS", "LPS")


class _Invalid(Exception):
    """One invalid metadata name (message: "lorkd.FIELD: what is wrong, got VALUE")."""


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _invalid(name: str, need: str, value: Any) -> _Invalid:
    return _Invalid(f"lorkd.{name} must be {need}, got {_shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _check_int(name: str, value: Any, minimum: int | None = None, choices: Sequence[int] = ()) -> int:
    if not _is_int(value) or (minimum is not None and value < minimum) or (choices and value not in choices):
        need = f"one of {', '.join(map(str, choices))}" if choices else (
            "an integer" if minimum is None else f"an integer >= {minimum}")
        raise _invalid(name, need, value)
    return value


def _check_list(name: str, value: Any, length: int | None, integer: bool, what: str) -> list:
    ok = isinstance(value, list) and (len(value) == length if length else len(value) > 0)
    ok = ok and all((_is_int(v) if integer else _is_number(v)) and v > 0 for v in value)
    if not ok:
        count = f"{length} " if length else ""
        raise _invalid(name, f"a list of {count}positive {what}", value)
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices or not isinstance(value, str):
        raise _invalid(name, f"one of {', '.join(choices)}", value)
    return value


def _check_intensity(value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid("preprocessing.intensity", 'an object such as {"mode": "percentile", "low": 0.5, '
                       '"high": 99.5}', value)
    mode = _check_choice("preprocessing.intensity.mode", value.get("mode"), INTENSITY_MODES)
    for key in ("low", "high", "a_min", "a_max", "b_min", "b_max"):
        if key in value and not _is_number(value[key]):
            raise _invalid(f"preprocessing.intensity.{key}", "a finite number", value[key])
    for key in ("clip", "nonzero"):
        if key in value and not isinstance(value[key], bool):
            raise _invalid(f"preprocessing.intensity.{key}", "true or false", value[key])
    needs = {"percentile": ("low", "high"), "ct_window": ("low", "high"), "range": ("a_min", "a_max")}
    for key in needs.get(mode, ()):
        if key not in value:
            raise _Invalid(f"lorkd.preprocessing.intensity.{key} is missing (mode {mode!r} needs it)")
    if mode in ("percentile", "ct_window") and not value["high"] > value["low"]:
        raise _invalid("preprocessing.intensity", "low < high", [value["low"], value["high"]])
    if mode == "percentile" and not (0 <= value["low"] and value["high"] <= 100):
        raise _invalid("preprocessing.intensity", "percentiles within [0, 100]", [value["low"], value["high"]])


def _check_network(network: Any, network_keys: Sequence[str]) -> dict:
    if not isinstance(network, dict):
        raise _invalid("network", "an object of network arguments", network)
    missing = [key for key in network_keys if key not in network]
    if missing:
        raise _Invalid(f"lorkd.network lacks {', '.join(missing)}")
    for key, value in network.items():
        name = f"network.{key}"
        if key == "arch" and not (isinstance(value, str) and value):
            raise _invalid(name, "the name of an architecture", value)
        if key in ("in_channels", "num_classes", "features"):
            _check_int(name, value, 1)
        if key == "spatial_dims":
            _check_int(name, value, choices=(2, 3))
        if key == "res_units":
            _check_int(name, value, 0)
        if key == "channels":
            _check_list(name, value, None, True, "integers")
        if key == "net" and value is not None and not isinstance(value, dict):
            raise _invalid(name, "an object of MONAI network arguments", value)
    return {key: network[key] for key in network_keys}


def _check_preprocessing(pre: Any, fields: KindFields | None, network: dict) -> None:
    if not isinstance(pre, dict):
        raise _invalid("preprocessing", "an object", pre)
    if fields is None:
        return
    missing = [key for key in fields.preprocessing if key not in pre]
    if missing:
        raise _Invalid(f"lorkd.preprocessing lacks {', '.join(missing)}")
    for key in (*fields.preprocessing, *fields.optional):
        if key not in pre:
            continue
        value = pre[key]
        name = f"preprocessing.{key}"
        if key == "image_size":
            _check_int(name, value, 1)
        elif key == "in_channels":
            _check_int(name, value, choices=(1, 3))
        elif key == "spatial_dims":
            _check_int(name, value, choices=(2, 3))
        elif key == "spacing":
            _check_list(name, value, 3, False, "numbers (mm)")
        elif key == "patch_size":
            _check_list(name, value, 3, True, "integers (voxels)")
        elif key == "overlap" and not (_is_number(value) and 0 <= value < 1):
            raise _invalid(name, "a number in [0, 1)", value)
        elif key == "blend":
            _check_choice(name, value, BLENDS)
        elif key == "axcodes" and value is not None:
            _check_choice(name, value, AXCODES)
        elif key == "intensity":
            _check_intensity(value)
        if key in ("in_channels", "spatial_dims") and key in network and network[key] != value:
            raise _invalid(name, f"network.{key} ({network[key]})", value)


def check_metadata(
    root: str | os.PathLike, metadata: dict, network_keys: Sequence[str] = (), required_lorkd: Sequence[str] = ()
) -> dict:
    """The network arguments (`network_keys`) of a bundle's metadata, after checking every field the loaders use:
    types, ranges and agreement (label names against num_classes, ints that must be ints, positive spacing and
    patch size, known intensity mode and blending, ...); what a kind reads beyond the common fields is in
    KIND_FIELDS. Raises `BundleError` naming the field on one line."""
    lorkd = metadata["lorkd"]
    run_kind = lorkd.get("run_kind")
    fields = KIND_FIELDS.get(run_kind) if isinstance(run_kind, str) else None
    try:
        required = [*required_lorkd, *(fields.lorkd if fields else ()), "network", "model_sha256"]
        missing = sorted({key for key in required if key not in lorkd})
        if missing:
            raise _Invalid(f"the lorkd block lacks {', '.join(missing)}")
        network = _check_network(lorkd["network"], network_keys)
        sha = lorkd["model_sha256"]
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise _invalid("model_sha256", "64 hexadecimal digits", sha)
        if "model_file" in lorkd:
            try:
                bundle_file(lorkd["model_file"])
            except ValueError as error:
                raise _Invalid(f"lorkd.{error}") from None
        labels = lorkd.get("label_names")
        if labels is not None:
            if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels)):
                raise _invalid("label_names", "a list of label names", labels)
            if len(set(labels)) != len(labels):
                raise _invalid("label_names", "unique names", labels)
            declared = lorkd["network"].get("num_classes")
            if declared is not None and declared != len(labels):
                raise _Invalid(f"lorkd.label_names has {len(labels)} names but network.num_classes is {declared}")
        task = lorkd.get("task")
        if task is not None:
            if not (isinstance(task, dict) and isinstance(task.get("name"), str) and task["name"]):
                raise _invalid("task", "an object with a name", task)
            count = task.get("num_classes")
            if count is not None and labels is not None and count != len(labels):
                raise _Invalid(f"lorkd.task.num_classes is {_shown(count)} but label_names has {len(labels)} names")
        if "kind" in lorkd and fields:
            _check_choice("kind", lorkd["kind"], fields.kinds)
        elif "kind" in lorkd and not isinstance(lorkd["kind"], str):
            raise _invalid("kind", "a string", lorkd["kind"])
        if "preprocessing" in lorkd:
            _check_preprocessing(lorkd["preprocessing"], fields, lorkd["network"])
        if "envelope" in lorkd and (problem := applicability.invalid(lorkd["envelope"])):
            raise _Invalid(f"lorkd.envelope: {problem}")
    except _Invalid as error:
        raise BundleError(f"expert bundle {root}: invalid {METADATA_FILE}: {error}") from None
    return network


def _first(problems: list[str], root: Path) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''}: `lorkd verify {root}` lists them)"
                          if more else "")


def _checked_file(root: Path, rel: str, files: FileCheck, max_bytes: int, what: str) -> bytes:
    """The bytes of `rel` (a regular file inside the bundle, its size checked before it is read), equal to what
    SHA256SUMS lists when the bundle has one."""
    entry = files.entries.get(rel) if files.entries is not None else None
    if files.entries is not None and entry is None:
        raise BundleError(f"expert bundle {root}: {what} {rel} is not listed in {MANIFEST_FILE}; refused")
    try:
        data = read_regular(root, rel, max_bytes, entry.size if entry else None)
    except FileNotFoundError:
        raise BundleError(f"expert bundle {root} is incomplete: {what} {rel} is missing") from None
    except (OSError, ValueError) as error:
        raise BundleError(f"{what} {one_line(error)}") from None
    if entry and hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"{what} {root / rel} does not match the SHA-256 recorded at export in {MANIFEST_FILE} "
                          f"(tampered or corrupted)")
    return data


def read_verified(
    bundle_dir: str | os.PathLike, modules: Sequence[str], network_keys: Sequence[str],
    required_lorkd: Sequence[str] = (),
) -> tuple[Path, dict, dict, dict[str, torch.Tensor]]:
    """(root, metadata, network kwargs, state_dict) of an exported bundle of any kind, after the checks every
    bundle gets, in this order: every file against SHA256SUMS before anything else is read (`check_files`:
    listed files present as regular files inside the bundle with their sizes and SHA-256, no links or devices,
    nothing added under configs/, scripts/ or models/); the files a bundle needs exist (metadata, inference
    config, weights and the scripts of `modules`); every metadata field the loaders use is valid
    (`check_metadata`: the network `network_keys`, `required_lorkd`, ...); the model file named by the metadata
    lies inside the bundle, has the SHA-256 recorded at export and is read with `torch.load(weights_only=True)`
    from the bytes that were hashed. Raises `BundleError` with a one-line message."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"expert bundle {root} does not exist")
    files = check_files(root)
    if files.problems:
        raise BundleError(_first(files.problems, root))
    # A bundle without SHA256SUMS was exported before LoRKD Studio wrote one. It still loads, with the checks it
    # always had (weights against the SHA-256 in the metadata) and the metadata checks below: old runs' bundles
    # exist, and loading reads nothing of a bundle but its metadata and weights (its configs and scripts never run
    # here). `lorkd verify` reports it ("no SHA256SUMS"), since what `python -m monai.bundle run` executes cannot
    # be checked. A bundle whose metadata records a manifest that is gone is refused.
    legacy = files.entries is None
    required = [METADATA_FILE, INFERENCE_FILE, MODEL_FILE, *script_files([*PORTABLE_MODULES, *modules])]
    for rel in required:
        if rel in ADDED_LATER and (legacy or rel not in files.entries):
            continue
        if not (root / rel).is_file():
            what = "model file" if rel == MODEL_FILE else "file"
            raise BundleError(f"expert bundle {root} is incomplete: {what} {rel} is missing")
    data = _checked_file(root, METADATA_FILE, files, MAX_METADATA_BYTES, "metadata file")
    try:
        metadata = json.loads(data.decode("utf-8"))
        if not isinstance(metadata, dict) or not isinstance(metadata.get("lorkd"), dict):
            raise ValueError("not a LoRKD expert bundle (no 'lorkd' block)")
    except ValueError as error:
        raise BundleError(f"expert bundle {root}: invalid {METADATA_FILE} ({one_line(error)})") from error
    network = check_metadata(root, metadata, network_keys, required_lorkd)
    lorkd = metadata["lorkd"]
    if legacy and lorkd.get("manifest"):
        raise BundleError(f"expert bundle {root}: {MANIFEST_FILE} is missing although {METADATA_FILE} records one "
                          f"(deleted after export?); refused")
    rel = lorkd.get("model_file", MODEL_FILE)
    model_path = root / rel
    data = _checked_file(root, rel, files, MAX_MODEL_BYTES, "model file")
    if hashlib.sha256(data).hexdigest() != lorkd["model_sha256"]:
        raise BundleError(
            f"model file {model_path} does not match the SHA-256 recorded at export (tampered or corrupted)"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


# ---------------------------------------------------------------------------------------------------- verifying
@dataclass
class Verification:
    """What `verify_bundle` checked (`checked`), the problems it found (one line each) and unlisted files that
    cannot run (`notes`)."""

    root: Path
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify_bundle(bundle_dir: str | os.PathLike, load: Callable[[Path], tuple[Any, dict]]) -> Verification:
    """Check an expert bundle without running any of it (`lorkd verify`): its files against SHA256SUMS (every
    problem found, not only the first), then `load(root)` (the kind's loader: `read_verified`'s metadata and
    weights checks, and a strict load of the weights into the network). A bundle without SHA256SUMS is a problem
    here, though it still loads (see `read_verified`): what `python -m monai.bundle run` executes cannot be
    checked."""
    root = Path(bundle_dir)
    report = Verification(root)
    if not root.is_dir():
        report.problems.append(f"expert bundle {root} does not exist (give a bundle folder or a .zip of one)")
        return report
    files = check_files(root)
    report.problems += files.problems
    report.notes += files.notes
    if files.entries is not None and not files.problems:
        report.checked.append(
            f"{MANIFEST_FILE}: the {len(files.entries)} files it lists ({files.total_bytes} bytes) are present as "
            f"regular files with their recorded sizes and SHA-256; nothing added under configs/, scripts/ or "
            f"models/, no Python code added anywhere, no links or devices")
    if files.problems:
        return report  # loading would only repeat the first of them
    try:
        _, metadata = load(root)
    except BundleError as error:
        report.problems.append(str(error))
    else:
        lorkd = metadata["lorkd"]
        task = lorkd.get("task", {}).get("name", "?") if isinstance(lorkd.get("task"), dict) else "?"
        report.checked.append(f"{METADATA_FILE}: every field the loaders use is valid ({lorkd.get('run_kind')} "
                              f"expert, task {task}, {len(lorkd.get('label_names') or [])} labels)")
        report.checked.append(f"{lorkd.get('model_file', MODEL_FILE)}: the SHA-256 recorded in the metadata "
                              f"({lorkd['model_sha256'][:16]}...); read with weights_only and loaded strictly into "
                              f"its network")
    if files.entries is None and (root / METADATA_FILE).is_file():
        report.problems.append(
            f"expert bundle {root} has no {MANIFEST_FILE} (exported before LoRKD Studio wrote one): its configs and "
            f"scripts, which `python -m monai.bundle run` executes, cannot be checked; re-export it from its run "
            f"(`lorkd export RUN`). LoRKD Studio still applies it (it uses only its weights, SHA-256 checked)")
    else:
        report.checked.append(
            f"fingerprint (SHA-256 of {MANIFEST_FILE}): {files.fingerprint}; compare it with the one the sender "
            f"gives you (whoever changes a bundle can rewrite its {MANIFEST_FILE} too)")
    return report
