"""`lorkd` on bad input: one line `error: ...` naming the file and the problem, exit code 2, no
traceback, and nothing half-written (no run folder, no bundle, no output file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from core.cli import main as lorkd
from core.kinds.classification.synthetic import write_fake_medmnist


def config_file(tmp_path: Path, **changes) -> Path:
    data = write_fake_medmnist(tmp_path / "good.npz", n=16)
    raw = {
        "name": "bad",
        "tasks": [{"name": "good", "medmnist": str(data)}],
        "teacher": {"arch": "resnet10", "epochs": 1},
        "backbone": {"arch": "resnet10"},
        "train": {"epochs": 1, "batch_size": 8},
        "device": "cpu",
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def broken_npz(tmp_path: Path, problem: str) -> Path:
    path = tmp_path / f"{problem}.npz"
    write_fake_medmnist(path, n=16, num_classes=3)
    arrays = dict(np.load(path))
    if problem == "missing_array":
        del arrays["val_labels"]
    elif problem == "labels_out_of_range":
        arrays["train_labels"][0] = 7
    elif problem == "empty_split":
        arrays["test_images"] = arrays["test_images"][:0]
        arrays["test_labels"] = arrays["test_labels"][:0]
    elif problem == "wrong_shape":
        arrays["train_images"] = arrays["train_images"].reshape(16, -1)
    np.savez(path, **arrays)
    return path


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = lorkd(list(map(str, argv)))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


CONFIG_CASES = {
    "unknown key": ({"train__epochz": 3}, ["train.epochz"]),
    "negative epochs": ({"train__epochs": -2}, ["train.epochs", "-2"]),
    "wrong type": ({"train__batch_size": "many"}, ["train.batch_size"]),
    "unknown arch": ({"backbone__arch": "vgg99"}, ["backbone.arch", "vgg99"]),
    "task name twice": ({"tasks": [{"name": "a", "medmnist": "x.npz"}, {"name": "a", "medmnist": "y.npz"}]},
                        ["used twice"]),
    "no gpu": ({"device": "cuda"}, ["device"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_values_are_named(tmp_path, capsys, case):
    changes, words = CONFIG_CASES[case]
    if case == "no gpu":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    path = config_file(tmp_path, **changes)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "decompose", path, "--out", out)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


@pytest.mark.parametrize("problem", ["missing_array", "labels_out_of_range", "empty_split", "wrong_shape"])
def test_bad_medmnist_files_are_named(tmp_path, capsys, problem):
    bad = broken_npz(tmp_path, problem)
    path = config_file(tmp_path, tasks=[{"name": "t", "medmnist": str(bad), "labels": ["a", "b", "c"]}])
    out = tmp_path / "run"
    code, err = run_cli(capsys, "decompose", path, "--out", out)
    assert_one_line_error(code, err, bad.name)
    assert not out.exists()


def test_missing_config_and_bad_override(tmp_path, capsys):
    code, err = run_cli(capsys, "decompose", tmp_path / "nope.yaml")
    assert_one_line_error(code, err, "nope.yaml")
    path = config_file(tmp_path)
    code, err = run_cli(capsys, "decompose", path, "--out", tmp_path / "run", "--set", "train.lr=-1")
    assert_one_line_error(code, err, "train.lr")
    code, err = run_cli(capsys, "decompose", path, "--out", tmp_path / "run", "--set", "nonsense")
    assert_one_line_error(code, err, "nonsense")
    assert not (tmp_path / "run").exists()


def test_not_a_run_folder(tmp_path, capsys):
    code, err = run_cli(capsys, "evaluate", tmp_path)
    assert_one_line_error(code, err, str(tmp_path))
    code, err = run_cli(capsys, "export", tmp_path / "missing")
    assert_one_line_error(code, err, "missing")


def test_apply_errors(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(b"not a png at all")
    out = tmp_path / "out.json"
    code, err = run_cli(capsys, "apply", tmp_path / "no-bundle", image, "--out", out)
    assert_one_line_error(code, err, "no-bundle")
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    from core.cli import main
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="config file not found"):  # --debug: the exception itself, traceback
        main(["--debug", "decompose", str(tmp_path / "nope.yaml")])
    assert main(["decompose", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
