"""Evaluation metrics per tower: <metric>_<target> (auc_ctr, gauc_cvr, max_f1_ctr, ...).

AUC, log loss, MSE, MAE, RMSE, accuracy, precision, recall, max F1 (Keras precision and
recall at 200 thresholds) and top-k recall/precision (Keras top-k accuracy) are Keras
metrics updated batch by batch; GAUC and session AUC need every (group, label,
prediction) of the eval set and are computed at the end.
A metric that cannot be computed (no positives or no negatives) is reported as
None with a warning, never a crash.
"""
import logging

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtrec.config.check_eval import GROUP_FIELDS, METRIC_TOWERS
from mtrec.models.losses import L2_LOSS, binary_output, tower_loss_type
from mtrec.protos import eval_pb2

log = logging.getLogger("mtrec")


# max_f1's thresholds of the probability: EasyRec's 200 (0, k/199 for k = 1..198, 1), with 0
# and 1 in place of its -1e-7 and 1 + 1e-7 (Keras keeps thresholds in [0, 1]).
MAX_F1_THRESHOLDS = [0.0] + [(i + 1) / 199 for i in range(198)] + [1.0]


def tower_kind(tower) -> str:
    """"regression", "binary" or "multi_class": the head the model built for the tower."""
    if tower_loss_type(tower) == L2_LOSS:
        return "regression"
    return "binary" if binary_output(tower) else "multi_class"


def metric_configs(tower, eval_config) -> list:
    """The tower's metrics_set, else eval_config's (those that fit the tower, see
    METRIC_TOWERS), else auc / accuracy / mse by task type."""
    configs = list(tower.metrics_set) or list(eval_config.metrics_set)
    kind = tower_kind(tower)
    usable = [c for c in configs if kind in METRIC_TOWERS[c.WhichOneof("metric")]]
    if not usable:
        default = eval_pb2.EvalMetrics()
        if kind == "regression":
            default.mean_squared_error.SetInParent()
        elif kind == "multi_class":
            default.accuracy.SetInParent()
        else:
            default.auc.SetInParent()
        usable = [default]
    return usable


class _Metric:
    """One named metric of one target."""

    def __init__(self, name, config, tower):
        self.name = name
        self.kind = config.WhichOneof("metric")
        self.config = getattr(config, self.kind)
        self.multi_class = tower_kind(tower) == "multi_class"
        self.keras_metric = None
        self.recall_metric = None  # max_f1's recall beside keras_metric's precision
        self.counts = None
        if self.kind == "auc":
            self.keras_metric = keras.metrics.AUC(num_thresholds=self.config.num_thresholds)
            # (positives, negatives) seen, to tell when AUC is undefined.
            self.counts = tf.Variable([0.0, 0.0], trainable=False)
        elif self.kind == "logloss":
            self.keras_metric = keras.metrics.BinaryCrossentropy()
        elif self.kind == "mean_squared_error":
            self.keras_metric = keras.metrics.MeanSquaredError()
        elif self.kind == "mean_absolute_error":
            self.keras_metric = keras.metrics.MeanAbsoluteError()
        elif self.kind == "root_mean_squared_error":
            self.keras_metric = keras.metrics.RootMeanSquaredError()
        elif self.kind == "precision":
            self.keras_metric = keras.metrics.Precision(thresholds=0.5)
        elif self.kind == "recall":
            self.keras_metric = keras.metrics.Recall(thresholds=0.5)
        elif self.kind == "max_f1":
            self.keras_metric = keras.metrics.Precision(thresholds=MAX_F1_THRESHOLDS)
            self.recall_metric = keras.metrics.Recall(thresholds=MAX_F1_THRESHOLDS)
        elif self.kind in ("recall_at_topk", "precision_at_topk"):
            self.keras_metric = keras.metrics.SparseTopKCategoricalAccuracy(k=self.config.topk)
        elif self.kind == "accuracy":
            self.keras_metric = (keras.metrics.SparseCategoricalAccuracy() if self.multi_class
                                 else keras.metrics.BinaryAccuracy())
        self.groups, self.labels, self.predictions = [], [], []

    def update(self, prediction, label, mask, groups):
        if self.kind in GROUP_FIELDS:
            column = getattr(self.config, GROUP_FIELDS[self.kind])
            return {"group": groups[column], "label": label, "pred": prediction,
                    "mask": mask if mask is not None else tf.ones_like(prediction, tf.bool)}
        weight = None if mask is None else tf.cast(mask, tf.float32)
        label_f = tf.cast(label, tf.float32)
        if self.multi_class:
            self.keras_metric.update_state(tf.cast(label, tf.int64), prediction, weight)
        elif self.kind in ("auc", "precision", "recall", "max_f1"):
            self.keras_metric.update_state(label_f, prediction, weight)
            if self.recall_metric is not None:
                self.recall_metric.update_state(label_f, prediction, weight)
        else:
            # Keras mean-reduces MSE/accuracy over the last axis: (batch, 1) keeps one
            # value per row, so a per-row weight (a domain or ESMM mask) applies.
            self.keras_metric.update_state(label_f[:, None], prediction[:, None], weight)
        if self.counts is not None:
            w = tf.ones_like(label_f) if weight is None else weight
            self.counts.assign_add(tf.stack([tf.reduce_sum(w * label_f),
                                             tf.reduce_sum(w * (1 - label_f))]))
        return None

    def collect(self, values):
        mask = values["mask"].numpy().astype(bool)
        self.groups.append(values["group"].numpy()[mask])
        self.labels.append(values["label"].numpy()[mask])
        self.predictions.append(values["pred"].numpy()[mask])

    def reset(self):
        for metric in (self.keras_metric, self.recall_metric):
            if metric is not None:
                metric.reset_state()
        if self.counts is not None:
            self.counts.assign([0.0, 0.0])
        self.groups, self.labels, self.predictions = [], [], []

    def result(self):
        if self.kind in GROUP_FIELDS:
            return gauc(np.concatenate(self.groups) if self.groups else np.array([]),
                        np.concatenate(self.labels) if self.labels else np.array([]),
                        np.concatenate(self.predictions) if self.predictions else np.array([]),
                        self.config.reduction)
        if self.counts is not None:
            positives, negatives = self.counts.numpy()
            if positives == 0 or negatives == 0:
                return None
        if self.kind == "max_f1":
            precision = self.keras_metric.result()  # (thresholds,)
            recall = self.recall_metric.result()  # (thresholds,)
            f1 = tf.math.divide_no_nan(2 * precision * recall, precision + recall)
            return float(tf.reduce_max(f1).numpy())
        value = float(self.keras_metric.result().numpy())
        if self.kind == "precision_at_topk":
            # One relevant class per row: precision@k = (hits among the k classes) / k.
            value /= self.config.topk
        return value


def gauc(groups, labels, predictions, reduction="mean"):
    """Per-group AUC (groups with both classes), averaged; None if no group qualifies."""
    if len(labels) == 0:
        return None
    frame = pd.DataFrame({"g": groups, "y": labels.astype(float), "p": predictions})
    frame["rank"] = frame.groupby("g")["p"].rank(method="average")
    stats = frame.groupby("g").agg(n=("y", "size"), pos=("y", "sum"))
    rank_sum = frame[frame["y"] > 0].groupby("g")["rank"].sum()
    stats = stats.join(rank_sum.rename("rank_sum")).fillna({"rank_sum": 0.0})
    stats = stats[(stats["pos"] > 0) & (stats["pos"] < stats["n"])]
    if stats.empty:
        return None
    neg = stats["n"] - stats["pos"]
    auc = (stats["rank_sum"] - stats["pos"] * (stats["pos"] + 1) / 2) / (stats["pos"] * neg)
    weights = {"mean": np.ones(len(stats)), "mean_by_sample_num": stats["n"].to_numpy(),
               "mean_by_positive_num": stats["pos"].to_numpy()}.get(reduction)
    if weights is None:
        raise ValueError(f"gauc reduction {reduction!r} is not one of mean, "
                         "mean_by_sample_num, mean_by_positive_num.")
    return float(np.average(auc.to_numpy(), weights=weights))


class Evaluator:
    """Builds the metrics of a model's eval targets and accumulates them over batches.

    Multi-scenario models also get every metric per domain, named
    `<metric>_<target>/domain=<name>`; domain_names[i] names domain id i.
    """

    def __init__(self, model, eval_config, sample_outputs, sample_labels, domain_names=()):
        self.model = model
        self.entries = []  # (target, domain id or None, metric)
        for target, (_, _, _, tower) in model.eval_targets(sample_outputs, sample_labels).items():
            for config in metric_configs(tower, eval_config):
                name = f"{config.WhichOneof('metric')}_{target}"
                self.entries.append((target, None, _Metric(name, config, tower)))
                for domain, domain_name in enumerate(domain_names):
                    self.entries.append((target, domain, _Metric(f"{name}/domain={domain_name}",
                                                                  config, tower)))

    @property
    def metrics(self) -> dict:
        return {metric.name: metric for _, _, metric in self.entries}

    def update(self, outputs, labels, domains=None):
        """Call inside the eval step; returns tensors GAUC needs (empty dict if none)."""
        collected = {}
        targets = self.model.eval_targets(outputs, labels)
        for target, domain, metric in self.entries:
            pred, label, mask, _ = targets[target]
            if domain is not None:
                in_domain = tf.equal(domains, domain)
                mask = in_domain if mask is None else tf.logical_and(mask, in_domain)
            values = metric.update(pred, label, mask, labels)
            if values is not None:
                collected[metric.name] = values
        return collected

    def collect(self, collected):
        metrics = self.metrics
        for name, values in collected.items():
            metrics[name].collect(values)

    def reset(self):
        for _, _, metric in self.entries:
            metric.reset()

    def results(self) -> dict:
        results = {metric.name: metric.result() for _, _, metric in self.entries}
        undefined = [name for name, value in results.items() if value is None]
        if undefined:
            log.warning("undefined on this eval data (they need both positive and negative "
                        "labels), reported as null: %s", ", ".join(undefined))
        return results
