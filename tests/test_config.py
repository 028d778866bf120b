"""Config: defaults <- YAML file <- dotted overrides, with one-line errors."""
import dataclasses
import subprocess
import sys
import time

import pytest
import yaml

from ignore.config import (RANGES, RECIPES, Config, OptimConfig, flatten, load_config, merged_overrides, recipes,
                           save_config, scaled_lr, valid_keys)
from ignore.errors import SPMLError
from ignore.train import main, setting_choices
from ignore.training.registry import TRACKERS


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    config = load_config()
    assert config == Config()
    assert config.method.name == "ignore"
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.train.epochs == 8 and config.method.lat is True
    assert "method.warm_up" in valid_keys() and "optim.lr" in valid_keys()
    assert "method" not in valid_keys()  # sections are not keys


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n  batch_size: 4\nmethod:\n  warm_up: 1\n")
    config = load_config(path, ["train.epochs=5", "model.backbone=resnet50"])
    assert config.train.epochs == 5  # the override wins over the file
    assert config.train.batch_size == 4  # from the file
    assert config.method.warm_up == 1
    assert config.model.backbone == "resnet50"
    assert config.optim.lr == 1e-3  # untouched default
    assert isinstance(config.train.epochs, int)


def test_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads 1e-5 (no dot) as a string
    assert yaml.safe_load("lr: 1e-5")["lr"] == "1e-5"
    config = load_config(write(tmp_path, "optim:\n  lr: 1e-5\n  weight_decay: 2\n"))
    assert config.optim.lr == 1e-5 and isinstance(config.optim.lr, float)
    assert config.optim.weight_decay == 2.0 and isinstance(config.optim.weight_decay, float)
    config = load_config(overrides=["optim.lr=3e-4"])
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)


def test_booleans(tmp_path):
    assert load_config(overrides=["method.lat=false"]).method.lat is False
    assert load_config(overrides=["method.lat=False", "method.strong_view=true"]).method.strong_view is True
    config = load_config(write(tmp_path, "method:\n  lat: 'false'\n  strong_view: false\n"))
    assert config.method.lat is False and config.method.strong_view is False
    assert load_config(write(tmp_path, "method:\n  lat: false\n"), ["method.lat=true"]).method.lat is True


def test_unknown_key_in_yaml_lists_valid_keys(tmp_path):
    with pytest.raises(SPMLError) as error:
        load_config(write(tmp_path, "method:\n  warmup: 2\n"))
    message = str(error.value)
    assert "'method.warmup'" in message
    assert "valid keys" in message and "method.warm_up" in message and "optim.lr" in message


def test_unknown_key_in_override_lists_valid_keys():
    with pytest.raises(SPMLError) as error:
        load_config(overrides=["optim.learning_rate=0.1"])
    assert "'optim.learning_rate'" in str(error.value)
    assert "valid keys" in str(error.value) and "optim.lr" in str(error.value)
    with pytest.raises(SPMLError, match="unknown config key 'epochs'"):
        load_config(overrides=["epochs=3"])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("optim.lr=fast", "optim.lr"),
    ("method.lat=maybe", "method.lat"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(SPMLError, match=f"config key '{key}' expects"):
        load_config(overrides=[override])


def test_wrong_type_in_yaml_names_the_key(tmp_path):
    with pytest.raises(SPMLError, match="config key 'train.epochs' expects int, got True"):
        load_config(write(tmp_path, "train:\n  epochs: true\n"))
    with pytest.raises(SPMLError, match="config key 'method.lat' expects bool, got 1.5"):
        load_config(write(tmp_path, "method:\n  lat: 1.5\n"))


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "config key 'train.batch_size' must be >= 1, got 0"),
    ("train.batch_size=-1", "config key 'train.batch_size' must be >= 1, got -1"),
    ("optim.lr=-1", "config key 'optim.lr' must be > 0, got -1.0"),
    ("optim.lr=nan", "config key 'optim.lr' must be > 0, got nan"),
    ("optim.lr=inf", "config key 'optim.lr' must be finite, got inf"),
    ("train.log_every=0", "config key 'train.log_every' must be >= 1, got 0"),
    ("data.image_size=0", "config key 'data.image_size' must be >= 8, got 0"),
    ("data.image_size=4", "config key 'data.image_size' must be >= 8, got 4"),
    ("optim.reference_batch_size=0", "config key 'optim.reference_batch_size' must be >= 1, got 0"),
    ("data.num_workers=-1", "config key 'data.num_workers' must be >= 0, got -1"),
    ("method.cam_threshold=1.5", "config key 'method.cam_threshold' must be >= 0 and < 1, got 1.5"),
    ("method.cam_threshold=1", "config key 'method.cam_threshold' must be >= 0 and < 1, got 1.0"),
    ("method.weight_ign=nan", "config key 'method.weight_ign' must be >= 0, got nan"),
    ("train.seed=4294967296", "config key 'train.seed' must be >= 0 and <= 4294967295, got 4294967296"),
])
def test_out_of_range_value_names_the_key_and_the_range(override, message):
    with pytest.raises(SPMLError) as error:
        load_config(overrides=[override])
    assert str(error.value) == message


def test_every_numeric_key_has_a_range():
    numeric = [key for key in valid_keys() if type(load_value(Config(), key)) in (int, float)]
    assert sorted(RANGES) == sorted(numeric)
    for key in numeric:  # the defaults are valid
        assert load_value(Config(), key) in RANGES[key], key


def load_value(config, key):
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name)


def test_range_in_yaml_names_the_key(tmp_path):
    with pytest.raises(SPMLError, match=r"^config key 'method.gap_lambda' must be >= 0 and < 1, got 1.0$"):
        load_config(write(tmp_path, "method:\n  gap_lambda: 1.0\n"))


def test_override_without_equals():
    with pytest.raises(SPMLError, match="override 'train.epochs' is not of the form key=value"):
        load_config(overrides=["train.epochs"])


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: 2\nmethod:\n  warm_up: 1\ntrain:\n  batch_size: 4\n", "'train' is given twice (lines 1 and 5)"),
    ("train:\n  epochs: 2\n  batch_size: 4\n  epochs: 3\n", "'train.epochs' is given twice (lines 2 and 4)"),
])
def test_a_section_or_key_twice_in_the_yaml_file_names_it(tmp_path, text, message):
    path = write(tmp_path, text)
    assert yaml.safe_load(text)["train"]  # PyYAML alone keeps the last one without a word
    with pytest.raises(SPMLError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {message}: give it once"


def test_a_key_twice_on_the_command_line_names_it(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train.epochs=2", "method.warm_up=1", " train.epochs=3", "train.output_dir=/nonexistent/never"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("error: 'train.epochs' is given twice on the command line (train.epochs=2 and "
                                       " train.epochs=3): give it once\n")
    assert merged_overrides(["train.epochs=2", "method.warm_up=1"], ["train.epochs=3"]) == ["train.epochs=3",
                                                                                             "method.warm_up=1"]


def test_missing_config_file_names_it(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(SPMLError, match="config file not found") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [1, 2\n", name="broken.yaml")
    with pytest.raises(SPMLError, match="not valid YAML") as error:
        load_config(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(SPMLError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n", name="list.yaml"))


def test_binary_config_file_names_the_file(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x80\x04\x95binary pickle\xff")
    with pytest.raises(SPMLError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: not a UTF-8 text file (invalid start byte at byte 0)"


def test_save_then_load_round_trips(tmp_path):
    config = load_config(overrides=[
        "optim.lr=1e-5", "method.lat=false", "train.epochs=2", "data.path=/some/data",
        "model.head_lr_multiplier=3", "train.resume=auto",
    ])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert not (tmp_path / "config.yaml.partial").exists()
    loaded = load_config(path)
    assert loaded == config
    assert dataclasses.asdict(loaded)["optim"]["lr"] == 1e-5
    assert loaded != Config()  # the round trip carried the changes, not just defaults


def test_scaled_lr():
    optim = OptimConfig(lr=1e-3, reference_batch_size=16)
    assert scaled_lr(optim, 16) == pytest.approx(1e-3)
    assert scaled_lr(optim, 64) == pytest.approx(4e-3)
    assert scaled_lr(optim, 8) == pytest.approx(5e-4)
    assert scaled_lr(OptimConfig(lr=2e-4, reference_batch_size=32), 96) == pytest.approx(6e-4)


@pytest.mark.parametrize("recipe", recipes())
def test_every_shipped_recipe_loads_by_name_and_by_path(recipe):
    config = load_config(recipe)
    assert config != Config()
    assert load_config(RECIPES / f"{recipe}.yaml") == config == load_config(f"{recipe}.yaml")


def test_a_local_file_wins_over_a_recipe_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train:\n  epochs: 2\n", name="ignore_mobilenet_demo.yaml")
    assert load_config("ignore_mobilenet_demo.yaml").train.epochs == 2
    assert load_config("ignore_mobilenet_demo").train.epochs != 2  # no such file: the recipe


def test_help_lists_every_key_with_its_type_default_range_choices_and_meaning():
    choices = setting_choices()
    result = subprocess.run([sys.executable, "-m", "ignore.train", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.default_factory()):
            key = f"{section.name}.{item.name}"
            meaning = item.metadata.get("help", "")
            assert meaning, f"{key} has no meaning"
            kind = {str: "str", int: "int", float: "float", bool: "bool"}[type(item.default)]
            limits = f", range {RANGES[key]}" if key in RANGES else ""
            limits += f", one of {' | '.join(choices[key])}" if key in choices else ""
            assert f"  {key} ({kind}, default {item.default!r}{limits})\n" in text, key
            assert " ".join(meaning.split()[:4]) in " ".join(text.split()), key
    assert text.count("default ") == len(valid_keys())
    assert "  optim.lr (float, default 0.001, range > 0)" in text
    assert "  optim.scheduler (str, default 'none', one of none | onecycle)" in text
    for method in ("ignore", "an", "never_reject", "oracle_reject", "an_ls", "wan", "epr", "role", "em", "em_apl",
                   "ll_r", "ll_ct", "ll_cp", "boostlu", "full", "random_reject", "gr_loss", "vlpl"):
        assert f" {method} " in text.split("  method.name (")[1].split(")")[0] + " ", method


FREE_TEXT = {"data.path", "data.image_root", "data.image_column", "data.label_column", "data.train_shards",
             "model.pretrained", "train.output_dir", "train.resume", "train.row_state_dir",
             "method.teacher", "method.teacher_class_map"}  # paths, column names, weights, a teacher: no fixed set


def test_every_string_setting_is_free_text_or_has_its_registrys_choices():
    string_keys = {key for key in valid_keys() if isinstance(dict(flatten(dataclasses.asdict(Config())))[key], str)}
    assert string_keys - FREE_TEXT == set(setting_choices())
    for key, allowed in setting_choices().items():
        default = dict(flatten(dataclasses.asdict(Config())))[key]
        assert default in allowed, key


def test_the_trackers_are_accelerates():
    from accelerate.utils import LoggerType

    assert set(TRACKERS) == {"none"} | set(LoggerType.list()) - {"all"}


@pytest.mark.parametrize("key", sorted(setting_choices()))
def test_a_typo_in_a_string_setting_stops_at_once_with_the_allowed_values_and_creates_nothing(key, tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "ignore.train", f"{key}=typo", "train.output_dir=run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode == 2
    allowed = " | ".join(setting_choices()[key])
    assert result.stderr == f"error: config key '{key}' must be one of {allowed}, got 'typo'\n"
    assert list(tmp_path.iterdir()) == []
    assert seconds < 2, seconds  # nothing heavy (torch) is imported before the config is checked


def test_a_typo_in_the_yaml_file_is_caught_too(tmp_path):
    path = write(tmp_path, "model:\n  backbone: resnet101\n")
    with pytest.raises(SPMLError, match=r"config key 'model.backbone' must be one of small_cnn \| resnet18"):
        load_config(path, choices=setting_choices())
