"""The Python API; the CLI only wraps these functions."""
import contextlib
import logging
import os

from mtrec import config as config_lib
from mtrec.errors import MtrecError, TrainingError

log = logging.getLogger("mtrec")


def _load(config, model_dir=None, edit_config_json=None, sets=None):
    if isinstance(config, config_lib.LoadedConfig):
        return config
    if isinstance(config, str):
        return config_lib.load(config, edit_config_json, sets, model_dir)
    if config is None and model_dir:
        path = os.path.join(model_dir, "pipeline.config")
        if not os.path.isfile(path):
            raise MtrecError(f"{model_dir} has no pipeline.config; pass --config.")
        return config_lib.load(path, edit_config_json, sets, model_dir)
    if config is None:
        raise MtrecError("pass a config path (--config) or a model_dir (--model_dir).")
    # A PipelineConfig message built in Python.
    config_lib.apply_overrides(config, edit_config_json, sets)
    if model_dir:
        config.model_dir = model_dir
    return config_lib.from_pipeline(config)


def train(config, model_dir=None, edit_config_json=None, sets=None) -> dict:
    """Train from a config path or PipelineConfig; returns the last eval metrics."""
    loaded = _load(config, model_dir, edit_config_json, sets)
    from mtrec.training import distribute
    if distribute.task_type() == "evaluator":
        # TF_CONFIG's evaluator task: evaluate the chief's checkpoints as they appear.
        return evaluate(loaded, continuous=True)
    # First: a multi-worker strategy must configure the runtime before other TF work.
    cluster = distribute.make_cluster(loaded.pipeline.train_config)
    import tensorflow as tf
    from mtrec.serving.saved_model import export_saved_model
    from mtrec.training import loop
    from mtrec.training.best import BestMetric
    from mtrec.training.storage import model_dir_lock, refuse_link
    pipeline = loaded.pipeline
    export_config = pipeline.export_config
    exporter = export_config.exporter_type
    export_root = os.path.join(pipeline.model_dir, "export", exporter)
    if not pipeline.model_dir:
        raise MtrecError("no model_dir: set it in the config or pass --model_dir.")

    # Only the chief writes to model_dir (other workers write to a scratch directory).
    lock = model_dir_lock(pipeline.model_dir) if cluster.is_chief else contextlib.nullcontext()
    with lock:
        if cluster.is_chief:  # before training, not after: exports never go through links
            refuse_link(os.path.dirname(export_root))
            refuse_link(export_root)
        watch = (BestMetric(export_config, pipeline.model_dir)
                 if exporter == "best" or export_config.enable_early_stop else None)

        def after_evaluation(job, result) -> bool:
            """Export per exporter_type; True stops training early."""
            improved = watch.update(result) if watch else False
            if exporter == "latest" or (exporter == "best" and improved):
                export_saved_model(job, export_root)
            if improved:
                log.info("best %s so far: %.6g at step %d", watch.name, watch.best,
                         watch.best_step)
            return watch.should_stop(result["global_step"]) if watch else False

        before = tf.train.latest_checkpoint(pipeline.model_dir)
        result = loop.train(loaded, after_evaluation=after_evaluation, cluster=cluster)
        if cluster.is_chief:
            trained = tf.train.latest_checkpoint(pipeline.model_dir) != before
            _export_at_end(loaded, export_root, watch, trained)
    return result


def _export_at_end(loaded, export_root: str, watch, trained: bool) -> None:
    """The export at the end of training: always for exporter_type "final"; for "latest"
    and "best" only when training left no export of theirs, saying why. An export that
    already holds the final checkpoint (a re-run with nothing to train) is kept."""
    import tensorflow as tf
    from mtrec.serving.saved_model import exported_step, newest_export
    pipeline = loaded.pipeline
    exporter = pipeline.export_config.exporter_type
    latest = tf.train.latest_checkpoint(pipeline.model_dir)
    final_step = int(latest.rsplit("-", 1)[1]) if latest else None
    existing = newest_export(export_root)
    step = exported_step(existing) if existing else None
    if existing and (step == final_step or (step is None and not trained)
                     or (exporter == "best" and watch.best is not None)):
        if not trained:
            log.info("nothing was trained in this run; the export %s%s is kept.", existing,
                     f" (step {step})" if step is not None else "")
        return
    if exporter == "best":
        metric = watch.name or pipeline.export_config.best_exporter_metric
        why = (f"best_exporter_metric {metric!r} was never defined (every evaluation "
               "reported null, e.g. an eval set with one class)" if watch.best is None else
               f"{export_root} holds no export of the best step ({watch.best_step})")
        log.warning("exporter_type \"best\": %s; exporting the latest checkpoint (step %s) "
                    "instead.", why, final_step)
    elif exporter == "latest" and trained:
        log.warning("exporter_type \"latest\" exports after each evaluation, and none "
                    "exported step %s (no eval_input_path?); exporting it now.", final_step)
    export(loaded, export_dir=export_root)


def _restored_job(loaded, checkpoint_path=None):
    import tensorflow as tf
    from mtrec.training.checkpoints import restore_checkpoint
    from mtrec.training.job import Job
    pipeline = loaded.pipeline
    path = checkpoint_path or tf.train.latest_checkpoint(pipeline.model_dir or "")
    if checkpoint_path and os.path.isdir(checkpoint_path):
        path = tf.train.latest_checkpoint(checkpoint_path)
    if not path:
        raise MtrecError(f"no checkpoint found in {checkpoint_path or pipeline.model_dir!r}; "
                         "train first or pass --checkpoint_path.")
    job = Job.create(pipeline, for_training=False)
    job.build()
    for _ in range(5):
        try:
            restore_checkpoint(job.checkpoint, path, partial=True)
            return job, path
        except TrainingError:
            # A trainer running on this model_dir may have deleted the checkpoint we found
            # (keep_checkpoint_max) in between: take the newest one instead.
            newer = None if checkpoint_path else tf.train.latest_checkpoint(pipeline.model_dir)
            if not newer or newer == path or os.path.exists(path + ".index"):
                raise
            log.info("%s was removed meanwhile; using %s", path, newer)
            path = newer
    raise MtrecError(f"checkpoints in {pipeline.model_dir!r} changed faster than they could "
                     "be read; try again.")


def evaluate(config=None, model_dir=None, eval_input_path=None, checkpoint_path=None,
             edit_config_json=None, sets=None, continuous=False, timeout=None) -> dict:
    """Evaluate a checkpoint; prints nothing, returns {metric: value, global_step: n}.

    continuous: evaluate every new checkpoint in model_dir as training writes it, until
    one at train_config.num_steps is evaluated or none appears for `timeout` seconds."""
    loaded = _load(config, model_dir, edit_config_json, sets)
    pipeline = loaded.pipeline
    if eval_input_path:
        pipeline.eval_input_path = eval_input_path
    if not pipeline.eval_input_path:
        raise MtrecError("no eval data: set eval_input_path or pass --eval_input_path.")
    from mtrec.data.reader import expand_paths
    from mtrec.training import evaluation
    files = expand_paths(pipeline.eval_input_path, "eval_input_path")
    if continuous:
        if not pipeline.model_dir:
            raise MtrecError("evaluate --continuous needs a model_dir to watch.")
        return evaluation.evaluate_continuously(loaded, files, timeout)
    job, path = _restored_job(loaded, checkpoint_path)
    log.info("evaluating %s", path)
    return evaluation.evaluate_job(job, files, pipeline.model_dir)


def export(config=None, export_dir=None, model_dir=None, checkpoint_path=None,
           edit_config_json=None, sets=None) -> str:
    """Export a SavedModel to export_dir/<unix_ts>/; returns that path."""
    if not export_dir:
        raise MtrecError("pass --export_dir.")
    loaded = _load(config, model_dir, edit_config_json, sets)
    from mtrec.serving.saved_model import export_saved_model
    job, _ = _restored_job(loaded, checkpoint_path)
    return export_saved_model(job, export_dir)


def predict(saved_model, input_path, output_path, reserved_cols=None, output_cols=None,
            batch_size=1024) -> int:
    """Score input_path with a SavedModel into output_path (CSV with a header)."""
    from mtrec.serving import batch_predict
    return batch_predict.predict(saved_model, input_path, output_path, reserved_cols,
                                 output_cols, batch_size)
