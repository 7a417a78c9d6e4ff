"""The manifest of an expert bundle: `SHA256SUMS` at its root, the SHA-256 and size of every other file.

It is in the text format of `sha256sum` (`HASH  PATH` lines), so anyone can check a bundle without LoRKD Studio:
`sha256sum -c SHA256SUMS` in the bundle folder (macOS: `shasum -a 256 -c SHA256SUMS`). Sizes are on comment
lines (`# size BYTES PATH`, which both tools skip), so a reader compares a file's size before it reads a byte.

What `check_files` refuses (`lorkd verify`, and every load through `core.export.bundle.read_verified`):
- a manifest entry that is not a plain relative path inside the bundle (absolute, `..`, backslashes);
- a symbolic link, device, FIFO or socket anywhere in the bundle (never opened: /dev/zero is not read);
- a listed file that is missing, has another size (checked before reading it) or another SHA-256;
- an unlisted file under configs/, scripts/ or models/ (MONAI reads configs/, imports scripts/: an added
  file there is code), or an unlisted Python or native-library file anywhere (`python -m monai.bundle run`
  puts the bundle root on sys.path, so a `SimpleITK.py` next to configs/ would be imported). Other unlisted
  files (a note in docs/, a `.DS_Store`) cannot run; they are reported as notes, not refused, except the model
  card and label files every export writes (an unlisted docs/README.md had its line removed to hide an edit).

The manifest shows a bundle is unchanged since it was written, not who wrote it: whoever changes a bundle can
also rewrite its SHA256SUMS. `fingerprint` (the SHA-256 of SHA256SUMS) is what to compare with the value the
sender gives you.

Bundle-portable (standard library only): export copies this file into each bundle, where `export/weights.py`
uses it to check the listed files before loading the weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_FILE = "SHA256SUMS"
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 20_000
CODE_DIRS = ("configs", "scripts", "models")  # every file in them must be listed
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".dylib", ".dll", ".pth")  # importable anywhere
LAYOUT_FILES = ("docs/README.md", "labels.json", "labels.csv")  # every export writes them: they must be listed
HEADER = (
    "# SHA-256 of every file of this LoRKD expert bundle except this one, written at export.\n"
    "# Check it in this folder before running the bundle: sha256sum -c SHA256SUMS\n"
    "# (macOS: shasum -a 256 -c SHA256SUMS), or with LoRKD Studio: lorkd verify BUNDLE.\n"
    "# Lines '# size BYTES PATH' give each file's size.\n"
)
_ENTRY = re.compile(r"([0-9a-f]{64}) [ *](.+)")
_SIZE = re.compile(r"# size (\d+) (.+)")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFile(ValueError):
    """A bundle path that is not a regular file inside the bundle (a link, a device, a FIFO, a folder)."""


@dataclass(frozen=True)
class Entry:
    """One manifest line: a bundle-relative POSIX path, its size in bytes and its hex SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass
class FileCheck:
    """What `check_files` found. `entries` is None for a bundle without a manifest (exported before LoRKD
    Studio wrote one); `problems` are one-line messages (full paths), `notes` unlisted files that cannot run."""

    entries: dict[str, Entry] | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fingerprint: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in (self.entries or {}).values())


# ------------------------------------------------------------------------------------------------ paths
def path_problem(name: object) -> str | None:
    """Why `name` is not a plain bundle-relative POSIX path (None when it is one)."""
    if not isinstance(name, str) or not name:
        return "is not a path"
    if any(c in name for c in "\\\x00\n\r"):
        return "has characters a bundle path never has"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "points outside the bundle"
    if "" in parts or "." in parts:
        return "is not a plain relative path"
    return None


def bundle_file(name: object, what: str = "model_file") -> str:
    """`name` (a path the metadata records) as a bundle-relative path; ValueError unless it stays inside."""
    problem = path_problem(name)
    if problem:
        raise ValueError(f"{what} {name!r} {problem}: it must name a file inside the bundle")
    return str(name)


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular(root: Path, rel: str) -> tuple[int, os.stat_result]:
    """An open file descriptor of the regular file `root/rel`, every folder on the way a real folder (no links);
    FileNotFoundError when it is missing, NotRegularFile when it is anything else. Never opens a device or FIFO."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode):
            raise NotRegularFile(f"{path} is {_kind_of(mode)}, not a folder of the bundle; refused")
    path = root / rel
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFile(f"{path} is {_kind_of(before.st_mode)}, not a regular file; refused")
    fd = os.open(path, _OPEN_FLAGS)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise NotRegularFile(f"{path} changed while it was opened; refused")
    return fd, st


def _size_problem(path: Path, actual: int, size: int | None, max_bytes: int | None) -> str | None:
    if size is not None and actual != size:
        return f"{path} has {actual} bytes but {MANIFEST_FILE} records {size} (changed after export: tampered or " \
               f"corrupted); refused"
    if max_bytes is not None and actual > max_bytes:
        return f"{path} has {actual} bytes, more than the {max_bytes} such a file can have; refused"
    return None


def _chunks(root: Path, rel: str, size: int | None, max_bytes: int | None):
    fd, st = _open_regular(root, rel)
    try:
        problem = _size_problem(root / rel, st.st_size, size, max_bytes)
        if problem:
            raise NotRegularFile(problem)
        left = st.st_size + 1  # one byte more: a file that grew since fstat is noticed
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            left -= len(block)
            yield block
        if left != 1:
            raise NotRegularFile(f"{root / rel} changed while it was read; refused")
    finally:
        os.close(fd)


def read_regular(root: str | os.PathLike, rel: str, max_bytes: int, size: int | None = None) -> bytes:
    """The bytes of the regular file `rel` inside the bundle `root` (see `_open_regular`), its size checked
    (equal to `size` when given, at most `max_bytes`) before it is read."""
    return b"".join(_chunks(Path(root), rel, size, max_bytes))


def hash_regular(root: str | os.PathLike, rel: str, size: int | None = None, max_bytes: int | None = None) -> str:
    """Hex SHA-256 of the regular file `rel` inside `root`, its size checked first (as `read_regular`)."""
    digest = hashlib.sha256()
    for block in _chunks(Path(root), rel, size, max_bytes):
        digest.update(block)
    return digest.hexdigest()


def walk(root: str | os.PathLike) -> tuple[dict[str, int], dict[str, str]]:
    """({relative path: size} of the regular files under `root`, {relative path: what it is} of everything
    else that is not a folder: links, devices, FIFOs, sockets). Links are not followed; nothing is opened."""
    root = Path(root)
    files: dict[str, int] = {}
    others: dict[str, str] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(name)
                elif stat.S_ISREG(st.st_mode):
                    files[name] = st.st_size
                else:
                    others[name] = _kind_of(st.st_mode)
                if len(files) + len(others) > MAX_FILES:
                    raise ValueError(f"{root} holds more than {MAX_FILES} files; not an expert bundle")
    return files, others


# ------------------------------------------------------------------------------------------------ writing
def manifest_text(root: str | os.PathLike) -> str:
    """The SHA256SUMS of the bundle folder `root` (every file but SHA256SUMS itself, sorted by path)."""
    root = Path(root)
    files, others = walk(root)
    if others:
        name, what = sorted(others.items())[0]
        raise ValueError(f"{root / name} is {what}; a bundle holds regular files only")
    lines = [HEADER]
    for rel in sorted(files):
        if rel == MANIFEST_FILE:
            continue
        problem = path_problem(rel)
        if problem:
            raise ValueError(f"{root / rel}: the path {problem}; cannot list it in {MANIFEST_FILE}")
        lines.append(f"# size {files[rel]} {rel}\n{hash_regular(root, rel, files[rel])}  {rel}\n")
    return "".join(lines)


# ------------------------------------------------------------------------------------------------ reading
def parse_manifest(text: str, where: str = MANIFEST_FILE) -> dict[str, Entry]:
    """{path: Entry} of a SHA256SUMS text; ValueError naming the line when a line or path is not one export
    writes (an entry must be a plain relative path inside the bundle, with exactly one size line)."""
    hashes: dict[str, tuple[str, int]] = {}
    sizes: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        size = _SIZE.fullmatch(line)
        entry = None if line.startswith("#") else _ENTRY.fullmatch(line)
        if line.startswith("#") and not size:
            continue  # a comment
        if size is None and entry is None:
            raise ValueError(f"{where}: line {number} is not '<sha256>  <path>' (the manifest is damaged); refused")
        name = (size or entry).group(2)
        problem = path_problem(name)
        if problem:
            raise ValueError(f"{where}: line {number}: entry {name!r} {problem}; refused")
        if name == MANIFEST_FILE:
            raise ValueError(f"{where}: line {number}: the manifest cannot list itself; refused")
        table = sizes if size else hashes
        if name in table:
            raise ValueError(f"{where}: line {number}: {name} is listed twice; refused")
        table[name] = int(size.group(1)) if size else (entry.group(1), number)
    for name, (_, number) in hashes.items():
        if name not in sizes:
            raise ValueError(f"{where}: line {number}: no '# size' line for {name}; refused")
    extra = sorted(set(sizes) - set(hashes))
    if extra:
        raise ValueError(f"{where}: a size but no SHA-256 for {extra[0]}; refused")
    if len(hashes) > MAX_FILES:
        raise ValueError(f"{where}: more than {MAX_FILES} entries; refused")
    return {name: Entry(name, sizes[name], sha) for name, (sha, _) in sorted(hashes.items())}


def _what(rel: str) -> str:
    return "model file" if rel.startswith("models/") else "file"


def _unlisted(root: Path, rel: str) -> tuple[bool, str]:
    """(refused?, message) for an unlisted file."""
    path = root / rel
    top, suffix = rel.split("/")[0].lower(), Path(rel).suffix.lower()
    if top in CODE_DIRS and "/" in rel:
        return True, f"{path} is not listed in {MANIFEST_FILE}: added after export under {top}/, where every file " \
                     f"is code or data the bundle runs on; refused"
    if rel in LAYOUT_FILES:
        return True, f"{path} is not listed in {MANIFEST_FILE} although every export lists it (its line was " \
                     f"removed after export); refused"
    if suffix in CODE_SUFFIXES:
        return True, f"{path} is not listed in {MANIFEST_FILE}: added after export, and Python code or a native " \
                     f"library that `python -m monai.bundle run` could import; refused"
    return False, f"{path} is not listed in {MANIFEST_FILE} (not part of the export; not code, not checked)"


def check_files(root: str | os.PathLike, unlisted: bool = True) -> FileCheck:
    """Check the bundle folder `root` against its SHA256SUMS without reading anything else first (see the module
    docstring); with `unlisted` false, files the manifest does not list are not looked at (what a bundle's own
    scripts check at run time, when Python may just have written their __pycache__). Sizes are compared before
    a byte is read. Every problem is collected; nothing raises for a bad bundle."""
    root = Path(root)
    try:
        files, others = walk(root)
    except (OSError, ValueError) as error:
        return FileCheck(None, [f"expert bundle {root} cannot be listed ({error})"])
    problems = [f"{root / rel} is {what}, not a regular file; a bundle holds regular files only; refused"
                for rel, what in sorted(others.items())]
    if MANIFEST_FILE not in files:
        return FileCheck(None, problems)
    where = str(root / MANIFEST_FILE)
    try:
        data = read_regular(root, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        entries = parse_manifest(data.decode("utf-8"), where)
    except UnicodeDecodeError:
        return FileCheck(None, [*problems, f"{where} is not UTF-8 text (the manifest is damaged); refused"])
    except (OSError, ValueError) as error:
        return FileCheck(None, [*problems, str(error)])
    check = FileCheck(entries, problems, fingerprint=hashlib.sha256(data).hexdigest())
    for rel, entry in entries.items():
        path = root / rel
        if rel in others or any(rel.startswith(f"{o}/") for o in others):
            continue  # reported above
        if rel not in files:
            folder = path.is_dir() and not path.is_symlink()
            check.problems.append(f"{path} is a folder, not the file {MANIFEST_FILE} lists; refused" if folder else
                                  f"expert bundle {root} is incomplete: {_what(rel)} {rel} is missing (listed in "
                                  f"{MANIFEST_FILE})")
            continue
        try:
            actual = hash_regular(root, rel, entry.size)
        except FileNotFoundError:
            check.problems.append(f"expert bundle {root} is incomplete: {_what(rel)} {rel} is missing")
            continue
        except (OSError, ValueError) as error:
            check.problems.append(f"{_what(rel)} {error}")
            continue
        if actual != entry.sha256:
            check.problems.append(f"{_what(rel)} {path} does not match the SHA-256 recorded at export in "
                                  f"{MANIFEST_FILE} (tampered or corrupted)")
    if unlisted:
        added = sorted(set(files) - set(entries) - {MANIFEST_FILE})
        compiled = [rel for rel in added if "__pycache__" in rel.split("/") or rel.endswith((".pyc", ".pyo"))]
        if compiled:  # one line for them all: a run without `python -B` leaves dozens
            more = f" and {len(compiled) - 1} more" if len(compiled) > 1 else ""
            check.problems.append(
                f"{root / compiled[0]}{more} not listed in {MANIFEST_FILE}: compiled Python, which `python -m "
                f"monai.bundle run` would import instead of the checked scripts; refused (if your own run wrote "
                f"them, delete the bundle's __pycache__ folders; `python -B` writes none)")
        for rel in added:
            if rel not in compiled:
                refused, message = _unlisted(root, rel)
                (check.problems if refused else check.notes).append(message)
    return check
