"""Run configuration: the sections every task kind shares, as dataclasses, and the YAML machinery.

A run's config is `Config` with the sections of its kind: each task kind (`core.kinds`) subclasses the shared
sections below with its own fields and defaults (its defaults live in its `config.py`, nowhere else) and names
them in its `sections`. `core.kinds.load_config` reads YAML, applies `--set key=value` overrides (dotted keys,
list indices as numbers: `tasks.0.medmnist=data/x.npz`), builds the kind's dataclasses and validates every
field; a bad value raises `ConfigError` whose `loc` is the field's path (`train.epochs: must be >= 1, got -3`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from core.errors import ConfigError
from core.files import write_text_atomic

FORMS = ("factorized", "paper")
NAME_FORBIDDEN = "/\\:*?\"<>| "
# names become folder and file names (runs/<name>/, experts/<task>/, bundle files): a name the file systems take
# everywhere, with room for the rest of the path, and never one that climbs out of a folder ("..")
NAME_MAX_CHARS = 100
# a config is a small text file: these bounds turn a hostile or wrong file (a "billion laughs" YAML whose
# aliases expand to 9^9 values, a file nested thousands of levels deep, a multi-GB log) into one-line errors
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 200_000  # scalars, lists and mappings once the YAML aliases (*name) are expanded
MAX_CONFIG_DEPTH = 50


# ------------------------------------------------------------------------------------------------- validators
def choice(loc: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ConfigError(f"must be one of {', '.join(map(str, options))}; got {_short(value)}", loc)


def at_least(loc: str, value: Any, low: float) -> None:
    if value < low:
        raise ConfigError(f"must be >= {low}, got {value}", loc)


def positive(loc: str, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0, got {value}", loc)


def check_name(loc: str | tuple, value: Any, forbidden: str = NAME_FORBIDDEN) -> None:
    """A run or task name: it becomes a folder and file name (runs/<name>/, experts/<task>/), so it must be
    non-empty, at most NAME_MAX_CHARS characters, without path characters (`forbidden`) or control characters,
    and not start with "." (".." would climb out of its folder, "." be the folder itself, ".x" be hidden)."""
    if not isinstance(value, str) or not value:
        raise ConfigError("must be a non-empty name", loc)
    shown = _short(value)
    if len(value) > NAME_MAX_CHARS:
        raise ConfigError(f"{shown} is {len(value)} characters long; at most {NAME_MAX_CHARS} (it becomes a folder "
                          f"and file name)", loc)
    bad = sorted({c for c in value if c in forbidden})
    if bad:
        what = "spaces or path characters" if " " in forbidden else "path characters"
        raise ConfigError(f"{shown} must not contain {what} ({' '.join(repr(c) for c in bad)}): it becomes a "
                          f"folder name", loc)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{shown} must not contain control characters (line breaks, tabs...)", loc)
    if value.startswith("."):
        raise ConfigError(f"{shown} must not start with '.': it becomes a folder name ('..' is the folder above, "
                          f"'.' the folder itself, '.name' a hidden folder)", loc)


def _short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def resolve_path(base: Path, value: str | list[str] | None) -> str | list[str] | None:
    """A path (or list of paths) made absolute against `base` (the config file's folder)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [resolve_path(base, v) for v in value]
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


# --------------------------------------------------------------------------------------------- shared sections
@dataclass
class TaskBase:
    """What every task has: a unique name (the kinds add their data fields) and, optionally, the imaging modality
    of its data (a DICOM modality code such as MR, CT, US, DX, XC, SM, OP), recorded in the expert's training
    envelope so that applying it to another modality warns (files that record their modality, DICOM, add theirs)."""

    name: str = ""
    modality: str | None = None

    def validate(self, where: str) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a task needs a non-empty name", f"{where}.name")
        check_name(f"{where}.name", self.name)
        if self.modality is not None and not (isinstance(self.modality, str)
                                              and re.fullmatch(r"[A-Za-z]{2,4}", self.modality)):
            raise ConfigError(f"must be a DICOM modality code such as MR or CT, got {self.modality!r}",
                              f"{where}.modality")

    def resolve_paths(self, base: Path) -> None:
        """Make the task's data paths absolute against `base`."""


@dataclass
class DataBase:
    """Data settings every kind has."""

    sampling: str = "natural"  # natural | balanced (each task equally likely in a batch)
    augment: bool = True
    num_workers: int = 0

    def validate(self) -> None:
        choice("data.sampling", self.sampling, ("natural", "balanced"))
        at_least("data.num_workers", self.num_workers, 0)


@dataclass
class TeacherBase:
    """The foundation model: pre-trained here on all tasks, or loaded from `checkpoint`."""

    ARCHS: ClassVar[tuple[str, ...]] = ()

    arch: str = ""
    checkpoint: str | None = None
    epochs: int = 2
    lr: float | None = None  # None: train.lr
    batch_size: int | None = None  # None: train.batch_size

    @property
    def source(self) -> str | None:
        """The file or folder the foundation model is loaded from (None: pre-trained in the run)."""
        return self.checkpoint

    def resolve_paths(self, base: Path) -> None:
        if self.checkpoint:
            self.checkpoint = resolve_path(base, self.checkpoint)

    def validate(self) -> None:
        choice("teacher.arch", self.arch, self.ARCHS)
        at_least("teacher.epochs", self.epochs, 0)
        if self.lr is not None:
            positive("teacher.lr", self.lr)
        if self.batch_size is not None:
            at_least("teacher.batch_size", self.batch_size, 1)


@dataclass
class BackboneBase:
    """The common backbone and its low-rank task experts."""

    ARCHS: ClassVar[tuple[str, ...]] = ()

    arch: str = ""
    rank: int = 4
    alpha: float = 16.0
    ranks: dict[str, int] | None = None  # per-task rank overrides: {task name: rank}
    form: str = "factorized"  # factorized | paper

    def validate(self, task_names: list[str]) -> None:
        choice("backbone.arch", self.arch, self.ARCHS)
        at_least("backbone.rank", self.rank, 1)
        positive("backbone.alpha", self.alpha)
        choice("backbone.form", self.form, FORMS)
        for task, r in (self.ranks or {}).items():
            if task not in task_names:
                raise ConfigError(f"no task named {task!r} (tasks: {task_names})", ("backbone", "ranks", task))
            at_least(f"backbone.ranks.{task}", r, 1)


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.2
    schedule: str = "cosine"  # cosine | constant
    kd_weight: float = 1.0  # beta
    temperature: float = 4.0  # tau
    kd_target: str = "auto"  # auto | features | logits (auto: logits when the teacher has task heads)
    grad_clip: float | None = 5.0
    amp: bool = True  # bf16/fp16 autocast on CUDA only
    log_every: int = 10

    def validate(self) -> None:
        at_least("train.epochs", self.epochs, 1)
        at_least("train.batch_size", self.batch_size, 2)
        choice("train.optimizer", self.optimizer, ("sgd", "adamw"))
        positive("train.lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"must be in [0, 1), got {self.momentum}", "train.momentum")
        at_least("train.weight_decay", self.weight_decay, 0)
        at_least("train.warmup_epochs", self.warmup_epochs, 0)
        choice("train.schedule", self.schedule, ("cosine", "constant"))
        at_least("train.kd_weight", self.kd_weight, 0)
        positive("train.temperature", self.temperature)
        choice("train.kd_target", self.kd_target, ("auto", "features", "logits"))
        if self.grad_clip is not None:
            positive("train.grad_clip", self.grad_clip)
        at_least("train.log_every", self.log_every, 1)


@dataclass
class EvaluateConfig:
    """How a run is evaluated (every kind)."""

    single_task: bool = True  # also train each task alone on the same backbone (same budget): does LoRKD help?
    select: str = "best"  # best: each expert (and the teacher) at its best validation epoch; last: the last epoch
    bootstrap: int = 2000  # resamples of the paired bootstrap interval of expert minus foundation model

    def validate(self) -> None:
        choice("evaluate.select", self.select, ("best", "last"))
        at_least("evaluate.bootstrap", self.bootstrap, 100)


@dataclass
class Config:
    """A whole run. `tasks`, `data`, `teacher`, `backbone` and `train` hold the dataclasses of the run's kind."""

    name: str = "run"
    kind: str = "classification"
    tasks: list[Any] = field(default_factory=list)
    data: Any = None
    teacher: Any = None
    backbone: Any = None
    train: Any = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0

    def validate(self) -> Config:
        """Check every shared field and section (the kind checks what is its own afterwards)."""
        check_name("name", self.name, forbidden="/\\")  # runs/<name>/ without --out
        if not self.tasks:
            raise ConfigError("at least one task is needed", "tasks")
        seen: set[str] = set()
        for i, task in enumerate(self.tasks):
            task.validate(f"tasks.{i}")
            if task.name in seen:
                raise ConfigError(f"task name {task.name!r} is used twice", ("tasks", i, "name"))
            seen.add(task.name)
        self.data.validate()
        self.teacher.validate()
        self.backbone.validate(self.task_names)
        self.train.validate()
        self.evaluate.validate()
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"must be auto, cpu, cuda or cuda:N, got {self.device!r}", "device")
        return self

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def rank_of(self, task: str) -> int:
        return (self.backbone.ranks or {}).get(task, self.backbone.rank)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolve_paths(self, base: Path) -> Config:
        """Make relative data/checkpoint paths absolute against `base` (the config file's folder)."""
        for task in self.tasks:
            task.resolve_paths(base)
        self.teacher.resolve_paths(base)
        return self


# ---------------------------------------------------------------------------------------------- dict -> config
def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint, building nested dataclasses; raise ConfigError on mismatch."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"invalid value {_short(value)}", where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {type(value).__name__} {_short(value)}", where)
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {type(value).__name__} {_short(value)}", where)
        key_t, val_t = typing.get_args(hint)
        return {_coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {type(value).__name__} {_short(value)}", where)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {type(value).__name__} {_short(value)}", where)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_short(value)}", where)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {type(value).__name__} {_short(value)}", where)
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "", hints: dict[str, Any] | None = None) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError. `hints` overrides
    field types (the run's kind gives `Config` its section types)."""
    prefix = f"{where}." if where else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__} {_short(data)}", where)
    hints = {**typing.get_type_hints(cls), **(hints or {})}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown key (known keys: {', '.join(names)})", f"{prefix}{unknown[0]}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------- YAML and overrides
class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses, before building any value, a document whose aliases expand to more than
    MAX_CONFIG_VALUES values (a "billion laughs" file: nine aliases of nine aliases of ... each cheap to parse,
    exponential for whatever walks the result), refers to itself, or nests deeper than MAX_CONFIG_DEPTH."""

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    sizes: dict[int, int | None] = {}  # node id -> values below it, aliases expanded (None: being counted)

    def count(node: yaml.Node, depth: int) -> int:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"line {node.start_mark.line + 1}: nested more than {MAX_CONFIG_DEPTH} levels deep; "
                              f"a LoRKD config is a few levels deep")
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise ConfigError(f"line {node.start_mark.line + 1}: a YAML alias (*name) refers to a list or "
                                  f"mapping that contains it (a structure without end)")
            return sizes[id(node)]
        sizes[id(node)] = None
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += count(child, depth + 1)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(f"the config holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases "
                                  f"(*name) are expanded (a 'billion laughs' file?); a LoRKD config is far smaller")
        sizes[id(node)] = total
        return total

    count(root, 0)


def parse_yaml(text: str, source: str | None = None) -> Any:
    """YAML `text` parsed safely and within bounds (see `_BoundedLoader`); every problem is one ConfigError line,
    "SOURCE: line L, column C: not valid YAML: PROBLEM"."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=source) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(exc), source=source) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL byte, say)
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        raise ConfigError(f"line {line}: not valid YAML: the control character #x{code:04x} is not allowed "
                          f"in YAML text", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {' '.join(str(exc).split())}", source=source) from None
    except RecursionError:
        raise ConfigError(f"not valid YAML: nested more than {MAX_CONFIG_DEPTH} levels deep", source=source) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = " ".join(str(exc.problem or exc.context or "").split())
    if exc.context and exc.problem and exc.context_mark is not None:
        cm = exc.context_mark
        problem += f" ({' '.join(exc.context.split())} at line {cm.line + 1}, column {cm.column + 1})"
    if "'\\t'" in problem:
        problem += "; indent with spaces, YAML does not allow tabs"
    return f"{where}not valid YAML: {problem}"


def read_yaml_file(path: str | Path) -> Any:
    """The YAML in `path` (a config), read within bounds: at most MAX_CONFIG_BYTES, UTF-8, `parse_yaml`; every
    problem is one ConfigError line naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; a LoRKD config is a small YAML file "
                          f"(is this the right file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}: line {line}, column {column}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                          f"offset {exc.start}); save the config as UTF-8") from None
    return parse_yaml(text, str(path))


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `key.path=value` override to a raw config mapping (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {_short(assignment)}: expected key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = parse_yaml(raw) if raw != "" else ""
    except ConfigError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {_short(raw)}: {exc}") from None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, key, ".".join(parts[:i]))
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, key, len(node))] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise _not_a_section(node, key, ".".join(parts[:-1]))


def _index(part: str, key: str, length: int) -> int:
    if not part.isdigit() or int(part) >= length:
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {length}")
    return int(part)


def _child(node: Any, part: str, key: str, where: str) -> Any:
    """The value at `part` of `node` (reached by `where`), an empty section made where it is missing."""
    if isinstance(node, list):
        return node[_index(part, key, len(node))]
    if not isinstance(node, dict):
        raise _not_a_section(node, key, where)
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _not_a_section(node: Any, key: str, where: str) -> ConfigError:
    return ConfigError(f"--set {key}: {where} is {type(node).__name__} {_short(node)}, not a section or a list: "
                       f"there is no field inside it to set")


def read_raw(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, Path]:
    """(the raw config mapping with `overrides` applied, the folder relative paths are read against)."""
    base = Path.cwd()
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        raw = read_yaml_file(path)
        base = path.resolve().parent
    if not isinstance(raw, dict | None):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(raw).__name__}")
    raw = copy.deepcopy(dict(raw or {}))
    for assignment in overrides:
        try:
            apply_override(raw, assignment)
        except ConfigError as exc:  # name the config the override was applied to
            raise (exc if isinstance(source, dict) else exc.with_source(str(source))) from None
    return raw, base


def save_config(config: Config, path: str | Path) -> None:
    """Write `config` as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
