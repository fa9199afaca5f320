"""Optimizers from train_config: a Keras optimizer for dense weights and a sparse
optimizer for embedding tables that reads and writes only the rows a batch touched.

Keras 3 optimizers densify IndexedSlices gradients (Adam rewrote every row and both
moment slots each step: 85 ms/step on one 2e6x16 table against 9 ms sparse).
"""
import logging
import math
import re

import keras
import tensorflow as tf
# Public as the type of a parameter-server table split into shards, not as a module.
from tensorflow.python.distribute.sharded_variable import ShardedVariable

from mtrec.features.dynamic import GrowingTable, padded, resize
from mtrec.protos import optimizer_pb2

log = logging.getLogger("mtrec")


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The `learning_rate { ... }` oneof as a function of the step (the global step before
    the update, 0 at the first step), with EasyRec's formulas (see optimizer.proto)."""

    def __init__(self, config: optimizer_pb2.LearningRate):
        self.kind = config.WhichOneof("learning_rate") or "constant_learning_rate"
        self.config = getattr(config, self.kind)
        if self.kind == "poly_decay_learning_rate":
            c = self.config
            self.poly = keras.optimizers.schedules.PolynomialDecay(
                c.learning_rate_base, max(c.total_steps, 1), c.end_learning_rate, c.power)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        c = self.config
        if self.kind == "constant_learning_rate":
            return tf.constant(c.learning_rate, tf.float32)
        if self.kind == "exponential_decay_learning_rate":
            return self._exponential(step, c)
        if self.kind == "manual_step_learning_rate":
            return self._manual_step(step, c)
        if self.kind == "poly_decay_learning_rate":
            return tf.cast(self.poly(step), tf.float32)
        if self.kind == "transformer_learning_rate":
            s = step * c.step_scaling_rate
            warmup = max(c.warmup_steps, 1) * c.step_scaling_rate
            return (c.learning_rate_base * c.hidden_size ** -0.5
                    * tf.minimum((s + 1) * warmup ** -1.5, tf.math.rsqrt(s + 1)))
        # cosine_decay_learning_rate: linear warm-up, hold, cosine to 0 at total_steps.
        decay_steps = max(c.total_steps - c.warmup_steps - c.hold_base_rate_steps, 1)
        progress = tf.clip_by_value(
            (step - c.warmup_steps - c.hold_base_rate_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * c.learning_rate_base * (1 + tf.cos(math.pi * progress))
        warmup = c.warmup_learning_rate + (c.learning_rate_base - c.warmup_learning_rate) * (
            step / max(c.warmup_steps, 1))
        return tf.where(step < c.warmup_steps, warmup, cosine)

    @staticmethod
    def _exponential(step, c):
        """Decay counted from the end of burn-in; burn-in rises linearly from
        burnin_learning_rate (flat at initial_learning_rate when that is 0)."""
        exponent = (step - c.burnin_steps) / float(max(c.decay_steps, 1))
        if c.staircase:
            exponent = tf.floor(exponent)
        lr = c.initial_learning_rate * tf.pow(c.decay_factor, exponent)
        if c.burnin_steps:
            burnin = (c.burnin_learning_rate + (c.initial_learning_rate - c.burnin_learning_rate)
                      * step / c.burnin_steps if c.burnin_learning_rate
                      else tf.constant(c.initial_learning_rate, tf.float32))
            lr = tf.where(step < c.burnin_steps, burnin, lr)
        return tf.maximum(lr, c.min_learning_rate)

    @staticmethod
    def _manual_step(step, c):
        """rates[i] from boundaries[i - 1] on; with warmup, a linear rise to rates[1] over
        the steps before boundaries[0]."""
        boundaries = tf.constant([float(e.step) for e in c.schedule], tf.float32)
        rates = tf.constant([c.initial_learning_rate] + [e.learning_rate for e in c.schedule],
                            tf.float32)
        index = tf.reduce_sum(tf.cast(step >= boundaries, tf.int32))
        lr = tf.gather(rates, index)
        if c.warmup and c.schedule:
            first = c.schedule[0]
            rise = c.initial_learning_rate + (first.learning_rate - c.initial_learning_rate) * (
                step / first.step)
            lr = tf.where(step < first.step, rise, lr)
        return lr

    def get_config(self):
        return {"kind": self.kind}


def _default_optimizer() -> optimizer_pb2.Optimizer:
    optimizer = optimizer_pb2.Optimizer()
    optimizer.adam_optimizer.learning_rate.constant_learning_rate.learning_rate = 1e-3
    return optimizer


# Adam's epsilon (as Keras').
EPSILON = 1e-7
# dense_moments: a table of at most this many rows per example of the batch is updated
# whole each step (SparseOptimizer). Measured on 20 tables of dim 16, batch 2048: the
# row update costs ~10x more per touched value than the whole update per row, so the
# whole update wins below ~10 rows per touched row (docs/benchmarks.md, "Whole small
# tables"). (Gathered tables are in TF's copy-on-read mode, so the dense update also
# copies the table once a step; that is counted in the measurement.)
WHOLE_TABLE_ROWS_PER_EXAMPLE = 8

# Slot variables the sparse optimizer keeps per embedding table (each the table's shape).
SLOT_NAMES = {"adam_optimizer": ("m", "v"), "adamw_optimizer": ("m", "v"),
              "lazy_adam_optimizer": ("m", "v"), "adagrad_optimizer": ("accumulator",),
              "momentum_optimizer": ("momentum",), "rms_prop_optimizer": ("rms", "momentum"),
              "ftrl_optimizer": ("accumulator", "linear"),
              "adam_async_optimizer": ("m", "v"), "adam_asyncw_optimizer": ("m", "v"),
              "momentumw_optimizer": ("momentum",)}
# EasyRec's PAI-only optimizers that mtrec trains as the one they are a variant of: the
# asynchronous application of updates is a property of PAI-TF's parameter servers.
SAME_UPDATE = {"adam_async_optimizer": "adam_optimizer",
               "adam_asyncw_optimizer": "adamw_optimizer"}


def optimizer_configs(train_config):
    """(dense optimizer config, embedding optimizer config)."""
    configs = list(train_config.optimizer_config) or [_default_optimizer()]
    return configs[0], configs[-1]


def build_dense_optimizer(config: optimizer_pb2.Optimizer) -> keras.optimizers.Optimizer:
    kind = config.WhichOneof("optimizer")
    params = getattr(config, kind)
    kind = SAME_UPDATE.get(kind, kind)
    lr = LearningRate(params.learning_rate)
    if kind in ("adam_optimizer", "lazy_adam_optimizer"):
        return keras.optimizers.Adam(lr, beta_1=params.beta1, beta_2=params.beta2)
    if kind == "adamw_optimizer":
        return keras.optimizers.AdamW(lr, weight_decay=params.weight_decay,
                                      beta_1=params.beta1, beta_2=params.beta2)
    if kind == "adagrad_optimizer":
        return keras.optimizers.Adagrad(
            lr, initial_accumulator_value=params.initial_accumulator_value)
    if kind == "rms_prop_optimizer":
        return keras.optimizers.RMSprop(lr, rho=params.decay, epsilon=params.epsilon,
                                        momentum=params.momentum_optimizer_value)
    if kind == "ftrl_optimizer":
        return keras.optimizers.Ftrl(
            lr, learning_rate_power=params.learning_rate_power,
            initial_accumulator_value=params.initial_accumulator_value,
            l1_regularization_strength=params.l1_reg, l2_regularization_strength=params.l2_reg,
            l2_shrinkage_regularization_strength=params.l2_shrinkage_reg)
    if kind == "momentumw_optimizer":
        return keras.optimizers.SGD(lr, momentum=params.momentum_optimizer_value,
                                    weight_decay=params.weight_decay)
    return keras.optimizers.SGD(lr, momentum=params.momentum_optimizer_value)


def trained(tables: list, dense: list, train_config) -> tuple[list, list]:
    """(tables, dense variables) training updates: all but those whose name a
    train_config.freeze_gradient pattern finds (re.search, as EasyRec). A pattern that
    finds none is logged with a few names, as mtrec's names differ from EasyRec's."""
    if not train_config.freeze_gradient:
        return list(tables), list(dense)
    names = [_variable_name(v) for v in list(tables) + list(dense)]
    frozen = set()
    for pattern in map(re.compile, train_config.freeze_gradient):
        hits = {name for name in names if pattern.search(name)}
        if not hits:
            log.warning("train_config.freeze_gradient %r matches no variable; variables are "
                        "named like: %s.", pattern.pattern, ", ".join(names[:8]))
        frozen |= hits
    for name in sorted(frozen):
        log.info("freeze_gradient: %s is not trained.", name)
    return ([v for v in tables if _variable_name(v) not in frozen],
            [v for v in dense if _variable_name(v) not in frozen])


def _variable_name(variable) -> str:
    """A Keras variable's path (`MMoE/tower_ctr/logits/kernel`), else a tf.Variable's name
    (`MMoE/feature_groups/user:0`)."""
    return getattr(variable, "path", None) or variable.name


class ScaledLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule times a constant (embedding_learning_rate_multiplier)."""

    def __init__(self, schedule, scale: float):
        self.schedule, self.scale = schedule, scale

    def __call__(self, step):
        return self.schedule(step) * self.scale

    def get_config(self):
        return {"scale": self.scale}


class SparseOptimizer(tf.Module):
    """Row-sparse updates of embedding tables.

    adam_optimizer (dense_moments, the default) makes the rows follow dense Adam: a row idle
    for n steps gets, when next touched (or at flush()), the n steps dense Adam would have
    given it, in closed form: m <- beta1^n m, v <- beta2^n v, and the momentum steps
        sum_{j=1..n} step_size * beta1^j m / sqrt(beta2^j v)
      = step_size * m / (sqrt(v) + eps) * r (1 - r^n) / (1 - r),   r = beta1 / sqrt(beta2),
    approximated with the current step_size and eps outside the sum (exact once the bias
    corrections have converged and sqrt(v) >> eps).
    A table of at most `whole_table_rows` rows (not dynamic, not on parameter servers) is
    instead updated whole each step by TF's dense Adam kernel: exact dense Adam, and on a
    table that small two large ops cost less than a dozen small ones per touched row.
    lazy_adam_optimizer, adam_optimizer { dense_moments: false } and adamw are lazy: the
    moments of a row change only when a batch touches it.
    adagrad, momentum, rms_prop and ftrl use TF's ResourceSparseApply kernels (the same
    formulas as Keras' optimizers, on the touched rows only).
    """

    def __init__(self, config: optimizer_pb2.Optimizer, whole_table_rows: int = 0,
                 name="sparse_optimizer"):
        super().__init__(name=name)
        kind = config.WhichOneof("optimizer")
        self.params = getattr(config, kind)
        kind = SAME_UPDATE.get(kind, kind)
        self.dense_moments = kind == "adam_optimizer" and self.params.dense_moments
        # lazy_adam_optimizer is adam_optimizer's update with dense_moments off.
        self.kind = "adam_optimizer" if kind == "lazy_adam_optimizer" else kind
        self.learning_rate = LearningRate(self.params.learning_rate)
        if config.HasField("embedding_learning_rate_multiplier"):
            self.learning_rate = ScaledLearningRate(
                self.learning_rate, config.embedding_learning_rate_multiplier)
        # Updated once per step in cross-replica context under a strategy.
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # One {slot_name: variable} per table, in table order (checkpointed).
        self.slot_variables = []
        self.table_index = {}
        # dense_moments: per table, each row's last update step. Not checkpointed: every
        # checkpoint is written after flush(), when all rows are current (see restored()).
        self._last_step = _Untracked()
        # dense_moments: names of the tables updated whole each step (every row current).
        self.whole_table_rows = whole_table_rows
        self._whole_tables = set()

    def build(self, tables: list) -> None:
        """Slots for every table. A table a parameter-server strategy split into shards
        gets slots split the same way, each part on its shard's ps (so updates and flushes
        stay on that ps), checkpointed as one sliced variable like the table."""
        for table in tables:
            parts = table_shards(table)
            if parts[0].name in self.table_index:
                continue
            slots = {}
            for slot in SLOT_NAMES[self.kind]:
                init = self.params.initial_accumulator_value if slot == "accumulator" else 0.0
                made = [_colocated_variable(part, lambda part=part, init=init: tf.fill(
                    tf.shape(part), init), f"{_base_name(part)}_{slot}", part.shape)
                    for part in parts]
                name = f"{_base_name(parts[0]).rsplit('/part_', 1)[0]}_{slot}"
                # A dynamic table's slots grow and checkpoint as the table does.
                slots[slot] = (GrowingTable(made, table.lengths, name=name)
                               if isinstance(table, GrowingTable)
                               else made[0] if len(parts) == 1 else
                               ShardedVariable(made, name=name))
            if self.dense_moments and self._updated_whole(table):
                self._whole_tables.add(table.name)
                self.table_index[table.name] = (len(self.slot_variables), 0)
                self.slot_variables.append(slots)
                continue
            for i, part in enumerate(parts):
                if self.dense_moments:
                    # The step of each row's last update (its moments are current as of it).
                    self._last_step.by_table[part.name] = _colocated_variable(
                        part, lambda part=part: tf.zeros(tf.shape(part)[:1], tf.int64),
                        f"{_base_name(part)}_last_step", part.shape[:1])
                self.table_index[part.name] = (len(self.slot_variables), i)
            self.slot_variables.append(slots)

    def _updated_whole(self, table) -> bool:
        """Whether dense Adam on every row each step updates this table: a small one held
        whole in this process (a parameter server's shards and dynamic tables keep the row
        update)."""
        return (table.shape[0] is not None and table.shape[0] <= self.whole_table_rows
                and not isinstance(table, (GrowingTable, ShardedVariable))
                and not isinstance(tf.distribute.get_strategy(),
                                   tf.distribute.ParameterServerStrategy))

    def _slots(self, part) -> dict:
        """{slot name: the slot variable (or slot shard) of this table (or table shard)}."""
        index, shard = self.table_index[part.name]
        return {name: table_shards(slot)[shard]
                for name, slot in self.slot_variables[index].items()}

    # -- dynamic tables (mtrec.features.dynamic) ------------------------------------
    def _initial_slot(self, slot: str) -> float:
        return self.params.initial_accumulator_value if slot == "accumulator" else 0.0

    def reset_rows(self, table, rows) -> None:
        """Rows of a dynamic table given to new ids: fresh slots, current as of now."""
        for name, slot in self._slots(table).items():
            shape = tf.stack([tf.size(rows, out_type=tf.int64), slot.shape[1]])
            slot.scatter_update(tf.IndexedSlices(tf.fill(shape, self._initial_slot(name)),
                                                 rows))
        last_step = self._last_step.by_table.get(table.name)
        if last_step is not None:
            last_step.scatter_update(tf.IndexedSlices(
                tf.fill(tf.shape(rows), self.iterations.read_value()), rows))

    def grow(self, table, capacity, current=None) -> None:
        """A dynamic table grew from `current` to `capacity` rows (or, current None, eager:
        was restored with `capacity` rows): so do its slots, the new rows fresh."""
        def fit(variable, fill):
            value = variable.read_value()
            if current is None:  # eager: the true length, and a longer slot is cut
                value = value[:capacity]
            have = tf.shape(value, out_type=tf.int64)[0] if current is None else current
            resize(variable, padded(value, capacity, have, fill))

        for name, slot in self._slots(table).items():
            fit(slot, self._initial_slot(name))
        last_step = self._last_step.by_table.get(table.name)
        if last_step is not None:
            fit(last_step, self.iterations.read_value())

    def apply(self, grads_and_tables, reduced: bool = False) -> None:
        """Apply one step. Inside `strategy.run` the gradients are first summed over the
        replicas (unless `reduced`: the caller did) and every table is updated once per
        device in cross-replica context, so the mirrored copies stay identical."""
        pairs = [(g, t) for g, t in grads_and_tables if g is not None]
        if not tf.distribute.has_strategy() or isinstance(
                tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy):
            # Parameter servers: each worker applies its own gradients to the rows on the ps
            # (asynchronous training), as without a strategy.
            self._apply_all(pairs, lambda table, fn, args: fn(table, *args))
            return
        context = tf.distribute.get_replica_context()
        grads = [g for g, _ in pairs]
        if not reduced and grads:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        tables = [t for _, t in pairs]

        def update(strategy, grads):
            self._apply_all(zip(grads, tables), lambda table, fn, args: strategy.extended.update(
                table, fn, args=args, group=False))

        context.merge_call(update, args=(grads,))

    def _apply_all(self, pairs, update) -> None:
        """update(table, fn, args) runs fn(table, *args) on (every copy of) the table."""
        self.iterations.assign_add(1)
        lr = self.learning_rate(self.iterations - 1)
        t = tf.cast(self.iterations, tf.float32)
        for grad, table in pairs:
            slots = self._slots(table)
            # Looked up here by the (mirrored) table's name: under a strategy, update()
            # hands _apply_one each device's copies of the table, slots and last steps.
            if table.name in self._whole_tables:
                update(table, self._apply_whole, (grad, slots, lr, t))
                continue
            last_step = self._last_step.by_table.get(table.name)
            update(table, self._apply_one, (grad, slots, last_step, lr, t))

    def _apply_whole(self, table, grad, slots, lr, t):
        """Dense Adam on every row (TF's kernel: the same formula as _apply_rows)."""
        if isinstance(grad, tf.IndexedSlices):  # duplicate ids are summed
            grad = tf.math.unsorted_segment_sum(grad.values, grad.indices, table.shape[0])
        p = self.params
        tf.raw_ops.ResourceApplyAdam(
            var=table.handle, m=slots["m"].handle, v=slots["v"].handle,
            beta1_power=tf.pow(p.beta1, t), beta2_power=tf.pow(p.beta2, t), lr=lr,
            beta1=tf.constant(p.beta1), beta2=tf.constant(p.beta2),
            epsilon=tf.constant(EPSILON), grad=grad)

    def _apply_one(self, table, grad, slots, last_step, lr, t):
        if not isinstance(grad, tf.IndexedSlices):
            grad = tf.IndexedSlices(grad, tf.range(tf.shape(grad)[0], dtype=tf.int64))
        # Duplicate ids in a batch (or from several replicas): sum their gradients first.
        rows, position = tf.unique(tf.cast(grad.indices, tf.int64))
        values = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
        # Missing ids and empty bags are looked up as row 0 times zero: their rows
        # get an exactly-zero gradient and must not be treated as touched.
        touched = tf.reduce_any(tf.not_equal(values, 0), axis=1)
        rows, values = tf.boolean_mask(rows, touched), tf.boolean_mask(values, touched)
        self._apply_rows(table, slots, last_step, rows, values, lr, t)

    def _apply_rows(self, table, slots, last_step, rows, grad, lr, t):
        p = self.params
        if self.kind == "adagrad_optimizer":
            tf.raw_ops.ResourceSparseApplyAdagradV2(
                var=table.handle, accum=slots["accumulator"].handle, lr=lr,
                epsilon=tf.constant(1e-7), grad=grad, indices=rows)
            return
        if self.kind == "momentumw_optimizer":
            # Keras' order: decay the weights, then the momentum step.
            table.scatter_sub(tf.IndexedSlices(
                lr * p.weight_decay * tf.gather(table, rows), rows))
        if self.kind in ("momentum_optimizer", "momentumw_optimizer"):
            tf.raw_ops.ResourceSparseApplyKerasMomentum(
                var=table.handle, accum=slots["momentum"].handle, lr=lr, grad=grad, indices=rows,
                momentum=tf.constant(p.momentum_optimizer_value))
            return
        if self.kind == "rms_prop_optimizer":
            tf.raw_ops.ResourceSparseApplyRMSProp(
                var=table.handle, ms=slots["rms"].handle, mom=slots["momentum"].handle, lr=lr,
                rho=tf.constant(p.decay), momentum=tf.constant(p.momentum_optimizer_value),
                epsilon=tf.constant(p.epsilon), grad=grad, indices=rows)
            return
        if self.kind == "ftrl_optimizer":
            tf.raw_ops.ResourceSparseApplyFtrlV2(
                var=table.handle, accum=slots["accumulator"].handle,
                linear=slots["linear"].handle, grad=grad, indices=rows, lr=lr,
                l1=tf.constant(p.l1_reg), l2=tf.constant(p.l2_reg),
                l2_shrinkage=tf.constant(p.l2_shrinkage_reg),
                lr_power=tf.constant(p.learning_rate_power))
            return
        beta1, beta2 = p.beta1, p.beta2
        step_size = self._step_size(lr, t)
        m, v = tf.gather(slots["m"], rows), tf.gather(slots["v"], rows)
        drift = 0.0
        if self.dense_moments:
            # Steps between the row's last update and this one.
            idle = self.iterations - 1 - tf.gather(last_step, rows)
            m, v, drift = self._idle_steps(m, v, idle, step_size)
            last_step.scatter_update(
                tf.IndexedSlices(tf.fill(tf.shape(rows), self.iterations), rows))
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * tf.square(grad)
        slots["m"].scatter_update(tf.IndexedSlices(m, rows))
        slots["v"].scatter_update(tf.IndexedSlices(v, rows))
        update = step_size * m / (tf.sqrt(v) + EPSILON) + drift
        if self.kind == "adamw_optimizer":
            update += lr * p.weight_decay * tf.gather(table, rows)
        table.scatter_sub(tf.IndexedSlices(update, rows))

    def _step_size(self, lr, t):
        """Adam's bias-corrected learning rate at step t."""
        p = self.params
        return lr * tf.sqrt(1 - tf.pow(p.beta2, t)) / (1 - tf.pow(p.beta1, t))

    def _idle_steps(self, m, v, idle, step_size):
        """(m, v, parameter decrease) after `idle` (int, per row) steps without gradient."""
        beta1, beta2 = self.params.beta1, self.params.beta2
        n = tf.cast(idle, tf.float32)[..., None]
        r = beta1 / math.sqrt(beta2)
        drift = step_size * m / (tf.sqrt(v) + EPSILON) * (r * (1 - tf.pow(r, n)) / (1 - r))
        return tf.pow(beta1, n) * m, tf.pow(beta2, n) * v, drift

    def flush(self, tables: list) -> None:
        """dense_moments: bring every row of the tables (those given to build) up to the
        current step, before a checkpoint, so that saved, evaluated and exported tables
        are what dense Adam would hold."""
        parts = [part for table in tables for part in table_shards(table)
                 if part.name in self._last_step.by_table]
        if parts:
            self._flush(parts)

    def restored(self) -> None:
        """After restoring a checkpoint (always written flushed, or lazily without
        dense_moments): every row is current as of the restored step."""
        for name, last_step in self._last_step.by_table.items():
            # As many rows as the restored slots (a dynamic table's may have grown).
            index, shard = self.table_index[name]
            moments = table_shards(self.slot_variables[index]["m"])[shard]
            resize(last_step, tf.fill(tf.shape(moments)[:1], self.iterations))

    @tf.function(autograph=False)  # plain tensor maths: converting it only slowed the save
    def _flush(self, tables):
        t = tf.cast(tf.maximum(self.iterations, 1), tf.float32)  # no step yet: nothing moves
        step_size = self._step_size(self.learning_rate(self.iterations - 1), t)
        done = []
        for table in tables:
            slots = self._slots(table)
            last_step = self._last_step.by_table[table.name]
            # One table at a time: run in parallel, every table's full-size temporaries
            # (m, v, drift) were alive at once (peak RSS 13.7 GB for 20 tables of 2e6 x 16).
            # On the table's own device: a ps shard is flushed where it lives.
            with tf.control_dependencies(done), tf.device(table.device):
                # A row that never had a gradient (v zero, so m zero) does not move. In a big
                # hashed table that is most rows: then only the others are brought current.
                live = tf.where(tf.reduce_any(tf.not_equal(slots["v"], 0), axis=1))[:, 0]
                rows = tf.shape(last_step, out_type=tf.int64)[0]
                moved = tf.cond(
                    2 * tf.size(live, out_type=tf.int64) < rows,
                    lambda: self._flush_rows(table, slots, last_step, live, step_size),
                    lambda: self._flush_rows(table, slots, last_step, None, step_size))
                with tf.control_dependencies([moved]):
                    # (Not tf.fill(tf.shape(last_step)): a dynamic table's part on a ps grows
                    # past the length its static shape says.)
                    done = [last_step.assign_add(self.iterations - last_step)]

    def _flush_rows(self, table, slots, last_step, rows, step_size):
        """Bring `rows` (None: every row) of one table current; returns a token."""
        def rows_of(x):
            return x if rows is None else tf.gather(x, rows)

        m, v, drift = self._idle_steps(rows_of(slots["m"]), rows_of(slots["v"]),
                                       rows_of(self.iterations - last_step), step_size)
        if rows is None:
            done = [table.assign_sub(drift), slots["m"].assign(m), slots["v"].assign(v)]
        else:
            done = [table.scatter_sub(tf.IndexedSlices(drift, rows)),
                    slots["m"].scatter_update(tf.IndexedSlices(m, rows)),
                    slots["v"].scatter_update(tf.IndexedSlices(v, rows))]
        with tf.control_dependencies(done):
            return tf.constant(0)


def table_shards(table) -> list:
    """The variables holding a table: its shards if a parameter-server strategy split it
    (ShardedVariable), else the table itself."""
    return list(table.variables) if isinstance(table, ShardedVariable) else [table]


def _base_name(variable) -> str:
    return variable.name.split(":")[0]


def _colocated_variable(part, initial_value, name, shape=None) -> tf.Variable:
    """A non-trainable variable on the same device as `part` (a table or table shard):
    under a parameter-server strategy, on that shard's ps, and never split again. shape:
    its static shape (a dynamic table's first dimension is None: it grows)."""
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        with strategy.extended.colocate_vars_with(part):
            return tf.Variable(initial_value, trainable=False, name=name, shape=shape)
    return tf.Variable(initial_value, trainable=False, name=name, shape=shape)


class _Untracked:
    """Holds variables that tf.Module must not track (so they stay out of checkpoints)."""

    def __init__(self):
        self.by_table = {}
