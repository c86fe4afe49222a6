"""Tests for hf_adapt.config: YAML + overrides, type coercion, and load-time validation that names
the field and the value and reports every problem at once."""

from pathlib import Path

import pytest
from conftest import tiny_recipe, write_yaml

from hf_adapt.config import (
    SECTIONS,
    config_from_dict,
    describe_config,
    field_help,
    load_config,
    load_recipe,
)
from hf_adapt.errors import HfAdaptError
from hf_adapt.recipes import RECIPES

REPO = Path(__file__).resolve().parents[1]


def error_of(raw: dict) -> str:
    with pytest.raises(HfAdaptError) as info:
        config_from_dict(raw, source="r.yaml")
    message = str(info.value)
    assert "\n" not in message  # one line for the CLI
    return message


DATA = {"train_file": "train.csv"}


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def test_yaml_then_overrides_win_and_parse_as_yaml(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"data": DATA, "optim": {"learning_rate": 1e-4, "layer_decay": 0.9},
                                             "train": {"epochs": 3, "output_dir": "out"}})

    config = load_config(path, ["optim.layer_decay=0.8", "train.epochs=1", "adapt.strategy=lora",
                                "adapt.lora_target_modules=[query, value]", "data.max_train_samples=null"])

    assert config.optim.learning_rate == 1e-4  # from the YAML
    assert config.optim.layer_decay == 0.8  # overridden
    assert config.train.epochs == 1.0 and isinstance(config.train.epochs, float)
    assert config.adapt.strategy == "lora"
    assert config.adapt.lora_target_modules == ["query", "value"]
    assert config.data.max_train_samples is None
    assert config.train.batch_size is None  # untouched default: planned from the data (hf_adapt.schedule)
    assert config.source == str(path)


def test_recipe_module_defaults_sit_under_the_yaml(tmp_path):
    lora_yaml = write_yaml(tmp_path / "lora.yaml", {"data": DATA, "adapt": {"strategy": "lora"}})
    lora_lr_yaml = write_yaml(tmp_path / "lora_lr.yaml",
                              {"data": DATA, "adapt": {"strategy": "lora"}, "optim": {"learning_rate": 3e-3}})
    partial_yaml = write_yaml(tmp_path / "partial.yaml",
                              {"data": DATA, "adapt": {"strategy": "partial", "freeze_layers": 2}})

    assert load_recipe(lora_yaml).optim.learning_rate == RECIPES["lora"].DEFAULTS["optim"]["learning_rate"]
    assert load_recipe(lora_lr_yaml).optim.learning_rate == 3e-3
    partial = load_recipe(partial_yaml)
    assert partial.adapt.freeze_embeddings is True and partial.adapt.freeze_layers == 2
    # an override of the strategy picks that module's defaults
    assert load_recipe(partial_yaml, ["adapt.strategy=full", "adapt.freeze_layers=0",
                                      "adapt.freeze_embeddings=false"]).optim.learning_rate == 1e-4


@pytest.mark.parametrize("text", ["5e-5", "5E-05", "1.0e-4", "0.0003", "2"])
def test_scientific_notation_strings_become_floats(tmp_path, text):
    # PyYAML reads `5e-5` (no dot) as the string '5e-5'; the config must still get a float.
    path = write_yaml(tmp_path / "r.yaml", f"data:\n  train_file: t.csv\noptim:\n  learning_rate: {text}\n")

    config = load_config(path, [f"optim.head_learning_rate={text}"])

    assert config.optim.learning_rate == float(text) and type(config.optim.learning_rate) is float
    assert config.optim.head_learning_rate == float(text) and type(config.optim.head_learning_rate) is float


def test_no_stays_a_word_for_string_fields_and_a_switch_for_boolean_ones(tmp_path):
    # YAML 1.1 (PyYAML's default) reads `no` as False: `mixed_precision: no` became 'False' and failed.
    path = write_yaml(tmp_path / "r.yaml", "data:\n  train_file: t.csv\ntrain:\n  mixed_precision: no\n"
                                           "  overwrite: yes\n  tensorboard: off\n")

    from_file = load_config(path)
    overridden = load_config(path, ["train.mixed_precision=no", "train.overwrite=no", "train.tensorboard=on"])

    assert (from_file.train.mixed_precision, from_file.train.overwrite, from_file.train.tensorboard) == ("no", True, False)
    assert (overridden.train.mixed_precision, overridden.train.overwrite, overridden.train.tensorboard) == ("no", False, True)
    assert "train.overwrite must be true/false, got 'maybe'" in error_of({"data": DATA, "train": {"overwrite": "maybe"}})


def test_integral_float_becomes_int_but_fraction_is_an_error():
    assert config_from_dict({"data": DATA, "train": {"batch_size": 16.0}}).train.batch_size == 16
    assert "train.batch_size must be an integer or null, got 16.5" in error_of({"data": DATA, "train": {"batch_size": 16.5}})


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = config_from_dict({"data": DATA, "adapt": {"strategy": "lora", "lora_r": 4}, "optim": {"layer_decay": 0.7}})

    path = write_yaml(tmp_path / "resolved.yaml", config.to_yaml())

    assert load_config(path).to_dict() == config.to_dict()


def test_every_field_has_help_and_is_described():
    text = describe_config()
    for section, cls in SECTIONS.items():
        for key in cls.__dataclass_fields__:
            assert field_help(section, key), f"{section}.{key} has no help"
            assert f"  {key}:" in text


@pytest.mark.parametrize("name", ["quickstart_intents", "minilm_sst2_full", "minilm_sst2_partial",
                                  "minilm_sst2_features", "minilm_sst2_lora", "minilm_stsb_regression",
                                  "minilm_go_emotions_multilabel"])
def test_shipped_train_recipes_load_and_show_their_command(name):
    path = REPO / "recipes" / f"{name}.yaml"

    config = load_recipe(path)

    header = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"#   hf-adapt train recipes/{name}.yaml\n" in header
    assert config.train.output_dir.startswith("outputs/")  # git-ignored
    assert config.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------------------------------------
# Errors: unknown keys, types, ranges, all at once


def test_unknown_keys_and_sections_suggest_the_right_name():
    message = error_of({"data": DATA, "optim": {"learning_rte": 1e-4}, "trian": {"epochs": 1}})

    assert "unknown key 'optim.learning_rte' (did you mean 'optim.learning_rate'?)" in message
    assert "unknown section 'trian' (did you mean 'train'?)" in message
    assert message.startswith("r.yaml: ")


def test_unknown_override_key_is_an_error(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"data": DATA})
    with pytest.raises(HfAdaptError, match=r"unknown key 'optim.layer_decy' \(did you mean 'optim.layer_decay'\?\)"):
        load_config(path, ["optim.layer_decy=0.8"])


@pytest.mark.parametrize("item", ["optim.layer_decay", "layer_decay=0.8", "optim.=1"])
def test_malformed_override_says_the_expected_shape(tmp_path, item):
    with pytest.raises(HfAdaptError, match="must look like section.key=value"):
        load_config(write_yaml(tmp_path / "r.yaml", {"data": DATA}), [item])


def test_all_type_errors_are_reported_at_once():
    message = error_of({"data": DATA, "optim": {"learning_rate": "fast"},
                        "train": {"epochs": [1], "tensorboard": "sometimes"}, "model": {"max_length": None}})

    assert "optim.learning_rate must be a finite number, got 'fast'" in message
    assert "train.epochs must be a finite number or null, got [1]" in message
    assert "train.tensorboard must be true/false, got 'sometimes'" in message
    assert "model.max_length must be an integer, got None" in message


def test_all_range_errors_are_reported_at_once():
    message = error_of({"data": DATA, "optim": {"learning_rate": -1, "layer_decay": 1.5, "warmup": -2},
                        "train": {"batch_size": 0, "eval_strategy": "sometimes", "class_weights": "inverse"},
                        "model": {"max_length": 0, "dropout": 1.0}})

    for expected in ("optim.learning_rate must be > 0, got -1.0", "optim.layer_decay must be in (0, 1], got 1.5",
                     "optim.warmup must be >= 0", "train.batch_size must be > 0, got 0",
                     "train.eval_strategy must be epoch, steps, no or null, got 'sometimes'",
                     "train.class_weights must be none or balanced, got 'inverse'",
                     "model.max_length must be in 1..1,000,000 (tokens), got 0", "model.dropout must be in [0, 1) or null, got 1.0"):
        assert expected in message
    assert message.count(";") == 7  # eight problems, one line


@pytest.mark.parametrize("data, expected", [
    ({}, "give exactly one of data.train_file or data.dataset"),
    ({"train_file": "a.csv", "dataset": "glue"}, "got both ('a.csv', 'glue')"),
    ({"train_file": "a.csv", "validation_fraction": 1.0}, "data.validation_fraction must be in (0, 1), got 1.0"),
    ({"train_file": "a.csv", "max_train_samples": 0}, "data.max_train_samples must be > 0 or null, got 0"),
])
def test_data_checks(data, expected):
    assert expected in error_of({"data": data})


# ---------------------------------------------------------------------------------------------
# Cross-field rules


def test_lora_options_on_a_full_recipe_are_an_error():
    message = error_of({"data": DATA, "adapt": {"strategy": "full", "lora_r": 16, "merge_lora": False}})

    assert "adapt.lora_r, adapt.merge_lora apply to strategy 'lora' only, but adapt.strategy is 'full'" in message


def test_freezing_options_on_a_lora_recipe_are_an_error():
    message = error_of({"data": DATA, "adapt": {"strategy": "lora", "freeze_layers": 2}})

    assert "apply to strategy 'partial' only, but adapt.strategy is 'lora'" in message


def test_partial_that_freezes_nothing_is_an_error():
    assert "strategy 'partial' freezes nothing" in error_of({"data": DATA, "adapt": {"strategy": "partial"}})


@pytest.mark.parametrize("sections, expected", [
    ({"adapt": {"strategy": "freeze"}}, "adapt.strategy must be one of full, partial, lora, got 'freeze'"),
    ({"adapt": {"strategy": "partial", "freeze_layers": -1}}, "adapt.freeze_layers must be >= 0, got -1"),
    ({"adapt": {"strategy": "lora", "lora_dropout": 1.0}}, "adapt.lora_dropout must be in [0, 1), got 1.0"),
    ({"adapt": {"strategy": "lora", "lora_target_modules": []}}, "must name at least one module"),
    ({"train": {"eval_strategy": "steps"}}, "train.eval_strategy 'steps' needs train.eval_steps > 0"),
    ({"train": {"eval_strategy": "no", "early_stopping_patience": 2}}, "early_stopping_patience needs evaluation"),
    ({"train": {"metric_for_best": "f1"}}, "train.metric_for_best must be one of auto, accuracy, macro_f1, mcc, "
                                           "micro_f1, samples_f1, subset_accuracy, pearson, spearman, mse, mae, "
                                           "loss, got 'f1'"),
    ({"data": {**DATA, "task": "multi"}}, "data.task must be one of auto, single_label, multi_label, regression, "
                                          "got 'multi'"),
    ({"data": {**DATA, "label_columns": ["a"]}}, "data.label_columns must name at least two distinct columns, got ['a']"),
    ({"data": {**DATA, "label_columns": ["a", "text"]}}, "data.label_columns must not name a text column"),
    ({"data": {**DATA, "label_separator": " "}}, "data.label_separator must be a non-blank string such as ';' or '|'"),
    ({"data": {**DATA, "task": "regression"}, "train": {"class_weights": "balanced"}},
     "train.class_weights: balanced weighs classes, and data.task is regression; set train.class_weights: none"),
    ({"hub": {"push": True}}, "hub.push is true but hub.repo_id is not set"),
    ({"hub": {"repo_id": "no-slash"}}, "hub.repo_id must look like ORG/NAME, got 'no-slash'"),
    ({"hub": {"what": "adapter"}}, "hub.what 'adapter' needs adapt.strategy 'lora'"),
])
def test_cross_field_and_choice_checks(sections, expected):
    assert expected in error_of({"data": DATA, **sections})


def test_too_many_frozen_layers_is_caught_at_strategy_time_naming_the_layer_count(tiny_bert, sentiment_csvs,
                                                                                   tmp_path):
    # The config cannot know the model's depth; the strategy step checks it before any training.
    output = tmp_path / "out"
    config = config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, output,
                                          adapt={"strategy": "partial", "freeze_layers": 3}))

    with pytest.raises(HfAdaptError, match="adapt.freeze_layers is 3 but the model has 2 encoder layers; "
                                           "use at most 2"):
        RECIPES["partial"].run(config)
    assert not output.exists()
    assert not list(tmp_path.glob(".out.*"))


# ---------------------------------------------------------------------------------------------
# Recipe files


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(HfAdaptError, match="recipe file .*nope.yaml not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = write_yaml(tmp_path / "bad.yaml", "data:\n  train_file: [unclosed\n")
    with pytest.raises(HfAdaptError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_recipe(bad)
    listing = write_yaml(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(HfAdaptError, match="a recipe must be a mapping of sections"):
        load_config(listing)
    scalar_section = write_yaml(tmp_path / "scalar.yaml", "data: train.csv\n")
    with pytest.raises(HfAdaptError, match="section 'data' must be a mapping of key: value, got str"):
        load_config(scalar_section)


def test_the_saved_recipe_reproduces_the_run_and_switches_strategy_like_a_fresh_one(tmp_path):
    """recipe.yaml holds the resolved run, less the keys its strategy does not read."""
    full = load_recipe(write_yaml(tmp_path / "full.yaml", {"data": DATA, "adapt": {"strategy": "full"}}))
    saved = write_yaml(tmp_path / "saved.yaml", full.to_yaml())
    assert "lora_r" not in saved.read_text() and "freeze_layers" not in saved.read_text()
    assert load_recipe(saved).to_dict() == full.to_dict()  # re-running it gives the same settings

    switched = load_recipe(saved, ["adapt.strategy=lora"])
    fresh = load_recipe(write_yaml(tmp_path / "lora.yaml", {"data": DATA, "adapt": {"strategy": "lora"}}))
    assert switched.adapt == fresh.adapt  # rank 16, alpha 32, ... from the LoRA preset, not dataclass defaults
