"""Config: the issue's minimal YAML shape loads with defaults; each bad value names its field."""

import pytest
import yaml

from core.config import Config, save_config
from core.errors import ConfigError
from core.kinds import load_config

MINIMAL = """
name: small-run
tasks:
  - {name: bloodmnist, medmnist: data/bloodmnist.npz}
  - {name: chestmnist, medmnist: data/chestmnist.npz}
teacher: {arch: resnet50, checkpoint: null, epochs: 2}
backbone: {arch: resnet18, rank: 4, alpha: 16}
train: {epochs: 2, batch_size: 64, lr: 0.05, kd_weight: 1.0, temperature: 4.0}
device: auto
"""


def test_minimal_shape_loads_with_defaults_and_resolves_paths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    config = load_config(path)
    assert config.task_names == ["bloodmnist", "chestmnist"]
    assert config.tasks[0].medmnist == str(tmp_path / "data" / "bloodmnist.npz")
    assert config.backbone.form == "factorized" and config.train.optimizer == "sgd"
    assert config.backbone.alpha == 16.0 and isinstance(config.backbone.alpha, float)
    save_config(config, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml").to_dict() == config.to_dict()


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    config = load_config(path, ["train.epochs=5", "tasks.1.kind=multilabel", "backbone.ranks={chestmnist: 8}"])
    assert config.train.epochs == 5 and config.tasks[1].kind == "multilabel"
    assert config.rank_of("chestmnist") == 8 and config.rank_of("bloodmnist") == 4


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=-3", "train.epochs: must be >= 1"),
        ("train.bogus=1", "train.bogus: unknown key"),
        ("bogus=1", "bogus: unknown key"),
        ("train.lr=abc", "train.lr: expected a number"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("tasks.1.name=bloodmnist", "tasks.1.name: task name 'bloodmnist' is used twice"),
        ("backbone.form=dense", "backbone.form: must be one of factorized, paper"),
        ("backbone.ranks={nope: 2}", "backbone.ranks.nope: no task named"),
        ("device=gpu", "device: must be auto"),
        ("teacher.epochs=-1", "teacher.epochs: must be >= 0"),
        ("tasks.5.name=x", "not an index"),
        ("train=3", "train: expected a mapping"),
        ("tasks.0.medmnist=null", "tasks.0.medmnist: task 'bloodmnist' needs"),
    ],
)
def test_bad_values_name_the_field(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="at least one task"):
        load_config({"name": "x"})


def test_overrides_do_not_mutate_the_source():
    raw = yaml.safe_load(MINIMAL)
    with pytest.raises(ConfigError):
        load_config(raw, ["train.bogus=1"])
    assert "bogus" not in raw["train"]
    assert isinstance(load_config(raw), Config)
