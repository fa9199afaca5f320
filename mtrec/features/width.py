"""The width a feature has in a feature group: the one rule that config validation, the
backbone and the feature groups' outputs share (without TensorFlow).

  in a WIDE group:                      wide_dim (weights per id, for linear logits);
  a RawFeature without boundaries:      raw_input_dim (the values themselves);
  otherwise:                            embedding_dim.
"""
from mtrec.protos import feature_pb2


def feature_width(config, wide: bool, wide_dim: int = 1) -> int:
    """Width of the feature with this FeatureConfig in a (WIDE if `wide`) group."""
    if wide:
        return wide_dim
    if config.feature_type == feature_pb2.FeatureConfig.RawFeature and not config.boundaries:
        return config.raw_input_dim
    return config.embedding_dim


def is_wide(group) -> bool:
    """Whether a FeatureGroupConfig is a WIDE group (WIDE_AND_DEEP counts as DEEP)."""
    return group.wide_deep == feature_pb2.WIDE


def group_widths(groups: dict, features: dict, wide_dim: int = 1) -> dict:
    """{group: [width of each feature, None for an unknown feature]} from
    {group name: FeatureGroupConfig} and {feature name: FeatureConfig}."""
    return {name: [None if features.get(f) is None
                   else feature_width(features[f], is_wide(group), wide_dim)
                   for f in group.feature_names]
            for name, group in groups.items()}
