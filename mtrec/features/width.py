"""The width a feature has in a feature group: the one rule that config validation, the
backbone and the feature groups' outputs share (without TensorFlow).

  in a WIDE group:                      wide_dim (weights per id, for linear logits);
  a RawFeature without boundaries and embedding_dim 0:
                                        raw_input_dim (the values themselves);
  an ExprFeature:                       1 (its value);
  a SequenceFeature of raw values without boundaries and embedding_dim 0:
                                        raw_input_dim (pooled values);
  otherwise:                            embedding_dim (a SequenceFeature pooled).

A group's sequence_features (SeqAttGroupConfig) add, after its feature_names, per
attention: the pooled history (sum of its hist_seq widths), each pooled aux_hist_seq, and
with need_key_feature the key (sum of its key widths; the history's width when
allow_key_transform pads or projects a key of another width).
"""
from mtrec.protos import feature_pb2

FC = feature_pb2.FeatureConfig


def is_raw_values(config) -> bool:
    """Whether a feature's DEEP output is its numbers themselves, not an embedding: an
    ExprFeature, or a RawFeature without boundaries (nor num_buckets over a min_val /
    max_val range) and without embedding_dim."""
    if config.feature_type == FC.ExprFeature:
        return True
    bucketized = config.boundaries or (config.num_buckets > 1
                                       and config.max_val > config.min_val)
    return (config.feature_type == FC.RawFeature and not bucketized
            and not config.embedding_dim)


def feature_width(config, wide: bool, wide_dim: int = 1) -> int:
    """Width of the feature with this FeatureConfig in a (WIDE if `wide`) group."""
    if wide:
        return wide_dim
    if is_raw_values(config):
        return 1 if config.feature_type == FC.ExprFeature else config.raw_input_dim
    if (config.feature_type == FC.SequenceFeature and config.sub_feature_type == FC.RawFeature
            and not config.boundaries and config.num_buckets <= 1
            and not config.embedding_dim):
        return config.raw_input_dim
    return config.embedding_dim


def group_feature_width(config, wide: bool, wide_dim: int = 1) -> int:
    """Width of a feature's output in a group's feature_names: feature_width, except that a
    SequenceFeature pooled by a text_cnn sequence_combiner gives its filters (or its mlp's
    last width) instead of embedding_dim."""
    combiner = config.sequence_combiner
    if (not wide and config.feature_type == FC.SequenceFeature
            and config.HasField("sequence_combiner")
            and combiner.WhichOneof("combiner") == "text_cnn"):
        cnn = combiner.text_cnn
        return cnn.mlp.hidden_units[-1] if cnn.mlp.hidden_units else sum(cnn.num_filters)
    return feature_width(config, wide, wide_dim)


def is_wide(group) -> bool:
    """Whether a FeatureGroupConfig is a WIDE group (WIDE_AND_DEEP counts as DEEP)."""
    return group.wide_deep == feature_pb2.WIDE


def attention_widths(att, features: dict) -> list:
    """[width of each output] of one SeqAttGroupConfig: pooled history, pooled aux_hist_seq
    each, then the key if need_key_feature; None where a feature is unknown."""
    def widths(field):
        names = [n for m in att.seq_att_map for n in getattr(m, field)]
        return [None if features.get(n) is None else feature_width(features[n], False)
                for n in names]

    def total(values):
        return None if None in values else sum(values)

    hist, key = total(widths("hist_seq")), total(widths("key"))
    out = [hist] + widths("aux_hist_seq")
    if att.need_key_feature:
        transformed = att.allow_key_transform and None not in (key, hist) and key != hist
        out.append(hist if transformed else key)
    return out


def group_widths(groups: dict, features: dict, wide_dim: int = 1) -> dict:
    """{group: [width of each output tensor, None for an unknown feature]} from
    {group name: FeatureGroupConfig} and {feature name: FeatureConfig}."""
    out = {}
    for name, group in groups.items():
        out[name] = [None if features.get(f) is None
                     else group_feature_width(features[f], is_wide(group), wide_dim)
                     for f in group.feature_names]
        for att in group.sequence_features:
            out[name] += attention_widths(att, features)
    return out
