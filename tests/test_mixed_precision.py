"""GPU code paths built and tested on CPU (#18): train_config.mixed_precision (bf16 / fp16
dtype policy, float32 tables, logits and losses, fp16 loss scaling for the dense and the
sparse embedding gradients, a float32 SavedModel) and prefetching batches to a device."""
import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS, edit
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.training import inputs, precision, step as step_lib
from mtrec.training.job import Job

MODEL = """\
model_config {
  model_class: "SimpleMultiTask"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [16] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [16] use_bn: false } }
  }
}
"""
SGD = "momentum_optimizer { learning_rate { constant_learning_rate { learning_rate: 0.5 } } " \
      "momentum_optimizer_value: 0.0 }"


def write_config(tmp_path, mixed_precision, optimizer=None, extra=""):
    """(config path, train CSV path): the tiny inputs (clk, buy, user, price) with rows where
    users u0..u4 click and cheap clicks buy, a two-tower model."""
    rng = np.random.default_rng(3)
    users, prices = rng.integers(0, 10, 512), rng.integers(0, 50, 512)
    data = tmp_path / "train.csv"
    data.write_text("".join(f"{int(u < 5)},{int(u < 5 and p < 25)},u{u},{p}\n"
                            for u, p in zip(users, prices)))
    text = TINY_INPUTS + MODEL
    text = edit("  num_steps: 10\n", f'  num_steps: 10\n  mixed_precision: "{mixed_precision}"\n'
                f"{extra}", text)
    text = edit("  batch_size: 4\n", "  batch_size: 64\n", text)
    if optimizer:
        start = text.index("  optimizer_config {")
        end = text.index("  num_steps:")
        text = text[:start] + f"  optimizer_config {{ {optimizer} }}\n" + text[end:]
    path = tmp_path / "tiny.config"
    path.write_text(f'train_input_path: "{data}"\n' + text)
    return str(path), str(data)


def build(path, model_dir):
    """(job, train dataset) as `mtrec train` builds them (under the dtype policy)."""
    pipeline = config_lib.load(path, model_dir=model_dir).pipeline
    keras.utils.set_random_seed(1)
    with precision.policy_scope(pipeline.train_config):
        job = Job.create(pipeline, for_training=True)
        dataset, _ = inputs.make_dataset(job, [pipeline.train_input_path], training=True)
        job.build()
    return job, dataset


@pytest.mark.slow
def test_bf16_trains_with_float32_tables_logits_and_export(tmp_path):
    import mtrec
    path, data = write_config(tmp_path, "bf16")
    job, dataset = build(path, str(tmp_path / "unused"))
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    dense = [layer for layer in job.model._flatten_layers()
             if isinstance(layer, keras.layers.Dense)]
    assert dense and all(d.compute_dtype == "bfloat16" and d.kernel.dtype == "float32"
                         for d in dense)
    assert all(t.dtype == tf.float32 for t in job.model.feature_groups.table_variables)
    features, side, _ = next(iter(dataset))
    outputs = job.model(features, training=False)
    assert {v.dtype for v in outputs.values()} == {tf.float32}
    # The loss falls: mean of the first 5 steps against steps 36-40.
    loop = step_lib.make_train_loop(job, job.pipeline.train_config)
    iterator = iter(dataset.repeat())
    first = loop(iterator, tf.constant(5))
    loop(iterator, tf.constant(30))
    last = loop(iterator, tf.constant(5))
    assert int(first[0]) == int(last[0]) == 5 and bool(last[4])
    assert float(last[2]) < 0.7 * float(first[2]), (float(first[2]), float(last[2]))

    # mtrec train + export: the SavedModel takes the raw float32/int/string columns and
    # returns float32, in a process that never imports mtrec.
    model_dir = str(tmp_path / "model")
    mtrec.train(path, model_dir=model_dir, sets=["train_config.num_steps=60",
                                                  "train_config.seed=1"])
    export_dir = sorted(glob.glob(os.path.join(model_dir, "export", "*", "*")))[-1]
    code = """
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
specs = serve.structured_input_signature[1]
inputs = {"user": tf.constant(["u1", "u7"]), "price": tf.constant([3, 40], tf.int32)}
out = serve(**{k: v for k, v in inputs.items() if k in specs})
print(json.dumps({"in": {k: s.dtype.name for k, s in specs.items()},
                  "out": {k: v.dtype.name for k, v in out.items()},
                  "ctr": out["probs_ctr"].numpy().tolist(), "mtrec": "mtrec" in sys.modules}))
"""
    result = subprocess.run([sys.executable, "-c", code, export_dir], capture_output=True,
                            text=True, timeout=120, check=True)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["in"] == {"user": "string", "price": "int32"} and not got["mtrec"]
    assert set(got["out"].values()) == {"float32"}
    assert got["ctr"][0] > 0.8 and got["ctr"][1] < 0.2, got["ctr"]  # u1 clicks, u7 not


def test_fp16_loss_scale_unscales_dense_and_sparse_gradients_exactly():
    table = tf.Variable(np.arange(12, dtype="float32").reshape(6, 2) / 10)
    w = tf.Variable([[0.5], [-1.5]])
    ids = tf.constant([1, 4, 1])

    def loss_fn():
        return tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids) @ w))

    scaler = precision.DynamicLossScale(initial_scale=2.0 ** 12, growth_interval=2)
    with tf.GradientTape() as tape:
        plain = loss_fn()
    expected = tape.gradient(plain, [table, w])
    with tf.GradientTape() as tape:
        scaled = scaler.scale_loss(loss_fn())
    np.testing.assert_array_equal(scaled.numpy(), plain.numpy() * 2.0 ** 12)
    grads, finite = scaler.unscale(tape.gradient(scaled, [table, w]) + [None])
    assert bool(finite) and grads[2] is None and isinstance(grads[0], tf.IndexedSlices)
    np.testing.assert_array_equal(grads[0].values.numpy(), expected[0].values.numpy())
    np.testing.assert_array_equal(grads[0].indices.numpy(), expected[0].indices.numpy())
    np.testing.assert_array_equal(grads[1].numpy(), expected[1].numpy())
    # Finite steps: the scale doubles after growth_interval of them; an overflow halves it.
    scaler.update(finite)
    assert float(scaler.scale.numpy()) == 2.0 ** 12
    scaler.update(finite)
    assert float(scaler.scale.numpy()) == 2.0 ** 13 and int(scaler.good_steps.numpy()) == 0
    _, finite = scaler.unscale([tf.IndexedSlices(tf.constant([[np.inf, 1.0]]),
                                                 tf.constant([0]), tf.constant([6, 2]))])
    assert not bool(finite)
    scaler.update(finite)
    assert float(scaler.scale.numpy()) == 2.0 ** 12


@pytest.mark.slow
def test_fp16_train_step_updates_with_unscaled_gradients(tmp_path):
    """One fp16 step with SGD moves the table rows and the dense weights by -lr times the
    gradient of the unscaled loss (32768x that, were the scale left in)."""
    path, _ = write_config(tmp_path, "fp16", optimizer=SGD)
    job, dataset = build(path, str(tmp_path / "unused"))
    model = job.model
    assert {layer.compute_dtype for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.Dense)} == {"float16"}
    batch = next(iter(dataset))
    tables = model.feature_groups.table_variables
    dense = model.trainable_variables
    with tf.GradientTape() as tape:
        outputs = model(batch[0], training=True)
        total = tf.add_n(list(model.weighted_losses(outputs, batch[1]).values()))
    grads = tape.gradient(total, tables + dense)
    before = [v.numpy() for v in tables + dense]
    loop = step_lib.make_train_loop(job, job.pipeline.train_config)
    done, _, _, _, finite = loop(iter(tf.data.Dataset.from_tensors(batch)), tf.constant(1))
    assert int(done) == 1 and bool(finite)
    moved = 0
    for v, b, g in zip(tables + dense, before, grads):
        g = tf.convert_to_tensor(g).numpy() if g is not None else np.zeros_like(b)
        np.testing.assert_allclose(v.numpy() - b, -0.5 * g, rtol=2e-2, atol=2e-4)
        moved += int(np.abs(g).max() > 1e-3)
    assert moved >= 3
    # The step's loss scale is the job's, and checkpoints hold it: a resumed run keeps it.
    assert int(job.loss_scale.good_steps.numpy()) == 1
    job.loss_scale.scale.assign(4.0)
    saved = job.checkpoint.save(str(tmp_path / "ckpt" / "ckpt"))
    job.loss_scale.scale.assign(8.0)
    job.checkpoint.restore(saved)
    assert float(job.loss_scale.scale.numpy()) == 4.0


def test_mixed_precision_config_errors_name_the_line(tmp_path):
    path, _ = write_config(tmp_path, "fp32")
    with pytest.raises(ConfigError) as info:
        config_lib.load(path)
    assert 'mixed_precision must be "bf16", "fp16" or empty (float32), got \'fp32\'' \
        in str(info.value) and f"{path}:" in str(info.value)
    path, _ = write_config(tmp_path, "fp16", extra="  train_distribute: MirroredStrategy\n")
    with pytest.raises(ConfigError) as info:
        config_lib.load(path)
    assert 'use "bf16", which needs no loss scaling, with MirroredStrategy' in str(info.value)


def test_prefetch_to_device_feeds_the_train_loop(tmp_path):
    """prefetch_to_device: no GPU -> the dataset itself; "/cpu:0" -> a prefetching dataset
    the traced train loop consumes like the host one; string batches stay on the host."""
    path, _ = write_config(tmp_path, "")
    job, dataset = build(path, str(tmp_path / "unused"))
    if not tf.config.list_logical_devices("GPU"):
        assert inputs.prefetch_to_device(dataset) is dataset
    prefetched = inputs.prefetch_to_device(dataset, "/cpu:0")
    assert prefetched is not dataset
    loop = step_lib.make_train_loop(job, job.pipeline.train_config)
    done, loss_sums, total, bad, finite = loop(iter(prefetched), tf.constant(3))
    assert int(done) == 3 and bool(finite) and np.isfinite(float(total))
    strings = tf.data.Dataset.from_tensors({"user": tf.constant(["a"])})
    assert inputs.prefetch_to_device(strings, "/cpu:0") is strings
