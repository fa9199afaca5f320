"""mtrec.data.reader: CSV decoding, paths, bad rows, ignore_error, epochs and shuffling."""
import collections

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from mtrec.data.reader import CsvReader, expand_paths, find_bad_row
from mtrec.data.schema import BAD_ROWS_KEY, field_dtype
from mtrec.errors import DataError
from mtrec.protos import data_pb2


def data_config(text: str) -> data_pb2.DatasetConfig:
    return text_format.Parse(text, data_pb2.DatasetConfig())


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def read_all(reader: CsvReader, batch_size: int = 100, **kwargs) -> dict:
    """Every batch of one epoch concatenated: {input_name: numpy array}."""
    kwargs.setdefault("num_epochs", 1)
    kwargs.setdefault("shuffle", False)
    columns = collections.defaultdict(list)
    bad = 0
    for batch in reader.dataset(batch_size, **kwargs):
        for name, tensor in batch.items():
            if name == BAD_ROWS_KEY:
                bad += int(tensor.numpy())
            else:
                columns[name].append(tensor.numpy())
    out = {name: np.concatenate(parts) for name, parts in columns.items()}
    if reader.data_config.ignore_error:
        out[BAD_ROWS_KEY] = bad
    return out


TYPED = """
input_fields { input_name: "i32" input_type: INT32 default_val: "7" }
input_fields { input_name: "i64" input_type: INT64 }
input_fields { input_name: "f" input_type: FLOAT default_val: "1.5" }
input_fields { input_name: "d" input_type: DOUBLE }
input_fields { input_name: "s" input_type: STRING default_val: "dflt" }
input_fields { input_name: "s2" input_type: STRING }
input_fields { input_name: "b" input_type: BOOL }
input_fields { input_name: "b2" input_type: BOOL default_val: "true" }
"""


# ---------------------------------------------------------------------------
# Decoding


def test_decode_types_values_and_defaults(tmp_path):
    path = write(tmp_path, "typed.csv",
                 "1,2,0.5,0.25,abc,x,true,false\n"
                 ",NULL,,NULL,,NULL,,\n"
                 "3.0,12345678901,-1e3,2.5,hello world,y,1,0\n"
                 "NULL,-5,NULL,,NULL,,TRUE,NULL\n")
    columns = read_all(CsvReader(data_config(TYPED), [path]))
    expected_dtypes = {"i32": np.int32, "i64": np.int64, "f": np.float32, "d": np.float64,
                       "s": object, "s2": object, "b": np.bool_, "b2": np.bool_}
    assert set(columns) == set(expected_dtypes)
    for name, dtype in expected_dtypes.items():
        assert columns[name].dtype == dtype, name
    np.testing.assert_array_equal(columns["i32"], [1, 7, 3, 7])
    np.testing.assert_array_equal(columns["i64"], [2, 0, 12345678901, -5])
    np.testing.assert_array_equal(columns["f"], np.array([0.5, 1.5, -1000.0, 1.5], np.float32))
    np.testing.assert_array_equal(columns["d"], [0.25, 0.0, 2.5, 0.0])
    assert columns["s"].tolist() == [b"abc", b"dflt", b"hello world", b"dflt"]
    assert columns["s2"].tolist() == [b"x", b"", b"y", b""]
    assert columns["b"].tolist() == [True, False, True, True]
    assert columns["b2"].tolist() == [False, True, False, True]


def test_decode_tensor_dtypes_match_field_dtype(tmp_path):
    path = write(tmp_path, "typed.csv", "1,2,0.5,0.25,abc,x,true,false\n")
    batch = next(iter(CsvReader(data_config(TYPED), [path]).dataset(8, 1, False)))
    config = data_config(TYPED)
    for field in config.input_fields:
        assert batch[field.input_name].dtype == field_dtype(field)
    assert field_dtype(config.input_fields[0]) == tf.int32
    assert field_dtype(config.input_fields[4]) == tf.string


def test_integers_written_as_floats_parse(tmp_path):
    config = data_config('input_fields { input_name: "a" input_type: INT32 }'
                         'input_fields { input_name: "b" input_type: INT64 }')
    path = write(tmp_path, "f.csv", "3.0,4.0\n-2.0,1e3\n 5 , 6 \n")
    columns = read_all(CsvReader(config, [path]))
    assert columns["a"].tolist() == [3, -2, 5]
    assert columns["b"].tolist() == [4, 1000, 6]


def test_large_int64_values_are_exact(tmp_path):
    # 64-bit ids above 2**53 must not go through float64.
    config = data_config('input_fields { input_name: "id" input_type: INT64 }')
    path = write(tmp_path, "ids.csv", "9007199254740993\n9223372036854775807\n")
    columns = read_all(CsvReader(config, [path]))
    assert columns["id"].tolist() == [9007199254740993, 9223372036854775807]


def test_numeric_columns_of_one_dtype_parse_together_as_each_would_alone():
    # schema.to_typed_columns parses same-dtype columns as one matrix: defaults, exact
    # 64-bit ids and rejected cells must stay with their own column.
    from mtrec.data.schema import to_typed, to_typed_columns
    config = data_config(
        'input_fields { input_name: "a" input_type: INT64 default_val: "4" }'
        'input_fields { input_name: "s" input_type: STRING default_val: "z" }'
        'input_fields { input_name: "b" input_type: INT64 default_val: "-1" }'
        'input_fields { input_name: "c" input_type: FLOAT default_val: "2.5" }'
        'input_fields { input_name: "d" input_type: FLOAT }'
        'input_fields { input_name: "e" input_type: INT32 default_val: "9" }')
    rows = [["1", "x", "", "0.5", "", "3"],
            ["NULL", "", "9007199254740993", " 7 ", "1e3", ""],
            ["2", "y", "x", "", "NULL", "2.0"],
            ["9223372036854775808", "w", "5", "inf", "1", "4"],
            ["3", "v", "6", "1", "2", "1.5"]]
    cells = [tf.constant(list(column)) for column in zip(*rows)]
    fields = list(config.input_fields)
    columns, ok = to_typed_columns(cells, fields)
    assert list(columns) == ["a", "s", "b", "c", "d", "e"]  # the fields' order
    assert columns["a"].numpy().tolist() == [1, 4, 2, 0, 3]
    assert columns["b"].numpy().tolist() == [-1, 9007199254740993, 0, 5, 6]
    assert columns["c"].numpy().tolist() == [0.5, 7.0, 2.5, 0.0, 1.0]
    assert columns["d"].numpy().tolist() == [0.0, 1000.0, 0.0, 1.0, 2.0]
    assert columns["e"].numpy().tolist() == [3, 9, 2, 4, 0]
    # Row 3: "x" in b; row 4: an id beyond int64 and inf; row 5: 1.5 in an INT32.
    assert ok.numpy().tolist() == [True, True, False, False, False]
    alone = [to_typed(cell, field) for cell, field in zip(cells, fields)]
    for field, (values, _) in zip(fields, alone):
        assert columns[field.input_name].dtype == values.dtype
        np.testing.assert_array_equal(columns[field.input_name], values)
    plain = [tf.constant(["1", "2"]), tf.constant(["3", "4"]), tf.constant(["0.5", "6"])]
    numbers = [fields[0], fields[2], fields[3]]
    for all_numbers in (None, tf.constant(True)):
        columns, ok = to_typed_columns(plain, numbers, all_numbers=all_numbers)
        assert [columns[k].numpy().tolist() for k in "abc"] == [[1, 2], [3, 4], [0.5, 6.0]]
        assert ok.numpy().tolist() == [True, True]


def test_numbers_decode_csv_parses_equal_the_numbers_parsed_as_text(tmp_path):
    """A batch of plain numbers, with integers of at most 18 digits, has its numbers parsed
    by decode_csv (int64 / float64); every other batch goes through the text rules. Both
    must give the same values and verdicts, edge cases included."""
    from mtrec.data.schema import to_typed_columns
    config = data_config('with_header: true'
                         ' input_fields { input_name: "a" input_type: INT64 }'
                         ' input_fields { input_name: "i" input_type: INT32 }'
                         ' input_fields { input_name: "s" input_type: STRING }'
                         ' input_fields { input_name: "f" input_type: FLOAT }'
                         ' input_fields { input_name: "g" input_type: DOUBLE }')
    path = write(tmp_path, "h.csv", "g,s,f,i,x,a\n1,q,1,1,z,1\n")
    reader = CsvReader(config, [path])
    parsed = lambda line: bool(tf.strings.regex_full_match(line, reader.parsed_numbers))  # noqa
    # (file columns g, s, f, i, x, a)
    lines = ["0.1,q,1e-3,+5,z,007", "-0,,3.4028235e38,2147483647,,-123456789012345678",
             "1e308,NULL,1e39,2147483648,w,0", ".5,x y,1.,-2147483649,v,+12",
             "1e400,u,-1e-50,-0,t,999999999999999999", "3.,é,7,000000000000000000042,s,1"]
    assert all(parsed(line) for line in lines)
    # Integer columns holding a fraction, 19 digits, or text: not for decode_csv's int64.
    for line in ("1,q,1,1.0,z,1", "1,q,1,1,z,1234567890123456789", "1,q,1,1,z,1e3",
                 "1,q,1,1,z,", "1,q,1,1,z, 1", '1,"q",1,1,z,1', "1,q,1,1,z,1,2"):
        assert not parsed(line), line
    columns, ok, dropped = reader.decode(tf.constant(lines))
    cells = [tf.constant([line.split(",")[column] for line in lines])
             for column in reader.columns]
    text_columns, text_ok = to_typed_columns(cells, reader.fields, reader.rules)
    for name, values in text_columns.items():
        assert columns[name].dtype == values.dtype, name
        np.testing.assert_array_equal(columns[name], values, err_msg=name)
    assert ok.numpy().tolist() == text_ok.numpy().tolist()
    # Rows 3-5: INT32 out of range, FLOAT overflow, g beyond float64.
    assert ok.numpy().tolist() == [True, True, False, False, False, True]
    assert columns["a"].numpy().tolist() == [7, -123456789012345678, 0, 12,
                                             999999999999999999, 1]
    assert columns["i"].numpy().tolist()[:2] == [5, 2147483647]
    assert int(dropped) == 0
    # With ignore_error the same batch is parsed and nothing is dropped before decoding;
    # a batch with a malformed line drops that line only.
    columns, ok, dropped = reader.decode(tf.constant(lines + ["1,q,1"]), drop_bad_lines=True)
    assert int(dropped) == 1 and ok.numpy().tolist() == [True, True, False, False, False, True]
    lenient = data_config(text_format.MessageToString(config) + " ignore_error: true")
    rows = write(tmp_path, "r.csv", "g,s,f,i,x,a\n" + "\n".join(lines) + "\n")
    assert read_all(CsvReader(lenient, [rows]))[BAD_ROWS_KEY] == 3


def test_quoted_cell_with_separator_is_one_cell(tmp_path):
    config = data_config('input_fields { input_name: "id" input_type: INT32 }'
                         'input_fields { input_name: "text" input_type: STRING }'
                         'input_fields { input_name: "x" input_type: FLOAT }')
    path = write(tmp_path, "q.csv", '1,"a,b",0.5\n2,plain,1.5\n')
    columns = read_all(CsvReader(config, [path]))
    assert columns["id"].tolist() == [1, 2]
    assert columns["text"].tolist() == [b"a,b", b"plain"]
    assert columns["x"].tolist() == [0.5, 1.5]
    assert find_bad_row(config, [path]) is None


def test_other_separator(tmp_path):
    config = data_config('separator: "\\t"'
                         'input_fields { input_name: "a" input_type: INT32 }'
                         'input_fields { input_name: "b" input_type: STRING }')
    path = write(tmp_path, "t.tsv", "1\tx,y\n2\tz\n")
    columns = read_all(CsvReader(config, [path]))
    assert columns["a"].tolist() == [1, 2]
    assert columns["b"].tolist() == [b"x,y", b"z"]


def test_one_pattern_per_line_stands_for_each_numeric_cell_and_others_fall_back(tmp_path):
    """A batch whose lines are all plain numbers in the numeric columns skips the per-cell
    check; a quote, padding, a blank or a bad number anywhere sends the batch through it."""
    path = write(tmp_path, "h.csv", "c,extra,b,a\n1.5,q,x,1\n")
    reader = CsvReader(data_config(HEADER_CONFIG), [path])
    matches = lambda line: bool(tf.strings.regex_full_match(line, reader.plain_numbers))  # noqa
    assert matches("1.5,q,x y,1") and matches("-2e3,,,+7") and matches(".5,q,x,3.")
    for line in ('1.5,"q",x,1', " 1.5,q,x,1", "1.5,q,x,", "1.5,q,x,1,9", "1.5,q,x,nan",
                 "1.5,q,x,0x10"):
        assert not matches(line), line
    lines = {"plain": ["1.5,q,x,1", "2,q,y,-3"],
             "padded": ["1.5,q,x,1", " 2 ,q,y,-3"],
             "quoted": ['1.5,"q,r",x,1', "2,q,y,-3"],
             "blank": ["1.5,q,x,1", ",q,y,-3"]}
    expected_c = {"plain": [1.5, 2.0], "padded": [1.5, 2.0], "quoted": [1.5, 2.0],
                  "blank": [1.5, 0.0]}
    for name, batch in lines.items():
        columns, ok, _ = reader.decode(tf.constant(batch))
        assert columns["a"].numpy().tolist() == [1, -3], name
        assert columns["c"].numpy().tolist() == expected_c[name], name
        assert ok is None or bool(tf.reduce_all(ok)), name
    columns, ok, _ = reader.decode(tf.constant(["1.5,q,x,1", "2,q,y,abc"]))
    assert ok.numpy().tolist() == [True, False]  # the bad number is still caught
    # A separator that can be part of a number never takes the shortcut; a tab does.
    dotted = CsvReader(data_config('separator: "."' + HEADER_CONFIG), [write(
        tmp_path, "d.csv", "c.b.a\n1.x.2\n")])
    assert dotted.plain_numbers is None and dotted.parsed_numbers is None
    tabbed = CsvReader(data_config('separator: "\\t"' + HEADER_CONFIG), [write(
        tmp_path, "t.tsv", "c\tb\ta\n1.5\tx,y\t2\n")])
    assert bool(tf.strings.regex_full_match("1.5\tx,y\t2", tabbed.plain_numbers))
    assert read_all(tabbed)["b"].tolist() == [b"x,y"]


# ---------------------------------------------------------------------------
# Header


HEADER_CONFIG = """
with_header: true
input_fields { input_name: "a" input_type: INT64 }
input_fields { input_name: "b" input_type: STRING }
input_fields { input_name: "c" input_type: FLOAT }
"""


def test_header_maps_columns_by_name(tmp_path):
    first = write(tmp_path, "h1.csv", "c,extra,b,a\n1.5,q,x,1\n2.5,q,y,2\n")
    second = write(tmp_path, "h2.csv", "c,extra,b,a\n3.5,q,w,3\n")
    reader = CsvReader(data_config(HEADER_CONFIG), [first, second])
    assert reader.columns == [3, 2, 0]
    columns = read_all(reader)
    assert columns["a"].tolist() == [1, 2, 3]
    assert columns["b"].tolist() == [b"x", b"y", b"w"]
    assert columns["c"].tolist() == [1.5, 2.5, 3.5]
    assert find_bad_row(reader.data_config, reader.files, reader.columns) is None


def test_header_with_extra_trailing_column(tmp_path):
    path = write(tmp_path, "h.csv", "c,b,a,z\n1.5,x,1,zz\n2.5,y,2,zz\n")
    reader = CsvReader(data_config(HEADER_CONFIG), [path])
    assert reader.columns == [2, 1, 0]
    columns = read_all(reader)
    assert columns["a"].tolist() == [1, 2]
    assert columns["b"].tolist() == [b"x", b"y"]
    assert columns["c"].tolist() == [1.5, 2.5]


def test_find_bad_row_accepts_good_rows_with_extra_trailing_column(tmp_path):
    path = write(tmp_path, "h.csv", "c,b,a,z\n1.5,x,1,zz\n2.5,y,2,zz\n")
    reader = CsvReader(data_config(HEADER_CONFIG), [path])
    assert find_bad_row(reader.data_config, [path], reader.columns) is None


def test_ignore_error_keeps_good_rows_with_extra_trailing_column(tmp_path):
    config = data_config(HEADER_CONFIG + "ignore_error: true\n")
    path = write(tmp_path, "h.csv", "c,b,a,z\n1.5,x,1,zz\n2.5,y,2,zz\n")
    columns = read_all(CsvReader(config, [path]))
    assert columns["a"].tolist() == [1, 2]
    assert columns[BAD_ROWS_KEY] == 0


def test_header_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path, "h.csv", "c,extra,a\n1.5,q,1\n")
    with pytest.raises(DataError) as info:
        CsvReader(data_config(HEADER_CONFIG), [path])
    assert str(info.value) == f"{path}:1: the header has no column 'b'; it has: c, extra, a."


def test_headers_that_differ_are_an_error(tmp_path):
    first = write(tmp_path, "h1.csv", "a,b,c\n1,x,1.5\n")
    second = write(tmp_path, "h2.csv", "c,b,a\n1.5,x,1\n")
    with pytest.raises(DataError, match=f"{second}:1: header differs from the header of "):
        CsvReader(data_config(HEADER_CONFIG), [first, second])


# ---------------------------------------------------------------------------
# expand_paths


def test_expand_comma_separated_paths(tmp_path):
    b = write(tmp_path, "b.csv", "1\n")
    a = write(tmp_path, "a.csv", "1\n")
    assert expand_paths(f"{b}, {a}") == [b, a]
    assert expand_paths(f"{a},") == [a]


def test_expand_glob(tmp_path):
    paths = [write(tmp_path, f"part-{i}.csv", "1\n") for i in (2, 0, 1)]
    write(tmp_path, "other.txt", "1\n")
    (tmp_path / "part-dir.csv").mkdir()
    assert expand_paths(str(tmp_path / "part-*.csv")) == sorted(paths)


def test_expand_directory(tmp_path):
    paths = [write(tmp_path, name, "1\n") for name in ("b.csv", "a.csv")]
    write(tmp_path, ".hidden", "1\n")
    (tmp_path / "sub").mkdir()
    assert expand_paths(str(tmp_path)) == sorted(paths)


def test_expand_missing_file(tmp_path):
    good = write(tmp_path, "a.csv", "1\n")
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError) as info:
        expand_paths(f"{good},{missing}", "train_input_path")
    assert str(info.value) == f"train_input_path file {missing!r} not found."


def test_expand_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(DataError) as info:
        expand_paths(pattern, "eval_input_path")
    assert str(info.value) == f"eval_input_path path {pattern!r} matches no file."


def test_expand_empty_directory_and_empty_string(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no file"):
        expand_paths(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no input path given"):
        expand_paths(" , ")


# ---------------------------------------------------------------------------
# find_bad_row


PLAIN = """
input_fields { input_name: "a" input_type: INT64 }
input_fields { input_name: "b" input_type: STRING }
input_fields { input_name: "c" input_type: FLOAT }
"""


def test_find_bad_row_too_few_fields(tmp_path):
    good = write(tmp_path, "good.csv", "1,x,1.5\n2,y,2.5\n")
    bad = write(tmp_path, "bad.csv", "1,x,1.5\n2,y,2.5\n3,z\n4,w,abc\n")
    assert find_bad_row(data_config(PLAIN), [good, bad]) == \
        f"{bad}:3: expected 3 fields separated by ',', found 2"


def test_find_bad_row_unparsable_integer(tmp_path):
    path = write(tmp_path, "bad.csv", "1,x,1.5\n2.0,y,2\nq,z,2.5\n")
    assert find_bad_row(data_config(PLAIN), [path]) == \
        f"{path}:3: column 'a': 'q' is not a number"


def test_find_bad_row_fractional_integer(tmp_path):
    path = write(tmp_path, "bad.csv", "1,x,1.5\n2.5,y,2\n")
    assert find_bad_row(data_config(PLAIN), [path]) == \
        f"{path}:2: column 'a': '2.5' is not an integer"


def test_find_bad_row_with_header_counts_the_header_line(tmp_path):
    reader_config = data_config(HEADER_CONFIG)
    path = write(tmp_path, "h.csv", "c,b,a\n1.5,x,1\n2.5,y\n3.5,z,3\n")
    columns = CsvReader(reader_config, [path]).columns
    assert find_bad_row(reader_config, [path], columns) == \
        f"{path}:3: expected 3 fields separated by ',', found 2"
    path = write(tmp_path, "h2.csv", "c,b,a\n1.5,x,1\n2.5,y,2\n3.5,z,oops\n")
    assert find_bad_row(reader_config, [path], columns) == \
        f"{path}:4: column 'a': 'oops' is not a number"


def test_find_bad_row_none_for_good_files(tmp_path):
    path = write(tmp_path, "ok.csv", "1,x,1.5\n,NULL,NULL\n3.0,,\n")
    assert find_bad_row(data_config(PLAIN), [path]) is None


def test_reading_a_bad_row_without_ignore_error_fails(tmp_path):
    path = write(tmp_path, "bad.csv", "1,x,1.5\n2,y\n")
    with pytest.raises(tf.errors.InvalidArgumentError):
        read_all(CsvReader(data_config(PLAIN), [path]))


# ---------------------------------------------------------------------------
# ignore_error


def test_ignore_error_drops_and_counts_bad_rows(tmp_path):
    config = data_config(PLAIN + "ignore_error: true\n")
    first = write(tmp_path, "1.csv", "1,x,1.5\n2,y\n3,z,2.5\n")
    second = write(tmp_path, "2.csv", "4,w,abc\nq,v,3.5\n5,u,4.5\n,NULL,\n1,2,3,4\n")
    columns = read_all(CsvReader(config, [first, second]), batch_size=3)
    assert columns[BAD_ROWS_KEY] == 4
    assert columns["a"].tolist() == [1, 3, 5, 0]
    assert columns["b"].tolist() == [b"x", b"z", b"u", b""]
    assert columns["c"].tolist() == [1.5, 2.5, 4.5, 0.0]


def test_ignore_error_batches_have_bad_row_key(tmp_path):
    config = data_config(PLAIN + "ignore_error: true\n")
    path = write(tmp_path, "1.csv", "1,x,1.5\n2,y\n")
    batch = next(iter(CsvReader(config, [path]).dataset(10, 1, False)))
    assert batch[BAD_ROWS_KEY].dtype == tf.int64
    assert int(batch[BAD_ROWS_KEY]) == 1
    assert batch["a"].numpy().tolist() == [1]


def test_ignore_error_keeps_integers_written_as_floats(tmp_path):
    # Without ignore_error "3.0" in an INT column decodes as 3; ignore_error must not drop it.
    config = data_config(PLAIN + "ignore_error: true\n")
    path = write(tmp_path, "1.csv", "1,x,1.5\n3.0,y,2.5\n")
    columns = read_all(CsvReader(config, [path]))
    assert columns[BAD_ROWS_KEY] == 0
    assert columns["a"].tolist() == [1, 3]


def test_ignore_error_keeps_quoted_cells_with_separator(tmp_path):
    config = data_config(PLAIN + "ignore_error: true\n")
    path = write(tmp_path, "1.csv", '1,"x,y",1.5\n2,z,2.5\n')
    columns = read_all(CsvReader(config, [path]))
    assert columns[BAD_ROWS_KEY] == 0
    assert columns["b"].tolist() == [b"x,y", b"z"]


# ---------------------------------------------------------------------------
# dataset(): epochs, order, shuffling


ID_CONFIG = """
input_fields { input_name: "id" input_type: INT64 }
input_fields { input_name: "name" input_type: STRING }
"""


def id_files(tmp_path, sizes=(13, 12)):
    paths, ids = [], []
    for k, size in enumerate(sizes):
        rows = list(range(1000 * k, 1000 * k + size))
        paths.append(write(tmp_path, f"part-{k}.csv", "".join(f"{i},r{i}\n" for i in rows)))
        ids.extend(rows)
    return paths, ids


def batches(reader, batch_size, **kwargs):
    return [b["id"].numpy().tolist() for b in reader.dataset(batch_size, **kwargs)]


def test_one_epoch_in_file_order(tmp_path):
    paths, ids = id_files(tmp_path)
    reader = CsvReader(data_config(ID_CONFIG), paths)
    got = batches(reader, 4, num_epochs=1, shuffle=False)
    assert [len(b) for b in got] == [4, 4, 4, 4, 4, 4, 1]
    assert sum(got, []) == ids
    # Rows stay together with their columns.
    batch = next(iter(reader.dataset(25, 1, False)))
    assert batch["name"].numpy().tolist() == [f"r{i}".encode() for i in ids]


def test_one_epoch_in_file_order_with_long_files(tmp_path):
    paths, ids = id_files(tmp_path, sizes=(300, 300))
    reader = CsvReader(data_config(ID_CONFIG), paths)
    assert sum(batches(reader, 128, num_epochs=1, shuffle=False), []) == ids


def test_two_epochs_repeat_rows(tmp_path):
    paths, ids = id_files(tmp_path)
    reader = CsvReader(data_config(ID_CONFIG), paths)
    got = sum(batches(reader, 4, num_epochs=2, shuffle=False), [])
    assert got == ids + ids


def test_shuffled_epoch_returns_every_row_once(tmp_path):
    paths, ids = id_files(tmp_path)
    reader = CsvReader(data_config(ID_CONFIG), paths)
    for buffer_size, seed in ((10, 1), (7, 2), (64, 3)):
        got = batches(reader, 4, num_epochs=1, shuffle=True, shuffle_buffer_size=buffer_size,
                      seed=seed)
        assert sorted(sum(got, [])) == sorted(ids), buffer_size
        assert [len(b) for b in got] == [4] * 6 + [1], buffer_size


def test_shuffle_changes_order(tmp_path):
    paths, ids = id_files(tmp_path, sizes=(40, 40))
    reader = CsvReader(data_config(ID_CONFIG), paths)
    got = sum(batches(reader, 8, num_epochs=1, shuffle=True, shuffle_buffer_size=32, seed=5), [])
    assert sorted(got) == ids
    assert got != ids


def test_shuffled_two_epochs_return_every_row_twice(tmp_path):
    paths, ids = id_files(tmp_path)
    reader = CsvReader(data_config(ID_CONFIG), paths)
    got = batches(reader, 4, num_epochs=2, shuffle=True, shuffle_buffer_size=10, seed=4)
    assert collections.Counter(sum(got, [])) == collections.Counter(ids * 2)
    # Epochs repeat after batching: each epoch reads every row once, so each epoch's
    # last batch may be short.
    per_epoch = -(-len(ids) // 4)
    assert len(got) == 2 * per_epoch
    for epoch in (got[:per_epoch], got[per_epoch:]):
        assert sorted(sum(epoch, [])) == sorted(ids)
        assert all(len(b) == 4 for b in epoch[:-1])


@pytest.mark.parametrize("with_header", [False, True])
def test_a_file_read_whole_has_the_lines_textlinedataset_reads(tmp_path, with_header):
    # TextLineDataset drops every "\r", ends a line at each "\n" and makes no line after a
    # last "\n"; a byte-order mark starts the first line (ignored without a header).
    texts = [b"a,1\nb,2\n", b"a,1\r\nb,2\r\n", b"a,1\r\nb,2\r", b"a,1\nb,2", b"", b"\n",
             b"\n\n", b"a,1\n\nb,2\n", b"\xef\xbb\xbfa,1\nb,2\n", b"a,1\r\r\n", b"a\rb,1\n",
             b"\r\n", b"a,1\n\r\n"]
    config = data_config(ID_CONFIG + f"with_header: {str(with_header).lower()}")
    reader = CsvReader.__new__(CsvReader)  # only the two file readers: no header to parse
    reader.data_config = config
    for k, text in enumerate(texts):
        path = tmp_path / f"{k}.csv"
        path.write_bytes((b"id,name\n" if with_header else b"") + text)
        by_line = [line.numpy() for line in reader._read(tf.constant(str(path)), "")]
        whole = list(next(iter(reader._read_whole(tf.constant(str(path)), ""))).numpy())
        assert whole == by_line, text


def test_files_read_whole_give_the_batches_of_files_read_line_by_line(tmp_path, monkeypatch):
    from mtrec.data import reader as reader_module
    paths, ids = id_files(tmp_path, sizes=(300, 290, 7))
    reader = CsvReader(data_config(ID_CONFIG), paths)
    assert reader.reads_whole()
    settings = [dict(num_epochs=1, shuffle=False), dict(num_epochs=2, shuffle=False),
                dict(num_epochs=1, shuffle=True, shuffle_buffer_size=64, seed=3),
                dict(num_epochs=1, shuffle=True, shuffle_buffer_size=64, seed=3, shard=(3, 1)),
                dict(num_epochs=1, shuffle=True, shuffle_buffer_size=8, seed=3,
                     drop_remainder=True)]
    whole = [batches(reader, 16, **kwargs) for kwargs in settings]
    monkeypatch.setattr(reader_module, "READ_WHOLE_BYTES", 0)
    assert not reader.reads_whole()
    by_line = [batches(reader, 16, **kwargs) for kwargs in settings]
    assert whole == by_line
    assert sum(whole[0], []) == ids and sorted(sum(whole[2], [])) == sorted(ids)
    # shard (3, 1): every third row of each file, from its second.
    shard = [i for start, end in ((0, 300), (300, 590), (590, 597)) for i in ids[start:end][1::3]]
    assert sorted(sum(whole[3], [])) == sorted(shard)


def test_compressed_or_large_input_is_read_line_by_line(tmp_path, monkeypatch):
    import gzip
    from mtrec.data import reader as reader_module
    paths, _ = id_files(tmp_path)
    assert CsvReader(data_config(ID_CONFIG), paths).reads_whole()
    with gzip.open(tmp_path / "part.csv.gz", "wt") as f:
        f.write("1,a\n2,b\n")
    assert not CsvReader(data_config(ID_CONFIG), [str(tmp_path / "part.csv.gz")]).reads_whole()
    size = sum((tmp_path / f"part-{k}.csv").stat().st_size for k in range(2))
    monkeypatch.setattr(reader_module, "READ_WHOLE_BYTES", size - 1)
    assert not CsvReader(data_config(ID_CONFIG), paths).reads_whole()
