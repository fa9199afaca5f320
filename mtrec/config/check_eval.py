"""Validation of eval_config metrics and export_config."""
import math
import os

from mtrec.config.source import Problems
from mtrec.protos import loss_pb2


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
    if evaluates and not pipeline.eval_input_path:
        p.error("export_config: exporter_type \"best\" and enable_early_stop evaluate during "
                "training, so they need eval_input_path.", "export_config")
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
    if pipeline.eval_config.eval_online:
        p.error("eval_config.eval_online (metrics of the training batches) is not "
                "supported; remove it: mtrec evaluates eval_input_path after every "
                "checkpoint (save_checkpoints_steps), and the progress line and train "
                "summaries show the training losses.", "eval_online")
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
    "auto_multi_value": "multi-valued cells are strings split in the graph (e.g. `a|b|c`)",
}


def check_export_signature(pipeline, p: Problems) -> None:
    """export_config's options that shape the serving signature."""
    export = pipeline.export_config
    for field, instead in _UNSUPPORTED_EXPORT.items():
        if getattr(export, field):
            p.error(f"export_config.{field} is not supported: {instead}.", field)
    if export.HasField("multi_value_fields"):
        p.error("export_config.multi_value_fields is not supported: multi-valued cells are "
                "strings split in the graph (e.g. `a|b|c`); remove it.", "multi_value_fields")
    for path in export.asset_files:
        if not os.path.isfile(path):
            p.error(f"export_config.asset_files: {path!r} is not a file.", "asset_files", path)
