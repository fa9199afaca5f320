"""Task heads and losses: tower logits -> named outputs, outputs + labels -> tower losses.

Per tower t the head names its outputs `logits_t` and `probs_t` (classification) or `y_t`
(regression); the losses and the metrics read them by those names.
"""
import tensorflow as tf

from mtrec.protos import loss_pb2

CLASSIFICATION = loss_pb2.CLASSIFICATION
L2_LOSS = loss_pb2.L2_LOSS
# An extra term comparing a tower with its relation towers (RelationTowers), not its loss.
ORDER_CALIBRATE_LOSS = loss_pb2.ORDER_CALIBRATE_LOSS


def tower_loss_type(tower) -> int:
    """The tower's task: the first `losses` term that is not ORDER_CALIBRATE_LOSS, else
    its `loss_type`."""
    kinds = [l.loss_type for l in tower.losses if l.loss_type != ORDER_CALIBRATE_LOSS]
    return kinds[0] if kinds else tower.loss_type


def head_outputs(tower, logits) -> dict:
    """Tower logits (batch, num_class) -> the named outputs of the task."""
    name = tower.tower_name
    if tower_loss_type(tower) == L2_LOSS:
        y = logits[:, 0]
        return {f"logits_{name}": y, f"y_{name}": y}
    if tower.num_class == 1:
        logits = logits[:, 0]
        return {f"logits_{name}": logits, f"probs_{name}": tf.sigmoid(logits)}
    return {f"logits_{name}": logits, f"probs_{name}": tf.nn.softmax(logits),
            f"y_{name}": tf.argmax(logits, axis=-1)}


def prediction(tower, outputs):
    """The output metrics read: probabilities, or y for regression."""
    if tower_loss_type(tower) == L2_LOSS:
        return outputs[f"y_{tower.tower_name}"]
    return outputs[f"probs_{tower.tower_name}"]


def _weighted_mean(values, weights):
    """Mean of (batch,) values, weighted by (batch,) weights when given."""
    if weights is None:
        return tf.reduce_mean(values)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def tower_loss(tower, outputs, labels, weights=None):
    """Scalar loss of one tower (sum over its `losses` terms)."""
    name = tower.tower_name
    label = labels[tower.label_name]
    terms = list(tower.losses) or [loss_pb2.Loss(loss_type=tower.loss_type, weight=1.0)]
    total = 0.0
    for term in terms:
        if term.loss_type == ORDER_CALIBRATE_LOSS:  # added by RelationTowers
            continue
        if term.loss_type == L2_LOSS:
            values = tf.square(outputs[f"y_{name}"] - tf.cast(label, tf.float32))
        elif tower.num_class == 1:
            values = tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(label, tf.float32), logits=outputs[f"logits_{name}"])
        else:
            values = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(label, tf.int64), logits=outputs[f"logits_{name}"])
        total += term.weight * _weighted_mean(values, weights)
    return total


def binary_cross_entropy_on_probs(label, probs, weights=None):
    """Cross-entropy of probabilities that are not a single sigmoid (e.g. ESMM's ctcvr)."""
    probs = tf.clip_by_value(probs, 1e-7, 1 - 1e-7)
    label = tf.cast(label, tf.float32)
    values = -(label * tf.math.log(probs) + (1 - label) * tf.math.log(1 - probs))
    return _weighted_mean(values, weights)


def uncertainty_weighted(loss, log_variance, tower):
    """Kendall et al. 2018: a tower loss L with learned s = log(sigma^2) becomes
    exp(-s) L + s/2 (classification) or exp(-s) L / 2 + s/2 (regression)."""
    scale = 0.5 if tower_loss_type(tower) == L2_LOSS else 1.0
    return scale * tf.exp(-log_variance) * loss + 0.5 * log_variance
