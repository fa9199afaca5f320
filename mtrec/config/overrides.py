"""Overrides: EasyRec's --edit_config_json and its short form --set path=value.

Paths are dotted field names; a repeated field takes a selector: [i], [:],
or [sub.path<op>value] with op one of = != < > <= >=.
"""
import json
import re
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import text_format

from mtrec.errors import ConfigError

_FD = pb_descriptor.FieldDescriptor

_SEGMENT = re.compile(r"^(\w+)(?:\[(.*)\])?$")
_CONDITION = re.compile(r"^(.+?)(!=|>=|<=|=|<|>)(.*)$")


def apply_overrides(pipeline, edit_config_json=None, sets=None) -> None:
    edits: dict[str, Any] = {}
    flags: dict[str, str] = {}  # path -> the flag that set it, named in its errors
    if edit_config_json:
        if isinstance(edit_config_json, str):
            try:
                edit_config_json = json.loads(edit_config_json)
            except (ValueError, RecursionError) as e:  # also beyond json's digit/depth limits
                raise ConfigError(f"--edit_config_json is not valid JSON: {e}") from None
        if not isinstance(edit_config_json, dict):
            raise ConfigError("--edit_config_json must be a JSON object of {\"path\": value}.")
        edits.update(edit_config_json)
        flags.update(dict.fromkeys(edit_config_json, "--edit_config_json"))
    for item in sets or []:
        path, value = _split_assignment(item)
        edits[path] = _parse_set_value(value)
        flags[path] = "--set"
    for path, value in edits.items():
        try:
            set_path(pipeline, path, value)
        except ConfigError as e:
            raise ConfigError(f"{flags[path]}: {e}") from None


def _split_assignment(item: str) -> tuple[str, str]:
    parts = _split_top_level(item, "=", maxsplit=1)
    if len(parts) < 2:
        raise ConfigError(f"--set {item!r}: expected path=value, e.g. data_config.batch_size=512.")
    return parts[0].strip(), parts[1].strip()


class _Raw(str):
    """A --set value as typed: converted by the target field's type (a string field keeps
    the text exactly, e.g. "1.10"; numbers, booleans and JSON lists are parsed)."""


def _parse_set_value(value: str) -> Any:
    return _Raw(value)


def _decode_raw(value):
    if isinstance(value, _Raw):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or beyond json's digit/depth limits
            return str(value)
    return value


def _short(value) -> str:
    """repr of a value for a message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-10:]} ({len(text)} characters)"


# The values each integer field type holds.
_INT_RANGES = {_FD.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1), _FD.TYPE_SINT32: (-2 ** 31, 2 ** 31 - 1),
               _FD.TYPE_SFIXED32: (-2 ** 31, 2 ** 31 - 1), _FD.TYPE_UINT32: (0, 2 ** 32 - 1),
               _FD.TYPE_FIXED32: (0, 2 ** 32 - 1), _FD.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1),
               _FD.TYPE_SINT64: (-2 ** 63, 2 ** 63 - 1),
               _FD.TYPE_SFIXED64: (-2 ** 63, 2 ** 63 - 1), _FD.TYPE_UINT64: (0, 2 ** 64 - 1),
               _FD.TYPE_FIXED64: (0, 2 ** 64 - 1)}


def _split_path(path: str) -> list[str]:
    return _split_top_level(path, ".")


def _split_top_level(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """text split at `sep` outside [...] selectors (at most maxsplit times if >= 0)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0 and maxsplit != len(parts):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
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
    except RecursionError:
        raise ConfigError(f"override {path!r}: the value nests messages too deeply to "
                          "parse.") from None


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
            raise ConfigError(f"override {path!r}: {_short(value)} is not one of {names}.")
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
        if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?\d+\s*", value):
            raise ValueError(value)
        number = int(value) if not isinstance(value, str) or len(value) < 100 else None
        if field.type in (_FD.TYPE_UINT32, _FD.TYPE_UINT64) and number is not None \
                and number < 0:
            raise ValueError(value)
        low, high = _INT_RANGES.get(field.type, (-2 ** 63, 2 ** 63 - 1))
        if number is None or not low <= number <= high:
            raise ConfigError(f"override {path!r}: {_short(value)} is out of range for "
                              f"{field.name} ({low} to {high}).")
        return number
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"override {path!r}: {_short(value)} is not a valid "
                          f"{_type_name(field)} for {field.name}.") from None


def _type_name(field) -> str:
    return {_FD.TYPE_BOOL: "bool", _FD.TYPE_FLOAT: "number", _FD.TYPE_DOUBLE: "number",
            _FD.TYPE_UINT32: "non-negative integer", _FD.TYPE_UINT64: "non-negative integer",
            _FD.TYPE_STRING: "string"}.get(field.type, "integer")

