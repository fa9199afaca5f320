"""Read a config: parse text format strictly, apply overrides, fill in defaults, validate."""
import dataclasses
import difflib
import os
import re

from google.protobuf import descriptor_pool
from google.protobuf import text_format

from mtrec.config.defaults import fill_defaults
from mtrec.config.overrides import apply_overrides
from mtrec.config.source import Source
from mtrec.config.validation import validate
from mtrec.errors import ConfigError
from mtrec.protos import pipeline_pb2


@dataclasses.dataclass
class LoadedConfig:
    """A parsed, overridden and validated config, with its warnings."""
    pipeline: pipeline_pb2.PipelineConfig
    source: Source
    warnings: list[str]


def parse_text(text: str, path: str = "<config>") -> pipeline_pb2.PipelineConfig:
    """Parse text format strictly: unknown fields are errors that name their line."""
    config = pipeline_pb2.PipelineConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        message = str(e)
        # ParseError's text starts with "line:col : "; keep only the reason.
        message = re.sub(r"^\d+:\d+\s*:\s*", "", message).rstrip(".")
        hint = ""
        unknown = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', message)
        if unknown:
            hint = (f" mtrec does not support `{unknown.group(2)}` here; remove it, "
                    "or check the spelling against the schema in protos/mtrec/protos/.")
            try:
                fields = descriptor_pool.Default().FindMessageTypeByName(
                    unknown.group(1)).fields_by_name
                close = difflib.get_close_matches(unknown.group(2), list(fields), n=1,
                                                  cutoff=0.8)
                if close:
                    hint = f" Did you mean `{close[0]}`?" + hint
            except KeyError:
                pass
        bad_enum = re.search(r'Enum type "([\w.]+)" has no value named', message)
        if bad_enum:
            try:
                enum = descriptor_pool.Default().FindEnumTypeByName(bad_enum.group(1))
                hint = f" Valid values: {', '.join(v.name for v in enum.values)}."
            except KeyError:
                pass
        raise ConfigError(f"{path}:{line}:{column}: {message}.{hint}") from None
    return config


def load(path: str, edit_config_json: str | dict | None = None,
         sets: list[str] | None = None, model_dir: str | None = None) -> LoadedConfig:
    """Read, override (EasyRec's --edit_config_json, then --set), fill in defaults and
    validate a config."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}).") from None
    pipeline = parse_text(text, path)
    apply_overrides(pipeline, edit_config_json, sets)
    if model_dir:
        pipeline.model_dir = model_dir
    source = Source(path, text)
    return LoadedConfig(pipeline, source, prepare(pipeline, source))


def from_pipeline(pipeline: pipeline_pb2.PipelineConfig, path: str = "<config>") -> LoadedConfig:
    """Fill in defaults and validate a PipelineConfig built in Python; errors name lines
    of its text format as given."""
    source = Source(path, text_format.MessageToString(pipeline))
    return LoadedConfig(pipeline, source, prepare(pipeline, source))


def prepare(pipeline: pipeline_pb2.PipelineConfig, source: Source) -> list[str]:
    """Fill in the defaults (the one step that changes the config), then validate;
    raise ConfigError listing every problem, return the warnings."""
    fill_defaults(pipeline)
    return validate(pipeline, source)


def to_text(pipeline: pipeline_pb2.PipelineConfig) -> str:
    return text_format.MessageToString(pipeline)
