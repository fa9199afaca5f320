"""Embedding tables and feature groups.

Tables are plain `tf.Variable`s gathered with `tf.nn.embedding_lookup` /
`safe_embedding_lookup_sparse`, so their gradients are `IndexedSlices` and the
sparse optimizer updates only the rows a batch touched. Sequences are looked up on the
flat values of their ragged ids (one gather per batch, no padding), and padded to the
batch's longest row only where a pooling or an attention needs (batch, len, dim).
"""
import contextlib
import dataclasses
import threading

import keras
import tensorflow as tf

from mtrec.features.dynamic import DynamicTables, partition_strategy
from mtrec.features.feature import FeatureSet, TableSpec
from mtrec.features.initializers import initial_rows
from mtrec.features.width import (attention_widths, feature_width, group_feature_width,
                                  is_wide)
from mtrec.layers.dnn import dnn_args
from mtrec.layers.sequence import SequencePooling, TargetAttention
from mtrec.layers.text_cnn import TextCNN
from mtrec.layers.variational_dropout import VariationalDropout
from mtrec.protos import layers_pb2

# EasyRec's attention MLP when a SeqAttGroupConfig has no seq_dnn.
DEFAULT_SEQ_DNN = (128, 64, 32, 1)


_CREATING = threading.local()


@contextlib.contextmanager
def creating_tables():
    """Marks the variables created inside as embedding tables: a parameter-server strategy
    splits these (and only these) row-wise over its ps tasks (training/distribute.py)."""
    before = getattr(_CREATING, "on", False)
    _CREATING.on = True
    try:
        yield
    finally:
        _CREATING.on = before


def is_creating_tables() -> bool:
    return getattr(_CREATING, "on", False)


def _initial_table(spec: TableSpec, partition_shape=None, partition_offset=None) -> tf.Tensor:
    """(num_rows, dim) initial values (initializers.initial_rows). A linear model's weights
    start at zero. Embeddings start as the feature's `initializer` says, by default small
    and uniform: on KuaiRand MMoE, TF's embedding-column default (truncated normal, stddev
    1/sqrt(dim)) measured 0.02-0.07 AUC lower after 3 epochs. The out-of-vocabulary row
    starts at zero, so an id never seen in training adds nothing until training sees one;
    random, it gave every such row an arbitrary item's vector (KuaiRand MMoE, where half
    the test rows have a new video, mean of 3 seeds: long_view AUC 0.7457 -> 0.7568, label
    0.9174 -> 0.9203, is_click 0.7632 -> 0.7622).
    partition_shape/offset: the rows of one shard, when a parameter-server strategy creates
    the table in parts (each part is then initialised on its own ps, never whole)."""
    shape = tuple(partition_shape) if partition_shape else (spec.num_rows, spec.dim)
    first_row = partition_offset[0] if partition_offset else 0
    values = initial_rows(spec, shape)
    if spec.oov_row and first_row == 0:
        values = tf.concat([tf.zeros((1, spec.dim)), values[1:]], axis=0)
    return values


def _lookup(table, ids: tf.Tensor) -> tf.Tensor:
    """ids of any shape -> (*ids.shape, dim) rows of table; -1 gives zeros."""
    # (The compat.v1 form takes the partition strategy of a table split over ps tasks.)
    emb = tf.compat.v1.nn.embedding_lookup(table, tf.maximum(ids, 0),
                                           partition_strategy=partition_strategy(table))
    return emb * tf.cast(ids >= 0, emb.dtype)[..., None]


def _project(values: tf.Tensor, table, combiner: str) -> tf.Tensor:
    """(n, d) raw values -> (n, dim): EasyRec's projection of raw values, value i weighting
    row i of the (d, dim) table, pooled with `combiner` ("sum": values @ table; "mean": the
    weighted mean of the rows with a positive value, zeros if none)."""
    weights = tf.sparse.from_dense(values)  # zeros add nothing to a sum, "mean" drops them
    ids = tf.SparseTensor(weights.indices, weights.indices[:, 1], weights.dense_shape)
    return tf.nn.safe_embedding_lookup_sparse(table, ids, weights, combiner=combiner)


def sequence_combiner(config) -> str:
    """The SequencePooling mode of a SequenceFeature in a group's feature_names: its
    sequence_combiner, else its `combiner` (sum by default, like a TagFeature)."""
    which = config.sequence_combiner.WhichOneof("combiner") \
        if config.HasField("sequence_combiner") else None
    return which or config.combiner


def seq_dnn_args(att) -> dict:
    """A SeqAttGroupConfig's seq_dnn -> TargetAttention keyword arguments (through the one
    DNN adapter; one dropout rate may stand for every layer)."""
    dnn = att.seq_dnn if att.HasField("seq_dnn") else layers_pb2.DNN(
        hidden_units=DEFAULT_SEQ_DNN)
    args = dnn_args(dnn)
    args["hidden_units"] = args["hidden_units"] or list(DEFAULT_SEQ_DNN)
    rates = args.pop("dropout_ratio")
    args["dropout_rate"] = rates if len(rates) > 1 else (rates[0] if rates else 0.0)
    return args


class FeatureGroups(keras.layers.Layer):
    """Looks up every feature of every group. DEEP groups give embeddings, WIDE groups
    wide_output_dim weights per id (a separate table), for linear logits.

    call(features) -> {group_name: [per-feature tensor, ...]} with
      DEEP: (batch, embedding_dim) per feature, or (batch, raw_input_dim) for raw values
            without embedding_dim;
            a SequenceFeature pooled over its positions (sequence_combiner);
            then per SeqAttGroupConfig of the group's sequence_features: the target-
            attention-pooled history (batch, d_hist), each pooled aux_hist_seq
            (batch, d_aux), and the key (batch, d_key) if need_key_feature;
      WIDE: (batch, wide_output_dim) per feature (raw values weight a raw_input_dim x
            wide_output_dim table, summed).
    Widths follow mtrec.features.width (group_widths()). With `variational_dropout` (a
    VariationalDropoutLayer message) each group's feature_names outputs go through a
    VariationalDropout layer (not its sequence_features outputs, nor a model's hidden
    groups, named "__...").
    """

    def __init__(self, feature_set: FeatureSet, group_configs, embedding_regularization=0.0,
                 wide_output_dim=1, variational_dropout=None, **kwargs):
        super().__init__(**kwargs)
        self.feature_set = feature_set
        self.embedding_regularization = embedding_regularization
        self.wide_output_dim = wide_output_dim
        self.groups = {}
        # {group: [SeqAttGroupConfig]} of groups with sequence_features.
        self.attention_groups = {}
        self.table_specs: dict[str, TableSpec] = {}
        poolers, attentions, transforms = {}, {}, {}
        for group in group_configs:
            wide = is_wide(group)
            self.groups[group.group_name] = (list(group.feature_names), wide)
            for name in group.feature_names:
                self._add_table(name, wide)
                if self.feature_set[name].kind == "sequence":
                    if wide:
                        raise ValueError(f"feature group {group.group_name!r}: SequenceFeature "
                                         f"{name!r} cannot be in a WIDE group.")
                    mode = sequence_combiner(self.feature_set[name].config)
                    pooler = TextCNN.from_combiner if mode == "text_cnn" else SequencePooling
                    poolers[f"{group.group_name}/{name}"] = pooler(
                        self.feature_set[name].config.sequence_combiner.text_cnn
                        if mode == "text_cnn" else mode,
                        name=f"seq_pool_{group.group_name}_{name}")
            if not group.sequence_features:
                continue
            self.attention_groups[group.group_name] = list(group.sequence_features)
            for k, att in enumerate(group.sequence_features):
                for m in att.seq_att_map:
                    for name in list(m.key) + list(m.hist_seq) + list(m.aux_hist_seq):
                        self._add_table(name, False)
                key = f"{group.group_name}/{k}"
                label = f"{group.group_name}_{att.group_name or k}"
                attentions[key] = TargetAttention(**seq_dnn_args(att), name=f"seq_att_{label}")
                key_dim, hist_dim = self._key_hist_dims(att)
                if att.allow_key_transform and key_dim != hist_dim and (
                        att.transform_dnn or key_dim > hist_dim):
                    transforms[key] = (
                        keras.layers.Dense(hist_dim, name=f"seq_key_transform_{label}"),
                        keras.layers.Dense(hist_dim, name=f"seq_hist_transform_{label}"))
        self.poolers = poolers
        self.attentions = attentions
        self.transforms = transforms
        # The key -> row maps of the dynamic tables (ev_params), if any.
        self.dynamic = DynamicTables(feature_set, self.table_specs)
        self.dropouts = {}
        if variational_dropout is not None:
            widths = self.group_widths()
            self.dropouts = {name: VariationalDropout(
                widths[name][:len(names)], variational_dropout.regularization_lambda,
                variational_dropout.embedding_wise_variational_dropout,
                name=f"variational_dropout_{name}")
                for name, (names, _) in self.groups.items()
                if names and not name.startswith("__")}

    def _feature_config(self, name):
        return self.feature_set[name].config

    def _key_hist_dims(self, att) -> tuple[int, int]:
        """(width of the key, width of the history) of a SeqAttGroupConfig."""
        def width(field):
            return sum(feature_width(self._feature_config(n), False)
                       for m in att.seq_att_map for n in getattr(m, field))
        return width("key"), width("hist_seq")

    def _add_table(self, name: str, wide: bool) -> None:
        spec = self._table_spec(name, wide)
        if spec is None:
            return
        first = self.table_specs.setdefault(spec.name, spec)
        if first != spec:
            raise ValueError(f"feature {name!r} shares the embedding table {spec.name!r} "
                             f"({spec.num_rows} x {spec.dim}) with a feature whose table is "
                             f"{first.num_rows} x {first.dim}; they must agree.")

    def _table_spec(self, name: str, wide: bool) -> TableSpec | None:
        feature = self.feature_set[name]
        if not wide and (feature.kind == "values" or (
                feature.kind == "sequence" and not feature.has_table)):
            return None
        spec = feature.table()
        return (dataclasses.replace(spec, name=spec.name + "/wide", dim=self.wide_output_dim,
                                    wide=True) if wide else spec)

    def build(self, input_shape=None):
        self.tables = {}
        with creating_tables():
            for name, spec in sorted(self.table_specs.items()):
                self.tables[name] = tf.Variable(
                    lambda partition_shape=None, partition_offset=None, spec=spec:
                        _initial_table(spec, partition_shape, partition_offset),
                    # A dynamic table's rows change (features/dynamic.py).
                    shape=(None if spec.dynamic else spec.num_rows, spec.dim),
                    dtype=tf.float32,
                    name=name.replace("/", "_"), trainable=True)
        self.built = True

    @property
    def table_variables(self) -> list[tf.Variable]:
        return [self.tables[name] for name in sorted(self.tables)]

    def group_widths(self) -> dict:
        """{group: [width of each output tensor]} (mtrec.features.width)."""
        configs = {n: f.config for n, f in self.feature_set.features.items()}
        widths = {}
        for name, (names, wide) in self.groups.items():
            widths[name] = [group_feature_width(configs[n], wide, self.wide_output_dim)
                            for n in names]
            for att in self.attention_groups.get(name, []):
                widths[name] += attention_widths(att, configs)
        return widths

    def group_dim(self, group_name: str) -> int:
        return sum(self.group_widths()[group_name])

    # -- lookups -------------------------------------------------------------
    def embed(self, name: str, value: dict, wide: bool = False) -> tf.Tensor:
        """One non-sequence feature -> (batch, width)."""
        feature = self.feature_set[name]
        spec = self._table_spec(name, wide)
        if spec is None:
            return value["values"]
        table = self.tables[spec.name]
        if "values" in value:
            # (batch, dim); a WIDE group's weights are summed (EasyRec's wide columns).
            return _project(value["values"], table, "sum" if wide else feature.combiner)
        if feature.kind == "bag":
            ids = value["ids"].to_sparse()
            weights = value["weights"].to_sparse() if "weights" in value else None
            # (batch, dim); rows without ids are zeros.
            return tf.compat.v1.nn.safe_embedding_lookup_sparse(
                table, ids, weights, combiner=feature.combiner,
                partition_strategy=partition_strategy(table))
        return _lookup(table, value["ids"])

    def sequence_embeddings(self, name: str, value: dict) -> tf.RaggedTensor:
        """A SequenceFeature -> ragged (batch, None, width): one vector per position; the
        ids of a seq_multi_sep position pooled with the feature's combiner."""
        feature = self.feature_set[name]
        spec = self._table_spec(name, False)
        if "values" in value:
            values = value["values"]  # (batch, None, raw_input_dim)
            if spec is None:
                return values
            # EasyRec's projection of raw values: (positions, raw_input_dim) -> (positions, dim).
            return values.with_flat_values(_project(values.flat_values,
                                                    self.tables[spec.name], feature.combiner))
        ids, table = value["ids"], self.tables[spec.name]
        if ids.ragged_rank == 1:
            return ids.with_flat_values(_lookup(table, ids.flat_values))  # (batch, None, dim)
        parts = ids.values  # (positions, None) ids of each position
        emb = tf.reduce_sum(parts.with_flat_values(_lookup(table, parts.flat_values)),
                            axis=1)  # (positions, dim)
        if feature.combiner == "mean":
            count = tf.cast(parts.row_lengths(), emb.dtype)  # (positions,)
            emb = emb / tf.maximum(count, 1.0)[:, None]
        return tf.RaggedTensor.from_row_splits(emb, ids.row_splits)  # (batch, None, dim)

    def dense_sequence(self, name: str, value: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """A SequenceFeature -> ((batch, len, width) zero-padded to the batch's longest
        row, (batch, len) bool mask of real positions)."""
        return _pad(self.sequence_embeddings(name, value))

    def _attention_inputs(self, features: dict, group_name: str, k: int, att) -> dict:
        """One SeqAttGroupConfig -> {"key", "hist", "mask", "aux", "lengths"}."""
        keys = [self.embed(n, features[n]) for m in att.seq_att_map for n in m.key]
        names = [n for m in att.seq_att_map for n in m.hist_seq]
        aux_names = [n for m in att.seq_att_map for n in m.aux_hist_seq]
        ragged = [self.sequence_embeddings(n, features[n]) for n in names + aux_names]
        lengths = ragged[0].row_lengths()  # (batch,)
        checks = [tf.debugging.assert_equal(
            lengths, r.row_lengths(),
            message=f"feature group {group_name!r}, sequence_features "
                    f"{att.group_name or k!r}: sequences {names[0]!r} and {n!r} have "
                    "different lengths in a row; every hist_seq and aux_hist_seq of one "
                    "attention needs the same number of positions per row")
            for n, r in zip((names + aux_names)[1:], ragged[1:])]
        with tf.control_dependencies(checks):
            padded = [_pad(r)[0] for r in ragged]
            hist = tf.concat(padded[:len(names)], axis=-1)  # (batch, len, d_hist)
            mask = tf.sequence_mask(lengths, tf.shape(hist)[1])  # (batch, len)
        return {"key": tf.concat(keys, axis=-1), "hist": hist, "mask": mask,
                "aux": padded[len(names):], "lengths": lengths}

    def sequence_inputs(self, features: dict, group_name: str) -> list[dict]:
        """Per SeqAttGroupConfig of the group: {"key": (batch, d_key) the key features'
        embeddings concatenated, "hist": (batch, len, d_hist) the hist_seq embeddings
        concatenated and zero-padded to the batch's longest row, "mask": (batch, len) bool,
        "aux": [(batch, len, d_aux) per aux_hist_seq]}, before any allow_key_transform.
        Must be called after the layer is built (tables exist); its lookups add no
        embedding regularization (call() adds it for the rows it looks up)."""
        out = []
        for k, att in enumerate(self.attention_groups.get(group_name, [])):
            inputs = self._attention_inputs(features, group_name, k, att)
            inputs.pop("lengths")
            out.append(inputs)
        return out

    def _attend(self, inputs: dict, key: str, att, training) -> list:
        """Target attention of one SeqAttGroupConfig -> [pooled hist, pooled aux..., key]."""
        query, hist = inputs["key"], inputs["hist"]
        transform = self.transforms.get(key)
        if transform is not None:
            query, hist = transform[0](query), transform[1](hist)
        elif att.allow_key_transform and query.shape[-1] < hist.shape[-1]:
            # EasyRec: a narrower key is zero-padded to the history's width.
            query = tf.pad(query, [[0, 0], [0, hist.shape[-1] - query.shape[-1]]])
        aux = inputs["aux"]
        values = tf.concat([hist] + aux, axis=-1) if aux else None  # (batch, len, d_v)
        pooled = self.attentions[key](query, hist, inputs["mask"], values,
                                      training=training)  # (batch, d_v)
        sizes = [hist.shape[-1]] + [a.shape[-1] for a in aux]
        outputs = tf.split(pooled, sizes, axis=-1) if aux else [pooled]
        return outputs + ([query] if att.need_key_feature else [])

    def call(self, features: dict, training=None) -> dict:
        outputs, squares = {}, []
        for group_name, (names, wide) in self.groups.items():
            tensors = []
            for name in names:
                if self.feature_set[name].kind == "sequence":
                    seq, mask = self.dense_sequence(name, features[name])  # (batch, len, d)
                    emb = self.poolers[f"{group_name}/{name}"](seq, mask)  # (batch, d)
                    if self._table_spec(name, False) is not None:
                        squares.append(tf.reduce_sum(tf.square(seq), axis=[1, 2]))
                    tensors.append(emb)
                    continue
                emb = self.embed(name, features[name], wide)
                tensors.append(emb)
                if not wide and self._table_spec(name, wide) is not None:
                    squares.append(tf.reduce_sum(tf.square(emb), axis=1))
            if group_name in self.dropouts:
                tensors = self.dropouts[group_name](tensors, training=training)
            for k, att in enumerate(self.attention_groups.get(group_name, [])):
                inputs = self._attention_inputs(features, group_name, k, att)
                for seq in [inputs["hist"]] + inputs["aux"]:
                    squares.append(tf.reduce_sum(tf.square(seq), axis=[1, 2]))
                squares.append(tf.reduce_sum(tf.square(inputs["key"]), axis=1))
                tensors += self._attend(inputs, f"{group_name}/{k}", att, training)
            # float32 out, as the tables (a mixed-precision attention computes in bf16/fp16).
            outputs[group_name] = [tf.cast(t, tf.float32) if t.dtype.is_floating else t
                                   for t in tensors]
        if self.embedding_regularization and squares:
            # L2 on the looked-up rows only (mean over the batch), so it stays sparse.
            self.add_loss(self.embedding_regularization * tf.reduce_mean(tf.add_n(squares)))
        return outputs


def _pad(ragged: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor]:
    """ragged (batch, None, d) -> ((batch, len, d) zero-padded, (batch, len) bool mask).
    len is at least 1, so that a batch of empty sequences still gives the attention MLP
    (and its batch normalisation) a masked position instead of no values at all."""
    dense = ragged.to_tensor()  # (batch, len, d)
    dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)], [0, 0]])
    return dense, tf.sequence_mask(ragged.row_lengths(), tf.shape(dense)[1])
