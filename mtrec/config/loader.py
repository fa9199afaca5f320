"""Read a config: parse text format strictly, apply overrides, fill in defaults, validate."""
import dataclasses
import difflib
import logging
import os
import re

from google.protobuf import descriptor_pool
from google.protobuf import text_encoding
from google.protobuf import text_format

from mtrec.config.defaults import fill_defaults
from mtrec.config.overrides import apply_overrides
from mtrec.config.source import Source

log = logging.getLogger("mtrec")
from mtrec.config.validation import validate
from mtrec.errors import ConfigError
from mtrec.protos import pipeline_pb2


@dataclasses.dataclass
class LoadedConfig:
    """A parsed, overridden and validated config, with its warnings."""
    pipeline: pipeline_pb2.PipelineConfig
    source: Source
    warnings: list[str]


# A string literal or a comment in a line of text format.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#.*')


def _undecodable_string(text: str, line: int) -> tuple[int, int] | None:
    """(line, column) of the last string literal at or before `line` whose escapes give
    bytes that are not UTF-8: the parser reports such a string at the token after it,
    often on the next line."""
    lines = text.split("\n")
    for number in range(min(line, len(lines)), 0, -1):
        found = None
        for match in _STRING_OR_COMMENT.finditer(lines[number - 1]):
            token = match.group()
            if token.startswith("#"):
                break
            try:
                text_encoding.CUnescape(token[1:-1]).decode("utf-8")
            except (UnicodeDecodeError, ValueError):
                found = (number, match.start() + 1)
        if found:
            return found
    return None


def _parse_last_value_wins(text: str, config, path: str) -> None:
    """Parse strictly, except that a singular field set twice keeps its last value: EasyRec
    parses with text_format.Merge, and some of its sample configs rely on that. A warning
    names the first such line."""
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        repeated = re.search(r'should not have multiple "(\w+)" fields', str(e))
        if not repeated:
            raise
        config.Clear()
        text_format.Merge(text, config)
        log.warning("%s:%s: %s is set more than once; the last value wins (as in EasyRec).",
                    path, e.GetLine(), repeated.group(1))


def parse_text(text: str, path: str = "<config>") -> pipeline_pb2.PipelineConfig:
    """Parse text format strictly: unknown fields are errors that name their line."""
    config = pipeline_pb2.PipelineConfig()
    # A UTF-8 byte-order mark, as editors on Windows write, is not part of the text.
    text = text[1:] if text.startswith("\ufeff") else text
    try:
        _parse_last_value_wins(text, config, path)
    except RecursionError:
        raise ConfigError(f"{path}: the config nests messages too deeply to parse (a Struct "
                          "or message inside itself thousands of times); flatten it.") from None
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        message = str(e)
        # ParseError's text starts with "line:col : "; keep only the reason.
        message = re.sub(r"^\d+:\d+\s*:\s*", "", message).rstrip(".")
        if "Couldn't parse string" in message:
            line, column = _undecodable_string(text, line) or (line, column)
            message = re.sub(r"^'[^\n]*?': (?=Couldn't parse string)", "", message)
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
         sets: list[str] | None = None, model_dir: str | None = None,
         skip_memory_check: bool = False) -> LoadedConfig:
    """Read, override (EasyRec's --edit_config_json, then --set), fill in defaults and
    validate a config. skip_memory_check (--skip_memory_check): do not refuse a model whose
    estimated training memory exceeds the memory available."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{column}: not a UTF-8 text file ({e.reason} at byte "
                          f"{e.start}).") from None
    # Line numbers count from the text after a byte-order mark, as the parser's do.
    text = text[1:] if text.startswith("\ufeff") else text
    pipeline = parse_text(text, path)
    apply_overrides(pipeline, edit_config_json, sets)
    if model_dir:
        pipeline.model_dir = model_dir
    source = Source(path, text)
    return LoadedConfig(pipeline, source, prepare(pipeline, source, skip_memory_check))


def from_pipeline(pipeline: pipeline_pb2.PipelineConfig, path: str = "<config>",
                  skip_memory_check: bool = False) -> LoadedConfig:
    """Fill in defaults and validate a PipelineConfig built in Python; errors name lines
    of its text format as given."""
    try:
        text = text_format.MessageToString(pipeline)
    except RecursionError:
        raise ConfigError(f"{path}: the config nests messages too deeply to print (a Struct "
                          "or message inside itself thousands of times); flatten it.") from None
    source = Source(path, text)
    return LoadedConfig(pipeline, source, prepare(pipeline, source, skip_memory_check))


def prepare(pipeline: pipeline_pb2.PipelineConfig, source: Source,
            skip_memory_check: bool = False) -> list[str]:
    """Fill in the defaults (the one step that changes the config), then validate;
    raise ConfigError listing every problem, return the warnings."""
    fill_defaults(pipeline)
    return validate(pipeline, source, skip_memory_check)


def to_text(pipeline: pipeline_pb2.PipelineConfig) -> str:
    return text_format.MessageToString(pipeline)
