"""Read CSV rows into batches of typed column tensors with tf.data.

Lines are batched first and decoded per batch (`tf.io.decode_csv` on a vector of
lines): ~10x faster than decoding line by line. A batch whose numeric cells are all
plain numbers (one pattern per line says so) has them parsed by decode_csv itself; any
other batch is decoded as strings, so that empty and NULL cells get the column's default
before numbers are parsed. The rules of schema.py then say which rows are acceptable;
both ways give the same values and the same verdicts. A bad row fails its
batch (or, with ignore_error, is dropped and counted); after a failure `find_bad_row`
rescans the files in Python to name the file, line and column.
Uncompressed input of at most READ_WHOLE_BYTES is read whole, each file split into its
lines at once; larger or compressed input line by line (TextLineDataset). Both give the
same lines in the same order. A UTF-8 byte-order mark at the start of a file is ignored.
Files whose name ends in .gz (or all, with data_compression_type: "GZIP") are read through
gzip; line numbers are those of the uncompressed text.
"""
import csv
import io
import zlib

import tensorflow as tf

from mtrec.config import binary_input
from mtrec.config.paths import compression, expand, open_binary, split_paths
from mtrec.data import records
from mtrec.data.records import plain
from mtrec.data.parquet import ParquetReader
from mtrec.data.schema import (NUMBER, SHORT_INTEGER, as_rules, cell_problem, check_defaults,
                               field_dtype, is_numeric, keep_good_rows, parsed_dtype,
                               skip_empty_batches, to_typed_columns)
from mtrec.data.criteo_binary import CriteoBinaryReader
from mtrec.data.tfrecord import BatchTFRecordReader, TFRecordReader
from mtrec.errors import DataError
from mtrec.protos import data_pb2

def expand_paths(paths: str, what: str = "input") -> list[str]:
    """Comma-separated paths and globs -> sorted list of files; errors name what is missing."""
    files = []
    for pattern in split_paths(paths):
        matched, why = expand(pattern, what)
        if why:
            raise DataError(why)
        files.extend(matched)
    if not files:
        raise DataError(f"no {what} path given.")
    return files


def input_parts(pipeline, kind: str) -> list[str] | None:
    """The files of the pipeline's binary_train_input / binary_eval_input (kind "train" or
    "eval") as binary_input.Part items, or None when it has none."""
    field = binary_input.FIELDS[kind]
    if not pipeline.HasField(field):
        return None
    parts, why = binary_input.expand_parts(getattr(pipeline, field), field)
    if why:
        raise DataError(why)
    return parts


# Uncompressed CSV input of at most this size in all is read whole: splitting a file's text
# into lines at once cost ~0.7 CPU ms per 2,048 lines of 145 bytes, reading them one by one
# (TextLineDataset) ~4.3. The text and its lines take memory: training MMoE on a 144 MB file
# peaked at 1,299-1,455 MB RSS instead of 975.
READ_WHOLE_BYTES = 256 << 20
_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some Windows editors write first


def make_reader(data_config, files: list[str], rules: dict | None = None):
    """The reader for data_config.input_type (CSV, TFRecord, batch TFRecord, binary Criteo
    parts from input_parts, or Parquet with the `parquet` extra).
    rules: {column: schema.ColumnRule} (schema.column_rules of the pipeline config: labels,
    identity ids, sequence separators), or the older {label column: number of classes,
    0 for a regression label}; the cells of those columns must meet them
    (schema.row_rules)."""
    if data_config.input_type == data_pb2.DatasetConfig.ParquetInput:
        return ParquetReader(data_config, files, rules)
    if data_config.input_type == data_pb2.DatasetConfig.TFRecordInput:
        return TFRecordReader(data_config, files, rules)
    if data_config.input_type == data_pb2.DatasetConfig.BatchTFRecordInput:
        return BatchTFRecordReader(data_config, files, rules)
    if data_config.input_type == data_pb2.DatasetConfig.CriteoInput:
        return CriteoBinaryReader(data_config, files, rules)  # files: binary_input.Part
    return CsvReader(data_config, files, rules)


class CsvReader:
    """Builds the tf.data pipeline of one split (train or eval) from data_config."""

    def __init__(self, data_config, files: list[str], rules: dict | None = None):
        self.data_config = data_config
        self.files = files
        self.fields = list(data_config.input_fields)
        self.rules = as_rules(rules)
        check_defaults(self.fields, self.rules)
        self.separator = data_config.separator
        if data_config.with_header:
            self.header = self._read_header()
            self.columns = [self.header.index(f.input_name) for f in self.fields]
        else:
            self.header = None
            self.columns = list(range(len(self.fields)))
        # Line patterns (see _line_pattern): numeric cells that are plain numbers, and
        # those whose integers have at most 18 digits, which decode_csv parses itself.
        self.plain_numbers = self._line_pattern(NUMBER)
        self.parsed_numbers = self._line_pattern(SHORT_INTEGER)

    def _line_pattern(self, integer_cell: str) -> str | None:
        """A pattern a line matches only when it holds no quote and each numeric field's
        cell is a plain number (schema.NUMBER; integer_cell in integer fields). decode_csv
        then splits it at every separator, so one match per line stands for a match per
        numeric cell. None when no field is numeric, or the separator could be part of a
        number. RE2 matches no byte that is not UTF-8, so a matching line is UTF-8 too."""
        cell = {}
        for field, column in zip(self.fields, self.columns):
            if is_numeric(field):
                cell[column] = integer_cell if field_dtype(field).is_integer else NUMBER
        if not cell or len(self.separator) != 1 or self.separator in '0123456789+-.eE"':
            return None
        separator = f"\\x{{{ord(self.separator):X}}}"  # RE2's \x{2C}: no escaping rules
        other = f'[^{separator}"]*'
        return separator.join(f"(?:{cell[column]})" if column in cell else other
                              for column in range(self.num_file_columns))

    def _read_header(self) -> list[str]:
        """The column names of the files (all files must agree)."""
        header = None
        for path in self.files:
            try:
                with _open_text(self.data_config, path, errors="replace") as f:
                    line = f.readline().rstrip("\r\n")
            except _UNREADABLE as e:
                raise DataError(f"{path}: {_unreadable(self.data_config, path, e)}") from None
            if not line:
                raise DataError(f"{path}:1: no header line (the file starts empty); "
                                "with_header: true expects the column names on line 1.")
            names = next(csv.reader([line], delimiter=self.separator))
            if header is None:
                header = names
            elif names != header:
                raise DataError(f"{path}:1: header differs from the header of {self.files[0]}.")
        missing = [f.input_name for f in self.fields if f.input_name not in header]
        if missing:
            hint = ""
            # (separator, how a config writes it)
            for sep, written in (("\t", '"\\t"'), (",", '","'), (";", '";"'), ("|", '"|"')):
                if sep != self.separator and sep in "".join(header):
                    hint = (f" The header looks separated by {written}: set "
                            f"data_config.separator: {written}.")
                    break
            raise DataError(f"{self.files[0]}:1: the header has no column "
                            f"{', '.join(map(repr, missing))}; it has: {', '.join(header)}.{hint}")
        return header

    def locate_error(self, rules: dict | None = None) -> str | None:
        """After a parse error: 'file:line: column: what is wrong' of the first bad row,
        if found (rules: as for make_reader, by default the reader's own)."""
        return find_bad_row(self.data_config, self.files, self.columns,
                            self.rules if rules is None else rules)

    def num_rows(self) -> int:
        """The rows (lines after any header) of the files."""
        skip = 1 if self.data_config.with_header else 0
        total = 0
        for path in self.files:
            try:
                with open_binary(path, compression(self.data_config, path)) as f:
                    total += max(sum(1 for _ in f) - skip, 0)
            except _UNREADABLE as e:
                raise DataError(f"{path}: {_unreadable(self.data_config, path, e)}") from None
        return total

    @property
    def num_file_columns(self) -> int:
        return len(self.header) if self.header is not None else len(self.fields)

    def reads_whole(self) -> bool:
        """Whether the files are read whole (each into one vector of lines) rather than line
        by line: when none is compressed and all hold at most READ_WHOLE_BYTES."""
        try:
            size = sum(tf.io.gfile.stat(path).length for path in self.files)
        except tf.errors.OpError:
            return False  # reading line by line says what is wrong with the file
        return size <= READ_WHOLE_BYTES and not any(
            compression(self.data_config, path) for path in self.files)

    def _read(self, path, compression_type) -> tf.data.Dataset:
        """The rows (lines) of one file, without its header."""
        lines = tf.data.TextLineDataset(path, compression_type=compression_type)
        if self.data_config.with_header:
            return lines.skip(1)
        # The first line may start with a byte-order mark.
        return lines.take(1).map(plain(_strip_bom)).concatenate(lines.skip(1))

    def _read_whole(self, path, compression_type) -> tf.data.Dataset:
        """One element: the vector of the rows (lines) of one uncompressed file, without its
        header, split as TextLineDataset splits them: at each "\n", without "\r", no line
        after a last "\n"."""
        del compression_type  # only uncompressed files are read whole (reads_whole)

        def lines_of(path):
            text = tf.io.read_file(path)
            if not self.data_config.with_header:
                text = tf.cond(tf.equal(tf.strings.substr(text, 0, 3), _BOM),
                               lambda: tf.strings.substr(text, 3, -1), lambda: text)
            # TextLineDataset drops every "\r" (of "\r\n" line ends, and any other).
            pieces = tf.strings.split(tf.strings.regex_replace(text, "\r", ""), "\n")
            # The piece after a last "\n" (or of an empty file) is empty and is no line.
            lines = pieces[:tf.size(pieces) - tf.cast(tf.equal(pieces[-1], ""), tf.int32)]
            return lines[1:] if self.data_config.with_header else lines

        return tf.data.Dataset.from_tensors(path).map(plain(lines_of))

    def _cells(self, lines: tf.Tensor, defaults: list) -> list:
        """decode_csv of the fields' columns, in the order of the fields (defaults: one
        per field, its dtype the one decode_csv parses the cells into)."""
        if not self.data_config.with_header:
            return tf.io.decode_csv(lines, defaults, field_delim=self.separator)
        order = sorted(range(len(self.fields)), key=lambda i: self.columns[i])
        cells = tf.io.decode_csv(lines, [defaults[i] for i in order],
                                 field_delim=self.separator, select_cols=sorted(self.columns))
        by_field = {order[k]: cells[k] for k in range(len(order))}
        return [by_field[i] for i in range(len(self.fields))]

    def decode(self, lines: tf.Tensor, drop_bad_lines: bool = False):
        """A vector of CSV lines -> ({input_name: typed 1-D tensor}, per line whether its
        values are acceptable or None when no column has a rule to check, the number of
        lines dropped before decoding). A line that is not UTF-8 fails the batch, or with
        drop_bad_lines (ignore_error) it is dropped, as is one with the wrong number of
        cells.

        A batch whose lines all match parsed_numbers (the usual one) has its numbers
        parsed by decode_csv itself; any other goes through the cells as text, where
        empty and NULL cells take defaults and schema.to_typed_columns checks each one."""
        none_dropped = tf.constant(0, tf.int64)

        def as_text():
            if drop_bad_lines:
                good, dropped = self._drop_bad_lines(lines)
            else:
                good, dropped = lines, none_dropped
                utf8 = tf.debugging.assert_equal(tf.reduce_all(_is_utf8(lines)), True,
                                                 message="a line with bytes that are not UTF-8")
                with tf.control_dependencies([utf8]):
                    good = tf.identity(good)
            cells = self._cells(good, [""] * len(self.fields))
            all_numbers = None
            if self.plain_numbers == self.parsed_numbers and self.plain_numbers:
                all_numbers = tf.constant(False)  # known: the batch did not match it
            elif self.plain_numbers:
                # One pattern per line instead of one per numeric cell (both RE2).
                all_numbers = tf.reduce_all(tf.strings.regex_full_match(good,
                                                                        self.plain_numbers))
            columns, ok = to_typed_columns(cells, self.fields, self.rules, all_numbers)
            return columns, ok, dropped

        def parsed():
            cells = self._cells(lines, [tf.constant("" if dtype == tf.string else 0, dtype)
                                        for dtype in map(parsed_dtype, self.fields)])
            columns, ok = to_typed_columns(cells, self.fields, self.rules, parsed=True)
            return columns, ok, none_dropped

        if self.parsed_numbers is None:
            return as_text()
        all_parsed = tf.reduce_all(tf.strings.regex_full_match(lines, self.parsed_numbers))
        return tf.cond(all_parsed, parsed, as_text)

    def _drop_bad_lines(self, lines: tf.Tensor):
        """With ignore_error: keep lines with the right field count and UTF-8 bytes (the
        values in them are checked when decoded)."""
        # A quoted cell may hold the separator: count it as one cell.
        unquoted = tf.strings.regex_replace(lines, r'"[^"]*"', "Q")
        parts = tf.strings.split(unquoted, self.separator)
        ok = (parts.row_lengths() == self.num_file_columns) & _is_utf8(lines)
        return tf.boolean_mask(lines, ok), tf.reduce_sum(tf.cast(~ok, tf.int64))

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None,
                shard: tuple[int, int] | None = None,
                trailing_count: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        """Batches of {input_name: tensor}; `num_epochs` None repeats forever; shard (n, i)
        reads only the i-th of n row shards (distributed training with fewer files than
        workers); drop_remainder drops each epoch's last batch if it is short."""
        whole = self.reads_whole()
        lines = records.read_files(self.data_config, self.files,
                                   self._read_whole if whole else self._read, shuffle, seed,
                                   shard, whole=whole)
        lines = records.batch(lines, batch_size, shuffle, shuffle_buffer_size, seed,
                              drop_remainder)
        parallel = self.data_config.num_parallel_calls or tf.data.AUTOTUNE
        if self.data_config.ignore_error:
            def decode_good(batch):
                columns, ok, dropped = self.decode(batch, drop_bad_lines=True)
                return keep_good_rows(columns, ok, True, dropped)
            ds = skip_empty_batches(lines.map(plain(decode_good), num_parallel_calls=parallel),
                                    trailing_count)
        else:
            def decode_checked(batch):
                columns, ok, _ = self.decode(batch)
                return keep_good_rows(columns, ok, False, what="a CSV line")
            ds = lines.map(plain(decode_checked), num_parallel_calls=parallel)
        # Epochs repeat after batching, so that every epoch reads every row once (its last
        # batch may be short) and file order is reshuffled per epoch.
        return ds.repeat(num_epochs) if num_epochs != 1 else ds


def _is_utf8(lines: tf.Tensor) -> tf.Tensor:
    """Per line: whether it is valid UTF-8 (RE2 matches nothing in invalid bytes)."""
    return tf.strings.regex_full_match(lines, r"(?s).*")


def _strip_bom(line: tf.Tensor) -> tf.Tensor:
    has_bom = tf.equal(tf.strings.substr(line, 0, 3), _BOM)
    # tf.where evaluates both sides: clamp the start so a line shorter than 3 bytes is valid.
    rest = tf.strings.substr(line, tf.minimum(3, tf.strings.length(line)), -1)
    return tf.where(has_bom, rest, line)


def find_bad_row(data_config, files: list[str], columns: list[int] | None = None,
                 rules: dict | None = None) -> str | None:
    """Rescan files in Python; return 'file:line: what is wrong' for the first bad row
    (field count, bytes that are not UTF-8, a value its column does not accept: see
    schema.cell_problem). rules: as for make_reader."""
    rules = as_rules(rules)
    fields = list(data_config.input_fields)
    columns = columns or list(range(len(fields)))
    expected = len(fields)
    for path in files:
        try:
            problem = _bad_row(data_config, path, fields, columns, rules, expected)
        except _UNREADABLE as e:
            return f"{path}: {_unreadable(data_config, path, e)}"
        if problem:
            return problem
    return None


def _bad_row(data_config, path, fields, columns, rules, expected) -> str | None:
    """find_bad_row in one file."""
    names = [f.input_name for f in fields]
    with open_binary(path, compression(data_config, path)) as raw:
        for number, data in enumerate(raw, start=1):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{number}: bytes that are not UTF-8 at byte {e.start + 1} "
                        "of the line; re-encode the file as UTF-8")
    with _open_text(data_config, path) as f:
        for number, line in enumerate(f, start=1):
            if number == 1 and data_config.with_header:
                expected = len(next(csv.reader([line.rstrip("\r\n")],
                                               delimiter=data_config.separator)))
                continue
            line = line.rstrip("\r\n")
            try:
                cells = next(csv.reader([line], delimiter=data_config.separator))
            except (csv.Error, StopIteration):
                cells = line.split(data_config.separator)
            if len(cells) != expected:
                return (f"{path}:{number}: expected {expected} fields separated by "
                        f"{data_config.separator!r}, found {len(cells)}")
            for field, column in zip(fields, columns):
                problem = cell_problem(cells[column], field, rules)
                if problem:
                    if number == 1 and [c.strip() for c in cells] == names:
                        problem += ("; line 1 looks like a header: set "
                                    "data_config.with_header: true")
                    return f"{path}:{number}: column {field.input_name!r}: {problem}"
    return None


# What reading a damaged compressed file raises in Python.
_UNREADABLE = (OSError, EOFError, zlib.error)


def _unreadable(data_config, path: str, error) -> str:
    """Why a file cannot be read, for a message that starts with its path."""
    kind = compression(data_config, path)
    return f"not a readable {kind} file ({error})" if kind else f"cannot be read ({error})"


def _open_text(data_config, path: str, errors: str = "strict"):
    """A CSV file as text, decompressed; utf-8-sig: a byte-order mark before line 1 is not
    part of its first cell."""
    return io.TextIOWrapper(open_binary(path, compression(data_config, path)),
                            encoding="utf-8-sig", errors=errors, newline="")
