"""Tower losses: several terms, task-space weights, sample weights, Uncertainty weighting,
ESMM's ctcvr loss, and the seed's DeepFM-MMoE (bottom DNN, per-task linear + FM logits)."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_overrides, sample_config
from mtrec import config as config_lib
from mtrec.features.feature import FeatureSet
from mtrec.models.losses import head_outputs, tower_loss
from mtrec.models.registry import build_model
from mtrec.protos import tower_pb2


def _tower(text):
    tower = tower_pb2.TaskTower()
    from google.protobuf import text_format
    text_format.Parse(text, tower)
    return tower


def test_classification_loss_with_task_space_and_several_terms():
    tower = _tower('tower_name: "t" label_name: "y" task_space_indicator_label: "s" '
                   'in_task_space_weight: 1.0 out_task_space_weight: 0.25 '
                   'losses { loss_type: CLASSIFICATION weight: 2.0 }')
    logits = tf.constant([0.0, 2.0, -1.0])
    labels = {"y": tf.constant([1, 0, 1]), "s": tf.constant([1, 0, 1])}
    outputs = head_outputs(tower, logits[:, None])
    weights = tf.constant([1.0, 0.25, 1.0])
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=[1.0, 0.0, 1.0], logits=logits).numpy()
    expected = 2.0 * np.sum(ce * weights.numpy()) / np.sum(weights.numpy())
    assert float(tower_loss(tower, outputs, labels, weights)) == pytest.approx(expected, rel=1e-6)


def test_regression_and_multiclass_heads():
    reg = _tower('tower_name: "r" label_name: "y" loss_type: L2_LOSS')
    out = head_outputs(reg, tf.constant([[1.5], [0.0]]))
    assert set(out) == {"logits_r", "y_r"}
    assert float(tower_loss(reg, out, {"y": tf.constant([1.0, 2.0])})) == pytest.approx(
        (0.25 + 4.0) / 2)
    multi = _tower('tower_name: "m" label_name: "y" num_class: 3')
    out = head_outputs(multi, tf.constant([[1.0, 2.0, 3.0]]))
    assert out["y_m"].numpy().tolist() == [2]
    np.testing.assert_allclose(out["probs_m"].numpy().sum(), 1.0, rtol=1e-6)


def _model(config_name, edits=None):
    loaded = config_lib.load(sample_config(config_name), sets=edits or [])
    fs = FeatureSet(loaded.pipeline)
    return loaded.pipeline, fs, build_model(loaded.pipeline, fs)


def _dummy_batch(pipeline, fs, n=4):
    columns = {}
    for f in pipeline.data_config.input_fields:
        columns[f.input_name] = (tf.constant([str(i) for i in range(n)]) if f.input_type == 2
                                 else tf.constant([i % 2 for i in range(n)], tf.int32))
    return fs.preprocess(columns), columns


def test_uncertainty_weighting():
    pipeline, fs, model = _model("mmoe_on_taobao.config",
                                 ["model_config.loss_weight_strategy=Uncertainty"])
    features, labels = _dummy_batch(pipeline, fs)
    outputs = model(features)
    plain = model.compute_losses(outputs, labels)
    model.uncertainty["ctr"].assign(0.7)
    weighted = model.weighted_losses(outputs, labels)
    assert float(weighted["ctr"]) == pytest.approx(np.exp(-0.7) * float(plain["ctr"]) + 0.35,
                                                   rel=1e-5)
    assert float(weighted["cvr"]) == pytest.approx(float(plain["cvr"]), rel=1e-6)
    assert any("log_variance_ctr" in v.path for v in model.trainable_variables)


def test_esmm_ctcvr_loss_is_cross_entropy_of_the_product():
    pipeline, fs, model = _model("esmm_on_taobao.config")
    features, labels = _dummy_batch(pipeline, fs)
    outputs = model(features)
    np.testing.assert_allclose(outputs["probs_ctcvr"].numpy(),
                               (outputs["probs_ctr"] * outputs["probs_cvr"]).numpy(), rtol=1e-6)
    losses = model.compute_losses(outputs, labels)
    y = (labels["clk"].numpy() * labels["buy"].numpy()).astype(float)
    p = np.clip(outputs["probs_ctcvr"].numpy(), 1e-7, 1 - 1e-7)
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(losses["cvr"]) == pytest.approx(expected, rel=1e-5)


def _with_wide_group(config_name: str, tmp_path) -> str:
    """The sample config plus a WIDE group over three of its id features."""
    text = open(sample_config(config_name)).read().replace(
        "model_config {\n", 'model_config {\n  feature_groups {\n    group_name: "wide"\n'
        '    feature_names: "user_id"\n    feature_names: "adgroup_id"\n'
        '    feature_names: "tag_category_list"\n    wide_deep: WIDE\n  }\n', 1)
    path = tmp_path / config_name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("config_name,which", [
    ("mmoe_on_taobao.config", "mmoe"), ("esmm_on_taobao.config", "esmm"),
    ("ple_on_taobao.config", "ple"), ("dbmtl_on_taobao.config", "dbmtl"),
    ("aitm_on_taobao.config", "dbmtl"), ("shared_bottom_on_taobao.config", "shared_bottom"),
    ("simple_multi_task_on_taobao.config", "simple_multi_task")])
def test_every_multi_task_model_adds_linear_and_fm_logits(config_name, which, tmp_path):
    edits = [f"model_config.{which}.use_linear_logits=true",
             f"model_config.{which}.use_fm_logits=true"]
    loaded = config_lib.load(_with_wide_group(config_name, tmp_path), sets=edits)
    fs = FeatureSet(loaded.pipeline)
    model = build_model(loaded.pipeline, fs)
    features, _ = _dummy_batch(loaded.pipeline, fs)
    model(features)
    # Linear weights start at zero; give them values so the check below can fail.
    rng = np.random.default_rng(0)
    for name, table in model.feature_groups.tables.items():
        if name.endswith("/wide"):
            table.assign(rng.uniform(-1, 1, table.shape).astype(np.float32))
    outputs = model(features)
    groups = model.feature_groups(features)
    towers = [t.tower_name for t in model.tower_configs]
    # Per-task linear term: the wide tables have one weight per id and tower.
    assert all(t.shape == (4, len(towers)) for t in groups["wide"])
    linear = sum(t.numpy() for t in groups["wide"])  # (batch, towers)
    assert np.all(np.abs(linear) > 0)
    emb = np.stack([t.numpy() for n in model.group_names() for t, f in
                    zip(groups[n], model.feature_groups.groups[n][0])
                    if fs[f].kind != "values"], axis=1)  # (batch, features, dim)
    fm = 0.5 * np.sum(np.square(emb.sum(axis=1)) - np.square(emb).sum(axis=1), axis=1)
    deep = model.tower_logits(groups, False)
    for i, name in enumerate(towers):
        np.testing.assert_allclose(outputs[f"logits_{name}"].numpy(),
                                   deep[i].numpy()[:, 0] + linear[:, i] + fm,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_deepfm_mmoe_trains_end_to_end(small_taobao, tmp_path):
    import mtrec
    edits = ["model_config.mmoe.use_linear_logits=true", "model_config.mmoe.use_fm_logits=true",
             "model_config.mmoe.bottom_dnn=hidden_units: [32] use_bn: false"]
    train_path, test_path = small_taobao
    result = mtrec.train(_with_wide_group("mmoe_on_taobao.config", tmp_path),
                         model_dir=str(tmp_path / "m"),
                         sets=edits + fast_overrides(train_path, test_path, steps=10))
    assert result["global_step"] == 10 and "auc_ctr" in result


def test_esmm_regression_cvr_tower_gives_y_ctcvr():
    pipeline, fs, model = _model("esmm_on_taobao.config",
                                 ["model_config.esmm.cvr_tower.loss_type=L2_LOSS",
                                  "model_config.esmm.cvr_tower.metrics_set[0]=mean_squared_error {}"])
    features, labels = _dummy_batch(pipeline, fs)
    outputs = model(features)
    assert "probs_ctcvr" not in outputs and "probs_cvr" not in outputs
    np.testing.assert_allclose(outputs["y_ctcvr"].numpy(),
                               (outputs["probs_ctr"] * outputs["y_cvr"]).numpy(), rtol=1e-6)
    losses = model.compute_losses(outputs, labels)
    y = labels["clk"].numpy() * labels["buy"].numpy()
    expected = np.mean(np.square(outputs["y_ctcvr"].numpy() - y))
    assert float(losses["cvr"]) == pytest.approx(expected, rel=1e-5)


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np_softplus(x):
    return np.log1p(np.exp(x))


def test_ziln_loss_head_and_metric_label_against_numpy():
    from mtrec.models.losses import metric_label
    tower = _tower('tower_name: "ltv" label_name: "y" num_class: 3 losses { loss_type: '
                   'ZILN_LOSS ziln_loss { mu_regularization: 0.1 sigma_regularization: 0.2 '
                   'classification_weight: 0.5 regression_weight: 2.0 max_sigma: 1.5 } }')
    logits = np.array([[0.3, 0.5, -0.2], [-1.0, 1.2, 0.4], [2.0, -0.3, 3.0],
                       [0.1, 0.0, 0.0]], "float32")
    y = np.array([0.0, 3.5, 0.7, 0.0], "float32")
    weights = np.array([1.0, 2.0, 0.5, 1.0], "float32")
    outputs = head_outputs(tower, tf.constant(logits))
    got = float(tower_loss(tower, outputs, {"y": tf.constant(y)}, tf.constant(weights)))
    p, mu, s = logits.T
    positive = (y > 0).astype("float32")
    ce = -(positive * np.log(_np_sigmoid(p)) + (1 - positive) * np.log(1 - _np_sigmoid(p)))
    sigma = np.clip(_np_softplus(s), np.sqrt(1e-7), 1.5)  # row 2's softplus(3) is clipped
    safe = np.where(y > 0, y, 1.0)
    # The log-normal density, written out.
    density = np.exp(-(np.log(safe) - mu) ** 2 / (2 * sigma ** 2)) / (
        safe * sigma * np.sqrt(2 * np.pi))
    nll = -np.sum(positive * weights * np.log(density)) / np.sum(positive * weights)
    expected = (0.5 * np.sum(weights * ce) / weights.sum() + 2.0 * nll
                + 0.1 * np.mean(mu ** 2) + 0.2 * np.mean(s ** 2))
    assert got == pytest.approx(expected, rel=1e-5)
    # Head: probs = P(y > 0), y = probs * exp(mu + sigma^2 / 2); metrics read y > 0.
    np.testing.assert_allclose(outputs["probs_ltv"].numpy(), _np_sigmoid(p), rtol=1e-6)
    np.testing.assert_allclose(outputs["y_ltv"].numpy(),
                               _np_sigmoid(p) * np.exp(mu + sigma ** 2 / 2), rtol=1e-5)
    np.testing.assert_array_equal(metric_label(tower, tf.constant(y)).numpy(), positive)


@pytest.mark.parametrize("kd_text, expected", [
    ("loss_type: BINARY_CROSS_ENTROPY_LOSS temperature: 2.0",
     lambda s, t: np.mean(-(_np_sigmoid(t / 2) * np.log(_np_sigmoid(s / 2))
                            + (1 - _np_sigmoid(t / 2)) * np.log(1 - _np_sigmoid(s / 2))))),
    ("loss_type: KL_DIVERGENCE_LOSS temperature: 3.0",
     lambda s, t: np.mean(sum(q * np.log(q / p) for q, p in (
         (_np_sigmoid(t / 3), _np_sigmoid(s / 3)),
         (1 - _np_sigmoid(t / 3), 1 - _np_sigmoid(s / 3)))))),
    ("loss_type: L2_LOSS", lambda s, t: np.mean((s - t) ** 2)),
    # A probability soft label is turned into its logit first.
    ("loss_type: CROSS_ENTROPY_LOSS label_is_logits: false",
     lambda s, t: np.mean(-(_np_sigmoid(t) * np.log(_np_sigmoid(s) + 1e-7)
                            + (1 - _np_sigmoid(t)) * np.log(1 - _np_sigmoid(s) + 1e-7)))),
], ids=["bce", "kl", "l2", "ce_of_probs"])
def test_distillation_losses_against_numpy(kd_text, expected):
    from google.protobuf import text_format
    from mtrec.models.losses import distill_loss
    from mtrec.protos import loss_pb2
    kd = text_format.Parse(f'pred_name: "logits" soft_label_name: "t" {kd_text}', loss_pb2.KD())
    student = np.array([0.4, -1.2, 2.0, 0.0], "float32")
    teacher = np.array([1.0, -0.5, 0.3, -2.0], "float32")
    label = _np_sigmoid(teacher) if not kd.label_is_logits else teacher
    got = float(distill_loss(kd, tf.constant(student), tf.constant(label)))
    assert got == pytest.approx(expected(student, teacher), rel=1e-4)
