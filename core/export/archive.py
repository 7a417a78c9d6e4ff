"""Zipped expert bundles (`lorkd apply EXPERT.zip IMAGE`): unpacked safely into a temporary folder.

A bundle archive is untrusted input. Every member is checked before anything is written: no absolute paths,
no `..` that would leave the folder, no links or device files, at most MAX_MEMBERS members and MAX_BYTES
unpacked (zip bombs). The bundle is the folder inside that holds `configs/metadata.json` (the archive's root
or its single top folder). Its model file is then checked against the SHA-256 in the metadata as usual.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from core.errors import BundleError

MAX_MEMBERS = 10_000
MAX_BYTES = 4 * 1024**3
METADATA = "configs/metadata.json"


def is_bundle_archive(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() == ".zip"


def _check_member(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    rel = PurePosixPath(name)
    if rel.is_absolute() or name.startswith("/") or (rel.parts and ":" in rel.parts[0]):
        raise BundleError(f"bundle archive {archive}: member {info.filename!r} has an absolute path; refused")
    if ".." in rel.parts:
        raise BundleError(f"bundle archive {archive}: member {info.filename!r} points outside the bundle; refused")
    mode = info.external_attr >> 16
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BundleError(f"bundle archive {archive}: member {info.filename!r} is a link or special file; refused")
    return rel


@contextlib.contextmanager
def unpacked_bundle(path: str | Path) -> Iterator[Path]:
    """The bundle folder of a zipped bundle, unpacked into a temporary folder removed on exit."""
    archive = Path(path)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise BundleError(f"bundle archive {archive}: not a readable zip file ({error})") from None
    with zf, tempfile.TemporaryDirectory(prefix=".lorkd-bundle-") as tmp:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"bundle archive {archive}: {len(members)} members (more than {MAX_MEMBERS}); refused")
        if sum(m.file_size for m in members) > MAX_BYTES:
            raise BundleError(f"bundle archive {archive}: unpacks to more than {MAX_BYTES // 1024**3} GiB; refused")
        paths = [(m, _check_member(archive, m)) for m in members]
        root = Path(tmp).resolve()
        for info, rel in paths:
            target = (root / rel).resolve()
            if target != root and root not in target.parents:  # belt and braces after the checks above
                raise BundleError(f"bundle archive {archive}: member {info.filename!r} points outside the bundle")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise BundleError(f"bundle archive {archive}: damaged member {info.filename!r} ({error})") from None
        candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
        bundle = next((c for c in candidates if (c / METADATA).is_file()), None)
        if bundle is None:
            raise BundleError(f"bundle archive {archive}: no {METADATA} at its root or in a top folder; "
                              "not an expert bundle")
        yield bundle
