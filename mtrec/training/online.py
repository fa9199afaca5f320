"""eval_config.eval_online: eval_config's metrics of the training batches, as EasyRec's
online evaluation.

The traced train step hands each step's predictions, labels (and the columns GAUC groups
by, the domain ids) out of the loop (step.make_train_loop); here they update one
Evaluator (training/metrics.py) eagerly, so the metrics accumulate over every training
batch since training (re)started, never reset. Each progress line ends with their current
values, the train summaries (model_dir/train) get them under their eval names (so
TensorBoard draws them beside eval/'s), and at the end of training they are logged and
appended to model_dir/online_eval_result.txt.
"""
import json
import logging
import os

import tensorflow as tf

from mtrec.config.check_eval import GROUP_FIELDS
from mtrec.data.schema import field_dtype
from mtrec.training import storage
from mtrec.training.metrics import Evaluator, metric_configs

log = logging.getLogger("mtrec")

RESULT_FILE = "online_eval_result.txt"


class _Targets:
    """eval_targets of the values the train step handed out: {target: (prediction, label,
    mask, tower)}, as the model's eval_targets gives them."""

    def __init__(self, towers: dict):
        self.towers = towers

    def eval_targets(self, values: dict, _labels=None) -> dict:
        return {name: (t["pred"], t["label"], t["mask"], self.towers[name])
                for name, t in values["targets"].items()}


class OnlineEvaluation:
    """The metrics of the training batches of one training run."""

    def __init__(self, job):
        self.job = job
        self.model = job.model
        eval_config = job.pipeline.eval_config
        # The columns GAUC / session AUC group rows by, of the metrics the towers get.
        self.group_columns = sorted({
            getattr(getattr(c, c.WhichOneof("metric")), GROUP_FIELDS[c.WhichOneof("metric")])
            for t in self.model.tower_configs for c in metric_configs(t, eval_config)
            if c.WhichOneof("metric") in GROUP_FIELDS})
        # One dummy row, as Job.build, gives the structure and dtypes of a step's values.
        columns = {f.input_name: tf.zeros([1], field_dtype(f))
                   for f in job.pipeline.data_config.input_fields}
        features, side = job.split(columns)
        outputs = self.model(features, training=False)
        sample = self.tensors(outputs, side, features)
        # What one step hands out: every value has the batch as its first dimension.
        self.spec = tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] + t.shape[1:].as_list(), t.dtype), sample)
        towers = {name: tower for name, (_, _, _, tower) in
                  self.model.eval_targets(outputs, side).items()}
        self.evaluator = Evaluator(_Targets(towers), eval_config, sample, sample["groups"],
                                   self.model.domain_names)
        self.rows = 0

    def tensors(self, outputs: dict, side: dict, features: dict) -> dict:
        """Inside the train step: what the metrics need of one batch."""
        targets = {}
        for name, (pred, label, mask, _) in self.model.eval_targets(outputs, side).items():
            if mask is None:
                mask = tf.ones(tf.shape(label)[:1], tf.bool)
            targets[name] = {"pred": tf.stop_gradient(pred), "label": label, "mask": mask}
        values = {"targets": targets, "groups": {c: side[c] for c in self.group_columns}}
        domains = self.model.domain_ids(features)
        if domains is not None:
            values["domains"] = domains
        return values

    def add(self, values: dict) -> None:
        """Update the metrics with the values of a chunk of steps (eagerly)."""
        first = next(iter(values["targets"].values()))["label"]
        if not int(tf.shape(first)[0]):
            return
        self.evaluator.collect(self.evaluator.update(values, values["groups"],
                                                     values.get("domains")))
        self.rows += int(tf.shape(first)[0])

    def results(self) -> dict:
        """{metric name: value, None when it cannot be computed yet}."""
        return {metric.name: metric.result() for _, _, metric in self.evaluator.entries}

    @staticmethod
    def text(results: dict) -> str:
        return " ".join(f"{k}={'null' if v is None else f'{v:.5f}'}" for k, v in results.items())

    def line(self) -> str:
        """The end of a progress line."""
        return f" | online {self.text(self.results())}" if self.rows else ""

    def write_summaries(self) -> None:
        """Inside the train writer's default: each metric under its eval name."""
        if not self.rows:
            return
        for name, value in self.results().items():
            if value is not None:
                tf.summary.scalar(name, value)

    def finish(self, model_dir: str | None, step: int) -> dict:
        """Log the metrics of the whole run and append them to model_dir/RESULT_FILE."""
        if not self.rows:
            return {}
        results = self.results()
        log.info("online eval at step %d on %d training rows: %s", step, self.rows,
                 self.text(results))
        record = {**results, "global_step": step, "num_examples": self.rows}
        if model_dir:
            storage.append_line(os.path.join(model_dir, RESULT_FILE), json.dumps(record))
        return record
