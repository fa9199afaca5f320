"""EasyRec's binary Criteo input (CriteoInput: binary_train_input / binary_eval_input) and
BatchTFRecordInput (several rows per SequenceExample): the rows read back exactly, and
each mistake is one clear message naming the file."""
import os

import numpy as np
import pytest
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.data.reader import input_parts, make_reader
from mtrec.data.schema import BAD_ROWS_KEY, column_rules
from mtrec.errors import ConfigError, DataError
from mtrec.protos import data_pb2

DC = data_pb2.DatasetConfig

CRITEO = """\
binary_train_input {{
  category_path: "{d}/part*_category.bin"
  dense_path: "{d}/part*_dense.bin"
  label_path: "{d}/part*_label.bin"
}}
binary_eval_input {{
  category_path: "{d}/part0_category.bin"
  dense_path: "{d}/part0_dense.bin"
  label_path: "{d}/part0_label.bin"
}}
train_config {{
  optimizer_config {{ adam_optimizer {{ learning_rate {{
    constant_learning_rate {{ learning_rate: 0.01 }} }} }} }}
  num_steps: 3
}}
data_config {{
  batch_size: 5
  eval_batch_size: 5
  shuffle: false
  input_type: CriteoInput
  label_fields: "label"
  input_fields {{ input_name: "label" input_type: INT32 }}
  input_fields {{ input_name: "f1" input_type: FLOAT }}
  input_fields {{ input_name: "f13" input_type: INT64 }}
  input_fields {{ input_name: "c1" input_type: INT64 }}
  input_fields {{ input_name: "c26" input_type: STRING }}
}}
feature_config {{
  features {{ input_names: "f1" feature_type: RawFeature }}
  features {{ input_names: "f13" feature_type: RawFeature }}
  features {{ input_names: "c1" hash_bucket_size: 100 embedding_dim: 4 }}
  features {{ input_names: "c26" hash_bucket_size: 100 embedding_dim: 4 }}
}}
model_config {{
  model_class: "SimpleMultiTask"
  feature_groups {{ group_name: "all" feature_names: ["f1", "f13", "c1", "c26"]
                   wide_deep: DEEP }}
  simple_multi_task {{ task_towers {{ tower_name: "ctr" label_name: "label"
                                     dnn {{ hidden_units: [4] }} }} }}
}}
"""


def write_part(directory, name, rows, seed):
    """A binary Criteo part of `rows` rows -> {kind: the numpy array written}."""
    rng = np.random.default_rng(seed)
    arrays = {"category": rng.integers(0, 2**32, (rows, 26), dtype=np.uint32),
              "dense": rng.normal(size=(rows, 13)).astype("<f4"),
              "label": rng.integers(0, 2, (rows, 1)).astype("<i4")}
    arrays["dense"][:, 12] = rng.integers(-5, 100, rows)  # f13 is an INT64 field: whole
    arrays["category"][0, 0] = 2**32 - 1  # beyond int32: read as uint32
    for kind, values in arrays.items():
        values.astype({"category": "<u4", "dense": "<f4", "label": "<i4"}[kind]).tofile(
            os.path.join(directory, f"{name}_{kind}.bin"))
    return arrays


def criteo_config(tmp_path, text=CRITEO):
    path = tmp_path / "criteo.config"
    path.write_text(text.format(d=tmp_path))
    return str(path)


def read_all(loaded, kind="train", batch_size=5, **kwargs):
    pipeline = loaded.pipeline
    reader = make_reader(pipeline.data_config, input_parts(pipeline, kind),
                         column_rules(pipeline, {"label": 2}))
    batches = list(reader.dataset(batch_size, 1, False, **kwargs))
    return reader, batches, {k: np.concatenate([b[k].numpy() for b in batches])
                             for k in batches[0] if k != BAD_ROWS_KEY}


def test_binary_criteo_rows_read_back_exactly(tmp_path):
    parts = [write_part(tmp_path, "part0", 7, 1), write_part(tmp_path, "part1", 4, 2)]
    loaded = config_lib.load(criteo_config(tmp_path))
    reader, batches, got = read_all(loaded)
    assert [len(b["label"]) for b in batches] == [5, 5, 1] and reader.num_rows() == 11
    category = np.concatenate([p["category"] for p in parts])
    dense = np.concatenate([p["dense"] for p in parts])
    np.testing.assert_array_equal(got["label"], np.concatenate([p["label"][:, 0] for p in parts]))
    assert got["f1"].dtype == np.float32 and got["f13"].dtype == np.int64
    np.testing.assert_array_equal(got["f1"], dense[:, 0])
    np.testing.assert_array_equal(got["f13"], dense[:, 12].astype(np.int64))
    np.testing.assert_array_equal(got["c1"], category[:, 0].astype(np.int64))
    assert got["c1"][0] == 2**32 - 1
    assert [v.decode() for v in got["c26"]] == [str(v) for v in category[:, 25]]
    # Row sharding keeps every 2nd row of each part; eval reads binary_eval_input's part.
    _, _, shard = read_all(loaded, shard=(2, 1))
    np.testing.assert_array_equal(shard["c1"], np.concatenate(
        [p["category"][1::2, 0] for p in parts]).astype(np.int64))
    _, _, evaluated = read_all(loaded, "eval")
    np.testing.assert_array_equal(evaluated["f1"], parts[0]["dense"][:, 0])


def test_binary_criteo_shuffle_keeps_rows_whole(tmp_path):
    parts = [write_part(tmp_path, "part0", 40, 3), write_part(tmp_path, "part1", 9, 4)]
    loaded = config_lib.load(criteo_config(tmp_path))
    _, _, got = read_all(loaded, batch_size=8, shuffle_buffer_size=16)
    reader = make_reader(loaded.pipeline.data_config, input_parts(loaded.pipeline, "train"))
    rows = [b for b in reader.dataset(8, 1, True, shuffle_buffer_size=16, seed=5)]
    shuffled = {k: np.concatenate([b[k].numpy() for b in rows]) for k in got}
    assert not np.array_equal(shuffled["f1"], got["f1"])
    key = lambda cols: sorted(zip(cols["c1"].tolist(), cols["f1"].tolist(),  # noqa: E731
                                  cols["label"].tolist(), cols["f13"].tolist()))
    assert key(shuffled) == key(got)


def test_binary_criteo_file_errors_name_the_file(tmp_path):
    write_part(tmp_path, "part0", 3, 1)
    loaded = config_lib.load(criteo_config(tmp_path))
    dense = tmp_path / "part0_dense.bin"
    with open(dense, "ab") as f:
        f.write(b"12345")
    with pytest.raises(DataError) as info:
        read_all(loaded)
    assert str(info.value) == (
        f"{dense}: 161 bytes is not a whole number of rows: a dense file holds 52 bytes per "
        "row (13 little-endian float32 values); the file is truncated or not a binary "
        "Criteo dense file.")
    dense.write_bytes(dense.read_bytes()[:52 * 2])
    with pytest.raises(DataError, match=r"part0_category.bin, .*part0_dense.bin and "
                       r".*part0_label.bin hold 3, 2 and 3 rows; the files of one part must "
                       "hold the same rows."):
        read_all(loaded)
    dense.unlink()
    with pytest.raises(DataError) as info:
        read_all(loaded)
    assert str(info.value) == (f"binary_train_input.dense_path path '{tmp_path}/part*_dense.bin'"
                               " matches no file.")
    # mtrec check looks at the same files.
    from mtrec.api import check
    with pytest.raises(ConfigError, match=r"criteo.config:1: binary_train_input.dense_path "
                       r"path .* matches no file"):
        check(criteo_config(tmp_path))


def test_binary_criteo_bad_value_names_file_row_and_column(tmp_path):
    arrays = write_part(tmp_path, "part0", 6, 1)
    arrays["label"][3] = 2  # not a class of the binary tower
    arrays["label"].tofile(tmp_path / "part0_label.bin")
    loaded = config_lib.load(criteo_config(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError):
        read_all(loaded)
    reader = make_reader(loaded.pipeline.data_config, input_parts(loaded.pipeline, "train"),
                         column_rules(loaded.pipeline, {"label": 2}))
    assert reader.locate_error() == (f"{tmp_path}/part0_label.bin: row 4: column 'label': "
                                     "label 2 is not a class: the tower expects 0 or 1")
    arrays["dense"][1, 0] = np.nan
    arrays["dense"].tofile(tmp_path / "part0_dense.bin")
    assert reader.locate_error() == (f"{tmp_path}/part0_dense.bin: row 2: column 'f1': "
                                     "'nan' is not a finite number")
    loaded.pipeline.data_config.ignore_error = True
    reader, batches, got = read_all(loaded)
    assert sum(int(b[BAD_ROWS_KEY]) for b in batches) == 2 and len(got["label"]) == 4


def _line(needle: str) -> int:
    return next(i for i, t in enumerate(CRITEO.splitlines(), 1) if needle in t)


@pytest.mark.parametrize("edit, message", [
    (('input_name: "c26"', 'input_name: "price"'),
     rf"criteo.config:{_line('c26')}: input_fields 'price': input_type "
     r"CriteoInput reads the columns label, f1..f13 and c1..c26"),
    (("input_type: CriteoInput", "input_type: CSVInput"),
     r"criteo.config:1: binary_train_input names binary Criteo files: set data_config "
     r"input_type: CriteoInput"),
    (('  label_path: "{d}/part*_label.bin"\n', ""),
     r"criteo.config:1: binary_train_input has 1 category_path, 1 dense_path and 0 "
     r"label_path entries; give one of each per part of the data."),
    (("binary_eval_input {{", 'eval_input_path: "x.csv"\nbinary_eval_input {{'),
     r"criteo.config:7: binary_eval_input and eval_input_path both name the eval files"),
])
def test_binary_criteo_config_errors_name_the_line(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load(criteo_config(tmp_path, CRITEO.replace(*edit)))


@pytest.mark.slow
def test_binary_criteo_trains_and_exports(tmp_path):
    write_part(tmp_path, "part0", 12, 1)
    write_part(tmp_path, "part1", 8, 2)
    from mtrec import api
    # binary_eval_input is evaluation data: exporter "best" is accepted and keeps the best.
    text = CRITEO + 'export_config {{ exporter_type: "best" }}\n'
    api.train(criteo_config(tmp_path, text), model_dir=str(tmp_path / "model"))
    assert tf.io.gfile.glob(str(tmp_path / "model" / "export" / "best" / "*" / "saved_model.pb"))
    assert tf.io.gfile.glob(str(tmp_path / "model" / "best" / "*.index"))
    # `mtrec evaluate` reads binary_eval_input.
    result = api.evaluate(criteo_config(tmp_path), model_dir=str(tmp_path / "model"))
    assert result["global_step"] == 3


# -- BatchTFRecordInput ------------------------------------------------------------------

BATCH_DATA = """
data_config { batch_size: 4 shuffle: false input_type: BatchTFRecordInput
  n_data_batch_tfrecord: 3 label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "price" input_type: FLOAT default_val: "-1" }
  input_fields { input_name: "user" input_type: STRING default_val: "nobody" } }
"""
# Records as {feature_list: values of its rows}; None is an empty Feature (missing); the
# third record has no "price" feature_list (missing in its rows).
RECORDS = [{"clk": [1, 0, 1], "price": [0.5, 1.5, None], "user": ["u1", "u2", "u3"]},
           {"clk": [0], "price": [2.5], "user": [None]},
           {"clk": [1, 0], "user": ["u5", "u6"]}]
# The same rows, one per tf.train.Example (absent feature: missing).
ROWS = [{"clk": 1, "price": 0.5, "user": "u1"}, {"clk": 0, "price": 1.5, "user": "u2"},
        {"clk": 1, "user": "u3"}, {"clk": 0, "price": 2.5}, {"clk": 1, "user": "u5"},
        {"clk": 0, "user": "u6"}]


def _feature(values):
    values = [] if values is None else values if isinstance(values, list) else [values]
    if not values:
        return tf.train.Feature()
    if isinstance(values[0], int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if isinstance(values[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def write_records(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            lists = {name: tf.train.FeatureList(feature=[_feature(v) for v in values])
                     for name, values in record.items()}
            writer.write(tf.train.SequenceExample(feature_lists=tf.train.FeatureLists(
                feature_list=lists)).SerializeToString())


def batch_data_config(**fields):
    data = config_lib.parse_text(BATCH_DATA).data_config
    for name, value in fields.items():
        setattr(data, name, value)
    return data


def columns_of(batches):
    return {k: np.concatenate([b[k].numpy() for b in batches])
            for k in batches[0] if k != BAD_ROWS_KEY}


def test_batch_tfrecord_reads_the_rows_of_one_row_records(tmp_path):
    write_records(tmp_path / "batch.tfrecord", RECORDS)
    with tf.io.TFRecordWriter(str(tmp_path / "rows.tfrecord")) as writer:
        for row in ROWS:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                name: _feature(v) for name, v in row.items()})).SerializeToString())
    reader = make_reader(batch_data_config(), [str(tmp_path / "batch.tfrecord")], {"clk": 2})
    batches = list(reader.dataset(4, 1, False))
    assert [len(b["clk"]) for b in batches] == [4, 2] and reader.num_rows() == 6
    one_row = make_reader(batch_data_config(input_type=DC.TFRecordInput),
                          [str(tmp_path / "rows.tfrecord")], {"clk": 2})
    expected, got = columns_of(list(one_row.dataset(4, 1, False))), columns_of(batches)
    for name in ("clk", "price", "user"):
        np.testing.assert_array_equal(got[name], expected[name])
    np.testing.assert_array_equal(got["clk"], [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(got["price"], np.float32([0.5, 1.5, -1, 2.5, -1, -1]))
    assert got["user"].tolist() == [b"u1", b"u2", b"u3", b"nobody", b"u5", b"u6"]
    # Records shuffle and shard whole: every row is read once.
    shuffled = columns_of(list(reader.dataset(4, 1, True, shuffle_buffer_size=6, seed=1)))
    assert sorted(shuffled["user"].tolist()) == sorted(got["user"].tolist())
    shard = columns_of(list(reader.dataset(4, 1, False, shard=(3, 1))))
    assert shard["user"].tolist() == [b"nobody"]


def test_batch_tfrecord_bad_records_are_named_or_skipped(tmp_path):
    path = tmp_path / "batch.tfrecord"
    uneven = dict(RECORDS[1], price=[2.5, 9.5])  # 2 prices for 1 row
    write_records(path, [RECORDS[0], uneven, RECORDS[2]])
    reader = make_reader(batch_data_config(), [str(path)], {"clk": 2})
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(reader.dataset(4, 1, False))
    assert reader.locate_error() == (
        f"{path}: record 2: its feature_lists hold different numbers of rows ('clk' 1, "
        "'price' 2, 'user' 1); every feature_list of a record holds one Feature per row")
    skipping = make_reader(batch_data_config(ignore_error=True), [str(path)], {"clk": 2})
    batches = list(skipping.dataset(4, 1, False))
    assert sum(int(b[BAD_ROWS_KEY]) for b in batches) == 2  # the bad record's 2 rows
    assert columns_of(batches)["user"].tolist() == [b"u1", b"u2", b"u3", b"u5", b"u6"]
    # A row with a label outside its classes, and one with two values.
    write_records(path, [{"clk": [1, 2], "user": ["a", "b"]}])
    assert reader.locate_error() == (f"{path}: record 1: row 2: feature 'clk': label 2 is "
                                     "not a class: the tower expects 0 or 1")
    write_records(path, [{"clk": [1, 0], "user": ["a", ["b", "c"]]}])
    assert reader.locate_error() == (
        f"{path}: record 1: row 2: feature 'user': holds 2 values; BatchTFRecordInput reads "
        'one value per feature (write a tag or sequence as one "a|b|c" bytes value)')


def test_n_data_batch_tfrecord_elsewhere_is_a_warning(tmp_path):
    from conftest import TINY_INPUTS
    text = TINY_INPUTS.replace("batch_size: 4", "batch_size: 4\n  n_data_batch_tfrecord: 8")
    text += ('model_config { model_class: "SimpleMultiTask" feature_groups { group_name: '
             '"all" feature_names: ["user", "price"] wide_deep: DEEP } simple_multi_task { '
             'task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] } '
             "} } }\n")
    path = tmp_path / "x.config"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "n_data_batch" in t)
    assert f"{path}:{line}: n_data_batch_tfrecord is ignored: only input_type " \
           "BatchTFRecordInput reads several rows per record." in config_lib.load(
               str(path)).warnings
