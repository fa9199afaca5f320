"""Dynamic embedding tables (EasyRec's `ev_params`): ids without collisions.

A feature with ev_params keeps its raw id as a 64-bit key (an integer, or a string that
spells one, as it is; any other string its `tf.fingerprint`, no modulo; -1 and the empty
string are missing) and its table maps each key to a row of its own through a
`tf.lookup.experimental.MutableHashTable`.
The embedding table itself stays a plain tf.Variable (first dimension unknown, so it can
grow), gathered and updated sparsely like every other table; under a
ParameterServerStrategy, a GrowingTable of one part per ps task (see Distribution).

Per id space (one per embedding_name) a DynamicTable holds one shard (num_shards under a
ParameterServerStrategy: one per ps task, see Distribution), each with:
  map         MutableHashTable key -> row of the shard (no entry: the id reads the zero
              embedding)
  row_keys    (capacity,) the key of each row in use
  last_seen   (capacity,) the step each row's id was last seen; -1 for a free row
  freq        (capacity,) occurrences of each row's id since it got the row (LFU only)
  free_rows   a stack of the free rows, its first num_free entries valid
  rows        the rows allocated (its capacity)
  sketch      (4, width) int32 count-min sketch of the ids not yet admitted (filter_freq > 1)
  counters    cumulative ids admitted, rows evicted, ids refused (table full), ids filtered
              (seen, not yet admitted by filter_freq)

In the train step, before the forward pass (train_rows): the batch's distinct keys of each
id space are looked up; a known key marks its row seen; an unknown key is counted (filter_freq)
and, once admitted, takes a free row, the table first doubling (up to max_capacity) when too
few rows are free, then, when it is full, the least recently (LRU) or least frequently (LFU)
seen rows not seen in this step are given back. A row given to a new id is reset: a fresh
initial value and fresh optimizer slots (SparseOptimizer.reset_rows). Every eviction_interval
steps the rows whose id was not seen for more than steps_to_live steps are given back.
Everything happens inside the traced step, in the order above, so the map after a step
depends only on the batches seen: a resumed run continues with the same map.

Outside training (evaluation, serving) keys are only looked up, never inserted. An export
serves from a compacted snapshot (freeze): the rows in use only, and a map of their keys.

Distribution (docs/dynamic_tables.md): under a Mirrored strategy the keys of every replica
are gathered and given rows once per step, in cross-replica context (assign_replicas), so
every replica and worker holds the same map. Under a ParameterServerStrategy with N ps
tasks a table is split by key: shard s = key mod N (floor mod; a string's key is its
fingerprint) holds its map, bookkeeping, a CriticalSection and its rows (part s of the
table, a GrowingTable, with their optimizer slots) on ps task s. Row r of shard s is row
r * N + s of the table, so lookups route a table row to its part by row mod N whatever
the parts' sizes. Each shard starts with ceil(init_capacity / N) rows and grows, as a
table does in one process, up to ceil(max_capacity / N). Workers give rows shard by
shard, one worker at a time per shard.
A ps variable keeps the fully known shape it was made with (TF 2.21 workers abort on a
remote variable whose shape has an unknown dimension): a growing one gets its new value
through `resize`, and traced code never reads its length from its declared shape (a
shard's length is its `rows` variable).

Checkpoints hold a table's shards as one (DynamicTable._serialize_to_tensors), in table
row order, each shard padded with free rows to the longest: its keys with their table
rows, the bookkeeping, the free rows, and per shard the free count, sketch and counters;
the rows of a GrowingTable likewise (one tensor in table row order). A checkpoint of N
shards restores into N shards, or into one (evaluation, export, a run without a
ParameterServerStrategy: the same table rows); any other number is one clear error.
"""
import contextlib
import functools
import random

import numpy as np
import tensorflow as tf
# Public as the type of a table split into parts, not as a module.
from tensorflow.python.distribute.sharded_variable import ShardedVariable

from mtrec.config import dynamic_params
from mtrec.config.dynamic_params import (SKETCH_DEPTH, eviction_interval, is_dynamic,
                                         sketch_width, state_bytes)
from mtrec.features.initializers import initial_rows
from mtrec.protos import dynamic_pb2

EV = dynamic_pb2.EVParams

# The key of a missing value; never given a row.
MISSING = -1
# last_seen of a free row.
FREE = -1
# The counters, in order.
COUNTERS = ("admitted", "evicted", "refused", "filtered")


def parameter_servers() -> bool:
    """Whether this runs under a ParameterServerStrategy (its scope, or a worker's step)."""
    return isinstance(tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy)


def shard_count() -> int:
    """The shards of a table made now: the ps tasks under a ParameterServerStrategy, else 1."""
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # (TF 2.21's ParameterServerStrategy returns no cluster_resolver: mtrec makes it from
        # TF_CONFIG, as TFConfigClusterResolver reads it.)
        resolver = (strategy.cluster_resolver
                    or tf.distribute.cluster_resolver.TFConfigClusterResolver())
        return max(1, len(resolver.cluster_spec().as_dict().get("ps", [])))
    return 1


def capacities(ev, shards: int | None = None) -> tuple[int, int]:
    """(rows at the start, most rows) of a whole table in `shards` shards (shard_count() by
    default): each shard starts with ceil(init_capacity / shards) rows and grows up to
    ceil(max_capacity / shards)."""
    init, most = dynamic_params.capacities(ev)
    shards = shard_count() if shards is None else shards
    return shards * shard_capacity(init, shards), shards * shard_capacity(most, shards)


def shard_capacity(capacity: int, shards: int) -> int:
    """Rows of each shard of a table of `capacity` rows in `shards` shards."""
    return -(-capacity // shards)


def shard_of(keys: tf.Tensor, shards: int) -> tf.Tensor:
    """int64 keys -> the shard (int32) that holds each: key mod shards, in [0, shards)."""
    return tf.cast(tf.math.floormod(keys, tf.constant(shards, tf.int64)), tf.int32)


def keys(values):
    """Raw values (dense or ragged, any dtype) -> int64 keys; MISSING for "" (or -1).

    An integer is its own key, and so is a string that spells one (up to 18 digits), so an
    INT64 column and a sequence of the same ids in a string share keys (as their hashes do
    with hash_bucket_size); any other string is its 64-bit fingerprint."""
    if isinstance(values, tf.RaggedTensor):
        return values.with_flat_values(keys(values.flat_values))
    if values.dtype != tf.string:
        return tf.cast(values, tf.int64)
    flat = tf.reshape(values, [-1])
    # (n, 8) bytes of the 64-bit fingerprint of each string -> (n,) int64.
    fingerprints = tf.bitcast(tf.fingerprint(flat), tf.int64)
    integer = tf.strings.regex_full_match(flat, "-?[0-9]{1,18}")
    numbers = tf.strings.to_number(tf.where(integer, flat, "0"), tf.int64)
    out = tf.where(flat == "", tf.constant(MISSING, tf.int64),
                   tf.where(integer, numbers, fingerprints))
    return tf.reshape(out, tf.shape(values))


class DynamicIdSpace:
    """Stands in for a feature's id space: values -> keys (not rows); size is the rows the
    table starts with."""
    lookup = None

    def __init__(self, config):
        self.config = config
        self.size = capacities(config.ev_params)[0]

    def vocabulary(self):
        return None

    def ids(self, values):
        return keys(values)


def _map_values(value, fn):
    """fn on a tensor, or on the flat values of a ragged tensor."""
    if isinstance(value, tf.RaggedTensor):
        return value.with_flat_values(fn(value.flat_values))
    return fn(value)


def _flat(value) -> tf.Tensor:
    return tf.reshape(value.flat_values if isinstance(value, tf.RaggedTensor) else value, [-1])


def _vector(values, dtype) -> tf.Variable:
    """A 1-D state variable whose length can change (the table grows; under a
    ParameterServerStrategy its declared length stays the first one, see resize)."""
    return tf.Variable(tf.constant(values, dtype), shape=tf.TensorShape([None]),
                       trainable=False)


def resize(variable, value):
    """variable <- value of another length (a table growing, or restored at its saved
    size). A variable declared with an unknown first dimension is assigned as usual (on
    every copy under a Mirrored strategy, as is a mirrored one). One declared with a fully
    known shape (a ParameterServerStrategy's, whose shapes must be known) is assigned past
    its declared shape. Traced code then never takes its length from its shape (tf.shape
    of its value folds to the declared length): the lengths are passed along, or kept in
    variables (_Shard.rows)."""
    if not variable.shape.is_fully_defined() or isinstance(variable,
                                                           tf.distribute.DistributedValues):
        return variable.assign(value)
    # The first dimension made unknown: the assignment's shape check accepts any length.
    return tf.raw_ops.AssignVariableOp(resource=variable.handle, value=_any_length(value),
                                       validate_shape=False)


def _any_length(value) -> tf.Tensor:
    """value with its first dimension unknown to the shape check of an assignment."""
    shape = (tf.TensorShape([None]).concatenate(value.shape[1:])
             if value.shape.rank else tf.TensorShape(None))
    return tf.raw_ops.PlaceholderWithDefault(input=value, shape=shape)


def padded(value, length, have, fill=0):
    """value (have, ...) -> (length, ...): fill rows appended (have: its length, given
    because a growing variable's value may be longer than its static shape says)."""
    extra = tf.reshape(tf.cast(length, tf.int64) - tf.cast(have, tf.int64), [1])
    pad = tf.fill(tf.concat([extra, tf.shape(value, out_type=tf.int64)[1:]], 0),
                  tf.cast(fill, value.dtype))
    return tf.concat([value, pad], 0)


def _length(value) -> tf.Tensor:
    """The length of a restored 1-D int64 tensor, counted from its values: in a traced
    restore TF's graph optimizer takes a value assigned to a variable of a known shape to
    have that shape, and folds tf.shape of it into a constant (seen resuming a grown shard
    under PSStrategy: the shape it started with)."""
    return tf.shape(tf.where(value > tf.int64.min), out_type=tf.int64)[0]


def interleave(parts: list, lengths: list, fill=0):
    """Shards' arrays (part s: the lengths[s] rows of shard s, padded to the longest with
    `fill`) -> one in table row order: row r of part s at r * len(parts) + s."""
    if len(parts) == 1:
        return parts[0]
    longest = tf.reduce_max(tf.stack(lengths))
    stacked = tf.stack([padded(p, longest, n, fill) for p, n in zip(parts, lengths)],
                       axis=1)  # (longest, parts, ...)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], 0))


def deinterleave(value, n: int, s: int):
    """The rows of shard s (of n) of an array in table row order."""
    if n == 1:
        return value
    shape = tf.shape(value)
    return tf.reshape(value, tf.concat([[-1, n], shape[1:]], 0))[:, s]


class _Shard:
    """The map and bookkeeping of one shard of an id space (the whole id space without a
    ParameterServerStrategy), in rows of its own (0 ... its capacity - 1). Not tracked:
    DynamicTable checkpoints its shards as one (see the module docstring)."""

    def __init__(self, name: str, ev, init: int, most: int, num_free: tf.Variable):
        self.name, self.ev, self.max_capacity = name, ev, most
        self.num_free = num_free
        # Under a ParameterServerStrategy all of this lives on the ps task of num_free, and
        # the workers give rows one at a time (a CriticalSection on that ps).
        self.mutex = None
        with _colocated(self.num_free) as device:
            self.map = tf.lookup.experimental.MutableHashTable(
                tf.int64, tf.int64, default_value=-1, name=self.name + "_map")
            if device is not None:
                self.mutex = tf.CriticalSection(name=self.name + "_mutex")
            self.row_keys = _vector(np.zeros(init, np.int64), tf.int64)
            self.last_seen = _vector(np.full(init, FREE, np.int64), tf.int64)
            self.freq = _vector(np.zeros(init, np.int64), tf.int64)
            # Popped from the end of the valid prefix: rows 0, 1, 2, ... are given first.
            self.free_rows = _vector(np.arange(init - 1, -1, -1, dtype=np.int64), tf.int64)
            self.sketch = (tf.Variable(tf.zeros([SKETCH_DEPTH, sketch_width(ev)], tf.int32),
                                       trainable=False) if ev.filter_freq > 1 else None)
            self.counters = tf.Variable(tf.zeros([len(COUNTERS)], tf.int64), trainable=False)
            # The rows allocated: under parameter servers the state's declared lengths
            # stay the first ones (see resize), so its length is kept here.
            self.rows = tf.Variable(init, dtype=tf.int64, trainable=False)

    def capacity(self) -> tf.Tensor:
        return self.rows.read_value()

    def rows_in_use(self) -> tf.Tensor:
        return self.capacity() - self.num_free

    # -- training ----------------------------------------------------------------
    def assign(self, keys: tf.Tensor, step, grow_fn, fresh_fn) -> None:
        """Give rows to the admitted new keys of one batch (flat int64, MISSING allowed).
        grow_fn(capacity, new) grows the embedding tables (and slots) from `capacity` to
        `new` rows; fresh_fn(rows) resets rows given to new ids."""
        if self.mutex is None:
            self._assign(keys, step, grow_fn, fresh_fn)
            return
        # Parameter servers: the workers' steps run at once; one at a time gives rows.
        self.mutex.execute(lambda: self._assign(keys, step, grow_fn, fresh_fn) or _nothing(),
                           exclusive_resource_access=False)

    def _assign(self, keys, step, grow_fn, fresh_fn) -> None:
        step = tf.cast(step, tf.int64)
        ev = self.ev
        if ev.steps_to_live:
            interval = eviction_interval(ev)
            tf.cond(step % interval == 0, lambda: self._sweep(step), _nothing)
        keys = tf.boolean_mask(keys, keys != MISSING)
        unique, _, counts = tf.unique_with_counts(keys, out_idx=tf.int64)
        rows = _lookup(self.map, unique)
        known = rows >= 0
        known_rows = tf.boolean_mask(rows, known)
        self.last_seen.scatter_update(
            tf.IndexedSlices(tf.fill(tf.shape(known_rows), step), known_rows))
        if ev.eviction_policy == EV.LFU:
            self.freq.scatter_add(tf.IndexedSlices(tf.boolean_mask(counts, known), known_rows))
        new_keys = tf.boolean_mask(unique, ~known)
        new_counts = tf.boolean_mask(counts, ~known)
        if ev.filter_freq > 1:
            admit = self._count(new_keys, new_counts) >= ev.filter_freq
            filtered = tf.reduce_sum(tf.cast(~admit, tf.int64))
            new_keys = tf.boolean_mask(new_keys, admit)
            new_counts = tf.boolean_mask(new_counts, admit)
            self.counters.scatter_add(tf.IndexedSlices(tf.reshape(filtered, [1]), [3]))
        need = tf.size(new_keys, out_type=tf.int64)
        # Most steps of a long run bring no new id: all that follows is skipped.
        tf.cond(need > 0, lambda: self._admit(new_keys, new_counts, need, step, grow_fn,
                                              fresh_fn), _nothing)

    def _admit(self, new_keys, new_counts, need, step, grow_fn, fresh_fn):
        """Rows for `need` admitted new keys: grow, else evict, when too few are free."""
        capacity = self.capacity()
        tf.cond((need > self.num_free) & (capacity < self.max_capacity),
                lambda: self._grow(capacity, need, grow_fn), _nothing)
        short = need - self.num_free
        tf.cond(short > 0, lambda: self._evict(short, step), _nothing)
        return self._give(new_keys, new_counts, need, step, fresh_fn)

    def _give(self, new_keys, new_counts, need, step, fresh_fn):
        top = self.num_free.read_value()
        n = tf.minimum(need, top)
        taken = new_keys[:n]
        # Popped from the end of the free stack's valid prefix, last first.
        rows = tf.reverse(self.free_rows[top - n:top], [0])
        self.num_free.assign_sub(n)
        self.map.insert(taken, rows)
        self.row_keys.scatter_update(tf.IndexedSlices(taken, rows))
        self.last_seen.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        self.freq.scatter_update(tf.IndexedSlices(new_counts[:n], rows))
        zero = tf.constant(0, tf.int64)
        self.counters.assign_add(tf.stack([n, zero, need - n, zero]))
        fresh_fn(rows)
        return tf.constant(0)

    def _count(self, new_keys, new_counts):
        """Count the new keys in the sketch (conservative update: a counter only rises to
        the key's new estimate); returns each key's count including this batch."""
        width = sketch_width(self.ev)
        hashed = tf.bitcast(tf.fingerprint(new_keys), tf.int64)  # (n,)
        low = tf.bitwise.bitwise_and(hashed, 0xFFFFFFFF)
        high = tf.bitwise.bitwise_or(
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(hashed, 32), 0xFFFFFFFF), 1)
        depth = tf.range(SKETCH_DEPTH, dtype=tf.int64)[:, None]  # (depth, 1)
        columns = (low[None, :] + depth * high[None, :]) % width  # (depth, n)
        index = tf.stack([tf.broadcast_to(depth, tf.shape(columns)), columns],
                         axis=-1)  # (depth, n, 2)
        estimate = (tf.reduce_min(tf.gather_nd(self.sketch, index), axis=0)
                    + tf.cast(new_counts, tf.int32))  # (n,)
        self.sketch.scatter_nd_max(index, tf.broadcast_to(estimate[None, :],
                                                          tf.shape(columns)))
        return tf.cast(estimate, tf.int64)

    def _free(self, rows) -> tf.Tensor:
        """Give rows back: their keys leave the map, the rows go on the free stack."""
        n = tf.size(rows, out_type=tf.int64)
        self.map.remove(tf.gather(self.row_keys, rows))
        self.last_seen.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows),
                                                               tf.constant(FREE, tf.int64)),
                                                       rows))
        self.free_rows.scatter_update(tf.IndexedSlices(rows, self.num_free + tf.range(n)))
        self.num_free.assign_add(n)
        self.counters.scatter_add(tf.IndexedSlices(tf.reshape(n, [1]), [1]))
        return tf.constant(0)

    def _sweep(self, step):
        """Free the rows whose id was last seen more than steps_to_live steps ago."""
        last = self.last_seen.read_value()
        expired = (last != FREE) & (step - last > self.ev.steps_to_live)
        return self._free(tf.where(expired)[:, 0])

    def _evict(self, short, step):
        """Free `short` rows of a full table (fewer if fewer were not seen in this step):
        the least recently seen (LRU) or least frequently seen (LFU), lowest row first
        among equals."""
        last = self.last_seen.read_value()
        candidates = (last != FREE) & (last < step)
        if self.ev.eviction_policy == EV.LFU:
            priority = -self.freq.read_value()
        else:
            priority = -last
        priority = tf.where(candidates, priority, tf.int64.min)
        k = tf.minimum(short, tf.reduce_sum(tf.cast(candidates, tf.int64)))
        _, rows = tf.math.top_k(priority, tf.cast(k, tf.int32))
        return self._free(tf.cast(rows, tf.int64))

    def _grow(self, capacity, need, grow_fn):
        """Grow to at least the rows in use plus `need` (doubling, at most max_capacity)."""
        in_use = capacity - self.num_free
        new = tf.minimum(tf.constant(self.max_capacity, tf.int64),
                         tf.maximum(2 * capacity, in_use + need))
        free = self.num_free.read_value()
        for field, fill in (("row_keys", 0), ("last_seen", FREE), ("freq", 0)):
            variable = getattr(self, field)
            resize(variable, padded(variable.read_value(), new, capacity, fill))
        # The new rows go under the free rows already there (those are given first).
        resize(self.free_rows, tf.concat([tf.range(new - 1, capacity - 1, -1),
                                          self.free_rows[:free],
                                          tf.zeros([capacity - free], tf.int64)], 0))
        self.num_free.assign_add(new - capacity)
        self.rows.assign(new)
        grow_fn(capacity, new)
        return tf.constant(0)


class _Shards:
    """Holds a list out of tf.Module's tracking: a table's shards (checkpointed as one), a
    GrowingTable's lengths (its shards' `rows`, checkpointed with them)."""

    def __init__(self, shards: list):
        self.list = shards


class DynamicTable(tf.Module):
    """The map and bookkeeping of one id space, in num_shards shards (see the module
    docstring); rows are the table's: row r of shard s is table row r * num_shards + s."""

    def __init__(self, name: str, ev, num_shards: int | None = None):
        super().__init__(name=name.replace("/", "_") + "_dynamic")
        self.ev = EV()
        self.ev.CopyFrom(ev)
        self.num_shards = n = num_shards or shard_count()
        init, self.max_capacity = capacities(ev, n)
        # Rows each shard starts with.
        self.shard_rows = init // n
        # One free count per shard, made in a row: under a ParameterServerStrategy they land
        # on n distinct ps tasks (round robin); shard s is the one on ps task s.
        counts = [tf.Variable(init // n, dtype=tf.int64, trainable=False) for _ in range(n)]
        if parameter_servers() and n > 1:
            counts.sort(key=_task)
            if [_task(c) for c in counts] != list(range(n)):
                raise RuntimeError(f"dynamic table {name!r}: its {n} shards landed on ps tasks "
                                   f"{sorted(_task(c) for c in counts)}, not one on each.")
        self._shards = _Shards([
            _Shard(f"{self.name}_{s}" if n > 1 else self.name, self.ev, init // n,
                   self.max_capacity // n, count) for s, count in enumerate(counts)])

    @property
    def shards(self) -> list:
        return self._shards.list

    def anchors(self) -> list:
        """A variable on each shard's device, in shard order (where its rows go)."""
        return [shard.num_free for shard in self.shards]

    # -- reading ---------------------------------------------------------------
    def lookup(self, keys: tf.Tensor) -> tf.Tensor:
        """Keys -> table rows; -1 (the zero embedding) for an id without a row."""
        if self.num_shards == 1:
            return _lookup(self.shards[0].map, keys)
        flat = tf.reshape(keys, [-1])
        which = shard_of(flat, self.num_shards)
        parts = tf.dynamic_partition(flat, which, self.num_shards)
        where = tf.dynamic_partition(tf.range(tf.size(flat)), which, self.num_shards)
        rows = [self._table_rows(s, _lookup(shard.map, part))
                for s, (shard, part) in enumerate(zip(self.shards, parts))]
        return tf.reshape(tf.dynamic_stitch(where, rows), tf.shape(keys))

    def _table_rows(self, shard: int, rows: tf.Tensor) -> tf.Tensor:
        """A shard's rows -> the table's (-1 stays -1)."""
        if self.num_shards == 1:
            return rows
        return tf.where(rows >= 0, rows * self.num_shards + shard, rows)

    @property
    def counters(self) -> tf.Tensor:
        """(admitted, evicted, refused, filtered) summed over the shards."""
        return tf.add_n([shard.counters.read_value() for shard in self.shards])

    def capacity(self) -> tf.Tensor:
        return tf.add_n([shard.capacity() for shard in self.shards])

    def rows_in_use(self) -> tf.Tensor:
        return tf.add_n([shard.rows_in_use() for shard in self.shards])

    # -- training ----------------------------------------------------------------
    def assign(self, keys: tf.Tensor, step, grow_fn, fresh_fn) -> None:
        """Give rows to the admitted new keys of one batch (flat int64, MISSING allowed),
        each in its shard. grow_fn(shard, capacity, new) grows that shard's part of the
        embedding tables (and slots) from `capacity` to `new` rows; fresh_fn(shard, rows)
        resets rows (of the shard) given to new ids."""
        parts = ([keys] if self.num_shards == 1 else
                 tf.dynamic_partition(keys, shard_of(keys, self.num_shards), self.num_shards))
        for s, (shard, part) in enumerate(zip(self.shards, parts)):
            shard.assign(part, step, functools.partial(grow_fn, s),
                         functools.partial(fresh_fn, s))

    # -- checkpoints ---------------------------------------------------------------
    def _serialize_to_tensors(self):
        """The shards as one, in table row order (each shard padded with free rows to the
        longest): keys with their table rows, the bookkeeping, the free rows (table rows),
        and per shard its free count (padding included), sketch and counters."""
        lengths = [shard.capacity() for shard in self.shards]
        longest = tf.reduce_max(tf.stack(lengths))
        keys, rows, free = [], [], []
        for s, shard in enumerate(self.shards):
            k, r = shard.map.export()
            keys.append(k)
            rows.append(self._table_rows(s, r))
            # The padding rows are free, under the shard's own free rows (given last).
            free.append(self._table_rows(s, tf.concat([
                tf.range(longest - 1, lengths[s] - 1, -1),
                shard.free_rows[:shard.num_free.read_value()]], 0)))
        out = {"table-keys": tf.concat(keys, 0), "table-values": tf.concat(rows, 0),
               "free_rows": tf.concat(free, 0),
               "num_free": tf.stack([shard.num_free.read_value() + longest - c
                                     for shard, c in zip(self.shards, lengths)]),
               "counters": tf.stack([shard.counters.read_value() for shard in self.shards])}
        for field, fill in (("row_keys", 0), ("last_seen", FREE), ("freq", 0)):
            out[field] = interleave([getattr(shard, field).read_value()
                                     for shard in self.shards], lengths, fill)
        if self.ev.filter_freq > 1:
            out["sketch"] = tf.stack([shard.sketch.read_value() for shard in self.shards])
        return out

    def _restore_from_tensors(self, tensors):
        """A checkpoint of as many shards, or of any number into one shard (the same table
        rows; the sketches and counters add up). Eager, or traced (TF restores a checkpoint
        spread over several tasks, as under parameter servers, in a tf.function): any other
        number of shards is one error naming both."""
        n, name = self.num_shards, self.name[:-len("_dynamic")]
        num_free = tensors["num_free"]
        saved = tf.size(num_free, out_type=tf.int64)
        checks = []
        if n > 1:
            checks.append(_check(
                saved == n, [f"dynamic table {name}: the checkpoint holds it in", saved,
                             f"shard(s) (as many as the ps tasks it was written with; 1 "
                             f"without PSStrategy) and this run splits it over {n} ps tasks; "
                             "restart with as many ps tasks as it was written with, or "
                             "restore it without PSStrategy"]))
        fields = ("row_keys", "last_seen", "freq")
        with tf.control_dependencies(checks):
            if n == 1:
                self._restore_shard(0, tensors["table-keys"], tensors["table-values"],
                                    {f: tensors[f] for f in fields},
                                    tensors["free_rows"], tf.reduce_sum(num_free),
                                    tf.reduce_sum(tensors["counters"], 0),
                                    tf.reduce_sum(tensors["sketch"], 0)
                                    if "sketch" in tensors else None)
                return None
            which = shard_of(tensors["table-keys"], n)
            keys = tf.dynamic_partition(tensors["table-keys"], which, n)
            rows = tf.dynamic_partition(tensors["table-values"], which, n)
            free = tf.split(tensors["free_rows"], num_free, num=n)
            for s in range(n):
                # Table row r * n + s -> row r of shard s.
                self._restore_shard(
                    s, keys[s], rows[s] // n,
                    {f: deinterleave(tensors[f], n, s) for f in fields}, free[s] // n,
                    num_free[s], tensors["counters"][s],
                    tensors["sketch"][s] if "sketch" in tensors else None)
        return None

    def _restore_shard(self, s, keys, rows, fields, free, num_free, counters, sketch):
        shard = self.shards[s]
        tf.raw_ops.LookupTableImportV2(table_handle=shard.map.resource_handle, keys=keys,
                                       values=rows)
        for field, value in fields.items():
            resize(getattr(shard, field), value)
        capacity = _length(fields["last_seen"])
        shard.rows.assign(capacity)
        # The valid prefix of the free stack; the rest is never read before written.
        resize(shard.free_rows, padded(free, capacity, _length(free)))
        shard.num_free.assign(num_free)
        shard.counters.assign(counters)
        if sketch is not None and shard.sketch is not None:
            shard.sketch.assign(sketch)

    # -- export --------------------------------------------------------------------
    def freeze(self, variables: list) -> "FrozenTable":
        """Compact `variables` (the whole tables of this id space, outside any strategy) to
        the rows in use, in row order, and return the read-only snapshot of the map that
        matches them. Eager."""
        state = self._serialize_to_tensors()  # the bookkeeping in table row order
        used = np.flatnonzero(state["last_seen"].numpy() != FREE)
        keys = state["row_keys"].numpy()[used]
        for variable in variables:
            kept = tf.gather(variable, used)
            if not len(used):  # an empty table cannot be gathered from: one zero row
                kept = tf.zeros([1, variable.shape[1]], variable.dtype)
            variable.assign(kept)
        return FrozenTable(self.name, keys)


@contextlib.contextmanager
def _colocated(variable):
    """Under a ParameterServerStrategy: the variables and resources created inside go to
    `variable`'s ps task (yields its device); otherwise nothing changes (yields None)."""
    if not parameter_servers():
        yield None
        return
    with tf.distribute.get_strategy().extended.colocate_vars_with(variable), \
            tf.device(variable.device):
        yield variable.device


def _lookup(table, keys: tf.Tensor) -> tf.Tensor:
    """table.lookup with the keys' shape (a traced lookup's shape is unknown)."""
    return tf.reshape(table.lookup(keys), tf.shape(keys))


def _nothing():
    return tf.constant(0)


def _replicated() -> bool:
    """Whether this runs in a replica of a Mirrored strategy (whose rows
    DynamicTables.assign_replicas gives in cross-replica context)."""
    return (tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()
            and not isinstance(tf.distribute.get_strategy(),
                               tf.distribute.ParameterServerStrategy))


class FrozenTable(tf.Module):
    """The read-only map of an export: key -> row of the compacted table; never written
    at serving time."""

    def __init__(self, name: str, keys: np.ndarray):
        super().__init__(name=name + "_snapshot")
        self.map = tf.lookup.experimental.MutableHashTable(
            tf.int64, tf.int64, default_value=-1, name=self.name)
        if len(keys):
            self.map.insert(tf.constant(keys, tf.int64),
                            tf.range(len(keys), dtype=tf.int64))

    def lookup(self, keys: tf.Tensor) -> tf.Tensor:
        return _lookup(self.map, keys)


def table_parts(table) -> list:
    """The variables holding an embedding table: its parts if split (ShardedVariable), else
    the table itself."""
    return list(table.variables) if isinstance(table, ShardedVariable) else [table]


# {table variable name: its DynamicTable} of the dynamic tables a ParameterServerStrategy's
# FeatureGroups is about to make (DynamicTables registers them, sharded_table takes them).
_PS_TABLES = {}


def sharded_table(next_creator, kwargs):
    """Under a ParameterServerStrategy, the variable creator's part for a dynamic table
    (kwargs: a tf.Variable's, its shape (None, dim)): a GrowingTable of one part per shard,
    part s on shard s's ps task, ceil(init_capacity / ps tasks) rows each to start with.
    None for any other variable."""
    table = _PS_TABLES.pop(kwargs.get("name"), None)
    if table is None:
        return None
    rows, dim = table.shard_rows, tf.TensorShape(kwargs["shape"])[1]
    init = kwargs["initial_value"]
    parts = []
    for s, anchor in enumerate(table.anchors()):
        part = dict(kwargs, shape=(rows, dim), colocate_with=anchor,
                    initial_value=functools.partial(init, partition_shape=(rows, dim),
                                                    partition_offset=(s * rows, 0)),
                    name=f"{kwargs['name']}/part_{s}")
        parts.append(next_creator(**part))
    return GrowingTable(parts, [shard.rows for shard in table.shards], name=kwargs["name"])


class GrowingTable(ShardedVariable):
    """A dynamic table (or its optimizer slot) under a ParameterServerStrategy: part s holds
    the rows of shard s, row r of it being table row r * parts + s ("mod" lookups), and
    grows on its own (resize). Checkpointed as one tensor in table row order, each part
    padded with zero rows to the longest, so one process without a strategy restores it
    as it restores any table, and as many parts restore it row for row. lengths: each
    part's length (the _Shard.rows of its shard, which it grows with)."""

    def __init__(self, variables, lengths: list, name="GrowingTable"):
        super().__init__(variables, name=name)
        self._lengths = _Shards(lengths)

    @property
    def lengths(self) -> list:
        return self._lengths.list

    def _serialize_to_tensors(self):
        return {"VARIABLE_VALUE": interleave([part.read_value() for part in self.variables],
                                             [n.read_value() for n in self.lengths])}

    def _restore_from_tensors(self, restored_tensors):
        value = restored_tensors["VARIABLE_VALUE"]
        n = len(self.variables)
        return tf.group([resize(part, deinterleave(value, n, s))
                         for s, part in enumerate(self.variables)])


def partition_strategy(table) -> str:
    """How a lookup finds a table row's part: "mod" in a GrowingTable, "div" (contiguous
    blocks) in any other table split over ps tasks."""
    return "mod" if isinstance(table, GrowingTable) else "div"


def _check(condition, message: list):
    """A ValueError of the message (strings and tensors) unless condition holds, when its
    value is known now (eager, or static shapes); else an assertion in the graph."""
    known = tf.get_static_value(condition)
    if known is None:
        return tf.debugging.Assert(condition, message)
    if not known:
        raise ValueError(" ".join(part if isinstance(part, str) else
                                  str(int(tf.get_static_value(part))) for part in message) + ".")
    return tf.no_op()


def _task(variable) -> int:
    """The task index of a variable's device (0 if none)."""
    return tf.DeviceSpec.from_string(variable.device).task or 0


class DynamicTables(tf.Module):
    """Every dynamic id space of a model's feature groups.

    table_specs: FeatureGroups' {table name: TableSpec}; a space's WIDE table (name + "/wide")
    shares its rows."""

    def __init__(self, feature_set, table_specs: dict):
        super().__init__(name="dynamic_tables")
        # {feature name: id space (its embedding table's name)} of the dynamic features.
        self.features = {}
        # {id space: DynamicTable}
        self.tables = {}
        for name, feature in feature_set.features.items():
            if not is_dynamic(feature.config):
                continue
            space = feature.config.embedding_name or name
            if space not in table_specs and space + "/wide" not in table_specs:
                continue  # in no feature group: never looked up
            self.features[name] = space
            if space not in self.tables:
                self.tables[space] = DynamicTable(space, feature.config.ev_params)
        # {id space: [its table names in FeatureGroups]}
        self.bound = {space: [n for n in (space, space + "/wide") if n in table_specs]
                      for space in self.tables}
        if parameter_servers():
            # FeatureGroups.build makes these tables next: each in parts, part s on the ps
            # task of shard s (sharded_table, through distribute's variable creator).
            _PS_TABLES.update({n.replace("/", "_"): self.tables[space]
                               for space, names in self.bound.items() for n in names})
        # {table name: TableSpec}: the rows given to new ids start as the table did.
        self.specs = dict(table_specs)
        # Draws the initial values of rows given to new ids; checkpointed with the map.
        self.generator = (tf.random.Generator.from_seed(random.getrandbits(62))
                          if self.tables else None)

    def __bool__(self) -> bool:
        return bool(self.tables)

    def rows(self, features: dict) -> dict:
        """Features whose dynamic ones hold {"keys"} -> the same with {"ids": rows}
        (looked up only); features already holding rows are left as they are."""
        if not self.features:
            return features
        out = dict(features)
        for name, space in self.features.items():
            value = features.get(name)
            if value is None or "keys" not in value:
                continue
            value = dict(value)
            value["ids"] = _map_values(value.pop("keys"), self.tables[space].lookup)
            out[name] = value
        return out

    def train_rows(self, features: dict, step, tables: dict, optimizer) -> dict:
        """In the train step, before the forward pass: give rows to the batch's admitted
        new ids (resetting those rows and their optimizer slots, growing or evicting as
        needed), then -> rows(features). Under a Mirrored strategy the replicas only look
        up: assign_replicas gave the rows before the replicas' step."""
        if not _replicated():
            self._assign_all(self._space_keys(features), step, tables, optimizer)
        return self.rows(features)

    def assign_replicas(self, strategy, features, step, tables: dict, optimizer) -> None:
        """MirroredStrategy / MultiWorkerMirroredStrategy, in cross-replica context before
        the replicas' step: every replica's keys (all workers', in replica order, by an
        all-gather) get rows once, on the one map of this process, with the same result
        in every worker (the same keys in the same order). No-op otherwise."""
        if not self.tables or strategy is None or isinstance(
                strategy, tf.distribute.ParameterServerStrategy):
            return
        local = strategy.run(self._space_keys, args=(features,))
        gathered = {space: strategy.gather(value, axis=0) for space, value in local.items()}
        self._assign_all(gathered, step, tables, optimizer)

    def _space_keys(self, features: dict) -> dict:
        """{id space: the flat keys of its features in this batch}."""
        out = {}
        for space in self.tables:
            names = [n for n, s in self.features.items() if s == space and n in features]
            if names:
                out[space] = tf.concat([_flat(features[n]["keys"]) for n in names], axis=0)
        return out

    def _assign_all(self, space_keys: dict, step, tables: dict, optimizer) -> None:
        for space, keys in space_keys.items():
            table = self.tables[space]
            # [(name, [its part of each shard])]: shard s's rows are part s's.
            parts = [(n, table_parts(tables[n])) for n in self.bound[space]]
            if any(len(p) != table.num_shards for _, p in parts):
                raise ValueError(f"dynamic table {space!r}: {table.num_shards} shard(s), but "
                                 f"its tables have {[len(p) for _, p in parts]} part(s).")
            table.assign(
                keys, step,
                lambda s, capacity, new, v=parts: self._grow([(n, p[s]) for n, p in v],
                                                             capacity, new, optimizer),
                lambda s, rows, v=parts: self._fresh([(n, p[s]) for n, p in v], rows,
                                                     optimizer))

    @staticmethod
    def _grow(variables, capacity, new, optimizer) -> None:
        """Grow each (name, table) from `capacity` to `new` rows (new rows: zeros until
        given)."""
        for _, variable in variables:
            resize(variable, padded(variable.read_value(), new, capacity, 0.0))
            if optimizer is not None:
                optimizer.grow(variable, new, capacity)

    def _fresh(self, variables, rows, optimizer) -> None:
        """Rows given to new ids start as their table did (initial_rows: a WIDE table's at
        zero) with fresh optimizer slots."""
        for name, variable in variables:
            shape = tf.stack([tf.size(rows, out_type=tf.int64), variable.shape[1]])
            values = tf.cast(initial_rows(self.specs[name], shape, self.generator),
                             variable.dtype)
            variable.scatter_update(tf.IndexedSlices(values, rows))
            if optimizer is not None:
                optimizer.reset_rows(variable, rows)

    def fit_slots(self, tables: dict, optimizer) -> None:
        """After restoring the tables without their optimizer (fine_tune_checkpoint): the
        slots take the restored number of rows, fresh. Eager."""
        for names in self.bound.values():
            for name in names:
                for part in table_parts(tables[name]):
                    optimizer.grow(part, tf.shape(part, out_type=tf.int64)[0])

    def freeze(self, tables: dict) -> "DynamicTables":
        """For an export: compact every dynamic table of `tables` (FeatureGroups.tables) to
        its rows in use and look keys up in read-only snapshots from now on."""
        for space, table in list(self.tables.items()):
            if isinstance(table, DynamicTable):
                self.tables[space] = table.freeze([tables[n] for n in self.bound[space]])
        return self

    def ps_state_bytes(self, num_ps: int) -> int:
        """Bytes of the maps and bookkeeping (sketch included) of every dynamic table on
        each ps task, split over num_ps of them."""
        return sum(state_bytes(table.ev, shard_capacity(table.max_capacity, num_ps))
                   for table in self.tables.values() if isinstance(table, DynamicTable))

    def max_rows(self) -> dict:
        """{table name (FeatureGroups.tables): the most rows it grows to}."""
        return {n: table.max_capacity for space, table in self.tables.items()
                if isinstance(table, DynamicTable) for n in self.bound[space]}

    def stats(self) -> dict:
        """{id space: {"rows": rows in use, "capacity": rows allocated, and the cumulative
        counters}} (eager)."""
        out = {}
        for space, table in self.tables.items():
            if not isinstance(table, DynamicTable):
                continue
            counters = table.counters.numpy()
            out[space] = {"rows": int(table.rows_in_use()), "capacity": int(table.capacity()),
                          **{k: int(v) for k, v in zip(COUNTERS, counters)}}
        return out


class StatsWindow:
    """The dynamic tables' activity since the last take(): one window per consumer (the
    progress log, the TensorBoard summaries)."""

    def __init__(self, tables: DynamicTables):
        self.tables = tables
        self.last = tables.stats() if tables else {}

    def take(self) -> dict:
        """{id space: {"rows", "capacity": now; admitted, evicted, refused, filtered: in
        the window}}."""
        if not self.tables:
            return {}
        now = self.tables.stats()
        window = {space: {k: v - self.last.get(space, {}).get(k, 0) if k in COUNTERS else v
                          for k, v in values.items()} for space, values in now.items()}
        self.last = now
        return window

    @staticmethod
    def text(window: dict) -> str:
        """` | user: 37/64 rows, +5 admitted, 0 evicted, 0 refused, 2 filtered` ..."""
        return "".join(
            f" | {space}: {v['rows']:,}/{v['capacity']:,} rows, +{v['admitted']:,} admitted, "
            f"{v['evicted']:,} evicted, {v['refused']:,} refused, {v['filtered']:,} filtered"
            for space, v in window.items())

    @staticmethod
    def write(window: dict) -> None:
        """TensorBoard scalars dynamic/<space>/<rows|capacity|admitted|...> (under the
        caller's default writer and step)."""
        for space, values in window.items():
            for key, value in values.items():
                tf.summary.scalar(f"dynamic/{space}/{key}", value)
