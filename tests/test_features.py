"""mtrec.features: preprocessing of every feature type, and the FeatureGroups layer."""
import numpy as np
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.features import feature as feature_lib
from mtrec.features.embedding import FeatureGroups
from mtrec.features.feature import FeatureSet

INPUT_FIELDS = """
  input_fields { input_name: "label" input_type: INT32 }
  input_fields { input_name: "s" input_type: STRING }
  input_fields { input_name: "s2" input_type: STRING }
  input_fields { input_name: "n" input_type: INT64 }
  input_fields { input_name: "tags" input_type: STRING }
  input_fields { input_name: "x" input_type: DOUBLE }
  input_fields { input_name: "v" input_type: STRING }
"""


def pipeline(features: str, groups: str = "", validate: bool = True):
    """A validated SimpleMultiTask PipelineConfig with the given features and groups."""
    if not groups:
        groups = 'feature_groups { group_name: "all" feature_names: "%s" }' % "a"
    text = f"""
train_config {{ num_steps: 1 }}
data_config {{
{INPUT_FIELDS}
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
    config = config_lib.parse_text(text)
    if validate:
        config_lib.from_pipeline(config)
    return config


def feature_set(features: str, groups: str = "") -> FeatureSet:
    return FeatureSet(pipeline(features, groups))


def one(features: str, inputs: dict) -> dict:
    """Preprocess `inputs` with the single feature named "a"."""
    out = feature_set(features).preprocess(inputs)
    return out["a"]


def strings(*values):
    return tf.constant(list(values), tf.string)


# ---------------------------------------------------------------------------
# IdFeature


def test_id_feature_hash_bucket_size():
    values = ["red", "blue", "zzz", "a much longer value", "red"]
    ids = one('features { feature_name: "a" input_names: "s" hash_bucket_size: 1000 '
              'embedding_dim: 4 }', {"s": strings(*values)})["ids"]
    assert ids.dtype == tf.int64
    expected = tf.strings.to_hash_bucket_fast(values, 1000).numpy()
    np.testing.assert_array_equal(ids.numpy(), expected)
    assert ids.numpy()[0] == ids.numpy()[4]
    assert all(0 <= i < 1000 for i in ids.numpy())


def test_id_feature_hashes_integers_via_decimal_string():
    ids = one('features { feature_name: "a" input_names: "n" hash_bucket_size: 77 '
              'embedding_dim: 4 }', {"n": tf.constant([3, 12, -1, 12345678901], tf.int64)})["ids"]
    expected = tf.strings.to_hash_bucket_fast(["3", "12", "-1", "12345678901"], 77).numpy()
    np.testing.assert_array_equal(ids.numpy(), expected)


def test_id_feature_empty_string_is_missing():
    ids = one('features { feature_name: "a" input_names: "s" hash_bucket_size: 1000 '
              'embedding_dim: 4 }', {"s": strings("", "x", "")})["ids"]
    assert ids.numpy()[0] == -1 and ids.numpy()[2] == -1
    assert ids.numpy()[1] == tf.strings.to_hash_bucket_fast(["x"], 1000).numpy()[0]


def test_id_feature_vocab_list():
    features = ('features { feature_name: "a" input_names: "s" '
                'vocab_list: ["red", "green", "blue"] embedding_dim: 4 }')
    fs = feature_set(features)
    ids = fs.preprocess({"s": strings("red", "green", "blue", "zzz", "RED", "")})["a"]["ids"]
    assert ids.dtype == tf.int64
    assert ids.numpy().tolist() == [1, 2, 3, 0, 0, -1]
    assert fs["a"].num_ids == 4
    assert fs["a"].table() == feature_lib.TableSpec("a", 4, 4, oov_row=True)


def test_id_feature_vocab_file(tmp_path):
    vocab = tmp_path / "colors.txt"
    vocab.write_text("red\t10\ngreen 3\n\nblue\n", encoding="utf-8")
    features = (f'features {{ feature_name: "a" input_names: "s" vocab_file: "{vocab}" '
                'embedding_dim: 4 }')
    fs = feature_set(features)
    ids = fs.preprocess({"s": strings("red", "green", "blue", "zzz", "10", "")})["a"]["ids"]
    assert ids.numpy().tolist() == [1, 2, 3, 0, 0, -1]
    assert fs["a"].num_ids == 4


def test_id_feature_vocab_list_with_integer_input():
    ids = one('features { feature_name: "a" input_names: "n" vocab_list: ["7", "3"] '
              'embedding_dim: 4 }', {"n": tf.constant([3, 7, 5], tf.int64)})["ids"]
    assert ids.numpy().tolist() == [2, 1, 0]


def test_id_feature_num_buckets():
    fs = feature_set('features { feature_name: "a" input_names: "n" num_buckets: 10 '
                     'embedding_dim: 4 }')
    ids = fs.preprocess({"n": tf.constant([0, 3, 9, 10, 12, -1, -7], tf.int64)})["a"]["ids"]
    assert ids.dtype == tf.int64
    assert ids.numpy().tolist() == [0, 3, 9, -1, -1, -1, -1]
    assert fs["a"].num_ids == 10


def test_id_feature_num_buckets_string_input():
    ids = one('features { feature_name: "a" input_names: "s" num_buckets: 10 embedding_dim: 4 }',
              {"s": strings("4", "", "11", "-2", "0")})["ids"]
    assert ids.numpy().tolist() == [4, -1, -1, -1, 0]


# ---------------------------------------------------------------------------
# TagFeature


def test_tag_feature_splits_and_drops_empty_tags():
    out = one('features { feature_name: "a" input_names: "tags" feature_type: TagFeature '
              'hash_bucket_size: 100 embedding_dim: 4 }',
              {"tags": strings("a|b||c", "", "c")})
    ids = out["ids"]
    assert isinstance(ids, tf.RaggedTensor)
    assert ids.dtype == tf.int64
    assert ids.row_lengths().numpy().tolist() == [3, 0, 1]
    expected = tf.strings.to_hash_bucket_fast(["a", "b", "c"], 100).numpy().tolist()
    assert ids.to_list() == [expected, [], [expected[2]]]
    assert "weights" not in out


def test_tag_feature_vocab_list():
    out = one('features { feature_name: "a" input_names: "tags" feature_type: TagFeature '
              'vocab_list: ["a", "b", "c"] embedding_dim: 4 }',
              {"tags": strings("c|a|zz", "b")})
    assert out["ids"].to_list() == [[3, 1, 0], [2]]


def test_tag_feature_other_separator():
    out = one('features { feature_name: "a" input_names: "tags" feature_type: TagFeature '
              'separator: ";" vocab_list: ["a", "b|c"] embedding_dim: 4 }',
              {"tags": strings("a;b|c", "b|c")})
    assert out["ids"].to_list() == [[1, 2], [2]]


def test_tag_feature_with_weights():
    out = one('features { feature_name: "a" input_names: "tags" feature_type: TagFeature '
              'kv_separator: ":" vocab_list: ["a", "b", "c"] embedding_dim: 4 }',
              {"tags": strings("a:0.5|b:2", "c", "", "b:-1.5|c:")})
    assert out["ids"].to_list() == [[1, 2], [3], [], [2, 3]]
    assert out["weights"].dtype == tf.float32
    assert out["weights"].to_list() == [[0.5, 2.0], [1.0], [], [-1.5, 1.0]]


# ---------------------------------------------------------------------------
# ComboFeature


COMBO = ('features { feature_name: "a" input_names: ["s", "s2"] feature_type: ComboFeature '
         'hash_bucket_size: 50 embedding_dim: 4 }')


def test_combo_feature_ids_in_range_and_deterministic():
    s = ["red", "blue", "red", "red", "green"]
    s2 = ["x", "y", "x", "y", "z"]
    fs = feature_set(COMBO)
    ids = fs.preprocess({"s": strings(*s), "s2": strings(*s2)})["a"]["ids"]
    assert isinstance(ids, tf.RaggedTensor)
    rows = ids.to_list()
    assert all(len(r) == 1 for r in rows)
    assert all(0 <= i < 50 for r in rows for i in r)
    assert rows[0] == rows[2]
    assert fs["a"].num_ids == 50
    again = fs.preprocess({"s": strings(*s), "s2": strings(*s2)})["a"]["ids"].to_list()
    assert again == rows


def test_combo_feature_crosses_multi_valued_inputs():
    ids = one(COMBO, {"s": strings("a|b", "a"), "s2": strings("x|y", "")})["ids"]
    rows = ids.to_list()
    assert len(rows[0]) == 4
    assert rows[1] == []


def test_combo_feature_with_integer_input():
    features = ('features { feature_name: "a" input_names: ["s", "n"] feature_type: ComboFeature '
                'hash_bucket_size: 50 embedding_dim: 4 }')
    from_int = one(features, {"s": strings("red"), "n": tf.constant([3], tf.int64)})["ids"]
    from_str = one(COMBO, {"s": strings("red"), "s2": strings("3")})["ids"]
    assert from_int.to_list() == from_str.to_list()


# ---------------------------------------------------------------------------
# RawFeature


def test_raw_feature_value():
    fs = feature_set('features { feature_name: "a" input_names: "x" feature_type: RawFeature }')
    values = fs.preprocess({"x": tf.constant([2.5, -1.0], tf.float64)})["a"]["values"]
    assert values.dtype == tf.float32
    assert values.numpy().tolist() == [[2.5], [-1.0]]
    assert fs["a"].kind == "values"
    assert fs["a"].embedding_dim == 1


def test_raw_feature_from_string():
    values = one('features { feature_name: "a" input_names: "v" feature_type: RawFeature }',
                 {"v": strings("2.5", "")})["values"]
    assert values.numpy().tolist() == [[2.5], [0.0]]


def test_raw_feature_multi_dim():
    fs = feature_set('features { feature_name: "a" input_names: "v" feature_type: RawFeature '
                     'raw_input_dim: 3 }')
    values = fs.preprocess({"v": strings("1|2|3", "4|5|6")})["a"]["values"]
    assert values.dtype == tf.float32
    assert values.numpy().tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert fs["a"].embedding_dim == 3


def test_raw_feature_boundaries():
    fs = feature_set('features { feature_name: "a" input_names: "x" feature_type: RawFeature '
                     'boundaries: [0, 10] embedding_dim: 4 }')
    ids = fs.preprocess({"x": tf.constant([-1.0, 5.0, 20.0, 0.0, 10.0], tf.float64)})["a"]["ids"]
    assert ids.dtype == tf.int64
    assert ids.numpy().tolist() == [0, 1, 2, 1, 2]
    assert fs["a"].kind == "ids"
    assert fs["a"].num_ids == 3
    assert fs["a"].embedding_dim == 4


# ---------------------------------------------------------------------------
# FeatureSet


def test_feature_set_names_and_inputs():
    fs = feature_set('features { input_names: "s" hash_bucket_size: 10 embedding_dim: 2 }\n'
                     'features { feature_name: "b" input_names: "n" num_buckets: 5 '
                     'embedding_dim: 2 }\n' + COMBO,
                     'feature_groups { group_name: "all" feature_names: ["s", "b", "a"] }')
    assert list(fs.features) == ["s", "b", "a"]
    assert fs.input_names == ["n", "s", "s2"]
    assert isinstance(fs["s"], feature_lib.IdFeature)
    assert isinstance(fs["a"], feature_lib.ComboFeature)
    assert fs["s"].combiner == "sum"


# ---------------------------------------------------------------------------
# FeatureGroups


GROUP_FEATURES = """
  features { feature_name: "user" input_names: "s" hash_bucket_size: 1000 embedding_dim: 4 }
  features { feature_name: "price" input_names: "n" num_buckets: 10 embedding_dim: 3 }
  features { feature_name: "tags" input_names: "tags" feature_type: TagFeature
             vocab_list: ["a", "b", "c"] embedding_dim: 5 combiner: "mean" }
  features { feature_name: "raw" input_names: "v" feature_type: RawFeature raw_input_dim: 2 }
  features { feature_name: "bucket" input_names: "x" feature_type: RawFeature
             boundaries: [0, 10] embedding_dim: 2 }
"""
GROUPS = """
  feature_groups { group_name: "all" feature_names: ["user", "price", "tags", "raw"] }
  feature_groups { group_name: "item" feature_names: ["bucket", "price"] }
"""


def build_groups(features=GROUP_FEATURES, groups=GROUPS):
    config = pipeline(features, groups)
    fs = FeatureSet(config)
    layer = FeatureGroups(fs, config.model_config.feature_groups)
    return fs, layer


def group_inputs():
    return {"s": strings("u1", "", "u3"),
            "n": tf.constant([3, 12, 0], tf.int64),
            "tags": strings("a|b|c", "", "c|zz"),
            "v": strings("1|2", "3|4", ""),
            "x": tf.constant([-1.0, 5.0, 20.0], tf.float64)}


def test_feature_groups_output_shapes():
    fs, layer = build_groups()
    outputs = layer(fs.preprocess(group_inputs()))
    assert set(outputs) == {"all", "item"}
    assert [t.shape.as_list() for t in outputs["all"]] == [[3, 4], [3, 3], [3, 5], [3, 2]]
    assert [t.shape.as_list() for t in outputs["item"]] == [[3, 2], [3, 3]]
    assert layer.group_dim("all") == 14
    assert layer.group_dim("item") == 5
    assert sorted(layer.tables) == ["bucket", "price", "tags", "user"]
    assert {name: tuple(t.shape) for name, t in layer.tables.items()} == \
        {"bucket": (3, 2), "price": (10, 3), "tags": (4, 5), "user": (1000, 4)}


def test_feature_groups_lookup_values():
    fs, layer = build_groups()
    features = fs.preprocess(group_inputs())
    outputs = layer(features)
    user, price, tags, raw = [t.numpy() for t in outputs["all"]]
    user_table = layer.tables["user"].numpy()
    price_table = layer.tables["price"].numpy()
    user_ids = features["user"]["ids"].numpy()
    np.testing.assert_array_equal(user[0], user_table[user_ids[0]])
    np.testing.assert_array_equal(user[2], user_table[user_ids[2]])
    np.testing.assert_array_equal(price[0], price_table[3])
    np.testing.assert_array_equal(price[2], price_table[0])
    np.testing.assert_array_equal(raw, [[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    bucket = outputs["item"][0].numpy()
    np.testing.assert_array_equal(bucket, layer.tables["bucket"].numpy()[[0, 1, 2]])


def test_missing_id_gives_zero_embedding():
    fs, layer = build_groups()
    outputs = layer(fs.preprocess(group_inputs()))
    user, price, tags, _ = [t.numpy() for t in outputs["all"]]
    # Row 1: user "" (missing), price 12 (out of range), no tags.
    np.testing.assert_array_equal(user[1], np.zeros(4, np.float32))
    np.testing.assert_array_equal(price[1], np.zeros(3, np.float32))
    np.testing.assert_array_equal(tags[1], np.zeros(5, np.float32))
    assert np.all(user[0] != 0) and np.all(price[0] != 0)


def test_out_of_vocabulary_row_and_wide_weights_start_at_zero():
    groups = GROUPS + '  feature_groups { group_name: "w" feature_names: ["user", "tags"] ' \
        'wide_deep: WIDE }'
    fs, layer = build_groups(groups=groups)
    outputs = layer(fs.preprocess(group_inputs()))
    tags = layer.tables["tags"].numpy()
    # The vocabulary's out-of-vocabulary row is zero, its known ids are not.
    np.testing.assert_array_equal(tags[0], np.zeros(5, np.float32))
    assert np.all(tags[1:] != 0)
    # Hashed ids have no such row; a linear model's weights all start at zero.
    assert np.all(layer.tables["user"].numpy()[0] != 0)
    assert np.all(layer.tables["user/wide"].numpy() == 0)
    assert np.all(layer.tables["tags/wide"].numpy() == 0)
    # "zz" is out of vocabulary: it adds nothing to the sum ("c|zz" = c / 2 with "mean").
    np.testing.assert_allclose(outputs["all"][2].numpy()[2], tags[3] / 2, rtol=1e-6)


def test_tag_feature_mean_combiner():
    fs, layer = build_groups()
    outputs = layer(fs.preprocess(group_inputs()))
    tags = outputs["all"][2].numpy()
    table = layer.tables["tags"].numpy()
    np.testing.assert_allclose(tags[0], table[[1, 2, 3]].mean(axis=0), rtol=1e-6, atol=0)
    # "c|zz": c -> 3, zz -> 0 (out of vocabulary).
    np.testing.assert_allclose(tags[2], table[[3, 0]].mean(axis=0), rtol=1e-6, atol=0)


def test_tag_feature_sum_combiner_with_weights():
    features = ('features { feature_name: "t" input_names: "tags" feature_type: TagFeature '
                'kv_separator: ":" vocab_list: ["a", "b"] embedding_dim: 3 }')
    config = pipeline(features, 'feature_groups { group_name: "g" feature_names: "t" }')
    fs = FeatureSet(config)
    layer = FeatureGroups(fs, config.model_config.feature_groups)
    emb = layer(fs.preprocess({"tags": strings("a:0.5|b:2", "b")}))["g"][0].numpy()
    table = layer.tables["t"].numpy()
    np.testing.assert_allclose(emb[0], 0.5 * table[1] + 2.0 * table[2], rtol=1e-6)
    np.testing.assert_allclose(emb[1], table[2], rtol=1e-6)


def test_shared_embedding_name_shares_one_table():
    features = """
      features { feature_name: "f1" input_names: "s" hash_bucket_size: 100 embedding_dim: 4
                 embedding_name: "shared" }
      features { feature_name: "f2" input_names: "s2" hash_bucket_size: 100 embedding_dim: 4
                 embedding_name: "shared" }
    """
    config = pipeline(features, 'feature_groups { group_name: "g" feature_names: ["f1", "f2"] }')
    fs = FeatureSet(config)
    layer = FeatureGroups(fs, config.model_config.feature_groups)
    outputs = layer(fs.preprocess({"s": strings("x", "y"), "s2": strings("x", "z")}))
    assert list(layer.tables) == ["shared"]
    assert len(layer.table_variables) == 1
    assert isinstance(layer.table_variables[0], tf.Variable)
    assert tuple(layer.table_variables[0].shape) == (100, 4)
    f1, f2 = [t.numpy() for t in outputs["g"]]
    np.testing.assert_array_equal(f1[0], f2[0])  # same value, same row of the one table
    assert not np.array_equal(f1[1], f2[1])


def test_gradient_is_indexed_slices_of_looked_up_rows():
    fs, layer = build_groups()
    inputs = {"s": strings("u1", "u2", "u1"),
              "n": tf.constant([3, 7, 3], tf.int64),
              "tags": strings("a|b", "c", "a"),
              "v": strings("1|2", "3|4", "5|6"),
              "x": tf.constant([-1.0, 5.0, 5.0], tf.float64)}
    features = fs.preprocess(inputs)
    layer(features)  # build
    with tf.GradientTape() as tape:
        outputs = layer(features)
        loss = tf.add_n([tf.reduce_sum(t) for ts in outputs.values() for t in ts])
    tables = layer.table_variables
    grads = tape.gradient(loss, tables)
    user_ids = set(tf.strings.to_hash_bucket_fast(["u1", "u2"], 1000).numpy().tolist())
    expected = {"user": user_ids, "price": {3, 7}, "tags": {1, 2, 3}, "bucket": {0, 1}}
    for table, grad in zip(tables, grads):
        name = table.name.split("/")[-1].split(":")[0]
        assert isinstance(grad, tf.IndexedSlices), name
        assert set(grad.indices.numpy().tolist()) == expected[name], name
    # Dense view: only those rows are non-zero.
    price_grad = tf.convert_to_tensor(grads[[t.name for t in tables].index(
        layer.tables["price"].name)]).numpy()
    assert sorted(np.nonzero(np.any(price_grad != 0, axis=1))[0].tolist()) == [3, 7]
    # price 3 is looked up twice: once from "all" and once from "item" per row, 2 rows.
    np.testing.assert_allclose(price_grad[3], np.full(3, 4.0))


def test_missing_ids_do_not_move_row_zero():
    # A missing id (-1) or an empty bag is looked up as row 0 times zero. Its gradient is
    # exactly zero, and the sparse optimizer must not treat row 0 as touched: lazy Adam
    # and momentum would otherwise move it through their accumulated state.
    from mtrec.protos import optimizer_pb2
    from mtrec.training.optimizers import SparseOptimizer
    fs, layer = build_groups()
    inputs = {"s": strings("u1", ""),
              "n": tf.constant([3, -1], tf.int64),
              "tags": strings("a|b", ""),
              "v": strings("1|2", "3|4"),
              "x": tf.constant([5.0, 5.0], tf.float64)}
    features = fs.preprocess(inputs)
    layer(features)
    config = optimizer_pb2.Optimizer()
    config.adam_optimizer.learning_rate.constant_learning_rate.learning_rate = 0.1
    optimizer = SparseOptimizer(config)
    optimizer.build(layer.table_variables)
    before = {name: t.numpy().copy() for name, t in layer.tables.items()}
    for _ in range(2):
        with tf.GradientTape() as tape:
            outputs = layer(features)
            loss = tf.add_n([tf.reduce_sum(t) for t in outputs["all"]])
        optimizer.apply(zip(tape.gradient(loss, layer.table_variables), layer.table_variables))
    u1 = tf.strings.to_hash_bucket_fast(["u1"], 1000).numpy()[0]
    for name, touched in (("user", {u1}), ("price", {3}), ("tags", {1, 2})):
        moved = set(np.flatnonzero(np.any(layer.tables[name].numpy() != before[name], axis=1)))
        assert moved == touched, name


def test_embedding_regularization_adds_a_loss():
    config = pipeline(GROUP_FEATURES, GROUPS)
    fs = FeatureSet(config)
    layer = FeatureGroups(fs, config.model_config.feature_groups, embedding_regularization=0.5)
    outputs = layer(fs.preprocess(group_inputs()))
    assert len(layer.losses) == 1
    embedded = [t for name in ("all", "item") for t, f in zip(
        outputs[name], layer.groups[name][0]) if fs[f].kind != "values"]
    expected = 0.5 * np.mean(sum(np.sum(np.square(t.numpy()), axis=1) for t in embedded))
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)
