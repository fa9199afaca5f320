"""Task heads and losses: tower logits -> named outputs, outputs + labels -> tower losses.

Per tower t the head names its outputs `logits_t` and `probs_t` (classification) or `y_t`
(regression); the losses and the metrics read them by those names.

A tower's loss is one or more terms (`losses`, else its `loss_type`), EasyRec's loss family
(protos/mtrec/protos/loss.proto has each formula). Every term is a mean over the rows or
over the pairs of rows (i, j) with y_i > y_j, weighted by the rows' weights w (sample weight
times task-space weight; a pair weighs w_i): sum(w * value) / sum(w). Terms with a
`session_name` read that input column from the side columns (Job.split) and only compare
rows of one session.
"""
import math

import tensorflow as tf

# Which loss types need what (class labels, a parameter message) is config knowledge.
from mtrec.config.check_kd import kd_key, kd_output
from mtrec.config.check_towers import CLASS_LABELS, JRC_STRATEGIES, term_name, term_params
from mtrec.protos import loss_pb2

CLASSIFICATION = loss_pb2.CLASSIFICATION
L2_LOSS = loss_pb2.L2_LOSS
SOFTMAX_CROSS_ENTROPY = loss_pb2.SOFTMAX_CROSS_ENTROPY
PAIR_WISE_LOSS = loss_pb2.PAIR_WISE_LOSS
PAIRWISE_FOCAL_LOSS = loss_pb2.PAIRWISE_FOCAL_LOSS
PAIRWISE_LOGISTIC_LOSS = loss_pb2.PAIRWISE_LOGISTIC_LOSS
PAIRWISE_HINGE_LOSS = loss_pb2.PAIRWISE_HINGE_LOSS
BINARY_FOCAL_LOSS = loss_pb2.BINARY_FOCAL_LOSS
F1_REWEIGHTED_LOSS = loss_pb2.F1_REWEIGHTED_LOSS
JRC_LOSS = loss_pb2.JRC_LOSS
ZILN_LOSS = loss_pb2.ZILN_LOSS
CROSS_ENTROPY_LOSS = loss_pb2.CROSS_ENTROPY_LOSS
BINARY_CROSS_ENTROPY_LOSS = loss_pb2.BINARY_CROSS_ENTROPY_LOSS
KL_DIVERGENCE_LOSS = loss_pb2.KL_DIVERGENCE_LOSS
# An extra term comparing a tower with its relation towers (RelationTowers), not its loss.
ORDER_CALIBRATE_LOSS = loss_pb2.ORDER_CALIBRATE_LOSS

# Clipping of probabilities in the focal loss, as EasyRec's.
_EPSILON = 1e-7


# -- the terms of a tower ------------------------------------------------------------------
def loss_terms(tower) -> list:
    """The tower's loss terms but ORDER_CALIBRATE_LOSS (added by RelationTowers): its
    `losses`, else one term of its `loss_type`."""
    terms = [l for l in tower.losses if l.loss_type != ORDER_CALIBRATE_LOSS]
    if terms:
        return terms
    if tower.losses:  # only ORDER_CALIBRATE_LOSS terms: the tower's loss is CLASSIFICATION
        return [loss_pb2.Loss(loss_type=CLASSIFICATION)]
    return [loss_pb2.Loss(loss_type=tower.loss_type)]


def tower_loss_type(tower) -> int:
    """The kind of labels and head of the tower: L2_LOSS (regression), ZILN_LOSS (a real
    label >= 0, three logits), CLASSIFICATION (class ids; every term but L2 and the pairwise
    ones), else the first term's pairwise type (a ranking tower with graded labels)."""
    kinds = [t.loss_type for t in loss_terms(tower)]
    if L2_LOSS in kinds:
        return L2_LOSS
    if ZILN_LOSS in kinds:
        return ZILN_LOSS
    if any(k in CLASS_LABELS for k in kinds):
        return CLASSIFICATION
    return kinds[0]


def binary_output(tower) -> bool:
    """Whether probs_<tower> is one probability per row: num_class 1, a JRC tower (two
    logits, probs the positive class's) or a ZILN tower (probs = P(y > 0))."""
    return tower.num_class == 1 or any(t.loss_type in (JRC_LOSS, ZILN_LOSS)
                                       for t in loss_terms(tower))


def loss_keys(tower) -> list[str]:
    """Names of the tower's terms in the losses dict (log and summaries): the tower name for
    a single unnamed term, else "<tower>/<term name>" per term."""
    terms = loss_terms(tower)
    if len(terms) == 1 and not terms[0].loss_name:
        return [tower.tower_name]
    return [f"{tower.tower_name}/{term_name(t)}" for t in terms]


def session_columns(towers) -> list[str]:
    """The input columns the towers' losses group rows by (session_name)."""
    names = []
    for tower in towers:
        for term in loss_terms(tower):
            params = term_params(term)
            if params is not None and getattr(params, "session_name", ""):
                names.append(params.session_name)
    return list(dict.fromkeys(names))


# -- heads -------------------------------------------------------------------------------
def head_outputs(tower, logits) -> dict:
    """Tower logits (batch, num_class) -> the named outputs of the task."""
    name = tower.tower_name
    kind = tower_loss_type(tower)
    if kind == L2_LOSS:
        y = logits[:, 0]
        return {f"logits_{name}": y, f"y_{name}": y}
    if kind == ZILN_LOSS:
        params = loss_terms(tower)[0].ziln_loss
        probs, y = ziln_prediction(logits, params.max_sigma, params.max_log_clip_value,
                                   params.return_log_pred_value)
        return {f"logits_{name}": logits, f"probs_{name}": probs, f"y_{name}": y}
    if tower.num_class == 1:
        logits = logits[:, 0]
        return {f"logits_{name}": logits, f"probs_{name}": tf.sigmoid(logits)}
    if binary_output(tower):  # JRC: two logits, the positive class's probability
        return {f"logits_{name}": logits, f"probs_{name}": tf.nn.softmax(logits)[:, 1]}
    return {f"logits_{name}": logits, f"probs_{name}": tf.nn.softmax(logits),
            f"y_{name}": tf.argmax(logits, axis=-1)}


def prediction(tower, outputs):
    """The output metrics read: probabilities, or y for regression."""
    if tower_loss_type(tower) == L2_LOSS:
        return outputs[f"y_{tower.tower_name}"]
    return outputs[f"probs_{tower.tower_name}"]


def metric_label(tower, label):
    """The label metrics compare prediction() with: y > 0 for a ZILN tower (its metrics
    read P(y > 0)), else the label itself."""
    if tower_loss_type(tower) == ZILN_LOSS:
        return tf.cast(tf.cast(label, tf.float32) > 0, tf.float32)
    return label


# -- reductions --------------------------------------------------------------------------
def _weighted_mean(values, weights):
    """Mean of (batch,) values, weighted by (batch,) weights when given."""
    if weights is None:
        return tf.reduce_mean(values)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def _hard_mean(values, ohem_ratio: float):
    """Online hard example mining: the mean of the positive values among the largest
    rint(ohem_ratio * n) of the flat `values`; 0 when there are none."""
    k = tf.cast(tf.math.rint(tf.cast(tf.size(values), tf.float32) * ohem_ratio), tf.int32)
    top = tf.math.top_k(values, k).values
    top = tf.boolean_mask(top, top > 0)
    return tf.math.divide_no_nan(tf.reduce_sum(top), tf.cast(tf.size(top), tf.float32))


def _row_reduce(values, weights, ohem_ratio: float = 1.0):
    """(batch,) row losses -> scalar: weighted mean, or the hard-example mean of the
    weighted values when ohem_ratio < 1."""
    if ohem_ratio < 1.0:
        return _hard_mean(values if weights is None else values * weights, ohem_ratio)
    return _weighted_mean(values, weights)


def pair_mask(labels, session_ids=None):
    """(batch, batch) bool: pair (i, j) with labels[i] > labels[j] (in one session)."""
    mask = labels[:, None] > labels[None, :]
    if session_ids is not None:
        mask = tf.logical_and(mask, tf.equal(session_ids[:, None], session_ids[None, :]))
    return mask


def _pair_reduce(values, mask, weights, ohem_ratio: float = 1.0):
    """(batch, batch) pair losses of the pairs in `mask` -> scalar: their mean weighted by
    the first row's weight w_i (0 without pairs), or the hard-example mean."""
    pair_weights = tf.cast(mask, tf.float32)  # (batch, batch)
    if weights is not None:
        pair_weights *= weights[:, None]
    values = tf.where(mask, values, 0.0)
    if ohem_ratio < 1.0:
        return _hard_mean(tf.boolean_mask(values * pair_weights, mask), ohem_ratio)
    return tf.math.divide_no_nan(tf.reduce_sum(values * pair_weights),
                                 tf.reduce_sum(pair_weights))


def _differences(x):
    """(batch,) -> (batch, batch) x_i - x_j."""
    return x[:, None] - x[None, :]


# -- the loss functions --------------------------------------------------------------------
def focal_values(labels, logits, gamma=2.0, alpha=None, label_smoothing=0.0):
    """Per-element focal loss (Lin et al. 2017): (1 - p_t)^gamma * a * cross-entropy, p the
    clipped sigmoid, a = alpha for positives and 1 - alpha for negatives (1 without alpha);
    the cross-entropy's label is smoothed, p_t reads the raw label."""
    y = tf.cast(labels, tf.float32)
    p = tf.clip_by_value(tf.sigmoid(logits), _EPSILON, 1 - _EPSILON)
    p_t = y * p + (1 - y) * (1 - p)
    factor = tf.pow(1 - p_t, gamma)
    if alpha is not None:
        factor *= y * alpha + (1 - alpha) * (1 - y)
    smoothed = y * (1 - label_smoothing) + 0.5 * label_smoothing
    return factor * tf.nn.sigmoid_cross_entropy_with_logits(labels=smoothed, logits=logits)


def binary_focal_loss(labels, logits, weights=None, gamma=2.0, alpha=None, ohem_ratio=1.0,
                      label_smoothing=0.0):
    """BINARY_FOCAL_LOSS of (batch,) 0/1 labels and logits."""
    return _row_reduce(focal_values(labels, logits, gamma, alpha, label_smoothing), weights,
                       ohem_ratio)


def f1_reweighted_loss(labels, logits, weights=None, f1_beta_square=1.0, label_smoothing=0.0):
    """F1_REWEIGHTED_LOSS: cross-entropy with negatives weighted by
    tp / (beta^2 P + N - tn + 1e-8), tp = sum(sigmoid(logits)), tn = batch - tp."""
    y = tf.cast(labels, tf.float32)
    batch = tf.cast(tf.shape(y)[0], tf.float32)
    positives = tf.reduce_sum(y)
    tp = tf.reduce_sum(tf.sigmoid(logits))
    negative_weight = tp / (f1_beta_square * positives + (batch - positives) - (batch - tp)
                            + 1e-8)
    row_weight = tf.where(tf.equal(y, 1.0), 1.0, negative_weight)
    smoothed = y * (1 - label_smoothing) + 0.5 * label_smoothing
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=smoothed, logits=logits)
    return _weighted_mean(row_weight * ce, weights)


def pair_wise_loss(labels, logits, weights=None, session_ids=None, margin=0.0,
                   temperature=1.0):
    """PAIR_WISE_LOSS: mean over pairs of softplus(-((s_i - s_j) / T - margin))."""
    y = tf.cast(labels, tf.float32)
    d = _differences(logits / temperature) - margin  # (batch, batch)
    return _pair_reduce(tf.nn.softplus(-d), pair_mask(y, session_ids), weights)


def pairwise_focal_loss(labels, logits, weights=None, session_ids=None, gamma=2.0, alpha=None,
                        hinge_margin=None, ohem_ratio=1.0, temperature=1.0):
    """PAIRWISE_FOCAL_LOSS: the focal loss of label 1 on d = (s_i - s_j) / T per pair,
    leaving out pairs with d >= hinge_margin when it is given."""
    y = tf.cast(labels, tf.float32)
    d = _differences(logits / temperature)  # (batch, batch)
    mask = pair_mask(y, session_ids)
    if hinge_margin is not None:
        mask = tf.logical_and(mask, d < hinge_margin)
    values = focal_values(tf.ones_like(d), d, gamma, alpha)
    return _pair_reduce(values, mask, weights, ohem_ratio)


def pairwise_logistic_loss(labels, logits, weights=None, session_ids=None, temperature=1.0,
                           hinge_margin=None, ohem_ratio=1.0, use_label_margin=False):
    """PAIRWISE_LOGISTIC_LOSS (RankNet): mean over pairs of softplus(-(d - m)),
    d = (s_i - s_j) / T, m = (y_i - y_j) / T with use_label_margin, else hinge_margin or 0."""
    y = tf.cast(labels, tf.float32)
    d = _differences(logits / temperature)  # (batch, batch)
    if use_label_margin:
        d -= _differences(y / temperature)
    elif hinge_margin is not None:
        d -= hinge_margin
    return _pair_reduce(tf.nn.softplus(-d), pair_mask(y, session_ids), weights, ohem_ratio)


def pairwise_hinge_loss(labels, logits, weights=None, session_ids=None, temperature=1.0,
                        margin=1.0, ohem_ratio=1.0, label_is_logits=True,
                        use_label_margin=True, use_exponent=False):
    """PAIRWISE_HINGE_LOSS: mean over pairs of relu(m - (s_i - s_j)), m = y_i - y_j with
    use_label_margin else margin; use_exponent: relu(exp(m - d) - 1) on sigmoid(s), sigmoid(y)."""
    y = tf.cast(labels, tf.float32)
    s = logits / temperature
    if label_is_logits:
        y = y / temperature
    if use_exponent:
        y, s = tf.sigmoid(y), tf.sigmoid(s)
    label_diff = _differences(y)  # (batch, batch)
    diff = (label_diff if use_label_margin else margin) - _differences(s)
    if use_exponent:
        values = tf.nn.relu(tf.exp(tf.clip_by_value(diff, -88.0, 88.0)) - 1.0)
    else:
        values = tf.nn.relu(diff)
    mask = label_diff > 0
    if session_ids is not None:
        mask = tf.logical_and(mask, tf.equal(session_ids[:, None], session_ids[None, :]))
    return _pair_reduce(values, mask, weights, ohem_ratio)


def _jrc_weights(strategy: str, alpha: float):
    """(CE weight, GE weight) of one step."""
    if strategy == "fixed":
        return alpha, 1.0 - alpha
    if strategy == "random_uniform":
        a = tf.random.uniform([])
        return a, 1.0 - a
    if strategy == "random_normal":
        w = tf.nn.softmax(tf.random.normal([2]))
        return w[0], w[1]
    if strategy == "random_bernoulli":
        # Two fair coins; a draw with exactly one head picks that term, else half each.
        coins = tf.cast(tf.random.uniform([2]) < 0.5, tf.float32)
        w = tf.where(tf.equal(tf.reduce_sum(coins), 1.0), coins, tf.constant([0.5, 0.5]))
        return w[0], w[1]
    raise ValueError(f"jrc_loss loss_weight_strategy must be one of {JRC_STRATEGIES}, "
                     f"not {strategy!r}.")


def jrc_loss(labels, logits, session_ids, weights=None, alpha=0.5, same_label_loss=True,
             loss_weight_strategy="fixed"):
    """JRC_LOSS (Sheng et al. 2022) of (batch,) 0/1 labels and (batch, 2) logits:
    a * CE + (1 - a) * GE, GE the softmax over the rows of each session, per class;
    a = alpha, or drawn per step (loss_weight_strategy)."""
    labels = tf.cast(labels, tf.int64)
    ce = _weighted_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits), weights)
    y = tf.one_hot(labels, 2)  # (batch, 2): [negative, positive]
    same = tf.cast(tf.equal(session_ids[:, None], session_ids[None, :]), tf.float32)  # (i, j)
    column_weight = 1.0 if weights is None else weights[None, :, None]
    # (i, j, class): row i's logit in row j's softmax over its session.
    masked = logits[:, None, :] + (1.0 - same)[:, :, None] * -1e9
    in_session = y[:, None, :] * same[:, :, None]  # (i, j, class)
    if same_label_loss:
        log_probs = tf.nn.log_softmax(masked, axis=0)
        per_row = -tf.reduce_sum(in_session * column_weight * log_probs, axis=[0, 2])  # (j,)
        ge = tf.reduce_mean(per_row / tf.reduce_sum(same, axis=0))
    else:
        # Row j competes with the session's rows of the other label only.
        others = 1.0 - tf.eye(tf.shape(logits)[0])
        log_probs = tf.nn.log_softmax(masked + others[:, :, None] * in_session * -1e9, axis=0)
        diagonal = tf.linalg.diag_part(tf.transpose(log_probs, [2, 0, 1]))  # (class, j)
        own = tf.transpose(diagonal) * y  # (j, class)
        if weights is not None:
            own *= weights[:, None]
        ge = tf.reduce_mean(-tf.reduce_sum(own, axis=1))
    ce_weight, ge_weight = _jrc_weights(loss_weight_strategy, alpha)
    return ce_weight * ce + ge_weight * ge


def ziln_prediction(logits, max_sigma=5.0, max_log_clip=20.0, return_log=False):
    """(batch, 3) logits [p, mu, s] -> (P(y > 0) = sigmoid(p), the expected value
    sigmoid(p) * exp(mu + sigma^2 / 2)), sigma = clip(softplus(s), sqrt(1e-7), max_sigma);
    the expected value's log is clipped to [-100, max_log_clip] (or returned, return_log)."""
    sigma = _ziln_sigma(logits[:, 2], max_sigma)
    log_value = tf.math.log_sigmoid(logits[:, 0]) + logits[:, 1] + 0.5 * tf.square(sigma)
    if return_log:
        return tf.sigmoid(logits[:, 0]), log_value
    return tf.sigmoid(logits[:, 0]), tf.exp(tf.clip_by_value(log_value, -100.0, max_log_clip))


def _ziln_sigma(scale_logits, max_sigma):
    return tf.clip_by_value(tf.nn.softplus(scale_logits), _EPSILON ** 0.5, max_sigma)


def ziln_loss(labels, logits, weights=None, max_sigma=5.0, mu_regularization=0.01,
              sigma_regularization=0.01, classification_weight=1.0, regression_weight=1.0):
    """ZILN_LOSS of (batch,) real labels y >= 0 and (batch, 3) logits [p, mu, s]:
    classification_weight * CE(y > 0, p) + regression_weight * the mean over rows with
    y > 0 of -log LogNormal(y; mu, sigma) + mu_regularization * mean(mu^2) +
    sigma_regularization * mean(s^2); both means weighted by the rows' weights."""
    y = tf.cast(labels, tf.float32)
    positive = tf.cast(y > 0, tf.float32)
    mu, scale = logits[:, 1], logits[:, 2]
    ce = _weighted_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=positive,
                                                                logits=logits[:, 0]), weights)
    sigma = _ziln_sigma(scale, max_sigma)
    log_y = tf.math.log(tf.where(y > 0, y, 1.0))
    log_prob = (-log_y - tf.math.log(sigma) - 0.5 * tf.math.log(2.0 * math.pi)
                - tf.square(log_y - mu) / (2.0 * tf.square(sigma)))
    row = positive if weights is None else positive * weights
    nll = -tf.reduce_sum(row * log_prob) / (tf.reduce_sum(row) + 1e-8)
    return (classification_weight * ce + regression_weight * nll
            + mu_regularization * tf.reduce_mean(tf.square(mu))
            + sigma_regularization * tf.reduce_mean(tf.square(scale)))


def term_loss(tower, term, outputs, labels, weights=None):
    """Scalar value of one loss term of a tower (before its weight)."""
    name = tower.tower_name
    label = labels[tower.label_name]
    kind = term.loss_type
    params = term_params(term)
    session = None
    if params is not None and getattr(params, "session_name", ""):
        session = labels[params.session_name]
    if kind == L2_LOSS:
        values = tf.square(outputs[f"y_{name}"] - tf.cast(label, tf.float32))
        return _weighted_mean(values, weights)
    logits = outputs[f"logits_{name}"]
    if kind in (CLASSIFICATION, SOFTMAX_CROSS_ENTROPY):
        if tower.num_class == 1:
            values = tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(label, tf.float32), logits=logits)
        else:
            values = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(label, tf.int64), logits=logits)
        return _weighted_mean(values, weights)
    optional = lambda field: getattr(params, field) if params.HasField(field) else None  # noqa
    if kind == PAIR_WISE_LOSS:
        return pair_wise_loss(label, logits, weights, session, params.margin,
                              params.temperature)
    if kind == PAIRWISE_FOCAL_LOSS:
        return pairwise_focal_loss(label, logits, weights, session, params.gamma,
                                   optional("alpha"), optional("hinge_margin"),
                                   params.ohem_ratio, params.temperature)
    if kind == PAIRWISE_LOGISTIC_LOSS:
        return pairwise_logistic_loss(label, logits, weights, session, params.temperature,
                                      optional("hinge_margin"), params.ohem_ratio,
                                      params.use_label_margin)
    if kind == PAIRWISE_HINGE_LOSS:
        return pairwise_hinge_loss(label, logits, weights, session, params.temperature,
                                   params.margin, params.ohem_ratio, params.label_is_logits,
                                   params.use_label_margin, params.use_exponent)
    if kind == BINARY_FOCAL_LOSS:
        return binary_focal_loss(label, logits, weights, params.gamma, optional("alpha"),
                                 params.ohem_ratio, params.label_smoothing)
    if kind == F1_REWEIGHTED_LOSS:
        return f1_reweighted_loss(label, logits, weights, params.f1_beta_square,
                                  params.label_smoothing)
    if kind == JRC_LOSS:
        return jrc_loss(label, logits, session, weights, params.alpha, params.same_label_loss,
                        params.loss_weight_strategy)
    if kind == ZILN_LOSS:
        return ziln_loss(label, logits, weights, params.max_sigma, params.mu_regularization,
                         params.sigma_regularization, params.classification_weight,
                         params.regression_weight)
    # Config validation rejects the other types first.
    raise ValueError(f"tower {name!r}: loss_type {loss_pb2.LossType.Name(kind)} is not "
                     "supported.")


def tower_term_losses(tower, outputs, labels, weights=None) -> dict:
    """{loss key: (term, scalar value before the term's weight)} of one tower."""
    return {key: (term, term_loss(tower, term, outputs, labels, weights))
            for key, term in zip(loss_keys(tower), loss_terms(tower))}


def tower_loss(tower, outputs, labels, weights=None):
    """Scalar loss of one tower: the sum of its terms times their `weight`."""
    return tf.add_n([term.weight * value for term, value in
                     tower_term_losses(tower, outputs, labels, weights).values()])


def binary_cross_entropy_on_probs(label, probs, weights=None):
    """Cross-entropy of probabilities that are not a single sigmoid (e.g. ESMM's ctcvr)."""
    probs = tf.clip_by_value(probs, 1e-7, 1 - 1e-7)
    label = tf.cast(label, tf.float32)
    values = -(label * tf.math.log(probs) + (1 - label) * tf.math.log(1 - probs))
    return _weighted_mean(values, weights)


def uncertainty_weighted(loss, log_variance, tower, loss_type=None):
    """Kendall et al. 2018: a loss L with learned s = log(sigma^2) becomes exp(-s) L + s/2
    (classification) or exp(-s) L / 2 + s/2 (regression: loss_type, else the tower's, is
    L2_LOSS)."""
    kind = tower_loss_type(tower) if loss_type is None else loss_type
    scale = 0.5 if kind == L2_LOSS else 1.0
    return scale * tf.exp(-log_variance) * loss + 0.5 * log_variance


# -- knowledge distillation (model_config.kd) ---------------------------------------------
def _logit(probs):
    """Probabilities -> logits, clipped to [1e-7, 1 - 1e-7] first."""
    probs = tf.clip_by_value(probs, _EPSILON, 1 - _EPSILON)
    return tf.math.log(probs) - tf.math.log1p(-probs)


def distill_loss(kd, pred, soft_label, session_ids=None):
    """Scalar value of one KD term (before its loss_weight) of (batch,) outputs `pred` and
    teacher scores `soft_label` (loss.proto KD has the formulas)."""
    kind = kd.loss_type
    pred = tf.cast(pred, tf.float32)
    label = tf.cast(soft_label, tf.float32)
    if kind == L2_LOSS:
        return tf.reduce_mean(tf.square(pred - label))
    params = term_params(kd)  # KD has the pairwise losses' parameter fields of a Loss
    if kind == PAIR_WISE_LOSS:
        return pair_wise_loss(label, pred, None, session_ids, params.margin,
                              params.temperature)
    optional = lambda field: getattr(params, field) if params.HasField(field) else None  # noqa
    if kind == PAIRWISE_LOGISTIC_LOSS:
        return pairwise_logistic_loss(label, pred, None, session_ids, params.temperature,
                                      optional("hinge_margin"), params.ohem_ratio,
                                      params.use_label_margin)
    if kind == PAIRWISE_HINGE_LOSS:
        return pairwise_hinge_loss(label, pred, None, session_ids, params.temperature,
                                   params.margin, params.ohem_ratio, params.label_is_logits,
                                   params.use_label_margin, params.use_exponent)
    if kind == PAIRWISE_FOCAL_LOSS:
        return pairwise_focal_loss(label, pred, None, session_ids, params.gamma,
                                   optional("alpha"), optional("hinge_margin"),
                                   params.ohem_ratio, params.temperature)
    if pred.shape.rank == 2:
        return _distill_classes(kd, pred, label)
    student = (pred if kd.pred_is_logits else _logit(pred)) / kd.temperature
    teacher = tf.sigmoid((label if kd.label_is_logits else _logit(label)) / kd.temperature)
    if kind == BINARY_CROSS_ENTROPY_LOSS:
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=teacher,
                                                                      logits=student))
    p = tf.sigmoid(student)
    if kind == CROSS_ENTROPY_LOSS:
        return tf.reduce_mean(-teacher * tf.math.log(p + _EPSILON)
                              - (1 - teacher) * tf.math.log(1 - p + _EPSILON))
    if kind == KL_DIVERGENCE_LOSS:
        q = tf.stack([1 - teacher, teacher], axis=-1)  # (batch, 2)
        p = tf.stack([1 - p, p], axis=-1)
        q, p = tf.clip_by_value(q, _EPSILON, 1.0), tf.clip_by_value(p, _EPSILON, 1.0)
        return tf.reduce_mean(tf.reduce_sum(q * tf.math.log(q / p), axis=-1))
    # Config validation rejects the other types first.
    raise ValueError(f"kd loss_type {loss_pb2.LossType.Name(kind)} is not supported.")


def _distill_classes(kd, pred, label):
    """A KD term of (batch, num_class) outputs and a soft label of num_class values per row
    (data_config.label_dim), as EasyRec's: probabilities become log(p + 1e-7) first
    (pred_is_logits / label_is_logits false), both are divided by temperature, then
    CROSS_ENTROPY_LOSS: the mean over rows and classes of -q log(p + 1e-7) - (1 - q)
    log(1 - p + 1e-7), q and p the two softmaxes; KL_DIVERGENCE_LOSS: the mean over rows of
    sum q log(q / p) (both clipped to [1e-7, 1]); BINARY_CROSS_ENTROPY_LOSS: the mean over
    rows and classes of the sigmoid cross-entropy of sigmoid(teacher) and the student's
    logit (probabilities as logits log(p / (1 - p))); L2_LOSS: the mean squared difference."""
    kind = kd.loss_type
    if kind == L2_LOSS:
        return tf.reduce_mean(tf.square(pred - label))
    if kind == BINARY_CROSS_ENTROPY_LOSS:
        student = (pred if kd.pred_is_logits else _logit(pred)) / kd.temperature
        teacher = tf.sigmoid((label if kd.label_is_logits else _logit(label)) / kd.temperature)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=teacher,
                                                                      logits=student))
    student = (pred if kd.pred_is_logits else tf.math.log(pred + _EPSILON)) / kd.temperature
    teacher = (label if kd.label_is_logits else tf.math.log(label + _EPSILON)) / kd.temperature
    p, q = tf.nn.softmax(student), tf.nn.softmax(teacher)  # (batch, num_class)
    if kind == CROSS_ENTROPY_LOSS:
        return tf.reduce_mean(-q * tf.math.log(p + _EPSILON)
                              - (1 - q) * tf.math.log(1 - p + _EPSILON))
    if kind == KL_DIVERGENCE_LOSS:
        q, p = tf.clip_by_value(q, _EPSILON, 1.0), tf.clip_by_value(p, _EPSILON, 1.0)
        return tf.reduce_mean(tf.reduce_sum(q * tf.math.log(q / p), axis=-1))
    # Config validation rejects the other types first.
    raise ValueError(f"kd loss_type {loss_pb2.LossType.Name(kind)} does not distill "
                     "num_class > 1 outputs.")


def kd_losses(kds, towers, outputs, labels) -> dict:
    """{kd term name: loss_weight * value} of model_config.kd."""
    losses = {}
    for kd in kds:
        session = getattr(term_params(kd), "session_name", "")
        value = distill_loss(kd, outputs[kd_output(kd.pred_name, towers)],
                             labels[kd.soft_label_name], labels[session] if session else None)
        losses[kd_key(kd)] = kd.loss_weight * value
    return losses
