"""SequenceFeature end to end: preprocessing (ragged ids and values), pooling in a feature
group, target attention groups (sequence_features) against numpy, sparse gradients, shared
tables, config errors, and the EasyRec MMoE sequence sample through train, export and a
SavedModel loaded without mtrec."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import conftest
from mtrec import api
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.embedding import FeatureGroups
from mtrec.features.feature import FeatureSet
from mtrec.features.width import group_widths

INPUTS = """
  input_fields { input_name: "label" input_type: INT32 }
  input_fields { input_name: "item" input_type: STRING }
  input_fields { input_name: "cat" input_type: STRING }
  input_fields { input_name: "hist" input_type: STRING }
  input_fields { input_name: "hist_cat" input_type: STRING }
  input_fields { input_name: "prices" input_type: STRING }
"""


def config_text(features: str, groups: str) -> str:
    return f"""train_config {{ num_steps: 1 }}
data_config {{
{INPUTS}
}}
feature_config {{
{features}
}}
model_config {{
  model_class: "SimpleMultiTask"
{groups}
  simple_multi_task {{ task_towers {{ tower_name: "t" label_name: "label" }} }}
}}
"""


def pipeline(features: str, groups: str = ""):
    """A validated pipeline; the default group lists every feature named "a"."""
    groups = groups or '  feature_groups { group_name: "all" feature_names: "a" }'
    config = config_lib.parse_text(config_text(features, groups))
    config_lib.from_pipeline(config)
    return config


def preprocess(features: str, column) -> dict:
    """Preprocess column `hist` with the single feature "a" reading it."""
    fs = FeatureSet(pipeline(features))
    return fs["a"].preprocess({"hist": tf.constant(column)})


def seq(extra: str, name: str = "a", column: str = "hist") -> str:
    return (f'features {{ feature_name: "{name}" input_names: "{column}" '
            f'feature_type: SequenceFeature {extra} }}')


def as_list(ragged) -> list:
    return ragged.to_list()


# ---------------------------------------------------------------------------
# Preprocessing


def test_ids_truncated_to_first_max_seq_len_and_empty_cell():
    out = preprocess(seq("num_buckets: 10 embedding_dim: 4 max_seq_len: 3"),
                     ["3|1|2|4", "", "5||7", "12|9"])
    # First 3 kept; empty cell -> empty sequence; empty token dropped; 12 out of range -> -1.
    assert as_list(out["ids"]) == [[3, 1, 2], [], [5, 7], [-1, 9]]


def test_seq_multi_sep_splits_positions():
    out = preprocess(seq('vocab_list: ["a", "b", "c"] embedding_dim: 4 seq_multi_sep: ";"'),
                     ["a;b|c", "", "zz|;b"])
    # Vocabulary ids 1..3, 0 for out-of-vocabulary; an empty sub-token is dropped.
    assert as_list(out["ids"]) == [[[1, 2], [3]], [], [[0], [2]]]


def test_raw_boundaries_bucketize_each_position():
    out = preprocess(seq("sub_feature_type: RawFeature boundaries: [2, 5] embedding_dim: 4"),
                     ["3|1|7", "", "5"])
    assert as_list(out["ids"]) == [[1, 0, 2], [], [2]]


def test_raw_num_buckets_with_range_and_as_integer_ids():
    scaled = FeatureSet(pipeline(seq("sub_feature_type: RawFeature num_buckets: 5 min_val: 0 "
                                     "max_val: 10 embedding_dim: 4")))["a"]
    out = scaled.preprocess({"hist": tf.constant(["0|3|9.9|12|-1"])})
    # (x - 0) / 10 in 5 equal buckets over [0, 1); below 0 is bucket 0: 6 ids.
    assert as_list(out["ids"]) == [[1, 2, 5, 5, 0]] and scaled.num_ids == 6
    out = preprocess(seq("sub_feature_type: RawFeature num_buckets: 5 embedding_dim: 4"),
                     ["1|7|3"])
    assert as_list(out["ids"]) == [[1, -1, 3]]


def test_raw_values_truncated_to_sequence_length():
    out = preprocess(seq("sub_feature_type: RawFeature sequence_length: 2"),
                     ["3|1|7", "", "0.5"])
    assert as_list(out["values"]) == [[[3.0], [1.0]], [], [[0.5]]]


def test_raw_multi_values_per_position():
    out = preprocess(seq('sub_feature_type: RawFeature raw_input_dim: 3 seq_multi_sep: ";" '
                         'embedding_dim: 2'), ["1;2;3|4;5", "", "7;8;9;10"])
    # Missing values are zeros, extra ones are cut.
    assert as_list(out["values"]) == [[[1, 2, 3], [4, 5, 0]], [], [[7, 8, 9]]]


# ---------------------------------------------------------------------------
# Pooling in a group


def groups_of(features: str, groups: str):
    config = pipeline(features, groups)
    fs = FeatureSet(config)
    layer = FeatureGroups(fs, config.model_config.feature_groups)
    return config, fs, layer


@pytest.mark.parametrize("combiner", ["sum", "mean", "max"])
def test_pooled_sequence_equals_numpy(combiner):
    features = seq(f"num_buckets: 10 embedding_dim: 3 sequence_combiner {{ {combiner} {{}} }}")
    _, fs, layer = groups_of(features, '  feature_groups { group_name: "all" '
                                       'feature_names: "a" }')
    cells = ["3|1|2", "", "5", "12|4"]
    out = layer(fs.preprocess({"hist": tf.constant(cells)}))["all"]
    assert len(out) == 1
    table = layer.tables["a"].numpy()
    expected = []
    for ids in ([3, 1, 2], [], [5], [-1, 4]):
        rows = np.array([table[i] if i >= 0 else np.zeros(3) for i in ids]).reshape(-1, 3)
        if not ids:
            expected.append(np.zeros(3))
        elif combiner == "sum":
            expected.append(rows.sum(0))
        elif combiner == "mean":
            expected.append(rows.mean(0))
        else:
            expected.append(rows.max(0))
    np.testing.assert_allclose(out[0].numpy(), np.array(expected), rtol=1e-6, atol=1e-7)


def test_combiner_default_is_the_feature_combiner():
    features = seq('num_buckets: 10 embedding_dim: 3 combiner: "mean"')
    _, fs, layer = groups_of(features, '  feature_groups { group_name: "all" '
                                       'feature_names: "a" }')
    out = layer(fs.preprocess({"hist": tf.constant(["1|2"])}))["all"][0]
    table = layer.tables["a"].numpy()
    np.testing.assert_allclose(out.numpy()[0], (table[1] + table[2]) / 2, rtol=1e-6)


# ---------------------------------------------------------------------------
# Target attention groups

ATT_FEATURES = """
  features { input_names: "item" hash_bucket_size: 50 embedding_dim: 4 }
  features { input_names: "cat" num_buckets: 20 embedding_dim: 2 }
  features { input_names: "hist" feature_type: SequenceFeature hash_bucket_size: 50
             embedding_dim: 4 embedding_name: "item" }
  features { input_names: "hist_cat" feature_type: SequenceFeature num_buckets: 20
             embedding_dim: 2 }
  features { input_names: "prices" feature_type: SequenceFeature sub_feature_type: RawFeature
             boundaries: [1, 10] embedding_dim: 3 }
"""

ATT_GROUP = """  feature_groups {
    group_name: "all"
    feature_names: "cat"
    sequence_features {
      group_name: "din"
      seq_dnn { hidden_units: [8, 1] use_bn: false }
      seq_att_map { key: "item" key: "cat" hist_seq: "hist" hist_seq: "hist_cat"
                    aux_hist_seq: "prices" }
    }
  }"""

ATT_COLUMNS = {"item": ["x", "y", "z"], "cat": ["3", "19", "0"],
               "hist": ["x|q|w", "", "w"], "hist_cat": ["1|2|3", "", "7"],
               "prices": ["0.5|20|5", "", "11"]}


def numpy_din(query, hist, mask, dense_layers):
    """DIN scores with the layer's weights: relu MLP over [q, k, q-k, q*k], linear last."""
    q = np.repeat(query[:, None, :], hist.shape[1], axis=1)
    x = np.concatenate([q, hist, q - hist, q * hist], axis=-1)
    for i, dense in enumerate(dense_layers):
        x = x @ dense.kernel.numpy() + dense.bias.numpy()
        if i < len(dense_layers) - 1:
            x = np.maximum(x, 0)
    scores = np.where(mask, x[..., 0], -np.inf)
    weights = np.zeros_like(scores)
    for b in range(len(scores)):
        if mask[b].any():
            e = np.exp(scores[b] - scores[b][mask[b]].max())
            weights[b] = np.where(mask[b], e, 0) / np.where(mask[b], e, 0).sum()
    return weights


def test_attention_group_equals_numpy_din():
    config, fs, layer = groups_of(ATT_FEATURES, ATT_GROUP)
    features = fs.preprocess({k: tf.constant(v) for k, v in ATT_COLUMNS.items()})
    out = layer(features)["all"]
    # cat, pooled hist (4 + 2), pooled aux prices (3), key (4 + 2).
    widths = [int(t.shape[-1]) for t in out]
    assert widths == [2, 6, 3, 6] == layer.group_widths()["all"]
    configs = {f.feature_name or f.input_names[0]: f for f in config.feature_config.features}
    groups = {g.group_name: g for g in config.model_config.feature_groups}
    assert group_widths(groups, configs)["all"] == widths
    # One table for item and hist (embedding_name "item").
    assert sorted(layer.tables) == ["cat", "hist_cat", "item", "prices"]

    inputs = layer.sequence_inputs(features, "all")[0]
    item, cat = layer.tables["item"].numpy(), layer.tables["cat"].numpy()
    hist_cat_t, prices_t = layer.tables["hist_cat"].numpy(), layer.tables["prices"].numpy()
    item_ids = features["item"]["ids"].numpy()
    cat_ids = features["cat"]["ids"].numpy()
    query = np.concatenate([item[item_ids], cat[cat_ids]], axis=1)
    np.testing.assert_allclose(inputs["key"].numpy(), query, rtol=1e-6)
    hist_ids = features["hist"]["ids"].to_list()
    cat_hist_ids = features["hist_cat"]["ids"].to_list()
    price_ids = features["prices"]["ids"].to_list()
    length = max(len(r) for r in hist_ids)
    hist = np.zeros((3, length, 6))
    aux = np.zeros((3, length, 3))
    mask = np.zeros((3, length), bool)
    for b in range(3):
        for t, (i, c, p) in enumerate(zip(hist_ids[b], cat_hist_ids[b], price_ids[b])):
            hist[b, t] = np.concatenate([item[i], hist_cat_t[c]])
            aux[b, t] = prices_t[p]
            mask[b, t] = True
    np.testing.assert_allclose(inputs["hist"].numpy(), hist, rtol=1e-6)
    np.testing.assert_array_equal(inputs["mask"].numpy(), mask)
    np.testing.assert_allclose(inputs["aux"][0].numpy(), aux, rtol=1e-6)

    attention = layer.attentions["all/0"]
    weights = numpy_din(query, hist, mask, attention.score_mlp.dense_layers)
    np.testing.assert_allclose(out[0].numpy(), cat[cat_ids], rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), np.einsum("bl,bld->bd", weights, hist),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[2].numpy(), np.einsum("bl,bld->bd", weights, aux),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[3].numpy(), query, rtol=1e-6)
    # The empty history pools to zeros.
    np.testing.assert_array_equal(out[1].numpy()[1], np.zeros(6))


def test_key_transform_pads_narrow_key_and_drops_key_without_need_key_feature():
    group = ATT_GROUP.replace('key: "item" key: "cat" ', 'key: "cat" ').replace(
        'group_name: "din"', 'group_name: "din" allow_key_transform: true '
        'need_key_feature: false')
    _, fs, layer = groups_of(ATT_FEATURES, group)
    out = layer(fs.preprocess({k: tf.constant(v) for k, v in ATT_COLUMNS.items()}))["all"]
    assert [int(t.shape[-1]) for t in out] == [2, 6, 3] == layer.group_widths()["all"]


def test_batch_of_empty_histories_gives_zeros_and_finite_training():
    group = ATT_GROUP.replace("use_bn: false", "use_bn: true")
    _, fs, layer = groups_of(ATT_FEATURES, group)
    columns = dict(ATT_COLUMNS, hist=["", "", ""], hist_cat=["", "", ""], prices=["", "", ""])
    features = fs.preprocess({k: tf.constant(v) for k, v in columns.items()})
    out = layer(features, training=True)["all"]
    np.testing.assert_array_equal(out[1].numpy(), np.zeros((3, 6)))
    np.testing.assert_array_equal(out[2].numpy(), np.zeros((3, 3)))
    for weight in layer.attentions["all/0"].weights:
        assert np.isfinite(weight.numpy()).all(), weight.path


def test_hist_lengths_must_agree():
    _, fs, layer = groups_of(ATT_FEATURES, ATT_GROUP)
    columns = dict(ATT_COLUMNS, hist_cat=["1|2", "", "7"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="'hist' and 'hist_cat' have "
                       "different lengths"):
        layer(fs.preprocess({k: tf.constant(v) for k, v in columns.items()}))


def test_table_gradients_are_indexed_slices_and_regularized():
    config, fs, layer = groups_of(ATT_FEATURES, ATT_GROUP)
    layer = FeatureGroups(fs, config.model_config.feature_groups, embedding_regularization=0.1)
    features = fs.preprocess({k: tf.constant(v) for k, v in ATT_COLUMNS.items()})
    layer(features)
    with tf.GradientTape() as tape:
        out = layer(features)["all"]
        loss = tf.add_n([tf.reduce_sum(t) for t in out]) + tf.add_n(layer.losses)
    names = sorted(layer.tables)
    grads = dict(zip(names, tape.gradient(loss, [layer.tables[n] for n in names])))
    for name, grad in grads.items():
        assert isinstance(grad, tf.IndexedSlices), name
    # Only looked-up rows: items x, y, z, q, w.
    item_grad = grads["item"]
    assert len(set(item_grad.indices.numpy().tolist())) == 5


def test_pooled_sequence_gradient_is_indexed_slices():
    _, fs, layer = groups_of(seq("num_buckets: 10 embedding_dim: 3 seq_multi_sep: \";\""),
                             '  feature_groups { group_name: "all" feature_names: "a" }')
    features = fs.preprocess({"hist": tf.constant(["1;2|3", ""])})
    layer(features)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(features)["all"][0])
    grad = tape.gradient(loss, layer.tables["a"])
    assert isinstance(grad, tf.IndexedSlices)
    assert sorted(set(grad.indices.numpy().tolist())) == [1, 2, 3]


# ---------------------------------------------------------------------------
# Config errors


def config_error(tmp_path, features: str, groups: str) -> tuple[str, str]:
    text = config_text(features, groups)
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return text, str(info.value)


def line_of(text: str, needle: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def test_config_errors_name_file_and_line(tmp_path):
    features = ATT_FEATURES.replace(
        "num_buckets: 20\n             embedding_dim: 2 }",
        "num_buckets: 20\n embedding_dim: 2 sequence_combiner { multi_head_attention {} } }")
    group = ATT_GROUP.replace('group_name: "din"', 'group_name: "din"\n      tf_summary: true') \
        .replace('aux_hist_seq: "prices"', 'aux_hist_seq: "cat"')
    text, message = config_error(tmp_path, features, group)
    path = str(tmp_path / "pipeline.config")
    assert f"{path}:{line_of(text, 'multi_head_attention')}: SequenceFeature 'hist_cat': " \
           "sequence_combiner multi_head_attention is not supported" in message
    assert f"{path}:{line_of(text, 'tf_summary')}: feature group 'all', sequence_features " \
           "'din': tf_summary" in message
    assert f"{path}:{line_of(text, 'aux_hist_seq')}: feature group 'all', sequence_features " \
           "'din': aux_hist_seq 'cat' is a IdFeature; it must be a SequenceFeature." in message


def test_key_width_mismatch_is_a_config_error(tmp_path):
    group = ATT_GROUP.replace('key: "item" key: "cat" ', 'key: "cat" ')
    text, message = config_error(tmp_path, ATT_FEATURES, group)
    line = line_of(text, 'key: "cat"')
    assert f"pipeline.config:{line}: feature group 'all', sequence_features 'din': the key is " \
           "2 wide (cat) but the history 6 (hist + hist_cat)" in message
    assert "allow_key_transform" in message


def test_shared_table_mismatch_is_a_config_error(tmp_path):
    features = ATT_FEATURES.replace("embedding_dim: 4 embedding_name", "embedding_dim: 8 "
                                    "embedding_name")
    text, message = config_error(tmp_path, features, ATT_GROUP)
    assert f"pipeline.config:{line_of(text, 'embedding_name')}: features 'item' and 'hist' " \
           "share embedding_name 'item'" in message


def test_unknown_hist_feature_is_a_config_error(tmp_path):
    group = ATT_GROUP.replace('hist_seq: "hist_cat"', 'hist_seq: "nope"')
    text, message = config_error(tmp_path, ATT_FEATURES, group)
    assert f"pipeline.config:{line_of(text, 'nope')}: feature group 'all', sequence_features " \
           "'din': hist_seq 'nope' is not defined in feature_configs." in message


# ---------------------------------------------------------------------------
# EasyRec's MMoE sequence sample: check, train, export, predict, bare SavedModel

EASYREC_SAMPLE = "/work/shared/easyrec/samples/model_config/mmoe_on_sequence_feature_taobao.config"

BARE_PREDICT = textwrap.dedent("""
    import csv, json, sys
    import numpy as np
    import tensorflow as tf
    saved_model, data, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    rows = list(csv.reader(open(data)))
    model = tf.saved_model.load(saved_model)
    fn = model.signatures["serving_default"]
    inputs = {}
    for spec_name, spec in fn.structured_input_signature[1].items():
        # The reader reads an empty or NULL cell as the column's default ("" here).
        column = [r[fields.index(spec_name)] for r in rows]
        column = ["" if v == "NULL" else v for v in column]
        if spec.dtype == tf.string:
            inputs[spec_name] = tf.constant(column)
        else:
            inputs[spec_name] = tf.constant([int(v) for v in column], spec.dtype)
    out = {k: v.numpy().reshape(-1).tolist() for k, v in fn(**inputs).items()}
    # The same rows with empty behaviour sequences.
    for name in ("tag_category_list", "tag_brand_list"):
        inputs[name] = tf.constant([""] * len(rows))
    out["probs_ctr_no_sequence"] = fn(**inputs)["probs_ctr"].numpy().reshape(-1).tolist()
    assert "mtrec" not in sys.modules
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(EASYREC_SAMPLE), reason="EasyRec samples not present")
def test_easyrec_mmoe_sequence_sample_trains_exports_and_serves(tmp_path, small_taobao):
    train_path, test_path = small_taobao
    text = open(EASYREC_SAMPLE).read()
    fields = [line.split('"')[1] for line in text.splitlines() if "input_name:" in line]
    # Same columns as the sample reads (tag_category_list, tag_brand_list among them).
    assert "tag_category_list" in fields and "tag_brand_list" in fields
    text = text.replace('"data/test/tb_data/taobao_train_data"', f'"{train_path}"') \
        .replace('"data/test/tb_data/taobao_test_data"', f'"{test_path}"') \
        .replace('"experiments/mmoe_taobao_ckpt"', f'"{tmp_path / "model"}"')
    config = tmp_path / "mmoe_on_sequence_feature_taobao.config"
    config.write_text(text)
    # What `mtrec check`, `mtrec train --set ...`, `mtrec export` and `mtrec predict` run, in
    # this process to save three TensorFlow start-ups.
    config_lib.load(str(config))
    api.train(str(config), sets=conftest.fast_overrides(train_path, test_path, steps=10))
    api.export(str(config), export_dir=str(tmp_path / "export"))
    versions = [d for d in os.listdir(tmp_path / "export") if d.isdigit()]
    saved_model = str(tmp_path / "export" / versions[0])
    rows = list(csv.reader(open(test_path)))[:64]
    data = tmp_path / "rows.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    predicted = tmp_path / "predicted.csv"
    api.predict(saved_model, str(data), str(predicted))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    bare = subprocess.run([sys.executable, "-c", BARE_PREDICT, saved_model, str(data),
                           json.dumps(fields)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert bare.returncode == 0, bare.stderr[-3000:]
    bare_out = json.loads(bare.stdout.strip().splitlines()[-1])
    with open(predicted) as f:
        predicted_rows = list(csv.DictReader(f))
    assert len(predicted_rows) == 64
    for key in ("probs_ctr", "probs_cvr"):
        np.testing.assert_allclose([float(r[key]) for r in predicted_rows], bare_out[key],
                                   rtol=1e-5)
    # The serving signature reads the raw `a|b|c` sequence strings: emptying them changes
    # the scores.
    assert np.abs(np.array(bare_out["probs_ctr"])
                  - np.array(bare_out["probs_ctr_no_sequence"])).max() > 1e-4


# ---------------------------------------------------------------------------
# A raw-value sequence token that is not a number: a bad row naming file:line and column

RAW_PIPELINE = """
data_config {
  batch_size: 4
  shuffle: false
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "prices" input_type: STRING }
  input_fields { input_name: "slots" input_type: STRING }
  %s
}
feature_config {
  features { input_names: "prices" feature_type: SequenceFeature separator: "|"
             seq_multi_sep: ";" sub_feature_type: RawFeature raw_input_dim: 2
             embedding_dim: 4 }
  features { input_names: "slots" feature_type: SequenceFeature separator: "|"
             sub_feature_type: RawFeature num_buckets: 5 embedding_dim: 4 }
}
"""
RAW_GOOD = ["1", "1.5;2|-3e2| 4 ;", "0|+3||-1"]


def _raw_reader(path, parquet, ignore_error=False):
    from google.protobuf import text_format
    from mtrec.data.reader import make_reader
    from mtrec.data.schema import column_rules
    from mtrec.protos import pipeline_pb2
    config = text_format.Parse(RAW_PIPELINE % (("input_type: ParquetInput\n" if parquet else "")
                                               + f"ignore_error: {str(ignore_error).lower()}"),
                               pipeline_pb2.PipelineConfig())
    return make_reader(config.data_config, [path], column_rules(config, {"clk": 2}))


def _raw_file(tmp_path, rows, parquet):
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq
        path = str(tmp_path / "data.parquet")
        clk, prices, slots = zip(*rows)
        pq.write_table(pa.table({"clk": pa.array([int(v) for v in clk], pa.int32()),
                                 "prices": pa.array(prices), "slots": pa.array(slots)}), path)
        return path
    path = tmp_path / "data.csv"
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("parquet, column, cell, problem", [
    (False, "prices", "1.5|abc;2", r"token 'abc' in '1\.5\|abc;2' is not a number: feature "
                                   r"'prices' is a SequenceFeature of raw values"),
    (True, "prices", "nan|1", r"token 'nan' in 'nan\|1' is not a number"),
    (False, "slots", "1|2.5", r"token '2\.5' in '1\|2\.5' is not an integer: feature 'slots'"),
], ids=["csv-abc", "parquet-nan", "csv-int"])
def test_raw_sequence_token_not_a_number_is_a_bad_row(tmp_path, parquet, column, cell,
                                                       problem):
    import re
    from test_hardening_cells import read
    rows = [list(RAW_GOOD) for _ in range(6)]
    rows[3][["clk", "prices", "slots"].index(column)] = cell
    path = _raw_file(tmp_path, rows, parquet)
    located = read(_raw_reader(path, parquet))
    where = f"{path}: row 4: column {column!r}: " if parquet else f"{path}:4: column {column!r}: "
    assert isinstance(located, str) and located.startswith(where), located
    assert re.search(problem, located), located
    assert read(_raw_reader(path, parquet, ignore_error=True)) == (5, 1)
    # The good rows are read (their tokens are what the features parse).
    good = _raw_file(tmp_path, [list(RAW_GOOD)] * 2, parquet)
    assert read(_raw_reader(good, parquet)) == (2, 0)
