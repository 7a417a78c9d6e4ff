"""Issue 16, family 5: when the operating system refuses a write (disk full, read-only file system, no permission,
a folder where a file should be, a name too long) the atomic writers raise one WriteError line naming the target,
the previous file survives and no temp file is left; `lorkd` prints any such refusal as one `error:` line (exit 2)
and checks `decompose --out` before any work. The faults are simulated by monkeypatching the low-level calls
(the tests may run as root, for whom permission bits do not refuse anything)."""

from __future__ import annotations

import errno
import os
import tempfile
import types
from pathlib import Path

import pytest
import torch
import yaml

import core.files as files
from core.cli import main as lorkd
from core.errors import DataError, LorkdError
from core.files import (
    WriteError,
    atomic_files,
    atomic_save,
    check_writable_folder,
    describe_refusal,
    write_atomic,
    write_text_atomic,
)

DISK_FULL = "cannot write: no space left on the device (disk full)"


def folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class FullDisk:
    """A file handle on a disk with `room` bytes left: the write that does not fit fails with ENOSPC."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file `core.files` opens for writing has 1000 bytes of room."""
    real = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode="r", *a, **kw: FullDisk(real(fd, mode, *a, **kw), 1000))


def test_disk_full_while_writing_keeps_the_previous_file(tmp_path, full_disk):
    target = tmp_path / "summary.json"
    target.write_text("previous")
    with pytest.raises(WriteError) as exc:
        write_text_atomic(target, "x" * 5000)
    assert str(exc.value) == f"{target}: {DISK_FULL}"
    assert target.read_text() == "previous" and folder_listing(tmp_path) == ["summary.json"]


def test_disk_full_inside_torch_save_keeps_the_previous_checkpoint(tmp_path, full_disk):
    """torch reports the failed write as a RuntimeError of its own; the refusal behind it is found."""
    last = tmp_path / "checkpoints" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(b"previous checkpoint")
    with pytest.raises(WriteError) as exc:
        atomic_save({"models": {"student": torch.zeros(10_000)}}, last)
    assert str(exc.value) == f"{last}: {DISK_FULL}" and isinstance(exc.value, LorkdError)
    assert last.read_bytes() == b"previous checkpoint" and folder_listing(last.parent) == ["last.pt"]


def test_read_only_file_system_at_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("previous")

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), src, None, dst)

    monkeypatch.setattr(files.os, "replace", read_only)
    with pytest.raises(WriteError, match=f"^{target}: cannot write: read-only file system$"):
        write_text_atomic(target, "new")
    assert target.read_text() == "previous" and folder_listing(tmp_path) == ["config.yaml"]


def test_no_permission_for_the_temp_file(tmp_path, monkeypatch):
    def refuse(suffix=None, prefix=None, dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}k3x9{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(WriteError, match=f"^{tmp_path / 'a.json'}: cannot write: permission denied$"):
        write_text_atomic(tmp_path / "a.json", "{}")
    with pytest.raises(WriteError, match="permission denied"), atomic_files(tmp_path / "b.nii.gz"):
        pass
    assert folder_listing(tmp_path) == []


def test_a_folder_where_the_file_should_be(tmp_path):
    folder = tmp_path / "scores.json"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(WriteError, match=f"^{folder}: cannot write: it is a folder, not a file$"):
        write_text_atomic(folder, "{}")
    assert folder_listing(folder) == ["inside"] and folder_listing(tmp_path) == ["scores.json"]


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(WriteError, match="run: cannot create the folder: it exists and is a file, not a folder"):
        write_text_atomic(tmp_path / "run" / "config.yaml", "x")
    with pytest.raises(WriteError, match="cannot create the folder: a part of the path is a file, not a folder"):
        write_text_atomic(tmp_path / "run" / "checkpoints" / "last.pt", "x")
    assert (tmp_path / "run").read_text() == "a file"


def test_a_refusal_about_an_input_names_the_input(tmp_path):
    """A writer that copies from a file it may not read: the message names that file, not the output."""
    def copy(fh):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/source.npz")

    with pytest.raises(WriteError, match="^/data/source.npz: permission denied$"):
        write_atomic(tmp_path / "copy.npz", copy)
    assert folder_listing(tmp_path) == []


def test_a_read_only_parent_names_the_folder_to_create(tmp_path, monkeypatch):
    from pathlib import Path as RealPath

    real_mkdir = RealPath.mkdir

    def mkdir(self, mode=0o777, parents=False, exist_ok=False):
        if self == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, mode, parents, exist_ok)

    monkeypatch.setattr(RealPath, "mkdir", mkdir)
    target = tmp_path / "ro" / "run" / "checkpoints" / "last.pt"
    with pytest.raises(WriteError, match=f"^{target.parent}: cannot create the folder: read-only file system$"):
        atomic_save({}, target)


def test_a_name_too_long(tmp_path):
    with pytest.raises(WriteError, match="a name in the path is too long"):
        write_text_atomic(tmp_path / ("x" * 300 + ".json"), "{}")


def test_a_library_that_reports_a_full_disk_in_its_own_words(tmp_path, monkeypatch):
    """SimpleITK raises a RuntimeError of its own on a full disk: atomic_files asks the disk."""
    path = tmp_path / "labels.nii.gz"
    full = types.SimpleNamespace(f_bavail=0, f_bfree=0, f_flag=0)
    monkeypatch.setattr(files.os, "statvfs", lambda folder: full)
    with pytest.raises(WriteError, match=f"^{path}: {DISK_FULL.replace('(', '.').replace(')', '.')}$"), \
            atomic_files(path):
        raise RuntimeError("ITK ERROR: could not write file")
    with pytest.raises(DataError, match="bad labels"), atomic_files(path):  # the user's own error stays
        raise DataError("bad labels")
    assert folder_listing(tmp_path) == []


def test_other_errors_keep_their_type(tmp_path, monkeypatch):
    """Bugs and interrupts are not turned into WriteError, and nothing is left behind either."""
    def bug(fh):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        write_atomic(tmp_path / "a.bin", bug)

    def interrupted(fh):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise KeyboardInterrupt from None

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "a.bin", interrupted)

    def missing(fh):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere/source.npz")

    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "a.bin", missing)
    with pytest.raises(RuntimeError, match="ITK"), atomic_files(tmp_path / "x.nii.gz"):  # disk not full: a bug
        raise RuntimeError("ITK says no")
    assert folder_listing(tmp_path) == []


def test_describe_refusal():
    assert describe_refusal(PermissionError(errno.EACCES, "Permission denied", "/srv/run/x")) == \
        "/srv/run/x: permission denied"
    assert describe_refusal(OSError(errno.EISDIR, "Is a directory", "/t/.x.tmp", None, "/t/out")) == \
        "/t/out: it is a folder, not a file"
    assert describe_refusal(OSError(errno.ENOSPC, "No space left on device")) == f"{DISK_FULL}"
    assert describe_refusal(OSError(errno.EACCES, "Permission denied")) is None  # names nothing: a bug's
    assert describe_refusal(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    assert describe_refusal(OSError("no errno at all")) is None


# ------------------------------------------------------------------------------------------- decompose --out
def test_out_checks(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(WriteError, match="afile: cannot create the folder: it exists and is a file, not a folder"):
        check_writable_folder(afile)
    with pytest.raises(WriteError, match=f"sub: cannot create the folder: {afile} is a file, not a folder"):
        check_writable_folder(afile / "sub")
    with pytest.raises(WriteError, match="is 300 bytes long .at most 255 bytes per name."):
        check_writable_folder(tmp_path / ("r" * 300))
    check_writable_folder(tmp_path / "new" / "run")  # fine, and nothing created
    assert folder_listing(tmp_path) == ["afile"]

    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    monkeypatch.setattr(files.os, "statvfs", lambda path: types.SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises(WriteError, match=f"run: cannot write into the folder {tmp_path}: read-only file system"):
        check_writable_folder(tmp_path / "run")
    monkeypatch.setattr(files.os, "statvfs", lambda path: types.SimpleNamespace(f_flag=0))
    with pytest.raises(WriteError, match=f"^{tmp_path}: cannot write into the folder: permission denied$"):
        check_writable_folder(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_out_in_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(WriteError, match="permission denied"):
            check_writable_folder(locked / "run")
    finally:
        locked.chmod(0o755)


def _config(folder: Path) -> Path:
    """A config whose data file does not exist: the --out checks must come first."""
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "tasks": [{"name": "t", "medmnist": str(folder / "none.npz")}],
                                    "teacher": {"arch": "resnet10"}, "backbone": {"arch": "compact"},
                                    "device": "cpu"}))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_decompose_out_an_existing_file_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    assert lorkd(["decompose", str(_config(tmp_path)), "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"error: {out}: cannot create the folder: it exists and is a file, not a folder"
    assert out.read_text() == "keep me"


def test_decompose_out_on_a_read_only_disk_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    monkeypatch.setattr(files.os, "statvfs", lambda path: types.SimpleNamespace(f_flag=os.ST_RDONLY))
    out = tmp_path / "ro" / "run"
    assert lorkd(["decompose", str(_config(tmp_path)), "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"error: {out}: cannot write into the folder {tmp_path}: read-only file system"
    assert not (tmp_path / "ro").exists()


def test_cli_prints_any_refusal_of_the_system_on_one_line(capsys, monkeypatch):
    import core.cli as cli

    def refused(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/runs/a/summary.json")

    monkeypatch.setattr(cli, "cmd_evaluate", refused)
    assert lorkd(["evaluate", "/srv/runs/a"]) == 2
    assert one_error_line(capsys) == "error: /srv/runs/a/summary.json: permission denied"

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "cmd_evaluate", full)
    assert lorkd(["evaluate", "/srv/runs/a"]) == 2
    assert one_error_line(capsys) == f"error: {DISK_FULL}"
    with pytest.raises(OSError):  # --debug keeps the traceback
        lorkd(["--debug", "evaluate", "/srv/runs/a"])

    def bug(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/opt/lorkd/resources/x")

    monkeypatch.setattr(cli, "cmd_evaluate", bug)
    with pytest.raises(FileNotFoundError):  # not a refusal of a write: a bug keeps its traceback
        lorkd(["evaluate", "/srv/runs/a"])
