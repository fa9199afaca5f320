"""Validation of the features: the inputs they read, id spaces, embedding widths, shared
tables, vocabulary files, and the sizes of the embedding tables (which check_sizes
weighs against memory)."""
import codecs
import os
from typing import Any

from mtrec.config.accessors import all_features, feature_name, model_message
from mtrec.config.dynamic_params import capacities, eligible, is_dynamic
from mtrec.config.expression import NORMALIZERS, parse_expression
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
        sources = _id_sources(feature)
        _check_inputs_and_ids(feature, name, sources, p)
        if (feature.HasField("min_val") or feature.HasField("max_val")) and not (
                feature.feature_type == FC.SequenceFeature and feature.num_buckets
                and feature.sub_feature_type == FC.RawFeature) and not (
                feature.feature_type == FC.RawFeature):
            field = "min_val" if feature.HasField("min_val") else "max_val"
            p.error(f"feature {name!r}: min_val / max_val are only used by a RawFeature, or a "
                    "SequenceFeature with sub_feature_type: RawFeature and num_buckets (its "
                    "numbers' range); remove them, or bucketize with boundaries.", field)
        _check_easyrec_options(feature, name, p)
        if feature.HasField("initializer"):
            _check_initializer(feature, name, p)
        if feature.HasField("ev_params"):
            _check_ev_params(pipeline, feature, name, p)
        if feature.feature_type == FC.SequenceFeature:
            _check_sequence(feature, name, sources, p)
        else:
            _check_widths(feature, name, sources, p)
        if feature.vocab_file:
            vocab_rows[name] = _check_vocab_file(feature.vocab_file, name, p)
        if feature.combiner not in ("mean", "sum"):
            p.error(f"feature {name!r}: combiner must be \"mean\" or \"sum\", got "
                    f"{feature.combiner!r}.", "combiner", feature.combiner)
        # A feature's table is its embedding_name's, or its own name's (which another
        # feature's embedding_name may name, e.g. a sequence sharing its item's table).
        _check_shared_table(feature, name, sources, tables, p)
    vd = pipeline.model_config.variational_dropout
    if pipeline.model_config.HasField("variational_dropout") and vd.regularization_lambda < 0:
        p.error("model_config.variational_dropout: regularization_lambda must be >= 0, got "
                f"{vd.regularization_lambda:g}.", "regularization_lambda")
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
    if feature.feature_type == FC.LookupFeature and len(feature.input_names) != 2:
        p.error(f"LookupFeature {name!r} reads two input_names: the key, then the map "
                f"(`k1:v1|k2:v2`); it has {len(feature.input_names)}.", "input_names",
                feature.input_names[0])
    if feature.feature_type not in (FC.ComboFeature, FC.LookupFeature, FC.ExprFeature) and len(
            feature.input_names) > 1:
        p.error(f"{kind} {name!r} reads one input; use a ComboFeature to cross several.",
                "input_names", feature.input_names[1])
    ids = feature.feature_type in (FC.IdFeature, FC.TagFeature, FC.LookupFeature) or (
        feature.feature_type == FC.SequenceFeature and feature.sub_feature_type == FC.IdFeature)
    if ids and len(sources) != 1 and not is_dynamic(feature):
        p.error(f"{kind} {name!r} needs exactly one of hash_bucket_size, num_buckets, "
                f"vocab_list, vocab_file (has {', '.join(sources) or 'none'}).",
                "input_names", feature.input_names[0])
    if (feature.feature_type == FC.ComboFeature and feature.hash_bucket_size == 0
            and not is_dynamic(feature)):
        p.error(f"ComboFeature {name!r} needs hash_bucket_size.", "input_names",
                feature.input_names[0])


def _check_widths(feature, name: str, sources: list, p: Problems) -> None:
    """A RawFeature's boundaries and raw_input_dim; every other type's embedding_dim."""
    if feature.feature_type == FC.ExprFeature:
        if sources or feature.boundaries or feature.embedding_dim:
            field = (sources + (["boundaries"] if feature.boundaries else [])
                     + ["embedding_dim"])[0]
            p.error(f"ExprFeature {name!r} is one number, used as it is (as in EasyRec); "
                    f"remove {field}, or bucketize the number with a RawFeature.", field)
        return
    if feature.feature_type != FC.RawFeature:
        if feature.embedding_dim == 0:
            kind = FC.FeatureType.Name(feature.feature_type)
            p.error(f"{kind} {name!r} needs embedding_dim > 0.", "input_names",
                    feature.input_names[0])
        return
    ranged = feature.max_val > feature.min_val
    if "hash_bucket_size" in sources:
        p.warn(f"RawFeature {name!r}: hash_bucket_size has no effect on a RawFeature (EasyRec "
               "ignores it too); remove it.", "hash_bucket_size")
    others = [s for s in sources if s not in ("hash_bucket_size", "num_buckets")
              or (s == "num_buckets" and not ranged)]
    if others:
        hint = (" (num_buckets needs min_val < max_val: equal buckets of the scaled value)"
                if others[0] == "num_buckets" else "")
        p.error(f"RawFeature {name!r} takes boundaries, not {others[0]}{hint}.", others[0])
    if (feature.HasField("min_val") or feature.HasField("max_val")) and not ranged:
        p.error(f"RawFeature {name!r}: min_val ({feature.min_val:g}) must be below max_val "
                f"({feature.max_val:g}) to scale the values.",
                "max_val" if feature.HasField("max_val") else "min_val")
    if "num_buckets" in sources and ranged and feature.boundaries:
        p.error(f"RawFeature {name!r}: set boundaries or num_buckets, not both.", "num_buckets")
    if "num_buckets" in sources and ranged and feature.embedding_dim == 0:
        p.error(f"RawFeature {name!r} has num_buckets but no embedding_dim.", "num_buckets")
    if "num_buckets" in sources and ranged and feature.raw_input_dim > 1:
        p.error(f"RawFeature {name!r}: num_buckets needs raw_input_dim 1.", "num_buckets")
    if list(feature.boundaries) != sorted(set(feature.boundaries)):
        p.error(f"RawFeature {name!r}: boundaries must be strictly increasing.", "boundaries")
    if feature.boundaries and feature.raw_input_dim > 1:
        p.error(f"RawFeature {name!r}: boundaries need raw_input_dim 1.", "boundaries")
    if feature.boundaries and feature.embedding_dim == 0:
        p.error(f"RawFeature {name!r} has boundaries but no embedding_dim.", "boundaries")
    if feature.raw_input_dim == 0:
        p.error(f"RawFeature {name!r}: raw_input_dim must be at least 1.", "raw_input_dim")


def _check_easyrec_options(feature, name: str, p: Problems) -> None:
    """The options of one feature type: normalizer_fn (RawFeature), expression
    (ExprFeature), the map of a LookupFeature, combo_join_sep / combo_input_seps
    (ComboFeature)."""
    kind = feature.feature_type
    if feature.HasField("normalizer_fn"):
        if kind != FC.RawFeature:
            p.error(f"feature {name!r}: normalizer_fn applies to a RawFeature's values only.",
                    "normalizer_fn")
        elif feature.normalizer_fn not in NORMALIZERS:
            p.error(f"feature {name!r}: normalizer_fn {feature.normalizer_fn!r} is not one of "
                    f"the functions mtrec knows by name ({', '.join(_NORMALIZER_NAMES)}, also "
                    "spelt tf.<name>); mtrec runs no code from a config: scale with min_val / "
                    "max_val, or bucketize with boundaries.", "normalizer_fn")
    if kind == FC.ExprFeature:
        try:
            parse_expression(feature.expression, feature.input_names)
        except ValueError as e:
            p.error(f"ExprFeature {name!r}: {e}.",
                    "expression" if feature.expression else "input_names",
                    None if feature.expression else feature.input_names[0])
    elif feature.HasField("expression"):
        p.error(f"feature {name!r}: expression is read by an ExprFeature only.", "expression")
    if kind == FC.LookupFeature:
        if not feature.kv_separator:
            p.error(f"LookupFeature {name!r} needs kv_separator, the separator of each key "
                    "from its value in the map (e.g. \":\").", "input_names",
                    feature.input_names[0])
        if feature.lookup_max_sel_elem_num < 1:
            p.error(f"LookupFeature {name!r}: lookup_max_sel_elem_num must be at least 1.",
                    "lookup_max_sel_elem_num")
    if kind != FC.ComboFeature:
        for field in ("combo_join_sep", "combo_input_seps"):
            if getattr(feature, field):
                p.error(f"feature {name!r}: {field} is read by a ComboFeature only.", field)
    elif feature.combo_input_seps and len(feature.combo_input_seps) != len(
            feature.input_names):
        p.error(f"ComboFeature {name!r}: combo_input_seps needs one separator per input "
                f"({len(feature.input_names)}, \"\" for an input not to split), has "
                f"{len(feature.combo_input_seps)}.", "combo_input_seps")


# The tf.math spelling of each normalizer_fn, for messages.
_NORMALIZER_NAMES = [n for n in NORMALIZERS if n.startswith("tf.math.")]


def _check_sequence(feature, name: str, sources: list, p: Problems) -> None:
    """A SequenceFeature: its sub_feature_type, widths, separators and sequence_combiner."""
    sub = feature.sub_feature_type
    if sub not in (FC.IdFeature, FC.RawFeature):
        p.error(f"SequenceFeature {name!r}: sub_feature_type must be IdFeature or RawFeature, "
                f"got {FC.FeatureType.Name(sub)}.", "sub_feature_type", FC.FeatureType.Name(sub))
        return
    first = feature.input_names[0]
    if sub == FC.IdFeature:
        if feature.embedding_dim == 0:
            p.error(f"SequenceFeature {name!r} needs embedding_dim > 0.", "input_names", first)
        if feature.boundaries:
            p.error(f"SequenceFeature {name!r}: boundaries bucketize numbers; set "
                    "sub_feature_type: RawFeature to use them.", "boundaries")
    else:
        others = [s for s in sources if s != "num_buckets"]
        if others:
            p.error(f"SequenceFeature {name!r} of sub_feature_type RawFeature takes "
                    f"boundaries or num_buckets, not {others[0]}; use sub_feature_type: "
                    "IdFeature for ids.", others[0])
        if feature.num_buckets and feature.boundaries:
            p.error(f"SequenceFeature {name!r}: set boundaries or num_buckets, not both.",
                    "num_buckets")
        if feature.num_buckets and feature.embedding_dim == 0:
            p.error(f"SequenceFeature {name!r} has num_buckets but no embedding_dim.",
                    "num_buckets")
        if list(feature.boundaries) != sorted(set(feature.boundaries)):
            p.error(f"SequenceFeature {name!r}: boundaries must be strictly increasing.",
                    "boundaries")
        if feature.boundaries and feature.embedding_dim == 0:
            p.error(f"SequenceFeature {name!r} has boundaries but no embedding_dim.",
                    "boundaries")
        if feature.raw_input_dim == 0:
            p.error(f"SequenceFeature {name!r}: raw_input_dim must be at least 1.",
                    "raw_input_dim")
        elif feature.raw_input_dim > 1 and (feature.boundaries or feature.num_buckets
                                            or not feature.seq_multi_sep):
            p.error(f"SequenceFeature {name!r}: raw_input_dim {feature.raw_input_dim} needs "
                    "seq_multi_sep (the separator of the values within a position) and no "
                    "boundaries.", "raw_input_dim")
    if not feature.separator:
        p.error(f"SequenceFeature {name!r}: separator must not be empty.", "separator")
    elif feature.seq_multi_sep == feature.separator:
        p.error(f"SequenceFeature {name!r}: seq_multi_sep must differ from separator "
                f"({feature.separator!r}).", "seq_multi_sep")
    which = (feature.sequence_combiner.WhichOneof("combiner")
             if feature.HasField("sequence_combiner") else None)
    if which == "multi_head_attention":
        p.error(f"SequenceFeature {name!r}: sequence_combiner {which} is not supported by "
                "mtrec; use `attention {}` (learned attention pooling), or mean / sum / max, "
                "text_cnn, or a target attention in the group's sequence_features.", which)
    elif which == "text_cnn":
        from mtrec.backbone.shapes import check_text_cnn
        try:
            check_text_cnn(feature.sequence_combiner.text_cnn,
                           f"SequenceFeature {name!r}: sequence_combiner text_cnn")
        except ValueError as e:
            p.error(str(e), which)
    elif feature.HasField("sequence_combiner") and which is None:
        p.error(f"SequenceFeature {name!r}: sequence_combiner is empty; set one of attention, "
                "mean, sum, max.", "sequence_combiner")


def _check_initializer(feature, name: str, p: Problems) -> None:
    """A feature's `initializer`: one kind set, a positive stddev, 1 or embedding_dim
    constants."""
    init = feature.initializer
    which = init.WhichOneof("initializer_oneof")
    if not feature.embedding_dim:
        p.error(f"feature {name!r}: initializer sets an embedding table's values, but the "
                "feature has no embedding_dim; remove it, or set embedding_dim.", "initializer")
    elif which is None:
        p.error(f"feature {name!r}: initializer is empty; set one of "
                "truncated_normal_initializer, random_normal_initializer, "
                "glorot_normal_initializer, constant_initializer.", "initializer")
    elif which in ("truncated_normal_initializer", "random_normal_initializer"):
        stddev = getattr(init, which).stddev
        if not stddev > 0:
            p.error(f"feature {name!r}: {which}.stddev must be > 0, got {stddev:g}.",
                    "stddev")
    elif which == "constant_initializer":
        count = len(init.constant_initializer.consts)
        if count not in (1, feature.embedding_dim):
            p.error(f"feature {name!r}: constant_initializer needs one value, or "
                    f"embedding_dim ({feature.embedding_dim}) values, one per column; got "
                    f"{count}.", "constant_initializer")


def _check_shared_table(feature, name: str, sources: list, tables: dict, p: Problems) -> None:
    """Features sharing an embedding_name must agree on the table's id space and width;
    `tables` maps each embedding_name to (first feature, its table shape)."""
    shape = (tuple(sources), feature.hash_bucket_size, feature.num_buckets,
             tuple(feature.vocab_list), feature.vocab_file, tuple(feature.boundaries),
             feature.embedding_dim,
             feature.raw_input_dim if feature.feature_type == FC.RawFeature else None,
             feature.ev_params.SerializeToString(deterministic=True) if is_dynamic(feature)
             else None)
    if is_dynamic(feature):  # its hash_bucket_size / num_buckets are not used
        shape = ("ev_params", feature.ev_params.SerializeToString(deterministic=True),
                 feature.embedding_dim)
    shape += (feature.initializer.SerializeToString(deterministic=True),)
    table = feature.embedding_name or name
    first = tables.setdefault(table, (name, shape))
    if first[1] != shape:
        p.error(f"features {first[0]!r} and {name!r} share embedding_name {table!r} but "
                "differ in id space, embedding_dim or initializer.", "embedding_name", table)


def _check_ev_params(pipeline, feature, name: str, p: Problems) -> None:
    """A feature's ev_params (its own, or model_config's copied by fill_defaults): a type
    with ids, no vocabulary, sane capacities (see dynamic_params)."""
    ev = feature.ev_params
    if not eligible(feature):
        kind = FC.FeatureType.Name(feature.feature_type)
        p.error(f"feature {name!r}: ev_params (a dynamic table of ids) needs an IdFeature, "
                f"TagFeature, ComboFeature or a SequenceFeature of ids, not a {kind}"
                + (" of raw values" if feature.feature_type == FC.SequenceFeature else "")
                + "; remove ev_params.", "ev_params")
        return
    if feature.vocab_list or feature.vocab_file:
        p.error(f"feature {name!r}: ev_params and a vocabulary (vocab_list / vocab_file) both "
                "set its id space; remove one.", "ev_params")
    model = model_message(pipeline.model_config)
    if model is not None and name == getattr(model, "domain_feature", None):
        p.error(f"feature {name!r} is the domain_feature, whose ids must be a fixed range "
                "(num_buckets or vocab_list); remove its ev_params.", "ev_params")
    if ev.max_capacity and ev.init_capacity > ev.max_capacity:
        p.error(f"feature {name!r}: ev_params init_capacity {ev.init_capacity:,} is above "
                f"max_capacity {ev.max_capacity:,}.", "init_capacity", str(ev.init_capacity))


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
        if is_dynamic(f):
            # Weighed at max_capacity, the most rows it grows to.
            most = capacities(f.ev_params)[1]
            tables[f.embedding_name or name] = (most * f.embedding_dim, name,
                                                ("max_capacity", str(f.ev_params.max_capacity)
                                                 if f.ev_params.max_capacity else None))
            continue
        raw = f.feature_type == FC.RawFeature  # (which ignores hash_bucket_size)
        sizes = (("hash_bucket_size", 0 if raw else f.hash_bucket_size),
                 ("num_buckets", f.num_buckets),
                 ("vocab_list", len(f.vocab_list) + 1 if f.vocab_list else 0),
                 ("vocab_file", vocab_rows.get(name, 0) + 1 if f.vocab_file else 0),
                 ("boundaries", len(f.boundaries) + 1 if f.boundaries else 0),
                 ("raw_input_dim", f.raw_input_dim if raw else 0))
        field, rows = next(((s, n) for s, n in sizes if n), (None, 0))
        if rows and f.embedding_dim:
            value = f.vocab_file if field == "vocab_file" else (
                str(getattr(f, field)) if field in ("hash_bucket_size", "num_buckets",
                                                    "raw_input_dim") else None)
            tables[f.embedding_name or name] = (rows * f.embedding_dim, name, (field, value))
    return tables
