"""TFRecordInput, gzip-compressed CSV, drop_remainder, file_shard, `mtrec check`'s look at
the input files, and the config errors of the EasyRec data/optimizer options mtrec does not
run."""
import gzip
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_overrides, sample_config
from mtrec import config as config_lib
from mtrec.config.check_data import check_input_files
from mtrec.data.reader import make_reader
from mtrec.errors import ConfigError
from mtrec.protos import data_pb2
from mtrec.training.inputs import shard_input

DC = data_pb2.DatasetConfig
TINY = """
data_config {
  batch_size: 4
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "user" input_type: STRING default_val: "nobody" }
  input_fields { input_name: "price" input_type: FLOAT default_val: "1.5" }
  input_fields { input_name: "big" input_type: INT64 }
  input_fields { input_name: "flag" input_type: BOOL }
  input_fields { input_name: "w" input_type: DOUBLE }
}
"""
RULES = {"clk": 2}


def data_config(extra: str = "") -> data_pb2.DatasetConfig:
    return config_lib.parse_text(TINY.replace("batch_size: 4", "batch_size: 4 " + extra)
                                 ).data_config


def example(**values) -> bytes:
    """A tf.train.Example: bytes -> bytes_list, float -> float_list, int or list of ints ->
    int64_list."""
    feature = {}
    for name, value in values.items():
        if isinstance(value, bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, float):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            ints = value if isinstance(value, list) else [value]
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=ints))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path, records, compression_type=""):
    with tf.io.TFRecordWriter(str(path), options=compression_type) as writer:
        for record in records:
            writer.write(record)
    return str(path)


GOOD = [example(clk=1, user=b"a", price=2.0, big=2**60 + 1, flag=1, w=0.25),
        example(clk=0),  # every other feature absent: its default_val
        example(clk=1, user=b"NULL", big=-5, flag=0, w=-1.0)]


def read(reader, batch_size=8, **kwargs) -> dict:
    columns = {}
    for batch in reader.dataset(batch_size, 1, False, **kwargs):
        for name, values in batch.items():
            value = values.numpy().tolist()  # a scalar: the bad-row count
            columns.setdefault(name, []).extend(value if isinstance(value, list) else [value])
    return columns


def test_tfrecord_rows_are_typed_and_absent_features_take_defaults(tmp_path):
    """Plain and GZIP files (by data_compression_type, or by the .gz name) read the same."""
    plain = write_records(tmp_path / "a.tfrecord", GOOD)
    zipped = write_records(tmp_path / "a.tfrecord.gz", GOOD, "GZIP")
    expected = {"clk": [1, 0, 1], "user": [b"a", b"nobody", b"nobody"],
                "price": [2.0, 1.5, 1.5], "big": [2**60 + 1, 0, -5],
                "flag": [True, False, False], "w": [0.25, 0.0, -1.0]}
    data = data_config("input_type: TFRecordInput")
    columns = read(make_reader(data, [plain, zipped], RULES))
    assert columns == {k: v * 2 for k, v in expected.items()}
    reader = make_reader(data_config('input_type: TFRecordInput data_compression_type: "GZIP"'),
                         [write_records(tmp_path / "b.tfrecord", GOOD, "GZIP")], RULES)
    assert read(reader) == expected and reader.num_rows() == 3
    batch = next(iter(reader.dataset(8, 1, False)))
    assert batch["clk"].dtype == tf.int32 and batch["w"].dtype == tf.float64


def test_tfrecord_matches_csv_on_the_sample_data(small_taobao, tmp_path):
    """The Taobao sample rows written as Examples (empty cells as absent features) give the
    CSV reader's batches."""
    train_path, _ = small_taobao
    loaded = config_lib.load(sample_config("mmoe_on_taobao.config"))
    data = loaded.pipeline.data_config
    fields = list(data.input_fields)
    records = []
    with open(train_path, encoding="utf-8") as f:
        for line in list(f)[:300]:
            cells = line.rstrip("\n").split(data.separator)
            values = {}
            for field, cell in zip(fields, cells):
                if cell == "":
                    continue
                if field.input_type == DC.STRING:
                    values[field.input_name] = cell.encode()
                elif field.input_type in (DC.FLOAT, DC.DOUBLE):
                    values[field.input_name] = float(cell)
                else:
                    values[field.input_name] = int(cell)
            records.append(example(**values))
    path = write_records(tmp_path / "train.tfrecord", records)
    csv_batches = list(make_reader(data, [train_path]).dataset(100, 1, False))[:3]
    data.input_type = DC.TFRecordInput
    record_batches = list(make_reader(data, [path]).dataset(100, 1, False))
    assert len(record_batches) == 3
    for a, b in zip(csv_batches, record_batches):
        for field in fields:
            name = field.input_name
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy(), err_msg=name)


@pytest.mark.parametrize("bad, problem", [
    (example(clk=1, big=[1, 2]), r"feature 'big': holds 2 values; TFRecordInput reads one"),
    (example(clk=1, price=3), r"feature 'price': holds a int64_list; an input field of type "
                              r"FLOAT is read from a float_list"),
    (example(clk=2), r"feature 'clk': label 2 is not a class"),
    (example(user=b"u"), r"feature 'clk': the label is empty"),
    (example(clk=1, w=float("inf")), r"feature 'w': 'inf' is not a finite number"),
    (b"\x01\x02garbage", r"not a tf.train.Example"),
], ids=["two_values", "wrong_list", "not_a_class", "empty_label", "inf", "not_an_example"])
def test_tfrecord_bad_record_names_file_and_record(tmp_path, bad, problem):
    path = write_records(tmp_path / "bad.tfrecord", GOOD + [bad] + GOOD)
    reader = make_reader(data_config("input_type: TFRecordInput"), [path], RULES)
    with pytest.raises(tf.errors.OpError):
        read(reader)
    where = reader.locate_error()
    assert where.startswith(f"{path}: record 4: ")
    assert re.search(problem, where), where


def test_tfrecord_ignore_error_drops_and_counts_bad_values(tmp_path):
    path = write_records(tmp_path / "bad.tfrecord",
                         GOOD + [example(clk=3), example(clk=1, big=[1, 2])] + GOOD)
    columns = read(make_reader(data_config("input_type: TFRecordInput ignore_error: true"),
                               [path], RULES), batch_size=4)
    assert columns["clk"] == [1, 0, 1, 1, 0, 1] and sum(columns["__bad_rows__"]) == 2


def test_damaged_tfrecord_names_the_record(tmp_path):
    data = open(write_records(tmp_path / "a.tfrecord", GOOD), "rb").read()
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(data[:-7])  # the last record cut short
    reader = make_reader(data_config("input_type: TFRecordInput"), [str(path)], RULES)
    with pytest.raises(tf.errors.DataLossError):
        read(reader)
    assert reader.locate_error().startswith(
        f"{path}: record 3: the file is damaged, truncated or not TFRecord (if it is "
        "compressed, set data_compression_type")


CSV_ROWS = "1,a,2.5,7,true,0.5\n0,,,8,false,1\n1,c,3,9,1,2\n"


def test_gzip_csv_reads_like_plain_csv_and_bad_row_names_file_and_line(tmp_path):
    plain = tmp_path / "a.csv"
    plain.write_text(CSV_ROWS)
    zipped = tmp_path / "a.csv.gz"
    with gzip.open(zipped, "wt") as f:
        f.write(CSV_ROWS)
    renamed = tmp_path / "a_gzip.csv"  # GZIP by data_compression_type, not by its name
    shutil.copy(zipped, renamed)
    expected = read(make_reader(data_config(), [str(plain)], RULES))
    assert expected["user"] == [b"a", b"nobody", b"c"]
    assert read(make_reader(data_config(), [str(zipped)], RULES)) == expected
    reader = make_reader(data_config('data_compression_type: "GZIP"'), [str(renamed)], RULES)
    assert read(reader) == expected and reader.num_rows() == 3
    with gzip.open(zipped, "wt") as f:
        f.write(CSV_ROWS + "1,d,x,1,true,1\n")
    reader = make_reader(data_config(), [str(zipped)], RULES)
    with pytest.raises(tf.errors.InvalidArgumentError):
        read(reader)
    assert reader.locate_error() == f"{zipped}:4: column 'price': 'x' is not a number"
    # A plain file said to be GZIP: named, not a traceback.
    reader = make_reader(data_config('data_compression_type: "GZIP"'), [str(plain)], RULES)
    with pytest.raises(tf.errors.DataLossError):
        read(reader)
    assert reader.locate_error().startswith(f"{plain}: not a readable GZIP file")


def test_header_of_a_gzip_csv_is_read(tmp_path):
    zipped = tmp_path / "h.csv.gz"
    with gzip.open(zipped, "wt") as f:
        f.write("w,flag,big,price,user,clk\n0.5,true,7,2.5,a,1\n")
    columns = read(make_reader(data_config("with_header: true"), [str(zipped)], RULES))
    assert columns["user"] == [b"a"] and columns["big"] == [7] and columns["w"] == [0.5]


@pytest.mark.parametrize("kind", ["csv", "tfrecord"])
def test_drop_remainder_drops_the_short_last_batch(tmp_path, kind):
    rows = 10
    if kind == "csv":
        path = tmp_path / "a.csv"
        path.write_text("".join(f"{i % 2},u{i},1,{i},true,1\n" for i in range(rows)))
        data = data_config()
    else:
        path = write_records(tmp_path / "a.tfrecord",
                             [example(clk=i % 2, big=i) for i in range(rows)])
        data = data_config("input_type: TFRecordInput")
    reader = make_reader(data, [str(path)], RULES)
    sizes = [len(b["clk"]) for b in reader.dataset(4, 1, False)]
    assert sizes == [4, 4, 2]
    for shuffle, buffer in ((False, 0), (True, 8)):  # also the block-shuffled path
        batches = list(reader.dataset(4, 2, shuffle, buffer, seed=1, drop_remainder=True))
        assert [len(b["clk"]) for b in batches] == [4, 4] * 2
        assert batches[0]["clk"].shape == (4,)  # static: every batch is full


def test_file_shard_splits_by_file_or_by_row():
    files = ["a", "b", "c"]
    unset, by_file, by_row = DC(), DC(file_shard=True), DC(file_shard=False)
    assert shard_input(unset, files, 2, 1) == (["b"], False)  # enough files: by file
    assert shard_input(unset, files, 4, 1) == (files, True)  # too few: by row
    assert shard_input(by_file, files, 2, 0) == (["a", "c"], False)
    assert shard_input(by_row, files, 2, 0) == (files, True)
    assert shard_input(by_row, files, 1, 0) == (files, False)
    with pytest.raises(Exception, match=r"file_shard: true with 3 training file\(s\) for 4 "
                                        r"workers"):
        shard_input(by_file, files, 4, 0)


# -- mtrec check: the input files, and config errors

CHECK_CONFIG = TINY.replace("data_config {", 'train_input_path: "{train}"\n'
                            'eval_input_path: "{eval}"\ndata_config {\n  with_header: true')


def problems_of(tmp_path, train, evaluate):
    text = CHECK_CONFIG.replace("{train}", train).replace("{eval}", evaluate)
    pipeline = config_lib.parse_text(text)
    p = config_lib.Problems(config_lib.Source(str(tmp_path / "x.config"), text))
    check_input_files(pipeline, p)
    return p


def test_check_input_files(tmp_path):
    header = "clk,user,price,big,flag,w\n"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "part-0.csv").write_text(header)
    with gzip.open(tmp_path / "d" / "part-1.csv.gz", "wt") as f:
        f.write("clk,user,price,flag,w\n")
    p = problems_of(tmp_path, str(tmp_path / "d" / "part-*"), "hdfs://cluster/eval/*")
    assert p.errors == [f"{tmp_path}/x.config:2: {tmp_path}/d/part-1.csv.gz:1: the header has "
                        "no column 'big'; it has: clk, user, price, flag, w."]
    assert p.warnings == [f"{tmp_path}/x.config:3: eval_input_path 'hdfs://cluster/eval/*' is "
                          "on a remote file system and was not checked; mtrec reads local or "
                          "mounted files."]
    p = problems_of(tmp_path, str(tmp_path / "d" / "part-0.csv"),
                    f"{tmp_path}/nothing*,{tmp_path}/missing.csv")
    assert p.errors == [
        f"{tmp_path}/x.config:3: eval_input_path path '{tmp_path}/nothing*' matches no file; "
        "relative paths are from the current directory (mtrec check --skip_data_check checks "
        "the config without its data).",
        f"{tmp_path}/x.config:3: eval_input_path file '{tmp_path}/missing.csv' not found; "
        "relative paths are from the current directory (mtrec check --skip_data_check checks "
        "the config without its data)."]


def test_cli_check_looks_at_the_data_unless_told_not_to(tmp_path):
    from mtrec.cli import run
    path = tmp_path / "x.config"
    path.write_text(open(sample_config("mmoe_on_taobao.config")).read())
    missing = ["--set", f"train_input_path={tmp_path}/none.csv"]
    with pytest.raises(ConfigError, match=r"train_input_path file '.*none.csv' not found"):
        run(["check", "--config", str(path)] + missing)
    assert run(["check", "--config", str(path), "--skip_data_check"] + missing) == 0


@pytest.mark.parametrize("snippet, message", [
    ("data_config { input_type: CriteoInput }",
     r"x.config:1: input_type: CriteoInput reads binary_train_input \{ category_path"),
    ('data_config { data_compression_type: "gzip" }',
     r"x.config:1: data_compression_type 'gzip' is not one of .* \(did you mean 'GZIP'\?\)"),
    ('data_config { data_compression_type: "ZLIB" }',
     r"x.config:1: data_compression_type \"ZLIB\" is for TFRecord files"),
    ("train_config { incr_save_config { fs { incr_save_dir: \"x\" } } }",
     r"x.config:1: incr_save_config .* is not supported; remove it"),
    ("train_config {\n optimizer_config { adam_optimizer {} "
     "embedding_learning_rate_multiplier: 2 }\n optimizer_config { adam_optimizer {} } }",
     r"x.config:2: embedding_learning_rate_multiplier with two optimizer_config entries"),
    ("train_config {\n optimizer_config { rms_prop_optimizer { decay: 1.0 } } }",
     r"x.config:2: rms_prop_optimizer: decay must be in \[0, 1\), got 1"),
    ("train_config {\n optimizer_config { rms_prop_optimizer { epsilon: 0 } } }",
     r"x.config:2: rms_prop_optimizer: epsilon must be above 0"),
    ("train_config {\n optimizer_config { ftrl_optimizer { learning_rate_power: 0.5 } } }",
     r"x.config:2: ftrl_optimizer: learning_rate_power must be at most 0"),
    ("train_config {\n optimizer_config { ftrl_optimizer { l1_reg: -1 } } }",
     r"x.config:2: ftrl_optimizer: l1_reg must be at least 0"),
])
def test_config_errors_name_the_line(tmp_path, snippet, message):
    from conftest import TINY_INPUTS
    # The snippet first (its line numbers are known), then the data and features of
    # TINY_INPUTS (a data_config snippet is merged into its block, as EasyRec merges).
    text = snippet + "\n" + TINY_INPUTS[TINY_INPUTS.index("data_config {"):]
    text += ("model_config { model_class: \"SimpleMultiTask\" feature_groups { group_name: "
             "\"all\" feature_names: [\"user\", \"price\"] wide_deep: DEEP } simple_multi_task "
             "{ task_towers { tower_name: \"ctr\" label_name: \"clk\" dnn { hidden_units: [4] } "
             "} } }\n")
    path = tmp_path / "x.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_lib.load(str(path))


@pytest.mark.slow
def test_training_on_gzip_tfrecord_with_rms_prop_and_ftrl(small_taobao, tmp_path):
    """The sample MMoE trains 10 steps from a GZIP TFRecord file, dense weights with
    rms_prop_optimizer and the embedding tables with ftrl_optimizer, drop_remainder on."""
    import mtrec
    train_path, test_path = small_taobao
    pipeline = config_lib.load(sample_config("mmoe_on_taobao.config")).pipeline
    fields = list(pipeline.data_config.input_fields)
    records = []
    with open(train_path, encoding="utf-8") as f:
        for line in f:
            values = {}
            for field, cell in zip(fields, line.rstrip("\n").split(",")):
                if cell:
                    values[field.input_name] = (cell.encode() if field.input_type == DC.STRING
                                                else int(cell))
            records.append(example(**values))
    path = write_records(tmp_path / "train.tfrecord.gz", records, "GZIP")
    train = pipeline.train_config
    del train.optimizer_config[:]
    train.optimizer_config.add().rms_prop_optimizer.learning_rate.constant_learning_rate \
        .learning_rate = 0.001
    train.optimizer_config.add().ftrl_optimizer.learning_rate.constant_learning_rate \
        .learning_rate = 0.05
    pipeline.data_config.input_type = DC.TFRecordInput
    pipeline.data_config.drop_remainder = True
    # No evaluation or export: training and its checkpoint are what matter here.
    for setting in fast_overrides(path, "", steps=10) + ["export_config.exporter_type=latest"]:
        config_lib.set_path(pipeline, *setting.split("=", 1))
    model_dir = str(tmp_path / "m")
    mtrec.train(pipeline, model_dir=model_dir)
    checkpoint = tf.train.latest_checkpoint(model_dir)
    assert checkpoint.endswith("ckpt-10")
    saved = " ".join(name for name, _ in tf.train.list_variables(checkpoint))
    assert "/linear/" in saved and "/accumulator/" in saved  # FTRL's slots of the tables
