"""Feature preprocessing: typed input columns -> ids or values, with TF ops only.

The same `preprocess` runs inside tf.data during training and inside the exported
serving graph, so both compute identical ids. A feature produces one of:
  - ids:        int64 (batch,), -1 where the value is missing (zero embedding);
  - bag of ids: int64 RaggedTensor (batch, None), optional float weights alike;
  - values:     float32 (batch, raw_input_dim) for a RawFeature without boundaries
                (float32 (batch, 1) for an ExprFeature);
                kind "projected" when it has an embedding_dim: the feature groups project
                the values by a raw_input_dim x embedding_dim table;
  - sequence:   a SequenceFeature, ragged over its positions (never padded here):
                ids int64 (batch, None), or (batch, None, None) with seq_multi_sep;
                or values float32 (batch, None, raw_input_dim) for raw numbers.
"""
import ast
import dataclasses

import keras
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.config.expression import BINARY, COMPARE, NORMALIZERS, parse_expression
from mtrec.features import dynamic
from mtrec.features.initializers import table_initializer
from mtrec.protos import feature_pb2

FC = feature_pb2.FeatureConfig


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """An embedding table: features with the same embedding_name share it."""
    name: str
    num_rows: int
    dim: int
    # Row 0 holds the out-of-vocabulary id of a vocabulary (vocab_list / vocab_file).
    oov_row: bool = False
    # Weights of a linear model (a WIDE group), not embeddings.
    wide: bool = False
    # A dynamic table (ev_params): num_rows is where it starts; it grows (features.dynamic).
    dynamic: bool = False
    # The features' `initializer` (features.initializers.table_initializer; () the default).
    initializer: tuple = ()


def _vocabulary(config) -> list[str]:
    if config.vocab_list:
        return list(dict.fromkeys(config.vocab_list))
    with open(config.vocab_file, encoding="utf-8") as f:
        tokens = [line.split()[0] for line in f if line.strip()]
    return list(dict.fromkeys(tokens))


class Feature:
    """One feature of the config; subclasses know how to turn inputs into ids."""
    # "ids", "bag", "values", "projected" or "sequence"
    kind = "ids"
    # The _IdSpace of an IdFeature / TagFeature, else None.
    id_space = None

    def __init__(self, config):
        self.config = config
        self.name = config_lib.feature_name(config)
        self.input_names = list(config.input_names)
        self.combiner = config.combiner

    @property
    def num_ids(self) -> int:
        """Size of the id space (rows of the embedding table)."""
        raise NotImplementedError

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def table(self) -> TableSpec:
        return TableSpec(self.config.embedding_name or self.name, self.num_ids, self.embedding_dim,
                         oov_row=self.id_space is not None and self.id_space.lookup is not None,
                         dynamic=dynamic.is_dynamic(self.config),
                         initializer=table_initializer(self.config))

    def preprocess(self, inputs: dict) -> dict:
        """{input_name: typed tensor} -> {key: tensor} for this feature."""
        raise NotImplementedError


class _IdSpace:
    """Maps raw values to ids: hash buckets, a vocabulary, or integer identity."""

    def __init__(self, config):
        self.config = config
        self.lookup = None
        if config.vocab_list or config.vocab_file:
            # Id 0 is out-of-vocabulary; known values are 1..n.
            self.lookup = keras.layers.StringLookup(vocabulary=_vocabulary(config),
                                                    num_oov_indices=1, mask_token=None)
            self.size = self.lookup.vocabulary_size()
        elif config.hash_bucket_size:
            self.size = config.hash_bucket_size
        else:
            self.size = config.num_buckets

    def vocabulary(self) -> list[str] | None:
        """The values of ids 1..n for a vocabulary (id 0: out of vocabulary), else None."""
        return _vocabulary(self.config) if self.lookup is not None else None

    def ids(self, values: tf.Tensor) -> tf.Tensor:
        """Values of any dtype (dense or ragged) -> int64 ids; -1 for out-of-range integers."""
        if self.lookup is not None:
            return tf.cast(self.lookup(_as_string(values)), tf.int64)
        if self.config.hash_bucket_size:
            return tf.strings.to_hash_bucket_fast(_as_string(values), self.size)
        if values.dtype == tf.string:
            values = tf.strings.to_number(tf.where(values == "", "-1", values), tf.int64)
        ids = tf.cast(values, tf.int64)
        return tf.where((ids >= 0) & (ids < self.size), ids, tf.constant(-1, tf.int64))


def _id_space(config):
    """The id space of a feature: its raw ids as keys with ev_params, else _IdSpace."""
    return dynamic.DynamicIdSpace(config) if dynamic.is_dynamic(config) else _IdSpace(config)


def _as_string(values):
    return values if values.dtype == tf.string else tf.strings.as_string(values)


def _is_missing(values: tf.Tensor) -> tf.Tensor:
    return tf.equal(values, "") if values.dtype == tf.string else tf.zeros_like(values, tf.bool)


class IdFeature(Feature):
    """One categorical value per row."""

    def __init__(self, config):
        super().__init__(config)
        self.id_space = _id_space(config)

    @property
    def num_ids(self):
        return self.id_space.size

    def preprocess(self, inputs):
        values = inputs[self.input_names[0]]
        ids = self.id_space.ids(values)
        return {"ids": tf.where(_is_missing(values), tf.constant(-1, tf.int64), ids)}


class TagFeature(Feature):
    """A bag of values in one cell (`a|b|c`), optionally weighted (`a:0.5|b:2`)."""
    kind = "bag"

    def __init__(self, config):
        super().__init__(config)
        self.id_space = _id_space(config)

    @property
    def num_ids(self):
        return self.id_space.size

    def preprocess(self, inputs):
        tokens = tf.strings.split(_as_string(inputs[self.input_names[0]]), self.config.separator)
        tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
        out = {}
        if self.config.kv_separator:
            kv = self.config.kv_separator
            keys = tf.strings.regex_replace(tokens, f"{_escape(kv)}.*$", "")
            weights = tf.strings.regex_replace(tokens, f"^[^{_escape(kv)}]*({_escape(kv)}|$)", "")
            weights = tf.strings.to_number(tf.where(weights == "", "1", weights), tf.float32)
            tokens, out["weights"] = keys, weights
        out["ids"] = self.id_space.ids(tokens)
        return out


def _escape(text: str) -> str:
    return "".join("\\" + ch if not ch.isalnum() else ch for ch in text)


class ComboFeature(Feature):
    """The cross of several inputs, hashed (`tf.sparse.cross_hashed`); multi-valued inputs
    (split by `separator`, or each by its combo_input_seps) cross every combination. With
    combo_join_sep each combination is the string of its values joined by it, hashed like
    an IdFeature's value (EasyRec's string cross)."""
    kind = "bag"

    @property
    def num_ids(self):
        if dynamic.is_dynamic(self.config):
            return dynamic.capacities(self.config.ev_params)[0]
        return self.config.hash_bucket_size

    def preprocess(self, inputs):
        seps = list(self.config.combo_input_seps) or [self.config.separator] * len(
            self.input_names)
        parts = []
        for name, sep in zip(self.input_names, seps):
            cells = _as_string(inputs[name])
            tokens = tf.strings.split(cells, sep) if sep else tf.RaggedTensor.from_tensor(
                cells[:, None])  # (batch, None)
            tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
            parts.append(tokens.to_sparse())
        if self.config.combo_join_sep:
            joined = tf.sparse.cross(parts, separator=self.config.combo_join_sep)
            buckets = 2**63 - 1 if dynamic.is_dynamic(self.config) else \
                self.config.hash_bucket_size
            return {"ids": tf.RaggedTensor.from_sparse(joined.with_values(
                tf.strings.to_hash_bucket_fast(joined.values, buckets)))}
        # A dynamic table keeps the whole 64-bit hash of the cross (num_buckets 0).
        crossed = tf.sparse.cross_hashed(parts, num_buckets=0 if dynamic.is_dynamic(
            self.config) else self.config.hash_bucket_size)
        return {"ids": tf.RaggedTensor.from_sparse(crossed)}


class LookupFeature(TagFeature):
    """EasyRec's LookupFeature: input_names[1] is a map `k1:v1|k2:v2`; the values whose key
    is the row's input_names[0] (at most lookup_max_sel_elem_num, the first ones) are a bag
    of ids, pooled with `combiner` (a TagFeature's id space; only the cells differ)."""

    def preprocess(self, inputs):
        keys = _as_string(inputs[self.input_names[0]])  # (batch,)
        pairs = tf.strings.split(_as_string(inputs[self.input_names[1]]), self.config.separator)
        pairs = tf.ragged.boolean_mask(pairs, tf.strings.length(pairs) > 0)  # (batch, None)
        kv = _escape(self.config.kv_separator)
        pair_keys = tf.strings.regex_replace(pairs.flat_values, f"{kv}.*$", "")
        values = tf.strings.regex_replace(pairs.flat_values, f"^.*?{kv}", "")
        has_value = tf.strings.regex_full_match(pairs.flat_values, f".*?{kv}.*")
        wanted = tf.gather(keys, pairs.value_rowids())  # (n,) the row's key of each pair
        selected = tf.ragged.boolean_mask(
            pairs.with_flat_values(values),
            pairs.with_flat_values(tf.equal(pair_keys, wanted) & has_value))  # (batch, None)
        selected = selected[:, :self.config.lookup_max_sel_elem_num]
        return {"ids": self.id_space.ids(selected)}


class RawFeature(Feature):
    """A number (or raw_input_dim numbers split by `separator`); with `boundaries` it is
    bucketized and embedded; with embedding_dim (and no boundaries) the values are projected
    by a raw_input_dim x embedding_dim table (EasyRec: value i weights row i, pooled with
    `combiner`); otherwise the values themselves are the feature."""

    def __init__(self, config):
        super().__init__(config)
        self.dim = config.raw_input_dim
        # EasyRec: values scaled to (x - min_val) / (max_val - min_val) when max_val >
        # min_val; then with num_buckets, bucketized into that many equal parts of [0, 1).
        self.scaled = config.max_val > config.min_val
        self.boundaries = list(config.boundaries)
        if self.scaled and config.num_buckets > 1 and not self.boundaries:
            self.boundaries = [i / config.num_buckets for i in range(config.num_buckets)]
        self.normalizer = (getattr(tf.math, NORMALIZERS[config.normalizer_fn])
                           if config.normalizer_fn else None)
        self.kind = "ids" if self.boundaries else (
            "projected" if config.embedding_dim else "values")

    @property
    def num_ids(self):
        return len(self.boundaries) + 1 if self.boundaries else self.dim

    @property
    def embedding_dim(self):
        return self.config.embedding_dim if self.kind != "values" else self.dim

    def values(self, column: tf.Tensor) -> tf.Tensor:
        """(batch,) input -> float32 (batch, raw_input_dim)."""
        if column.dtype == tf.string:
            if self.dim == 1:
                filled = tf.where(column == "", self.config.default_value or "0", column)
                return tf.strings.to_number(filled, tf.float32)[:, None]
            parts = tf.strings.split(column, self.config.separator)
            parts = parts.to_tensor(default_value=self.config.default_value or "0",
                                    shape=[None, self.dim])
            return tf.strings.to_number(tf.where(parts == "", "0", parts), tf.float32)
        return tf.cast(column, tf.float32)[:, None]

    def preprocess(self, inputs):
        values = self.values(inputs[self.input_names[0]])  # (batch, raw_input_dim)
        if self.scaled:
            low, high = self.config.min_val, self.config.max_val
            values = (values - low) / (high - low)
        if self.normalizer is not None:
            values = self.normalizer(values)
        if self.boundaries:
            buckets = tf.raw_ops.Bucketize(input=values[:, 0], boundaries=self.boundaries)
            return {"ids": tf.cast(buckets, tf.int64)}
        return {"values": values}


class ExprFeature(Feature):
    """A number computed from numeric inputs by `expression` (mtrec.config.expression's
    grammar, built from TF ops; nothing is evaluated), used like a RawFeature's value."""
    kind = "values"

    def __init__(self, config):
        super().__init__(config)
        self.dim = 1
        self.tree = parse_expression(config.expression, self.input_names)

    @property
    def num_ids(self):
        return 1

    @property
    def embedding_dim(self):
        return 1

    def preprocess(self, inputs):
        columns = {}
        for name in self.input_names:
            column = inputs[name]
            if column.dtype == tf.string:
                column = tf.strings.to_number(tf.where(column == "", "0", column), tf.float64)
            columns[name] = tf.cast(column, tf.float64)  # (batch,)
        batch = tf.shape(columns[self.input_names[0]])
        value = tf.broadcast_to(_expression_op(self.tree, columns), batch)  # (batch,)
        return {"values": tf.cast(value, tf.float32)[:, None]}


def _expression_op(node, columns: dict) -> tf.Tensor:
    """The float64 value of a checked expression tree (mtrec.config.expression)."""
    def number(flags):
        return tf.cast(flags, tf.float64)

    if isinstance(node, ast.Constant):
        return tf.constant(float(node.value), tf.float64)
    if isinstance(node, ast.Name):
        return columns[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _expression_op(node.operand, columns)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        a, b = _expression_op(node.left, columns), _expression_op(node.right, columns)
        op = BINARY[type(node.op)]
        if op in ("&", "|"):
            both = (tf.logical_and if op == "&" else tf.logical_or)(
                tf.not_equal(a, 0.0), tf.not_equal(b, 0.0))
            return number(both)
        return {"+": tf.add, "-": tf.subtract, "*": tf.multiply, "/": tf.divide}[op](a, b)
    # A comparison chain (`1 < a < 5`): every link holds.
    compare = {">": tf.greater, ">=": tf.greater_equal, "<": tf.less, "<=": tf.less_equal,
               "==": tf.equal, "!=": tf.not_equal}
    left, flags = _expression_op(node.left, columns), None
    for op, right_node in zip(node.ops, node.comparators):
        right = _expression_op(right_node, columns)
        link = compare[COMPARE[type(op)]](left, right)
        flags = link if flags is None else tf.logical_and(flags, link)
        left = right
    return number(flags)


def sequence_limit(config) -> int:
    """Most positions a SequenceFeature keeps (0: no limit): max_seq_len, and for raw values
    EasyRec's sequence_length when set; the smaller when both apply."""
    limits = [config.max_seq_len] if config.max_seq_len else []
    if config.sub_feature_type == FC.RawFeature and config.HasField("sequence_length"):
        limits.append(config.sequence_length)
    return min(limits) if limits else 0


class SequenceFeature(Feature):
    """A behaviour sequence in one cell, `a|b|c` (EasyRec's SequenceFeature).

    The cell is split by `separator` into a ragged (batch, None) sequence, empty tokens
    dropped (an empty cell is an empty sequence), and cut to its first sequence_limit()
    positions. With seq_multi_sep each position is split again. sub_feature_type IdFeature:
    ids through the feature's id space (-1, a zero embedding, for an out-of-range integer);
    RawFeature: numbers, bucketized into ids by `boundaries`, else kept as values (batch,
    None, raw_input_dim) which the feature groups project to embedding_dim (or use as they
    are with embedding_dim 0).
    """
    kind = "sequence"

    def __init__(self, config):
        super().__init__(config)
        self.raw = config.sub_feature_type == FC.RawFeature
        self.id_space = None if self.raw else _id_space(config)
        self.limit = sequence_limit(config)
        self.boundaries = list(config.boundaries)
        # EasyRec's equal buckets of numbers scaled into [0, 1) by min_val / max_val.
        self.scaled = self.raw and config.num_buckets > 1 and config.max_val > config.min_val
        if self.scaled:
            self.boundaries = [i / config.num_buckets for i in range(config.num_buckets)]
        # Raw integers in [0, num_buckets) used as ids.
        self.integer_ids = self.raw and config.num_buckets > 1 and not self.scaled
        # Raw numbers without boundaries: values, not ids.
        self.values_only = self.raw and not self.boundaries and not self.integer_ids

    @property
    def num_ids(self):
        if self.id_space is not None:
            return self.id_space.size
        if self.integer_ids:
            return self.config.num_buckets
        if self.boundaries:
            return len(self.boundaries) + 1
        # The raw_input_dim x embedding_dim projection of raw values.
        return self.config.raw_input_dim

    @property
    def embedding_dim(self):
        if self.values_only and not self.config.embedding_dim:
            return self.config.raw_input_dim
        return self.config.embedding_dim

    @property
    def has_table(self) -> bool:
        """Whether the feature groups need a table (raw values with embedding_dim 0 do not)."""
        return not (self.values_only and not self.config.embedding_dim)

    def tokens(self, column: tf.Tensor) -> tf.RaggedTensor:
        """(batch,) cells -> string tokens (batch, None), or (batch, None, None) with
        seq_multi_sep; empty tokens dropped, truncated to the first `limit` positions."""
        tokens = tf.strings.split(_as_string(column), self.config.separator)  # (batch, None)
        tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
        if self.limit:
            tokens = tokens[:, :self.limit]
        if self.config.seq_multi_sep:
            parts = tf.strings.split(tokens.values, self.config.seq_multi_sep)  # (n, None)
            if not self.values_only:
                # Missing values of raw numbers are zeros instead, at their position.
                parts = tf.ragged.boolean_mask(parts, tf.strings.length(parts) > 0)
            tokens = tokens.with_values(parts)  # (batch, None, None)
        return tokens

    def preprocess(self, inputs):
        tokens = self.tokens(inputs[self.input_names[0]])
        flat = tokens.flat_values  # (n,)
        if not self.raw:
            return {"ids": tokens.with_flat_values(self.id_space.ids(flat))}
        if self.integer_ids:
            ids = tf.strings.to_number(flat, tf.int64)
            ids = tf.where((ids >= 0) & (ids < self.config.num_buckets), ids,
                           tf.constant(-1, tf.int64))
            return {"ids": tokens.with_flat_values(ids)}
        numbers = tf.strings.to_number(tf.where(flat == "", "0", flat), tf.float32)
        if not self.values_only:
            if self.scaled:
                low, high = self.config.min_val, self.config.max_val
                numbers = (numbers - low) / (high - low)
            buckets = tf.raw_ops.Bucketize(input=numbers, boundaries=self.boundaries)
            return {"ids": tokens.with_flat_values(tf.cast(buckets, tf.int64))}
        dim = self.config.raw_input_dim
        if self.config.seq_multi_sep:
            # (positions, raw_input_dim): each position's values, cut or zero-padded.
            per_position = tokens.values.with_flat_values(numbers).to_tensor(
                default_value=0.0, shape=[None, dim])
        else:
            per_position = numbers[:, None]  # (positions, 1)
        return {"values": tf.RaggedTensor.from_row_splits(per_position, tokens.row_splits)}


_FEATURE_TYPES = {
    FC.IdFeature: IdFeature,
    FC.TagFeature: TagFeature,
    FC.ComboFeature: ComboFeature,
    FC.RawFeature: RawFeature,
    FC.SequenceFeature: SequenceFeature,
    FC.LookupFeature: LookupFeature,
    FC.ExprFeature: ExprFeature,
}


class FeatureSet:
    """All features of a pipeline config, with one preprocess function for all of them."""

    def __init__(self, pipeline):
        self.features = {}
        for config in config_lib.all_features(pipeline):
            feature = _FEATURE_TYPES[config.feature_type](config)
            self.features[feature.name] = feature
        self.input_names = sorted({n for f in self.features.values() for n in f.input_names})

    def __getitem__(self, name: str) -> Feature:
        return self.features[name]

    def preprocess(self, inputs: dict) -> dict:
        """{input_name: tensor} -> {feature_name: {key: tensor}}."""
        out = {name: feature.preprocess(inputs) for name, feature in self.features.items()}
        for name, feature in self.features.items():
            if dynamic.is_dynamic(feature.config):
                # Raw keys, not rows: the model's dynamic tables map them (features.dynamic).
                out[name]["keys"] = out[name].pop("ids")
        return out
