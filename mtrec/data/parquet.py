"""Read Parquet files (the `parquet` extra: pyarrow) into the same batches as CsvReader.

Files are streamed in record batches of about shuffle_buffer_size rows, so memory does
not grow with file size; nulls take the field's default_val. Values become typed columns
by the rules of schema.py, like CSV cells: a value its column does not accept (out of
range, not finite, an empty label, an id outside num_buckets, ...) fails the batch, or
with ignore_error its row is dropped and counted; `locate_error` then names the file, row
and column.
"""
import ctypes

import numpy as np
import tensorflow as tf

from mtrec.data.records import plain
from mtrec.data.schema import (all_accepted, as_rules, cell_problem, check_defaults,
                               field_dtype, is_numeric, keep_good_rows, numeric_groups, row_rules,
                               skip_empty_batches, split_matrix, text_problem,
                               to_typed_columns, type_name, typed_values, value_problem)
from mtrec.errors import DataError, MtrecError
from mtrec.protos import data_pb2

_INT64_MAX = np.iinfo(np.int64).max
_M_TOP_PAD = -2  # glibc mallopt: free bytes a heap keeps when it shrinks


def block_rows(batch_size: int, shuffle_buffer_size: int) -> int:
    """Rows per record block read at once: at least a batch and the shuffle buffer, and
    16384 so that Python's cost is per block, not per row."""
    return max(batch_size, shuffle_buffer_size, 16384)


def keep_freed_heap(data_config) -> None:
    """Let glibc keep the freed memory of a few record blocks instead of giving it back to
    the OS. Each block's numpy arrays are freed once it is batched; by default glibc then
    returned those pages, and the next block and the training step's tensors faulted them
    in again: 20,000 page faults and ~45 ms of system CPU per ESMM training step, 1.7x its
    time (docs/benchmarks.md, "Parquet's page faults"). Call it before TensorFlow starts
    its threads (before the model is built): set later, glibc's setting had no effect.
    Elsewhere than glibc nothing changes."""
    if data_config.input_type != data_pb2.DatasetConfig.ParquetInput:
        return
    # ~64 bytes a cell: a block's arrays and their shuffled copies; 64 MiB to 1 GiB.
    block = block_rows(data_config.batch_size,
                       data_config.shuffle_buffer_size if data_config.shuffle else 0)
    pad = min(max(64 << 20, block * len(data_config.input_fields) * 64), 1 << 30)
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_TOP_PAD, ctypes.c_int(pad))
    except (OSError, AttributeError):  # not glibc
        pass


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MtrecError("ParquetInput needs pyarrow: pip install 'mtrec[parquet]'.") from None
    return pa, pq


def _is_text(arrow_type) -> bool:
    pa, _ = _pyarrow()
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _accepts(field, arrow_type) -> bool:
    """Whether a Parquet column of arrow_type can feed the field: anything a string column;
    numbers (or text, parsed like CSV cells) a numeric or BOOL column."""
    pa, _ = _pyarrow()
    dtype = field_dtype(field)
    if dtype == tf.string or pa.types.is_null(arrow_type) or _is_text(arrow_type):
        return True
    if dtype == tf.bool:
        return pa.types.is_boolean(arrow_type) or pa.types.is_integer(arrow_type)
    return (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
            or pa.types.is_decimal(arrow_type))


def _default_number(field):
    """(float, int or None when not written as an integer) of the field's default_val,
    which the reader has checked."""
    text = field.default_val.strip() or "0"
    try:
        return float(int(text)), int(text)
    except ValueError:
        return float(text), None


class ParquetReader:
    """Builds the tf.data pipeline of one split from Parquet files."""

    def __init__(self, data_config, files: list[str], rules: dict | None = None):
        _, pq = _pyarrow()
        self.data_config = data_config
        self.files = files
        self.fields = list(data_config.input_fields)
        self.rules = as_rules(rules)  # {column: schema.ColumnRule}, as for make_reader
        check_defaults(self.fields, self.rules)
        # Numeric or BOOL fields stored as text in some file: parsed like CSV cells.
        self.text_fields = set()
        for path in files:
            try:
                schema = pq.ParquetFile(path).schema_arrow
            except Exception as e:  # pyarrow raises several types for a bad file
                raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
            missing = [f.input_name for f in self.fields if f.input_name not in schema.names]
            if missing:
                raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; "
                                f"it has: {', '.join(schema.names)}.")
            for field in self.fields:
                arrow_type = schema.field(field.input_name).type
                if not _accepts(field, arrow_type):
                    raise DataError(f"{path}: column {field.input_name!r} holds {arrow_type} "
                                    f"values; its input field is {type_name(field)}.")
                if _is_text(arrow_type) and field_dtype(field) != tf.string:
                    self.text_fields.add(field.input_name)

    def num_rows(self) -> int:
        _, pq = _pyarrow()
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.files)

    # -- Python side: the raw values of a record batch, and the first bad row

    def _raw(self, array, field) -> dict:
        """A pyarrow array -> numpy arrays the graph turns into the typed column: numbers
        as float64, integers also exactly (int64), and which values are null."""
        dtype = field_dtype(field)
        missing = array.is_null().to_numpy(zero_copy_only=False)
        if field.input_name in self.text_fields:
            text = array.cast("string").fill_null("").to_numpy(zero_copy_only=False)
            try:  # bytes reach the graph ~4x faster than Python strings
                text = text.astype("S")
            except UnicodeEncodeError:
                pass
            return {"text": text}
        if dtype == tf.string:
            import pyarrow.compute as pc
            values = array.cast("string")
            # Null and "NULL" are missing; in Arrow's kernels, not a Python loop per value
            # (input CPU per batch of 2,048 rows, 20 id columns: 14.5 -> 10.3 ms).
            missing = pc.fill_null(pc.equal(values, "NULL"), True).to_numpy(
                zero_copy_only=False)
            text = values.fill_null("").to_numpy(zero_copy_only=False)
            try:  # bytes reach the graph ~4x faster than Python strings
                text = text.astype("S")
            except UnicodeEncodeError:
                pass
            return {"value": text, "missing": missing}
        if dtype == tf.bool:
            values = array.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
            return {"value": values, "missing": missing}
        pa, _ = _pyarrow()
        n = len(array)
        default_float, default_int = _default_number(field)
        # Null cells take the default (exactly, when it is an integer).
        floats = np.full(n, default_float, np.float64)
        exact = np.full(n, default_int or 0, np.int64)
        use_exact = missing & (default_int is not None)
        if pa.types.is_integer(array.type):
            ints = array.fill_null(0).to_numpy(zero_copy_only=False)
            # uint64 above int64's range stays a float: out of range for every dtype.
            fits = ints <= _INT64_MAX if ints.dtype == np.uint64 else np.ones(n, bool)
            present = ~missing & fits
            exact = np.where(present, ints.astype(np.int64), exact)
            use_exact = use_exact | present
            floats = np.where(missing, floats, ints.astype(np.float64))
        elif pa.types.is_floating(array.type) or pa.types.is_decimal(array.type):
            values = array.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False)
            floats = np.where(missing, floats, values)
        return {"number": floats, "exact": exact, "use_exact": use_exact, "missing": missing}

    def _spec(self, field) -> dict:
        dtype = field_dtype(field)
        if field.input_name in self.text_fields:
            return {"text": tf.TensorSpec([None], tf.string)}
        if not is_numeric(field):
            return {"value": tf.TensorSpec([None], dtype), "missing": tf.TensorSpec([None], tf.bool)}
        return {"number": tf.TensorSpec([None], tf.float64),
                "exact": tf.TensorSpec([None], tf.int64),
                "use_exact": tf.TensorSpec([None], tf.bool),
                "missing": tf.TensorSpec([None], tf.bool)}

    def _record_batches(self, block_rows: int, files=None):
        _, pq = _pyarrow()
        names = [f.input_name for f in self.fields]
        for path in files or self.files:
            offset = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=block_rows, columns=names):
                yield path, offset, batch
                offset += batch.num_rows

    def _batches(self, block_rows: int, shuffle: bool, seed):
        rng = np.random.default_rng(seed)
        files = list(self.files)
        if shuffle:
            rng.shuffle(files)
        for _, _, batch in self._record_batches(block_rows, files):
            order = rng.permutation(batch.num_rows) if shuffle else None
            raw = {}
            for field in self.fields:
                parts = self._raw(batch.column(field.input_name), field)
                raw[field.input_name] = ({k: v[order] for k, v in parts.items()}
                                         if order is not None else parts)
            yield raw

    def locate_error(self, rules: dict | None = None) -> str | None:
        """After a failed batch: 'file: row N: column: what is wrong' of the first bad row
        (N counts rows from 1), found with the same graph rules the batch failed on."""
        rules = self.rules if rules is None else as_rules(rules)
        for path, offset, batch in self._record_batches(65536):
            raw = {f.input_name: self._raw(batch.column(f.input_name), f) for f in self.fields}
            typed, ok = self._typed(raw, rules)
            if ok is None:
                continue
            bad = np.flatnonzero(~ok.numpy())
            if not len(bad):
                continue
            row = int(bad[0])
            for field in self.fields:
                problem = self._problem(raw[field.input_name], row, field, rules)
                if problem:
                    return f"{path}: row {offset + row + 1}: column {field.input_name!r}: {problem}"
            return f"{path}: row {offset + row + 1}: a value its column does not accept"
        return None

    @staticmethod
    def _problem(raw: dict, row: int, field, rules: dict) -> str | None:
        if "text" in raw:
            text = raw["text"][row]
            return cell_problem(text.decode("utf-8", "replace") if isinstance(text, bytes)
                                else str(text), field, rules)
        if raw["missing"][row]:
            return cell_problem("", field, rules)  # only a label refuses a missing value
        if "number" not in raw:
            return (text_problem(raw["value"][row], field, rules)
                    if field_dtype(field) == tf.string else None)
        value = int(raw["exact"][row]) if raw["use_exact"][row] else float(raw["number"][row])
        if field_dtype(field).is_integer and isinstance(value, float) and value.is_integer() \
                and abs(value) < 2**63:
            value = int(value)  # 3.0 from a float column is the integer 3
        return value_problem(value, field, rules)

    # -- graph side: the same rules as CSV cells

    def _typed(self, raw: dict, rules: dict):
        """The typed columns of a batch and per row whether all are accepted (or None).
        Text cells are parsed as CSV cells are; numeric columns of one dtype are checked
        together, as (batch, columns) matrices: a few ops per batch, not a dozen per column."""
        text = [f for f in self.fields if "text" in raw[f.input_name]]
        columns, ok = to_typed_columns([raw[f.input_name]["text"] for f in text], text, rules)
        oks = [ok]
        for field in self.fields:
            parts = raw[field.input_name]
            if "value" in parts:  # STRING and BOOL
                values = parts["value"]
                if field_dtype(field) == tf.string:
                    values = tf.where(parts["missing"], field.default_val, values)
                elif field.default_val:
                    values = tf.where(parts["missing"], field.default_val.lower()
                                      in ("true", "1"), values)
                columns[field.input_name] = values
                oks.append(row_rules(field, values, parts["missing"], rules))
        numbers = [f for f in self.fields if "number" in raw[f.input_name]]
        for group in numeric_groups(numbers):
            def matrix(key):  # (batch, columns of the group)
                return tf.stack([raw[field.input_name][key] for field in group], axis=1)
            use_exact = matrix("use_exact")
            values, fits = typed_values(group[0], matrix("number"), (
                matrix("exact"), use_exact, tf.ones_like(use_exact)))
            split_matrix(group, values, fits, matrix("missing"), rules, columns, oks)
        return {f.input_name: columns[f.input_name] for f in self.fields}, all_accepted(oks)

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None,
                trailing_count: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        block = block_rows(batch_size, shuffle_buffer_size if shuffle else 0)
        signature = {f.input_name: self._spec(f) for f in self.fields}
        ds = tf.data.Dataset.from_generator(lambda: self._batches(block, shuffle, seed),
                                            output_signature=signature)
        drop = bool(self.data_config.ignore_error)

        def typed(raw):
            columns, ok = self._typed(raw, self.rules)
            return keep_good_rows(columns, ok, drop, what="a Parquet row")

        ds = ds.rebatch(batch_size, drop_remainder=drop_remainder).map(
            plain(typed),
            num_parallel_calls=self.data_config.num_parallel_calls or tf.data.AUTOTUNE)
        if drop:
            ds = skip_empty_batches(ds, trailing_count)
        # Epochs repeat after batching, as in CSV: each epoch's last batch may be short.
        return ds.repeat(num_epochs) if num_epochs != 1 else ds
