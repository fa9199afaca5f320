"""Property-based: randomly damaged CSV rows. The tf.data reader and the Python row locator
agree: a file the reader rejects has a first bad row that find_bad_row names (file:line of a
damaged line), a file it accepts has none; with ignore_error exactly the damaged rows that
are invalid are dropped and counted."""
import os

import pytest
import tensorflow as tf
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtrec.data.reader import CsvReader, find_bad_row
from mtrec.data.schema import BAD_ROWS_KEY
from mtrec.protos import data_pb2

CONFIG = """
input_fields { input_name: "clk" input_type: INT32 }
input_fields { input_name: "user" input_type: STRING }
input_fields { input_name: "price" input_type: DOUBLE }
input_fields { input_name: "count" input_type: INT64 }
"""
ROWS = [f"{i % 2},u{i},{i * 1.5:.2f},{i * 3}" for i in range(30)]

DAMAGE = st.one_of(
    st.just(lambda row: row + ",extra"),                      # too many fields
    st.just(lambda row: row.rsplit(",", 1)[0]),               # too few
    st.just(lambda row: row.replace(",", ",x", 1)),           # clk ok, user changed: still valid
    st.just(lambda row: "abc" + row[1:]),                     # clk not a number
    st.just(lambda row: row.rsplit(",", 1)[0] + ",2.5"),      # fractional integer
    st.just(lambda row: row.rsplit(",", 1)[0] + ",NULL"),     # missing: valid (default)
    st.just(lambda row: ""),                                  # empty line
    st.binary(min_size=1, max_size=6).map(lambda junk: lambda row: row + "@" + junk.hex()),
)


def read(path, ignore_error):
    config = text_format.Parse(CONFIG + f"ignore_error: {str(ignore_error).lower()}",
                               data_pb2.DatasetConfig())
    reader = CsvReader(config, [path])
    rows, bad = 0, 0
    for batch in reader.dataset(7, 1, False, trailing_count=True):
        bad += int(batch.pop(BAD_ROWS_KEY, tf.constant(0)))
        rows += int(tf.shape(batch["clk"])[0])
    return config, rows, bad


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("MTREC_FUZZ_ROWS", 40)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage=st.lists(st.tuples(st.integers(0, len(ROWS) - 1), DAMAGE), max_size=4),
       raw_bytes=st.booleans())
def test_reader_and_locator_agree_on_damaged_rows(tmp_path, damage, raw_bytes):
    rows = list(ROWS)
    for index, fn in damage:
        rows[index] = fn(rows[index])
    data = "\n".join(rows).encode() + b"\n"
    if raw_bytes and damage:  # one damaged row also gets bytes that are not UTF-8
        line = damage[0][0]
        parts = data.split(b"\n")
        parts[line] += b"\xff"
        data = b"\n".join(parts)
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    damaged_lines = {i + 1 for i, _ in damage}
    config = text_format.Parse(CONFIG, data_pb2.DatasetConfig())
    where = find_bad_row(config, [str(path)])
    try:
        _, good_rows, _ = read(str(path), ignore_error=False)
        accepted = True
    except tf.errors.InvalidArgumentError:
        accepted = False
    if accepted:
        assert where is None, where
        assert good_rows == len(rows)
    else:
        assert where is not None
        line = int(where.split(":")[1])
        assert where.startswith(f"{path}:") and line in damaged_lines, where
    # ignore_error keeps exactly the rows the locator accepts.
    _, kept, dropped = read(str(path), ignore_error=True)
    assert kept + dropped == len(rows)
    if accepted:
        assert dropped == 0
    else:
        assert 1 <= dropped <= len(damaged_lines)


def test_bad_rows_of_the_last_batch_are_counted(tmp_path):
    """Found by the fuzz test above: rows 29 and 30 both bad with batch 7 leave the last
    batch empty; its 2 bad rows must still be counted."""
    rows = list(ROWS)
    rows[28] += ",extra"
    rows[29] += ",extra"
    path = tmp_path / "data.csv"
    path.write_text("\n".join(rows) + "\n")
    _, kept, dropped = read(str(path), ignore_error=True)
    assert (kept, dropped) == (28, 2)
