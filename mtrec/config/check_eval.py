"""Validation of eval_config metrics and export_config."""
import math
import os

from mtrec.config.accessors import has_eval_data
from mtrec.config.source import Problems
from mtrec.protos import loss_pb2, train_pb2


# The towers each metric applies to, by what the tower predicts: "regression" (an L2 tower,
# y_<tower>), "binary" (one probability per row) or "multi_class" (probabilities of
# num_class classes). As EasyRec's rank models: AUC-like and threshold metrics need one
# probability, top-k metrics need classes, error metrics a value per row.
METRIC_TOWERS = {
    "auc": {"binary"},
    "gauc": {"binary"},
    "session_auc": {"binary"},
    "logloss": {"binary"},
    "max_f1": {"binary"},
    "precision": {"binary"},
    "recall": {"binary"},
    "accuracy": {"binary", "multi_class"},
    "recall_at_topk": {"multi_class"},
    "precision_at_topk": {"multi_class"},
    "mean_squared_error": {"regression", "binary"},
    "mean_absolute_error": {"regression", "binary"},
    "root_mean_squared_error": {"regression", "binary"},
}
# The train_distribute strategies eval_online runs under (the metrics of one process's
# batches: under MirroredStrategy those of its first replica).
_ONLINE_STRATEGIES = (train_pb2.NoStrategy, train_pb2.MirroredStrategy)
# Column a per-group AUC groups rows by, per metric.
GROUP_FIELDS = {"gauc": "uid_field", "session_auc": "session_id_field"}
_REDUCTIONS = ("mean", "mean_by_sample_num", "mean_by_positive_num")
_TOWER_WORDS = {"regression": "regression (L2_LOSS)", "binary": "binary (num_class 1)",
                "multi_class": "multi-class (num_class > 1)"}


def tower_prediction_kind(tower) -> str:
    """"regression", "binary" or "multi_class": what a tower config predicts."""
    kinds = [t.loss_type for t in tower.losses] or [tower.loss_type]
    if loss_pb2.L2_LOSS in kinds:
        return "regression"
    # ZILN: metrics read P(y > 0) against y > 0.
    if tower.num_class == 1 or loss_pb2.JRC_LOSS in kinds or loss_pb2.ZILN_LOSS in kinds:
        return "binary"
    return "multi_class"


def check_metric(metric, inputs: dict, p: Problems, tower=None) -> None:
    """One metrics_set entry (of eval_config, or of `tower`): gauc and session_auc group by
    an input column, top-k needs k >= 1, and a tower's own metric must fit the tower."""
    kind = metric.WhichOneof("metric")
    if kind in GROUP_FIELDS:
        field = GROUP_FIELDS[kind]
        column = getattr(getattr(metric, kind), field)
        if not column or column not in inputs:
            p.error(f"{kind}.{field} {column!r} must name an input field.", field)
        reduction = getattr(metric, kind).reduction
        if reduction not in _REDUCTIONS:
            p.error(f"{kind}.reduction {reduction!r} is not one of {', '.join(_REDUCTIONS)}.",
                    "reduction")
    if kind in ("recall_at_topk", "precision_at_topk") and getattr(metric, kind).topk < 1:
        p.error(f"{kind}.topk must be at least 1.", "topk")
    if tower is not None and kind in METRIC_TOWERS:
        predicts = tower_prediction_kind(tower)
        if predicts not in METRIC_TOWERS[kind]:
            fits = " or ".join(_TOWER_WORDS[k] for k in sorted(METRIC_TOWERS[kind]))
            usable = sorted(m for m, t in METRIC_TOWERS.items() if predicts in t)
            p.error(f"tower {tower.tower_name!r} is {_TOWER_WORDS[predicts]}: metric {kind} "
                    f"needs a {fits} tower; use one of {', '.join(usable)}.", kind)


def check_eval(pipeline, inputs: dict, p: Problems) -> None:
    """eval_config's metrics and export_config's exporter and early stopping."""
    for metric in pipeline.eval_config.metrics_set:
        check_metric(metric, inputs, p)
    export = pipeline.export_config
    if export.exporter_type not in ("final", "latest", "best"):
        p.error(f"export_config.exporter_type {export.exporter_type!r} is not supported; use "
                "\"final\", \"latest\" or \"best\".", "exporter_type")
    evaluates = export.exporter_type == "best" or export.enable_early_stop
    if evaluates and not has_eval_data(pipeline):
        p.error("export_config: exporter_type \"best\" and enable_early_stop evaluate during "
                "training, so they need eval_input_path (or binary_eval_input).",
                "export_config")
    if export.enable_early_stop and export.max_check_steps <= 0:
        p.error("export_config.max_check_steps must be positive.", "max_check_steps")
    if export.default_checkpoint not in ("best", "latest"):
        p.error(f"export_config.default_checkpoint {export.default_checkpoint!r} is not "
                "supported; use \"best\" (the best evaluated checkpoint) or \"latest\".",
                "default_checkpoint")
    delta = export.early_stop_min_delta
    if not (math.isfinite(delta) and delta >= 0):
        p.error(f"export_config.early_stop_min_delta must be a finite number >= 0, got "
                f"{delta:g}.", "early_stop_min_delta")
    if export.early_stop_func:
        p.error(f"export_config.early_stop_func names Python code ({export.early_stop_func!r}"
                "; EasyRec has no built-in one), which mtrec never runs from a config; remove "
                "it (and early_stop_params) and use enable_early_stop with "
                "best_exporter_metric, max_check_steps and early_stop_min_delta.",
                "early_stop_func")
    elif export.early_stop_params:
        p.error("export_config.early_stop_params are parameters of early_stop_func, which "
                "mtrec does not run; use enable_early_stop with max_check_steps and "
                "early_stop_min_delta.", "early_stop_params")
    strategy = pipeline.train_config.train_distribute
    if pipeline.eval_config.eval_online and strategy not in _ONLINE_STRATEGIES:
        p.error("eval_config.eval_online (metrics of the training batches) runs in one "
                "process: train_distribute "
                f"{train_pb2.DistributionStrategy.Name(strategy)} is not supported with it; "
                "use NoStrategy or MirroredStrategy, or remove eval_online (eval_input_path "
                "is still evaluated after every checkpoint).", "eval_online")
    _check_best_metric(pipeline, p)
    check_export_signature(pipeline, p)


def _check_best_metric(pipeline, p: Problems) -> None:
    """A best_exporter_metric of a kind no metrics_set computes (EasyRec's samples have
    some) is a warning: the best checkpoint is then picked by the first metric."""
    from mtrec import config as config_lib
    wanted = pipeline.export_config.best_exporter_metric
    kinds = [k for k in METRIC_TOWERS if wanted == k or wanted.startswith(k + "_")]
    if not wanted or not kinds:
        return
    sets = [pipeline.eval_config.metrics_set] + [
        t.metrics_set for t in config_lib.task_towers(pipeline.model_config)]
    computed = list(dict.fromkeys(m.WhichOneof("metric") for metrics in sets for m in metrics))
    kind = max(kinds, key=len)  # "session_auc" over "auc"
    if computed and kind not in computed:
        p.warn(f"export_config.best_exporter_metric {wanted!r} is not computed (the "
               f"metrics_set has {', '.join(computed)}): the best checkpoint is picked by "
               "the first tower's first metric instead.", "best_exporter_metric")



# export_config options of EasyRec's that mtrec does not build, and what to use instead.
_UNSUPPORTED_EXPORT = {
    "export_features": "the model's outputs do not include the raw feature strings",
    "export_rtp_outputs": "RTP is Alibaba-internal serving; serve the SavedModel with "
                          "TensorFlow Serving",
    "auto_multi_value": "list the inputs in multi_value_fields instead",
}


def _multi_value_reader(feature, position: int):
    """(kind, separator) of a feature reading an input of multi_value_fields at `position`
    of its input_names, or why it cannot. kind is the signature dtype, by what the feature
    reads (EasyRec's dtypes): "string" for ids through a hash or vocabulary (and weighted
    `id:weight` tags), "int64" for identity ids (num_buckets), "float32" for a RawFeature's
    raw_input_dim numbers."""
    from mtrec import config as config_lib
    from mtrec.protos import feature_pb2
    fc = feature_pb2.FeatureConfig
    kind = feature.feature_type
    name = fc.FeatureType.Name(kind)
    if position != 0:
        return f"it is input {position + 1} of {name} {config_lib.feature_name(feature)!r}"
    if kind == fc.RawFeature and feature.raw_input_dim > 1:
        return "float32", feature.separator
    if kind == fc.SequenceFeature and (feature.sub_feature_type == fc.RawFeature
                                       or feature.seq_multi_sep):
        return "its SequenceFeature holds raw numbers or seq_multi_sep groups"
    if kind in (fc.TagFeature, fc.SequenceFeature):
        identity = (feature.num_buckets and not feature.hash_bucket_size
                    and not feature.vocab_list and not feature.vocab_file
                    and not (kind == fc.TagFeature and feature.kv_separator))
        return ("int64" if identity else "string"), feature.separator
    return f"{name} reads one value per row"


def multi_value_inputs(pipeline) -> dict:
    """{input name: (kind, separator)} of export_config.multi_value_fields that the
    features read as lists (config validation refused the others)."""
    from mtrec import config as config_lib
    names = set(pipeline.export_config.multi_value_fields.input_name)
    found = {}
    for feature in config_lib.all_features(pipeline):
        for position, name in enumerate(feature.input_names):
            if name in names:
                reader = _multi_value_reader(feature, position)
                if isinstance(reader, tuple):
                    found.setdefault(name, reader)
    return found


def _check_multi_value_fields(pipeline, p: Problems) -> None:
    """Each input of multi_value_fields is an input column only TagFeature, SequenceFeature
    (of ids) or RawFeature (raw_input_dim > 1) features read, with one separator."""
    from mtrec import config as config_lib
    export = pipeline.export_config
    if not export.multi_placeholder:
        p.error("export_config.multi_value_fields shapes inputs of the multi_placeholder "
                "signature; with multi_placeholder: false rows come as one string: remove "
                "one of them.", "multi_value_fields")
        return
    data = pipeline.data_config
    inputs = {f.input_name for f in data.input_fields}
    readers = {}
    for feature in config_lib.all_features(pipeline):
        for position, name in enumerate(feature.input_names):
            readers.setdefault(name, []).append((feature, position))
    seen = set()
    for name in export.multi_value_fields.input_name:
        where = ("multi_value_fields",)
        if name in seen:
            p.error(f"multi_value_fields lists {name!r} twice.", *where)
            continue
        seen.add(name)
        if name not in inputs:
            p.error(f"multi_value_fields: {name!r} is not an input field.", *where)
            continue
        if not readers.get(name):
            p.error(f"multi_value_fields: no feature reads input {name!r}.", *where)
            continue
        kinds = set()
        for feature, position in readers[name]:
            reader = _multi_value_reader(feature, position)
            if isinstance(reader, str):
                p.error(f"multi_value_fields: input {name!r} cannot be a list: {reader}; list "
                        "only inputs of TagFeature, SequenceFeature (of ids) or RawFeature "
                        "with raw_input_dim > 1.", *where)
                break
            kinds.add(reader)
        else:
            if len(kinds) > 1:
                p.error(f"multi_value_fields: the features reading {name!r} split it "
                        f"differently ({', '.join(sorted(map(str, kinds)))}); list inputs "
                        "one kind of feature reads with one separator.", *where)


def check_export_signature(pipeline, p: Problems) -> None:
    """export_config's options that shape the serving signature."""
    export = pipeline.export_config
    for field, instead in _UNSUPPORTED_EXPORT.items():
        if getattr(export, field):
            p.error(f"export_config.{field} is not supported: {instead}.", field)
    if export.HasField("multi_value_fields"):
        _check_multi_value_fields(pipeline, p)
    for path in export.asset_files:
        if not os.path.isfile(path):
            p.error(f"export_config.asset_files: {path!r} is not a file.", "asset_files", path)
