"""Issue 16, family 6: a config is read within bounds and every problem is one line. A "billion laughs" YAML fails
at once, non-UTF-8 bytes and YAML syntax errors (tabs) name their line, names that become folder names are checked
before any work, and `--set` through a value that is not a section is a ConfigError."""

from __future__ import annotations

import time

import pytest
import yaml

from core.cli import main as lorkd
from core.config import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, NAME_MAX_CHARS, apply_override, parse_yaml
from core.errors import ConfigError
from core.kinds import load_config

MINIMAL = {
    "name": "limits",
    "tasks": [{"name": "blood", "medmnist": "data/blood.npz"}],
    "teacher": {"arch": "resnet10"},
    "backbone": {"arch": "compact"},
    "device": "cpu",
}


def billion_laughs(key: str = "name") -> str:
    """Nine levels of nine aliases each: 9^9 values once expanded, a few hundred bytes of YAML."""
    lines = [f"{key}:", '  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{anchor} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def billion_laughs_flow() -> str:
    """The same on one line (a `--set` value)."""
    levels = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"&{anchor} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "[" + ", ".join(levels) + "]"


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("key", ["name", "tasks", "seed"])
def test_billion_laughs_fails_at_once(tmp_path, key):
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(key))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    text = one_line(exc)
    assert str(path) in text and "billion laughs" in text and "aliases" in text


def test_aliases_that_expand_a_little_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "train: &t {epochs: 3}\nevaluate: {single_task: false}\n")
    assert load_config(path).train.epochs == 3
    assert parse_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "text,words",
    [
        ("a: &a [*a]\n", "refers to a list or mapping that contains it"),
        ("[" * (MAX_CONFIG_DEPTH + 5) + "]" * (MAX_CONFIG_DEPTH + 5), f"nested more than {MAX_CONFIG_DEPTH}"),
        ("[" * 1200 + "]" * 1200, f"nested more than {MAX_CONFIG_DEPTH}"),
        ("name: x\ntasks:\n\t- name: a\n", "line 3, column 1: not valid YAML"),
        ("tasks: [unclosed", "line 1, column 17: not valid YAML"),
        ("name: x\x00\n", "line 1: not valid YAML: the control character #x0000"),
        ("a: !!python/object/apply:os.system [ls]\n", "line 1, column 4: not valid YAML"),
    ],
)
def test_bad_yaml_is_one_line_naming_the_file_and_line(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = one_line(exc)
    assert message.startswith(f"{path}: ") and words in message, message


def test_tab_indentation_says_so(tmp_path):
    path = tmp_path / "tabs.yaml"
    path.write_text("name: x\ntasks:\n\t- name: a\n")
    with pytest.raises(ConfigError, match="indent with spaces") as exc:
        load_config(path)
    one_line(exc)


def test_non_utf8_bytes_name_line_and_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: run\ntasks:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = one_line(exc)
    assert f"{path}: line 3, column 14: not UTF-8" in message and "0xe9" in message and "offset 30" in message


def test_a_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="larger than 1,000,000 bytes") as exc:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    one_line(exc)


@pytest.mark.parametrize(
    "name,words",
    [
        ("..", "must not start with '.'"),
        (".", "must not start with '.'"),
        (".hidden", "must not start with '.'"),
        ("a/b", "path characters"),
        ("a b", "spaces"),
        ("a\tb", "control characters"),
        ("line\nbreak", "control characters"),
        ("x" * (NAME_MAX_CHARS + 1), f"at most {NAME_MAX_CHARS}"),
        ("x" * 260, "260 characters long"),
    ],
)
def test_task_names_that_cannot_be_folder_names_are_refused(name, words):
    raw = {**MINIMAL, "tasks": [{"name": name, "medmnist": "x.npz"}]}
    with pytest.raises(ConfigError) as exc:
        load_config(raw)
    assert exc.value.loc == ("tasks", 0, "name")
    message = one_line(exc)
    assert words in message and len(message) < 300, message


@pytest.mark.parametrize("name,words", [("..", "must not start with '.'"), ("a/b", "path characters"),
                                        ("r" * 250, "250 characters long"), ("a\x07", "control characters")])
def test_run_names_that_cannot_be_folder_names_are_refused(name, words):
    with pytest.raises(ConfigError) as exc:
        load_config({**MINIMAL, "name": name})
    assert exc.value.loc == ("name",) and words in one_line(exc)


def test_good_names_still_load():
    config = load_config({**MINIMAL, "name": "my run 2", "tasks": [{"name": "blood-v2.1_a", "medmnist": "x.npz"}]})
    assert config.name == "my run 2" and config.task_names == ["blood-v2.1_a"]
    load_config({**MINIMAL, "tasks": [{"name": "x" * NAME_MAX_CHARS, "medmnist": "x.npz"}]})


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.epochs.value=3", "train.epochs is int 3, not a section"),
        ("name.first=3", "name is str 'limits', not a section"),
        ("tasks.0.name.x=1", "tasks.0.name is str 'blood', not a section"),
        ("train.epochs=[1, 2", "cannot parse value '[1, 2': line 1, column 6: not valid YAML"),
    ],
)
def test_set_through_a_value_is_one_config_error(tmp_path, override, words):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"epochs": 3}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path, [override])
    message = one_line(exc)
    assert message.startswith(f"{path}: --set ") and words in message, message


def test_set_value_with_billion_laughs_fails_at_once():
    raw = {"name": "x"}
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="billion laughs"):
        apply_override(raw, "seed=" + billion_laughs_flow())
    assert time.perf_counter() - start < 1.0


def test_long_values_are_cut_in_messages():
    with pytest.raises(ConfigError) as exc:
        load_config({**MINIMAL, "train": {"epochs": list(range(100_000))}})
    assert len(one_line(exc)) < 200


def test_cli_prints_a_tab_error_on_one_line(tmp_path, capsys):
    path = tmp_path / "tabs.yaml"
    path.write_text("name: x\ntasks:\n\t- name: a\n")
    assert lorkd(["decompose", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: line 3, column 1: "), err
    assert not (tmp_path / "run").exists()
