"""Validation of eval_config metrics and export_config."""
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
    if export.early_stop_func:
        p.error("export_config.early_stop_func names code, which mtrec never runs; use "
                "enable_early_stop with best_exporter_metric and max_check_steps.",
                "early_stop_func")

