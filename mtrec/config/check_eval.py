"""Validation of eval_config metrics and export_config."""
import math
import os

from mtrec.config.source import Problems


def check_metric(metric, inputs: dict, p: Problems) -> None:
    """One metrics_set entry (of eval_config or a tower): gauc groups by an input column."""
    if metric.WhichOneof("metric") == "gauc":
        uid = metric.gauc.uid_field
        if not uid or uid not in inputs:
            p.error(f"gauc.uid_field {uid!r} must name an input field.", "uid_field")


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
    if export.early_stop_params:
        p.error("export_config.early_stop_params are parameters of early_stop_func, which "
                "mtrec does not run; use enable_early_stop with max_check_steps and "
                "early_stop_min_delta.", "early_stop_params")
    check_export_signature(pipeline, p)
    if export.early_stop_func:
        p.error("export_config.early_stop_func names code, which mtrec never runs; use "
                "enable_early_stop with best_exporter_metric and max_check_steps.",
                "early_stop_func")



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
