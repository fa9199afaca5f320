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
from mtrec.protos import data_pb2, pipeline_pb2


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
    """Parse strictly, except that a singular field set twice, or a second member of a
    oneof, keeps its last value: EasyRec parses with text_format.Merge, and some of its
    sample configs rely on that. A warning names the first such line."""
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        repeated = re.search(r'should not have multiple "(\w+)" fields', str(e))
        oneof = re.search(r'Field "(\w+)" is specified along with field "(\w+)", another '
                          r'member of oneof "(\w+)"', str(e))
        if not repeated and not oneof:
            raise
        config.Clear()
        text_format.Merge(text, config)
        if repeated:
            log.warning("%s:%s: %s is set more than once; the last value wins (as in "
                        "EasyRec).", path, e.GetLine(), repeated.group(1))
        else:
            log.warning("%s:%s: %s and %s are both in one %s (a oneof): only the last, %s, "
                        "counts, as in EasyRec; give each its own entry (e.g. two "
                        "metrics_set { ... }) to have both.", path, e.GetLine(),
                        oneof.group(2), oneof.group(1), _oneof_owner(oneof.group(3)),
                        oneof.group(1))


def _oneof_owner(oneof: str) -> str:
    """The block a oneof sits in, as a config names it."""
    return {"metric": "metrics_set", "optimizer": "optimizer_config"}.get(oneof, "block")


# EasyRec's retrieval (match) models: their model_config field and model name.
MATCH_MODELS = {"dssm": "DSSM", "dssm_senet": "DSSM_SENet", "mind": "MIND",
                "dropoutnet": "DropoutNet", "metric_learning": "CoMetricLearningI2I",
                "pdn": "PDN", "dat": "DAT", "multi_tower_recall": "MultiTowerRecall"}
# EasyRec's negative samplers of data_config (retrieval training only).
NEGATIVE_SAMPLERS = ("negative_sampler", "negative_sampler_v2", "negative_sampler_in_memory",
                     "hard_negative_sampler", "hard_negative_sampler_v2")
_NO_MATCH = ("mtrec trains ranking and multi-task models; retrieval (match) models and "
             "their negative samplers are not supported.")
_AS_FILES = "export the data to CSV, Parquet or TFRecord files and use {}"
# EasyRec fields mtrec does not have, by (message, field): why, and what to use instead.
EASYREC_ONLY_FIELDS = {
    **{("PipelineConfig", f"kafka_{kind}_input"): "Kafka input is streaming from a Kafka "
       f"cluster (EasyRec's KafkaInput), which mtrec does not read; {_AS_FILES}" for kind in
       ("train", "eval")},
    **{("PipelineConfig", f"datahub_{kind}_input"): "DataHub input is cloud-only (Alibaba "
       f"Cloud DataHub); {_AS_FILES}" for kind in ("train", "eval")},
    **{("PipelineConfig", f"hive_{kind}_input"): "Hive input reads tables of a Hive "
       f"cluster, which mtrec does not; {_AS_FILES}" for kind in ("train", "eval")},
    ("PipelineConfig", "fg_json_path"): "RTP feature generation (FG) JSON is cloud-only "
    "(Alibaba's RTP/PAI feature pipeline); write data_config.input_fields and "
    "feature_configs in the config instead, over files whose columns are the features",
    **{("Field", f): "user_define_fn names Python code run on a column, which mtrec never "
       "runs from a config; compute the column into the input files, or use a RawFeature "
       "normalizer_fn (a named function) or an ExprFeature expression" for f in
       ("user_define_fn", "user_define_fn_path", "user_define_fn_res_type")},
}
_PATH_FIELD = {"train": "train_input_path", "eval": "eval_input_path"}
# EasyRec fields mtrec has not, with why (after "mtrec does not support `field` here: ").
_EXPLAINED_FIELDS: dict = {}
# Enum values of EasyRec's that mtrec does not have: (enum, value) -> why and what instead.
_CLOUD_INPUT = ("{} is cloud-only (EasyRec reads it on Alibaba Cloud / PAI); mtrec reads "
                "local or mounted files: export the data and use input_type CSVInput, "
                "ParquetInput or TFRecordInput")
EASYREC_ONLY_VALUES = {
    **{("InputType", v): _CLOUD_INPUT.format(f"{v} ({what})") for v, what in (
        ("RTPInput", "RTP feature-generation rows"), ("RTPInputV2", "RTP rows"),
        ("OdpsRTPInput", "MaxCompute RTP tables"), ("OdpsRTPInputV2", "MaxCompute RTP tables"),
        ("HiveRTPInput", "Hive RTP tables"), ("OdpsInput", "MaxCompute tables"),
        ("OdpsInputV2", "MaxCompute tables"), ("OdpsInputV3", "MaxCompute tables"),
        ("DataHubInput", "Alibaba Cloud DataHub"), ("KafkaInput", "a Kafka stream"),
        ("HiveInput", "Hive tables"), ("HiveParquetInput", "Hive tables"))},
    ("DistributionStrategy", "EmbeddingParallelStrategy"): "EmbeddingParallelStrategy "
    "(EasyRec's embedding parallelism through NVIDIA's SparseOperationKit, GPU-only) is not "
    "supported; use MirroredStrategy or MultiWorkerMirroredStrategy (tables on every "
    "replica) or PSStrategy (tables sharded over parameter servers)",
}


def _match_model(text: str) -> str | None:
    """The retrieval model a config names (its model_config field or model_name /
    model_class), or None."""
    for field, name in MATCH_MODELS.items():
        if re.search(rf"^\s*{field}\s*:?\s*{{", text, re.M):
            return name
    named = re.search(r"^\s*model_name\s*:\s*['\"](\w+)['\"]", text, re.M)
    if named:
        return named.group(1)
    names = {name.lower(): name for name in MATCH_MODELS.values()}
    for model_class in re.findall(r"^\s*model_class\s*:\s*['\"](\w+)['\"]", text, re.M):
        if model_class.lower() in names or model_class == "MatchModel":
            return names.get(model_class.lower(), model_class)
    return None


def easyrec_only_hint(message: str, text: str) -> str | None:
    """The error for a field or enum value EasyRec has and mtrec deliberately does not,
    saying why and what to use instead; None for any other parse error."""
    unknown = re.search(r'Message type "[\w.]*?(\w+)" has no field named "(\w+)"', message)
    if unknown:
        owner, field = unknown.groups()
        if field in MATCH_MODELS and owner == "ModelConfig":
            return f"{field}: {MATCH_MODELS[field]} is a retrieval (match) model: {_NO_MATCH}"
        if field in NEGATIVE_SAMPLERS and owner == "DatasetConfig":
            model = _match_model(text)
            which = f" of the retrieval model {model}" if model else ""
            return f"{field}: the negative sampler{which}: {_NO_MATCH}"
        why = EASYREC_ONLY_FIELDS.get((owner, field))
        if why:
            kind = next((k for k in _PATH_FIELD if field.endswith(f"_{k}_input")), None)
            return f"{field}: {why.format(_PATH_FIELD.get(kind, 'train_input_path'))}."
        return None
    value = re.search(r'Enum type "[\w.]*?(\w+)" has no value named (\w+)', message)
    if value and tuple(value.groups()) in EASYREC_ONLY_VALUES:
        return f"{EASYREC_ONLY_VALUES[tuple(value.groups())]}."
    return None


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
        easyrec_only = easyrec_only_hint(message, text)
        if easyrec_only:
            raise ConfigError(f"{path}:{line}:{column}: {easyrec_only}") from None
        hint = ""
        unknown = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', message)
        if unknown:
            hint = (f" mtrec does not support `{unknown.group(2)}` here; remove it, "
                    "or check the spelling against the schema in protos/mtrec/protos/.")
            why = _EXPLAINED_FIELDS.get((unknown.group(1).rsplit(".", 1)[-1],
                                         unknown.group(2)))
            if why:
                hint = f" mtrec does not support `{unknown.group(2)}` here: {why}."
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
    source = Source(path, text)
    move_parquet_paths(pipeline, source)
    apply_overrides(pipeline, edit_config_json, sets)
    if model_dir:
        pipeline.model_dir = model_dir
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
    move_parquet_paths(pipeline, source)
    return LoadedConfig(pipeline, source, prepare(pipeline, source, skip_memory_check))


def move_parquet_paths(pipeline: pipeline_pb2.PipelineConfig, source: Source) -> None:
    """EasyRec's parquet_train_input / parquet_eval_input become train_input_path /
    eval_input_path (the reader is data_config.input_type's, which must be Parquet)."""
    for kind, path_field in _PATH_FIELD.items():
        easyrec = f"parquet_{kind}_input"
        if not pipeline.HasField(easyrec):
            continue
        where = source.where(easyrec)
        if pipeline.HasField(path_field):
            raise ConfigError(f"{where}: {easyrec} and {path_field} both name the {kind} "
                              "files; keep one.")
        if pipeline.data_config.input_type != data_pb2.DatasetConfig.ParquetInput:
            raise ConfigError(f"{where}: {easyrec} names Parquet files: set data_config "
                              "input_type: ParquetInput (EasyRec's ParquetInputV2).")
        setattr(pipeline, path_field, getattr(pipeline, easyrec))
        pipeline.ClearField(easyrec)


def prepare(pipeline: pipeline_pb2.PipelineConfig, source: Source,
            skip_memory_check: bool = False) -> list[str]:
    """Fill in the defaults (the one step that changes the config), then validate;
    raise ConfigError listing every problem, return the warnings."""
    fill_defaults(pipeline)
    return validate(pipeline, source, skip_memory_check)


def to_text(pipeline: pipeline_pb2.PipelineConfig) -> str:
    return text_format.MessageToString(pipeline)
