"""scripts/easyrec_status.py: the measured table of EasyRec's sample configs (#17, #22)."""
import json
import os
import time

import numpy as np
import pytest

import easyrec_status as status_lib
from mtrec.data.synthetic import token_cells

SAMPLES = status_lib.DEFAULT_SAMPLES
pytestmark = pytest.mark.skipif(not os.path.isdir(SAMPLES),
                                reason=f"EasyRec's samples are not at {SAMPLES}")


def sample(name):
    return os.path.join(SAMPLES, name)


def table_rows(markdown: str) -> dict:
    """{config: [cells]} of the 'Every config' table."""
    rows = {}
    for line in markdown.split("## Every config", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 6 and cells[0].endswith(".config"):
            rows[cells[0]] = cells
    return rows


def test_a_passing_config_row():
    row = status_lib.status(sample("mmoe_on_taobao.config"), train=False)
    assert (row.name, row.family, row.model_class, row.check) == \
        ("mmoe_on_taobao.config", "multi-task", "MMoE", "pass")
    assert (row.problems, row.first_problem, row.train) == (0, "", "not run")


def test_a_config_failing_check_names_file_line_and_counts(tmp_path):
    text = open(sample("mmoe_on_taobao.config"), encoding="utf-8").read()
    # An unknown field: the parser stops at it (one problem, at its line and column).
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("model_config"))
    lines.insert(at + 1, "  no_such_field: 3")
    bad = tmp_path / "mmoe_unknown_field.config"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    row = status_lib.status(str(bad), train=True)
    assert (row.check, row.problems, row.train) == ("fail", 1, "-")
    assert row.first_problem.startswith(f"mmoe_unknown_field.config:{at + 2}:3: ")
    assert '"no_such_field"' in row.first_problem
    # Two validation problems: a label and the sample weight that are not columns.
    two = tmp_path / "mmoe_two_problems.config"
    two.write_text(text.replace("data_config {", 'data_config {\n  sample_weight: "w"\n'
                                '  label_fields: "nope"', 1), encoding="utf-8")
    row = status_lib.status(str(two), train=False)
    assert (row.check, row.problems) == ("fail", 2)
    line = text[:text.index("data_config {")].count("\n") + 3  # the label_fields line
    assert row.first_problem == f"mmoe_two_problems.config:{line}: label_fields: 'nope' is " \
                                "not an input field."


def test_every_problem_goes_past_the_parser_stop(tmp_path):
    text = open(sample("mmoe_on_taobao.config"), encoding="utf-8").read()
    lines = text.splitlines()

    def after(start):
        return next(i for i, line in enumerate(lines) if line.startswith(start)) + 1
    lines.insert(after("model_config"), '  no_such_block { a: 1 b { c: "x}" } }')
    lines.insert(after("train_config"), '  no_such_field: "a" "b"')
    enum = next(i for i, line in enumerate(lines) if "input_type: STRING" in line)
    lines[enum] = lines[enum].replace("input_type: STRING", "input_type: NoSuchType")
    bad = tmp_path / "three.config"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = status_lib.every_problem(str(bad))

    def line_of(snippet):
        return next(i for i, line in enumerate(lines, 1) if snippet in line)
    assert [p.split(": ", 1)[0] for p in found] == [
        f"three.config:{line_of('no_such_field')}:3",
        f"three.config:{line_of('NoSuchType')}:{lines[enum].index('NoSuchType') + 1}",
        f"three.config:{line_of('no_such_block')}:3"]
    assert '"no_such_field"' in found[0] and "NoSuchType" in found[1]
    assert '"no_such_block"' in found[2]
    # A validation problem left after the unknown fields is listed too, with its line.
    label = next(i for i, line in enumerate(lines) if line.strip() == 'label_name: "buy"')
    lines[label] = lines[label].replace('"buy"', '"nope"')
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = status_lib.every_problem(str(bad))
    assert len(found) == 4 and found[3].startswith(f"three.config:{label + 1}: ")
    assert "'nope'" in found[3]


def test_a_cloud_only_sample_fails_check_at_its_line():
    path = sample("deepfm_combo_avazu_kafka.config")
    row = status_lib.status(path, train=True)
    assert (row.family, row.model_class, row.check, row.train) == \
        ("other rank", "DeepFM", "fail", "-")
    line = next(i for i, text in enumerate(open(path), 1) if "kafka" in text.split("#")[0])
    assert row.first_problem.startswith(f"deepfm_combo_avazu_kafka.config:{line}")


def test_families():
    def fam(name):
        return status_lib.family(name, open(sample(name), encoding="utf-8").read())
    assert fam("ppnet_on_taobao.config") == "multi-task"        # RankModel, named ppnet
    assert fam("mmoe_backbone_on_taobao.config") == "multi-task"
    assert fam("din_on_taobao.config") == "DIN/BST rank"
    assert fam("bst_backbone_on_taobao.config") == "DIN/BST rank"
    assert fam("dssm_on_taobao.config") == "match/recall"
    assert fam("deepfm_on_criteo_tfrecord.config") == "other rank"


def test_generated_cells_follow_the_config():
    text = """
train_config { optimizer_config { adam_optimizer { learning_rate {
  constant_learning_rate { learning_rate: 0.01 } } } } num_steps: 10 }
data_config {
  label_fields: "clk" label_fields: "kind"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "kind" input_type: INT32 }
  input_fields { input_name: "score" input_type: FLOAT }
  input_fields { input_name: "tags" input_type: STRING }
  input_fields { input_name: "cat" input_type: INT64 }
  input_fields { input_name: "price" input_type: FLOAT }
  input_fields { input_name: "unused" input_type: STRING }
  input_fields { input_name: "hist_a" input_type: STRING }
  input_fields { input_name: "hist_b" input_type: STRING }
}
feature_config {
  features { input_names: "tags" feature_type: TagFeature separator: "#" kv_separator: "="
             hash_bucket_size: 100 embedding_dim: 4 }
  features { input_names: "cat" num_buckets: 7 embedding_dim: 4 }
  features { input_names: "price" feature_type: RawFeature boundaries: [10, 20, 30]
             embedding_dim: 4 }
  features { input_names: "hist_a" feature_type: SequenceFeature separator: ";"
             num_buckets: 5 embedding_dim: 4 }
  features { input_names: "hist_b" feature_type: SequenceFeature separator: ";"
             hash_bucket_size: 50 embedding_dim: 4 }
}
model_config { model_class: "MMoE" feature_groups { group_name: "all"
  feature_names: ["tags", "cat", "price"] }
  mmoe { expert_dnn { hidden_units: [4] } num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" }
    task_towers { tower_name: "kind" label_name: "kind" num_class: 3 }
    task_towers { tower_name: "score" label_name: "score" loss_type: L2_LOSS } } }
"""
    from mtrec import config as config_lib
    pipeline = config_lib.parse_text(text)
    n = 60
    cells = status_lib.column_cells(pipeline, n, seed=3)
    assert list(cells) == ["clk", "kind", "score", "tags", "cat", "price", "unused", "hist_a",
                           "hist_b"]
    assert all(len(column) == n for column in cells.values())
    assert sorted(set(cells["clk"])) == ["0", "1"]
    assert sorted(set(cells["kind"])) == ["0", "1", "2"]
    assert all(0.0 <= float(v) <= 5.0 for v in cells["score"])
    assert {int(v) for v in cells["cat"]} <= set(range(7))
    assert all(9.0 <= float(v) <= 31.0 for v in cells["price"])
    items = [item for cell in cells["tags"] if cell for item in cell.split("#")]
    assert items and all(item.count("=") == 1 and 0.1 <= float(item.split("=")[1]) < 2.0
                         for item in items)
    # Sequences an attention reads together have the same length in every row.
    def lengths(column):
        return [len(cell.split(";")) if cell else 0 for cell in cells[column]]
    assert lengths("hist_a") == lengths("hist_b") and len(set(lengths("hist_a"))) > 3
    assert {int(v) for cell in cells["hist_a"] if cell for v in cell.split(";")} <= set(range(5))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"easyrec_status_{os.getpid()}.csv")
    try:
        status_lib.write_csv(pipeline, path, 5, seed=3)
        lines = open(path, encoding="utf-8").read().splitlines()
    finally:
        os.remove(path)
    assert len(lines) == 5 and all(len(line.split(",")) == 9 for line in lines)


def test_token_cells_for_sequences():
    rng = np.random.default_rng(0)
    cells = token_cells(rng, 200, ["a", "b", "c"], separator=";", max_len=4,
                        inner_separator="#", inner_len=2)
    lengths = [len(cell.split(";")) if cell else 0 for cell in cells]
    assert set(lengths) == {0, 1, 2, 3, 4}
    assert all(len(item.split("#")) == 2 and set(item.split("#")) <= {"a", "b", "c"}
               for cell in cells if cell for item in cell.split(";"))
    assert cells == token_cells(np.random.default_rng(0), 200, ["a", "b", "c"], separator=";",
                                max_len=4, inner_separator="#", inner_len=2)
    assert token_cells(rng, 3, ["a"], lengths=[0, 2, 1]) == ["", "a|a", "a"]
    with pytest.raises(ValueError, match="lengths"):
        token_cells(rng, 3, ["a"], lengths=[1, 2])
    with pytest.raises(ValueError, match="inner_separator"):
        token_cells(rng, 2, ["a"], inner_len=2)


def test_render_and_top_problems():
    rows = [status_lib.Row("a.config", "multi-task", "MMoE", "pass", train="pass", seconds=3),
            status_lib.Row("b.config", "multi-task", "DBMTL", "pass", train="fail",
                           train_error="train: bad thing", seconds=2),
            status_lib.Row("c.config", "other rank", "DeepFM", "fail", 3,
                           'c.config:4:1: Message type "X" has no field named "kd".'),
            status_lib.Row("d.config", "match/recall", "DSSM", "fail", 1,
                           'd.config:9:3: Message type "X" has no field named "kd".')]
    assert status_lib.top_problems(rows) == [
        ('Message type "X" has no field named "kd".', 2), ("train: bad thing", 1)]
    markdown = status_lib.render(rows, steps=5, trained=True, seconds=60)
    table = table_rows(markdown)
    assert table["a.config"] == ["a.config", "multi-task", "MMoE", "pass", "pass (3 s)", ""]
    assert table["b.config"][4:] == ["fail (2 s)", "train: bad thing"]
    assert table["c.config"][3:5] == ["fail (3)", "-"]
    assert table["d.config"][5].startswith("d.config:9:3: ")
    assert "| **total** | 4 | 2 | 1 of 2 tried |" in markdown
    assert "| multi-task | 2 | 2 | 1 of 2 tried |" in markdown


def test_a_hung_train_is_a_timeout_not_a_stop(tmp_path):
    loaded, _, _ = status_lib.check(sample("mmoe_on_taobao.config"))
    result, error, seconds = status_lib.train_export(
        sample("mmoe_on_taobao.config"), loaded, str(tmp_path), timeout=0.5)
    assert (result, error) == ("timeout", "no result after 0.5 s") and seconds < 30


@pytest.mark.slow
def test_train_and_export_on_generated_data(tmp_path):
    row = status_lib.status(sample("mmoe_on_taobao.config"), train=True,
                            work_root=str(tmp_path), steps=2)
    assert (row.check, row.train, row.train_error) == ("pass", "pass", "")
    assert os.listdir(tmp_path) == []  # the work directory is removed


def test_one_line_keeps_what_failed():
    message = ("cannot read training data (t.csv): Graph execution error:\n\n"
               "Detected at node Gather defined at (most recent call last):\n"
               '  File "x.py", line 1, in f\n\n'
               "indices[3] = 5 is not in [0, 4)\n\t [[{{node Gather}}]] [Op:__inference_f_9]")
    assert status_lib.one_line(message) == ("cannot read training data (t.csv): Graph "
                                            "execution error: indices[3] = 5 is not in [0, 4)")
    assert status_lib.one_line("a: b\nmore") == "a: b"
    assert status_lib.one_line("") == ""


def test_error_detail_reads_the_cause():
    try:
        try:
            raise TypeError("in user code:\n\n    File \"m.py\", line 3, in call\n\n"
                            "    TypeError: unsupported operand type(s) for +: 'int' and 'str'")
        except TypeError as e:
            raise RuntimeError("cannot read training data: Graph execution error:") from e
    except RuntimeError as e:
        assert status_lib.error_detail(e) == \
            "TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    assert status_lib.error_detail(ValueError("one line")) == ""


def test_generated_lookup_rows_find_their_key_in_the_map():
    """A LookupFeature reads input_names[0] as the row's key and input_names[1] as the map
    `k1:v1|k2:v2`: generated rows must have keys the maps hold, or it trains on nothing."""
    text = """
train_config { optimizer_config { adam_optimizer { learning_rate {
  constant_learning_rate { learning_rate: 0.01 } } } } num_steps: 10 }
data_config {
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "key" input_type: STRING }
  input_fields { input_name: "kv" input_type: STRING }
}
feature_config {
  features { input_names: ["key", "kv"] feature_name: "look" feature_type: LookupFeature
             kv_separator: ":" hash_bucket_size: 100 embedding_dim: 4 }
}
model_config { model_class: "MMoE" feature_groups { group_name: "all" feature_names: "look" }
  mmoe { expert_dnn { hidden_units: [4] } num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" } } }
"""
    from mtrec import config as config_lib
    pipeline = config_lib.parse_text(text)
    cells = status_lib.column_cells(pipeline, 50, seed=3)
    separator = pipeline.feature_config.features[0].separator
    maps = [dict(item.split(":") for item in cell.split(separator) if item)
            for cell in cells["kv"]]
    assert all(":" not in key for key in cells["key"])
    found = sum(key in kv for key, kv in zip(cells["key"], maps))
    assert 10 <= found < 50


@pytest.mark.parametrize("input_type", ["TFRecordInput", "ParquetInput", "BatchTFRecordInput"])
def test_generated_tfrecord_and_parquet_read_back_like_csv(tmp_path, input_type):
    """The script writes the data a TFRecord, Parquet or batch TFRecord config reads: the
    same typed columns as its CSV, read through mtrec's own readers."""
    import tensorflow as tf
    from mtrec import config as config_lib
    from mtrec.data.reader import make_reader
    text = """
data_config { label_fields: "clk" batch_size: 8 shuffle: false
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "price" input_type: FLOAT }
  input_fields { input_name: "tags" input_type: STRING } }
feature_config {
  features { input_names: "price" feature_type: RawFeature }
  features { input_names: "tags" feature_type: TagFeature hash_bucket_size: 10 embedding_dim: 4 }
}
model_config { model_class: "MMoE" feature_groups { group_name: "all"
  feature_names: ["price", "tags"] }
  mmoe { expert_dnn { hidden_units: [4] } num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" } } }
"""
    pipeline = config_lib.parse_text(text)
    pipeline.data_config.n_data_batch_tfrecord = 3  # batch TFRecord: records of 3, 3, 2 rows
    csv_path = str(tmp_path / "rows.csv")
    status_lib.write_csv(pipeline, csv_path, 8, seed=4)
    suffix, write = status_lib.WRITERS[getattr(status_lib.DC, input_type)]
    other_path = str(tmp_path / ("rows" + suffix))
    write(pipeline, other_path, 8, seed=4)

    def batch(path, kind):
        pipeline.data_config.input_type = getattr(status_lib.DC, kind)
        dataset = make_reader(pipeline.data_config, [path]).dataset(8, 1, False)
        return next(iter(dataset))

    expected, got = batch(csv_path, "CSVInput"), batch(other_path, input_type)
    for name in ("clk", "price", "tags"):
        a, b = expected[name], got[name]
        if name == "price":
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
        else:
            assert tf.reduce_all(tf.equal(a, b)), name


def test_generated_binary_criteo_reads_back_like_csv(tmp_path):
    """The binary Criteo files the script writes for a CriteoInput config hold the rows of
    its CSV (dense values as float32, the file's type), read through mtrec's readers;
    train_sets names them in binary_*_input."""
    from mtrec import config as config_lib
    from mtrec.config.binary_input import Part
    from mtrec.data.reader import make_reader
    pipeline = config_lib.parse_text("""
data_config { label_fields: "label" input_type: CriteoInput shuffle: false
  input_fields { input_name: "label" input_type: INT32 }
  input_fields { input_name: "f1" input_type: INT64 }
  input_fields { input_name: "f2" input_type: FLOAT }
  input_fields { input_name: "c3" input_type: INT64 } }
feature_config {
  features { input_names: "f1" feature_type: RawFeature min_val: 0 max_val: 90000000 }
  features { input_names: "f2" feature_type: RawFeature min_val: -3 max_val: 5 }
  features { input_names: "c3" hash_bucket_size: 100 embedding_dim: 4 } }
model_config { model_class: "DLRM" }
""")
    base = str(tmp_path / "train")
    status_lib.write_criteo_binary(pipeline, base, 20, seed=4)
    status_lib.write_csv(pipeline, base + ".csv", 20, seed=4)
    files = status_lib.criteo_parts(base)
    assert list(files.values()) == [f"{base}_category.bin", f"{base}_dense.bin",
                                    f"{base}_label.bin"]
    got = next(iter(make_reader(pipeline.data_config, [Part(*files.values())]).dataset(
        20, 1, False)))
    pipeline.data_config.input_type = status_lib.DC.CSVInput
    expected = next(iter(make_reader(pipeline.data_config, [base + ".csv"]).dataset(
        20, 1, False)))
    assert set(got) == set(expected) == {"label", "f1", "f2", "c3"}
    for name in ("label", "c3", "f2"):
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy(), name)
    # f1's whole numbers up to 9e7 pass through the dense file's float32.
    f1 = expected["f1"].numpy()
    np.testing.assert_array_equal(got["f1"].numpy(), f1.astype(np.float32).astype(np.int64))
    assert (f1 > 2**24).any()
    assert status_lib.train_sets(base, "ev", 3, binary=True)[:6] == [
        f"binary_train_input.category_path={base}_category.bin",
        f"binary_train_input.dense_path={base}_dense.bin",
        f"binary_train_input.label_path={base}_label.bin",
        "binary_eval_input.category_path=ev_category.bin",
        "binary_eval_input.dense_path=ev_dense.bin", "binary_eval_input.label_path=ev_label.bin"]


def test_ps_cluster_gives_each_task_its_tf_config(tmp_path):
    import json
    import sys
    configs = status_lib.ps_cluster([5001, 5002, 5003, 5004], workers=1, ps=2)
    spec = {"chief": ["127.0.0.1:5001"], "worker": ["127.0.0.1:5002"],
            "ps": ["127.0.0.1:5003", "127.0.0.1:5004"]}
    assert {k: json.loads(v) for k, v in configs.items()} == {
        (kind, i): {"cluster": spec, "task": {"type": kind, "index": i}}
        for kind, i in (("chief", 0), ("worker", 0), ("ps", 0), ("ps", 1))}
    with pytest.raises(ValueError, match="4 ports needed, got 3"):
        status_lib.ps_cluster([1, 2, 3])
    ports = status_lib.free_ports(4)
    assert len(set(ports)) == 4
    # Every task but the chief is started with its own TF_CONFIG, and stopped.
    servers = status_lib.start_servers(
        configs, [sys.executable, "-c", "import os, time; print(os.environ['TF_CONFIG'], "
                  "flush=True); time.sleep(60)"], dict(os.environ), str(tmp_path))
    try:
        deadline = time.time() + 30
        logs = {}
        while time.time() < deadline and len(logs) < 3:
            logs = {name: text for name in ("worker0", "ps0", "ps1")
                    if (text := (tmp_path / f"{name}.log").read_text().strip())}
        assert {n: json.loads(t)["task"] for n, t in logs.items()} == {
            "worker0": {"type": "worker", "index": 0}, "ps0": {"type": "ps", "index": 0},
            "ps1": {"type": "ps", "index": 1}}
    finally:
        status_lib.stop_servers(servers)
    assert all(proc.returncode is not None for proc, _ in servers)
    assert not (tmp_path / "chief0.log").exists()


def test_asset_files_get_stand_ins(tmp_path):
    """din_on_taobao_latest_export names samples/rtp_fg/fg.json, which EasyRec's samples
    lack: check runs from a directory with a stand-in there, and passes."""
    before = os.getcwd()
    row, loaded = status_lib.check_row(sample("din_on_taobao_latest_export.config"))
    assert (row.check, row.first_problem) == ("pass", "") and os.getcwd() == before
    assert status_lib.asset_paths(loaded.pipeline) == ["samples/rtp_fg/fg.json"]
    written = status_lib.write_stand_ins(["samples/rtp_fg/fg.json", "../outside.txt",
                                          "/abs/x"], str(tmp_path))
    assert written == [str(tmp_path / "samples" / "rtp_fg" / "fg.json")]
    assert json.loads(open(written[0]).read()) == {"stand_in": "written by "
                                                   "scripts/easyrec_status.py"}
    assert not (tmp_path.parent / "outside.txt").exists()
    # An asset that is there is kept.
    assert status_lib.write_stand_ins(["samples/rtp_fg/fg.json"], str(tmp_path)) == []
