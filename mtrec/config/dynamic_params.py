"""The rules of dynamic embedding tables (`ev_params`, EasyRec's EmbeddingVariable) that
need no TensorFlow: which features get one, their capacities and the defaults mtrec uses.
The tables themselves are mtrec/features/dynamic.py.

A feature's own `ev_params` makes its table dynamic (its hash_bucket_size or num_buckets is
then ignored, as in EasyRec); `model_config.ev_params` is the default of every IdFeature,
TagFeature, ComboFeature and SequenceFeature of ids that has no num_buckets, vocab_list or
vocab_file (those keep their fixed id space). fill_defaults copies it into those features.
"""
from mtrec.protos import dynamic_pb2, feature_pb2

FC = feature_pb2.FeatureConfig
EV = dynamic_pb2.EVParams

# Rows a table starts with / grows to at most when ev_params sets neither (EasyRec's own
# defaults, 8M and 16M rows, are not used: they would be allocated up front).
DEFAULT_INIT_CAPACITY = 65_536
DEFAULT_MAX_CAPACITY = 1_048_576
# Rows of the count-min sketch, and the narrowest sketch admission_sketch_width 0 gives.
SKETCH_DEPTH = 4
MIN_SKETCH_WIDTH = 65_536
# Bytes of the bookkeeping per row (row_keys, last_seen, freq, free_rows: int64) and, at
# most, per map entry (a key and a row in MutableHashTable's std::unordered_map).
ROW_STATE_BYTES = 32
MAP_ENTRY_BYTES = 64


def eligible(config) -> bool:
    """Whether a feature type can have a dynamic table (ids, bags, crosses, id sequences)."""
    return config.feature_type in (FC.IdFeature, FC.TagFeature, FC.ComboFeature) or (
        config.feature_type == FC.SequenceFeature and config.sub_feature_type == FC.IdFeature)


def is_dynamic(config) -> bool:
    return config.HasField("ev_params") and eligible(config)


def takes_model_default(config) -> bool:
    """Whether model_config.ev_params applies to a feature without ev_params of its own."""
    return (eligible(config) and not config.HasField("ev_params") and not config.num_buckets
            and not config.vocab_list and not config.vocab_file)


def fill_ev_params(pipeline) -> None:
    """Copy model_config.ev_params into every feature it applies to (a defaults step)."""
    if not pipeline.model_config.HasField("ev_params"):
        return
    for feature in list(pipeline.feature_configs) + list(pipeline.feature_config.features):
        if takes_model_default(feature):
            feature.ev_params.CopyFrom(pipeline.model_config.ev_params)


def capacities(ev) -> tuple[int, int]:
    """(rows at the start, most rows) of an EVParams."""
    init, most = int(ev.init_capacity), int(ev.max_capacity)
    if not most:
        most = max(DEFAULT_MAX_CAPACITY, init)
    if not init:
        init = min(DEFAULT_INIT_CAPACITY, most)
    return init, most


def sketch_width(ev) -> int:
    return int(ev.admission_sketch_width or max(MIN_SKETCH_WIDTH, 2 * capacities(ev)[1]))


def eviction_interval(ev) -> int:
    return int(ev.eviction_interval or max(1, ev.steps_to_live // 4))


def state_bytes(ev, rows: int) -> int:
    """Bytes of a table's map and bookkeeping at `rows` rows (the embedding values and
    their optimizer slots not included)."""
    sketch = SKETCH_DEPTH * sketch_width(ev) * 4 if ev.filter_freq > 1 else 0
    return rows * (ROW_STATE_BYTES + MAP_ENTRY_BYTES) + sketch


def describe(ev) -> str:
    """A feature's ev_params in one phrase, as `mtrec check` prints it."""
    init, most = capacities(ev)
    parts = [f"dynamic, {init:,} -> {most:,} rows"]
    if ev.filter_freq > 1:
        parts.append(f"filter_freq {ev.filter_freq}")
    if ev.steps_to_live:
        parts.append(f"steps_to_live {ev.steps_to_live} (swept every "
                     f"{eviction_interval(ev)} steps)")
    parts.append(EV.EvictionPolicy.Name(ev.eviction_policy) + " when full")
    return ", ".join(parts)
