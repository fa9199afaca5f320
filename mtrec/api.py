"""The Python API; the CLI only wraps these functions. Argument names are the CLI's flags
(`--model_dir DIR` is `model_dir=DIR`; the repeatable `--set` is `sets=[...]`); the names
they had before (checkpoint_path, input_path, output_path) still work. Progress lines go
to stderr as the CLI prints them unless the caller configured logging (docs/python_api.md).
"""
import contextlib
import functools
import logging
import os
import sys

from mtrec import config as config_lib
from mtrec.errors import MtrecError, TrainingError

log = logging.getLogger("mtrec")
LOG_FORMAT, LOG_DATE_FORMAT = "%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"


def _logs_progress(function):
    """Run function with mtrec's INFO lines (progress, evaluations, exports) on stderr, as
    the CLI shows them, when the caller has configured no logging: no handler on the root
    or "mtrec" logger and no level set on "mtrec". Calling
    logging.getLogger("mtrec").setLevel(logging.WARNING) (or configuring logging) turns
    that off."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        logger = logging.getLogger("mtrec")
        if logging.getLogger().handlers or logger.handlers or logger.level != logging.NOTSET:
            return function(*args, **kwargs)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            return function(*args, **kwargs)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
    return wrapper


def _renamed(function: str, given: dict, **renames) -> dict:
    """{current name: value} of the keyword arguments given under another name (renames:
    {other: current}: a name from before they matched the CLI flags, or `set`, the
    CLI's flag, for sets); any other unknown keyword is Python's TypeError."""
    values = {}
    for old, value in given.items():
        if old not in renames:
            raise TypeError(f"{function}() got an unexpected keyword argument {old!r}")
        values[renames[old]] = value
    return values


def _load(config, model_dir=None, edit_config_json=None, sets=None, skip_memory_check=False):
    """The loaded config; the first load of a command also sets TensorFlow's threads,
    which its runtime only takes before it runs an op."""
    if isinstance(config, config_lib.LoadedConfig):
        return config
    loaded = _read_config(config, model_dir, edit_config_json, sets, skip_memory_check)
    from mtrec.training.distribute import configure_threads
    configure_threads(loaded.pipeline.train_config)
    return loaded


def _read_config(config, model_dir, edit_config_json, sets, skip_memory_check):
    """A config path, model_dir's pipeline.config or a PipelineConfig, overridden and
    checked."""
    if isinstance(config, str):
        return config_lib.load(config, edit_config_json, sets, model_dir, skip_memory_check)
    if config is None and model_dir:
        path = os.path.join(model_dir, "pipeline.config")
        if not os.path.isfile(path):
            raise MtrecError(f"{model_dir} has no pipeline.config; pass --config.")
        return config_lib.load(path, edit_config_json, sets, model_dir, skip_memory_check)
    if config is None:
        raise MtrecError("pass a config path (--config) or a model_dir (--model_dir).")
    # A PipelineConfig message built in Python.
    config_lib.apply_overrides(config, edit_config_json, sets)
    if model_dir:
        config.model_dir = model_dir
    return config_lib.from_pipeline(config, skip_memory_check=skip_memory_check)


def check(config=None, model_dir=None, edit_config_json=None, sets=None,
          skip_memory_check=False, skip_data_check=False, **old_names) -> list[str]:
    """Parse, override, fill in defaults and validate a config, then build its model once
    (no data is read); return the lines `mtrec check` prints: features, groups (with their
    sequence attention), towers, parameters per part, embedding memory, FLOPs per example
    and the config's warnings. A problem raises ConfigError naming file:line. Unless
    skip_data_check, the local input files must exist, and CSV headers (with_header) name
    every input field (config.check_data.check_input_files)."""
    sets = _renamed("check", old_names, set="sets").get("sets", sets)
    loaded = _load(config, model_dir, edit_config_json, sets, skip_memory_check)
    if not skip_data_check:
        from mtrec.config.check_data import check_input_files
        problems = config_lib.Problems(loaded.source)
        check_input_files(loaded.pipeline, problems)
        problems.raise_errors()
        loaded.warnings.extend(problems.warnings)
    from mtrec.protos import feature_pb2
    from mtrec.config.dynamic_params import describe, is_dynamic
    from mtrec.training.report import model_report
    pipeline = loaded.pipeline
    features = config_lib.all_features(pipeline)
    name = config if isinstance(config, str) else (
        os.path.join(model_dir, "pipeline.config") if config is None else "config")
    lines = [f"{name}: OK", f"  model: {pipeline.model_config.model_class}",
             f"  inputs: {len(pipeline.data_config.input_fields)}, features: {len(features)}"]
    for f in features:
        kind = feature_pb2.FeatureConfig.FeatureType.Name(f.feature_type)
        space = next((f"{key} {value}" for key, value in (
            ("hash_bucket_size", f.hash_bucket_size), ("num_buckets", f.num_buckets),
            ("vocab_list", len(f.vocab_list)), ("boundaries", len(f.boundaries))) if value),
            "vocab_file" if f.vocab_file else "raw values")
        if is_dynamic(f):  # ev_params: its hash_bucket_size / num_buckets are not used
            space = describe(f.ev_params)
        lines.append(f"    {config_lib.feature_name(f)}: {kind} ({space}), "
                     f"embedding_dim {f.embedding_dim}")
    for g in pipeline.model_config.feature_groups:
        lines.append(f"  group {g.group_name} ({feature_pb2.WideOrDeep.Name(g.wide_deep)}): "
                     f"{', '.join(g.feature_names)}")
        lines += ["    " + line for line in _attention_lines(g.sequence_features,
                                                             "sequence_features")]
    lines += ["  " + line for line in _attention_lines(pipeline.model_config.seq_att_groups,
                                                       "seq_att_groups")]
    lines.append("  towers: " + ", ".join(
        f"{t.tower_name}({t.label_name})" for t in config_lib.task_towers(pipeline.model_config)))
    lines += model_report(pipeline)
    lines += [f"  warning: {warning}" for warning in loaded.warnings]
    return lines


def _attention_lines(att_groups, field: str) -> list[str]:
    """One line per seq_att_map of each SeqAttGroupConfig: the target attention its keys
    run over its histories ("key a, b -> hist_seq c, d")."""
    lines = []
    for i, att in enumerate(att_groups):
        name = att.group_name or f"#{i + 1}"
        for m in att.seq_att_map:
            aux = f"; aux_hist_seq {', '.join(m.aux_hist_seq)}" if m.aux_hist_seq else ""
            lines.append(f"{field} {name}: key {', '.join(m.key)} -> hist_seq "
                         f"{', '.join(m.hist_seq)}{aux}")
    return lines


@_logs_progress
def train(config=None, model_dir=None, edit_config_json=None, sets=None,
          skip_memory_check=False, **old_names) -> dict:
    """Train from a config path or PipelineConfig (or the pipeline.config of model_dir);
    resumes from the latest checkpoint in model_dir. Returns the last eval metrics and,
    when training evaluated, "best": the best evaluation's metrics with "metric" (the key
    that picked it) and "checkpoint" (model_dir/best/ckpt-<step>)."""
    sets = _renamed("train", old_names, set="sets").get("sets", sets)
    loaded = _load(config, model_dir, edit_config_json, sets, skip_memory_check)
    from mtrec.training import distribute
    if distribute.task_type() == "evaluator":
        # TF_CONFIG's evaluator task: evaluate the chief's checkpoints as they appear.
        return evaluate(loaded, continuous=True)
    # First: a multi-worker strategy must configure the runtime before other TF work.
    cluster = distribute.make_cluster(loaded.pipeline.train_config)
    import tensorflow as tf
    from mtrec.serving.saved_model import export_saved_model
    from mtrec.training import checkpoints, loop
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
        # Whenever training evaluates, the best checkpoint is kept (model_dir/best/).
        watch = (BestMetric(export_config, pipeline.model_dir)
                 if config_lib.has_eval_data(pipeline) else None)
        if watch is not None and cluster.is_chief:
            checkpoints.sync_best(pipeline.model_dir, watch)

        def after_evaluation(job, result) -> bool:
            """Keep the best checkpoint, export per exporter_type; True stops training."""
            first = watch.name is None
            improved = watch.update(result)
            if first:
                log.info("the best checkpoint is chosen by %s", watch.describe())
            if improved:
                checkpoints.keep_best(pipeline.model_dir, watch.best_step)
                log.info("best %s so far: %.6g at step %d (kept in %s)", watch.name, watch.best,
                         watch.best_step, checkpoints.best_dir(pipeline.model_dir))
            if exporter == "latest" or (exporter == "best" and improved):
                if cluster.coordinator is not None:
                    # The job's variables live on the ps tasks: export what the checkpoint
                    # just written holds, gathered into one process with no cluster.
                    _export_checkpoint(loaded, export_root, "latest")
                else:
                    export_saved_model(job, export_root)
            if watch.should_stop(result["global_step"]):
                log.info("early stopping: %s has not improved by more than %g since step %d "
                         "(max_check_steps %d).", watch.name, watch.min_delta,
                         watch.reference_step, watch.patience)
                return True
            return False

        before = tf.train.latest_checkpoint(pipeline.model_dir)
        result = loop.train(loaded, after_evaluation=after_evaluation if watch else None,
                            cluster=cluster)
        if cluster.is_chief:
            trained = tf.train.latest_checkpoint(pipeline.model_dir) != before
            _export_at_end(loaded, export_root, watch, trained)
            if result and watch is not None and watch.best is not None:
                result = {**result, "best": {**watch.best_record, "metric": watch.name,
                                             "checkpoint": checkpoints.best_checkpoint(
                                                 pipeline.model_dir)}}
                last = result.get(watch.name)
                log.info("best %s=%.6g at step %d | last %s=%s at step %d", watch.name,
                         watch.best, watch.best_step, watch.name,
                         "null" if last is None else f"{last:.6g}", result["global_step"])
    return result


def _export_at_end(loaded, export_root: str, watch, trained: bool) -> None:
    """The export at the end of training: always for exporter_type "final" (of the
    checkpoint export_config.default_checkpoint names); for "latest" and "best" only when
    training left no export of theirs, saying why. An export that already holds that
    checkpoint (a re-run with nothing to train) is kept."""
    from mtrec.serving.saved_model import exported_step, newest_export
    from mtrec.training.checkpoints import checkpoint_step
    pipeline = loaded.pipeline
    exporter = pipeline.export_config.exporter_type
    path, kind, why = _pick_checkpoint(loaded, "latest" if exporter == "latest" else None)
    if exporter == "latest":
        why = "the latest checkpoint, per exporter_type \"latest\""
    wanted_step = checkpoint_step(path)
    existing = newest_export(export_root)
    step = exported_step(existing) if existing else None
    best_known = watch is not None and watch.best is not None
    if existing and (step == wanted_step or (step is None and not trained)
                     or (exporter == "best" and best_known)):
        if not trained:
            log.info("nothing was trained in this run; the export %s%s is kept.", existing,
                     f" (step {step})" if step is not None else "")
        return
    if exporter == "best":
        metric = (watch.name if watch else None) or pipeline.export_config.best_exporter_metric
        reason = (f"best_exporter_metric {metric!r} was never defined (every evaluation "
                  "reported null, e.g. an eval set with one class)" if not best_known else
                  f"{export_root} holds no export of the best step ({watch.best_step})")
        log.warning("exporter_type \"best\": %s; exporting the %s checkpoint (step %s) "
                    "instead.", reason, kind, wanted_step)
    elif exporter == "latest" and trained:
        log.warning("exporter_type \"latest\" exports after each evaluation, and none "
                    "exported step %s (no eval_input_path?); exporting it now.", wanted_step)
    _export_checkpoint(loaded, export_root, path, why)


def _best_note(pipeline, step: int) -> str:
    """"<metric>=<value> " of the evaluation at step in eval_result.txt, if it is there."""
    from mtrec.training.best import BestMetric
    try:
        watch = BestMetric(pipeline.export_config, pipeline.model_dir)
    except MtrecError:
        return ""
    record = next((r for r in reversed(watch.history) if r["global_step"] == step), None)
    value = record.get(watch.name) if record else None
    return f"{watch.name}={value:.6g} " if value is not None else ""


def _pick_checkpoint(loaded, checkpoint=None) -> tuple[str, str, str]:
    """(path, "best" | "latest" | "named", why) of the checkpoint to evaluate or export.

    checkpoint: "best", "latest", a checkpoint path or directory, or None for
    export_config.default_checkpoint ("best" falls back to the latest when training kept no
    best checkpoint: it had no eval set)."""
    import tensorflow as tf
    from mtrec.training.checkpoints import best_checkpoint, checkpoint_step
    pipeline = loaded.pipeline
    model_dir = pipeline.model_dir or ""
    if checkpoint not in (None, "", "best", "latest"):
        path = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
        if not path:
            raise MtrecError(f"no checkpoint found in {checkpoint!r}.")
        return path, "named", "named by --checkpoint"
    choice = checkpoint or pipeline.export_config.default_checkpoint
    setting = ("--checkpoint" if checkpoint else
               f"export_config.default_checkpoint {choice!r}")
    fallback = ""
    if choice == "best":
        path = best_checkpoint(model_dir)
        if path:
            step = checkpoint_step(path)
            return path, "best", (f"the best checkpoint: {_best_note(pipeline, step)}at step "
                                  f"{step}, per {setting}; --checkpoint latest takes the latest")
        if checkpoint:
            raise MtrecError(f"{model_dir!r} holds no best checkpoint (training keeps one in "
                             "model_dir/best/ when it evaluates: set eval_input_path); use "
                             "--checkpoint latest.")
        fallback = " (no best checkpoint was kept: training had no eval set)"
    path = tf.train.latest_checkpoint(model_dir)
    if not path:
        raise MtrecError(f"no checkpoint found in {model_dir!r}; train first or pass "
                         "--checkpoint.")
    return path, "latest", f"the latest checkpoint, per {setting}{fallback}"


def _restored_job(loaded, checkpoint=None):
    """(job with the weights of the checkpoint _pick_checkpoint chooses, its path)."""
    job, path, _ = _restored(loaded, checkpoint)
    return job, path


def _restored(loaded, checkpoint=None):
    """(job with the weights of the checkpoint _pick_checkpoint chooses, path, why)."""
    from mtrec.training.checkpoints import restore_checkpoint
    from mtrec.training.job import Job
    pipeline = loaded.pipeline
    path, kind, why = _pick_checkpoint(loaded, checkpoint)
    job = Job.create(pipeline, for_training=False)
    job.build()
    for _ in range(5):
        try:
            restore_checkpoint(job.checkpoint, path, partial=True)
            return job, path, why
        except TrainingError:
            # A trainer running on this model_dir may have deleted the checkpoint we found
            # (keep_checkpoint_max, or a new best replacing the old) in between: pick again.
            if kind == "named" or os.path.exists(path + ".index"):
                raise
            newer, kind, why = _pick_checkpoint(loaded, kind)
            if newer == path:
                raise
            log.info("%s was removed meanwhile; using %s", path, newer)
            path = newer
    raise MtrecError(f"checkpoints in {pipeline.model_dir!r} changed faster than they could "
                     "be read; try again.")


@_logs_progress
def evaluate(config=None, model_dir=None, eval_input_path=None, checkpoint=None,
             edit_config_json=None, sets=None, continuous=False, timeout=None,
             skip_memory_check=False, **old_names) -> dict:
    """Evaluate a checkpoint; prints nothing, returns {metric: value, global_step: n,
    checkpoint: path}.

    checkpoint (formerly checkpoint_path): "best", "latest", a checkpoint or a directory of
    them; None: export_config.default_checkpoint (the best one training kept, else the
    latest). continuous: evaluate every new checkpoint in model_dir as training writes it,
    until one at train_config.num_steps is evaluated or none appears for `timeout` seconds."""
    old = _renamed("evaluate", old_names, checkpoint_path="checkpoint", set="sets")
    checkpoint, sets = old.get("checkpoint", checkpoint), old.get("sets", sets)
    loaded = _load(config, model_dir, edit_config_json, sets, skip_memory_check)
    pipeline = loaded.pipeline
    if eval_input_path:
        pipeline.eval_input_path = eval_input_path
    from mtrec.data.reader import expand_paths, input_parts
    from mtrec.training import evaluation
    parts = None if eval_input_path else input_parts(pipeline, "eval")  # binary_eval_input
    if not pipeline.eval_input_path and not parts:
        raise MtrecError("no eval data: set eval_input_path or pass --eval_input_path.")
    files = parts or expand_paths(pipeline.eval_input_path, "eval_input_path")
    if continuous:
        if not pipeline.model_dir:
            raise MtrecError("evaluate --continuous needs a model_dir to watch.")
        return evaluation.evaluate_continuously(loaded, files, timeout)
    job, path, why = _restored(loaded, checkpoint)
    log.info("evaluating %s (%s)", path, why)
    return evaluation.evaluate_job(job, files, pipeline.model_dir, checkpoint=path)


def _export_checkpoint(loaded, export_dir: str, checkpoint, why=None) -> str:
    from mtrec.serving.saved_model import export_saved_model
    job, path, picked = _restored(loaded, checkpoint)
    log.info("exporting %s (%s) to %s", path, why or picked, export_dir)
    return export_saved_model(job, export_dir)


@_logs_progress
def export(config=None, export_dir=None, model_dir=None, checkpoint=None,
           edit_config_json=None, sets=None, skip_memory_check=False, **old_names) -> str:
    """Export a SavedModel to export_dir/<unix_ts>/; returns that path. checkpoint
    (formerly checkpoint_path) as evaluate's (default: export_config.default_checkpoint)."""
    old = _renamed("export", old_names, checkpoint_path="checkpoint", set="sets")
    checkpoint, sets = old.get("checkpoint", checkpoint), old.get("sets", sets)
    if not export_dir:
        raise MtrecError("pass --export_dir.")
    loaded = _load(config, model_dir, edit_config_json, sets, skip_memory_check)
    return _export_checkpoint(loaded, export_dir, checkpoint)


@_logs_progress
def predict(saved_model, input=None, output=None, reserved_cols=None, output_cols=None,
            batch_size=1024, **old_names) -> int:
    """Score the rows of `input` (files in the training data's format) with an exported
    SavedModel into `output` (CSV with a header); returns the number of rows written.
    reserved_cols / output_cols: lists of names (the CLI's comma-separated flags).
    input_path / output_path: the former names of input / output."""
    old = _renamed("predict", old_names, input_path="input", output_path="output")
    input, output = old.get("input", input), old.get("output", output)  # noqa: A001
    if not input or not output:
        raise MtrecError("pass --input and --output.")
    from mtrec.serving import batch_predict
    return batch_predict.predict(saved_model, input, output, reserved_cols, output_cols,
                                 batch_size)
