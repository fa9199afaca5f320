"""Evaluation metrics per tower: <metric>_<target> (auc_ctr, gauc_cvr, ...).

AUC, log loss, MSE and accuracy are Keras metrics updated batch by batch; GAUC needs
every (group, label, prediction) of the eval set and is computed at the end.
A metric that cannot be computed (no positives or no negatives) is reported as
None with a warning, never a crash.
"""
import logging

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtrec.models.losses import L2_LOSS, binary_output, tower_loss_type
from mtrec.protos import eval_pb2

log = logging.getLogger("mtrec")


def metric_configs(tower, eval_config) -> list:
    """The tower's metrics_set, else eval_config's, else auc / accuracy / mse by task type."""
    configs = list(tower.metrics_set) or list(eval_config.metrics_set)
    regression = tower_loss_type(tower) == L2_LOSS
    usable = []
    for config in configs:
        kind = config.WhichOneof("metric")
        if regression and kind in ("auc", "gauc", "logloss", "accuracy"):
            continue
        if not regression and not binary_output(tower) and kind in (
                "auc", "gauc", "logloss", "mean_squared_error"):
            continue
        usable.append(config)
    if not usable:
        default = eval_pb2.EvalMetrics()
        if regression:
            default.mean_squared_error.SetInParent()
        elif not binary_output(tower):
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
        self.multi_class = not binary_output(tower) and tower_loss_type(tower) != L2_LOSS
        self.keras_metric = None
        self.counts = None
        if self.kind == "auc":
            self.keras_metric = keras.metrics.AUC(num_thresholds=self.config.num_thresholds)
            # (positives, negatives) seen, to tell when AUC is undefined.
            self.counts = tf.Variable([0.0, 0.0], trainable=False)
        elif self.kind == "logloss":
            self.keras_metric = keras.metrics.BinaryCrossentropy()
        elif self.kind == "mean_squared_error":
            self.keras_metric = keras.metrics.MeanSquaredError()
        elif self.kind == "accuracy":
            self.keras_metric = (keras.metrics.SparseCategoricalAccuracy() if self.multi_class
                                 else keras.metrics.BinaryAccuracy())
        self.groups, self.labels, self.predictions = [], [], []

    def update(self, prediction, label, mask, groups):
        if self.kind == "gauc":
            return {"group": groups[self.config.uid_field], "label": label, "pred": prediction,
                    "mask": mask if mask is not None else tf.ones_like(prediction, tf.bool)}
        weight = None if mask is None else tf.cast(mask, tf.float32)
        label_f = tf.cast(label, tf.float32)
        if self.multi_class:
            self.keras_metric.update_state(tf.cast(label, tf.int64), prediction, weight)
        elif self.kind == "auc":
            self.keras_metric.update_state(label_f, prediction, weight)
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
        if self.keras_metric is not None:
            self.keras_metric.reset_state()
        if self.counts is not None:
            self.counts.assign([0.0, 0.0])
        self.groups, self.labels, self.predictions = [], [], []

    def result(self):
        if self.kind == "gauc":
            return gauc(np.concatenate(self.groups) if self.groups else np.array([]),
                        np.concatenate(self.labels) if self.labels else np.array([]),
                        np.concatenate(self.predictions) if self.predictions else np.array([]),
                        self.config.reduction)
        if self.counts is not None:
            positives, negatives = self.counts.numpy()
            if positives == 0 or negatives == 0:
                return None
        return float(self.keras_metric.result().numpy())


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
