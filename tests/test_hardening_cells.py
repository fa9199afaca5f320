"""Issue #25: a number that does not fit its column is never wrapped, cast or bucketized
silently. Out of range, non-finite and empty-label cells are one error naming file:line
(Parquet: file, row) and the column, in CSV and in Parquet; with ignore_error the row is
skipped and counted; every row bad says so; a UTF-8 byte-order mark is accepted."""
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from google.protobuf import text_format

from conftest import edit
from mtrec.data.reader import make_reader
from mtrec.data.schema import BAD_ROWS_KEY
from mtrec.errors import DataError
from mtrec.protos import data_pb2
from test_reliability import CONFIG, good_rows, write_case

FIELDS = """
input_fields { input_name: "clk" input_type: INT32 }
input_fields { input_name: "i32" input_type: INT32 }
input_fields { input_name: "i64" input_type: INT64 }
input_fields { input_name: "f" input_type: FLOAT }
input_fields { input_name: "d" input_type: DOUBLE }
"""
NAMES = ["clk", "i32", "i64", "f", "d"]
LABELS = {"clk": 2}  # a binary classification label
GOOD = ["1", "5", "7", "0.5", "2.5"]
# (column, CSV cell, Parquet value, the problem the error names)
BAD_CELLS = [
    ("clk", "4294967297", 4294967297, r"'4294967297' is out of range for INT32"),
    ("clk", "1e30", 1e30, r"is out of range for INT32"),
    ("clk", "", None, r"the label is empty; fix the row, or give the label a default"),
    ("clk", "2", 2, r"label 2 is not a class: the tower expects 0 or 1"),
    ("i32", "3e9", 3_000_000_000, r"is out of range for INT32 \(-2147483648..2147483647\)"),
    ("i64", "1e19", 1e19, r"is out of range for INT64"),
    ("i64", "9223372036854775808", 2.0**63, r"is out of range for INT64"),
    ("f", "1e39", 1e39, r"is out of range for FLOAT"),
    ("d", "nan", math.nan, r"'nan' is not a finite number"),
    ("d", "inf", math.inf, r"'inf' is not a finite number"),
    ("d", "1e400", -math.inf, r"is not a finite number"),
    ("i32", "3.5", 3.5, r"'3.5' is not an integer"),
]
BAD_LINE = 4  # the bad cell goes into the 4th of 6 rows


def config(ignore_error=False, extra="", parquet=False):
    text = (FIELDS + extra + f"ignore_error: {str(ignore_error).lower()}\n"
            + ("input_type: ParquetInput\n" if parquet else ""))
    return text_format.Parse(text, data_pb2.DatasetConfig())


def rows_with(column, bad):
    rows = [list(GOOD) for _ in range(6)]
    rows[BAD_LINE - 1][NAMES.index(column)] = bad
    return rows


def write_csv(tmp_path, rows, prefix=b""):
    path = tmp_path / "data.csv"
    path.write_bytes(prefix + "".join(",".join(r) + "\n" for r in rows).encode())
    return str(path)


def write_parquet(tmp_path, column, bad):
    """Good values in their natural Parquet types; the bad column as int64 or float64 (or
    with a null) as the bad value requires."""
    table = {}
    for name, good in zip(NAMES, GOOD):
        is_float = name in ("f", "d") or isinstance(bad, float) and name == column
        column_values = [float(good) if is_float else int(good)] * 6
        if name == column:
            column_values[BAD_LINE - 1] = bad
        table[name] = pa.array(column_values, pa.float64() if is_float else pa.int64())
    path = str(tmp_path / "data.parquet")
    pq.write_table(pa.table(table), path)
    return path


def read(reader, batch_size=4):
    """(rows, bad rows) of one epoch, or the located error (file:line: column ...)."""
    rows = bad = 0
    try:
        for batch in reader.dataset(batch_size, 1, False):
            bad += int(batch.pop(BAD_ROWS_KEY, 0))
            rows += int(tf.shape(batch["clk"])[0])
    except tf.errors.InvalidArgumentError:
        return reader.locate_error()
    return rows, bad


@pytest.mark.parametrize("column, cell, _, problem", BAD_CELLS)
def test_bad_csv_cell_is_one_error_naming_line_and_column_or_is_skipped(
        tmp_path, column, cell, _, problem):
    path = write_csv(tmp_path, rows_with(column, cell))
    where = read(make_reader(config(), [path], LABELS))
    assert isinstance(where, str), f"{cell!r} in {column} was read: {where}"
    assert where.startswith(f"{path}:{BAD_LINE}: column {column!r}: "), where
    assert re.search(problem, where), where
    assert read(make_reader(config(ignore_error=True), [path], LABELS)) == (5, 1)


@pytest.mark.parametrize("column, _, value, problem", BAD_CELLS)
def test_bad_parquet_value_is_one_error_naming_row_and_column_or_is_skipped(
        tmp_path, column, _, value, problem):
    path = write_parquet(tmp_path, column, value)
    where = read(make_reader(config(parquet=True), [path], LABELS))
    assert isinstance(where, str), f"{value!r} in {column} was read: {where}"
    assert where.startswith(f"{path}: row {BAD_LINE}: column {column!r}: "), where
    if column != "clk" or value is None or isinstance(value, int):
        # (1e30 from a float column is named by its value, not its CSV text)
        assert re.search(problem, where), where
    assert read(make_reader(config(ignore_error=True, parquet=True), [path], LABELS)) == (5, 1)


def test_values_at_the_edges_of_their_types_are_read_exactly(tmp_path):
    rows = [list(GOOD) for _ in range(4)]
    rows[0][1:3] = ["2147483647", "9223372036854775807"]
    rows[1][1:3] = ["-2147483648", "-9223372036854775808"]
    rows[2][1:3] = ["2.147483647e9", "1e18"]
    rows[3][3:5] = ["3.4e38", "1e308"]
    path = write_csv(tmp_path, rows)
    batch = next(iter(make_reader(config(), [path], LABELS).dataset(8, 1, False)))
    assert batch["i32"].numpy().tolist() == [2147483647, -2147483648, 2147483647, 5]
    assert batch["i64"].numpy().tolist() == [2**63 - 1, -2**63, 10**18, 7]
    assert batch["f"].numpy()[3] == np.float32(3.4e38) and batch["d"].numpy()[3] == 1e308


def test_an_empty_label_takes_its_default_val(tmp_path):
    path = write_csv(tmp_path, rows_with("clk", ""))
    data = text_format.Parse(FIELDS.replace(
        'input_name: "clk" input_type: INT32', 'input_name: "clk" input_type: INT32 '
        'default_val: "0"'), data_pb2.DatasetConfig())
    batch = next(iter(make_reader(data, [path], LABELS).dataset(8, 1, False)))
    assert batch["clk"].numpy().tolist() == [1, 1, 1, 0, 1, 1]
    # Without labels (prediction), an empty cell is not a label: it takes 0.
    batch = next(iter(make_reader(config(), [path]).dataset(8, 1, False)))
    assert batch["clk"].numpy().tolist() == [1, 1, 1, 0, 1, 1]


def test_a_default_val_that_does_not_fit_its_column_is_an_error(tmp_path):
    path = write_csv(tmp_path, [GOOD])
    data = text_format.Parse(FIELDS.replace('input_name: "i32" input_type: INT32',
                                            'input_name: "i32" input_type: INT32 '
                                            'default_val: "3e9"'), data_pb2.DatasetConfig())
    with pytest.raises(DataError, match=r"input_fields 'i32': default_val '3e9' cannot fill "
                                        r"its empty cells: '3e9' is out of range for INT32"):
        make_reader(data, [path], LABELS)


def test_all_bad_batches_are_skipped_not_fed_to_the_model(tmp_path):
    # Batch 2 (rows 5-8) is all bad: no empty batch comes out, its count moves on.
    rows = [list(GOOD) for _ in range(12)]
    for i in range(4, 8):
        rows[i][4] = "nan"
    path = write_csv(tmp_path, rows)
    sizes, bad = [], []
    for batch in make_reader(config(ignore_error=True), [path], LABELS).dataset(4, 2, False):
        sizes.append(int(tf.shape(batch["clk"])[0]))
        bad.append(int(batch[BAD_ROWS_KEY]))
    assert sizes == [4, 4, 4, 4] and bad == [0, 4, 0, 4]


def test_a_byte_order_mark_is_accepted_with_and_without_a_header(tmp_path):
    bom = "\ufeff".encode()
    path = write_csv(tmp_path, [NAMES] + [GOOD] * 3, prefix=bom)
    data = config(extra="with_header: true\n")
    assert read(make_reader(data, [path], LABELS)) == (3, 0)
    path = write_csv(tmp_path, [GOOD] * 3, prefix=bom)
    batch = next(iter(make_reader(config(), [path], LABELS).dataset(8, 1, False)))
    assert batch["clk"].numpy().tolist() == [1, 1, 1]
    # A bad cell is still named, on the line the editor shows.
    path = write_csv(tmp_path, [["x"] + GOOD[1:]] + [GOOD] * 2, prefix=bom)
    assert read(make_reader(config(), [path], LABELS)) == (
        f"{path}:1: column 'clk': 'x' is not a number")


# ---------------------------------------------------------------------------
# Training


def test_training_names_an_empty_label_and_a_wrapped_one(tmp_path):
    import mtrec
    rows = good_rows(40)
    rows[5] = ",0,u1,3"
    config_path, data = write_case(tmp_path, rows)
    with pytest.raises(DataError, match=f"{data}:6: column 'clk': the label is empty"):
        mtrec.train(config_path, model_dir=str(tmp_path / "m1"))
    rows[5] = "0,4294967297,u1,3"
    config_path, data = write_case(tmp_path, rows)
    with pytest.raises(DataError, match=f"{data}:6: column 'buy': '4294967297' is out of "
                                        "range for INT32"):
        mtrec.train(config_path, model_dir=str(tmp_path / "m2"))


def test_every_row_bad_with_ignore_error_says_so(tmp_path):
    import mtrec
    rows = [f"{i % 2},0,u1,nan" for i in range(10)]
    config_path, data = write_case(tmp_path, rows, edit("batch_size: 4", "batch_size: 4\n  "
                                                        "ignore_error: true", CONFIG))
    with pytest.raises(DataError) as info:
        mtrec.train(config_path, model_dir=str(tmp_path / "model"))
    message = str(info.value)
    assert "all 10 rows read from train_input_path" in message
    assert "are bad and were skipped (data_config.ignore_error: true)" in message
    assert f"The first: {data}:1: column 'price': 'nan' is not a finite number" in message
    assert "non-finite" not in message and "learning rate" not in message


def test_csv_with_byte_order_mark_and_header_trains(tmp_path, caplog):
    import mtrec
    text = edit("batch_size: 4", "batch_size: 4\n  with_header: true", CONFIG)
    config_path, data = write_case(tmp_path, ["clk,buy,user,price"] + good_rows(16), text,
                                   steps=4)
    with open(data, "rb") as f:
        content = f.read()
    with open(data, "wb") as f:
        f.write("\ufeff".encode() + content)
    result = mtrec.train(config_path, model_dir=str(tmp_path / "model"))
    assert result == {} or result["global_step"] == 4


def test_bom_strip_keeps_short_and_empty_first_lines():
    # Found by test_data_fuzz: an empty first line failed in Substr (tf.where runs both sides).
    from mtrec.data.reader import _strip_bom
    lines = [b"", b"a", b"ab", b"\xef\xbb\xbf", b"\xef\xbb\xbfa,b", b"a,b"]
    assert [_strip_bom(tf.constant(x)).numpy() for x in lines] == [b"", b"a", b"ab", b"", b"a,b",
                                                                     b"a,b"]
