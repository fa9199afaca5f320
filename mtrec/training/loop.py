"""The training loop: estimator-style semantics on a custom TF2 loop.

Several steps run inside one `tf.function` call (`steps_per_loop`); every
`save_checkpoints_steps` a checkpoint is written and evaluated; training resumes
from the latest checkpoint in model_dir at its exact step.
"""
import contextlib
import dataclasses
import json
import logging
import math
import os
import time

import keras
import tensorflow as tf

from mtrec import config as config_lib
from mtrec import utils
from mtrec.data.reader import (BAD_ROWS_KEY, check_labels, expand_paths, field_dtype,
                               make_reader)
from mtrec.errors import DataError, TrainingError
from mtrec.features.feature import FeatureSet
from mtrec.models.base import CLASSIFICATION, tower_loss_type
from mtrec.models.registry import build_model
from mtrec.training import distribute
from mtrec.training.metrics import Evaluator
from mtrec.training.optimizers import (SparseOptimizer, build_dense_optimizer,
                                       optimizer_configs)

log = logging.getLogger("mtrec")


def side_columns(pipeline) -> list[str]:
    """Columns that are not model inputs but losses and metrics need."""
    names = list(config_lib.label_names(pipeline))
    if pipeline.data_config.sample_weight:
        names.append(pipeline.data_config.sample_weight)
    metric_sets = [pipeline.eval_config.metrics_set] + [
        t.metrics_set for t in config_lib.task_towers(pipeline.model_config)]
    for metrics in metric_sets:
        for metric in metrics:
            if metric.WhichOneof("metric") == "gauc":
                names.append(metric.gauc.uid_field)
    return list(dict.fromkeys(names))


@dataclasses.dataclass
class Job:
    """Everything built from one config: features, model, optimizers, checkpoint."""
    pipeline: object
    feature_set: FeatureSet
    model: object
    checkpoint: tf.train.Checkpoint | None
    global_step: tf.Variable
    dense_optimizer: object = None
    sparse_optimizer: object = None
    loss_names: list = dataclasses.field(default_factory=list)
    # (files, num_examples) -> _EvalPass: built once, so later evaluations skip the tracing.
    eval_passes: dict = dataclasses.field(default_factory=dict)
    # directory -> summary writer: one events file per directory, not one per evaluation.
    writers: dict = dataclasses.field(default_factory=dict)

    def summary_writer(self, directory: str):
        if directory not in self.writers:
            self.writers[directory] = tf.summary.create_file_writer(directory)
        return self.writers[directory]

    @classmethod
    def create(cls, pipeline, for_training: bool):
        feature_set = FeatureSet(pipeline)
        model = build_model(pipeline, feature_set)
        # Under a strategy every replica adds 1 per step; the first replica's add counts.
        global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        dense = sparse = None
        if for_training:
            dense_config, sparse_config = optimizer_configs(pipeline.train_config)
            dense = build_dense_optimizer(dense_config)
            sparse = SparseOptimizer(sparse_config)
        return cls(pipeline, feature_set, model, None, global_step, dense, sparse)

    def label_classes(self) -> dict:
        """{label column: number of classes} of every classification tower (2 if binary)."""
        return {t.label_name: max(t.num_class, 2)
                for t in self.model.tower_configs if tower_loss_type(t) == CLASSIFICATION}

    def split(self, columns: dict):
        """A batch of typed columns -> (preprocessed features, side columns)."""
        side = {name: columns[name] for name in side_columns(self.pipeline)}
        return self.feature_set.preprocess(columns), side

    def build(self) -> None:
        """Create every variable (model, optimizer slots) by running one dummy row."""
        columns = {f.input_name: tf.zeros([1], field_dtype(f))
                   for f in self.pipeline.data_config.input_fields}
        features, side = self.split(columns)
        outputs = self.model(features, training=False)
        # Names of the loss terms, in the order the training step stacks them.
        self.loss_names = list(self.model.weighted_losses(outputs, side))
        parts = {"model": _VariableMap(self.model.checkpoint_variables()),
                 "global_step": self.global_step}
        if self.dense_optimizer is not None:
            self.dense_optimizer.build(self.model.trainable_variables)
            self.sparse_optimizer.build(self.model.feature_groups.table_variables)
            parts.update(dense_optimizer=self.dense_optimizer,
                         sparse_optimizer=self.sparse_optimizer)
        self.checkpoint = tf.train.Checkpoint(**parts)


class _VariableMap(tf.Module):
    """Checkpoint node holding {path: variable}."""

    def __init__(self, variables: dict):
        super().__init__(name="variables")
        self.variables_by_path = variables


def _dataset(job: Job, files, training: bool, row_shard=None) -> tf.data.Dataset:
    """row_shard: (number of input pipelines, this one's index) to read every n-th row."""
    data = job.pipeline.data_config
    reader = make_reader(data, files)
    if training:
        kwargs = {"shard": row_shard} if row_shard else {}
        ds = reader.dataset(data.batch_size, data.num_epochs or None, data.shuffle,
                            data.shuffle_buffer_size,
                            seed=job.pipeline.train_config.seed or None, **kwargs)
    else:
        ds = reader.dataset(data.eval_batch_size or data.batch_size, 1, False)

    label_classes = job.label_classes()

    def split(columns):
        bad = columns.pop(BAD_ROWS_KEY, tf.constant(0, tf.int64))
        columns, bad_labels = check_labels(columns, label_classes, bool(data.ignore_error))
        features, side = job.split(columns)
        return features, side, bad + bad_labels

    parallel = data.num_parallel_calls or tf.data.AUTOTUNE
    ds = ds.map(split, num_parallel_calls=parallel)
    return ds.prefetch(data.prefetch_size or tf.data.AUTOTUNE), reader


def _data_error(error, reader, files, what, job=None) -> DataError:
    where = reader.locate_error(job.label_classes() if job is not None else None)
    hint = " Fix the row, or set data_config.ignore_error: true to skip bad rows."
    if where:
        return DataError(f"{where}.{hint}")
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataError(f"cannot read {what} data ({', '.join(files[:3])}"
                     f"{'...' if len(files) > 3 else ''}): {message}")


class _Progress:
    """One log line per loop: step, loss per tower, examples/sec, ETA."""

    def __init__(self, num_steps, batch_size, start_step):
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.last_time = time.time()
        self.last_step = start_step
        self.rate = 0.0

    def line(self, step, losses: dict, total: float) -> tuple[str, float]:
        now = time.time()
        rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step, self.rate = now, step, rate
        parts = [f"step {step}" + (f"/{self.num_steps}" if self.num_steps else "")]
        parts.append("loss " + " ".join(f"{k}={v:.5f}" for k, v in losses.items())
                     + f" total={total:.5f}")
        parts.append(f"{rate:,.0f} examples/s")
        if self.num_steps and rate > 0:
            eta = (self.num_steps - step) * self.batch_size / rate
            parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        return " | ".join(parts), rate


def _check_model_dir(model_dir: str) -> None:
    if not model_dir:
        raise TrainingError("no model_dir: set it in the config or pass --model_dir.")
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise TrainingError(f"model_dir {model_dir!r} is not writable: {e.strerror}.") from None


def train(loaded, after_evaluation=None, cluster=None) -> dict:
    """Train per the config; return the last evaluation's metrics.

    after_evaluation(job, result), if given, runs after every evaluation (the API exports
    "latest"/"best" there); when it returns True, training stops (early stopping).
    cluster: the distribute.Cluster (strategy and role) made from train_distribute; only
    its chief evaluates and writes to model_dir, other workers write to a scratch dir."""
    pipeline = loaded.pipeline
    train_config, data = pipeline.train_config, pipeline.data_config
    if cluster is None:
        cluster = distribute.make_cluster(train_config)
    model_dir = pipeline.model_dir
    write_dir = model_dir if cluster.is_chief else cluster.scratch_dir()
    _check_model_dir(write_dir)
    for warning in loaded.warnings:
        log.warning(warning)
    train_files = expand_paths(pipeline.train_input_path, "train_input_path")
    # With an evaluator task in TF_CONFIG, it evaluates the checkpoints, not the chief.
    eval_files = (expand_paths(pipeline.eval_input_path, "eval_input_path")
                  if pipeline.eval_input_path and cluster.is_chief
                  and not cluster.external_evaluator else None)

    if train_config.seed:
        keras.utils.set_random_seed(train_config.seed)
    with _scope(cluster):
        job = Job.create(pipeline, for_training=True)
        dataset, reader = _train_dataset(job, train_files, cluster)
        job.build()

    manager = tf.train.CheckpointManager(
        job.checkpoint, write_dir, step_counter=job.global_step,
        max_to_keep=train_config.keep_checkpoint_max if cluster.is_chief else 1)
    # Every worker resumes from the chief's latest checkpoint, so all agree on the step.
    _restore(job, tf.train.latest_checkpoint(model_dir), train_config.fine_tune_checkpoint)
    if cluster.is_chief:
        utils.atomic_write(os.path.join(model_dir, "pipeline.config"),
                           config_lib.to_text(pipeline))

    num_steps = train_config.num_steps
    start = int(job.global_step.numpy())
    if num_steps and start >= num_steps:
        log.info("model_dir already holds a checkpoint at step %d >= num_steps %d; nothing to "
                 "train.", start, num_steps)
    steps_per_loop = train_config.steps_per_loop or min(train_config.log_step_count_steps, 100)
    if cluster.strategy is not None:
        # Collectives get their instance keys once per tf.function call, and one key's
        # all-gather must keep its shape; the sparse (IndexedSlices) table gradients change
        # shape with every batch of tags and at an epoch's short batch: one step per call.
        steps_per_loop = 1
    train_loop = _make_train_loop(job, train_config, cluster.strategy)
    iterator = iter(dataset)
    writer = tf.summary.create_file_writer(os.path.join(write_dir, "train"))
    # Examples per step: the global batch, per-replica batch_size times the replicas.
    progress = _Progress(num_steps, data.batch_size * cluster.num_replicas, start)
    loss_names = job.loss_names
    eval_result, last_saved, last_saved_time, bad_rows = {}, start, time.time(), 0
    step = start
    interval = [0.0, 0.0, 0]  # loss sums, total loss sum, steps since the last line/summary
    log.info("training %s from step %d%s", pipeline.model_config.model_class, start,
             f" to {num_steps}" if num_steps else " until the data ends")
    while not num_steps or step < num_steps:
        n = _next_chunk(step, num_steps, steps_per_loop, train_config)
        try:
            done, loss_sums, total_sum, bad, finite = train_loop(iterator, tf.constant(n))
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            raise _data_error(e, reader[0], train_files, "training", job) from None
        except _PEER_ERRORS as e:
            if cluster.strategy is None:
                raise
            raise _peer_error(e, step, model_dir) from None
        done = int(done)
        bad_rows += int(bad)
        step = int(job.global_step.numpy())
        if not bool(finite):
            losses = {k: float(v) for k, v in zip(loss_names, loss_sums.numpy())}
            culprits = ([k for k, v in losses.items() if not math.isfinite(v)]
                        or ["the gradients or the regularization"])
            raise TrainingError(f"loss became non-finite at step {step}: {', '.join(culprits)} "
                                f"(loss sums of this log interval {losses}); training stopped "
                                f"and nothing was saved after step {last_saved}, so the last "
                                f"good checkpoint in {model_dir} is kept. Lower the learning "
                                "rate, set gradient_clipping_by_norm, or check the labels "
                                "and raw values.")
        if done:
            # Losses are averaged over every step since the last line or summary (several
            # calls of train_loop when they run fewer steps, as under a strategy).
            interval[0] += loss_sums.numpy()
            interval[1] += float(total_sum)
            interval[2] += done
            losses = {k: float(v) / interval[2] for k, v in zip(loss_names, interval[0])}
            total = interval[1] / interval[2]
            last_chunk = done < n or step == num_steps
            logged = step % train_config.log_step_count_steps == 0 or last_chunk
            if logged:
                line, rate = progress.line(step, losses, total)
                log.info(line + (f" | {bad_rows} bad rows skipped" if bad_rows else ""))
            summary_every = train_config.save_summary_steps or train_config.log_step_count_steps
            if step % summary_every == 0 or last_chunk:
                _write_train_summaries(writer, job, step, losses, total, progress.rate)
                logged = True
            if logged:
                interval = [0.0, 0.0, 0]
        if done < n and step == start:
            raise DataError(f"train_input_path {pipeline.train_input_path!r} holds no rows.")
        if done < n:
            log.info("training data exhausted after %d epoch(s) at step %d.", data.num_epochs, step)
            break
        due_by_time = bool(train_config.save_checkpoints_secs and
                           time.time() - last_saved_time >= train_config.save_checkpoints_secs)
        if train_config.save_checkpoints_secs and cluster.num_workers > 1:
            # Clocks differ: all workers save (and agree below) at the same step.
            due_by_time = _any_worker(cluster.strategy, due_by_time, step, model_dir)
        if (step % train_config.save_checkpoints_steps == 0 or due_by_time) and step != last_saved:
            _save(job, manager, step, last_saved)
            last_saved, last_saved_time = step, time.time()
            if eval_files:
                eval_result, stop = _evaluate(job, eval_files, model_dir, after_evaluation)
            else:
                stop = False
            # Only the chief evaluates: every worker must stop at the same step.
            if cluster.num_workers > 1:
                stop = _any_worker(cluster.strategy, stop, step, model_dir)
            if stop:
                log.info("early stop at step %d: %s has not improved for %d steps.", step,
                         pipeline.export_config.best_exporter_metric,
                         pipeline.export_config.max_check_steps)
                break
    if step != last_saved:
        _save(job, manager, step, last_saved)
        if eval_files:
            eval_result, _ = _evaluate(job, eval_files, model_dir, after_evaluation)
    elif eval_files and not eval_result and step > start:
        eval_result, _ = _evaluate(job, eval_files, model_dir, after_evaluation)
    writer.flush()
    if bad_rows:
        log.warning("%d malformed rows were skipped (ignore_error: true).", bad_rows)
    return eval_result


def _scope(cluster):
    """The strategy's scope (variables become mirrored), or nothing under NoStrategy."""
    return cluster.strategy.scope() if cluster.strategy is not None else contextlib.nullcontext()


def _train_dataset(job: Job, files, cluster):
    """(dataset, [reader]) of the training data; under a strategy a distributed dataset
    whose input pipelines (one per worker) read their own shard of the files, or of the
    rows when there are fewer files than workers. Each replica takes batch_size rows, so
    a step trains on batch_size x replicas rows."""
    if cluster.strategy is None:
        dataset, reader = _dataset(job, files, training=True)
        return dataset, [reader]
    readers = []

    def make(context: tf.distribute.InputContext):
        n, i = context.num_input_pipelines, context.input_pipeline_id
        mine, by_rows = distribute.shard_files(files, n, i)
        if by_rows and job.pipeline.data_config.input_type != 0:
            raise DataError(f"{len(files)} Parquet file(s) for {n} workers: give at least "
                            "one file per worker (rows are split only in CSV input).")
        if n > 1:
            log.info("input pipeline %d of %d reads %s", i, n,
                     f"every {n}-th row of {len(files)} file(s)" if by_rows
                     else f"{len(mine)} of {len(files)} files")
        dataset, reader = _dataset(job, mine, training=True, row_shard=(n, i) if by_rows else None)
        readers.append(reader)
        return dataset

    # Inputs stay in host memory: string columns cannot live on an accelerator.
    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    dataset = cluster.strategy.distribute_datasets_from_function(make, options)
    return dataset, readers


# What a collective raises when another worker died or cannot be reached.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError)


def _any_worker(strategy, flag: bool, step: int, model_dir: str) -> bool:
    """Whether flag is true on any worker (a collective: every worker must call it).
    A worker that died meanwhile is the same clear error as in a train step."""
    try:
        value = strategy.experimental_distribute_values_from_function(
            lambda _: tf.constant(1.0 if flag else 0.0))
        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)) > 0
    except _PEER_ERRORS as e:
        raise _peer_error(e, step, model_dir) from None


def _peer_error(error, step: int, model_dir: str) -> TrainingError:
    first = (str(error).splitlines() or [type(error).__name__])[0][:300]
    return TrainingError(f"distributed training stopped near step {step}: another worker "
                         f"is unreachable or failed ({first}). Restart every worker with the "
                         f"same TF_CONFIG: training resumes from the chief's latest checkpoint "
                         f"in {model_dir}.")


def _save(job: Job, manager, step: int, last_saved: int) -> None:
    """Save a checkpoint; a failed write (disk full, directory removed) is one clear error.
    TensorFlow writes the files under temporary names and updates the `checkpoint` index
    last, so the previous checkpoint stays the latest and intact. Embedding rows are
    brought current first (dense_moments), so every checkpoint is saved flushed."""
    job.sparse_optimizer.flush(job.model.feature_groups.table_variables)
    try:
        manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise TrainingError(f"could not write the checkpoint of step {step} to "
                            f"{manager.directory!r}: {reason[:300]}. Is the disk full? The "
                            f"checkpoint of step {last_saved} is intact; free space and run "
                            "the same command again to resume.") from None


def _write_train_summaries(writer, job, step, losses, total, rate):
    with writer.as_default(step=step):
        for name, value in losses.items():
            tf.summary.scalar(f"loss/{name}", value)
        tf.summary.scalar("loss/total", total)
        tf.summary.scalar("examples_per_sec", rate)
        tf.summary.scalar("learning_rate", float(job.sparse_optimizer.learning_rate(step)))


def _evaluate(job, files, model_dir, after_evaluation) -> tuple[dict, bool]:
    """Evaluate; (metrics, whether after_evaluation asks to stop training)."""
    result = evaluate_job(job, files, model_dir)
    stop = after_evaluation(job, result) if after_evaluation is not None else False
    return result, bool(stop)


def _next_chunk(step, num_steps, steps_per_loop, train_config) -> int:
    """Steps until the next log line, checkpoint or the end, capped by steps_per_loop."""
    bounds = [steps_per_loop]
    for every in (train_config.log_step_count_steps, train_config.save_checkpoints_steps,
                  train_config.save_summary_steps):
        if every:
            bounds.append(every - step % every)
    if num_steps:
        bounds.append(num_steps - step)
    return max(1, min(bounds))


def _make_train_loop(job: Job, train_config, strategy=None):
    """tf.function(iterator, n) running up to n steps -> (steps done, loss sums, total loss
    sum, bad rows, all losses finite). Under a strategy each step is `strategy.run` of
    the same step on every replica, with losses averaged over the replicas."""
    model = job.model
    tables = model.feature_groups.table_variables
    clip = train_config.gradient_clipping_by_norm
    num_losses = len(job.loss_names)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    def step_fn(features, side):
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            losses = model.weighted_losses(outputs, side)
            total = tf.add_n(list(losses.values()))
            if model.losses:
                total += tf.add_n(model.losses)
            # Gradients are summed over replicas: each contributes 1/replicas of the mean.
            scaled = total / replicas if replicas > 1 else total
        dense = model.trainable_variables
        grads = tape.gradient(scaled, tables + dense)
        # A NaN raw value can leave the loss finite (on AVX-512, TF's fused CPU kernels
        # turn it into 0 in the forward pass) but not the gradients, so check those too:
        # the step then reports a non-finite total like a NaN loss.
        dense_grads = [g for g in grads[len(tables):] if g is not None]
        if dense_grads:
            total = tf.where(tf.math.is_finite(tf.linalg.global_norm(dense_grads)), total,
                             float("nan"))
        reduced = False
        if clip > 0:
            if replicas > 1:
                # Clip the global gradient: sum over replicas first (the optimizers then
                # skip their own sum; Keras always sums, so it gets 1/replicas of it).
                context = tf.distribute.get_replica_context()
                present = [i for i, g in enumerate(grads) if g is not None]
                summed = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                            [grads[i] for i in present])
                for i, g in zip(present, summed):
                    grads[i] = g
                reduced = True
            grads, _ = tf.clip_by_global_norm(grads, clip)
            if reduced:
                grads = grads[:len(tables)] + [g / replicas if g is not None else None
                                               for g in grads[len(tables):]]
        job.sparse_optimizer.apply(zip(grads[:len(tables)], tables), reduced=reduced)
        job.dense_optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads[len(tables):], dense) if g is not None])
        job.global_step.assign_add(1)
        return tf.stack(list(losses.values())), total

    if strategy is None:
        run = step_fn
        count_bad = lambda bad: bad  # noqa: E731
    else:
        mean = tf.distribute.ReduceOp.MEAN

        def run(features, side):
            tower_losses, total = strategy.run(step_fn, args=(features, side))
            return (strategy.reduce(mean, tower_losses, axis=None),
                    strategy.reduce(mean, total, axis=None))

        def count_bad(bad):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)

    @tf.function
    def train_loop(iterator, n):
        loss_sums = tf.zeros([num_losses])
        total_sum = tf.constant(0.0)
        bad_rows = tf.constant(0, tf.int64)
        done = tf.constant(0)
        finite = tf.constant(True)
        for _ in tf.range(n):
            element = iterator.get_next_as_optional()
            if not element.has_value():
                break
            features, side, bad = element.get_value()
            tower_losses, total = run(features, side)
            loss_sums += tower_losses
            total_sum += total
            bad_rows += count_bad(bad)
            done += 1
            if not tf.math.is_finite(total):
                finite = tf.constant(False)
                break
        return done, loss_sums, total_sum, bad_rows, finite

    return train_loop


def restore_checkpoint(checkpoint, path: str, partial: bool = False) -> None:
    """Restore, turning a checkpoint of a different model into one clear error."""
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        detail = str(e).splitlines()[0][:300]
        raise TrainingError(f"checkpoint {path} does not fit this config's model (was the model "
                            f"or a feature changed?): {detail}. Use a new model_dir, or the "
                            "config the checkpoint was trained with.") from None


def _restore(job: Job, latest: str | None, fine_tune_checkpoint: str) -> None:
    if latest:
        restore_checkpoint(job.checkpoint, latest)
        job.sparse_optimizer.restored()
        log.info("resumed from %s (step %d)", latest, int(job.global_step.numpy()))
    elif fine_tune_checkpoint:
        path = fine_tune_checkpoint
        if os.path.isdir(path):
            path = tf.train.latest_checkpoint(path)
        if not path:
            raise TrainingError(f"fine_tune_checkpoint {fine_tune_checkpoint!r} holds no "
                                "checkpoint.")
        tf.train.Checkpoint(model=job.checkpoint.model).restore(path).expect_partial()
        log.info("initialised weights from %s", path)


def evaluate_continuously(loaded, files, timeout=None) -> dict:
    """Evaluate each new checkpoint of model_dir (the evaluator's job while others train)
    until the one at num_steps; returns the last metrics ({} if none appeared in time)."""
    pipeline = loaded.pipeline
    model_dir, num_steps = pipeline.model_dir, pipeline.train_config.num_steps
    job = Job.create(pipeline, for_training=False)
    job.build()
    result = {}
    log.info("waiting for checkpoints in %s%s", model_dir,
             f" (up to {timeout:g} s between them)" if timeout else "")
    for path in tf.train.checkpoints_iterator(model_dir, min_interval_secs=1, timeout=timeout):
        try:
            restore_checkpoint(job.checkpoint, path, partial=True)
        except TrainingError:
            if os.path.exists(path + ".index"):
                raise
            continue  # removed by keep_checkpoint_max before we read it; wait for the next
        log.info("evaluating %s", path)
        result = evaluate_job(job, files, model_dir)
        if num_steps and result["global_step"] >= num_steps:
            break
    if not result:
        log.warning("no checkpoint appeared in %s within %s s.", model_dir, timeout)
    return result


class _EvalPass:
    """The eval dataset, metrics and traced eval step of one (files, num_examples); run()
    makes one pass with the job's current weights."""

    def __init__(self, job: Job, files, num_examples):
        self.job, self.files = job, files
        self.dataset, self.reader = _dataset(job, files, training=False)
        if num_examples:
            data_config = job.pipeline.data_config
            batch = data_config.eval_batch_size or data_config.batch_size
            self.dataset = self.dataset.take(-(-num_examples // batch))
        self.evaluator = None  # built from the first batch's outputs
        features_spec, side_spec, _ = self.dataset.element_spec

        # A fixed signature: ragged bags vary in shape per batch and would retrace.
        @tf.function(input_signature=[features_spec, side_spec], autograph=False)
        def eval_step(features, side):
            outputs = job.model(features, training=False)
            return self.evaluator.update(outputs, side, job.model.domain_ids(features))

        self.eval_step = eval_step

    def run(self) -> tuple[dict, int]:
        """(metrics, rows read)."""
        job, rows = self.job, 0
        if self.evaluator is not None:
            self.evaluator.reset()
        try:
            for features, side, _ in self.dataset:
                if self.evaluator is None:
                    outputs = job.model(features, training=False)
                    self.evaluator = Evaluator(job.model, job.pipeline.eval_config, outputs,
                                               side, job.model.domain_names)
                self.evaluator.collect(self.eval_step(features, side))
                rows += int(tf.shape(next(iter(side.values())))[0])
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            raise _data_error(e, self.reader, self.files, "evaluation", job) from None
        if not rows:
            raise DataError(f"eval data {', '.join(self.files)} holds no rows.")
        return self.evaluator.results(), rows


def evaluate_job(job: Job, files, model_dir, num_examples=None) -> dict:
    """Evaluate the job's current weights on files; log, summarise and append the result."""
    num_examples = job.pipeline.eval_config.num_examples if num_examples is None else num_examples
    key = (tuple(files), num_examples)
    if key not in job.eval_passes:
        job.eval_passes[key] = _EvalPass(job, files, num_examples)
    results, rows = job.eval_passes[key].run()
    step = int(job.global_step.numpy())
    record = {**results, "global_step": step, "num_examples": rows}
    log.info("eval at step %d on %d rows: %s", step, rows,
             " ".join(f"{k}={'null' if v is None else f'{v:.5f}'}" for k, v in results.items()))
    if model_dir:
        utils.append_line(os.path.join(model_dir, "eval_result.txt"), json.dumps(record))
        writer = job.summary_writer(os.path.join(model_dir, "eval"))
        with writer.as_default(step=step):
            for name, value in results.items():
                if value is not None:
                    tf.summary.scalar(name, value)
        writer.flush()
    return record
