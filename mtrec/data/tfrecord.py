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
"""
import re

import tensorflow as tf

from mtrec.config.paths import compression
from mtrec.data import records
from mtrec.data.schema import (as_rules, cell_problem, check_defaults, field_dtype,
                               keep_good_rows, row_rules, skip_empty_batches, to_typed,
                               type_name, typed_values, value_problem)
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

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None,
                shard: tuple[int, int] | None = None,
                trailing_count: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        """Batches of {input_name: tensor}, with the arguments of CsvReader.dataset."""
        items = records.read_files(self.data_config, self.files, self._read, shuffle, seed,
                                   shard)
        items = records.batch(items, batch_size, shuffle, shuffle_buffer_size, seed,
                              drop_remainder)
        drop = bool(self.data_config.ignore_error)

        def typed(serialized):
            columns, ok = self.decode(serialized)
            return keep_good_rows(columns, ok, drop, what="a TFRecord record")

        ds = items.map(typed, num_parallel_calls=(
            self.data_config.num_parallel_calls or tf.data.AUTOTUNE))
        if drop:
            ds = skip_empty_batches(ds, trailing_count)
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
            list_kind = features[name].WhichOneof("kind") if name in features else None
            values = list(getattr(features[name], list_kind).value) if list_kind else []
            wanted = _KIND[field.input_type][1]
            if not values:
                problem = cell_problem("", field, rules)  # missing: only a label refuses it
            elif list_kind != wanted:
                problem = (f"holds a {list_kind}; an input field of type {type_name(field)} "
                           f"is read from a {wanted}")
            elif len(values) > 1:
                problem = (f"holds {len(values)} values; TFRecordInput reads one value per "
                           "feature (write a tag or sequence as one \"a|b|c\" bytes value)")
            elif list_kind == "bytes_list":
                problem = cell_problem(values[0].decode("utf-8", "replace"), field, rules)
            elif field_dtype(field) == tf.bool:
                problem = None
            else:
                problem = value_problem(values[0], field, rules)
            if problem:
                return f"feature {name!r}: {problem}"
        return None


def _damaged(data_config, path: str, error) -> str:
    kind = compression(data_config, path)
    # TF's message without its {{function_node ...}} prefix and [Op:...] suffix.
    reason = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "",
                    reason_line(error) or type(error).__name__)[:200]
    hint = (f" (read as {kind}: check data_compression_type)" if kind else
            " (if it is compressed, set data_compression_type: \"GZIP\" or \"ZLIB\")")
    return f"the file is damaged, truncated or not TFRecord{hint}: {reason}"
