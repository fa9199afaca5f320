"""Evaluation: one pass over the eval data with the job's current weights, logged,
summarised and appended to model_dir/eval_result.txt; or every new checkpoint of a
model_dir as training writes it (the evaluator's job)."""
import json
import logging
import os

import tensorflow as tf

from mtrec.errors import DataError, TrainingError
from mtrec.training import storage
from mtrec.training import inputs
from mtrec.training.checkpoints import restore_checkpoint
from mtrec.training.job import Job
from mtrec.training.metrics import Evaluator

log = logging.getLogger("mtrec")


def evaluate_job(job: Job, files, model_dir, num_examples=None, checkpoint=None) -> dict:
    """Evaluate the job's current weights on files; log, summarise and append the result.
    checkpoint: the path the weights were restored from, for a one-off evaluation (it is
    recorded, and training's history of evaluations leaves such lines out)."""
    num_examples = job.pipeline.eval_config.num_examples if num_examples is None else num_examples
    key = (tuple(files), num_examples)
    if key not in job.eval_passes:
        job.eval_passes[key] = _EvalPass(job, files, num_examples)
    results, rows = job.eval_passes[key].run()
    step = int(job.global_step.numpy())
    record = {**results, "global_step": step, "num_examples": rows}
    if checkpoint:
        record["checkpoint"] = checkpoint
    log.info("eval at step %d on %d rows: %s", step, rows,
             " ".join(f"{k}={'null' if v is None else f'{v:.5f}'}" for k, v in results.items()))
    if model_dir:
        storage.append_line(os.path.join(model_dir, "eval_result.txt"), json.dumps(record))
        writer = job.summary_writer(os.path.join(model_dir, "eval"))
        with writer.as_default(step=step):
            for name, value in results.items():
                if value is not None:
                    tf.summary.scalar(name, value)
        writer.flush()
    return record


class _EvalPass:
    """The eval dataset, metrics and traced eval step of one (files, num_examples); run()
    makes one pass with the job's current weights."""

    def __init__(self, job: Job, files, num_examples):
        self.job, self.files = job, files
        self.dataset, self.reader = inputs.make_dataset(job, files, training=False)
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
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
                tf.errors.DataLossError) as e:
            raise inputs.data_error(e, self.reader, self.files, "evaluation", job) from None
        if not rows:
            raise DataError(f"eval data {', '.join(self.files)} holds no rows.")
        return self.evaluator.results(), rows


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
