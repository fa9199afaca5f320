"""Mixed task types in one model: binary, regression and multi-class towers, and every metric."""
import csv
import re

import numpy as np
import pytest

from conftest import exact_auc, fast_overrides, sample_config

EXTRA_TOWERS = """
    task_towers {
      tower_name: "price_reg"
      label_name: "price"
      loss_type: L2_LOSS
      dnn { hidden_units: [16] use_bn: false }
    }
    task_towers {
      tower_name: "age"
      label_name: "age_level"
      num_class: 7
      dnn { hidden_units: [16] use_bn: false }
      metrics_set { accuracy {} }
    }
"""

METRICS = """eval_config {
  metrics_set { auc {} }
  metrics_set { gauc { uid_field: "user_id" } }
  metrics_set { logloss {} }
  metrics_set { accuracy {} }
  metrics_set { mean_squared_error {} }
}
"""


@pytest.fixture(scope="module")
def mixed_config(tmp_path_factory):
    text = open(sample_config("simple_multi_task_on_taobao.config")).read()
    start = text.index("eval_config {")
    end = text.index("\n}\n", start) + 3
    text = text[:start] + METRICS + text[end:]
    # The binary towers take their metrics from eval_config.
    text = re.sub(r"\n *metrics_set \{\n *auc \{\}\n *\}", "", text)
    text = text.replace("    l2_regularization: 1e-06", EXTRA_TOWERS + "    l2_regularization: 1e-06")
    # age_level has empty cells: as a label it needs a default (an empty label is an error).
    text = text.replace('input_name: "age_level"\n    input_type: STRING',
                        'input_name: "age_level"\n    input_type: INT32\n    default_val: "0"')
    path = tmp_path_factory.mktemp("cfg") / "mixed.config"
    path.write_text(text)
    return str(path)


def check_metrics(result, export_dir, test_path, scored):
    """Each reported metric equals its value computed here with numpy from the exported
    model's scores of the eval data (the last evaluation saw the exported weights)."""
    import mtrec
    mtrec.predict(export_dir, test_path, scored,
                  reserved_cols=["clk", "user_id", "age_level", "price"])
    with open(scored, newline="") as f:
        rows = list(csv.DictReader(f))
    clk, probs, age, price, y_age, y_price = (
        np.array([float(r[name]) for r in rows])
        for name in ("clk", "probs_ctr", "age_level", "price", "y_age", "y_price_reg"))
    users = np.array([r["user_id"] for r in rows])
    per_user = [exact_auc(clk[users == u], probs[users == u]) for u in np.unique(users)]
    per_user = [auc for auc in per_user if auc is not None]
    assert per_user, "the eval data must have users with clicks and non-clicks"
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    expected = {
        "auc_ctr": exact_auc(clk, probs),
        "gauc_ctr": np.mean(per_user),
        "logloss_ctr": -np.mean(clk * np.log(clipped) + (1 - clk) * np.log(1 - clipped)),
        "accuracy_ctr": np.mean((probs > 0.5) == (clk > 0)),
        "mean_squared_error_price_reg": np.mean(np.square(y_price - price)),
        "accuracy_age": np.mean(y_age == age),
    }
    for name, value in expected.items():
        # Keras' AUC counts half of each (click, non-click) pair that lands in one of its
        # 10,000 threshold buckets; an untrained model's scores crowd, so allow 5e-3.
        tolerance = 5e-3 if name == "auc_ctr" else 1e-4
        assert result[name] == pytest.approx(value, rel=1e-4, abs=tolerance), name


@pytest.mark.slow
def test_mixed_towers_train_evaluate_and_serve(mixed_config, small_taobao, tmp_path):
    import mtrec
    import tensorflow as tf
    train_path, test_path = small_taobao
    model_dir = str(tmp_path / "model")
    result = mtrec.train(mixed_config, model_dir=model_dir,
                         sets=fast_overrides(train_path, test_path, steps=10))
    # eval_config metrics apply where they make sense; the tower's own metrics_set wins.
    for name in ("auc_ctr", "gauc_ctr", "logloss_ctr", "accuracy_ctr", "auc_cvr",
                 "mean_squared_error_price_reg", "accuracy_age"):
        assert name in result, sorted(result)
    # (mean_squared_error of a binary tower is its Brier score, so it is kept.)
    for name in ("auc_price_reg", "accuracy_price_reg", "auc_age", "mean_squared_error_age"):
        assert name not in result

    export_dir = mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "export"))
    check_metrics(result, export_dir, test_path, str(tmp_path / "scored.csv"))
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert specs["age_level"].dtype == tf.int32 and specs["user_id"].dtype == tf.string
    inputs = {name: tf.zeros([3], spec.dtype) if spec.dtype != tf.string
              else tf.constant(["1", "", "NULL"]) for name, spec in specs.items()}
    out = serve(**inputs)
    assert out["probs_age"].shape == (3, 7)
    np.testing.assert_allclose(out["probs_age"].numpy().sum(axis=1), np.ones(3), rtol=1e-5)
    assert out["y_age"].dtype == tf.int64 and out["y_age"].shape == (3,)
    assert out["y_price_reg"].shape == (3,) and "probs_price_reg" not in out
    assert out["probs_ctr"].shape == (3,)


def test_gauc_matches_a_hand_computed_value():
    from mtrec.training.metrics import gauc
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    labels = np.array([1, 0, 0, 1, 0, 1])
    preds = np.array([0.9, 0.5, 0.95, 0.2, 0.8, 0.5])
    # a: positive ranks above 1 of 2 negatives -> 0.5; b: 0.0; c has no negative -> left out.
    assert gauc(groups, labels, preds) == pytest.approx(0.25)
    assert gauc(groups, labels, preds, "mean_by_sample_num") == pytest.approx((3 * 0.5) / 5)
    assert gauc(np.array(["c"]), np.array([1]), np.array([0.3])) is None


def test_metrics_per_domain(small_taobao):
    """A model with a domain feature reports every metric overall and per domain."""
    import tensorflow as tf
    from mtrec import config as config_lib
    from mtrec.features.feature import FeatureSet
    from mtrec.models.registry import build_model
    from mtrec.training.metrics import Evaluator
    from conftest import sample_config
    loaded = config_lib.load(sample_config("mmoe_on_taobao.config"))
    for tower in loaded.pipeline.model_config.mmoe.task_towers:
        # Exact AUC on four rows: the default 200 thresholds could bucket them together.
        tower.metrics_set[0].auc.num_thresholds = 100000
        tower.metrics_set.add().mean_squared_error.SetInParent()
    fs = FeatureSet(loaded.pipeline)
    model = build_model(loaded.pipeline, fs)
    # pid has hash_bucket_size 10: treat it as the domain, as multi-scenario models do.
    type(model).domain_feature = property(lambda self: "pid")
    try:
        columns = {f.input_name: (tf.constant(["a", "b", "a", "b"]) if f.input_type == 2
                                  else tf.constant([1, 0, 0, 1], tf.int32))
                   for f in loaded.pipeline.data_config.input_fields}
        features = fs.preprocess(columns)
        outputs = model(features)
        evaluator = Evaluator(model, loaded.pipeline.eval_config, outputs, columns,
                              model.domain_names)
        evaluator.update(outputs, columns, model.domain_ids(features))
        results = evaluator.results()
        assert model.num_domains == 10
    finally:
        del type(model).domain_feature
    domains = features["pid"]["ids"].numpy()
    assert "auc_ctr" in results and f"auc_ctr/domain={domains[0]}" in results
    # Domain of rows 0 and 2 ("a") holds labels clk = [1, 0]: its AUC is defined.
    probs = outputs["probs_ctr"].numpy()
    expected = 1.0 if probs[0] > probs[2] else 0.0
    assert results[f"auc_ctr/domain={domains[0]}"] == pytest.approx(expected, abs=1e-3)
    unused = next(d for d in range(10) if d not in set(domains))
    assert results[f"auc_ctr/domain={unused}"] is None
    # A per-row metric only averages its domain's rows (the mask is a per-row weight).
    in_domain = domains == domains[0]
    brier = np.mean((probs[in_domain] - columns["clk"].numpy()[in_domain]) ** 2)
    assert results[f"mean_squared_error_ctr/domain={domains[0]}"] == pytest.approx(brier,
                                                                                   rel=1e-5)


def test_default_auc_matches_the_exact_auc_when_predictions_crowd_near_zero():
    """A 2% positive rate with predictions mostly under 0.05 (a conversion task): the
    default num_thresholds reads the exact rank AUC to 1e-3; EasyRec's 200 did not."""
    import keras
    from mtrec.protos import eval_pb2
    from mtrec.training.metrics import gauc
    rng = np.random.default_rng(0)
    labels = (rng.random(50_000) < 0.02).astype("float32")
    # Positives score a little higher on average: exact AUC about 0.7.
    preds = (1 / (1 + np.exp(-(rng.normal(-4.2, 0.8, labels.size) + 0.6 * labels))))
    exact = gauc(np.zeros(labels.size), labels, preds)  # one group: the exact rank AUC

    def keras_auc(num_thresholds):
        metric = keras.metrics.AUC(num_thresholds=num_thresholds)
        metric.update_state(labels, preds.astype("float32"))
        return float(metric.result())

    assert keras_auc(eval_pb2.AUC().num_thresholds) == pytest.approx(exact, abs=1e-3)
    assert abs(keras_auc(200) - exact) > 1.5e-3
