"""Every case of the bad-input corpus through `lorkd`: exit code 2, one line `error: ...` naming the file and
the problem, no traceback, nothing half-written; warning cases succeed and print `warning: ...`.

The cases run in-process (core.cli.main, stderr captured); two of them also as a real subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from badinput_corpus import CASES, CASES_BY_NAME, leftovers, make_env, run_case, several_series

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("badinput_env"))


def check_error(case, built, code: int, err: str, tmp: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (case.name, code, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), (case.name, err)
    assert str(built.bad) in lines[0], (case.name, str(built.bad), lines[0])
    for word in case.words:
        assert word in lines[0], (case.name, word, lines[0])
    for out in built.outputs:
        assert not out.exists(), (case.name, f"{out} was left behind")
    assert leftovers(tmp) == [], (case.name, leftovers(tmp))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_case(env, tmp_path, case):
    built, code, out, err = run_case(case, env, tmp_path)
    if not case.warning:
        check_error(case, built, code, err, tmp_path)
        return
    assert code == 0, (case.name, err)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings and "Traceback" not in err, err
    assert str(built.bad) in warnings[0]
    for word in case.words:
        assert any(word in w for w in warnings), (word, warnings)
    assert all(out.is_file() for out in built.outputs)  # a warning does not stop the work


@pytest.mark.parametrize("name", ["apply: truncated NIfTI", "config: billion laughs"])
def test_cli_case_in_a_subprocess(env, tmp_path, name):
    case = CASES_BY_NAME[name]
    built = case.build(env, tmp_path)
    result = subprocess.run([sys.executable, "-m", "core.cli", *built.argv], capture_output=True, text=True,
                            cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    check_error(case, built, result.returncode, result.stderr, tmp_path)


def test_segmentation_run_reports_reader_warnings(env, tmp_path):
    """Several DICOM series in an image folder: the run goes on (largest series) and logs a warning."""
    from badinput_corpus import seg_config

    from core.cli import ProgressObserver
    from core.io import read_volume, write_label_map
    from core.kinds import load_config
    from core.train.pipeline import Pipeline

    folder = several_series(tmp_path)
    volume = read_volume(folder)
    label = write_label_map((volume.array > 1000).astype("uint8"), volume, tmp_path / "label.nii.gz")
    config = load_config(seg_config(tmp_path, folder, label))
    stream = io.StringIO()
    Pipeline(config, tmp_path / "run", ProgressObserver(stream))
    text = stream.getvalue()
    assert "warning:" in text and "2 DICOM series" in text and str(folder) in text, text
    assert not (tmp_path / "run").exists()  # the constructor only reads
