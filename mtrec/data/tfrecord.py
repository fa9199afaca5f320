"""Read TFRecord files of tf.train.Example records (EasyRec's TFRecordInput) into the same
batches as CsvReader.

Each record is one row: one feature per input field, named by its input_name, holding
one value: int64_list for INT32, INT64 and BOOL (non-zero is true), float_list for FLOAT
and DOUBLE, bytes_list for STRING (a tag or sequence cell is one "a|b|c" value). An
absent feature, or an empty list, is a missing value and takes default_val (for STRING,
also "" and "NULL", as in CSV). Records are batched, then parsed with tf.io.parse_example;
values become typed columns by the rules of schema.py. A record with a value its column
does not accept, or more than one value, fails its batch (with ignore_error it is dropped
and counted); one whose feature holds the wrong kind of list, or a damaged file, fails the
batch even with ignore_error. `locate_error` then names the file, record and feature.
BatchTFRecordReader reads EasyRec's BatchTFRecordInput: tf.train.SequenceExample records
of several rows each, typed by the same rules.
"""
import re

import tensorflow as tf

from mtrec.config.paths import compression
from mtrec.data import records
from mtrec.data.schema import (BAD_ROWS_KEY, as_rules, cell_problem, check_defaults,
                               field_dtype, keep_good_rows, row_rules, skip_empty_batches,
                               to_typed, type_name, typed_values, value_problem)
from mtrec.errors import DataError, reason_line
from mtrec.protos import data_pb2

_DC = data_pb2.DatasetConfig
# The tf.train.Feature list each field type is stored in: (its parse dtype, its name).
_KIND = {_DC.INT32: (tf.int64, "int64_list"), _DC.INT64: (tf.int64, "int64_list"),
         _DC.BOOL: (tf.int64, "int64_list"), _DC.FLOAT: (tf.float32, "float_list"),
         _DC.DOUBLE: (tf.float32, "float_list"), _DC.STRING: (tf.string, "bytes_list")}
# Records per batch when locate_error scans a file.
_SCAN_BATCH = 4096


class TFRecordReader:
    """Builds the tf.data pipeline of one split from TFRecord files."""

    def __init__(self, data_config, files: list[str], rules: dict | None = None):
        self.data_config = data_config
        self.files = files
        self.fields = list(data_config.input_fields)
        self.rules = as_rules(rules)  # {column: schema.ColumnRule}, as for make_reader
        check_defaults(self.fields, self.rules)
        self.spec = {f.input_name: tf.io.RaggedFeature(_KIND[f.input_type][0],
                                                       row_splits_dtype=tf.int64)
                     for f in self.fields}

    def _read(self, path, compression_type) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(path, compression_type=compression_type)

    def num_rows(self) -> int:
        total = 0
        for path in self.files:
            try:
                total += int(self._read(path, compression(self.data_config, path))
                             .reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
            except tf.errors.OpError as e:
                raise DataError(f"{path}: {_damaged(self.data_config, path, e)}") from None
        return total

    # -- graph side

    def decode(self, serialized: tf.Tensor, rules: dict | None = None):
        """A vector of serialized Examples -> ({input_name: typed 1-D tensor}, per record
        whether its values are acceptable)."""
        rules = self.rules if rules is None else rules
        parsed = tf.io.parse_example(serialized, self.spec)
        columns, ok = {}, None
        for field in self.fields:
            values, good = self._typed(parsed[field.input_name], field, rules)  # (batch,)
            columns[field.input_name] = values
            ok = good if ok is None else ok & good
        return columns, ok

    @staticmethod
    def _typed(ragged: tf.RaggedTensor, field, rules: dict):
        """A feature's values (batch, None) -> (the field's typed column, per record whether
        it is accepted: at most one value, fitting the dtype, meeting the column's rules)."""
        count = ragged.row_lengths()  # (batch,)
        one = count <= 1
        kind = _KIND[field.input_type][0]
        if kind == tf.string:
            first = ragged.to_tensor(default_value="", shape=[None, 1])[:, 0]
            values, good = to_typed(first, field, rules)
            return values, one if good is None else one & good
        missing = tf.equal(count, 0)
        first = ragged.to_tensor(default_value=0, shape=[None, 1])[:, 0]
        default, _ = to_typed(tf.constant([field.default_val]), field)  # (1,)
        if field_dtype(field) == tf.bool:
            values, fits = tf.not_equal(first, 0), None
        elif kind == tf.int64:
            exact = (first, tf.ones_like(missing), tf.ones_like(missing))
            values, fits = typed_values(field, tf.cast(first, tf.float64), exact)
        else:
            values, fits = typed_values(field, tf.cast(first, tf.float64))
        values = tf.where(missing, default[0], values)
        good = one if fits is None else one & (fits | missing)
        rule_ok = row_rules(field, values, missing, rules)
        return values, good if rule_ok is None else good & rule_ok

    # What a bad row is called in the batch's error; whether records hold several rows
    # (BatchTFRecordReader), so that the parsed batches are re-cut into batch_size rows.
    what = "a TFRecord record"
    several_rows = False
    rows_per_record = 1

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None,
                shard: tuple[int, int] | None = None,
                trailing_count: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        """Batches of {input_name: tensor} of batch_size rows, with the arguments of
        CsvReader.dataset (with several rows per record, shard and the shuffle buffer
        count records)."""
        n = self.rows_per_record
        items = records.read_files(self.data_config, self.files, self._read, shuffle, seed,
                                   shard)
        items = records.batch(items, max(1, batch_size // n), shuffle,
                              max(1, shuffle_buffer_size // n), seed,
                              drop_remainder and not self.several_rows)
        drop = bool(self.data_config.ignore_error)

        def typed(serialized):
            columns, ok = self.decode(serialized)
            return keep_good_rows(columns, ok, drop, what=self.what)

        ds = items.map(records.plain(typed), num_parallel_calls=(
            self.data_config.num_parallel_calls or tf.data.AUTOTUNE))
        if drop:
            ds = skip_empty_batches(ds, trailing_count)
        if self.several_rows and not (drop and trailing_count):
            ds = _recut(ds, batch_size, drop, drop_remainder)
        return ds.repeat(num_epochs) if num_epochs != 1 else ds

    # -- Python side: the first bad record

    def locate_error(self, rules: dict | None = None) -> str | None:
        """After a failed batch: 'file: record N: feature: what is wrong' of the first bad
        record (N counts records from 1), or of a damaged file."""
        rules = self.rules if rules is None else as_rules(rules)
        for path in self.files:
            kind = compression(self.data_config, path)
            done = 0
            try:
                for batch in self._read(path, kind).batch(_SCAN_BATCH):
                    for i, serialized in enumerate(batch.numpy()):
                        problem = self.record_problem(serialized, rules)
                        if problem:
                            return f"{path}: record {done + i + 1}: {problem}"
                    done += len(batch)
            except tf.errors.OpError as e:
                try:  # in the batch that failed, count the records that could be read
                    for _ in self._read(path, kind).skip(done).as_numpy_iterator():
                        done += 1
                except tf.errors.OpError:
                    pass
                return f"{path}: record {done + 1}: {_damaged(self.data_config, path, e)}"
        return None

    def record_problem(self, serialized: bytes, rules: dict) -> str | None:
        """Why a serialized record is not an acceptable row, or None."""
        try:
            example = tf.train.Example.FromString(serialized)
        except Exception:  # protobuf's DecodeError, whose module differs by implementation
            return "not a tf.train.Example"
        features = example.features.feature
        for field in self.fields:
            name = field.input_name
            problem = feature_problem(features[name] if name in features else None, field,
                                      rules, "TFRecordInput")
            if problem:
                return f"feature {name!r}: {problem}"
        return None


def feature_problem(feature, field, rules: dict, what: str) -> str | None:
    """Why one tf.train.Feature (None: absent) is not an acceptable value of field."""
    list_kind = feature.WhichOneof("kind") if feature is not None else None
    values = list(getattr(feature, list_kind).value) if list_kind else []
    wanted = _KIND[field.input_type][1]
    if not values:
        return cell_problem("", field, rules)  # missing: only a label refuses it
    if list_kind != wanted:
        return (f"holds a {list_kind}; an input field of type {type_name(field)} "
                f"is read from a {wanted}")
    if len(values) > 1:
        return (f"holds {len(values)} values; {what} reads one value per feature "
                "(write a tag or sequence as one \"a|b|c\" bytes value)")
    if list_kind == "bytes_list":
        return cell_problem(values[0].decode("utf-8", "replace"), field, rules)
    if field_dtype(field) == tf.bool:
        return None
    return value_problem(values[0], field, rules)


class BatchTFRecordReader(TFRecordReader):
    """Builds the tf.data pipeline of one split from TFRecord files of SequenceExample
    records holding several rows each (EasyRec's BatchTFRecordInput).

    A record has one feature_list per input field, named by its input_name, with one
    Feature per row (one value, in the list kinds of TFRecordInput; an empty Feature is
    a missing value). The feature_lists of a record have the same length, its number of
    rows; an absent one is missing in every row. Batches of records are parsed with
    tf.io.parse_sequence_example, their rows typed as TFRecordInput's, then re-cut into
    batches of batch_size rows (Dataset.rebatch). Shuffling and row sharding move whole
    records. A record whose feature_lists differ in length fails its batch (with
    ignore_error its rows are dropped and counted); locate_error names the record, row
    and feature ("file: record N: row K: feature ...", both counted from 1)."""

    what = "a row of a batch TFRecord record"
    several_rows = True

    def __init__(self, data_config, files: list[str], rules: dict | None = None):
        super().__init__(data_config, files, rules)
        # Rows per record as written: batch_size / n records are parsed at a time.
        self.rows_per_record = max(1, int(data_config.n_data_batch_tfrecord or 1))

    def _rows(self, serialized: tf.Tensor):
        """A vector of serialized records -> ({input_name: (rows, None) values},
        per row whether its record's feature_lists agree on the number of rows)."""
        _, lists, _ = tf.io.parse_sequence_example(serialized, sequence_features=self.spec)
        steps = {name: tf.cast(ragged.row_lengths(), tf.int64)  # (records,)
                 for name, ragged in lists.items()}
        rows = tf.reduce_max(tf.stack(list(steps.values())), axis=0)  # (records,)
        agree = tf.reduce_all(tf.stack([tf.equal(n, 0) | tf.equal(n, rows)
                                        for n in steps.values()]), axis=0)  # (records,)
        first_row = tf.cumsum(rows, exclusive=True)  # (records,) of the batch's rows
        total = tf.reduce_sum(rows)
        values = {}
        for name, ragged in lists.items():  # (records, steps, values)
            # Step k of record r is row first_row[r] + k; rows a feature_list has no step
            # for (absent, or short in a bad record) hold no value: missing.
            record = ragged.value_rowids()  # (steps,)
            step = tf.range(tf.size(record, tf.int64)) - tf.gather(ragged.row_splits, record)
            counts = tf.scatter_nd((tf.gather(first_row, record) + step)[:, None],
                                   ragged.values.row_lengths(), [total])  # (rows,)
            values[name] = tf.RaggedTensor.from_row_lengths(ragged.flat_values, counts)
        return values, tf.repeat(agree, rows)

    def decode(self, serialized: tf.Tensor, rules: dict | None = None):
        """A vector of serialized records -> ({input_name: typed 1-D tensor of their rows},
        per row whether its values are acceptable)."""
        rules = self.rules if rules is None else rules
        parsed, ok = self._rows(serialized)
        columns = {}
        for field in self.fields:
            values, good = self._typed(parsed[field.input_name], field, rules)  # (rows,)
            columns[field.input_name] = values
            ok &= good
        return columns, ok

    def num_rows(self) -> int:
        total = 0
        for path in self.files:
            try:
                for batch in self._read(path, compression(self.data_config, path)).batch(
                        _SCAN_BATCH):
                    total += int(tf.size(self._rows(batch)[1]))
            except tf.errors.OpError as e:
                raise DataError(f"{path}: {_damaged(self.data_config, path, e)}") from None
        return total

    def record_problem(self, serialized: bytes, rules: dict) -> str | None:
        """Why a serialized record does not hold acceptable rows, or None."""
        try:
            example = tf.train.SequenceExample.FromString(serialized)
        except Exception:  # protobuf's DecodeError, whose module differs by implementation
            return "not a tf.train.SequenceExample"
        lists = example.feature_lists.feature_list
        lengths = {f.input_name: len(lists[f.input_name].feature) if f.input_name in lists
                   else 0 for f in self.fields}
        rows = max(lengths.values(), default=0)
        if any(n not in (0, rows) for n in lengths.values()):
            held = ", ".join(f"{name!r} {n}" for name, n in lengths.items() if n)
            return (f"its feature_lists hold different numbers of rows ({held}); every "
                    "feature_list of a record holds one Feature per row")
        for row in range(rows):
            for field in self.fields:
                name = field.input_name
                feature = lists[name].feature[row] if lengths[name] else None
                problem = feature_problem(feature, field, rules, "BatchTFRecordInput")
                if problem:
                    return f"row {row + 1}: feature {name!r}: {problem}"
        return None


def _recut(ds: tf.data.Dataset, batch_size: int, counted: bool,
           drop_remainder: bool) -> tf.data.Dataset:
    """Batches of whole records -> batches of batch_size rows. counted (ignore_error): the
    count of dropped rows rides on the first row of its batch while the rows are re-cut,
    then is summed back per batch."""
    if not counted:
        return ds.rebatch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(records.plain(_count_per_row)).rebatch(batch_size, drop_remainder=drop_remainder)
    return ds.map(records.plain(_count_per_batch))


def _count_per_row(columns: dict) -> dict:
    """BAD_ROWS_KEY's count of a batch -> a per-row column: the count on its first row."""
    rows = tf.shape(next(v for k, v in columns.items() if k != BAD_ROWS_KEY))[0]
    first = tf.one_hot(0, rows, dtype=tf.int64)  # (rows,)
    return dict(columns, **{BAD_ROWS_KEY: first * columns[BAD_ROWS_KEY]})


def _count_per_batch(columns: dict) -> dict:
    return dict(columns, **{BAD_ROWS_KEY: tf.reduce_sum(columns[BAD_ROWS_KEY])})


def _damaged(data_config, path: str, error) -> str:
    kind = compression(data_config, path)
    # TF's message without its {{function_node ...}} prefix and [Op:...] suffix.
    reason = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "",
                    reason_line(error) or type(error).__name__)[:200]
    hint = (f" (read as {kind}: check data_compression_type)" if kind else
            " (if it is compressed, set data_compression_type: \"GZIP\" or \"ZLIB\")")
    return f"the file is damaged, truncated or not TFRecord{hint}: {reason}"
