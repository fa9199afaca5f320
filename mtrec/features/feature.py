"""Feature preprocessing: typed input columns -> ids or values, with TF ops only.

The same `preprocess` runs inside tf.data during training and inside the exported
serving graph, so both compute identical ids. A feature produces one of:
  - ids:        int64 (batch,), -1 where the value is missing (zero embedding);
  - bag of ids: int64 RaggedTensor (batch, None), optional float weights alike;
  - values:     float32 (batch, raw_input_dim) for a RawFeature without boundaries;
  - sequence:   a SequenceFeature, ragged over its positions (never padded here):
                ids int64 (batch, None), or (batch, None, None) with seq_multi_sep;
                or values float32 (batch, None, raw_input_dim) for raw numbers.
"""
import dataclasses

import keras
import tensorflow as tf

from mtrec import config as config_lib
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


def _vocabulary(config) -> list[str]:
    if config.vocab_list:
        return list(dict.fromkeys(config.vocab_list))
    with open(config.vocab_file, encoding="utf-8") as f:
        tokens = [line.split()[0] for line in f if line.strip()]
    return list(dict.fromkeys(tokens))


class Feature:
    """One feature of the config; subclasses know how to turn inputs into ids."""
    # "ids", "bag", "values" or "sequence"
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
                         oov_row=self.id_space is not None and self.id_space.lookup is not None)

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


def _as_string(values):
    return values if values.dtype == tf.string else tf.strings.as_string(values)


def _is_missing(values: tf.Tensor) -> tf.Tensor:
    return tf.equal(values, "") if values.dtype == tf.string else tf.zeros_like(values, tf.bool)


class IdFeature(Feature):
    """One categorical value per row."""

    def __init__(self, config):
        super().__init__(config)
        self.id_space = _IdSpace(config)

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
        self.id_space = _IdSpace(config)

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
    split by `separator` cross every combination."""
    kind = "bag"

    @property
    def num_ids(self):
        return self.config.hash_bucket_size

    def preprocess(self, inputs):
        parts = []
        for name in self.input_names:
            tokens = tf.strings.split(_as_string(inputs[name]), self.config.separator)
            tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
            parts.append(tokens.to_sparse())
        crossed = tf.sparse.cross_hashed(parts, num_buckets=self.config.hash_bucket_size)
        return {"ids": tf.RaggedTensor.from_sparse(crossed)}


class RawFeature(Feature):
    """A number (or raw_input_dim numbers split by `separator`); with `boundaries` it is
    bucketized and embedded, otherwise the values themselves are the feature."""

    def __init__(self, config):
        super().__init__(config)
        self.dim = config.raw_input_dim
        self.kind = "ids" if config.boundaries else "values"

    @property
    def num_ids(self):
        return len(self.config.boundaries) + 1

    @property
    def embedding_dim(self):
        return self.config.embedding_dim if self.config.boundaries else self.dim

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
        values = self.values(inputs[self.input_names[0]])
        if self.config.boundaries:
            buckets = tf.raw_ops.Bucketize(input=values[:, 0],
                                           boundaries=list(self.config.boundaries))
            return {"ids": tf.cast(buckets, tf.int64)}
        return {"values": values}


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
        self.id_space = None if self.raw else _IdSpace(config)
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
        return {name: feature.preprocess(inputs) for name, feature in self.features.items()}
