"""The columns every reader yields, and the one set of rules by which a cell becomes a
typed value: dtypes of data_config's input fields, the cells that count as missing, the
bad-row counter key, and which values a column accepts.

A numeric value is accepted when it is finite, fits the column's dtype (INT32, INT64 in
range; FLOAT not overflowing to infinity) and is whole in an integer column. A label
column (`labels`: {column: number of classes, 0 for a regression label}) must not be
empty unless its input field has a default_val, and a classification label must be a
class id. The CSV and Parquet readers both turn values into columns with `typed_values`
and `row_rules` (TF, per batch); their locators name the first bad row with
`cell_problem` / `value_problem` (Python, per value), which state the same rules.
"""
import math
import re

import numpy as np
import tensorflow as tf

from mtrec.errors import DataError
from mtrec.protos import data_pb2

_DTYPES = {
    data_pb2.DatasetConfig.INT32: tf.int32,
    data_pb2.DatasetConfig.INT64: tf.int64,
    data_pb2.DatasetConfig.STRING: tf.string,
    data_pb2.DatasetConfig.FLOAT: tf.float32,
    data_pb2.DatasetConfig.DOUBLE: tf.float64,
    data_pb2.DatasetConfig.BOOL: tf.bool,
}
MISSING_VALUES = ("", "NULL")
# With ignore_error, each batch also carries the number of rows it dropped under this key.
BAD_ROWS_KEY = "__bad_rows__"
# The numbers a numeric cell may hold (RE2 in the graph and Python's re agree on it):
# decimal, optionally with an exponent; not nan, inf or hexadecimal.
NUMBER = r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
INTEGER = r"[-+]?[0-9]+"
# The whitespace tf.strings.strip removes around a cell.
WHITESPACE = " \t\n\v\f\r"
_INT_RANGE = {tf.int32: (-2**31, 2**31 - 1), tf.int64: (-2**63, 2**63 - 1)}


def field_dtype(field) -> tf.DType:
    return _DTYPES[field.input_type]


def type_name(field) -> str:
    return data_pb2.DatasetConfig.FieldType.Name(field.input_type)


# ---------------------------------------------------------------------------
# The rules in the graph: a batch of values -> typed column and a per-row "accepted" mask


def typed_values(field, number: tf.Tensor, exact=None):
    """float64 numbers -> (values in the field's numeric dtype, whether each fits it).

    exact: optional (int64 values, where to take them instead of `number`, whether those
    fit int64): integers beyond 2**53 lose digits as float64, so readers parse them
    exactly. A value that does not fit becomes 0 (its row is dropped or fails)."""
    dtype = field_dtype(field)
    if dtype.is_floating:
        values = tf.cast(number, dtype)  # FLOAT beyond 3.4e38 becomes inf: not finite
        fits = tf.math.is_finite(values)
        return tf.where(fits, values, tf.zeros_like(values)), fits
    low, high = _INT_RANGE[dtype]
    # Both bounds as float64 are exact (-2**k and 2**k).
    fits = (tf.math.is_finite(number) & tf.equal(number, tf.round(number))
            & (number >= float(low)) & (number < float(high) + 1.0))
    values = tf.cast(tf.where(fits, number, 0.0), tf.int64)
    if exact is not None:
        exact_values, use, exact_fits = exact
        exact_fits = exact_fits & (exact_values >= low) & (exact_values <= high)
        values = tf.where(use, tf.where(exact_fits, exact_values, 0), values)
        fits = tf.where(use, exact_fits, fits)
    return tf.cast(values, dtype), fits


def row_rules(field, values: tf.Tensor, missing: tf.Tensor, labels: dict) -> tf.Tensor | None:
    """Per row, whether a label column's value is acceptable (None: not a label): not
    empty unless the field has a default_val, and a class id for a classification label."""
    if field.input_name not in labels:
        return None
    ok = tf.ones_like(missing) if field.HasField("default_val") else ~missing
    num_classes = labels[field.input_name]
    if num_classes and values.dtype not in (tf.string, tf.bool):
        value = tf.cast(values, tf.float64)
        ok &= (value >= 0) & (value < num_classes) & tf.equal(value, tf.round(value))
    return ok


def keep_good_rows(columns: dict, ok, drop: bool, dropped_before=None, what="a row") -> dict:
    """Rows whose `ok` is False: dropped and counted under BAD_ROWS_KEY (drop, that is
    ignore_error), or the batch fails so that the reader's locator can name the row."""
    dropped_before = (tf.constant(0, tf.int64) if dropped_before is None
                      else tf.cast(dropped_before, tf.int64))
    if ok is None:
        if drop:
            columns[BAD_ROWS_KEY] = dropped_before
        return columns
    if drop:
        columns = {k: tf.boolean_mask(v, ok) for k, v in columns.items()}
        columns[BAD_ROWS_KEY] = dropped_before + tf.reduce_sum(tf.cast(~ok, tf.int64))
        return columns
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.reduce_all(ok), True, message=f"{what} with a value its column does not "
            "accept (not a number, out of range, not finite, an empty label or a label "
            "outside its classes)")]):
        return {k: tf.identity(v) for k, v in columns.items()}


def skip_empty_batches(ds: tf.data.Dataset) -> tf.data.Dataset:
    """With ignore_error a batch whose rows were all bad is empty; a model step would
    average its loss over no rows (NaN). Drop such batches; their bad-row count moves on
    to the next batch of the epoch that has rows (after the epoch's last one, it is lost).
    Readers call it before repeating epochs: an epoch of bad rows then ends the data
    instead of repeating forever."""
    def carry(pending, columns):
        rows = tf.shape(next(v for k, v in columns.items() if k != BAD_ROWS_KEY))[0]
        bad = pending + columns[BAD_ROWS_KEY]
        columns = dict(columns, **{BAD_ROWS_KEY: bad})
        return tf.where(rows > 0, tf.constant(0, tf.int64), bad), (columns, rows > 0)

    return (ds.scan(tf.constant(0, tf.int64), carry)
            .filter(lambda columns, has_rows: has_rows)
            .map(lambda columns, has_rows: columns))


def to_typed(cell: tf.Tensor, field, labels: dict | None = None):
    """String cells -> (the field's dtype, per cell whether the value is accepted or None
    when nothing is checked); empty and NULL cells take default_val. The rules are
    schema.typed_values and schema.row_rules."""
    labels = labels or {}
    dtype = field_dtype(field)
    default = field.default_val
    if dtype == tf.string:
        missing = tf.logical_or(tf.equal(cell, ""), tf.equal(cell, "NULL"))
        values = tf.where(missing, default, cell)
        return values, row_rules(field, values, missing, labels)
    cell = tf.strings.strip(cell)
    missing = tf.logical_or(tf.equal(cell, ""), tf.equal(cell, "NULL"))
    if dtype == tf.bool:
        true = tf.reduce_any(tf.equal(tf.strings.lower(cell)[:, None], ["true", "1"]), axis=1)
        values = tf.where(missing, default.lower() in ("true", "1"), true)
        return values, row_rules(field, values, missing, labels)
    filled = tf.where(missing, default.strip(WHITESPACE) or "0", cell)
    # Cells that are not numbers (also nan, inf, 0x10) parse as 0 and are not accepted.
    number_ok = tf.strings.regex_full_match(filled, NUMBER)
    filled = tf.where(number_ok, filled, "0")
    number = tf.strings.to_number(filled, tf.float64)
    exact = _exact_int64(filled, number) if dtype == tf.int64 else None
    values, ok = typed_values(field, number, exact)
    ok &= number_ok
    label_ok = row_rules(field, values, missing, labels)
    return values, ok if label_ok is None else ok & label_ok


def _exact_int64(cells: tf.Tensor, number: tf.Tensor):
    """Integers beyond 2**53 written without a fraction, parsed exactly (float64 drops
    their last digits): (values, where to use them, whether they fit int64). Computed
    only for batches that hold such a value."""
    big = tf.abs(number) >= 2.0**53

    def exact():
        plain = big & tf.strings.regex_full_match(cells, INTEGER)
        digits = tf.strings.regex_replace(cells, r"^[-+]?0*", "")
        length = tf.strings.length(digits)
        # 19 digits fit when they are at most 9223372036854775807 (...808 if negative).
        nineteen = plain & tf.equal(length, 19)
        head = tf.strings.to_number(tf.where(nineteen, tf.strings.substr(digits, 0, 18), "0"),
                                    tf.int64)
        last_digit = tf.strings.substr(digits, tf.maximum(length - 1, 0), tf.ones_like(length))
        last = tf.strings.to_number(tf.where(nineteen, last_digit, "0"), tf.int64)
        negative = tf.equal(tf.strings.substr(cells, 0, 1), "-")
        top = 922337203685477580
        fits = (length < 19) | (nineteen & ((head < top) | (
            tf.equal(head, top) & (last <= 7 + tf.cast(negative, tf.int64)))))
        values = tf.strings.to_number(tf.where(plain & fits, cells, "0"), tf.int64)
        return values, plain, fits

    def none():
        return tf.zeros_like(number, tf.int64), tf.zeros_like(big), tf.ones_like(big)

    return tf.cond(tf.reduce_any(big), exact, none)


# ---------------------------------------------------------------------------
# The same rules in Python, per value: what the locators report


def label_problem(value: float, num_classes: int) -> str | None:
    """Why a classification label value is invalid (None if it is a class id)."""
    if value == int(value) and 0 <= value < num_classes:
        return None
    allowed = "0 or 1" if num_classes == 2 else f"an integer in [0, {num_classes - 1}]"
    return f"label {value:g} is not a class: the tower expects {allowed}"


def empty_label_problem(field) -> str:
    return (f"the label is empty; fix the row, or give the label a default with "
            f"input_fields {{ input_name: {field.input_name!r} default_val: \"...\" }}")


def cell_problem(cell: str, field, labels: dict | None = None) -> str | None:
    """Why a CSV cell (already stripped) is not accepted in its column, or None."""
    labels = labels or {}
    dtype = field_dtype(field)
    if cell in MISSING_VALUES:
        if field.input_name in labels and not field.HasField("default_val"):
            return empty_label_problem(field)
        return None  # the default_val, which the readers check before reading
    if dtype in (tf.string, tf.bool):
        return None
    if not re.fullmatch(NUMBER, cell):
        try:
            value = float(cell)
        except ValueError:
            return f"{cell!r} is not a number"
        if not math.isfinite(value):
            return f"{cell!r} is not a finite number"
        return f"{cell!r} is not a number"
    value = int(cell) if re.fullmatch(INTEGER, cell) else float(cell)
    return value_problem(value, field, labels, cell)


def value_problem(value, field, labels: dict | None = None, text: str | None = None) -> str | None:
    """Why a number (int, or float) is not accepted in its column, or None."""
    labels = labels or {}
    dtype = field_dtype(field)
    text = repr(text if text is not None else str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return f"{text} is not a finite number"
    if dtype.is_integer:
        if value != int(value):
            return f"{text} is not an integer"
        low, high = _INT_RANGE[dtype]
        if not low <= int(value) <= high:
            return f"{text} is out of range for {type_name(field)} ({low}..{high})"
    elif dtype == tf.float32:
        with np.errstate(over="ignore"):
            if not np.isfinite(np.float32(value)):
                return f"{text} is out of range for FLOAT (largest magnitude 3.4e38)"
    num_classes = labels.get(field.input_name)
    if num_classes:
        return label_problem(float(value), num_classes)
    return None


def default_problem(field, labels: dict | None = None) -> str | None:
    """Why a field's default_val cannot fill its empty cells, or None."""
    if not field.default_val or field_dtype(field) in (tf.string, tf.bool):
        return None
    problem = cell_problem(field.default_val.strip(WHITESPACE), field, labels)
    if problem:
        return (f"input_fields {field.input_name!r}: default_val {field.default_val!r} "
                f"cannot fill its empty cells: {problem}")
    return None


def check_defaults(fields, labels: dict) -> None:
    """Every default_val must be a value its column accepts."""
    for field in fields:
        problem = default_problem(field, labels)
        if problem:
            raise DataError(f"data_config: {problem}.")
