"""Load a pipeline config: parse text format, apply overrides, validate.

Nothing here imports TensorFlow, so `mtrec check` and `mtrec --help` stay fast.
Every error names the file and line (or the override path) it comes from.
"""
import dataclasses
import difflib
import json
import os
import re
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import descriptor_pool
from google.protobuf import text_format

from mtrec.errors import ConfigError
from mtrec.protos import data_pb2, pipeline_pb2

# model_class -> the `model_config` oneof member it must come with.
MODEL_CLASSES = {
    "MMoE": "mmoe",
    "ESMM": "esmm",
    "PLE": "ple",
    "DBMTL": "dbmtl",
    "SimpleMultiTask": "simple_multi_task",
    "SharedBottom": "shared_bottom",
    "PEPNet": "pepnet",
    "APG": "apg",
    "M2M": "m2m",
    "STAR": "star",
    "HMoE": "hmoe",
    # Towers on a `backbone` (EasyRec's component models); both read `model_params`.
    "MultiTaskModel": "model_params",
    "RankModel": "model_params",
}

# model_class values whose model is built from `backbone` + `model_params`.
BACKBONE_MODEL_CLASSES = ("MultiTaskModel", "RankModel")

# LossType ORDER_CALIBRATE_LOSS: an extra term of a tower with relation towers, not its loss.
ORDER_CALIBRATE_LOSS = 14

# Model fields naming a feature group read only by a gate or generator, not the main input.
SIDE_GROUP_FIELDS = ("prior_group_name", "condition_group_name", "scenario_group_name")

_FD = pb_descriptor.FieldDescriptor


@dataclasses.dataclass
class Source:
    """Where a config came from, to point errors at a line."""
    path: str
    text: str

    def where(self, field: str, value: str | None = None, nth: int = 1) -> str:
        """'file:line' of the nth `field` (with `value`, if given) in the text."""
        if value is None:
            pattern = rf"\b{re.escape(field)}\s*(:|\{{)"
        else:
            quoted = rf"['\"]?{re.escape(str(value))}['\"]?"
            # `field: value` or a list `field: [a, value, b]`
            pattern = (rf"\b{re.escape(field)}\s*:\s*({quoted}(\s|$|,|\]|\}})"
                       rf"|\[([^\]]*[,\s])?{quoted}\s*(,|\]))")
        seen = 0
        for number, line in enumerate(self.text.splitlines(), start=1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code):
                seen += 1
                if seen == nth:
                    return f"{self.path}:{number}"
        return self.path


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
    """Read, override (EasyRec's --edit_config_json, then --set) and validate a config."""
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
    warnings = validate(pipeline, source)
    return LoadedConfig(pipeline, source, warnings)


def from_pipeline(pipeline: pipeline_pb2.PipelineConfig, path: str = "<config>") -> LoadedConfig:
    """Validate a PipelineConfig built in Python."""
    source = Source(path, text_format.MessageToString(pipeline))
    return LoadedConfig(pipeline, source, validate(pipeline, source))


def to_text(pipeline: pipeline_pb2.PipelineConfig) -> str:
    return text_format.MessageToString(pipeline)


# ---------------------------------------------------------------------------
# Overrides: EasyRec's --edit_config_json and its short form --set path=value.
# Paths are dotted field names; a repeated field takes a selector: [i], [:],
# or [sub.path<op>value] with op one of = != < > <= >=.

_SEGMENT = re.compile(r"^(\w+)(?:\[(.*)\])?$")
_CONDITION = re.compile(r"^(.+?)(!=|>=|<=|=|<|>)(.*)$")


def apply_overrides(pipeline, edit_config_json=None, sets=None) -> None:
    edits: dict[str, Any] = {}
    if edit_config_json:
        if isinstance(edit_config_json, str):
            try:
                edit_config_json = json.loads(edit_config_json)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--edit_config_json is not valid JSON: {e}") from None
        if not isinstance(edit_config_json, dict):
            raise ConfigError("--edit_config_json must be a JSON object of {\"path\": value}.")
        edits.update(edit_config_json)
    for item in sets or []:
        path, value = _split_assignment(item)
        edits[path] = _parse_set_value(value)
    for path, value in edits.items():
        set_path(pipeline, path, value)


def _split_assignment(item: str) -> tuple[str, str]:
    depth = 0
    for i, ch in enumerate(item):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "=" and depth == 0:
            return item[:i].strip(), item[i + 1:].strip()
    raise ConfigError(f"--set {item!r}: expected path=value, e.g. data_config.batch_size=512.")


class _Raw(str):
    """A --set value as typed: converted by the target field's type (a string field keeps
    the text exactly, e.g. "1.10"; numbers, booleans and JSON lists are parsed)."""


def _parse_set_value(value: str) -> Any:
    return _Raw(value)


def _decode_raw(value):
    if isinstance(value, _Raw):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return str(value)
    return value


def _split_path(path: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(path):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "." and depth == 0:
            parts.append(path[start:i])
            start = i + 1
    parts.append(path[start:])
    return parts


def _field(message, name: str, path: str):
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        names = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
        raise ConfigError(f"override {path!r}: {message.DESCRIPTOR.name} has no field "
                          f"{name!r}; its fields are: {names}.")
    return field


def _is_repeated(field) -> bool:
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == _FD.LABEL_REPEATED


def _select(message, field, selector: str, path: str) -> list[int]:
    items = getattr(message, field.name)
    if selector == ":":
        return list(range(len(items)))
    if re.fullmatch(r"-?\d+", selector):
        index = int(selector)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"override {path!r}: index {index} out of range "
                              f"({field.name} has {len(items)} entries).")
        return [index % len(items)]
    condition = _CONDITION.match(selector)
    if not condition or field.type != _FD.TYPE_MESSAGE:
        raise ConfigError(f"override {path!r}: bad selector [{selector}]; use [i], [:] or "
                          "[field=value].")
    sub_path, op, want = condition.groups()
    chosen = [i for i, item in enumerate(items) if _compare(_get_path(item, sub_path, path), op, want)]
    if not chosen:
        raise ConfigError(f"override {path!r}: no entry of {field.name} matches [{selector}].")
    return chosen


def _get_path(message, sub_path: str, path: str):
    value = message
    for part in _split_path(sub_path):
        name, selector = _SEGMENT.match(part).groups() if _SEGMENT.match(part) else (part, None)
        field = _field(value, name, path)
        value = getattr(value, name)
        if selector is not None:
            value = value[int(selector)] if len(value) > int(selector) else None
            if value is None:
                return None
        if field.type == _FD.TYPE_ENUM and not _is_repeated(field):
            value = field.enum_type.values_by_number[value].name
    return value


def _compare(actual, op: str, want: str) -> bool:
    if actual is None:
        return False
    try:
        a, w = float(actual), float(want)
    except (TypeError, ValueError):
        a, w = str(actual), want.strip("'\"")
    return {"=": a == w, "!=": a != w, "<": a < w, ">": a > w, "<=": a <= w, ">=": a >= w}[op]


def set_path(root, path: str, value: Any) -> None:
    """Set `value` at an EasyRec-style path, on every element a selector picks."""
    targets = [root]
    parts = _split_path(path)
    for depth, part in enumerate(parts):
        match = _SEGMENT.match(part)
        if not match:
            raise ConfigError(f"override {path!r}: cannot read path segment {part!r}.")
        name, selector = match.groups()
        last = depth == len(parts) - 1
        next_targets = []
        for message in targets:
            field = _field(message, name, path)
            if selector is not None and not _is_repeated(field):
                raise ConfigError(f"override {path!r}: {name} is not repeated; drop [{selector}].")
            if last:
                _assign(message, field, selector, value, path)
            elif selector is not None:
                items = getattr(message, name)
                next_targets.extend(items[i] for i in _select(message, field, selector, path))
            elif field.type == _FD.TYPE_MESSAGE and not _is_repeated(field):
                next_targets.append(getattr(message, name))
            elif _is_repeated(field):
                raise ConfigError(f"override {path!r}: {name} is repeated; pick entries with "
                                  "[i], [:] or [field=value].")
            else:
                raise ConfigError(f"override {path!r}: {name} is a single value, not a message; "
                                  "the path cannot go further.")
        targets = next_targets


def _assign(message, field, selector, value, path) -> None:
    name = field.name
    if field.type == _FD.TYPE_MESSAGE:
        if not isinstance(value, str):
            raise ConfigError(f"override {path!r}: {name} is a message; give its text format "
                              "as a string, e.g. \"hidden_units: [64, 32]\".")
        if _is_repeated(field):
            items = getattr(message, name)
            indices = _select(message, field, selector, path) if selector else None
            if indices is None:
                raise ConfigError(f"override {path!r}: pick which {name} entries to replace.")
            for i in indices:
                items[i].Clear()
                _parse_into(items[i], value, path)
        else:
            sub = getattr(message, name)
            sub.Clear()
            _parse_into(sub, value, path)
            sub.SetInParent()
        return
    if _is_repeated(field):
        items = getattr(message, name)
        if selector is None:
            decoded = _decode_raw(value)
            values = decoded if isinstance(decoded, list) else [value]
            del items[:]
            items.extend(_convert(field, v, path) for v in values)
        else:
            for i in _select(message, field, selector, path):
                items[i] = _convert(field, value, path)
        return
    setattr(message, name, _convert(field, value, path))


def _parse_into(message, text: str, path: str) -> None:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ConfigError(f"override {path!r}: {e}") from None


def _convert(field, value, path):
    if field.type == _FD.TYPE_STRING and isinstance(value, _Raw):
        return str(value)
    value = _decode_raw(value)
    try:
        if field.type == _FD.TYPE_ENUM:
            if isinstance(value, str) and value in field.enum_type.values_by_name:
                return field.enum_type.values_by_name[value].number
            if isinstance(value, int) and value in field.enum_type.values_by_number:
                return value
            names = ", ".join(field.enum_type.values_by_name)
            raise ConfigError(f"override {path!r}: {value!r} is not one of {names}.")
        if field.type == _FD.TYPE_BOOL:
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            return bool(value)
        if field.type in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
            return float(value)
        if field.type == _FD.TYPE_STRING:
            return value if isinstance(value, str) else json.dumps(value)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        number = int(value)
        if field.type in (_FD.TYPE_UINT32, _FD.TYPE_UINT64) and number < 0:
            raise ValueError(value)
        return number
    except (TypeError, ValueError):
        raise ConfigError(f"override {path!r}: {value!r} is not a valid "
                          f"{_type_name(field)} for {field.name}.") from None


def _type_name(field) -> str:
    return {_FD.TYPE_BOOL: "bool", _FD.TYPE_FLOAT: "number", _FD.TYPE_DOUBLE: "number",
            _FD.TYPE_UINT32: "non-negative integer", _FD.TYPE_UINT64: "non-negative integer",
            _FD.TYPE_STRING: "string"}.get(field.type, "integer")


# ---------------------------------------------------------------------------
# Helpers the later stages use to read a validated config.

def all_features(pipeline) -> list:
    """Features from both the legacy and the `feature_config { features }` form."""
    return list(pipeline.feature_configs) + list(pipeline.feature_config.features)


def feature_name(feature) -> str:
    return feature.feature_name or (feature.input_names[0] if feature.input_names else "")


def model_message(model_config):
    """The oneof model sub-message (e.g. the `mmoe { ... }` block, or `model_params` of a
    MultiTaskModel / RankModel), or None."""
    which = model_config.WhichOneof("model")
    return getattr(model_config, which) if which else None


def task_towers(model_config) -> list:
    """The task towers of any model, in output order."""
    model = model_message(model_config)
    if model is None:
        return []
    if model_config.WhichOneof("model") == "esmm":
        return [model.ctr_tower, model.cvr_tower]
    return list(model.task_towers)


def label_names(pipeline) -> list[str]:
    """The label columns the towers read (with task-space indicators), in tower order."""
    names = []
    for tower in task_towers(pipeline.model_config):
        for name in (tower.label_name, tower.task_space_indicator_label):
            if name and name not in names:
                names.append(name)
    return names


# ---------------------------------------------------------------------------
# Semantic validation: everything that can be checked before a graph is built.

class _Problems:

    def __init__(self, source: Source):
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str, field: str | None = None, value=None, nth: int = 1):
        where = self.source.where(field, value, nth) if field else self.source.path
        self.errors.append(f"{where}: {message}")

    def warn(self, message: str, field: str | None = None, value=None):
        where = self.source.where(field, value) if field else self.source.path
        self.warnings.append(f"{where}: {message}")


def validate(pipeline, source: Source) -> list[str]:
    """Check the config; raise ConfigError listing every problem, return warnings."""
    p = _Problems(source)
    inputs = _check_data(pipeline, p)
    features = _check_features(pipeline, inputs, p)
    _check_model(pipeline, inputs, features, p)
    _check_train(pipeline, p)
    _check_eval(pipeline, inputs, p)
    if p.errors:
        count = f"{len(p.errors)} problems" if len(p.errors) > 1 else "1 problem"
        raise ConfigError(f"{source.path}: {count}:\n  " + "\n  ".join(p.errors))
    return p.warnings


def _check_data(pipeline, p: _Problems) -> dict:
    data = pipeline.data_config
    inputs = {}
    if not data.input_fields:
        p.error("data_config has no input_fields; list the columns of your rows.", "data_config")
    for field in data.input_fields:
        if not field.input_name:
            p.error("an input_fields entry has no input_name.", "input_fields")
        elif field.input_name in inputs:
            p.error(f"input_fields: {field.input_name!r} is listed twice.", "input_name",
                    field.input_name)
        inputs[field.input_name] = field
    if data.batch_size == 0:
        p.error("data_config.batch_size must be at least 1.", "batch_size")
    for name in data.label_fields:
        if name not in inputs:
            p.error(f"label_fields: {name!r} is not an input field.", "label_fields", name)
    if data.sample_weight and data.sample_weight not in inputs:
        p.error(f"sample_weight: {data.sample_weight!r} is not an input field.", "sample_weight")
    if data.selected_cols:
        for name in data.selected_cols.split(","):
            if name.strip() not in inputs:
                p.error(f"selected_cols: {name.strip()!r} is not an input field.", "selected_cols")
    if len(data.separator) != 1 and data.input_type == data.CSVInput:
        p.error(f"data_config.separator must be one character, got {data.separator!r}.",
                "separator")
    return inputs


def _check_features(pipeline, inputs: dict, p: _Problems) -> dict:
    from mtrec.protos import feature_pb2
    FC = feature_pb2.FeatureConfig
    features: dict[str, Any] = {}
    tables: dict[str, tuple] = {}
    for feature in all_features(pipeline):
        if not feature.input_names:
            p.error("a feature has no input_names.", "feature_type")
            continue
        name = feature_name(feature)
        if not feature.feature_name:
            feature.feature_name = name
        if name in features:
            p.error(f"feature {name!r} is defined twice; give one a feature_name.", "input_names",
                    feature.input_names[0])
        features[name] = feature
        for input_name in feature.input_names:
            if input_name not in inputs:
                p.error(f"feature {name!r} reads {input_name!r}, which is not in "
                        "data_config.input_fields.", "input_names", input_name)
        kind = FC.FeatureType.Name(feature.feature_type)
        if feature.feature_type == FC.SequenceFeature:
            p.error(f"feature {name!r}: SequenceFeature is not implemented yet in mtrec.",
                    "feature_type", "SequenceFeature")
            continue
        if feature.feature_type == FC.ComboFeature and len(feature.input_names) < 2:
            p.error(f"ComboFeature {name!r} needs at least two input_names.", "input_names",
                    feature.input_names[0])
        if feature.feature_type != FC.ComboFeature and len(feature.input_names) > 1:
            p.error(f"{kind} {name!r} reads one input; use a ComboFeature to cross several.",
                    "input_names", feature.input_names[1])
        sources = [s for s, on in (("hash_bucket_size", feature.hash_bucket_size > 0),
                                   ("num_buckets", feature.num_buckets > 0),
                                   ("vocab_list", len(feature.vocab_list) > 0),
                                   ("vocab_file", bool(feature.vocab_file))) if on]
        if feature.feature_type in (FC.IdFeature, FC.TagFeature):
            if len(sources) != 1:
                p.error(f"{kind} {name!r} needs exactly one of hash_bucket_size, num_buckets, "
                        f"vocab_list, vocab_file (has {', '.join(sources) or 'none'}).",
                        "input_names", feature.input_names[0])
        if feature.feature_type == FC.ComboFeature and feature.hash_bucket_size == 0:
            p.error(f"ComboFeature {name!r} needs hash_bucket_size.", "input_names",
                    feature.input_names[0])
        if feature.feature_type == FC.RawFeature:
            if sources:
                p.error(f"RawFeature {name!r} takes boundaries, not {sources[0]}.", sources[0])
            if list(feature.boundaries) != sorted(set(feature.boundaries)):
                p.error(f"RawFeature {name!r}: boundaries must be strictly increasing.",
                        "boundaries")
            if feature.boundaries and feature.raw_input_dim > 1:
                p.error(f"RawFeature {name!r}: boundaries need raw_input_dim 1.", "boundaries")
            if feature.boundaries and feature.embedding_dim == 0:
                p.error(f"RawFeature {name!r} has boundaries but no embedding_dim.", "boundaries")
            if feature.raw_input_dim == 0:
                p.error(f"RawFeature {name!r}: raw_input_dim must be at least 1.", "raw_input_dim")
        elif feature.embedding_dim == 0:
            p.error(f"{kind} {name!r} needs embedding_dim > 0.", "input_names",
                    feature.input_names[0])
        if feature.vocab_file and not os.path.isfile(feature.vocab_file):
            p.error(f"feature {name!r}: vocab_file {feature.vocab_file!r} not found.",
                    "vocab_file")
        if feature.combiner not in ("mean", "sum"):
            p.error(f"feature {name!r}: combiner must be \"mean\" or \"sum\", got "
                    f"{feature.combiner!r}.", "combiner", feature.combiner)
        if feature.embedding_name:
            shape = (tuple(sources), feature.hash_bucket_size, feature.num_buckets,
                     tuple(feature.vocab_list), feature.vocab_file, tuple(feature.boundaries),
                     feature.embedding_dim)
            first = tables.setdefault(feature.embedding_name, (name, shape))
            if first[1] != shape:
                p.error(f"features {first[0]!r} and {name!r} share embedding_name "
                        f"{feature.embedding_name!r} but differ in id space or embedding_dim.",
                        "embedding_name", feature.embedding_name)
    _check_table_memory(features, p)
    return features


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_table_memory(features: dict, p: _Problems) -> None:
    """Embedding tables (float32, plus up to two optimizer slots each) must fit in memory:
    a mistyped hash_bucket_size otherwise ends in the kernel's out-of-memory kill."""
    tables = {}
    for name, f in features.items():
        rows = (f.hash_bucket_size or f.num_buckets or
                (len(f.vocab_list) + 1 if f.vocab_list else 0) or
                (len(f.boundaries) + 1 if f.boundaries else 0))
        if rows and f.embedding_dim:
            tables[f.embedding_name or name] = (rows * f.embedding_dim, name, f)
    memory = _physical_memory()
    need = 3 * 4 * sum(size for size, _, _ in tables.values())
    if memory and need > memory:
        size, name, f = max(tables.values(), key=lambda t: t[0])
        field = "hash_bucket_size" if f.hash_bucket_size else "num_buckets"
        p.error(f"the embedding tables need ~{need / 2 ** 30:.1f} GiB with the optimizer's "
                f"slots, more than this machine's {memory / 2 ** 30:.1f} GiB; the largest is "
                f"{name!r} ({size:,} floats). Lower its {field} or embedding_dim.",
                field, str(getattr(f, field)))


def _check_model(pipeline, inputs: dict, features: dict, p: _Problems) -> None:
    model_config = pipeline.model_config
    if not pipeline.HasField("model_config"):
        p.error("the config has no model_config.")
        return
    which = model_config.WhichOneof("model")
    names = ", ".join(MODEL_CLASSES)
    if not model_config.model_class:
        p.error(f"model_config.model_class is missing; one of: {names}.", "model_config")
    elif model_config.model_class not in MODEL_CLASSES:
        p.error(f"model_class {model_config.model_class!r} is not a known model; known: {names}.",
                "model_class")
    elif which is None and model_config.model_class == "RankModel" and \
            model_config.HasField("backbone"):
        # EasyRec's RankModel may omit an empty `model_params {}`.
        model_config.model_params.SetInParent()
        which = "model_params"
    elif which is None:
        p.error(f"model_class {model_config.model_class!r} needs a "
                f"`{MODEL_CLASSES[model_config.model_class]} {{ ... }}` block in model_config.",
                "model_class")
    elif MODEL_CLASSES[model_config.model_class] != which:
        classes = " or ".join(repr(k) for k, v in MODEL_CLASSES.items() if v == which)
        p.error(f"model_class {model_config.model_class!r} does not match the `{which}` block; "
                f"use `{MODEL_CLASSES[model_config.model_class]} {{ ... }}` or model_class "
                f"{classes}.", "model_class")

    groups = {}
    for group in model_config.feature_groups:
        if group.group_name in groups:
            p.error(f"feature group {group.group_name!r} is defined twice.", "group_name",
                    group.group_name)
        groups[group.group_name] = group
        if not group.feature_names:
            p.error(f"feature group {group.group_name!r} has no feature_names.", "group_name",
                    group.group_name)
        for name in group.feature_names:
            if name not in features:
                p.error(f"feature group {group.group_name!r} names feature {name!r}, which is "
                        "not defined in feature_configs.", "feature_names", name)
        if group.sequence_features:
            p.error(f"feature group {group.group_name!r}: sequence_features are not implemented "
                    "yet in mtrec.", "sequence_features")
    if not groups:
        p.error("model_config has no feature_groups.", "model_config")

    model = model_message(model_config)
    if model is None:
        return
    if which == "esmm":
        for attr in ("ctr_tower", "cvr_tower"):
            if not model.HasField(attr):
                p.error(f"esmm needs a {attr}.", "esmm")
        for g in model.groups:
            if g.input not in groups:
                p.error(f"esmm groups: input {g.input!r} is not a feature group.", "input", g.input)
    labels = list(pipeline.data_config.label_fields)
    if which == "model_params":
        _check_model_params(model_config, labels, p)
    towers = task_towers(model_config)
    if not towers and which != "esmm":
        p.error(f"{which} has no task_towers.", which)
    seen = set()
    for i, tower in enumerate(towers):
        if not tower.tower_name:
            tower.tower_name = tower.label_name or (labels[i] if i < len(labels) else f"task{i}")
        if tower.tower_name in seen:
            p.error(f"tower name {tower.tower_name!r} is used twice; tower names must be unique.",
                    "tower_name", tower.tower_name, nth=2)
        seen.add(tower.tower_name)
        if not tower.label_name:
            if i < len(labels):
                tower.label_name = labels[i]
            else:
                p.error(f"tower {tower.tower_name!r} has no label_name and there is no "
                        f"label_fields[{i}] to default to.", "tower_name", tower.tower_name)
        if tower.label_name and tower.label_name not in inputs:
            p.error(f"tower {tower.tower_name!r}: label {tower.label_name!r} is not an input field.",
                    "label_name", tower.label_name)
        elif (tower.label_name and
              inputs[tower.label_name].input_type == data_pb2.DatasetConfig.STRING):
            p.error(f"tower {tower.tower_name!r}: label {tower.label_name!r} is a STRING column; "
                    "labels must be INT32, INT64, FLOAT, DOUBLE or BOOL.", "input_name",
                    tower.label_name)
        if tower.task_space_indicator_label and tower.task_space_indicator_label not in inputs:
            p.error(f"tower {tower.tower_name!r}: task_space_indicator_label "
                    f"{tower.task_space_indicator_label!r} is not an input field.",
                    "task_space_indicator_label")
        if tower.num_class == 0:
            p.error(f"tower {tower.tower_name!r}: num_class must be at least 1.", "num_class")
        loss_types = [l.loss_type for l in tower.losses] or [tower.loss_type]
        if ORDER_CALIBRATE_LOSS in loss_types:
            _check_order_calibrate(tower, towers, which, p)
            loss_types = [t for t in loss_types if t != ORDER_CALIBRATE_LOSS] or [0]
        if tower.num_class > 1 and any(t != 0 for t in loss_types):
            p.error(f"tower {tower.tower_name!r}: num_class > 1 needs loss_type CLASSIFICATION.",
                    "num_class")
        if len(set(loss_types)) > 1:
            p.error(f"tower {tower.tower_name!r}: mixing CLASSIFICATION and L2_LOSS in one tower "
                    "is not supported.", "losses")
        for field in ("relation_tower_names", "relation_dnn", "use_ait_module",
                      "ait_project_dim"):
            used = tower.HasField(field) if field == "relation_dnn" else getattr(tower, field)
            if used and which not in ("dbmtl", "model_params"):
                p.error(f"tower {tower.tower_name!r}: {field} only applies to DBMTL and "
                        "MultiTaskModel.", field)
        for metric in tower.metrics_set:
            _check_metric(metric, inputs, p)
    dnn_fields = [(f.name, getattr(model, f.name)) for f in model.DESCRIPTOR.fields
                  if f.message_type is not None and f.message_type.name == "DNN"
                  and model.HasField(f.name)]
    dnn_fields += [(f"{t.tower_name}.dnn", t.dnn) for t in towers]
    dnn_fields += [(f"{t.tower_name}.relation_dnn", t.relation_dnn) for t in towers
                   if t.HasField("relation_dnn")]
    for name, dnn in dnn_fields:
        if any(u == 0 for u in dnn.hidden_units):
            p.error(f"{name}: hidden_units must be positive.", "hidden_units")
        if len(dnn.dropout_ratio) not in (0, 1, len(dnn.hidden_units)):
            p.error(f"{name}: dropout_ratio needs 1 or {len(dnn.hidden_units)} values.",
                    "dropout_ratio")
        if any(not 0 <= r < 1 for r in dnn.dropout_ratio):
            p.error(f"{name}: dropout_ratio values must be in [0, 1).", "dropout_ratio")
    _check_deepfm_logits(which, model, features, groups, p)
    if which in ("mmoe", "m2m", "hmoe") and model.num_expert == 0:
        p.error(f"{which}.num_expert must be at least 1.", "num_expert")
    if hasattr(model, "domain_feature"):
        _check_domain_model(which, model, features, groups, p)
    if which == "dbmtl":
        if model.num_expert > 0 and not model.expert_dnn.hidden_units:
            p.error("dbmtl.num_expert > 0 needs expert_dnn { hidden_units }.", "num_expert")
        if model.HasField("expert_dnn") and model.num_expert == 0:
            p.error("dbmtl.expert_dnn needs num_expert >= 1 (0 means no MMoE; remove "
                    "expert_dnn).", "expert_dnn")
        _check_relations(towers, model.ait_label_constraint_weight, p)
    if which == "model_params":
        _check_relations(towers, 0.0, p)
    if model_config.HasField("backbone"):
        _check_backbone(model_config, which, model, features, groups, towers, p)
    elif which == "model_params":
        p.error(f"model_class {model_config.model_class!r} builds its towers on a backbone; "
                "add `backbone { blocks { ... } }` (see docs/backbone.md).", "model_class")


def _check_deepfm_logits(which: str, model, features: dict, groups: dict,
                         p: _Problems) -> None:
    """use_linear_logits reads the WIDE groups; use_fm_logits pairs the DEEP groups'
    embeddings, so they must share one width."""
    from mtrec.protos import feature_pb2
    if getattr(model, "use_linear_logits", False) and not any(
            g.wide_deep == feature_pb2.WIDE for g in groups.values()):
        p.error(f"{which}.use_linear_logits needs a feature group with wide_deep: WIDE "
                "(its features get the linear weights).", "use_linear_logits")
    if not getattr(model, "use_fm_logits", False):
        return
    widths = {}
    for group in groups.values():
        if group.wide_deep == feature_pb2.WIDE:
            continue
        for name in group.feature_names:
            f = features.get(name)
            if f is not None and not (f.feature_type == feature_pb2.FeatureConfig.RawFeature
                                      and not f.boundaries):
                widths.setdefault(f.embedding_dim, name)
    if not widths:
        p.error(f"{which}.use_fm_logits needs embedded features in a DEEP group.",
                "use_fm_logits")
    elif len(widths) > 1:
        named = ", ".join(f"{n!r} ({d})" for d, n in sorted(widths.items()))
        p.error(f"{which}.use_fm_logits needs one embedding_dim for all embedded DEEP "
                f"features; they differ: {named}.", "use_fm_logits")


def _check_model_params(model_config, labels: list, p: _Problems) -> None:
    """MultiTaskModel / RankModel: ModelParams fields; a RankModel gets its single tower
    (named after its label unless model_params names it) from loss_type and num_class."""
    params = model_config.model_params
    if params.outputs:
        p.error("model_params.outputs is not supported by mtrec; remove it (every tower's "
                "logits_/probs_/y_ outputs are exported).", "outputs")
    rank = model_config.model_class == "RankModel"
    for field in ("loss_type", "num_class"):
        if model_config.HasField(field) and not rank:
            p.warn(f"model_config.{field} applies to RankModel only; MultiTaskModel towers "
                   "set their own.", field)
    if not rank:
        return
    if len(params.task_towers) > 1:
        p.error(f"RankModel has one output but model_params has {len(params.task_towers)} "
                "task_towers; use model_class MultiTaskModel for several tasks.",
                "task_towers")
    elif params.task_towers:
        tower = params.task_towers[0]
        for field in ("loss_type", "num_class"):
            if model_config.HasField(field) and getattr(model_config, field) != getattr(
                    tower, field):
                p.error(f"RankModel: model_config.{field} differs from the {field} of its "
                        "model_params tower; set it in one place.", field)
    else:
        label = labels[0] if labels else ""
        params.task_towers.add(tower_name=label, label_name=label,
                               loss_type=model_config.loss_type,
                               num_class=model_config.num_class)


def _check_order_calibrate(tower, towers, which: str, p: _Problems) -> None:
    """ORDER_CALIBRATE_LOSS: AITM's label constraint against the tower's relation towers."""
    name = tower.tower_name
    by_name = {t.tower_name: t for t in towers}
    for parent in tower.relation_tower_names:
        other = by_name.get(parent)
        kinds = [l.loss_type for l in other.losses if l.loss_type != ORDER_CALIBRATE_LOSS] \
            if other is not None else []
        if other is not None and (other.num_class != 1 or any(kinds) or (
                not kinds and other.loss_type != 0)):
            p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares its probability with "
                    f"{parent!r}'s, so {parent!r} must be a binary CLASSIFICATION tower.",
                    "loss_type", "ORDER_CALIBRATE_LOSS")
    if which not in ("dbmtl", "model_params"):
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares a tower with its "
                "relation_tower_names, which only DBMTL and MultiTaskModel towers have.",
                "loss_type", "ORDER_CALIBRATE_LOSS")
        return
    kinds = [l.loss_type for l in tower.losses]
    if not tower.losses or all(k == ORDER_CALIBRATE_LOSS for k in kinds):
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS is an extra term; list it in `losses` "
                "next to a CLASSIFICATION loss.", "loss_type", "ORDER_CALIBRATE_LOSS")
    elif any(k not in (0, ORDER_CALIBRATE_LOSS) for k in kinds) or tower.num_class != 1:
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares probabilities, so the tower "
                "must be a binary CLASSIFICATION tower (num_class 1).", "loss_type",
                "ORDER_CALIBRATE_LOSS")
    if not tower.relation_tower_names:
        p.warn(f"tower {name!r}: ORDER_CALIBRATE_LOSS has no effect without "
               "relation_tower_names (the towers whose probability bounds this one).",
               "loss_type", "ORDER_CALIBRATE_LOSS")


def _check_backbone(model_config, which: str, model, features: dict, groups: dict, towers,
                    p: _Problems) -> None:
    """The backbone's blocks (names, inputs, cycles, registered layers and their params,
    whether each block's input fits its layer) and whether its output fits the model."""
    from mtrec import backbone_spec
    wide_dim = len(towers) if getattr(model, "use_linear_logits", False) else 1
    widths = backbone_spec.group_widths_of(groups, features, wide_dim)
    plan = backbone_spec.plan(model_config.backbone, widths)
    for message, field, value, nth in plan.errors:
        p.error(message, field, value, nth)
    for message, field, value, nth in plan.warnings:
        p.warn(message, field, value)
    out = plan.output
    if plan.errors or out is None:
        return
    where = "output_blocks" if plan.as_list else "backbone"
    described = backbone_spec.describe(out)
    if which == "model_params" and model_config.model_class == "MultiTaskModel":
        if isinstance(out, list):
            if len(out) != len(towers):
                p.error(f"the backbone gives {len(out)} outputs ({described}) but model_params "
                        f"has {len(towers)} task_towers; tower i reads output i, so the counts "
                        "must agree.", where)
                return
            items = out
        else:
            items = [out]
    elif which == "model_params":
        items = [out[0]] if isinstance(out, list) and len(out) == 1 else [out]
    else:
        items = [out]
        if which == "esmm" and model.groups:
            p.error("esmm.groups reads feature groups directly, so a backbone would be unused; "
                    "remove esmm.groups or the backbone.", "backbone")
    for item in items:
        if not isinstance(item, backbone_spec.Tensor) or len(item.shape) != 1:
            what = ("each task tower reads one (batch, d) tensor" if which == "model_params"
                    else f"under `{which}` the backbone output replaces the feature-group "
                    "input, so it must be one (batch, d) tensor")
            p.error(f"the backbone output does not fit the model: {what}, got {described}.",
                    where)
            return


def _check_domain_model(which: str, model, features: dict, groups: dict, p: _Problems) -> None:
    """Multi-scenario models: a domain feature with a finite id space, and their groups."""
    from mtrec.protos import feature_pb2
    name = model.domain_feature
    feature = features.get(name)
    if not name:
        p.error(f"{which} needs domain_feature: the IdFeature whose id is the scenario.", which)
    elif feature is None:
        p.error(f"{which}.domain_feature {name!r} is not a feature; features: "
                f"{', '.join(features)}.", "domain_feature", name)
    elif (feature.feature_type != feature_pb2.FeatureConfig.IdFeature
          or not (feature.num_buckets or feature.vocab_list or feature.vocab_file)):
        p.error(f"{which}.domain_feature {name!r} must be an IdFeature with num_buckets, "
                "vocab_list or vocab_file, so every domain has its own id (hashed ids "
                "would merge domains).", "domain_feature", name)
    elif feature.num_buckets > 1000 or len(feature.vocab_list) > 1000:
        p.error(f"{which}.domain_feature {name!r} has more than 1000 ids; per-domain "
                "parameters and metrics are meant for a handful of scenarios.",
                "domain_feature", name)
    for field in SIDE_GROUP_FIELDS:
        group = getattr(model, field, "")
        if group and group not in groups:
            p.error(f"{which}.{field} {group!r} is not a feature group; groups: "
                    f"{', '.join(groups)}.", field, group)
    side = {getattr(model, f, "") for f in SIDE_GROUP_FIELDS}
    deep = [g for g in groups.values() if g.wide_deep == feature_pb2.DEEP
            and g.group_name not in side]
    if not deep:
        p.error(f"{which} needs a DEEP feature group besides its prior group.", which)
    if which in ("apg", "star") and not model.hidden_units:
        p.error(f"{which} needs hidden_units (the widths of its layers).", which)
    if which in ("apg", "star") and any(u == 0 for u in model.hidden_units):
        p.error(f"{which}.hidden_units must be positive.", "hidden_units")
    if which == "apg":
        if model.mf_k == 0 or model.mf_p == 0:
            p.error("apg.mf_k and apg.mf_p must be at least 1.", "mf_k")
        if model.condition == model.MIX and not model.condition_group_name:
            p.error("apg.condition MIX needs condition_group_name: the feature group "
                    "(user/item ids) mixed with the domain embedding.", "condition")
    if which == "pepnet" and model.ppnet and not model.prior_group_name:
        p.error("pepnet.ppnet needs prior_group_name: the feature group of user/item/author "
                "ids that personalises the towers (or set ppnet: false).", "ppnet")
    if which == "m2m":
        for field in ("view_dim", "scenario_dim", "meta_unit_depth"):
            if getattr(model, field) == 0:
                p.error(f"m2m.{field} must be at least 1.", field)
    if which in ("m2m", "hmoe") and not model.expert_dnn.hidden_units:
        p.error(f"{which} needs expert_dnn {{ hidden_units }}.", which)


def _check_relations(towers, constraint_weight: float, p: _Problems) -> None:
    """DBMTL: relation_tower_names name other towers and form no cycle; AIT options fit."""
    by_name = {t.tower_name: t for t in towers}

    def where(child, parent):
        """(field, value, nth) of the relation_tower_names entry child -> parent."""
        before = towers[:next(i for i, t in enumerate(towers) if t is child)]
        nth = 1 + sum(parent in t.relation_tower_names for t in before)
        return "relation_tower_names", parent, nth

    edges = []
    for t in towers:
        name = t.tower_name
        for parent in t.relation_tower_names:
            if parent == name:
                p.error(f"tower {name!r} lists itself in relation_tower_names; a tower "
                        "cannot depend on itself.", *where(t, parent))
            elif parent not in by_name:
                p.error(f"tower {name!r}: relation tower {parent!r} is not a task tower; "
                        f"towers: {', '.join(by_name)}.", *where(t, parent))
            else:
                edges.append((t, by_name[parent]))
        if t.use_ait_module and t.HasField("relation_dnn"):
            p.error(f"tower {name!r}: use_ait_module and relation_dnn are exclusive (AITM "
                    "attention replaces the relation DNN); remove one.", "use_ait_module")
        if t.HasField("ait_project_dim") and not t.use_ait_module:
            p.warn(f"tower {name!r}: ait_project_dim has no effect without use_ait_module.",
                   "ait_project_dim")
        if t.use_ait_module and t.relation_tower_names and constraint_weight > 0:
            for other in [t] + [by_name[n] for n in t.relation_tower_names if n in by_name]:
                kinds = [l.loss_type for l in other.losses] or [other.loss_type]
                if other.num_class != 1 or any(k != 0 for k in kinds):
                    p.error(f"tower {name!r}: the AITM label constraint compares the "
                            f"probabilities of {name!r} and its relation towers, so "
                            f"{other.tower_name!r} must be a binary CLASSIFICATION tower; or "
                            "set dbmtl.ait_label_constraint_weight: 0.", "use_ait_module")
    # Cycles: depth-first over child -> parent edges; report each closing edge once.
    parents = {t.tower_name: [q for c, q in edges if c is t] for t in towers}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(t, path):
        state[t.tower_name] = 1
        for q in parents[t.tower_name]:
            if state.get(q.tower_name) == 1:
                start = next(i for i, x in enumerate(path) if x is q)
                cycle = [x.tower_name for x in path[start:]] + [t.tower_name, q.tower_name]
                p.error(f"tower {t.tower_name!r} lists {q.tower_name!r} in "
                        f"relation_tower_names, but {q.tower_name!r} depends on "
                        f"{t.tower_name!r}: the relations form a cycle "
                        f"({' -> '.join(cycle)}); remove one of them.", *where(t, q.tower_name))
            elif q.tower_name not in state:
                visit(q, path + [t])
        state[t.tower_name] = 2

    for t in towers:
        if t.tower_name not in state:
            visit(t, [])


def _check_metric(metric, inputs, p: _Problems) -> None:
    if metric.WhichOneof("metric") == "gauc":
        uid = metric.gauc.uid_field
        if not uid or uid not in inputs:
            p.error(f"gauc.uid_field {uid!r} must name an input field.", "uid_field")


# train_distribute values mtrec runs (NoStrategy, MirroredStrategy, CollectiveAllReduceStrategy,
# MultiWorkerMirroredStrategy), as train_pb2.DistributionStrategy numbers.
SUPPORTED_STRATEGIES = (0, 2, 3, 5)


def unsupported_strategy(name: str) -> str:
    """The error of a train_distribute mtrec does not run, listing those it does."""
    why = {"PSStrategy": " (Keras 3 has no parameter-server training and a custom loop was "
                         "seen to lose step-counter updates)",
           "ExascaleStrategy": " (a PAI-only strategy)",
           "HorovodStrategy": " (MultiWorkerMirroredStrategy gives the same collective "
                              "all-reduce without Horovod)"}.get(name, "")
    return (f"train_distribute: {name} is not supported{why}; use one of NoStrategy, "
            "MirroredStrategy (local GPUs), MultiWorkerMirroredStrategy (workers from "
            "TF_CONFIG; EasyRec's CollectiveAllReduceStrategy is the same).")


def _check_train(pipeline, p: _Problems) -> None:
    train = pipeline.train_config
    for optimizer in train.optimizer_config:
        if optimizer.WhichOneof("optimizer") is None:
            p.error("optimizer_config has no optimizer (adam_optimizer, adagrad_optimizer, "
                    "adamw_optimizer or momentum_optimizer).", "optimizer_config")
        if optimizer.use_moving_average:
            p.error("use_moving_average: true is not supported by mtrec yet; set it to false.",
                    "use_moving_average")
        lazy = optimizer.lazy_adam_optimizer
        if lazy.HasField("dense_moments") and lazy.dense_moments:
            p.error("lazy_adam_optimizer cannot have dense_moments: true (lazy is the "
                    "opposite); adam_optimizer keeps dense moments by default.", "dense_moments")
    if len(train.optimizer_config) > 2:
        p.error("train_config takes at most two optimizer_config entries (dense, embedding).",
                "optimizer_config")
    if train.HasField("sync_replicas"):
        p.warn("sync_replicas only matters for EasyRec's parameter-server jobs; ignored.",
               "sync_replicas")
    if train.train_distribute not in SUPPORTED_STRATEGIES:
        from mtrec.protos import train_pb2
        name = train_pb2.DistributionStrategy.Name(train.train_distribute)
        p.error(unsupported_strategy(name), "train_distribute")
    if train.save_checkpoints_steps == 0:
        p.error("save_checkpoints_steps must be at least 1.", "save_checkpoints_steps")
    if train.log_step_count_steps == 0:
        p.error("log_step_count_steps must be at least 1.", "log_step_count_steps")
    if train.num_steps == 0 and pipeline.data_config.num_epochs == 0:
        p.error("set train_config.num_steps or data_config.num_epochs, or training never ends.",
                "train_config")


def _check_eval(pipeline, inputs, p: _Problems) -> None:
    for metric in pipeline.eval_config.metrics_set:
        _check_metric(metric, inputs, p)
    export = pipeline.export_config
    if export.exporter_type not in ("final", "latest", "best"):
        p.error(f"export_config.exporter_type {export.exporter_type!r} is not supported; use "
                "\"final\", \"latest\" or \"best\".", "exporter_type")
    evaluates = export.exporter_type == "best" or export.enable_early_stop
    if evaluates and not pipeline.eval_input_path:
        p.error("export_config: exporter_type \"best\" and enable_early_stop evaluate during "
                "training, so they need eval_input_path.", "export_config")
    if export.enable_early_stop and export.max_check_steps <= 0:
        p.error("export_config.max_check_steps must be positive.", "max_check_steps")
    if export.early_stop_func:
        p.error("export_config.early_stop_func names code, which mtrec never runs; use "
                "enable_early_stop with best_exporter_metric and max_check_steps.",
                "early_stop_func")
