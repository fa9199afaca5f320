"""Read EasyRec's binary Criteo files (input_type: CriteoInput) into the same batches as
CsvReader.

A part of the data is three files holding the same rows (mtrec/config/binary_input.py has
the layout): category (26 uint32 per row), dense (13 float32) and label (one int32). Each
file is read as fixed-length records (tf.data.FixedLengthRecordDataset, one row each),
the three zipped row by row, batched, and decoded per batch (tf.io.decode_raw). The
columns label, f1..f13 and c1..c26 become the input fields of the same names, typed by
their input_type with the rules of schema.py (an INT64 field of dense values takes whole
numbers only; a STRING field takes the number's text). A value its column does not
accept (a label outside its classes, a NaN, an id outside num_buckets) fails its batch,
or with ignore_error is dropped and counted; `locate_error` then names the file, row and
column. Missing files, files that are not a whole number of rows long and parts whose
files disagree on the number of rows are refused before reading, naming the file.
"""
import numpy as np
import tensorflow as tf

from mtrec.config.binary_input import COLUMNS, LAYOUT, ROW_BYTES, Part, part_rows
from mtrec.data.records import plain
from mtrec.data.schema import (as_rules, cell_problem, check_defaults, field_dtype,
                               keep_good_rows, row_rules, skip_empty_batches, typed_values,
                               value_problem)
from mtrec.errors import DataError, reason_line

# Rows per batch when locate_error scans a part.
_SCAN_BATCH = 4096
# The TF dtype each kind of file decodes to.
_DECODE = {"category": tf.int32, "dense": tf.float32, "label": tf.int32}


class CriteoBinaryReader:
    """Builds the tf.data pipeline of one split from binary Criteo parts
    (mtrec.config.binary_input.Part)."""

    def __init__(self, data_config, files: list, rules: dict | None = None):
        self.data_config = data_config
        self.files = files
        self.fields = list(data_config.input_fields)
        self.rules = as_rules(rules)  # {column: schema.ColumnRule}, as for make_reader
        named = [f for f in files if not isinstance(f, Part)]
        if named:
            raise DataError(f"{named[0]}: input_type CriteoInput reads a category, a dense "
                            "and a label file together, named by binary_train_input / "
                            "binary_eval_input; one file (e.g. mtrec predict --input) cannot "
                            "be read as CriteoInput.")
        unknown = [f.input_name for f in self.fields if f.input_name not in COLUMNS]
        if unknown:
            raise DataError(
                f"data_config: input_type CriteoInput reads the columns label, f1..f13 and "
                f"c1..c26; input_fields {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} none of them.")
        check_defaults(self.fields, self.rules)
        self.rows = []
        for part in files:
            rows, why = part_rows(part)
            if why:
                raise DataError(why)
            self.rows.append(rows)

    def num_rows(self) -> int:
        return sum(self.rows)

    # -- graph side

    @staticmethod
    def _part(category, dense, label) -> tf.data.Dataset:
        """The rows of one part: (category, dense, label) records of raw bytes."""
        return tf.data.Dataset.zip(tuple(
            tf.data.FixedLengthRecordDataset(path, ROW_BYTES[kind])
            for path, kind in ((category, "category"), (dense, "dense"), (label, "label"))))

    def decode(self, category, dense, label, rules: dict | None = None):
        """Vectors of raw records -> ({input_name: typed 1-D tensor}, per row whether its
        values are acceptable or None, {column: the raw values})."""
        rules = self.rules if rules is None else rules
        raw = {}
        for (kind, _, _, names), records in zip(LAYOUT, (category, dense, label)):
            # decode_raw has no uint32: category ids are read as int32, then reinterpreted.
            values = tf.io.decode_raw(records, _DECODE[kind], little_endian=True)  # (batch, w)
            if kind == "category":
                values = tf.bitcast(values, tf.uint32)
            raw.update({name: values[:, k] for k, name in enumerate(names)})
        columns, ok = {}, None
        for field in self.fields:
            values, good = _typed(raw[field.input_name], field, rules)  # (batch,)
            columns[field.input_name] = values
            if good is not None:
                ok = good if ok is None else ok & good
        return columns, ok, raw

    def _rows(self, shuffle: bool, seed, shard) -> tf.data.Dataset:
        """The rows of all parts; several parts read at once when shuffling (their order
        reshuffled each epoch); shard (n, i) keeps every n-th row of each part from the
        i-th."""
        parts = tf.data.Dataset.from_tensor_slices(
            tuple([getattr(p, kind) for p in self.files] for kind in ROW_BYTES))
        if shuffle and len(self.files) > 1:
            parts = parts.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)

        def one(category, dense, label):
            rows = self._part(category, dense, label)
            return rows.shard(*shard) if shard else rows

        cycle = min(len(self.files), 4) if shuffle else 1
        if cycle == 1:
            return parts.flat_map(one)
        return parts.interleave(one, cycle_length=cycle, block_length=256,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None,
                shard: tuple[int, int] | None = None,
                trailing_count: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        """Batches of {input_name: tensor}, with the arguments of CsvReader.dataset."""
        rows = self._rows(shuffle, seed, shard)
        if shuffle and shuffle_buffer_size > batch_size:
            # Permute whole blocks at once (the three records of a row together), then re-cut.
            def permute(*block):
                order = tf.random.shuffle(tf.range(tf.shape(block[0])[0]), seed=seed)
                return tuple(tf.gather(records, order) for records in block)
            rows = rows.batch(shuffle_buffer_size).map(plain(permute)).rebatch(
                batch_size, drop_remainder=drop_remainder)
        else:
            rows = rows.batch(batch_size, drop_remainder=drop_remainder)
        drop = bool(self.data_config.ignore_error)

        def typed(category, dense, label):
            columns, ok, _ = self.decode(category, dense, label)
            return keep_good_rows(columns, ok, drop, what="a binary Criteo row")

        ds = rows.map(plain(typed), num_parallel_calls=(
            self.data_config.num_parallel_calls or tf.data.AUTOTUNE))
        if drop:
            ds = skip_empty_batches(ds, trailing_count)
        return ds.repeat(num_epochs) if num_epochs != 1 else ds

    # -- Python side: the first bad row

    def locate_error(self, rules: dict | None = None) -> str | None:
        """After a failed batch: 'file: row N: column: what is wrong' of the first bad row
        (N counts rows from 1; the file is the one holding the column)."""
        rules = self.rules if rules is None else as_rules(rules)
        for part in self.files:
            done = 0
            try:
                for category, dense, label in self._part(
                        part.category, part.dense, part.label).batch(_SCAN_BATCH):
                    _, ok, raw = self.decode(category, dense, label, rules)
                    bad = np.flatnonzero(~ok.numpy()) if ok is not None else []
                    if len(bad):
                        return self._row_problem(part, done + int(bad[0]),
                                                 {k: v[int(bad[0])].numpy() for k, v in raw.items()},
                                                 rules)
                    done += int(category.shape[0])
            except tf.errors.OpError as e:
                return f"{part}: row {done + 1}: cannot be read ({reason_line(e) or e})"
        return None

    def _row_problem(self, part, index: int, values: dict, rules: dict) -> str:
        """'file: row N: column: what is wrong' of row `index` (from 0) of a part."""
        where = {name: path for (kind, _, _, names), path in
                 zip(LAYOUT, (part.category, part.dense, part.label)) for name in names}
        for field in self.fields:
            value = values[field.input_name]
            value = float(value) if value.dtype.kind == "f" else int(value)
            if field_dtype(field) == tf.string:
                problem = cell_problem(_text(value), field, rules)
            elif field_dtype(field) == tf.bool:
                problem = None
            else:
                problem = value_problem(value, field, rules)
            if problem:
                return (f"{where[field.input_name]}: row {index + 1}: column "
                        f"{field.input_name!r}: {problem}")
        return f"{part}: row {index + 1}: a value its column does not accept"


def _typed(raw: tf.Tensor, field, rules: dict):
    """A column of raw values (uint32, float32 or int32) -> (the field's typed column, per
    row whether it is accepted, or None when nothing is checked)."""
    dtype = field_dtype(field)
    missing = tf.zeros_like(raw, tf.bool)  # every row has every value
    if dtype == tf.string:
        values = (tf.strings.as_string(raw, shortest=True) if raw.dtype.is_floating
                  else tf.strings.as_string(tf.cast(raw, tf.int64)))
        return values, row_rules(field, values, missing, rules)
    if dtype == tf.bool:
        values = tf.not_equal(raw, tf.zeros_like(raw))
        return values, row_rules(field, values, missing, rules)
    values, fits = typed_values(field, tf.cast(raw, tf.float64))
    rule_ok = row_rules(field, values, missing, rules)
    return values, fits if rule_ok is None else fits & rule_ok


def _text(value) -> str:
    """A raw value as the text a STRING column holds (as tf.strings.as_string writes it)."""
    return str(np.float32(value)) if isinstance(value, float) else str(value)

