"""What the scripts of an exported bundle need to load their own weights: the bundle's metadata and a model file
checked against the SHA-256 recorded at export, read with `weights_only=True` (tensors only, never code).

Bundle-portable (standard library and torch only): export copies this file into each bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

METADATA_FILE = "configs/metadata.json"


MODEL_FILE = "models/model.pt"


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
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read bundle metadata ({one_line(error)})") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("lorkd"), dict):
        raise ValueError(f"{path}: not a LoRKD expert bundle (no 'lorkd' block)")
    return metadata


def load_weights(
    net: torch.nn.Module, bundle_root: str | os.PathLike, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load the bundle's `models/model.pt` into `net` and return it on `device` in eval mode.

    The file's SHA-256 must equal the one recorded in `configs/metadata.json`; it is read with
    `torch.load(weights_only=True)` (tensors only, no pickled code) and loaded with strict=True.
    """
    lorkd = read_bundle_metadata(bundle_root)["lorkd"]
    model_path = Path(bundle_root) / lorkd.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise ValueError(f"model file {model_path} is missing")
    expected = lorkd.get("model_sha256")
    if expected and sha256_file(model_path) != expected:
        raise ValueError(
            f"model file {model_path} does not match the SHA-256 recorded at export (tampered or corrupted)"
        )
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()

