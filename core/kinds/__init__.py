"""Task kinds and their registry, and loading a run config (whose sections depend on its kind).

A kind is one package here (`classification`, `segmentation`) with a `TaskKind` subclass (`core.kinds.base`);
registering it is one line in `_registered`. Everything else (pipeline, CLI, app) finds kinds through `get_kind`,
`kind_of_bundle` and `KINDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Config, apply_override, from_dict, read_raw
from core.errors import BundleError, ConfigError
from core.export.bundle import bundle_kind
from core.kinds.base import TaskKind
from core.kinds.classification import ClassificationKind
from core.kinds.segmentation import SegmentationKind


def _registered() -> dict[str, TaskKind]:
    kinds = [ClassificationKind(), SegmentationKind()]
    return {kind.name: kind for kind in kinds}


KINDS: dict[str, TaskKind] = _registered()
DEFAULT_DEMO = "segmentation"  # the app's and `lorkd demo`'s default


def get_kind(name: str) -> TaskKind:
    """The registered kind called `name` (ConfigError at `kind` otherwise)."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"must be one of {', '.join(KINDS)}; got {name!r}", "kind") from None


def kind_of_bundle(bundle_dir: str | Path) -> TaskKind:
    """The kind that wrote an expert bundle (BundleError when it is not a LoRKD bundle of a known kind)."""
    name = bundle_kind(bundle_dir)
    if name is None:
        raise BundleError(f"expert bundle {bundle_dir}: missing or unreadable configs/metadata.json (not a LoRKD "
                          f"expert bundle)")
    if name not in KINDS:
        raise BundleError(f"expert bundle {bundle_dir} was written by a LoRKD kind this version does not know "
                          f"({name!r})")
    return KINDS[name]


def config_from_raw(raw: dict) -> Config:
    """A Config (not yet path-resolved or validated) from a raw mapping, with the sections of its kind."""
    kind = get_kind(raw.get("kind", "classification"))
    sections = kind.sections
    task_type = sections["task"]
    hints = {"tasks": list[task_type], "data": sections["data"], "teacher": sections["teacher"],
             "backbone": sections["backbone"], "train": sections["train"]}
    config = from_dict(Config, raw, hints=hints)
    for section in ("data", "teacher", "backbone", "train"):
        if getattr(config, section) is None:
            setattr(config, section, sections[section]())
    return config


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override and validate a config from a YAML file (or an already parsed mapping); a ConfigError names
    the field (`loc`) and, for a file, the file."""
    raw, base = read_raw(source, overrides)
    try:
        config = config_from_raw(raw).resolve_paths(base).validate()
        get_kind(config.kind).validate(config)
        return config
    except ConfigError as exc:
        if isinstance(source, dict):
            raise
        raise exc.with_source(str(source)) from None


def prepare_demo(kind: str, data_dir: str | Path, quick: bool = False, overrides: list[str] | tuple[str, ...] = (),
                 **options: Any) -> dict:
    """The config mapping of `kind`'s embedded demo, its files written (or reused) under `data_dir`, with
    `overrides` ("key=value") applied: what `lorkd demo` and the app's demo both run. It may write files (run it
    off the GUI thread)."""
    raw = get_kind(kind).build_demo(Path(data_dir), quick=quick, **options)
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


__all__ = ["DEFAULT_DEMO", "KINDS", "TaskKind", "config_from_raw", "get_kind", "kind_of_bundle", "load_config",
           "prepare_demo"]
