"""training.config: the dataclass config, JSON files, --set overrides, validation messages."""

import json

import pytest

from training.config import ConfigError, TrainConfig, differing_keys, load_config, parse_overrides


def test_defaults_are_valid_and_round_trip_through_json(tmp_path):
    config = TrainConfig()
    config.save(tmp_path / "config.json")
    loaded = load_config(tmp_path / "config.json")
    assert loaded == config
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "cnn"


def test_file_then_overrides_typed(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 1, "steps": 50, "batchnorm": True}))
    config = load_config(tmp_path / "c.json", ["steps=70", "augment=true", "record_layers=conv1, fc",
                                                "schedule=step", "weight_decay=5e-4"])
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.steps == 70 and config.batchnorm and config.augment
    assert config.record_layers == ["conv1", "fc"] and config.schedule == "step"
    assert config.weight_decay == 5e-4
    assert differing_keys(TrainConfig(), config) == [
        "augment", "batchnorm", "lr", "weight_decay", "schedule", "steps", "record_layers"]


@pytest.mark.parametrize("override, message", [
    ("optimizer=adam", r"config 'optimizer' given an invalid value: 'adam'; expected one of 'sgd', 'adamw'"),
    ("steps=0", r"config 'steps' given an invalid value: 0; expected an int >= 1"),
    ("dropout=1.5", r"config 'dropout' given an invalid value: 1.5"),
    ("steps=many", r"config 'steps' given an invalid value: 'many'; expected a int"),
    ("batchnorm=maybe", r"config 'batchnorm' given an invalid value: 'maybe'"),
    ("colour=red", r"unknown config key 'colour'.*valid keys"),
    ("lr", r"override 'lr' is not key=value"),
    ("data=cifar10", r"config 'data_root' given an invalid value: ''"),
    ("world_seed=1233", r"config 'world_seed' given an invalid value: 1233; expected a seed whose images"),
])
def test_bad_values_name_the_field_and_the_valid_set(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_keys_in_a_file_are_refused(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rate'\]; valid keys: \['data'"):
        load_config(tmp_path / "c.json")


def test_parse_overrides_and_replace():
    assert parse_overrides(["threads=1", "selectivity_alpha=-1"]) == {"threads": 1, "selectivity_alpha": -1.0}
    config = TrainConfig().replace(width=8)
    assert config.width == 8 and differing_keys(TrainConfig(), config) == ["width"]
    with pytest.raises(ConfigError, match="'width'"):
        TrainConfig().replace(width=-1)
