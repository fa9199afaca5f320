"""The columns every reader yields, and the one set of rules by which a cell becomes a
typed value: dtypes of data_config's input fields, the cells that count as missing, the
bad-row counter key, and which values a column accepts.

A numeric value is accepted when it is finite, fits the column's dtype (INT32, INT64 in
range; FLOAT not overflowing to infinity) and is whole in an integer column. Some columns
have more rules (`ColumnRule`, built once from the pipeline config by `column_rules`):
a label must not be empty unless its input field has a default_val, and a classification
label must be a class id; every id of a column that feeds an IdFeature, TagFeature or
SequenceFeature with num_buckets (identity ids: no hash_bucket_size or vocabulary) must be
an integer in [0, num_buckets); a SequenceFeature cell must not look separated by another
usual separator than its own. Empty cells are missing values, which only a label refuses.
The CSV and Parquet readers both turn values into columns with `typed_values` and
`row_rules` (TF, per batch); their locators name the first bad row with `cell_problem` /
`value_problem` / `text_problem` (Python, per value), which state the same rules.
"""
import dataclasses
import functools
import math
import re

import numpy as np
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.config.check_kd import label_shapes
from mtrec.data.records import plain
from mtrec.errors import DataError
from mtrec.protos import data_pb2, feature_pb2

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
# An integer that parses as int64 whatever its digits: at most 18 after leading zeros
# (a raw SequenceFeature's integer id token; a negative one is an out-of-range id, as the
# feature reads it).
SHORT_INTEGER = r"[-+]?0*[0-9]{1,18}"
# The whitespace tf.strings.strip removes around a cell.
WHITESPACE = " \t\n\v\f\r"
_INT_RANGE = {tf.int32: (-2**31, 2**31 - 1), tf.int64: (-2**63, 2**63 - 1)}
# An identity id as the features parse it (tf.strings.to_number to int64, after stripping
# WHITESPACE): digits with an optional "+", or a negative zero; at most 18 digits after
# leading zeros, so that parsing it cannot overflow.
ID = r"\+?0*[0-9]{1,18}|-0+"
# Separators commonly written between values (\x1d and \x1e are EasyRec's): one of them in
# a SequenceFeature cell that is not the feature's own separator means the config names
# the wrong one.
USUAL_SEPARATORS = ("|", ";", ",", "\x1d", "\x1e")
_FC = feature_pb2.FeatureConfig


@dataclasses.dataclass(frozen=True)
class ColumnRule:
    """What the cells of one column must hold beyond fitting its dtype."""
    # A label: an empty cell is an error unless its input field has a default_val.
    required: bool = False
    # A classification label's number of classes: its values must be 0..classes-1 (0: any).
    classes: int = 0
    # Identity ids: every id of a non-empty cell must be an integer in [0, num_ids) (0: no
    # check). The smallest num_buckets of the features that read the column.
    num_ids: int = 0
    # The feature whose num_buckets is num_ids (named in messages).
    id_feature: str = ""
    # A cell holds several ids split by each of these (TagFeature, SequenceFeature); empty
    # ids are dropped, as the features drop them.
    id_separators: tuple = ()
    # A TagFeature's `id:weight` separator: the id is what comes before it.
    kv_separator: str = ""
    # A SequenceFeature's separator, then its seq_multi_sep if set: a cell holding another
    # of USUAL_SEPARATORS is separated by something else than the config says.
    sequence_separators: tuple = ()
    # The SequenceFeature those separators belong to (named in messages).
    sequence_feature: str = ""
    # A raw-value SequenceFeature (sub_feature_type RawFeature) reads the column: each of
    # its tokens (split by raw_separators, empty ones dropped) must be a number ("number")
    # or, for raw integer ids (num_buckets), an integer ("integer"); "": no such feature.
    raw_tokens: str = ""
    # separator, then seq_multi_sep if set, of that feature.
    raw_separators: tuple = ()
    # That feature (named in messages).
    raw_feature: str = ""
    # A label of several values per row (data_config.label_dim > 1): a text cell holds
    # this many numbers split by label_sep (label_tokens); 0: one value per row.
    label_dim: int = 0
    # data_config.label_sep of that label.
    label_sep: str = ""

    def stray_separators(self) -> tuple:
        """The USUAL_SEPARATORS a cell of this column must not hold."""
        if not self.sequence_separators:
            return ()
        return tuple(c for c in USUAL_SEPARATORS
                     if not any(c in sep for sep in self.sequence_separators))


def column_rules(pipeline, labels: dict | None = None) -> dict:
    """{column: ColumnRule} of a pipeline config, for the readers. labels: {label column:
    number of classes, 0 for a regression label} where labels are read (training,
    evaluation), None where they are not (prediction)."""
    rules = {name: ColumnRule(required=True, classes=int(n)) for name, n in (labels or {}).items()}
    for name, (dim, sep) in label_shapes(pipeline.data_config).items():
        if name in rules:
            rules[name] = dataclasses.replace(rules[name], label_dim=dim, label_sep=sep)
    for feature in config_lib.all_features(pipeline):
        kind = feature.feature_type
        if not feature.input_names or kind not in (_FC.IdFeature, _FC.TagFeature,
                                                   _FC.SequenceFeature):
            continue
        column, name = feature.input_names[0], config_lib.feature_name(feature)
        rule = rules.get(column, ColumnRule())
        separators = ()
        if kind == _FC.TagFeature:
            separators = (feature.separator,)
        elif kind == _FC.SequenceFeature:
            # (seq_multi_sep is read defensively: older generated protos lack it)
            separators = (feature.separator, getattr(feature, "seq_multi_sep", ""))
            if not rule.sequence_separators:
                rule = dataclasses.replace(
                    rule, sequence_separators=tuple(s for s in separators if s),
                    sequence_feature=name)
        identity = (feature.num_buckets and not feature.hash_bucket_size
                    and not feature.vocab_list and not feature.vocab_file
                    and (kind != _FC.SequenceFeature or getattr(
                        feature, "sub_feature_type", _FC.IdFeature) == _FC.IdFeature))
        if identity:
            size = min(feature.num_buckets, 2**63 - 1)
            smaller = not rule.num_ids or size < rule.num_ids
            rule = dataclasses.replace(
                rule, num_ids=size if smaller else rule.num_ids,
                id_feature=name if smaller else rule.id_feature,
                id_separators=rule.id_separators + tuple(
                    s for s in separators if s and s not in rule.id_separators),
                kv_separator=rule.kv_separator or (
                    feature.kv_separator if kind == _FC.TagFeature else ""))
        if kind == _FC.SequenceFeature and not rule.raw_tokens and getattr(
                feature, "sub_feature_type", _FC.IdFeature) == _FC.RawFeature:
            rule = dataclasses.replace(
                rule, raw_tokens=_raw_token_kind(feature),
                raw_separators=tuple(s for s in separators if s), raw_feature=name)
        rules[column] = rule
    return {column: rule for column, rule in rules.items() if rule != ColumnRule()}


def label_tokens(values: tf.Tensor, sep: str) -> tf.RaggedTensor:
    """(batch,) text cells -> (batch, None) values, split as EasyRec splits a label of
    label_dim > 1 (TF's StringSplit): each character of sep splits, empty values are
    dropped, and sep "" splits into single bytes."""
    return tf.compat.v1.string_split(values, sep, result_type="RaggedTensor")


def label_matrix(values: tf.Tensor, dim: int, sep: str) -> tf.Tensor:
    """(batch,) text cells of dim numbers -> float32 (batch, dim). The readers refused
    cells of another count first (row_rules); here a short cell is padded with zeros (the
    empty dummy row of Job.build) and a long one cut."""
    tokens = tf.strings.strip(label_tokens(values, sep))
    return tf.strings.to_number(tokens.to_tensor("0", shape=[None, dim]), tf.float32)


def split_labels(side: dict, data_config) -> dict:
    """Side columns with each label of label_dim > 1 as its float32 (batch, dim) values."""
    shapes = label_shapes(data_config)
    return {name: (label_matrix(values, *shapes[name]) if name in shapes
                   and values.dtype == tf.string else values)
            for name, values in side.items()}


def _label_cell_ok(values: tf.Tensor, rule: ColumnRule) -> tf.Tensor:
    """Per text cell, whether it holds rule.label_dim numbers split by rule.label_sep, each
    finite as a float32."""
    tokens = tf.strings.strip(label_tokens(values, rule.label_sep))  # (batch, None)
    flat = tokens.flat_values
    number = tf.strings.regex_full_match(flat, NUMBER)
    finite = tf.math.is_finite(tf.strings.to_number(tf.where(number, flat, "0"), tf.float32))
    good = tf.reduce_all(tokens.with_flat_values(number & finite), axis=1)
    return good & tf.equal(tokens.row_lengths(), rule.label_dim)


def _raw_token_kind(feature) -> str:
    """"integer" for a raw SequenceFeature whose tokens are ids (num_buckets without the
    min_val/max_val scaling; mtrec.features.feature.SequenceFeature.integer_ids), else
    "number"."""
    scaled = feature.num_buckets > 1 and feature.max_val > feature.min_val
    return "integer" if feature.num_buckets > 1 and not scaled else "number"


def _rule(rules: dict | None, column: str) -> ColumnRule | None:
    """The ColumnRule of a column; a number (the older {label: classes} form) is a label's."""
    rule = (rules or {}).get(column)
    if rule is None or isinstance(rule, ColumnRule):
        return rule
    return ColumnRule(required=True, classes=int(rule))


def as_rules(rules: dict | None) -> dict:
    """{column: ColumnRule} of column_rules, or of the older {label column: classes}."""
    return {column: _rule(rules, column) for column in (rules or {})}


def field_dtype(field) -> tf.DType:
    return _DTYPES[field.input_type]


def is_numeric(field) -> bool:
    """Whether a field's cells are numbers (every input type but STRING and BOOL)."""
    return field_dtype(field) not in (tf.string, tf.bool)


def type_name(field) -> str:
    return data_pb2.DatasetConfig.FieldType.Name(field.input_type)


# ---------------------------------------------------------------------------
# The rules in the graph: a batch of values -> typed column and a per-row "accepted" mask


def typed_values(field, number: tf.Tensor, exact=None):
    """float64 numbers (int64 for an integer field: exact already) -> (values in the
    field's numeric dtype, whether each fits it).

    exact: optional (int64 values, where to take them instead of `number`, whether those
    fit int64): integers beyond 2**53 lose digits as float64, so readers parse them
    exactly. A value that does not fit becomes 0 (its row is dropped or fails)."""
    dtype = field_dtype(field)
    if number.dtype == tf.int64:  # integers parsed exactly (the CSV reader's parsed path)
        low, high = _INT_RANGE[dtype]
        fits = (number >= low) & (number <= high)
        return tf.cast(tf.where(fits, number, 0), dtype), fits
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


def row_rules(field, values: tf.Tensor, missing: tf.Tensor, rules: dict) -> tf.Tensor | None:
    """Per row, whether the value meets its column's ColumnRule (None: nothing to check):
    a label not empty unless the field has a default_val, and a class id for a
    classification label; identity ids in [0, num_ids); a SequenceFeature cell without a
    stray separator. Missing cells (which hold the default_val) are only checked as labels."""
    rule = _rule(rules, field.input_name)
    if rule is None:
        return None
    checks = []
    if rule.required and not field.HasField("default_val"):
        checks.append(~missing)
    numeric = values.dtype not in (tf.string, tf.bool)
    if rule.classes and numeric:
        value = tf.cast(values, tf.float64)
        checks.append((value >= 0) & (value < rule.classes) & tf.equal(value, tf.round(value)))
    if rule.stray_separators() and values.dtype == tf.string:
        stray = "".join(_regex_char(c) for c in rule.stray_separators())
        checks.append(missing | ~tf.strings.regex_full_match(values, f"(?s).*[{stray}].*"))
    if rule.num_ids and values.dtype == tf.string:
        checks.append(missing | _ids_in_range(values, rule))
    elif rule.num_ids and numeric:
        checks.append(missing | _numbers_in_range(values, rule.num_ids))
    if rule.raw_tokens and values.dtype == tf.string:
        checks.append(missing | _raw_tokens_ok(values, rule))
    if rule.label_dim > 1 and values.dtype == tf.string:
        checks.append(_label_cell_ok(values, rule))
    if not checks:
        return None
    ok = checks[0]
    for check in checks[1:]:
        ok &= check
    return ok


def _regex_char(char: str) -> str:
    """A character as an RE2 escape (any character, also inside [...])."""
    return f"\\x{{{ord(char):x}}}"


def _ids_in_range(values: tf.Tensor, rule: ColumnRule) -> tf.Tensor:
    """Per text cell, whether each of its ids is an integer in [0, rule.num_ids)."""
    tokens = flat = values
    if rule.id_separators:
        tokens = tf.strings.split(values, rule.id_separators[0])  # (batch, None)
        for separator in rule.id_separators[1:]:
            tokens = tf.strings.split(tokens, separator).merge_dims(1, 2)
        flat = tokens.flat_values  # (tokens,)
    key = flat
    if rule.kv_separator:  # `id:weight` -> id
        key = tf.strings.regex_replace(
            flat, "".join(_regex_char(c) for c in rule.kv_separator) + ".*$", "")
    key = tf.strings.strip(key)
    integer = tf.strings.regex_full_match(key, ID)
    number = tf.strings.to_number(tf.where(integer, key, "0"), tf.int64)
    good = integer & (number < rule.num_ids)
    if not rule.id_separators:
        return good
    good |= tf.equal(flat, "")  # an empty id between separators is dropped, as features do
    return tf.reduce_all(tokens.with_flat_values(good), axis=1)


def _raw_tokens_ok(values: tf.Tensor, rule: ColumnRule) -> tf.Tensor:
    """Per text cell, whether every token of a raw SequenceFeature parses: a number
    (NUMBER) or an integer (INTEGER), WHITESPACE around it allowed; empty tokens are
    dropped (or, between seq_multi_sep, zeros) as the feature does."""
    tokens = tf.strings.split(values, rule.raw_separators[0])  # (batch, None)
    for separator in rule.raw_separators[1:]:
        tokens = tf.strings.split(tokens, separator).merge_dims(1, 2)
    flat = tf.strings.strip(tokens.flat_values)  # (tokens,)
    pattern = SHORT_INTEGER if rule.raw_tokens == "integer" else NUMBER
    good = tf.equal(flat, "") | tf.strings.regex_full_match(flat, pattern)
    return tf.reduce_all(tokens.with_flat_values(good), axis=1)


def _numbers_in_range(values: tf.Tensor, num_ids: int) -> tf.Tensor:
    """Per number, whether it is an integer in [0, num_ids)."""
    if values.dtype.is_integer:
        value = tf.cast(values, tf.int64)
        return (value >= 0) & (value < num_ids)
    value = tf.cast(values, tf.float64)
    return (value >= 0) & (value < float(num_ids)) & tf.equal(value, tf.round(value))


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
            "accept (not a number, out of range, not finite, an empty label, a label "
            "outside its classes, an id outside num_buckets or a wrong separator)")]):
        return {k: tf.identity(v) for k, v in columns.items()}


def skip_empty_batches(ds: tf.data.Dataset, trailing_count: bool = False) -> tf.data.Dataset:
    """With ignore_error a batch whose rows were all bad is empty; a model step would
    average its loss over no rows (NaN). Drop such batches; their bad-row count moves on
    to the next batch of the epoch that has rows. The count of the epoch's last bad
    batches has no such batch: with trailing_count it comes in one last batch without
    rows (for a consumer that only counts, e.g. a data check); without, it is lost.
    Readers call it before repeating epochs: an epoch of bad rows then ends the data
    instead of repeating forever."""
    def first_column(columns):
        return next(v for k, v in columns.items() if k != BAD_ROWS_KEY)

    def carry(pending, columns):
        rows = tf.shape(first_column(columns))[0]
        end = columns[BAD_ROWS_KEY] < 0  # the marker batch appended below
        bad = pending + tf.maximum(columns[BAD_ROWS_KEY], 0)
        keep = (rows > 0) | (end & (bad > 0))
        columns = dict(columns, **{BAD_ROWS_KEY: bad})
        return tf.where(keep, tf.constant(0, tf.int64), bad), (columns, keep)

    if trailing_count:
        marker = {k: (tf.constant(-1, tf.int64) if k == BAD_ROWS_KEY else
                      tf.reshape(tf.constant([], spec.dtype), [0] + spec.shape[1:].as_list()))
                  for k, spec in ds.element_spec.items()}
        ds = ds.concatenate(tf.data.Dataset.from_tensors(marker))
    return (ds.scan(tf.constant(0, tf.int64), plain(carry))
            .filter(plain(lambda columns, keep: keep))
            .map(plain(lambda columns, keep: columns)))


def to_typed(cell: tf.Tensor, field, rules: dict | None = None, all_numbers=None):
    """String cells -> (the field's dtype, per cell whether the value is accepted or None
    when nothing is checked); empty and NULL cells take default_val. The rules are
    schema.typed_values and schema.row_rules (rules: {column: ColumnRule}).
    all_numbers: a scalar bool, True when the caller already knows every cell is a plain
    number (NUMBER; the CSV reader checks whole lines at once), which skips this column's
    own check."""
    rules = rules or {}
    dtype = field_dtype(field)
    default = field.default_val
    if dtype == tf.string:
        missing = tf.logical_or(tf.equal(cell, ""), tf.equal(cell, "NULL"))
        values = tf.where(missing, default, cell)
        return values, row_rules(field, values, missing, rules)
    if dtype == tf.bool:
        cell = tf.strings.strip(cell)
        missing = tf.logical_or(tf.equal(cell, ""), tf.equal(cell, "NULL"))
        true = tf.reduce_any(tf.equal(tf.strings.lower(cell)[:, None], ["true", "1"]), axis=1)
        values = tf.where(missing, default.lower() in ("true", "1"), true)
        return values, row_rules(field, values, missing, rules)
    values, ok, missing = _typed_numbers(cell[:, None], [field], all_numbers)
    values, ok, missing = values[:, 0], ok[:, 0], missing[:, 0]
    rule_ok = row_rules(field, values, missing, rules)
    return values, ok if rule_ok is None else ok & rule_ok


def to_typed_columns(cells: list, fields, rules: dict | None = None, all_numbers=None,
                     parsed: bool = False):
    """to_typed of a table's columns: ({input_name: values}, per row whether every value
    is accepted, or None when nothing is checked). The numeric columns of one dtype are
    parsed together, as one (batch, columns) matrix: a few ops per batch and one trace for
    all of them instead of a dozen per column (27 columns took about 3 s to trace).
    parsed: the numeric cells are numbers already, none missing, in parsed_dtype (the CSV
    reader's decode_csv, for a batch whose numeric cells are all plain numbers that parse
    so): same results, without the string matrix and its to_number."""
    rules = rules or {}
    columns, oks = {}, []
    cell_of = {field.input_name: cell for cell, field in zip(cells, fields)}
    for field in fields:
        if not is_numeric(field):
            columns[field.input_name], ok = to_typed(cell_of[field.input_name], field, rules,
                                                     all_numbers)
            oks.append(ok)
    for group in numeric_groups(fields):
        matrix = tf.stack([cell_of[field.input_name] for field in group], axis=1)
        if parsed:
            values, accepted = typed_values(group[0], matrix)
            typed = values, accepted, tf.zeros_like(accepted)  # nothing missing
        else:
            typed = _typed_numbers(matrix, group, all_numbers)
        split_matrix(group, *typed, rules, columns, oks)
    return {field.input_name: columns[field.input_name] for field in fields}, all_accepted(oks)


def parsed_dtype(field) -> tf.DType:
    """The dtype to_typed_columns(parsed=True) takes a field's cells in."""
    if not is_numeric(field):
        return tf.string
    return tf.int64 if field_dtype(field).is_integer else tf.float64


def numeric_groups(fields) -> list[list]:
    """The numeric fields, grouped by dtype: each group is parsed as one matrix."""
    groups = {}
    for field in fields:
        if is_numeric(field):
            groups.setdefault(field_dtype(field), []).append(field)
    return list(groups.values())


def split_matrix(fields, values, accepted, missing, rules: dict, columns: dict,
                 oks: list) -> None:
    """Add the (batch, k) matrices of k fields of one dtype to columns ({input_name:
    values}) and their per-row checks to oks: whether the row's values are accepted, and
    each column's row_rules."""
    oks.append(tf.reduce_all(accepted, axis=1))
    for j, field in enumerate(fields):
        columns[field.input_name] = values[:, j]
        oks.append(row_rules(field, values[:, j], missing[:, j], rules))


def all_accepted(oks: list):
    """Per row, whether every check in oks holds (None entries check nothing); None when
    nothing is checked."""
    checked = [ok for ok in oks if ok is not None]
    return functools.reduce(tf.logical_and, checked) if checked else None


def _typed_numbers(cells: tf.Tensor, fields, all_numbers=None):
    """(batch, k) string cells of k numeric fields of one dtype -> (values in that dtype,
    whether each is accepted, whether each was missing), all (batch, k); a missing cell
    takes its field's default_val. all_numbers as in to_typed."""
    def as_is():
        # Every cell is a number already (nothing blank, NULL or padded with whitespace):
        # the usual batch skips the strip and the string copies below.
        every = tf.fill(tf.shape(cells), True)
        return cells, every, tf.logical_not(every)

    def cleaned():
        stripped = tf.strings.strip(cells)
        missing = tf.logical_or(tf.equal(stripped, ""), tf.equal(stripped, "NULL"))
        defaults = [field.default_val.strip(WHITESPACE) or "0" for field in fields]
        filled = tf.where(missing, tf.constant(defaults), stripped)  # (k,) broadcasts
        # Cells that are not numbers (also nan, inf, 0x10) parse as 0 and are not accepted.
        number_ok = tf.strings.regex_full_match(filled, NUMBER)
        return tf.where(number_ok, filled, "0"), number_ok, missing

    def checked():
        numeric = tf.strings.regex_full_match(cells, NUMBER)
        return tf.cond(tf.reduce_all(numeric), as_is, cleaned)

    filled, number_ok, missing = (checked() if all_numbers is None
                                  else tf.cond(all_numbers, as_is, checked))
    number = tf.strings.to_number(filled, tf.float64)
    exact = _exact_int64(filled, number) if field_dtype(fields[0]) == tf.int64 else None
    values, fits = typed_values(fields[0], number, exact)
    return values, fits & number_ok, missing


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


def cell_problem(cell: str, field, rules: dict | None = None) -> str | None:
    """Why a CSV cell is not accepted in its column, or None (rules: {column: ColumnRule}).
    A numeric or BOOL cell is stripped of WHITESPACE first; a text cell is taken as it is,
    as in the graph."""
    dtype = field_dtype(field)
    if dtype != tf.string:
        cell = cell.strip(WHITESPACE)
    if cell in MISSING_VALUES:
        rule = _rule(rules, field.input_name)
        if rule is not None and rule.required and not field.HasField("default_val"):
            return empty_label_problem(field)
        return None  # the default_val, which the readers check before reading
    if dtype == tf.string:
        return text_problem(cell, field, rules)
    if dtype == tf.bool:
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
    return value_problem(value, field, rules, cell)


def text_problem(text: str, field, rules: dict | None = None) -> str | None:
    """Why a text value that is not missing is not accepted in its column, or None: a stray
    separator in a SequenceFeature cell, or an identity id outside [0, num_buckets)."""
    rule = _rule(rules, field.input_name)
    if rule is None:
        return None
    if isinstance(text, bytes):  # (the Parquet reader hands text columns over as bytes)
        text = text.decode("utf-8", "replace")
    if rule.label_dim > 1:
        return label_cell_problem(text, field, rule)
    stray = [c for c in rule.stray_separators() if c in text]
    if stray:
        found = min(stray, key=text.index)
        said = f"separator: {_quoted(rule.sequence_separators[0])}" + (
            f" seq_multi_sep: {_quoted(rule.sequence_separators[1])}"
            if len(rule.sequence_separators) > 1 else "")
        return (f"{text!r} looks separated by {_quoted(found)} but the config says {said} "
                f"(feature {rule.sequence_feature!r})")
    if rule.raw_tokens:
        problem = _raw_token_problem(text, rule)
        if problem:
            return problem
    if not rule.num_ids:
        return None
    tokens = [text]
    for separator in rule.id_separators:
        tokens = [part for token in tokens for part in token.split(separator)]
    for token in tokens:
        if rule.id_separators and token == "":
            continue  # dropped by the features
        key = token.split(rule.kv_separator, 1)[0] if rule.kv_separator else token
        problem = _id_problem(key, rule, text if rule.id_separators else None)
        if problem:
            return problem
    return None


def label_cell_problem(text: str, field, rule: ColumnRule) -> str | None:
    """Why a cell of a label of label_dim > 1 is not label_dim numbers split by label_sep,
    or None; the same rule as _label_cell_ok."""
    sep = rule.label_sep
    # TF's StringSplit: each character of sep splits, "" splits into single bytes.
    tokens = (list(text) if not sep else
              re.split("[" + re.escape(sep) + "]", text))
    tokens = [t for t in tokens if t != ""]
    split = f"label_sep {_quoted(sep)}" + (" (single characters)" if not sep else "")
    if len(tokens) != rule.label_dim:
        return (f"label {field.input_name!r} has {len(tokens)} value(s) in {text!r} split "
                f"by {split}; data_config.label_dim says {rule.label_dim}")
    for token in tokens:
        value = token.strip(WHITESPACE)
        if not re.fullmatch(NUMBER, value):
            return f"value {token!r} of label {field.input_name!r} in {text!r} is not a number"
        with np.errstate(over="ignore"):
            if not np.isfinite(np.float32(float(value))):
                return (f"value {token!r} of label {field.input_name!r} in {text!r} is out of "
                        "range for a float32")
    return None


def _raw_token_problem(text: str, rule: ColumnRule) -> str | None:
    """Why a raw SequenceFeature cell has a token that is not a number (or not an integer
    for raw ids), or None; the same rule as _raw_tokens_ok."""
    tokens = [text]
    for separator in rule.raw_separators:
        tokens = [part for token in tokens for part in token.split(separator)]
    pattern = SHORT_INTEGER if rule.raw_tokens == "integer" else NUMBER
    for token in tokens:
        key = token.strip(WHITESPACE)
        if key and not re.fullmatch(pattern, key):
            what = "an integer" if rule.raw_tokens == "integer" else "a number"
            return (f"token {token!r} in {text!r} is not {what}: feature "
                    f"{rule.raw_feature!r} is a SequenceFeature of raw values "
                    f"(sub_feature_type: RawFeature)")
    return None


def _quoted(separator: str) -> str:
    """A separator as a config writes it: "|", "\\x1d"."""
    return '"' + separator.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _id_problem(value, rule: ColumnRule, cell: str | None = None, shown=None) -> str | None:
    """Why an id (text as the features parse it, or a number) is not an integer in
    [0, rule.num_ids), or None. cell: the cell it is one of; shown: how to show it."""
    size = rule.num_ids
    if isinstance(value, str):
        key = value.strip(WHITESPACE)
        if re.fullmatch(ID, key) and int(key) < size:
            return None
        integer = re.fullmatch(INTEGER, key) is not None
    else:
        integer = value == int(value)
        if integer and 0 <= value < size:
            return None
    where = f" in {cell!r}" if cell is not None else ""
    what = "is out of range" if integer else "is not an integer id"
    return (f"id {shown or repr(value)}{where} {what}: feature {rule.id_feature!r} has "
            f"num_buckets: {size} (ids 0..{size - 1})")


def value_problem(value, field, rules: dict | None = None, text: str | None = None) -> str | None:
    """Why a number (int, or float) that is not missing is not accepted in its column, or
    None (rules: {column: ColumnRule})."""
    dtype = field_dtype(field)
    shown = repr(text if text is not None else str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return f"{shown} is not a finite number"
    if dtype.is_integer:
        if value != int(value):
            return f"{shown} is not an integer"
        low, high = _INT_RANGE[dtype]
        if not low <= int(value) <= high:
            return f"{shown} is out of range for {type_name(field)} ({low}..{high})"
    elif dtype == tf.float32:
        with np.errstate(over="ignore"):
            if not np.isfinite(np.float32(value)):
                return f"{shown} is out of range for FLOAT (largest magnitude 3.4e38)"
    rule = _rule(rules, field.input_name)
    problem = None
    if rule is not None and rule.classes:
        problem = label_problem(float(value), rule.classes)
    if rule is not None and rule.num_ids and problem is None:
        problem = _id_problem(value, rule, shown=shown)
    return problem


def default_problem(field, rules: dict | None = None) -> str | None:
    """Why a field's default_val cannot fill its empty cells, or None. Only the label rules
    apply: an empty cell is a missing value whatever default fills it."""
    rule = _rule(rules, field.input_name)
    if field.default_val and rule is not None and rule.label_dim > 1:
        problem = label_cell_problem(field.default_val, field, rule)
        return (f"input_fields {field.input_name!r}: default_val {field.default_val!r} "
                f"cannot fill its empty cells: {problem}") if problem else None
    if not field.default_val or not is_numeric(field):
        return None
    labels = {field.input_name: ColumnRule(required=rule.required, classes=rule.classes)
              } if rule is not None else {}
    problem = cell_problem(field.default_val.strip(WHITESPACE), field, labels)
    if problem:
        return (f"input_fields {field.input_name!r}: default_val {field.default_val!r} "
                f"cannot fill its empty cells: {problem}")
    return None


def check_defaults(fields, rules: dict) -> None:
    """Every default_val must be a value its column accepts."""
    for field in fields:
        problem = default_problem(field, rules)
        if problem:
            raise DataError(f"data_config: {problem}.")
