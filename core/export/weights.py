"""What the scripts of an exported bundle need to load their own weights: the bundle's metadata and a model file
checked against the SHA-256 recorded at export, read with `weights_only=True` (tensors only, never code).

Every file is read as a regular file inside the bundle, its size bounded before a byte is read (a metadata or
model file that is a link, a device such as /dev/zero or a FIFO is refused unread), and the model file the
metadata names must be a path inside the bundle.

Bundle-portable (standard library and torch, and `manifest.py` beside it): export copies this file into each
bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from .manifest import bundle_file, check_files, read_regular

METADATA_FILE = "configs/metadata.json"
MODEL_FILE = "models/model.pt"
MAX_METADATA_BYTES = 16 << 20
MAX_MODEL_BYTES = 8 << 30


def one_line(error: BaseException) -> str:
    """An exception's message on one line (third-party readers put newlines in theirs)."""
    return " ".join(str(error).split()) or type(error).__name__


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle_metadata(bundle_root: str | os.PathLike) -> dict:
    """`configs/metadata.json` of an expert bundle, checked to have our `lorkd` block."""
    path = Path(bundle_root) / METADATA_FILE
    try:
        metadata = json.loads(read_regular(bundle_root, METADATA_FILE, MAX_METADATA_BYTES).decode("utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read bundle metadata ({one_line(error)})") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("lorkd"), dict):
        raise ValueError(f"{path}: not a LoRKD expert bundle (no 'lorkd' block)")
    return metadata


def load_weights(
    net: torch.nn.Module, bundle_root: str | os.PathLike, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load the bundle's `models/model.pt` into `net` and return it on `device` in eval mode.

    Every file the bundle's SHA256SUMS lists must have its recorded size and SHA-256 (this catches a corrupted
    or edited metadata, label or model file; it cannot catch edited code, which has run before this function:
    check a bundle with `sha256sum -c SHA256SUMS` or `lorkd verify` before running it). The model file must lie
    inside the bundle, have the SHA-256 recorded in `configs/metadata.json`, and is read with
    `torch.load(weights_only=True)` (tensors only, no pickled code) from the very bytes hashed, then loaded with
    strict=True.
    """
    root = Path(bundle_root)
    lorkd = read_bundle_metadata(root)["lorkd"]
    rel = bundle_file(lorkd.get("model_file", MODEL_FILE))
    files = check_files(root, unlisted=False)
    if files.problems:
        raise ValueError(files.problems[0])
    if files.entries is None and lorkd.get("manifest"):
        raise ValueError(f"{root / str(lorkd['manifest'])} is missing although {METADATA_FILE} records one")
    model_path = root / rel
    try:
        data = read_regular(root, rel, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ValueError(f"model file {model_path} is missing") from None
    expected = lorkd.get("model_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(
            f"model file {model_path} does not match the SHA-256 recorded at export (tampered or corrupted)"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
