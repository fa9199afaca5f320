"""Where a config came from, and the problems found in it, each named by file:line."""
import dataclasses
import functools
import math
import re
import struct

from mtrec.errors import ConfigError

# Errors printed in full; the rest are counted (a wrong input_fields can fail every feature).
MAX_LISTED_PROBLEMS = 50

# `name:` or `name {` in a line of text format; a field name is an identifier.
_FIELD = re.compile(r"\b([A-Za-z_]\w*)\s*(:|\{)")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# One value after `name:`: a list, a quoted string, or a bare token.
_VALUE = re.compile(r"""\s*(\[[^\]]*\]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,\]\}#;]+)""")


def _tokens(value_text: str) -> list[str]:
    """The values of `name: value` (each item of `name: [a, b]`), without quotes."""
    if value_text.startswith("["):
        items = [item.strip() for item in value_text[1:-1].split(",")]
    else:
        items = [value_text]
    return [item[1:-1] if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\""
            else item for item in items if item]


def _as_float(text: str):
    """A text-format number (`1.5`, `1.5f`, `inf`, `-nan`) as a float; None if it is not one."""
    try:
        return float(text) if text.lower().lstrip("-+") in ("inf", "infinity", "nan") \
            else float(text.rstrip("fF"))
    except ValueError:
        return None


def _as_float32(text: str):
    """A text-format number as the float32 a float field holds (None if not a number)."""
    number = _as_float(text)
    if number is None:
        return None
    try:
        return struct.unpack("f", struct.pack("f", number))[0]
    except OverflowError:
        return math.copysign(math.inf, number)


def _same_number(a, b) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


@dataclasses.dataclass
class Source:
    """Where a config came from, to point errors at a line."""
    path: str
    text: str

    @functools.cached_property
    def _code_lines(self) -> list[str]:
        """The text's lines without their `#` comments, split once for every lookup."""
        return [line.split("#", 1)[0] for line in self.text.splitlines()]

    @functools.cached_property
    def _index(self) -> tuple[dict, dict]:
        """({field: [line numbers it is on]}, {field: [(line, value token)]}), built in one
        pass over the text so that each lookup is a dictionary read, not a scan (a config
        with thousands of problems is reported in linear time)."""
        lines: dict[str, list[int]] = {}
        values: dict[str, list[tuple[int, str]]] = {}
        for number, code in enumerate(self._code_lines, start=1):
            for match in _FIELD.finditer(code):
                field = match.group(1)
                on = lines.setdefault(field, [])
                if not on or on[-1] != number:
                    on.append(number)
                if match.group(2) == ":":
                    value = _VALUE.match(code, match.end())
                    if value:
                        values.setdefault(field, []).extend(
                            (number, token) for token in _tokens(value.group(1)))
        return lines, values

    @functools.cached_property
    def _value_lines(self) -> dict:
        """{(field, value token): [line numbers]}, each line once."""
        index: dict[tuple, list[int]] = {}
        for field, pairs in self._index[1].items():
            for number, token in pairs:
                on = index.setdefault((field, token), [])
                if not on or on[-1] != number:
                    on.append(number)
        return index

    def where(self, field: str, value=None, nth: int = 1) -> str:
        """'file:line' of the nth line with `field` (with `value`, if given: a string is
        matched as written, a float as the number a float field holds) in the text."""
        if not _IDENTIFIER.fullmatch(field):
            return self.path
        if value is None:
            numbers = self._index[0].get(field, [])
        elif isinstance(value, float):
            numbers = []
            for number, token in self._index[1].get(field, []):
                if (_same_number(_as_float32(token), value) or _same_number(
                        _as_float(token), value)) and number not in numbers[-1:]:
                    numbers.append(number)
        else:
            numbers = self._value_lines.get((field, str(value)), [])
        if 0 < nth <= len(numbers):
            return f"{self.path}:{numbers[nth - 1]}"
        return self.path


class Problems:
    """The errors and warnings of one validation, each prefixed with where it is."""

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

    def raise_errors(self) -> None:
        """ConfigError listing the errors (the first MAX_LISTED_PROBLEMS), if there are any."""
        if not self.errors:
            return
        count = f"{len(self.errors)} problems" if len(self.errors) > 1 else "1 problem"
        listed = self.errors[:MAX_LISTED_PROBLEMS]
        rest = len(self.errors) - len(listed)
        if rest:
            listed.append(f"... and {rest} more.")
        raise ConfigError(f"{self.source.path}: {count}:\n  " + "\n  ".join(listed))
