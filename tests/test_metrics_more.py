"""EasyRec's further metrics: max_f1, precision, recall, mean_absolute_error,
root_mean_squared_error, recall_at_topk, precision_at_topk, session_auc. Each against numpy
on fixed batches, streamed over two batches; the config errors; one tiny training run."""
import numpy as np
import pytest
from google.protobuf import text_format

import conftest
from conftest import TINY_INPUTS, exact_auc, fast_overrides, sample_config
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.protos import eval_pb2, loss_pb2, tower_pb2

# Two batches of a binary tower: labels and probabilities.
LABELS = [np.array([1, 0, 1, 0, 1, 0]), np.array([0, 1, 1, 0])]
PROBS = [np.array([0.9, 0.6, 0.3, 0.1, 0.55, 0.45]), np.array([0.7, 0.2, 0.8, 0.4])]
# Two batches of a 4-class tower: class labels and probabilities.
CLASSES = [np.array([0, 2, 3]), np.array([1, 1])]
CLASS_PROBS = [np.array([[0.4, 0.3, 0.2, 0.1],
                         [0.1, 0.5, 0.3, 0.1],
                         [0.3, 0.3, 0.3, 0.1]]),
               np.array([[0.1, 0.2, 0.3, 0.4],
                         [0.05, 0.6, 0.25, 0.1]])]


def tower(kind):
    t = tower_pb2.TaskTower(tower_name="t", label_name="y")
    if kind == "regression":
        t.loss_type = loss_pb2.L2_LOSS
    elif kind == "multi_class":
        t.num_class = 4
    return t


def streamed(metric_text, kind, labels, preds, groups=None):
    """The metric's result after updating it with each batch in turn."""
    import tensorflow as tf
    from mtrec.training.metrics import _Metric
    config = text_format.Parse(metric_text, eval_pb2.EvalMetrics())
    metric = _Metric("m", config, tower(kind))
    for i, (label, pred) in enumerate(zip(labels, preds)):
        columns = {} if groups is None else {"session": tf.constant(groups[i])}
        values = metric.update(tf.constant(pred, tf.float32), tf.constant(label), None, columns)
        if values is not None:
            metric.collect(values)
    return metric.result()


def test_precision_recall_and_max_f1_of_a_binary_tower():
    y, p = np.concatenate(LABELS), np.concatenate(PROBS)

    def precision_recall(threshold):
        predicted = p > threshold
        tp = np.sum(predicted & (y == 1))
        return (tp / predicted.sum() if predicted.sum() else 0.0), tp / (y == 1).sum()

    precision, recall = precision_recall(0.5)
    assert streamed("precision {}", "binary", LABELS, PROBS) == pytest.approx(precision)
    assert streamed("recall {}", "binary", LABELS, PROBS) == pytest.approx(recall)
    f1s = []
    for threshold in [0.0] + [(i + 1) / 199 for i in range(198)] + [1.0]:
        pr, rc = precision_recall(threshold)
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    # The best cut keeps every score from the lowest positive's (0.2) up: recall 1,
    # precision 5/9.
    assert max(f1s) == pytest.approx(2 * (5 / 9) / (5 / 9 + 1))
    assert streamed("max_f1 {}", "binary", LABELS, PROBS) == pytest.approx(max(f1s), rel=1e-6)
    # One batch alone gives another value: the two batches are really accumulated.
    assert streamed("max_f1 {}", "binary", LABELS[:1], PROBS[:1]) != pytest.approx(max(f1s))


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_mean_absolute_and_root_mean_squared_error(kind):
    y = [b.astype(float) * (3.0 if kind == "regression" else 1.0) for b in LABELS]
    err = np.concatenate(PROBS) - np.concatenate(y)
    assert streamed("mean_absolute_error {}", kind, y, PROBS) == pytest.approx(
        np.mean(np.abs(err)), rel=1e-6)
    assert streamed("root_mean_squared_error {}", kind, y, PROBS) == pytest.approx(
        np.sqrt(np.mean(err ** 2)), rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_recall_and_precision_at_topk_of_a_multi_class_tower(k):
    y, p = np.concatenate(CLASSES), np.concatenate(CLASS_PROBS)
    # Rank of each row's class (1 = highest score); no ties at the true class here.
    ranks = np.array([1 + np.sum(row > row[c]) for row, c in zip(p, y)])
    hits = np.mean(ranks <= k)
    assert streamed(f"recall_at_topk {{ topk: {k} }}", "multi_class", CLASSES,
                    CLASS_PROBS) == pytest.approx(hits)
    assert streamed(f"precision_at_topk {{ topk: {k} }}", "multi_class", CLASSES,
                    CLASS_PROBS) == pytest.approx(hits / k)


def test_session_auc_averages_auc_per_session_over_batches():
    sessions = [np.array(["a", "a", "b", "b", "c", "c"]), np.array(["a", "b", "c", "d"])]
    y, p, s = (np.concatenate(x) for x in (LABELS, PROBS, sessions))
    per_session = {g: exact_auc(y[s == g], p[s == g]) for g in np.unique(s)}
    defined = [v for v in per_session.values() if v is not None]
    assert per_session["d"] is None and len(defined) == 3
    text = 'session_auc {{ session_id_field: "session" reduction: "{}" }}'
    assert streamed(text.format("mean"), "binary", LABELS, PROBS, sessions) == pytest.approx(
        np.mean(defined))
    sizes = [np.sum(s == g) for g, v in per_session.items() if v is not None]
    assert streamed(text.format("mean_by_sample_num"), "binary", LABELS, PROBS,
                    sessions) == pytest.approx(np.average(defined, weights=sizes))


# ---------------------------------------------------------------------------
# Config errors: file:line of the metric

BASE = TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  mmoe {
    expert_dnn { hidden_units: [8] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" }
    task_towers { tower_name: "cvr" label_name: "buy" }
  }
}
"""


def load_error(tmp_path, text):
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return str(path), str(info.value)


def line_of(text, needle):
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("metric, needle, words", [
    ("recall_at_topk { topk: 2 }", "recall_at_topk",
     "tower 'ctr' is binary (num_class 1): metric recall_at_topk needs a multi-class"),
    ("precision_at_topk { topk: 0 }", "topk: 0", "precision_at_topk.topk must be at least 1"),
    ('session_auc { session_id_field: "sess" }', "session_id_field",
     "session_auc.session_id_field 'sess' must name an input field"),
    ('session_auc { session_id_field: "user" reduction: "median" }', "median",
     "session_auc.reduction 'median' is not one of"),
])
def test_metric_config_errors_name_file_and_line(tmp_path, metric, needle, words):
    text = conftest.edit('tower_name: "ctr" label_name: "clk" }',
                         f'tower_name: "ctr" label_name: "clk"\n      metrics_set {{ {metric} }} }}',
                         BASE)
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, needle)}: " in message and words in message, message


def test_error_metrics_on_a_multi_class_tower_are_errors(tmp_path):
    text = conftest.edit('tower_name: "ctr" label_name: "clk" }',
                         'tower_name: "ctr" label_name: "clk" num_class: 3\n'
                         '      metrics_set { mean_absolute_error {} }\n'
                         '      metrics_set { max_f1 {} } }', BASE)
    path, message = load_error(tmp_path, text)
    for needle in ("mean_absolute_error", "max_f1"):
        assert f"{path}:{line_of(text, needle)}: tower 'ctr' is multi-class" in message, message
    assert "use one of accuracy, precision_at_topk, recall_at_topk" in message


def test_eval_config_metrics_apply_where_they_fit():
    from mtrec.training.metrics import metric_configs
    eval_config = text_format.Parse(
        "metrics_set { max_f1 {} } metrics_set { recall_at_topk { topk: 2 } } "
        "metrics_set { root_mean_squared_error {} }", eval_pb2.EvalConfig())
    kinds = {kind: [m.WhichOneof("metric") for m in metric_configs(tower(kind), eval_config)]
             for kind in ("binary", "multi_class", "regression")}
    assert kinds == {"binary": ["max_f1", "root_mean_squared_error"],
                     "multi_class": ["recall_at_topk"],
                     "regression": ["root_mean_squared_error"]}


# ---------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_training_reports_new_metrics(small_taobao, tmp_path):
    import mtrec
    train_path, test_path = small_taobao
    text = open(sample_config("mmoe_on_taobao.config")).read()
    text = text.replace("metrics_set {\n        auc {}\n      }",
                        "metrics_set { max_f1 {} }\n      metrics_set { session_auc "
                        "{ session_id_field: \"user_id\" } }", 1)
    path = tmp_path / "m.config"
    path.write_text(text)
    result = mtrec.train(str(path), model_dir=str(tmp_path / "model"),
                         sets=fast_overrides(train_path, test_path, steps=10))
    assert 0 < result["max_f1_ctr"] <= 1, result
    assert 0 <= result["session_auc_ctr"] <= 1, result
    assert "auc_ctr" not in result and "auc_cvr" in result


def test_best_checkpoint_prefers_smaller_error_metrics():
    from mtrec.protos import export_pb2
    from mtrec.training.best import metric_bigger
    export = export_pb2.ExportConfig()
    assert not metric_bigger(export, "mean_absolute_error_ctr")
    assert not metric_bigger(export, "root_mean_squared_error_price")
    assert metric_bigger(export, "max_f1_ctr") and metric_bigger(export, "recall_at_topk_age")
