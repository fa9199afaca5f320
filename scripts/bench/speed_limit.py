#!/usr/bin/env python
"""The in-memory limit of the speed suite: the workload's model as a hand-written
`tf.function` training step over tensors already in memory (no parsing, no hashing).

The rows are read with pandas beforehand (not timed); ids are the integers themselves.
The model has the same shapes as mtrec's (see speed.py): per-feature tables [10000, 16],
Dense layers, softmax gates, Keras Adam (lr 1e-3) on every variable. Two more forms, for
speed_levers.py: --sparse_tables, Adam on the rows a batch touched of each table
(SparseAdam, lazy moments) and Keras Adam on the rest; --fused, the 20 tables as ONE
variable of 20 x 10000 rows (feature j's ids offset by j * 10000), one gather a step (and
with --sparse_tables one sparse update a step). Steps run
`--steps_per_call` at a time inside one tf.function (a tf.range loop slicing the in-memory
tensors), optionally XLA-compiled (--xla). --from_csv feeds the same step from train.csv
through the least a TensorFlow CSV reader does (TextLineDataset, batch, decode_csv into
numbers, stack; no checks, no shuffle), in a parallel map that overlaps the step: what
reading CSV costs any reader on this machine. Prints one JSON line: steady examples/s (all
calls after the first --warmup_calls), the test AUCs, peak RSS.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import pandas as pd
import tensorflow as tf
import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import auc  # noqa: E402

NUM_SPARSE, NUM_DENSE, VOCAB, DIM = 20, 5, 10_000, 16


def load(path):
    frame = pd.read_csv(path)
    ids = frame[[f"c{j}" for j in range(NUM_SPARSE)]].to_numpy(np.int32)
    dense = frame[[f"d{i}" for i in range(NUM_DENSE)]].to_numpy(np.float32)
    labels = frame[["click", "conversion"]].to_numpy(np.float32)
    return tf.constant(ids), tf.constant(dense), tf.constant(labels)


def csv_batches(path, b):
    """The rows of path (speed_data.py's columns: click, conversion, d0.., c0..) as
    batches of (ids, dense, labels), by the bare TF ops."""
    defaults = ([tf.constant(0.0)] * (2 + NUM_DENSE) + [tf.constant(0, tf.int32)] * NUM_SPARSE)

    def parse(lines):
        cells = tf.io.decode_csv(lines, defaults)
        return (tf.stack(cells[2 + NUM_DENSE:], axis=1), tf.stack(cells[2:2 + NUM_DENSE], axis=1),
                tf.stack(cells[:2], axis=1))

    lines = tf.data.TextLineDataset(path).skip(1).batch(b, drop_remainder=True)
    return lines.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def mlp(units, name, init="glorot_uniform"):
    return [keras.layers.Dense(u, activation="relu", name=f"{name}_{i}", kernel_initializer=init)
            for i, u in enumerate(units)]


class Model(keras.Model):
    """fused: one (NUM_SPARSE * vocab, DIM) table instead of NUM_SPARSE (vocab, DIM) ones;
    feature j's rows are j * vocab + id."""

    def __init__(self, kind, fused=False, vocab=VOCAB, init="mtrec"):
        super().__init__()
        self.kind = kind
        self.fused = fused
        # mtrec: its table initialiser and Keras' default layers; deepctr: DeepCTR 0.9.4's
        # (normal tables of stddev 1e-4, glorot_normal layers).
        if init == "deepctr":
            init = keras.initializers.RandomNormal(0.0, 1e-4)
            layer_init = "glorot_normal"
        else:
            init = keras.initializers.RandomUniform(-0.05, 0.05)
            layer_init = "glorot_uniform"
        if fused:
            self.tables = [self.add_weight(shape=(NUM_SPARSE * vocab, DIM), name="table_fused",
                                           initializer=init)]
            self.offsets = tf.range(NUM_SPARSE) * vocab  # (NUM_SPARSE,) int32
        else:
            self.tables = [self.add_weight(shape=(vocab, DIM), name=f"table_{j}",
                                           initializer=init) for j in range(NUM_SPARSE)]
        if kind == "mmoe":
            self.experts = [mlp([256, 128], f"expert{e}", layer_init) for e in range(4)]
            self.gates = [keras.layers.Dense(4, name=f"gate{t}", kernel_initializer=layer_init)
                          for t in range(2)]
            self.towers = [mlp([64], f"tower{t}", layer_init)
                           + [keras.layers.Dense(1, kernel_initializer=layer_init)]
                           for t in range(2)]
        else:
            self.towers = [mlp([256, 128, 64], f"tower{t}", layer_init)
                           + [keras.layers.Dense(1, kernel_initializer=layer_init)]
                           for t in range(2)]

    @property
    def dense_variables(self):
        """Every trainable variable but the tables."""
        tables = {id(t) for t in self.tables}
        return [v for v in self.trainable_variables if id(v) not in tables]

    def call(self, ids, dense):
        if self.fused:
            # One gather for all features: (batch, NUM_SPARSE, DIM) -> (batch, 320).
            emb = tf.gather(self.tables[0], ids + self.offsets)
            x = tf.concat([tf.reshape(emb, [-1, NUM_SPARSE * DIM]), dense], 1)
        else:
            x = tf.concat([tf.gather(t, ids[:, j]) for j, t in enumerate(self.tables)]
                          + [dense], 1)
        return self.dense_part(x)

    def dense_part(self, x):
        """(batch, 325) features -> (p0, p1) float32: the MLPs (XLA-compiled with
        --xla_dense; in bfloat16 with --bf16, the mixed_bfloat16 Keras policy)."""
        def run(layers, h):
            for layer in layers:
                h = layer(h)
            return h

        if self.kind == "mmoe":
            experts = tf.stack([run(e, x) for e in self.experts], axis=1)  # (batch, 4, 128)
            logits = []
            for gate, tower in zip(self.gates, self.towers):
                w = tf.nn.softmax(gate(x))[:, :, None]  # (batch, 4, 1)
                logits.append(run(tower, tf.reduce_sum(w * experts, axis=1))[:, 0])
            return (tf.nn.sigmoid(tf.cast(logits[0], tf.float32)),
                    tf.nn.sigmoid(tf.cast(logits[1], tf.float32)))
        pctr = tf.nn.sigmoid(tf.cast(run(self.towers[0], x)[:, 0], tf.float32))
        pcvr = tf.nn.sigmoid(tf.cast(run(self.towers[1], x)[:, 0], tf.float32))
        return pctr, pctr * pcvr


def build_model(kind, ids, dense, bf16=False, xla_dense=False, fused=False, vocab=VOCAB,
                init="mtrec"):
    """The model, built on two rows; bf16: its Dense layers under mixed_bfloat16 (float32
    weights and tables); xla_dense: its dense part (after the embedding gathers) a
    jit_compile tf.function; fused: one table for all features (Model)."""
    previous = keras.config.dtype_policy()
    if bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = Model(kind, fused=fused, vocab=vocab, init=init)
        model(ids[:2], dense[:2])
    finally:
        keras.config.set_dtype_policy(previous)
    if xla_dense:
        model.dense_part = tf.function(model.dense_part, jit_compile=True)
    return model


class SparseAdam:
    """Adam on the rows of each table a batch touched, with Keras Adam's formulas (lazy
    moments: an untouched row's moments stay). Per table and step: one unique, one segment
    sum, two slot gathers and three scatters (m, v, the table)."""

    def __init__(self, tables, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-7):
        self.lr, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.m = [tf.Variable(tf.zeros(t.shape), trainable=False) for t in tables]
        self.v = [tf.Variable(tf.zeros(t.shape), trainable=False) for t in tables]
        self.iterations = tf.Variable(0.0, trainable=False)

    def apply(self, grads, tables):
        self.iterations.assign_add(1.0)
        t = self.iterations
        step_size = self.lr * tf.sqrt(1 - tf.pow(self.beta2, t)) / (1 - tf.pow(self.beta1, t))
        for grad, table, m_slot, v_slot in zip(grads, tables, self.m, self.v):
            # Duplicate ids in the batch: their gradients summed first.
            rows, position = tf.unique(grad.indices)
            g = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
            m = self.beta1 * tf.gather(m_slot, rows) + (1 - self.beta1) * g
            v = self.beta2 * tf.gather(v_slot, rows) + (1 - self.beta2) * tf.square(g)
            m_slot.scatter_update(tf.IndexedSlices(m, rows))
            v_slot.scatter_update(tf.IndexedSlices(v, rows))
            # A Keras variable's tf.Variable (Model's tables), else the tf.Variable itself.
            variable = table.value if isinstance(table, keras.Variable) else table
            variable.scatter_sub(tf.IndexedSlices(
                step_size * m / (tf.sqrt(v) + self.epsilon), rows))


def make_loop(model, ids, dense, labels, b, xla=False, sparse_tables=False, batches=None):
    """loop(start, steps): `steps` training steps (Keras Adam on every variable, the two
    binary cross-entropies) over the in-memory rows from `start`, batches of b.
    sparse_tables: the tables trained by SparseAdam (one sparse update per table, so one
    in all for a fused model), Keras Adam on the rest. batches: a Dataset of (ids, dense,
    labels) to take the steps' batches from instead (start is then ignored)."""
    optimizer = keras.optimizers.Adam(1e-3)
    keras_variables = model.dense_variables if sparse_tables else model.trainable_variables
    optimizer.build(keras_variables)
    sparse = SparseAdam(list(model.tables)) if sparse_tables else None
    bce = keras.losses.BinaryCrossentropy()

    @tf.function(jit_compile=xla)
    def step(x_ids, x_dense, y):
        with tf.GradientTape() as tape:
            p0, p1 = model(x_ids, x_dense)
            loss = bce(y[:, 0], p0) + bce(y[:, 1], p1)
        tables = list(model.tables) if sparse_tables else []
        grads = tape.gradient(loss, tables + keras_variables)
        if sparse_tables:
            sparse.apply(grads[:len(tables)], tables)
        optimizer.apply_gradients(zip(grads[len(tables):], keras_variables))
        return loss

    @tf.function
    def loop(start, steps):
        total = tf.constant(0.0)
        for k in tf.range(steps):
            i0 = start + k * b
            total += step(ids[i0:i0 + b], dense[i0:i0 + b], labels[i0:i0 + b])
        return total

    if batches is None:
        return loop
    iterator = iter(batches)

    @tf.function
    def loop_batches(iterator, steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            total += step(*next(iterator))
        return total

    return lambda start, steps: loop_batches(iterator, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="mmoe", choices=["mmoe", "esmm"])
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--steps_per_call", type=int, default=50)
    parser.add_argument("--warmup_calls", type=int, default=2)
    parser.add_argument("--xla", action="store_true", help="jit_compile the whole step")
    parser.add_argument("--xla_dense", action="store_true",
                        help="jit_compile only the dense part (after the embedding gathers)")
    parser.add_argument("--bf16", action="store_true",
                        help="Dense layers in bfloat16 (Keras mixed_bfloat16 policy)")
    parser.add_argument("--fused", action="store_true",
                        help="one table of 20 x 10000 rows for all features, one gather a step")
    parser.add_argument("--sparse_tables", action="store_true",
                        help="tables trained by SparseAdam (touched rows only), not Keras Adam")
    parser.add_argument("--max_steps", type=int, default=0, help="stop early (0: one epoch)")
    parser.add_argument("--init", choices=["mtrec", "deepctr"], default="mtrec",
                        help="initialisers: mtrec's tables and Keras' layers, or DeepCTR's")
    parser.add_argument("--shuffle", action="store_true",
                        help="train on the rows in one random order (Keras fit's shuffle)")
    parser.add_argument("--seed", type=int, default=None, help="Keras and numpy seed")
    parser.add_argument("--from_csv", action="store_true",
                        help="feed the step from train.csv by the bare TF ops (csv_batches)")
    args = parser.parse_args()
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    ids, dense, labels = load(os.path.join(args.data, "train.csv"))
    if args.shuffle:
        order = tf.constant(np.random.permutation(int(ids.shape[0])))
        ids, dense, labels = (tf.gather(t, order) for t in (ids, dense, labels))
    model = build_model(args.model, ids, dense, args.bf16, args.xla_dense, args.fused,
                        init=args.init)
    batches = (csv_batches(os.path.join(args.data, "train.csv"), args.batch_size)
               if args.from_csv else None)
    loop = make_loop(model, ids, dense, labels, args.batch_size, args.xla, args.sparse_tables,
                     batches)
    n, b = int(ids.shape[0]), args.batch_size

    full_steps = min(n // b, args.max_steps or n)
    times, step_at = [], 0
    start = time.time()
    # Too few calls to leave warm-up ones out (tiny smoke-test files): time them all.
    first = (0, start, time.process_time())
    while step_at < full_steps:
        k = min(args.steps_per_call, full_steps - step_at)
        loop(tf.constant(step_at * b), tf.constant(k)).numpy()
        times.append((step_at + k, time.time(), time.process_time()))
        step_at += k
    warm = times[args.warmup_calls - 1] if len(times) > args.warmup_calls else first
    rate = (times[-1][0] - warm[0]) * b / (times[-1][1] - warm[1])
    # CPU time per step (all threads): the work, whatever else the machine runs
    cpu_ms = 1000 * (times[-1][2] - warm[2]) / (times[-1][0] - warm[0])
    t_ids, t_dense, t_labels = load(os.path.join(args.data, "test.csv"))
    p0, p1 = model(t_ids, t_dense)
    print(json.dumps({
        "part": "limit_csv" if args.from_csv else "limit", "model": args.model, "xla": args.xla,
        "xla_dense": args.xla_dense, "bf16": args.bf16, "fused": args.fused,
        "sparse_tables": args.sparse_tables, "batch_size": b, "init": args.init,
        "shuffle": args.shuffle and not args.from_csv, "seed": args.seed,
        "steady_ex_per_s": rate, "cpu_ms_per_step": cpu_ms, "fit_s": time.time() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "auc_click": auc(t_labels[:, 0].numpy(), p0.numpy()),
        "auc_conversion": auc(t_labels[:, 1].numpy(), p1.numpy())}))


if __name__ == "__main__":
    main()
