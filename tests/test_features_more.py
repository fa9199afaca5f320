"""EasyRec feature options multi-task configs use (issues #17, #22): RawFeature projections,
variational dropout over feature groups, normalizer_fn, and the other feature options."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.embedding import FeatureGroups
from mtrec.features.feature import FeatureSet
from mtrec.features.width import group_widths
from mtrec.layers.variational_dropout import EPSILON, TEMPERATURE, VariationalDropout
from mtrec.models.registry import build_model
from mtrec.protos import feature_pb2

from test_features import pipeline, strings


def groups_of(features: str, groups: str, **kwargs):
    config = pipeline(features, groups)
    fs = FeatureSet(config)
    return config, fs, FeatureGroups(fs, config.model_config.feature_groups, **kwargs)


def set_table(layer, name, values):
    layer.tables[name].assign(np.asarray(values, np.float32))


# ---------------------------------------------------------------------------
# RawFeature with embedding_dim and no boundaries: EasyRec's projection

RAW = ('features { feature_name: "a" input_names: "v" feature_type: RawFeature '
       'raw_input_dim: 3 embedding_dim: 2 %s }')
RAW_GROUP = 'feature_groups { group_name: "all" feature_names: "a" }'
RAW_INPUT = {"v": strings("1|2|3", "-1|0|2", "-1|0|-4", "")}
TABLE = [[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]]


def test_raw_feature_projection_sum():
    config, fs, layer = groups_of(RAW % "", RAW_GROUP)
    features = fs.preprocess(RAW_INPUT)
    layer(features)
    assert fs["a"].kind == "projected" and fs["a"].embedding_dim == 2
    assert tuple(layer.tables["a"].shape) == (3, 2)
    set_table(layer, "a", TABLE)
    out = layer(features)["all"][0].numpy()
    values = np.array([[1, 2, 3], [-1, 0, 2], [-1, 0, -4], [0, 0, 0]], np.float32)
    # Value i weights row i; negative values count with "sum" (EasyRec prunes them only
    # for the other combiners).
    np.testing.assert_allclose(out, values @ np.array(TABLE, np.float32), rtol=1e-6)
    assert group_widths({"all": config.model_config.feature_groups[0]},
                        {"a": fs["a"].config}) == {"all": [2]}
    assert layer.group_dim("all") == 2


def test_raw_feature_projection_mean_drops_non_positive_values():
    _, fs, layer = groups_of(RAW % 'combiner: "mean"', RAW_GROUP)
    features = fs.preprocess(RAW_INPUT)
    layer(features)
    set_table(layer, "a", TABLE)
    out = layer(features)["all"][0].numpy()
    table = np.array(TABLE, np.float32)
    expected = np.array([(1 * table[0] + 2 * table[1] + 3 * table[2]) / 6,
                         table[2],  # only the 2 is positive: 2 * row 2 / 2
                         [0, 0], [0, 0]], np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_raw_feature_projection_in_a_wide_group_learns_weights():
    features = ('features { feature_name: "a" input_names: "v" feature_type: RawFeature '
                'raw_input_dim: 3 }')
    groups = 'feature_groups { group_name: "w" feature_names: "a" wide_deep: WIDE }'
    _, fs, layer = groups_of(features, groups, wide_output_dim=2)
    inputs = fs.preprocess(RAW_INPUT)
    out = layer(inputs)["w"][0].numpy()
    # A linear model's weights start at zero, then weight each value.
    np.testing.assert_array_equal(out, np.zeros((4, 2), np.float32))
    set_table(layer, "a/wide", TABLE)
    out = layer(inputs)["w"][0].numpy()
    values = np.array([[1, 2, 3], [-1, 0, 2], [-1, 0, -4], [0, 0, 0]], np.float32)
    np.testing.assert_allclose(out, values @ np.array(TABLE, np.float32), rtol=1e-6)


def test_raw_feature_without_embedding_dim_is_still_its_values():
    features = ('features { feature_name: "a" input_names: "v" feature_type: RawFeature '
                'raw_input_dim: 3 }')
    _, fs, layer = groups_of(features, RAW_GROUP)
    out = layer(fs.preprocess(RAW_INPUT))["all"][0].numpy()
    np.testing.assert_array_equal(out[0], [1, 2, 3])
    assert layer.tables == {}


# ---------------------------------------------------------------------------
# VariationalDropout layer


def numpy_keep(p, u):
    """EasyRec's relaxed Bernoulli keep mask, in float64."""
    logit = (np.log(p + EPSILON) - np.log(1 - p + EPSILON)
             + np.log(u + EPSILON) - np.log(1 - u + EPSILON))
    return 1 - 1 / (1 + np.exp(-logit / TEMPERATURE))


@pytest.mark.parametrize("embedding_wise", [False, True])
def test_variational_dropout_inference_scales_by_keep_rate(embedding_wise):
    layer = VariationalDropout([2, 1, 3], regularization_lambda=0.5,
                               embedding_wise=embedding_wise)
    x = [tf.constant(np.arange(8, dtype=np.float32).reshape(4, 2) + 1),
         tf.constant([[1.0], [2.0], [3.0], [4.0]]),
         tf.constant(np.ones((4, 3), np.float32))]
    out = layer(x, training=False)
    logit_p = layer.logit_p.numpy()
    assert logit_p.shape == ((6,) if embedding_wise else (3,))
    # Glorot uniform over the rates: within +-sqrt(3 / n).
    assert np.all(np.abs(logit_p) <= np.sqrt(3 / logit_p.size))
    p = 1 / (1 + np.exp(-logit_p.astype(np.float64)))
    per_dim = p if embedding_wise else np.repeat(p, [2, 1, 3])
    expected = np.concatenate([t.numpy() for t in x], axis=1) * (1 - per_dim)
    np.testing.assert_allclose(np.concatenate([t.numpy() for t in out], axis=1), expected,
                               rtol=1e-6)
    assert [t.shape[-1] for t in out] == [2, 1, 3]
    # The penalty: lambda / batch * sum(1 - p).
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0].numpy(), 0.5 / 4 * np.sum(1 - p), rtol=1e-6)


def test_variational_dropout_training_masks_whole_features():
    layer = VariationalDropout([2, 3], regularization_lambda=0.01)
    x = [tf.ones((64, 2)), tf.ones((64, 3))]
    layer.build()
    layer.logit_p.assign([-20.0, 20.0])  # feature 0 kept, feature 1 dropped
    first, second = [t.numpy() for t in layer(x, training=True)]
    np.testing.assert_allclose(first, np.ones((64, 2)), atol=1e-6)
    np.testing.assert_allclose(second, np.zeros((64, 3)), atol=1e-6)
    layer.logit_p.assign([0.0, 0.5])
    first, second = [t.numpy() for t in layer(x, training=True)]
    # One mask value per row and feature, shared by the feature's dimensions, in [0, 1],
    # and random: not all rows alike.
    for masks in (first, second):
        np.testing.assert_array_equal(masks, masks[:, :1].repeat(masks.shape[1], axis=1))
        assert masks.min() >= 0 and masks.max() <= 1 and masks[:, 0].std() > 0.1


def test_variational_dropout_keep_mask_matches_numpy():
    """The training mask is EasyRec's formula of the uniform noise; its mean is 1 - p."""
    layer = VariationalDropout([1, 1, 1, 1], embedding_wise=True, seed=3)
    layer.build()
    logit_p = np.array([-2.0, -0.5, 0.5, 2.0])
    layer.logit_p.assign(logit_p)
    p = 1 / (1 + np.exp(-logit_p))
    u = np.random.default_rng(0).uniform(size=(5, 4))
    np.testing.assert_allclose(layer.keep_mask(tf.constant(u, tf.float32)).numpy(),
                               numpy_keep(p, u), atol=1e-5)
    keep = np.concatenate([t.numpy() for t in layer([tf.ones((2000, 1))] * 4,
                                                     training=True)], axis=1)
    # A relaxed Bernoulli: the mean mask is close to the keep rate 1 - p.
    np.testing.assert_allclose(keep.mean(axis=0), 1 - p, atol=0.04)


def test_variational_dropout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one width >= 1 per feature"):
        VariationalDropout([2, 0])
    with pytest.raises(ValueError, match="regularization_lambda must be >= 0"):
        VariationalDropout([2], regularization_lambda=-1)


def test_feature_groups_apply_variational_dropout_per_group():
    features = """
      features { feature_name: "u" input_names: "s" hash_bucket_size: 10 embedding_dim: 2 }
      features { feature_name: "r" input_names: "x" feature_type: RawFeature }
    """
    groups = """
      feature_groups { group_name: "a" feature_names: ["u", "r"] }
      feature_groups { group_name: "b" feature_names: ["r"] }
    """
    config = pipeline(features, groups)
    fs = FeatureSet(config)
    vd = feature_pb2.VariationalDropoutLayer(regularization_lambda=0.1)
    plain = FeatureGroups(fs, config.model_config.feature_groups)
    dropped = FeatureGroups(fs, config.model_config.feature_groups, variational_dropout=vd)
    inputs = fs.preprocess({"s": strings("a", "b", "c"), "x": tf.constant([1.0, 2.0, 3.0],
                                                                         tf.float64)})
    plain(inputs)
    dropped(inputs)
    set_table(dropped, "u", plain.tables["u"].numpy())
    before = plain(inputs)
    after = dropped(inputs, training=False)
    assert sorted(dropped.dropouts) == ["a", "b"]
    for group, widths in (("a", [2, 1]), ("b", [1])):
        p = dropped.dropouts[group].drop_rates().numpy()
        got = np.concatenate([t.numpy() for t in after[group]], axis=1)
        want = np.concatenate([t.numpy() for t in before[group]], axis=1) * np.repeat(1 - p,
                                                                                      widths)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    penalties = sorted(float(x) for x in dropped.losses)
    want = sorted(0.1 / 3 * np.sum(1 - dropped.dropouts[g].drop_rates().numpy())
                  for g in ("a", "b"))
    np.testing.assert_allclose(penalties, want, rtol=1e-6)


# ---------------------------------------------------------------------------
# RawFeature: min_val / max_val, num_buckets, normalizer_fn


def test_raw_feature_scaling_then_normalizer():
    fs = FeatureSet(pipeline(
        'features { feature_name: "a" input_names: "x" feature_type: RawFeature '
        'min_val: 2 max_val: 6 normalizer_fn: "tf.math.log1p" }'))
    x = np.array([2.0, 4.0, 10.0])
    values = fs.preprocess({"x": tf.constant(x, tf.float64)})["a"]["values"].numpy()
    np.testing.assert_allclose(values[:, 0], np.log1p((x - 2) / 4), rtol=1e-6)


@pytest.mark.parametrize("name,fn", [("tf.math.sqrt", np.sqrt), ("tf.sigmoid",
                                     lambda v: 1 / (1 + np.exp(-v))),
                                     ("tf.nn.tanh", np.tanh), ("tf.square", np.square)])
def test_raw_feature_named_normalizers(name, fn):
    fs = FeatureSet(pipeline('features { feature_name: "a" input_names: "v" feature_type: '
                             f'RawFeature raw_input_dim: 2 normalizer_fn: "{name}" }}'))
    values = fs.preprocess({"v": strings("1|4", "0.5|9")})["a"]["values"].numpy()
    np.testing.assert_allclose(values, fn(np.array([[1, 4], [0.5, 9]])), rtol=1e-6)


def test_raw_feature_num_buckets_over_a_range():
    fs = FeatureSet(pipeline(
        'features { feature_name: "a" input_names: "x" feature_type: RawFeature '
        'min_val: 0 max_val: 10 num_buckets: 4 embedding_dim: 3 }'))
    ids = fs.preprocess({"x": tf.constant([-1.0, 0.0, 2.4, 2.5, 9.9, 12.0],
                                          tf.float64)})["a"]["ids"]
    # (x - 0) / 10 bucketized by [0, 0.25, 0.5, 0.75]: below 0 is bucket 0.
    assert ids.numpy().tolist() == [0, 1, 1, 2, 4, 4]
    assert fs["a"].num_ids == 5 and fs["a"].kind == "ids"


# ---------------------------------------------------------------------------
# ExprFeature


EXPR_INPUTS = {"x": tf.constant([3.0, 9.0, 1.0, 0.0], tf.float64),
               "n": tf.constant([1, 2, 3, 0], tf.int64), "v": strings("2", "", "0.5", "4")}


def expr(expression: str) -> np.ndarray:
    fs = FeatureSet(pipeline(
        'features { feature_name: "a" input_names: ["x", "n", "v"] feature_type: ExprFeature '
        f"expression: {expression!r} }}"))
    out = fs.preprocess(EXPR_INPUTS)["a"]["values"]
    assert out.dtype == tf.float32 and out.shape[1] == 1
    return out.numpy()[:, 0]


def test_expr_feature_values_match_numpy():
    x, n, v = np.array([3.0, 9, 1, 0]), np.array([1.0, 2, 3, 0]), np.array([2.0, 0, 0.5, 4])
    np.testing.assert_allclose(expr("(x >= n) & (x <= (n + 5))"),
                               ((x >= n) & (x <= n + 5)).astype(float))
    np.testing.assert_allclose(expr("(x >= n) | (x > 5)"), ((x >= n) | (x > 5)).astype(float))
    np.testing.assert_allclose(expr("x == n + 2"), (x == n + 2).astype(float))
    np.testing.assert_allclose(expr("x * 2 - n / 4 + -v"), x * 2 - n / 4 - v, rtol=1e-6)
    np.testing.assert_allclose(expr("1 < x < 5"), ((1 < x) & (x < 5)).astype(float))
    np.testing.assert_allclose(expr("7"), np.full(4, 7.0))


def test_expr_feature_width_is_one():
    config = pipeline('features { feature_name: "a" input_names: ["x", "n"] '
                      'feature_type: ExprFeature expression: "x + n" }')
    assert group_widths({"all": config.model_config.feature_groups[0]},
                        {"a": config.feature_config.features[0]}) == {"all": [1]}


# ---------------------------------------------------------------------------
# LookupFeature and ComboFeature options


def hashed(values, buckets):
    return tf.strings.to_hash_bucket_fast(values, buckets).numpy().tolist()


def test_lookup_feature_selects_the_rows_key():
    fs = FeatureSet(pipeline(
        'features { feature_name: "a" input_names: ["s", "tags"] feature_type: LookupFeature '
        'kv_separator: ":" hash_bucket_size: 1000 embedding_dim: 4 '
        'lookup_max_sel_elem_num: 2 }'))
    maps = strings("k1:v1|k2:v2|k1:v3", "k2:z:9", "k1:v1", "k1:a|k1:b|k1:c|k2:d")
    ids = fs.preprocess({"s": strings("k1", "k2", "k3", "k1"), "tags": maps})["a"]["ids"]
    ids = ids.to_list()
    assert ids == [hashed(["v1", "v3"], 1000), hashed(["z:9"], 1000), [],
                   hashed(["a", "b"], 1000)]
    assert fs["a"].kind == "bag"


def test_combo_join_sep_hashes_the_joined_string():
    fs = FeatureSet(pipeline(
        'features { feature_name: "a" input_names: ["s", "s2"] feature_type: ComboFeature '
        'combo_join_sep: "X" combo_input_seps: ["", ","] hash_bucket_size: 1000 '
        'embedding_dim: 4 }'))
    ids = fs.preprocess({"s": strings("a|b", "c"), "s2": strings("1,2", "3")})["a"]["ids"]
    assert ids.to_list() == [hashed(["a|bX1", "a|bX2"], 1000), hashed(["cX3"], 1000)]


def test_combo_input_seps_split_each_input():
    def ids(seps):
        fs = FeatureSet(pipeline(
            'features { feature_name: "a" input_names: ["s", "s2"] feature_type: ComboFeature '
            f'{seps} hash_bucket_size: 1000 embedding_dim: 4 }}'))
        return fs.preprocess({"s": strings("a|b"), "s2": strings("1,2")})["a"]["ids"].to_list()

    whole = tf.sparse.cross_hashed([tf.sparse.from_dense(strings("a|b")[:, None]),
                                    tf.sparse.from_dense(tf.constant([["1", "2"]]))],
                                   num_buckets=1000).values.numpy().tolist()
    assert ids('combo_input_seps: ["", ","]') == [whole]
    assert len(ids("")[0]) == 2  # default: both split by "|": [a, b] x [1,2]


# ---------------------------------------------------------------------------
# shared_names, auto_expand_input_fields and `f[1-3]` feature names


EXPAND = """
train_config { num_steps: 1 }
data_config {
  auto_expand_input_fields: true
  label_fields: "label"
  input_fields { input_name: "label" input_type: INT32 }
  input_fields { input_name: "field[1-3]" input_type: STRING default_val: "z" }
}
feature_config {
  features { input_names: "field1" shared_names: "field[2-3]" hash_bucket_size: 10
             embedding_dim: 4 }
}
model_config {
  model_class: "SimpleMultiTask"
  feature_groups { group_name: "all" feature_names: "field[1-3]" }
  simple_multi_task { task_towers { tower_name: "t" label_name: "label" } }
}
"""


def test_shared_names_and_auto_expanded_fields(tmp_path):
    path = tmp_path / "expand.config"
    path.write_text(EXPAND)
    pipeline_ = config_lib.load(str(path)).pipeline
    fields = [(f.input_name, f.default_val) for f in pipeline_.data_config.input_fields]
    assert fields == [("label", ""), ("field1", "z"), ("field2", "z"), ("field3", "z")]
    features = [(f.feature_name, list(f.input_names), f.hash_bucket_size, list(f.shared_names))
                for f in pipeline_.feature_config.features]
    assert features == [("field1", ["field1"], 10, []), ("field2", ["field2"], 10, []),
                        ("field3", ["field3"], 10, [])]
    assert list(pipeline_.model_config.feature_groups[0].feature_names) == [
        "field1", "field2", "field3"]
    # Without auto_expand_input_fields a shared name is one input, read as written.
    path.write_text(EXPAND.replace("auto_expand_input_fields: true", "").replace(
        'input_fields { input_name: "field[1-3]" input_type: STRING default_val: "z" }',
        "\n".join(f'input_fields {{ input_name: "field{i}" }}' for i in (1, 2, 3))).replace(
        '"field[2-3]"', '["field2", "field3"]'))
    pipeline_ = config_lib.load(str(path)).pipeline
    assert [f.feature_name for f in pipeline_.feature_config.features] == [
        "field1", "field2", "field3"]


# ---------------------------------------------------------------------------
# Config errors name the file and line


ERROR_BASE = EXPAND.replace("auto_expand_input_fields: true\n", "").replace(
    'input_fields { input_name: "field[1-3]" input_type: STRING default_val: "z" }',
    'input_fields { input_name: "field1" input_type: STRING }\n'
    '  input_fields { input_name: "x" input_type: DOUBLE }').replace(
    ' shared_names: "field[2-3]"', "").replace('"field[1-3]"', '"field1"')


def error_of(tmp_path, feature: str) -> tuple[str, str]:
    """(the ConfigError's message, the config's text) of ERROR_BASE plus `feature`, which
    the group also lists."""
    text = ERROR_BASE.replace("feature_config {\n", "feature_config {\n" + feature + "\n")
    text = text.replace('feature_names: "field1"', 'feature_names: ["field1", "e"]')
    path = tmp_path / "bad.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return str(info.value), text


@pytest.mark.parametrize("feature,message", [
    ('features { feature_name: "e" input_names: "x" feature_type: ExprFeature\n'
     '  expression: "__import__(\'os\').system(\'true\')" }',
     "is not allowed (only numbers, input names"),
    ('features { feature_name: "e" input_names: "x" feature_type: ExprFeature\n'
     '  expression: "x.real + 1" }', "'x.real' is not allowed"),
    ('features { feature_name: "e" input_names: "x" feature_type: ExprFeature\n'
     '  expression: "x + y" }', "'y' is not one of the feature's input_names (x)"),
    ('features { feature_name: "e" input_names: "x" feature_type: ExprFeature\n'
     '  expression: "x +" }', "does not parse"),
    ('features { feature_name: "e" input_names: "x" feature_type: RawFeature\n'
     '  normalizer_fn: "my_module.scale" }',
     "normalizer_fn 'my_module.scale' is not one of the functions mtrec knows by name"),
    ('features { feature_name: "e" input_names: "x" feature_type: IdFeature\n'
     '  hash_bucket_size: 5 embedding_dim: 2 combo_input_seps: ["", ","] }',
     "combo_input_seps is read by a ComboFeature only"),
])
def test_feature_option_errors_name_their_line(tmp_path, feature, message):
    error, text = error_of(tmp_path, feature)
    assert message in error
    # At the line of the option (the feature's second line).
    line = text.splitlines().index(feature.splitlines()[1]) + 1
    assert f"bad.config:{line}: " in error


def test_lookup_feature_needs_kv_separator_and_two_inputs(tmp_path):
    error, _ = error_of(tmp_path, 'features { feature_name: "e" input_names: ["field1", "x"] '
                        'feature_type: LookupFeature hash_bucket_size: 5 embedding_dim: 2 }')
    assert "LookupFeature 'e' needs kv_separator" in error
    error, _ = error_of(tmp_path, 'features { feature_name: "e" input_names: "field1" '
                        'feature_type: LookupFeature kv_separator: ":" hash_bucket_size: 5 '
                        'embedding_dim: 2 }')
    assert "LookupFeature 'e' reads two input_names" in error


def test_min_val_must_be_below_max_val(tmp_path):
    error, text = error_of(tmp_path, 'features { feature_name: "e" input_names: "x" '
                           'feature_type: RawFeature min_val: 3\n  max_val: 3 }')
    assert "RawFeature 'e': min_val (3) must be below max_val (3)" in error
    assert f"bad.config:{text.splitlines().index('  max_val: 3 }') + 1}: " in error


# ---------------------------------------------------------------------------
# variational_dropout in a model


VD_MODEL = TINY_INPUTS + """\
model_config {
  model_class: "SimpleMultiTask"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  variational_dropout { regularization_lambda: 0.5 }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] } }
  }
}
"""


def test_model_with_variational_dropout(tmp_path):
    pipeline_ = config_lib.from_pipeline(config_lib.parse_text(VD_MODEL)).pipeline
    fs = FeatureSet(pipeline_)
    model = build_model(pipeline_, fs)
    features = fs.preprocess({"user": strings(*[f"u{i}" for i in range(8)]),
                              "price": tf.constant(np.arange(8), tf.int32)})
    first = model(features, training=False)["probs_ctr"].numpy()
    again = model(features, training=False)["probs_ctr"].numpy()
    np.testing.assert_array_equal(first, again)  # inference is deterministic
    layer = model.feature_groups.dropouts["all"]
    p = layer.drop_rates().numpy()
    assert p.shape == (2,)  # one rate per feature
    penalty = 0.5 / 8 * np.sum(1 - p)
    assert sum(np.isclose(float(x), penalty, rtol=1e-6) for x in model.losses) == 1
    trained = model(features, training=True)["probs_ctr"].numpy()
    assert not np.allclose(trained, first)  # training draws masks
    assert any(path.endswith("variational_dropout_all/logit_p")
               for path in model.checkpoint_variables())
    # A negative lambda is a config error at its line.
    path = tmp_path / "vd.config"
    text = VD_MODEL.replace("regularization_lambda: 0.5", "regularization_lambda: -1")
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"vd.config:\d+: model_config.variational_dropout: "
                       "regularization_lambda must be >= 0"):
        config_lib.load(str(path))


def test_an_expression_nested_too_deeply_is_a_clear_error():
    from mtrec.config.expression import parse_expression
    for text in ("a" + " + a" * 50000, "-" * 100000 + "a"):
        with pytest.raises(ValueError, match="nested too deeply"):
            parse_expression(text, ["a"])
