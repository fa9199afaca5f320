"""Sparse optimizer: only touched rows change; lazy Adam matches dense Adam on touched rows."""
import numpy as np
import pytest
import tensorflow as tf

from mtrec.protos import optimizer_pb2
from mtrec.training.optimizers import LearningRate, SparseOptimizer


def _config(kind, lr=0.1):
    config = optimizer_pb2.Optimizer()
    getattr(config, kind).learning_rate.constant_learning_rate.learning_rate = lr
    return config


def _grad_step(optimizer, table, ids):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids)))
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    optimizer.apply([(grad, table)])


@pytest.mark.parametrize("kind", ["adam_optimizer", "adamw_optimizer", "adagrad_optimizer",
                                  "momentum_optimizer"])
def test_only_touched_rows_change(kind):
    table = tf.Variable(tf.ones([6, 2]))
    optimizer = SparseOptimizer(_config(kind))
    optimizer.build([table])
    _grad_step(optimizer, table, tf.constant([1, 3, 3], tf.int64))
    changed = np.any(table.numpy() != 1.0, axis=1)
    assert changed.tolist() == [False, True, False, True, False, False]


def test_adam_keeps_dense_moments_by_default_and_lazy_adam_does_not():
    for kind, idle_row_moves in (("adam_optimizer", True), ("lazy_adam_optimizer", False)):
        table = tf.Variable(tf.ones([4, 2]))
        optimizer = SparseOptimizer(_config(kind))
        optimizer.build([table])
        _grad_step(optimizer, table, tf.constant([1], tf.int64))
        row_after_its_step = table.numpy()[1].copy()
        _grad_step(optimizer, table, tf.constant([3], tf.int64))  # row 1 sits idle
        optimizer.flush([table])
        assert np.any(table.numpy()[1] != row_after_its_step) == idle_row_moves, kind


def test_lazy_adam_equals_keras_adam_when_every_row_is_touched():
    import keras
    init = np.arange(8, dtype="float32").reshape(4, 2) / 10
    sparse_table = tf.Variable(init)
    dense_table = tf.Variable(init)
    sparse = SparseOptimizer(_config("lazy_adam_optimizer", 0.01))
    sparse.build([sparse_table])
    dense = keras.optimizers.Adam(0.01, epsilon=1e-7)
    ids = tf.constant([0, 1, 2, 3, 1], tf.int64)  # duplicates are summed
    for _ in range(3):
        _grad_step(sparse, sparse_table, ids)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(tf.convert_to_tensor(dense_table), ids)))
        # A dense gradient: Keras applies duplicate IndexedSlices rows one by one.
        grad = tf.convert_to_tensor(tape.gradient(loss, dense_table))
        dense.apply_gradients([(grad, dense_table)])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-5, atol=1e-6)


def test_learning_rate_schedules():
    exp = optimizer_pb2.LearningRate()
    e = exp.exponential_decay_learning_rate
    e.initial_learning_rate, e.decay_steps, e.decay_factor, e.min_learning_rate = 1.0, 10, 0.5, 0.2
    lr = LearningRate(exp)
    assert float(lr(0)) == pytest.approx(1.0)
    assert float(lr(9)) == pytest.approx(1.0)  # staircase
    assert float(lr(10)) == pytest.approx(0.5)
    assert float(lr(100)) == pytest.approx(0.2)  # floor
    cos = optimizer_pb2.LearningRate()
    c = cos.cosine_decay_learning_rate
    c.learning_rate_base, c.total_steps, c.warmup_learning_rate, c.warmup_steps = 1.0, 110, 0.0, 10
    lr = LearningRate(cos)
    assert float(lr(5)) == pytest.approx(0.5)
    assert float(lr(10)) == pytest.approx(1.0)
    assert float(lr(60)) == pytest.approx(0.5, abs=1e-6)
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-6)


def _dense_moments_config(lr):
    config = _config("adam_optimizer", lr)
    config.adam_optimizer.dense_moments = True
    return config


def _dense_moments_and_keras_at_step_100000(init):
    """(table, its dense-moments optimizer, Keras' table, Keras' Adam), both at step
    100,000, where the bias corrections are 1 (the closed form of the idle steps uses the
    current step size), every row current as after a checkpoint."""
    import keras
    sparse_table, dense_table = tf.Variable(init), tf.Variable(init)
    sparse = SparseOptimizer(_dense_moments_config(0.01))
    sparse.build([sparse_table])
    dense = keras.optimizers.Adam(0.01, epsilon=1e-7)
    dense.build([dense_table])
    for optimizer in (sparse, dense):
        optimizer.iterations.assign(100_000)
    sparse.restored()
    return sparse_table, sparse, dense_table, dense


def test_dense_moments_follow_keras_dense_adam_on_rows_that_sit_idle():
    """Rows touched every few steps: after flush(), the table and both moments equal Keras'
    dense Adam, which moves every row at every step."""
    rng = np.random.default_rng(3)
    init = rng.normal(size=(7, 3)).astype("float32")
    sparse_table, sparse, dense_table, dense = _dense_moments_and_keras_at_step_100000(init)
    lazy_table = tf.Variable(init)
    lazy = SparseOptimizer(_config("adam_optimizer", 0.01))
    lazy.build([lazy_table])
    lazy.iterations.assign(100_000)
    for step in range(40):
        ids = rng.choice(7, size=2, replace=False)  # most rows idle for several steps
        values = rng.normal(size=(2, 3)).astype("float32")
        grad = tf.IndexedSlices(tf.constant(values), tf.constant(ids, tf.int64), [7, 3])
        sparse.apply([(grad, sparse_table)])
        lazy.apply([(grad, lazy_table)])
        dense.apply_gradients([(tf.convert_to_tensor(grad), dense_table)])
        if step == 20:  # a checkpoint in between changes nothing
            sparse.flush([sparse_table])
    sparse.flush([sparse_table])
    slots = sparse.slot_variables[0]
    m, v = (dense.variables[i].numpy() for i in (2, 3))  # iterations, lr, m, v
    np.testing.assert_allclose(slots["m"].numpy(), m, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(slots["v"].numpy(), v, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-4, atol=2e-6)
    # Lazy Adam is measurably different on the same gradients.
    assert np.abs(lazy_table.numpy() - dense_table.numpy()).max() > 1e-3


def test_small_tables_take_dense_adam_on_every_row_and_equal_keras_from_the_first_step():
    """A table of at most whole_table_rows rows is updated whole by TF's dense Adam kernel:
    exact Keras Adam from step 1 (no bias-correction caveat), with no flush needed; a larger
    table keeps the per-row catch-up. Both keep the same checkpointed slots."""
    import keras
    rng = np.random.default_rng(5)
    init = rng.normal(size=(7, 3)).astype("float32")
    # (The optimizer knows tables by their variable names, unique in a model.)
    small, big = tf.Variable(init, name="small"), tf.Variable(np.tile(init, (2, 1)), name="big")
    dense_table = tf.Variable(init)
    sparse = SparseOptimizer(_dense_moments_config(0.01), whole_table_rows=7)
    sparse.build([small, big])
    assert sparse._whole_tables == {small.name}
    assert list(sparse._last_step.by_table) == [big.name]
    assert [sorted(s) for s in sparse.slot_variables] == [["m", "v"], ["m", "v"]]
    dense = keras.optimizers.Adam(0.01, epsilon=1e-7)
    dense.build([dense_table])
    for _ in range(25):
        ids = tf.constant(rng.choice(7, size=4), tf.int64)  # duplicates are summed
        values = tf.constant(rng.normal(size=(4, 3)).astype("float32"))
        sparse.apply([(tf.IndexedSlices(values, ids, [7, 3]), small),
                      (tf.IndexedSlices(values, ids, [14, 3]), big)])
        dense.apply_gradients([(tf.convert_to_tensor(tf.IndexedSlices(values, ids, [7, 3])),
                                dense_table)])
    # No flush: every row of the small table is already current.
    np.testing.assert_allclose(small.numpy(), dense_table.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse.slot_variables[0]["v"].numpy(), dense.variables[3].numpy(),
                               rtol=1e-4, atol=1e-9)
    # The big table's idle rows 7..13 never had a gradient; rows 0..6 lag until flushed.
    assert big.numpy()[7:].tolist() == init.tolist()
    before = big.numpy()[:7].copy()
    sparse.flush([small, big])
    assert np.abs(big.numpy()[:7] - before).max() > 0
    np.testing.assert_allclose(small.numpy(), dense_table.numpy(), rtol=1e-5, atol=1e-6)


def test_flush_brings_only_rows_that_had_a_gradient_and_equals_keras():
    """Most rows of a big table never had a gradient: the flush moves only the others (the
    rows path); the result is still Keras' dense Adam, and the untouched rows stay put."""
    rng = np.random.default_rng(11)
    init = rng.normal(size=(10, 3)).astype("float32")
    sparse_table, sparse, dense_table, dense = _dense_moments_and_keras_at_step_100000(init)
    for step in range(12):
        ids = [step % 3 + 1]  # rows 1-3 only, each idle two steps of three
        grad = tf.IndexedSlices(tf.constant(rng.normal(size=(1, 3)).astype("float32")),
                                tf.constant(ids, tf.int64), [10, 3])
        sparse.apply([(grad, sparse_table)])
        dense.apply_gradients([(tf.convert_to_tensor(grad), dense_table)])
    sparse.flush([sparse_table])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(sparse.slot_variables[0]["m"].numpy(), dense.variables[2].numpy(),
                               rtol=1e-4, atol=1e-7)
    untouched = [0] + list(range(4, 10))
    assert sparse_table.numpy()[untouched].tolist() == init[untouched].tolist()
    last_step = sparse._last_step.by_table[sparse_table.name].numpy()
    assert last_step.tolist() == [100_012] * 10  # every row current


def test_dense_moments_flush_before_any_step_changes_nothing():
    table = tf.Variable(tf.ones([3, 2]))
    optimizer = SparseOptimizer(_dense_moments_config(0.1))
    optimizer.build([table])
    optimizer.flush([table])
    assert table.numpy().tolist() == [[1.0, 1.0]] * 3


@pytest.mark.slow
def test_dense_moments_resume_from_a_lazy_checkpoint_and_stay_out_of_checkpoints(
        small_taobao, tmp_path):
    """Row steps are not saved (every checkpoint is written flushed), so a model_dir trained
    with lazy Adam resumes with dense moments (adam_optimizer's default)."""
    import mtrec
    from conftest import fast_overrides, sample_config
    train_path, test_path = small_taobao
    model_dir = str(tmp_path / "model")
    lazy = "train_config.optimizer_config[:].adam_optimizer.dense_moments=false"
    for steps, extra in ((5, [lazy]), (10, [])):
        # No evaluation or export: only training and checkpoints matter here.
        sets = fast_overrides(train_path, test_path, steps=steps) + [
            "eval_input_path=", "train_config.save_checkpoints_steps=5",
            "export_config.exporter_type=latest"] + extra
        mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=model_dir, sets=sets)
        assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{steps}")
    saved = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(model_dir))]
    assert saved and not [name for name in saved if "last_step" in name]


def _rms_prop_config(lr, momentum):
    config = _config("rms_prop_optimizer", lr)
    c = config.rms_prop_optimizer
    c.momentum_optimizer_value, c.decay, c.epsilon = momentum, 0.8, 0.01
    return config


def _ftrl_config(lr):
    config = _config("ftrl_optimizer", lr)
    c = config.ftrl_optimizer
    c.l1_reg, c.l2_reg, c.l2_shrinkage_reg, c.initial_accumulator_value = 0.05, 0.1, 0.02, 0.2
    return config


@pytest.mark.parametrize("make", [
    lambda: _rms_prop_config(0.05, 0.5), lambda: _rms_prop_config(0.05, 0.0),
    lambda: _ftrl_config(0.3)], ids=["rms_prop_momentum", "rms_prop", "ftrl"])
def test_sparse_rms_prop_and_ftrl_equal_keras_on_touched_rows(make):
    """The sparse update (TF's ResourceSparseApply kernel) of the rows a batch touched equals
    the dense Keras optimizer built from the same config on those rows; the other rows do
    not move. Each step touches rows 0-3 (with a duplicate) and never rows 4-5."""
    from mtrec.training.optimizers import build_dense_optimizer
    config = make()
    rng = np.random.default_rng(7)
    init = rng.normal(size=(6, 3)).astype("float32")
    sparse_table, dense_table = tf.Variable(init), tf.Variable(init[:4])
    sparse = SparseOptimizer(config)
    sparse.build([sparse_table])
    dense = build_dense_optimizer(config)
    for _ in range(4):
        ids = tf.constant([0, 1, 2, 3, 1], tf.int64)
        values = rng.normal(size=(5, 3)).astype("float32")
        sparse.apply([(tf.IndexedSlices(tf.constant(values), ids, [6, 3]), sparse_table)])
        summed = np.zeros((4, 3), "float32")
        np.add.at(summed, ids.numpy(), values)
        dense.apply_gradients([(tf.constant(summed), dense_table)])
    np.testing.assert_allclose(sparse_table.numpy()[:4], dense_table.numpy(), rtol=1e-5,
                               atol=1e-6)
    assert np.abs(sparse_table.numpy()[:4] - init[:4]).min() > 1e-4  # they did move
    assert sparse_table.numpy()[4:].tolist() == init[4:].tolist()


def test_embedding_learning_rate_multiplier_scales_the_sparse_learning_rate():
    """Momentum SGD on one row, first step: the row moves by lr x multiplier x gradient."""
    table = tf.Variable(tf.zeros([3, 2]))
    config = _config("momentum_optimizer", 0.1)
    config.embedding_learning_rate_multiplier = 3.0
    optimizer = SparseOptimizer(config)
    optimizer.build([table])
    grad = tf.IndexedSlices(tf.constant([[1.0, -2.0]]), tf.constant([1], tf.int64), [3, 2])
    optimizer.apply([(grad, table)])
    np.testing.assert_allclose(table.numpy()[1], [-0.3, 0.6], rtol=1e-6)
    assert float(optimizer.learning_rate(0)) == pytest.approx(0.3)
