"""Load a pipeline config: parse text format, apply overrides, fill in defaults, validate.

  source.py        where the text came from; the problems collector (file:line)
  loader.py        parse_text, load, from_pipeline, to_text: parse -> overrides ->
                   fill_defaults -> validate
  overrides.py     --edit_config_json and --set path=value
  defaults.py      fill_defaults: the one step that changes a parsed config
  validation.py    validate, by stage: check_data, check_features, check_model (with
                   check_towers and each model's check from mtrec.models.registry),
                   check_train, check_eval; it never changes the config
  accessors.py     helpers the later stages use to read a config

Nothing here imports TensorFlow, so `mtrec check` and `mtrec --help` stay fast.
Every error names the file and line (or the override path) it comes from.
"""
from mtrec.config.accessors import (SIDE_GROUP_FIELDS, all_features, feature_name,
                                    has_eval_data, label_names, model_message, task_towers)
from mtrec.config.check_train import SUPPORTED_STRATEGIES, unsupported_strategy
from mtrec.config.defaults import fill_defaults
from mtrec.config.loader import (LoadedConfig, from_pipeline, load, parse_text, prepare,
                                 to_text)
from mtrec.config.overrides import apply_overrides, set_path
from mtrec.config.source import Problems, Source
from mtrec.config.validation import validate

__all__ = ["LoadedConfig", "Problems", "SIDE_GROUP_FIELDS", "SUPPORTED_STRATEGIES", "Source",
           "all_features", "apply_overrides", "feature_name", "fill_defaults", "from_pipeline",
           "has_eval_data",
           "label_names", "load", "model_message", "parse_text", "prepare", "set_path",
           "task_towers", "to_text", "unsupported_strategy", "validate"]
