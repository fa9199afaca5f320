"""Validation of the features: the inputs they read, id spaces, embedding widths, shared
tables, vocabulary files, and the sizes of the embedding tables (which check_sizes
weighs against memory)."""
import codecs
import os
from typing import Any

from mtrec.config.accessors import all_features, feature_name
from mtrec.config.source import Problems
from mtrec.protos import feature_pb2

FC = feature_pb2.FeatureConfig


def check_features(pipeline, inputs: dict, p: Problems) -> tuple[dict, dict]:
    """({feature name: FeatureConfig}, the embedding tables as check_sizes takes them),
    reporting bad features; `inputs` from check_data."""
    features: dict[str, Any] = {}
    tables: dict[str, tuple] = {}
    vocab_rows: dict[str, int] = {}
    reading: dict[str, int] = {}  # first input name -> features read it so far
    for feature in all_features(pipeline):
        if not feature.input_names:
            p.error("a feature has no input_names.", "feature_type")
            continue
        name = feature_name(feature)
        first_input = feature.input_names[0]
        reading[first_input] = reading.get(first_input, 0) + 1
        if name in features:
            # At this feature's own line: the nth feature reading its first input.
            p.error(f"feature {name!r} is defined twice; give one a feature_name.", "input_names",
                    first_input, reading[first_input])
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
        if feature.vocab_file:
            vocab_rows[name] = _check_vocab_file(feature.vocab_file, name, p)
        if feature.combiner not in ("mean", "sum"):
            p.error(f"feature {name!r}: combiner must be \"mean\" or \"sum\", got "
                    f"{feature.combiner!r}.", "combiner", feature.combiner)
        if feature.embedding_name:
            _check_shared_table(feature, name, sources, tables, p)
    return features, _embedding_tables(features, vocab_rows)


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


def _check_vocab_file(path: str, name: str, p: Problems) -> int:
    """A vocab_file exists and is UTF-8 text; returns its number of non-blank lines (the
    ids it gives, at most). Read in chunks, so a large file costs no memory."""
    if not os.path.isfile(path):
        p.error(f"feature {name!r}: vocab_file {path!r} not found.", "vocab_file", path)
        return 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    rows, offset, line, tail = 0, 0, 1, ""
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as e:
                    line += chunk[:max(e.start, 0)].count(b"\n")
                    p.error(f"feature {name!r}: vocab_file {path!r} is not UTF-8 text "
                            f"({e.reason} at byte {offset + max(e.start, 0)}, its line "
                            f"{line}); a vocabulary is a text file of one token per line.",
                            "vocab_file", path)
                    return 0
                lines = (tail + text).split("\n")
                tail = lines.pop()
                rows += sum(1 for l in lines if l.strip())
                line += len(lines)
                offset += len(chunk)
                if not chunk:
                    return rows + (1 if tail.strip() else 0)
    except OSError as e:
        p.error(f"feature {name!r}: vocab_file {path!r} cannot be read ({e.strerror}).",
                "vocab_file", path)
        return 0


def _embedding_tables(features: dict, vocab_rows: dict) -> dict:
    """{table name: (floats, feature name, (field, value) that sets its rows)} of the
    features' embedding tables (float32; one table per embedding_name)."""
    tables = {}
    for name, f in features.items():
        sizes = (("hash_bucket_size", f.hash_bucket_size), ("num_buckets", f.num_buckets),
                 ("vocab_list", len(f.vocab_list) + 1 if f.vocab_list else 0),
                 ("vocab_file", vocab_rows.get(name, 0) + 1 if f.vocab_file else 0),
                 ("boundaries", len(f.boundaries) + 1 if f.boundaries else 0))
        field, rows = next(((s, n) for s, n in sizes if n), (None, 0))
        if rows and f.embedding_dim:
            value = f.vocab_file if field == "vocab_file" else (
                str(getattr(f, field)) if field in ("hash_bucket_size", "num_buckets")
                else None)
            tables[f.embedding_name or name] = (rows * f.embedding_dim, name, (field, value))
    return tables
