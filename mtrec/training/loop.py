"""The training driver: estimator-style semantics on a custom TF2 loop.

Several steps run inside one `tf.function` call (`steps_per_loop`, see step.py); every
`save_checkpoints_steps` a checkpoint is written and evaluated; training resumes from
the latest checkpoint in model_dir at its exact step.
"""
import contextlib
import logging
import math
import os
import time

import keras
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.config import check_train
from mtrec.data import parquet
from mtrec.errors import TrainingError
from mtrec.features.dynamic import StatsWindow
from mtrec.training import (checkpoints, distribute, inputs, precision, step as step_lib,
                            storage)
from mtrec.training.evaluation import evaluate_job
from mtrec.training.job import Job
from mtrec.training.online import OnlineEvaluation

log = logging.getLogger("mtrec")


def train(loaded, after_evaluation=None, cluster=None) -> dict:
    """Train per the config; return the last evaluation's metrics.

    after_evaluation(job, result), if given, runs after every evaluation (the API keeps the
    best checkpoint and exports "latest"/"best" there); when it returns True, training
    stops (early stopping).
    cluster: the distribute.Cluster (strategy and role) made from train_distribute; only
    its chief evaluates and writes to model_dir, other workers write to a scratch dir."""
    pipeline = loaded.pipeline
    train_config = pipeline.train_config
    if cluster is None:
        cluster = distribute.make_cluster(train_config)
    model_dir = pipeline.model_dir
    write_dir = model_dir if cluster.is_chief else cluster.scratch_dir()
    storage.check_model_dir(write_dir)
    for warning in loaded.warnings:
        log.warning(warning)
    train_files, eval_files = inputs.input_files(pipeline, cluster)
    job, dataset, readers = _build(pipeline, train_files, cluster)

    manager = checkpoints.make_manager(
        job, write_dir, train_config.keep_checkpoint_max if cluster.is_chief else 1)
    # Every worker resumes from the chief's latest checkpoint, so all agree on the step.
    checkpoints.restore(job, tf.train.latest_checkpoint(model_dir),
                        train_config.fine_tune_checkpoint)
    if cluster.is_chief:
        storage.atomic_write(os.path.join(model_dir, "pipeline.config"),
                             config_lib.to_text(pipeline))

    num_steps = train_config.num_steps
    start = step = int(job.global_step.numpy())
    if num_steps and start >= num_steps:
        log.info("model_dir already holds a checkpoint at step %d >= num_steps %d; nothing to "
                 "train.", start, num_steps)
        return {}
    steps_per_loop = step_lib.max_steps_per_call(train_config, cluster.strategy)
    # eval_config.eval_online: the chief's metrics of its training batches.
    online = (OnlineEvaluation(job) if pipeline.eval_config.eval_online and cluster.is_chief
              else None)
    run_steps = step_lib.make_runner(job, train_config, cluster, online)
    iterator = iter(dataset)
    # Examples per step: the global batch, per-replica batch_size times the replicas.
    progress = _Progress(job, write_dir, pipeline.data_config.batch_size * cluster.num_replicas,
                         start, online)
    saver = _Saver(job, manager, cluster, eval_files, after_evaluation, start)
    stop_signal = _StopSignal(train_config, cluster, model_dir)
    threads = [tf.config.threading.get_inter_op_parallelism_threads(),
               tf.config.threading.get_intra_op_parallelism_threads()]
    log.info("training %s from step %d%s (TensorFlow threads: %s inter-op, %s intra-op)",
             pipeline.model_config.model_class, start,
             f" to {num_steps}" if num_steps else " until the data ends",
             *[n or "default" for n in threads])
    # A lost worker or ps may surface in a step, a checkpoint or an evaluation.
    with _lost_peers(cluster, job, lambda: step):
        while not num_steps or step < num_steps:
            n = step_lib.next_chunk(step, num_steps, steps_per_loop, train_config)
            if step == start:  # the first call traces: one step, so _Progress times past it
                n = 1
            with _clear_errors(job, readers, train_files):
                done, loss_sums, total_sum, bad, finite, *seen = run_steps(iterator, n)
                if online is not None:
                    online.add(seen[0])
            done, step = int(done), int(job.global_step.numpy())
            if not bool(finite):
                raise _non_finite_error(job, loss_sums, step, saver.last_saved)
            progress.add(step, done, loss_sums, total_sum, bad,
                         last_chunk=done < n or step == num_steps)
            if done < n:  # the data ended before the chunk did
                if step == start:
                    raise inputs.no_rows_error(pipeline.train_input_path, readers[0])
                log.info("training data exhausted after %d epoch(s) at step %d.",
                         pipeline.data_config.num_epochs, step)
                break
            if saver.due(step) and saver.save_and_evaluate(step):
                log.info("early stop at step %d.", step)
                break
            if stop_signal.stop(step):
                break
        saver.finish(step, start)
        if online is not None:
            online.finish(model_dir, step)
    progress.close()
    return saver.eval_result


def _build(pipeline, train_files, cluster):
    """(job with every variable created, training dataset, its readers), under the
    strategy's scope so that variables and inputs are distributed."""
    if pipeline.train_config.seed:
        keras.utils.set_random_seed(pipeline.train_config.seed)
    parquet.keep_freed_heap(pipeline.data_config)  # before TensorFlow's threads start
    # Layers built here take train_config.mixed_precision's dtype policy.
    with cluster.scope(), precision.policy_scope(pipeline.train_config):
        job = Job.create(pipeline, for_training=True)
        dataset, readers = inputs.train_dataset(job, train_files, cluster)
        job.build()
    if cluster.coordinator is not None:
        distribute.log_placement(job.model.feature_groups.table_variables,
                                 job.model.trainable_variables)
    return job, dataset, readers


@contextlib.contextmanager
def _clear_errors(job: Job, readers: list, files):
    """A bad row during a chunk of steps -> one clear error."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError) as e:
        raise inputs.data_error(e, readers[0], files, "training", job) from None


@contextlib.contextmanager
def _lost_peers(cluster, job: Job, current_step):
    """A lost worker or ps (under a strategy) -> one clear error saying how to resume."""
    try:
        yield
    except distribute.PEER_ERRORS as e:
        if cluster.strategy is None:
            raise
        raise distribute.peer_error(e, current_step(), job.pipeline.model_dir,
                                    parameter_servers=cluster.coordinator is not None) from None


def _non_finite_error(job: Job, loss_sums, step: int, last_saved: int) -> TrainingError:
    losses = {k: float(v) for k, v in zip(job.loss_names, loss_sums.numpy())}
    culprits = ([k for k, v in losses.items() if not math.isfinite(v)]
                or ["the gradients or the regularization"])
    return TrainingError(f"loss became non-finite at step {step}: {', '.join(culprits)} "
                         f"(loss sums of this log interval {losses}); training stopped "
                         f"and nothing was saved after step {last_saved}, so the last "
                         f"good checkpoint in {job.pipeline.model_dir} is kept. Lower the "
                         "learning rate, set gradient_clipping_by_norm, or check the labels "
                         "and raw values.")


class _Progress:
    """The loss sums since the last log line or summary; one log line per log interval
    (step, loss per tower, examples/sec, ETA) and the train summaries."""

    def __init__(self, job: Job, write_dir: str, batch_size: int, start_step: int,
                 online: OnlineEvaluation | None = None):
        self.job = job
        self.online = online
        self.train_config = job.pipeline.train_config
        self.num_steps = self.train_config.num_steps
        self.batch_size = batch_size
        self.writer = tf.summary.create_file_writer(os.path.join(write_dir, "train"))
        self.last_time = time.time()
        self.last_step = start_step
        self.rate = 0.0
        self.bad_rows = 0
        # Rows in use, ids admitted / evicted / refused of the dynamic tables (ev_params).
        self.dynamic_log = StatsWindow(job.model.feature_groups.dynamic)
        self.dynamic_summary = StatsWindow(job.model.feature_groups.dynamic)
        self.first_chunk = True
        self._reset()

    def _reset(self) -> None:
        self.loss_sums, self.total_sum, self.steps = 0.0, 0.0, 0

    def add(self, step: int, done: int, loss_sums, total_sum, bad, last_chunk: bool) -> None:
        """Count a chunk of `done` steps ending at `step`; log and summarise when due."""
        self.bad_rows += int(bad)
        if not done:
            return
        if self.first_chunk:
            self.first_chunk = False
            if step % self.train_config.log_step_count_steps and not last_chunk:
                # It traced the train loop: rate and ETA count from its end.
                self.last_time, self.last_step = time.time(), step
        # Losses are averaged over every step since the last line or summary (several
        # calls of train_loop when they run fewer steps, as under a strategy).
        self.loss_sums += loss_sums.numpy()
        self.total_sum += float(total_sum)
        self.steps += done
        losses = {k: float(v) / self.steps for k, v in zip(self.job.loss_names, self.loss_sums)}
        total = self.total_sum / self.steps
        logged = step % self.train_config.log_step_count_steps == 0 or last_chunk
        if logged:
            log.info(self._line(step, losses, total)
                     + (f" | {self.bad_rows} bad rows skipped" if self.bad_rows else "")
                     + StatsWindow.text(self.dynamic_log.take())
                     + (self.online.line() if self.online is not None else ""))
        summary_every = (self.train_config.save_summary_steps
                         or self.train_config.log_step_count_steps)
        if step % summary_every == 0 or last_chunk:
            self._write_summaries(step, losses, total)
            logged = True
        if logged:
            self._reset()

    def close(self) -> None:
        self.writer.flush()
        if self.bad_rows:
            log.warning("%d malformed rows were skipped (ignore_error: true).", self.bad_rows)

    def _line(self, step: int, losses: dict, total: float) -> str:
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
        return " | ".join(parts)

    def _write_summaries(self, step: int, losses: dict, total: float) -> None:
        with self.writer.as_default(step=step):
            for name, value in losses.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("loss/total", total)
            tf.summary.scalar("examples_per_sec", self.rate)
            tf.summary.scalar("learning_rate",
                              float(self.job.sparse_optimizer.learning_rate(step)))
            StatsWindow.write(self.dynamic_summary.take())
            if self.online is not None:
                self.online.write_summaries()


class _StopSignal:
    """train_config.dead_line and enable_oss_stop_signal: whether to stop after a step (all
    workers of a collective job agree, as they must stop at the same step)."""
    # Seconds between looks for model_dir/OSS_STOP_SIGNAL (as EasyRec's).
    EVERY_SECS = 10

    def __init__(self, train_config, cluster, model_dir: str):
        self.cluster, self.model_dir = cluster, model_dir
        self.dead_line = (check_train.dead_line_seconds(train_config.dead_line)
                          if train_config.HasField("dead_line") else None)
        self.signal = (os.path.join(model_dir, "OSS_STOP_SIGNAL")
                       if train_config.enable_oss_stop_signal else None)
        self.last_look = -math.inf

    def stop(self, step: int) -> bool:
        if self.dead_line is None and self.signal is None:
            return False
        why = None
        if self.dead_line is not None and time.time() > self.dead_line:
            why = "train_config.dead_line has passed"
        elif self.signal and time.monotonic() - self.last_look >= self.EVERY_SECS:
            self.last_look = time.monotonic()
            if tf.io.gfile.exists(self.signal):
                why = f"{self.signal} exists"
        stop = why is not None
        if self.cluster.collective:
            stop = distribute.any_worker(self.cluster.strategy, stop, step, self.model_dir)
        if stop:
            log.info("stopping at step %d: %s.", step, why or "another worker stops")
        return stop


class _Saver:
    """A checkpoint every save_checkpoints_steps (or _secs), each followed by an evaluation
    when this process evaluates; remembers the last step saved and the last metrics."""

    def __init__(self, job: Job, manager, cluster, eval_files, after_evaluation, start: int):
        self.job, self.manager, self.cluster = job, manager, cluster
        self.train_config = job.pipeline.train_config
        self.model_dir = job.pipeline.model_dir
        self.eval_files = eval_files
        self.after_evaluation = after_evaluation
        self.last_saved, self.last_saved_time = start, time.time()
        self.eval_result = {}

    def due(self, step: int) -> bool:
        """Whether to save at step (every worker must call it: it may agree with them)."""
        every_secs = self.train_config.save_checkpoints_secs
        due_by_time = bool(every_secs and time.time() - self.last_saved_time >= every_secs)
        if every_secs and self.cluster.collective:
            # Clocks differ: all workers save (and agree below) at the same step.
            due_by_time = distribute.any_worker(self.cluster.strategy, due_by_time, step,
                                                self.model_dir)
        return ((step % self.train_config.save_checkpoints_steps == 0 or due_by_time)
                and step != self.last_saved)

    def save_and_evaluate(self, step: int) -> bool:
        """Save and evaluate; whether training should stop early."""
        self._save(step)
        stop = self._evaluate() if self.eval_files else False
        # Only the chief evaluates: every worker must stop at the same step.
        if self.cluster.collective:
            stop = distribute.any_worker(self.cluster.strategy, stop, step, self.model_dir)
        return stop

    def finish(self, step: int, start: int) -> None:
        """The final checkpoint and evaluation, unless the last step has both already."""
        if step != self.last_saved:
            self._save(step)
            if self.eval_files:
                self._evaluate()
        elif self.eval_files and not self.eval_result and step > start:
            self._evaluate()

    def _save(self, step: int) -> None:
        checkpoints.save(self.job, self.manager, step, self.last_saved)
        self.last_saved, self.last_saved_time = step, time.time()

    def _evaluate(self) -> bool:
        """Evaluate; whether after_evaluation asks to stop training."""
        self.eval_result = evaluate_job(self.job, self.eval_files, self.model_dir)
        stop = (self.after_evaluation(self.job, self.eval_result)
                if self.after_evaluation is not None else False)
        return bool(stop)
