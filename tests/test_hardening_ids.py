"""Issue #25: an identity id outside [0, num_buckets) (an IdFeature, TagFeature or
SequenceFeature with num_buckets and no hash_bucket_size or vocabulary) never silently
becomes the missing id: it is a bad row naming file:line (Parquet: file, row) and the
column, in CSV and Parquet; with ignore_error the row is skipped and counted. A
SequenceFeature cell separated by another usual separator than the config's is a bad row
too. Empty cells stay missing values."""
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from google.protobuf import text_format

from conftest import ROOT
from mtrec.data.reader import make_reader
from mtrec.data.schema import ColumnRule, column_rules, row_rules, text_problem
from mtrec.protos import pipeline_pb2
from test_hardening_cells import read

# A label, an INT64 identity id (age, num_buckets 100), a weighted tag bag (tags,
# num_buckets 10), a history sequence (hist, num_buckets 20, "|" between positions and
# ";" inside one) and a hashed user.
PIPELINE = """
data_config {
  batch_size: 4
  shuffle: false
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "age" input_type: INT64 }
  input_fields { input_name: "tags" input_type: STRING }
  input_fields { input_name: "hist" input_type: STRING }
  input_fields { input_name: "user" input_type: STRING }
  %s
}
feature_config {
  features { input_names: "age" num_buckets: 100 embedding_dim: 4 }
  features { input_names: "tags" feature_type: TagFeature num_buckets: 10 kv_separator: ":"
             embedding_dim: 4 }
  features { input_names: "hist" feature_type: SequenceFeature num_buckets: 20
             separator: "|" seq_multi_sep: ";" embedding_dim: 4 }
  features { input_names: "user" hash_bucket_size: 50 embedding_dim: 4 }
}
"""
NAMES = ["clk", "age", "tags", "hist", "user"]
GOOD = ["1", "7", "1|2:0.5||3", "1;2|3||4", "u1"]
BAD_LINE = 4  # of 6 rows


def pipeline(extra=""):
    """The pipeline config, parsed without mtrec's validation (SequenceFeature)."""
    return text_format.Parse(PIPELINE % extra, pipeline_pb2.PipelineConfig())


def rows_with(column, bad):
    rows = [list(GOOD) for _ in range(6)]
    rows[BAD_LINE - 1][NAMES.index(column)] = bad
    return rows


def write_csv(path, rows):
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return str(path)


def write_parquet(path, rows):
    columns = list(zip(*rows))
    pq.write_table(pa.table({
        "clk": pa.array([int(v) for v in columns[0]], pa.int32()),
        "age": pa.array([int(v) for v in columns[1]], pa.int64()),
        "tags": pa.array(columns[2]), "hist": pa.array(columns[3]),
        "user": pa.array(columns[4])}), str(path))
    return str(path)


def reader(path, parquet=False, ignore_error=False):
    config = pipeline(("input_type: ParquetInput\n" if parquet else "")
                      + f"ignore_error: {str(ignore_error).lower()}")
    return make_reader(config.data_config, [path], column_rules(config, {"clk": 2}))


# (file type, column, bad cell, what the error says); more cells are in CELLS below.
BAD = [
    ("csv", "age", "100", r"id '100' is out of range: feature 'age' has num_buckets: 100 "
                          r"\(ids 0\.\.99\)"),
    ("csv", "tags", "1|10:0.5|2", r"id '10' in '1\|10:0\.5\|2' is out of range: feature 'tags' "
                                  r"has num_buckets: 10 \(ids 0\.\.9\)"),
    ("csv", "hist", '"1,2,3"', r"'1,2,3' looks separated by \",\" but the config says "
                               r"separator: \"\|\" seq_multi_sep: \";\" \(feature 'hist'\)"),
    ("parquet", "age", -1, r"id '-1' is out of range: feature 'age' has num_buckets: 100"),
    ("parquet", "tags", "1|x", r"id 'x' in '1\|x' is not an integer id: feature 'tags'"),
    ("parquet", "hist", "1\x1d2", r"'1\\x1d2' looks separated by \"\\x1d\" but the config "
                                  r"says separator: \"\|\""),
]


@pytest.mark.parametrize("kind, column, cell, problem", BAD,
                         ids=[f"{k}-{c}={v!r}" for k, c, v, _ in BAD])
def test_a_bad_id_is_one_error_naming_the_row_and_column_or_is_skipped(
        tmp_path, kind, column, cell, problem):
    rows = rows_with(column, str(cell))
    if kind == "parquet":
        path = write_parquet(tmp_path / "data.parquet", rows)
        where = f"{path}: row {BAD_LINE}: column {column!r}: "
    else:
        path = write_csv(tmp_path / "data.csv", rows)
        where = f"{path}:{BAD_LINE}: column {column!r}: "
    located = read(reader(path, kind == "parquet"))
    assert isinstance(located, str), f"{cell!r} in {column} was read: {located}"
    assert located.startswith(where), located
    assert re.search(problem, located), located
    assert read(reader(path, kind == "parquet", ignore_error=True)) == (5, 1)


@pytest.mark.parametrize("parquet", [False, True], ids=["csv", "parquet"])
def test_good_ids_and_empty_cells_are_read(tmp_path, parquet):
    rows = [list(GOOD) for _ in range(5)]
    rows[1][1:4] = ["0", "0", "0"]
    rows[2][1:4] = ["99", "9:2|+9", " 19 ;19|"]
    rows[3][1:4] = ["", "", ""]  # missing: the default (age 0), an empty bag, no history
    rows[4][1:4] = ["NULL", "NULL", "NULL"] if not parquet else ["", "", ""]
    if parquet:
        columns = list(zip(*rows))
        path = str(tmp_path / "data.parquet")
        pq.write_table(pa.table({
            "clk": pa.array([int(v) for v in columns[0]], pa.int32()),
            "age": pa.array([int(v) if v else None for v in columns[1]], pa.int64()),
            "tags": pa.array([v or None for v in columns[2]]),
            "hist": pa.array([v or None for v in columns[3]]),
            "user": pa.array(columns[4])}), path)
    else:
        path = write_csv(tmp_path / "data.csv", rows)
    batch = next(iter(reader(path, parquet).dataset(8, 1, False)))
    assert batch["age"].numpy().tolist() == [7, 0, 99, 0, 0]
    assert [v.decode() for v in batch["hist"].numpy()][:3] == ["1;2|3||4", "0", " 19 ;19|"]


def test_a_default_val_outside_num_buckets_still_means_missing(tmp_path):
    # default_val -1 is the usual "missing id" of an identity column: not an error.
    config = pipeline()
    config.data_config.input_fields[1].default_val = "-1"
    path = write_csv(tmp_path / "data.csv", rows_with("age", ""))
    batch = next(iter(make_reader(config.data_config, [path],
                                  column_rules(config, {"clk": 2})).dataset(8, 1, False)))
    assert batch["age"].numpy().tolist() == [7, 7, 7, -1, 7, 7]


def test_column_rules_take_the_strictest_range_and_skip_hashed_features():
    config = pipeline()
    config.feature_config.features.add(feature_name="age2", input_names=["age"],
                                       num_buckets=30, embedding_dim=4)
    config.feature_config.features.add(feature_name="age3", input_names=["age"],
                                       num_buckets=5, hash_bucket_size=5, embedding_dim=4)
    config.feature_config.features.add(feature_name="age4", input_names=["age"],
                                       num_buckets=3, vocab_list=["1", "2"], embedding_dim=4)
    rules = column_rules(config, {"clk": 2})
    assert rules["age"] == ColumnRule(num_ids=30, id_feature="age2")
    assert rules["clk"] == ColumnRule(required=True, classes=2)
    assert rules["tags"] == ColumnRule(num_ids=10, id_feature="tags", id_separators=("|",),
                                       kv_separator=":")
    assert rules["hist"] == ColumnRule(num_ids=20, id_feature="hist", id_separators=("|", ";"),
                                       sequence_separators=("|", ";"), sequence_feature="hist")
    assert "user" not in rules
    # Prediction reads no labels; the id rules stay.
    assert "clk" not in column_rules(config) and column_rules(config)["age"].num_ids == 30


def test_a_hashed_sequence_still_gets_the_separator_rule():
    config = pipeline()
    hist = config.feature_config.features[2]
    hist.ClearField("num_buckets")
    hist.hash_bucket_size = 1000
    hist.ClearField("seq_multi_sep")
    rule = column_rules(config)["hist"]
    assert rule == ColumnRule(sequence_separators=("|",), sequence_feature="hist")
    field = config.data_config.input_fields[3]
    assert text_problem("a|b|c", field, {"hist": rule}) is None
    assert text_problem("a;b;c", field, {"hist": rule}) == (
        "'a;b;c' looks separated by \";\" but the config says separator: \"|\" "
        "(feature 'hist')")


# Cells of each string column, good and bad: the graph rule and the Python locator agree.
CELLS = {
    "tags": ["", " ", "1", "9", "10", "+3", "-0", "-1", "03", " 4 ", "1|", "|", "||5", "1:x",
             ":1", "1:", "x", "1.0", "1e1", "1|2|3:0.5", "0" * 30 + "7", "9" * 19, "NULL",
             "1;2", "١"],
    "hist": ["", "1", "1;2|3", "19|20", "1,2", "1\x1e2", "1\x1d", " 5 ", ";|;", "a", "-1"],
}


@pytest.mark.parametrize("column", sorted(CELLS))
def test_the_graph_rule_and_the_locator_agree(column):
    config = pipeline()
    rules = column_rules(config)
    field = next(f for f in config.data_config.input_fields if f.input_name == column)
    cells = CELLS[column]
    missing = tf.constant([c == "" for c in cells])
    graph = row_rules(field, tf.constant(cells), missing, rules).numpy().tolist()
    python = [c == "" or text_problem(c, field, rules) is None for c in cells]
    assert graph == python, [(c, g) for c, g, p in zip(cells, graph, python) if g != p]
    # The features read these as ids; the rule accepts exactly what they parse in range.
    assert python[cells.index("1")] and not python[cells.index("-1" if column == "hist"
                                                                else "10")]


# ---------------------------------------------------------------------------
# The command line


TRAIN = """
train_config {
  optimizer_config { adam_optimizer { learning_rate { constant_learning_rate {
    learning_rate: 0.01 } } } }
  num_steps: 4
  log_step_count_steps: 2
}
data_config {
  batch_size: 4
  shuffle: false
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "age" input_type: INT64 }
  input_fields { input_name: "tags" input_type: STRING }
  %s
}
feature_config {
  features { input_names: "age" num_buckets: 100 embedding_dim: 4 }
  features { input_names: "tags" feature_type: TagFeature num_buckets: 10 embedding_dim: 4 }
}
model_config {
  model_class: "DBMTL"
  feature_groups { group_name: "all" feature_names: ["age", "tags"] wide_deep: DEEP }
  dbmtl {
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
  }
}
"""


def cli_train(tmp_path, data, extra=""):
    config = tmp_path / "pipeline.config"
    config.write_text(TRAIN % extra + f'train_input_path: "{data}"\n')
    return subprocess.run([sys.executable, "-m", "mtrec", "train", "--config", str(config),
                           "--model_dir", str(tmp_path / "model")], capture_output=True,
                          text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))


def train_rows(n, bad_line=None, bad="150"):
    rows = [[str(i % 2), str(i % 100), f"{i % 10}|{(i + 3) % 10}"] for i in range(n)]
    if bad_line:
        rows[bad_line - 1][1] = bad
    return rows


@pytest.mark.slow
def test_cli_train_names_an_out_of_range_id_in_csv_and_parquet(tmp_path):
    data = write_csv(tmp_path / "train.csv", train_rows(24, bad_line=13))
    result = cli_train(tmp_path, data)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("mtrec: error:")]
    assert errors == [f"mtrec: error: {data}:13: column 'age': id '150' is out of range: "
                      "feature 'age' has num_buckets: 100 (ids 0..99). Fix the row, or set "
                      "data_config.ignore_error: true to skip bad rows."], result.stderr[-2000:]
    assert "Traceback" not in result.stderr

    rows = train_rows(24, bad_line=13, bad="-7")
    path = str(tmp_path / "train.parquet")
    pq.write_table(pa.table({"clk": pa.array([int(r[0]) for r in rows], pa.int32()),
                             "age": pa.array([int(r[1]) for r in rows], pa.int64()),
                             "tags": pa.array([r[2] for r in rows])}), path)
    result = cli_train(tmp_path, path, "input_type: ParquetInput")
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("mtrec: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"mtrec: error: {path}: row 13: column 'age': id '-7' is out of range"), \
        result.stderr[-2000:]


@pytest.mark.slow
def test_cli_train_with_ignore_error_skips_and_counts_the_row(tmp_path):
    rows = train_rows(24)
    rows[5][2] = "1|12"  # a tag beyond num_buckets: 10
    data = write_csv(tmp_path / "train.csv", rows)
    result = cli_train(tmp_path, data, "ignore_error: true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\b1 (malformed|bad) rows?\b", result.stderr), result.stderr[-2000:]
