"""A feature's `initializer` (EasyRec's Initializer): a table's first values, the rows a
dynamic table gives new ids, and the config's rules (mtrec/features/initializers.py)."""
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS, TINY_MMOE, edit
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import TableSpec
from mtrec.features.initializers import INIT_RANGE, initial_rows

USER = 'features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }'


def _load(text):
    path = os.path.join(tempfile.mkdtemp(), "x.config")
    with open(path, "w") as f:
        f.write(text)
    return config_lib.load(path)


def _with_user(new):
    return edit(USER, new, TINY_INPUTS) + TINY_MMOE


@pytest.mark.parametrize("generator", [False, True])
def test_each_kind_draws_its_distribution(generator):
    gen = tf.random.Generator.from_seed(3) if generator else None
    keras.utils.set_random_seed(3)
    shape, table = (20_000, 16), (50_000, 16)

    def draw(*initializer):
        spec = TableSpec("t", *table, initializer=initializer)
        return initial_rows(spec, shape, gen).numpy()

    uniform = draw()
    assert uniform.min() >= -INIT_RANGE and uniform.max() <= INIT_RANGE
    assert abs(uniform.std() - INIT_RANGE / np.sqrt(3)) < 1e-3
    normal = draw("random_normal_initializer", 0.5, 1e-4)
    assert abs(normal.mean() - 0.5) < 1e-5 and abs(normal.std() - 1e-4) < 2e-6
    truncated = draw("truncated_normal_initializer", 0.0, 0.2)
    assert np.abs(truncated).max() <= 0.4 + 1e-6  # redrawn beyond two stddevs
    assert abs(truncated.std() - 0.2 * 0.87962566) < 3e-3
    # Glorot takes its scale from the whole (50,000, 16) table, as Keras' GlorotNormal does.
    glorot = draw("glorot_normal_initializer")
    keras_glorot = keras.initializers.GlorotNormal(seed=1)(table).numpy()
    assert abs(glorot.std() / keras_glorot.std() - 1) < 0.02
    np.testing.assert_array_equal(draw("constant_initializer", 0.25), np.full(shape, 0.25))
    spec = TableSpec("t", 3, 2, initializer=("constant_initializer", 1.0, 2.0))
    np.testing.assert_array_equal(initial_rows(spec, (3, 2), gen).numpy(), [[1.0, 2.0]] * 3)
    # A WIDE table (linear weights) starts at zero whatever its initializer says.
    wide = TableSpec("t/wide", 3, 2, wide=True, initializer=("constant_initializer", 1.0))
    np.testing.assert_array_equal(initial_rows(wide, (3, 2), gen).numpy(), np.zeros((3, 2)))


def test_a_table_starts_as_its_initializer_and_wide_and_oov_rows_at_zero():
    from mtrec.features.embedding import FeatureGroups
    from mtrec.features.feature import FeatureSet
    text = _with_user(
        'features { input_names: "user" vocab_list: ["a", "b"] embedding_dim: 3 '
        'initializer { constant_initializer { consts: [1, 2, 3] } } }')
    text = text.replace('feature_names: ["user", "price"] wide_deep: DEEP }',
                        'feature_names: ["user", "price"] wide_deep: DEEP }\n'
                        '  feature_groups { group_name: "w" feature_names: ["user"] '
                        'wide_deep: WIDE }')
    pipeline = _load(text).pipeline
    layer = FeatureGroups(FeatureSet(pipeline), pipeline.model_config.feature_groups)
    layer.build(None)
    user = layer.tables["user"].numpy()
    np.testing.assert_array_equal(user, [[0, 0, 0], [1, 2, 3], [1, 2, 3]])  # row 0: oov
    assert (layer.tables["user/wide"].numpy() == 0).all()
    price = layer.tables["price"].numpy()  # no initializer: the default
    assert np.abs(price).max() <= INIT_RANGE and price.std() > 0


def test_a_dynamic_table_gives_new_ids_rows_drawn_from_its_initializer():
    from mtrec.training.job import Job
    text = _with_user('features { input_names: "user" embedding_dim: 4 '
                      'ev_params { init_capacity: 2 max_capacity: 64 } '
                      'initializer { constant_initializer { consts: -0.5 } } }')
    job = Job.create(_load(text).pipeline, for_training=True)
    job.build()
    groups = job.model.feature_groups
    columns = {"clk": tf.constant([1, 0, 1]), "buy": tf.constant([0, 0, 1]),
               "user": tf.constant(["a", "b", "c"]), "price": tf.constant([1, 1, 2])}
    features, _ = job.split(columns)
    mapped = groups.dynamic.train_rows(features, tf.constant(0, tf.int64), groups.tables,
                                       job.sparse_optimizer)
    rows = mapped["user"]["ids"].numpy()
    # Three ids in a table of two rows: it grew, and every given row starts at -0.5.
    assert sorted(rows.tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(tf.gather(groups.tables["user"], rows).numpy(),
                                  np.full((3, 4), -0.5))


def test_config_rules_of_initializer():
    bad = [
        ('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 '
         'initializer { } }', "initializer is empty"),
        ('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 '
         'initializer { random_normal_initializer { stddev: 0 } } }',
         "random_normal_initializer.stddev must be > 0, got 0"),
        ('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 '
         'initializer { constant_initializer { consts: [1, 2] } } }',
         "needs one value, or embedding_dim (4) values"),
        ('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 '
         'initializer { glorot_normal_initializer { } } }\n'
         '  features { feature_name: "u2" input_names: "user" hash_bucket_size: 100 '
         'embedding_dim: 4 embedding_name: "user" }',
         "differ in id space, embedding_dim or initializer"),
    ]
    for new, message in bad:
        with pytest.raises(ConfigError) as e:
            _load(_with_user(new))
        assert message in str(e.value)
        assert "x.config:" in str(e.value)
    raw = edit('input_fields { input_name: "price" input_type: INT32 }',
               'input_fields { input_name: "price" input_type: FLOAT }', TINY_INPUTS)
    raw = edit('features { input_names: "price" num_buckets: 50 embedding_dim: 4 }',
               'features { input_names: "price" feature_type: RawFeature '
               'initializer { glorot_normal_initializer { } } }', raw)
    with pytest.raises(ConfigError) as e:
        _load(raw + TINY_MMOE)
    assert "has no embedding_dim" in str(e.value)
    # Valid: the same initializer on both features of a shared table.
    same = 'initializer { truncated_normal_initializer { stddev: 0.01 } }'
    loaded = _load(_with_user(
        f'features {{ input_names: "user" hash_bucket_size: 100 embedding_dim: 4 {same} }}\n'
        f'  features {{ feature_name: "u2" input_names: "user" hash_bucket_size: 100 '
        f'embedding_dim: 4 embedding_name: "user" {same} }}'))
    assert loaded.pipeline.feature_config.features[0].initializer.HasField(
        "truncated_normal_initializer")
