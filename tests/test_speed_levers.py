"""Issue #18's speed changes to input code: Parquet STRING fields are read with Arrow's
kernels (mtrec/data/parquet.py) and keep the per-value rules: null and "NULL" take
default_val, "" stays "", non-ASCII text and numbers read as text keep their value.
And speed_levers.py's fused-table variants (one table for all id features, one gather and
one sparse update a step) compute what the per-feature tables do."""
import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import keras

from mtrec import config as config_lib
from mtrec.data.reader import make_reader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "bench"))
import speed_data  # noqa: E402
import speed_levers  # noqa: E402
import speed_limit  # noqa: E402
import speed_profile  # noqa: E402


def test_parquet_string_fields_missing_and_text(tmp_path):
    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({
        "s": pa.array(["x", None, "NULL", "", "é", "12"]),
        "n": pa.array([5, None, 7, 8, None, 10], pa.int64()),  # numbers read as text
    }), path)
    pipeline = config_lib.parse_text("""
      data_config { input_type: ParquetInput
        input_fields { input_name: "s" input_type: STRING default_val: "dflt" }
        input_fields { input_name: "n" input_type: STRING default_val: "-1" } }""")
    batch = next(iter(make_reader(pipeline.data_config, [path]).dataset(8, 1, False)))
    assert [v.decode() for v in batch["s"].numpy()] == ["x", "dflt", "dflt", "", "é", "12"]
    assert batch["n"].numpy().tolist() == [b"5", b"-1", b"7", b"8", b"-1", b"10"]



# -- one fused table per group (speed_levers.py's limit_fused and mtrec_fused) --------------
def _rows(n, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, vocab, (n, speed_limit.NUM_SPARSE)),
            rng.standard_normal((n, speed_limit.NUM_DENSE)).astype(np.float32),
            (rng.random((n, 2)) < 0.3).astype(np.float32))


def test_sparse_adam_updates_touched_rows_as_adam():
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
    adam = speed_limit.SparseAdam([table], learning_rate=0.1)
    g = np.array([[1.0, -2.0, 0.5], [0.25, 0.0, -1.0], [3.0, 1.0, 1.0]], np.float32)
    adam.apply([tf.IndexedSlices(tf.constant(g), tf.constant([2, 0, 2]))], [table])
    # numpy Adam, step 1, on the summed gradients of rows 2 (twice) and 0; rows 1, 3 untouched.
    expected = np.arange(12, dtype=np.float32).reshape(4, 3)
    step_size = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
    for row, grad in ((2, g[0] + g[2]), (0, g[1])):
        m, v = 0.1 * grad, 0.001 * grad ** 2
        expected[row] -= step_size * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(adam.m[0].numpy()[row], m, rtol=1e-6)
    # float32: 1 - 0.999 ** t loses digits; each touched value moves by about 0.1.
    np.testing.assert_allclose(table.numpy(), expected, atol=1e-5)
    assert not adam.v[0].numpy()[[1, 3]].any()


def test_limit_fused_table_trains_as_per_feature_tables():
    vocab = 7  # few rows: ids repeat within a batch and across features
    ids, dense, labels = (tf.constant(a) for a in _rows(32, vocab))
    ids = tf.cast(ids, tf.int32)
    tables = speed_limit.build_model("esmm", ids, dense, vocab=vocab)
    fused = speed_limit.build_model("esmm", ids, dense, fused=True, vocab=vocab)
    fused.tables[0].assign(tf.concat([t.value for t in tables.tables], 0))
    for a, b in zip(fused.dense_variables, tables.dense_variables):
        a.assign(b)
    bce = keras.losses.BinaryCrossentropy()

    def loss_and_grads(model):
        with tf.GradientTape() as tape:
            p0, p1 = model(ids, dense)
            loss = bce(labels[:, 0], p0) + bce(labels[:, 1], p1)
        return loss, tape.gradient(loss, list(model.tables) + model.dense_variables)

    loss, grads = loss_and_grads(tables)
    fused_loss, fused_grads = loss_and_grads(fused)
    assert abs(float(loss) - float(fused_loss)) < 1e-6
    assert isinstance(fused_grads[0], tf.IndexedSlices)
    np.testing.assert_allclose(
        tf.convert_to_tensor(fused_grads[0]).numpy(),
        np.concatenate([tf.convert_to_tensor(g).numpy() for g in grads[:20]]), atol=1e-7)
    for a, b in zip(fused_grads[1:], grads[20:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)
    # Two sparse Adam steps each (eager): one update of the fused table vs one per table.
    optimizers = [(m, speed_limit.SparseAdam(list(m.tables))) for m in (tables, fused)]
    for _ in range(2):
        for model, adam in optimizers:
            adam.apply(loss_and_grads(model)[1][:len(model.tables)], list(model.tables))
    np.testing.assert_allclose(fused.tables[0].numpy(),
                               np.concatenate([t.numpy() for t in tables.tables]), atol=1e-6)


@pytest.mark.slow  # building mtrec's job: ~10 s on a loaded 2-core host
def test_mtrec_fused_tables_same_loss_and_gradients(tmp_path):
    ids, dense, labels = _rows(64, 10_000, seed=1)
    ids[:32, 3] = ids[:32, 5]  # the same id in two features: different rows once fused
    speed_data.write_csv(str(tmp_path / "train.csv"), {
        "click": labels[:, 0].astype(np.int8), "ids": ids, "dense": dense,
        "conversion": (labels[:, 0] * labels[:, 1]).astype(np.int8)})
    args = argparse.Namespace(data=str(tmp_path), model="esmm", batch_size=32, batches=1,
                              lazy=False)
    work = tmp_path / "work"
    work.mkdir()
    job, _, cached = speed_profile.mtrec_job(args, str(work))
    features, side, _ = next(iter(cached))
    model = job.model

    def loss_and_grads(tables):
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            total = tf.add_n(list(model.weighted_losses(outputs, side).values()))
        grads = tape.gradient(total, tables + model.trainable_variables)
        return total, grads[:len(tables)], grads[len(tables):]

    tables = model.feature_groups.table_variables
    total, grads, dense_grads = loss_and_grads(tables)
    fused, where = speed_levers.fuse_tables(job)
    assert len(model.feature_groups.table_variables) == 1
    assert model.feature_groups.table_variables[0] is fused
    assert fused.shape == (20 * 10_000, 16)
    fused_total, fused_grads, fused_dense = loss_and_grads([fused])
    assert abs(float(total) - float(fused_total)) < 1e-6
    fused_grad = tf.convert_to_tensor(fused_grads[0]).numpy()
    by_table = {id(t): tf.convert_to_tensor(g).numpy() for t, g in zip(tables, grads)}
    assert sorted(where) == sorted(f"c{j}" for j in range(20))
    for table, first in where.values():
        assert by_table[id(table)].any()
        np.testing.assert_allclose(fused_grad[first:first + 10_000], by_table[id(table)],
                                   atol=1e-7)
    for a, b in zip(fused_dense, dense_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)


def test_limit_from_csv_trains_on_the_rows_the_in_memory_limit_reads(tmp_path):
    """speed_limit.py --from_csv: the bare-TF CSV batches are the rows pandas reads, and
    the step fed from them computes the in-memory step's losses."""
    n, b = 12, 4
    ids, dense, labels = _rows(n, 50, seed=3)
    header = (["click", "conversion"] + [f"d{i}" for i in range(speed_limit.NUM_DENSE)]
              + [f"c{j}" for j in range(speed_limit.NUM_SPARSE)])
    path = tmp_path / "train.csv"
    path.write_text(",".join(header) + "\n" + "".join(
        ",".join([f"{y:g}" for y in labels[r]] + [repr(float(x)) for x in dense[r]]
                 + [str(i) for i in ids[r]]) + "\n" for r in range(n)))
    in_memory = speed_limit.load(str(path))
    batches = list(speed_limit.csv_batches(str(path), b))
    assert len(batches) == n // b
    for k, from_csv in enumerate(zip(*batches)):  # ids, dense, labels
        np.testing.assert_array_equal(tf.concat(from_csv, 0), in_memory[k])
    losses = []
    for source in (None, speed_limit.csv_batches(str(path), b)):
        keras.utils.set_random_seed(5)
        model = speed_limit.build_model("esmm", in_memory[0], in_memory[1], vocab=50)
        loop = speed_limit.make_loop(model, *in_memory, b, batches=source)
        losses.append([float(loop(tf.constant(k * b), tf.constant(1))) for k in range(3)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
