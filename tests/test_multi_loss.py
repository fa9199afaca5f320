"""EasyRec's loss family: each loss against a numpy computation on a small batch, several
terms per tower (weights, names, learn_loss_weight), the config errors, and EasyRec's
multi-loss MMoE sample end to end."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

import conftest
from conftest import TINY_INPUTS
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.models import losses
from mtrec.models.registry import build_model
from mtrec.protos import tower_pb2

# A batch of 6 rows in two sessions, graded labels for the pairwise losses.
LOGITS = np.array([0.3, -1.2, 2.0, 0.5, -0.4, 1.1], np.float32)
BINARY = np.array([1, 0, 1, 0, 0, 1], np.float32)
GRADED = np.array([2, 0, 1, 1, 0, 3], np.float32)
SESSIONS = np.array([b"a", b"a", b"a", b"b", b"b", b"b"])
WEIGHTS = np.array([1.0, 0.5, 2.0, 1.0, 0.25, 1.5], np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def sigmoid_ce(y, s):
    return -(y * np.log(sigmoid(s)) + (1 - y) * np.log(1 - sigmoid(s)))


def pairs(labels, sessions=None):
    """(i, j) with labels[i] > labels[j] (in one session)."""
    n = len(labels)
    return [(i, j) for i in range(n) for j in range(n) if labels[i] > labels[j]
            and (sessions is None or sessions[i] == sessions[j])]


def pair_mean(values, weights=None):
    """{(i, j): value} -> weighted by w_i."""
    w = {p: 1.0 if weights is None else weights[p[0]] for p in values}
    return sum(w[p] * v for p, v in values.items()) / sum(w.values())


def hard_mean(values, ratio):
    k = int(np.rint(len(values) * ratio))
    top = sorted(values, reverse=True)[:k]
    top = [v for v in top if v > 0]
    return sum(top) / len(top)


def focal(y, s, gamma, alpha=None, smoothing=0.0):
    p = np.clip(sigmoid(s), 1e-7, 1 - 1e-7)
    p_t = y * p + (1 - y) * (1 - p)
    a = 1.0 if alpha is None else y * alpha + (1 - alpha) * (1 - y)
    return a * (1 - p_t) ** gamma * sigmoid_ce(y * (1 - smoothing) + 0.5 * smoothing, s)


def tf_(x):
    return tf.constant(x)


def close(tf_value, expected):
    np.testing.assert_allclose(float(tf_value), expected, rtol=2e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# Each loss against numpy


def test_pair_wise_loss_with_session_margin_temperature_and_weights():
    got = losses.pair_wise_loss(tf_(GRADED), tf_(LOGITS), tf_(WEIGHTS), tf_(SESSIONS),
                                margin=0.2, temperature=0.5)
    values = {(i, j): softplus(-((LOGITS[i] - LOGITS[j]) / 0.5 - 0.2))
              for i, j in pairs(GRADED, SESSIONS)}
    assert len(values) == 6  # 3 pairs per session, none across them
    close(got, pair_mean(values, WEIGHTS))
    # Without a session every ordered pair of the batch counts.
    got = losses.pair_wise_loss(tf_(BINARY), tf_(LOGITS))
    close(got, pair_mean({(i, j): softplus(-(LOGITS[i] - LOGITS[j])) for i, j in pairs(BINARY)}))


def test_pairwise_losses_without_pairs_are_zero():
    same = tf_(np.ones(4, np.float32))
    assert float(losses.pair_wise_loss(same, tf_(LOGITS[:4]))) == 0.0
    assert float(losses.pairwise_logistic_loss(same, tf_(LOGITS[:4]), ohem_ratio=0.5)) == 0.0


def test_pairwise_focal_loss_with_hinge_margin_alpha_and_ohem():
    d = {(i, j): (LOGITS[i] - LOGITS[j]) / 2.0 for i, j in pairs(GRADED, SESSIONS)}
    kept = {p: v for p, v in d.items() if v < 1.0}
    assert 0 < len(kept) < len(d)
    got = losses.pairwise_focal_loss(tf_(GRADED), tf_(LOGITS), tf_(WEIGHTS), tf_(SESSIONS),
                                     gamma=1.5, alpha=0.7, hinge_margin=1.0, temperature=2.0)
    close(got, pair_mean({p: focal(1.0, v, 1.5, 0.7) for p, v in kept.items()}, WEIGHTS))
    got = losses.pairwise_focal_loss(tf_(GRADED), tf_(LOGITS), None, tf_(SESSIONS), gamma=2.0,
                                     ohem_ratio=0.5, temperature=2.0)
    close(got, hard_mean([focal(1.0, v, 2.0) for v in d.values()], 0.5))


def test_pairwise_logistic_loss_margins_and_ohem():
    all_pairs = pairs(GRADED, SESSIONS)
    got = losses.pairwise_logistic_loss(tf_(GRADED), tf_(LOGITS), tf_(WEIGHTS), tf_(SESSIONS),
                                        temperature=0.5, use_label_margin=True)
    expected = {(i, j): softplus(-((LOGITS[i] - LOGITS[j]) / 0.5 - (GRADED[i] - GRADED[j]) / 0.5))
                for i, j in all_pairs}
    close(got, pair_mean(expected, WEIGHTS))
    got = losses.pairwise_logistic_loss(tf_(GRADED), tf_(LOGITS), tf_(WEIGHTS), tf_(SESSIONS),
                                        hinge_margin=0.3, ohem_ratio=0.5)
    values = [WEIGHTS[i] * softplus(-(LOGITS[i] - LOGITS[j] - 0.3)) for i, j in all_pairs]
    close(got, hard_mean(values, 0.5))


def test_pairwise_hinge_loss_variants():
    all_pairs = pairs(GRADED, SESSIONS)
    # Defaults: label margin, labels on the logits' scale.
    got = losses.pairwise_hinge_loss(tf_(GRADED), tf_(LOGITS), tf_(WEIGHTS), tf_(SESSIONS),
                                     temperature=2.0)
    expected = {(i, j): max(0.0, (GRADED[i] - GRADED[j]) / 2 - (LOGITS[i] - LOGITS[j]) / 2)
                for i, j in all_pairs}
    close(got, pair_mean(expected, WEIGHTS))
    got = losses.pairwise_hinge_loss(tf_(GRADED), tf_(LOGITS), None, tf_(SESSIONS), margin=0.8,
                                     use_label_margin=False)
    close(got, pair_mean({(i, j): max(0.0, 0.8 - (LOGITS[i] - LOGITS[j])) for i, j in all_pairs}))
    got = losses.pairwise_hinge_loss(tf_(GRADED), tf_(LOGITS), None, tf_(SESSIONS),
                                     use_exponent=True, label_is_logits=False)
    y, s = sigmoid(GRADED), sigmoid(LOGITS)
    close(got, pair_mean({(i, j): max(0.0, np.exp((y[i] - y[j]) - (s[i] - s[j])) - 1)
                          for i, j in all_pairs}))


def test_binary_focal_loss():
    got = losses.binary_focal_loss(tf_(BINARY), tf_(LOGITS), tf_(WEIGHTS), gamma=2.0, alpha=0.25,
                                   label_smoothing=0.1)
    values = focal(BINARY, LOGITS, 2.0, 0.25, 0.1)
    close(got, np.sum(values * WEIGHTS) / np.sum(WEIGHTS))
    got = losses.binary_focal_loss(tf_(BINARY), tf_(LOGITS), None, gamma=0.0, ohem_ratio=0.5)
    close(got, hard_mean(list(sigmoid_ce(BINARY, LOGITS)), 0.5))


def test_f1_reweighted_loss():
    beta2 = 2.25
    got = losses.f1_reweighted_loss(tf_(BINARY), tf_(LOGITS), tf_(WEIGHTS), beta2)
    n, positives, tp = len(BINARY), BINARY.sum(), sigmoid(LOGITS).sum()
    negative = tp / (beta2 * positives + (n - positives) - (n - tp) + 1e-8)
    values = np.where(BINARY == 1, 1.0, negative) * sigmoid_ce(BINARY, LOGITS)
    close(got, np.sum(values * WEIGHTS) / np.sum(WEIGHTS))


def log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def jrc_reference(labels, logits, sessions, weights, alpha, same_label_loss):
    n = len(labels)
    ce = -np.array([log_softmax(logits[i])[labels[i]] for i in range(n)])
    ce = np.sum(ce * weights) / np.sum(weights)
    per_row = []
    for j in range(n):
        members = [i for i in range(n) if sessions[i] == sessions[j]]
        if same_label_loss:
            loss = 0.0
            for c in (0, 1):
                scores = log_softmax([logits[i][c] for i in members])
                loss -= sum(s for i, s in zip(members, scores) if labels[i] == c)
            per_row.append(weights[j] * loss / len(members))
        else:
            c = labels[j]
            rivals = [i for i in members if i == j or labels[i] != c]
            scores = log_softmax([logits[i][c] for i in rivals])
            per_row.append(-weights[j] * scores[rivals.index(j)])
    return alpha * ce + (1 - alpha) * np.mean(per_row)


@pytest.mark.parametrize("same_label_loss", [True, False])
def test_jrc_loss(same_label_loss):
    logits = np.stack([-LOGITS * 0.5, LOGITS], axis=1)  # (6, 2)
    labels = BINARY.astype(np.int64)
    got = losses.jrc_loss(tf_(labels), tf_(logits), tf_(SESSIONS), tf_(WEIGHTS), alpha=0.3,
                          same_label_loss=same_label_loss)
    close(got, jrc_reference(labels, logits, SESSIONS, WEIGHTS, 0.3, same_label_loss))


def test_jrc_random_strategies_mix_the_two_parts():
    logits = np.stack([-LOGITS * 0.5, LOGITS], axis=1)
    args = (tf_(BINARY.astype(np.int64)), tf_(logits), tf_(SESSIONS), tf_(WEIGHTS))
    ce = float(losses.jrc_loss(*args, alpha=1.0))
    ge = float(losses.jrc_loss(*args, alpha=0.0))
    assert abs(ce - ge) > 0.1
    tf.random.set_seed(5)
    for strategy in ("random_uniform", "random_normal"):
        for _ in range(5):
            value = float(losses.jrc_loss(*args, loss_weight_strategy=strategy))
            assert min(ce, ge) - 1e-5 <= value <= max(ce, ge) + 1e-5
    values = {round(float(losses.jrc_loss(*args, loss_weight_strategy="random_bernoulli")), 4)
              for _ in range(30)}
    assert values <= {round(ce, 4), round(ge, 4), round((ce + ge) / 2, 4)} and len(values) > 1


def _tower(text):
    return text_format.Parse(text, tower_pb2.TaskTower())


def test_softmax_cross_entropy_term_and_jrc_head():
    tower = _tower('tower_name: "t" label_name: "y" num_class: 3 '
                   'losses { loss_type: SOFTMAX_CROSS_ENTROPY }')
    logits = np.array([[0.1, 1.0, -0.5], [2.0, 0.3, 0.0]], np.float32)
    outputs = losses.head_outputs(tower, tf_(logits))
    got = losses.tower_loss(tower, outputs, {"y": tf_([1, 0])})
    close(got, -np.mean([log_softmax(logits[0])[1], log_softmax(logits[1])[0]]))
    jrc = _tower('tower_name: "j" label_name: "y" num_class: 2 '
                 'losses { loss_type: JRC_LOSS jrc_loss { session_name: "s" } }')
    outputs = losses.head_outputs(jrc, tf_(logits[:, :2]))
    np.testing.assert_allclose(outputs["probs_j"].numpy(),
                               [np.exp(log_softmax(r)[1]) for r in logits[:, :2]], rtol=1e-6)
    assert losses.binary_output(jrc) and losses.tower_loss_type(jrc) == losses.CLASSIFICATION


# ---------------------------------------------------------------------------
# Several terms in a model: weights, names, learn_loss_weight

MODEL = TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  mmoe {
    expert_dnn { hidden_units: [8] }
    num_expert: 2
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      weight: 3.0
      dnn { hidden_units: [4] }
      losses { loss_type: CLASSIFICATION weight: 2.0 }
      losses { loss_type: PAIR_WISE_LOSS weight: 0.5 pairwise_loss { session_name: "user" } }
      losses { loss_type: BINARY_FOCAL_LOSS loss_name: "focal" weight: 0.1 }
    }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] } }
    l2_regularization: 0.0
  }
}
"""
COLUMNS = {"clk": tf_([1, 0, 1, 0, 0, 1]), "buy": tf_([0, 0, 1, 0, 0, 1]),
           "user": tf_(["a", "a", "a", "b", "b", "b"]), "price": tf_([3, 7, 11, 2, 9, 5])}


def build(text):
    pipeline = config_lib.from_pipeline(config_lib.parse_text(text)).pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    features = feature_set.preprocess(dict(COLUMNS))
    return pipeline, model, features


def test_terms_are_named_and_weighted_as_documented():
    pipeline, model, features = build(MODEL)
    outputs = model(features)
    got = model.weighted_losses(outputs, COLUMNS)
    assert list(got) == ["ctr/cross_entropy_loss", "ctr/pair_wise_loss", "ctr/focal", "cvr"]
    s, y = outputs["logits_ctr"].numpy(), COLUMNS["clk"].numpy().astype(np.float32)
    sessions = COLUMNS["user"].numpy()
    close(got["ctr/cross_entropy_loss"], 3.0 * 2.0 * np.mean(sigmoid_ce(y, s)))
    close(got["ctr/pair_wise_loss"], 3.0 * 0.5 * pair_mean(
        {(i, j): softplus(-(s[i] - s[j])) for i, j in pairs(y, sessions)}))
    close(got["ctr/focal"], 3.0 * 0.1 * np.mean(focal(y, s, 2.0)))
    # The session column rides along with the labels; the training log shows these keys.
    from mtrec.training.job import side_columns
    assert "user" in side_columns(pipeline)


def test_learn_loss_weight_learns_one_variable_per_term():
    text = conftest.edit("losses { loss_type: PAIR_WISE_LOSS weight: 0.5",
                         "losses { loss_type: PAIR_WISE_LOSS weight: 0.5 learn_loss_weight: true",
                         MODEL)
    text = conftest.edit('model_class: "MMoE"',
                         'model_class: "MMoE"\n  loss_weight_strategy: Uncertainty', text)
    _, model, features = build(text)
    outputs = model(features, training=True)
    plain = model.compute_losses(outputs, COLUMNS)
    assert list(model.uncertainty) == ["ctr/pair_wise_loss"]  # only the term that asks
    variable = model.uncertainty["ctr/pair_wise_loss"]
    variable.assign(0.4)
    weighted = model.weighted_losses(outputs, COLUMNS)
    # The learned term ignores its fixed weights: exp(-s) L + s / 2.
    s, y = outputs["logits_ctr"].numpy(), COLUMNS["clk"].numpy()
    raw = pair_mean({(i, j): softplus(-(s[i] - s[j]))
                     for i, j in pairs(y, COLUMNS["user"].numpy())})
    close(plain["ctr/pair_wise_loss"], raw)
    close(weighted["ctr/pair_wise_loss"], np.exp(-0.4) * raw + 0.2)
    close(weighted["cvr"], float(plain["cvr"]))
    assert variable in model.trainable_variables
    optimizer = tf.keras.optimizers.SGD(0.5)
    for _ in range(3):
        with tf.GradientTape() as tape:
            total = tf.add_n(list(model.weighted_losses(model(features, training=True),
                                                         COLUMNS).values()))
        grads = tape.gradient(total, [variable])
        assert grads[0] is not None and float(grads[0]) != 0.0
        optimizer.apply_gradients(zip(grads, [variable]))
    assert float(variable) != pytest.approx(0.4, abs=1e-4)


# ---------------------------------------------------------------------------
# Config errors: one per mistake, with file:line


def load_error(tmp_path, text):
    path = tmp_path / "pipeline.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return str(path), str(info.value)


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old,new,needle,message", [
    ('losses { loss_type: CLASSIFICATION weight: 2.0 }',
     'losses { loss_type: SOFTMAX_CROSS_ENTROPY weight: 2.0 }', "SOFTMAX_CROSS_ENTROPY",
     "SOFTMAX_CROSS_ENTROPY needs num_class >= 2"),
    ('losses { loss_type: CLASSIFICATION weight: 2.0 }',
     'losses { loss_type: LISTWISE_RANK_LOSS weight: 2.0 }', "LISTWISE_RANK_LOSS",
     "not supported by mtrec"),
    ('losses { loss_type: CLASSIFICATION weight: 2.0 }',
     'losses { loss_type: JRC_LOSS }', "JRC_LOSS", "JRC_LOSS reads two logits"),
    ('pairwise_loss { session_name: "user" }', 'pairwise_loss { session_name: "uid" }',
     "uid", "session_name 'uid' is not an input field"),
    ('pairwise_loss { session_name: "user" }', 'binary_focal_loss { gamma: 1 }',
     "binary_focal_loss", "`binary_focal_loss` does not apply to loss_type PAIR_WISE_LOSS"),
    ('losses { loss_type: CLASSIFICATION weight: 2.0 }',
     'losses { loss_type: JRC_LOSS jrc_loss { session_name: "user" '
     'loss_weight_strategy: "uncertainty" } }', "loss_weight_strategy",
     "EasyRec's 'uncertainty' is not supported by mtrec"),
    ('pairwise_loss { session_name: "user" }', 'pairwise_loss { temperature: -1 }',
     "temperature", "temperature must be > 0"),
    ('weight: 0.5 pairwise_loss', 'weight: 0.5 learn_loss_weight: true pairwise_loss',
     "learn_loss_weight", "learn_loss_weight needs model_config.loss_weight_strategy"),
    ('loss_name: "focal"', 'loss_name: "pair_wise_loss"', "BINARY_FOCAL_LOSS",
     "two loss terms are named 'pair_wise_loss'"),
])
def test_loss_that_does_not_fit_is_one_error_with_its_line(tmp_path, old, new, needle, message):
    text = conftest.edit(old, new, MODEL)
    path, error = load_error(tmp_path, text)
    assert message in error
    assert error.count(message) == 1
    if needle in text:
        assert f"{path}:{line_of(text, needle)}: " in error


def test_pairwise_loss_on_a_regression_tower_is_an_error(tmp_path):
    text = conftest.edit('losses { loss_type: CLASSIFICATION weight: 2.0 }',
                         'losses { loss_type: L2_LOSS weight: 2.0 }', MODEL)
    path, error = load_error(tmp_path, text)
    assert "L2_LOSS (a regression output) cannot be combined with BINARY_FOCAL_LOSS, " \
           "PAIR_WISE_LOSS" in error
    assert re.search(re.escape(path) + r":\d+: tower 'ctr': L2_LOSS", error)


# ---------------------------------------------------------------------------
# EasyRec's sample: mmoe_on_taobao_with_multi_loss.config, paths replaced

SAMPLE = "/work/shared/easyrec/samples/model_config/mmoe_on_taobao_with_multi_loss.config"


def sample_config(tmp_path):
    if not os.path.isfile(SAMPLE):
        pytest.skip("EasyRec's sample configs are not on this machine")
    with open(SAMPLE, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("data/test/tb_data/", conftest.DATA + "/").replace(
        "experiments/mmoe_taobao_ckpt", str(tmp_path / "model"))
    path = tmp_path / "mmoe_multi_loss.config"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_multi_loss_mmoe_sample_passes_check(tmp_path):
    loaded = config_lib.load(sample_config(tmp_path))
    tower = config_lib.task_towers(loaded.pipeline.model_config)[0]
    assert losses.loss_keys(tower) == ["ctr/cross_entropy_loss", "ctr/pair_wise_loss"]
    # The sample's 20 input_fields are the columns of the repo's Taobao data.
    with open(os.path.join(conftest.DATA, "taobao_train_data")) as f:
        assert len(f.readline().split(",")) == len(loaded.pipeline.data_config.input_fields)


def test_dbmtl_multi_loss_sample_passes_check_and_its_jrc_tower_is_binary(tmp_path):
    path = SAMPLE.replace("mmoe_on_taobao_with_multi_loss", "dbmtl_on_taobao_with_multi_loss")
    if not os.path.isfile(path):
        pytest.skip("EasyRec's sample configs are not on this machine")
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("data/test/tb_data/", conftest.DATA + "/")
    pipeline = config_lib.from_pipeline(config_lib.parse_text(text)).pipeline
    ctr, cvr = config_lib.task_towers(pipeline.model_config)
    assert losses.loss_keys(ctr) == ["ctr/f1_reweighted_loss", "ctr/pair_wise_loss"]
    assert losses.loss_keys(cvr) == ["cvr"] and cvr.num_class == 2
    from mtrec.training.job import side_columns
    from mtrec.training.metrics import metric_configs
    assert "user_id" in side_columns(pipeline)  # JRC's session column
    # JRC's head is one probability per row, so the sample's auc applies to it.
    assert [m.WhichOneof("metric") for m in metric_configs(cvr, pipeline.eval_config)] == ["auc"]


@pytest.mark.slow
def test_multi_loss_mmoe_sample_trains_and_exports(tmp_path):
    import mtrec
    config = sample_config(tmp_path)
    # 20 steps of 1024 rows (the sample's 4096 takes minutes on 2 cores); a non-finite
    # loss would stop training with a TrainingError.
    result = mtrec.train(config, sets=["train_config.num_steps=20", "data_config.batch_size=1024",
                                       "train_config.log_step_count_steps=10"])
    assert result["global_step"] == 20
    assert np.isfinite(result["auc_ctr"]) and np.isfinite(result["auc_cvr"])
    exported = mtrec.export(config, export_dir=str(tmp_path / "export"))
    loaded = tf.saved_model.load(exported)
    assert loaded.signatures


# ---------------------------------------------------------------------------
# Model-level losses (EasyRec's model_config.losses): a RankModel's single output

RANK = TINY_INPUTS + """\
model_config {
  model_class: 'RankModel'
  feature_groups { group_name: 'all' feature_names: 'user' feature_names: 'price' }
  backbone {
    blocks { name: "mlp" inputs { feature_group_name: "all" }
             keras_layer { class_name: "MLP" mlp { hidden_units: [4] } } }
  }
  losses { loss_type: F1_REWEIGHTED_LOSS f1_reweighted_loss { f1_beta_square: 2.25 } }
  losses { loss_type: PAIR_WISE_LOSS weight: 0.5 }
}
"""


def test_model_level_losses_are_the_rank_model_terms():
    _, model, features = build(RANK)
    outputs = model(features)
    got = model.compute_losses(outputs, COLUMNS)
    assert list(got) == ["clk/f1_reweighted_loss", "clk/pair_wise_loss"]
    s, y = outputs["logits_clk"].numpy(), COLUMNS["clk"].numpy().astype(np.float32)
    close(got["clk/f1_reweighted_loss"],
          float(losses.f1_reweighted_loss(tf_(y), tf_(s), None, 2.25)))
    close(got["clk/pair_wise_loss"], 0.5 * pair_mean(
        {(i, j): softplus(-(s[i] - s[j])) for i, j in pairs(y)}))


def test_model_level_losses_on_a_multi_task_model_is_an_error(tmp_path):
    text = conftest.edit("  mmoe {", "  losses { loss_type: PAIR_WISE_LOSS }\n  mmoe {", MODEL)
    path, error = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'losses {')}: model_config.losses are the loss terms of a " \
           "rank model's single output; MMoE has task towers" in error
