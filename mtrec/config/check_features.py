"""Validation of the features: the inputs they read, id spaces, embedding widths, shared
tables, and whether the tables fit in memory."""
import os
from typing import Any

from mtrec.config.accessors import all_features, feature_name
from mtrec.config.source import Problems
from mtrec.protos import feature_pb2

FC = feature_pb2.FeatureConfig


def check_features(pipeline, inputs: dict, p: Problems) -> dict:
    """{feature name: FeatureConfig}, reporting bad features; `inputs` from check_data."""
    features: dict[str, Any] = {}
    tables: dict[str, tuple] = {}
    for feature in all_features(pipeline):
        if not feature.input_names:
            p.error("a feature has no input_names.", "feature_type")
            continue
        name = feature_name(feature)
        if name in features:
            p.error(f"feature {name!r} is defined twice; give one a feature_name.", "input_names",
                    feature.input_names[0])
        features[name] = feature
        for input_name in feature.input_names:
            if input_name not in inputs:
                p.error(f"feature {name!r} reads {input_name!r}, which is not in "
                        "data_config.input_fields.", "input_names", input_name)
        if feature.feature_type == FC.SequenceFeature:
            p.error(f"feature {name!r}: SequenceFeature is not implemented yet in mtrec.",
                    "feature_type", "SequenceFeature")
            continue
        sources = _id_sources(feature)
        _check_inputs_and_ids(feature, name, sources, p)
        _check_widths(feature, name, sources, p)
        if feature.vocab_file and not os.path.isfile(feature.vocab_file):
            p.error(f"feature {name!r}: vocab_file {feature.vocab_file!r} not found.",
                    "vocab_file")
        if feature.combiner not in ("mean", "sum"):
            p.error(f"feature {name!r}: combiner must be \"mean\" or \"sum\", got "
                    f"{feature.combiner!r}.", "combiner", feature.combiner)
        if feature.embedding_name:
            _check_shared_table(feature, name, sources, tables, p)
    _check_table_memory(features, p)
    return features


def _id_sources(feature) -> list[str]:
    """The id-space fields a feature sets, of hash_bucket_size, num_buckets, vocab_*."""
    return [s for s, on in (("hash_bucket_size", feature.hash_bucket_size > 0),
                            ("num_buckets", feature.num_buckets > 0),
                            ("vocab_list", len(feature.vocab_list) > 0),
                            ("vocab_file", bool(feature.vocab_file))) if on]


def _check_inputs_and_ids(feature, name: str, sources: list, p: Problems) -> None:
    """How many inputs a feature type reads, and its one id space."""
    kind = FC.FeatureType.Name(feature.feature_type)
    if feature.feature_type == FC.ComboFeature and len(feature.input_names) < 2:
        p.error(f"ComboFeature {name!r} needs at least two input_names.", "input_names",
                feature.input_names[0])
    if feature.feature_type != FC.ComboFeature and len(feature.input_names) > 1:
        p.error(f"{kind} {name!r} reads one input; use a ComboFeature to cross several.",
                "input_names", feature.input_names[1])
    if feature.feature_type in (FC.IdFeature, FC.TagFeature) and len(sources) != 1:
        p.error(f"{kind} {name!r} needs exactly one of hash_bucket_size, num_buckets, "
                f"vocab_list, vocab_file (has {', '.join(sources) or 'none'}).",
                "input_names", feature.input_names[0])
    if feature.feature_type == FC.ComboFeature and feature.hash_bucket_size == 0:
        p.error(f"ComboFeature {name!r} needs hash_bucket_size.", "input_names",
                feature.input_names[0])


def _check_widths(feature, name: str, sources: list, p: Problems) -> None:
    """A RawFeature's boundaries and raw_input_dim; every other type's embedding_dim."""
    if feature.feature_type != FC.RawFeature:
        if feature.embedding_dim == 0:
            kind = FC.FeatureType.Name(feature.feature_type)
            p.error(f"{kind} {name!r} needs embedding_dim > 0.", "input_names",
                    feature.input_names[0])
        return
    if sources:
        p.error(f"RawFeature {name!r} takes boundaries, not {sources[0]}.", sources[0])
    if list(feature.boundaries) != sorted(set(feature.boundaries)):
        p.error(f"RawFeature {name!r}: boundaries must be strictly increasing.", "boundaries")
    if feature.boundaries and feature.raw_input_dim > 1:
        p.error(f"RawFeature {name!r}: boundaries need raw_input_dim 1.", "boundaries")
    if feature.boundaries and feature.embedding_dim == 0:
        p.error(f"RawFeature {name!r} has boundaries but no embedding_dim.", "boundaries")
    if feature.raw_input_dim == 0:
        p.error(f"RawFeature {name!r}: raw_input_dim must be at least 1.", "raw_input_dim")


def _check_shared_table(feature, name: str, sources: list, tables: dict, p: Problems) -> None:
    """Features sharing an embedding_name must agree on the table's id space and width;
    `tables` maps each embedding_name to (first feature, its table shape)."""
    shape = (tuple(sources), feature.hash_bucket_size, feature.num_buckets,
             tuple(feature.vocab_list), feature.vocab_file, tuple(feature.boundaries),
             feature.embedding_dim)
    first = tables.setdefault(feature.embedding_name, (name, shape))
    if first[1] != shape:
        p.error(f"features {first[0]!r} and {name!r} share embedding_name "
                f"{feature.embedding_name!r} but differ in id space or embedding_dim.",
                "embedding_name", feature.embedding_name)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_table_memory(features: dict, p: Problems) -> None:
    """Embedding tables (float32, plus up to two optimizer slots each) must fit in memory:
    a mistyped hash_bucket_size otherwise ends in the kernel's out-of-memory kill."""
    tables = {}
    for name, f in features.items():
        rows = (f.hash_bucket_size or f.num_buckets or
                (len(f.vocab_list) + 1 if f.vocab_list else 0) or
                (len(f.boundaries) + 1 if f.boundaries else 0))
        if rows and f.embedding_dim:
            tables[f.embedding_name or name] = (rows * f.embedding_dim, name, f)
    memory = _physical_memory()
    need = 3 * 4 * sum(size for size, _, _ in tables.values())
    if memory and need > memory:
        size, name, f = max(tables.values(), key=lambda t: t[0])
        field = "hash_bucket_size" if f.hash_bucket_size else "num_buckets"
        p.error(f"the embedding tables need ~{need / 2 ** 30:.1f} GiB with the optimizer's "
                f"slots, more than this machine's {memory / 2 ** 30:.1f} GiB; the largest is "
                f"{name!r} ({size:,} floats). Lower its {field} or embedding_dim.",
                field, str(getattr(f, field)))
