"""EasyRec options of issue #22 mtrec now runs: data_config.label_dim / label_sep (labels
of several values per row, a multi-class kd soft label), eval_config.eval_online (the
metrics of the training batches) and export_config.multi_value_fields (list inputs of the
serving signature)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import edit, exact_auc
from mtrec.config import loader
from mtrec.errors import ConfigError
from mtrec.serving.saved_model import newest_export

# -- tiny configs and data --------------------------------------------------------------

# A DeepFM over a user id and a price; labels from LABELS; {model} extra model_config lines.
RANK = """\
train_config {{
  optimizer_config {{
    adam_optimizer {{ learning_rate {{ constant_learning_rate {{ learning_rate: {lr} }} }} }}
  }}
  num_steps: {steps}
  save_checkpoints_steps: {steps}
  log_step_count_steps: 2
}}
eval_config {{
{eval}
}}
data_config {{
  batch_size: 8
  eval_batch_size: 16
  shuffle: false
{labels}
  input_fields {{ input_name: "user" input_type: STRING }}
  input_fields {{ input_name: "price" input_type: INT32 }}
}}
feature_config {{
  features {{ input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }}
  features {{ input_names: "price" num_buckets: 50 embedding_dim: 4 }}
}}
model_config {{
  model_class: "DeepFM"
  feature_groups {{ group_name: "deep" feature_names: ["user", "price"] wide_deep: DEEP }}
  feature_groups {{ group_name: "wide" feature_names: ["user", "price"] wide_deep: WIDE }}
  deepfm {{
    dnn {{ hidden_units: [8] use_bn: false }}
    final_dnn {{ hidden_units: [8] use_bn: false }}
    l2_regularization: 0.0
  }}
{model}
}}
"""
KD_LABELS = """\
  label_fields: ["label", "kd_soft"]
  label_dim: [1, 5]
  label_sep: ["", ","]
  input_fields { input_name: "label" input_type: INT32 }
  input_fields { input_name: "kd_soft" input_type: STRING }"""
KD_MODEL = """\
  num_class: 5
  kd { soft_label_name: "kd_soft" pred_name: "logits" loss_type: CROSS_ENTROPY_LOSS
       temperature: 2.0 }"""
CLK_LABELS = """\
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }"""


def rank_config(labels=CLK_LABELS, model="", eval_="  metrics_set { auc {} }", steps=4,
                lr=0.01) -> str:
    return RANK.format(labels=labels, model=model, eval=eval_, steps=steps, lr=lr)


def write_kd_rows(path, n, seed=0, teacher=None):
    """label,kd_soft,user,price rows: kd_soft five teacher logits joined by ","."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(n, 5)) if teacher is None else teacher
    with open(path, "w") as f:
        for i in range(n):
            soft = ",".join(f"{v:.6f}" for v in teacher[i])
            f.write(f'{i % 5},"{soft}",u{rng.integers(0, 6)},{rng.integers(0, 50)}\n')
    return teacher


def write_clk_rows(path, n, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"{i % 2},u{rng.integers(0, 4)},{rng.integers(0, 50)}\n")


def _load(tmp_path, text):
    path = tmp_path / "x.config"
    path.write_text(text)
    return loader.load(str(path))


def _error(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(info.value)


def _line(text, needle, nth=1) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]


# -- label_dim / label_sep -----------------------------------------------------------------

def test_label_cells_split_as_easyrec_and_both_rule_forms_agree():
    from mtrec.data import schema
    cells = ["01101", "0.5,,0.25;1,2,3", " 1 , 2,3,4,5", "1,2,3,4", "a,b,c,d,e",
             "1e39,0,0,0,0", "", "0x1,0,0,0,0"]
    assert schema.label_tokens(tf.constant(["01101", "0.5,,0.25;1"]), "").to_list() == [
        [b"0", b"1", b"1", b"0", b"1"], [b"0", b".", b"5", b",", b",", b"0", b".", b"2", b"5",
                                         b";", b"1"]]
    # Each character of the separator splits; empty values are dropped.
    assert schema.label_tokens(tf.constant(["0.5,,0.25;1"]), ",;").to_list() == [
        [b"0.5", b"0.25", b"1"]]
    np.testing.assert_array_equal(
        schema.label_matrix(tf.constant(["01101", "", " 1 , 2,3,4,5"]), 5, ",").numpy(),
        [[1101, 0, 0, 0, 0], [0] * 5, [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(schema.label_matrix(tf.constant(["01101"]), 5, "").numpy(),
                                  [[0, 1, 1, 0, 1]])
    field = loader.parse_text('data_config { input_fields { input_name: "s" } }') \
        .data_config.input_fields[0]
    for sep in (",;", ""):
        rule = schema.ColumnRule(required=True, label_dim=5, label_sep=sep)
        graph = schema.row_rules(field, tf.constant(cells), tf.constant([c == "" for c in cells]),
                                 {"s": rule}).numpy().tolist()
        python = [schema.cell_problem(c, field, {"s": rule}) is None for c in cells]
        assert graph == python
    rule = schema.ColumnRule(required=True, label_dim=5, label_sep=",;")
    assert [schema.cell_problem(c, field, {"s": rule}) is None for c in cells] == [
        False, True, True, False, False, False, False, False]
    assert schema.cell_problem("1,2,3,4", field, {"s": rule}) == (
        "label 's' has 4 value(s) in '1,2,3,4' split by label_sep \",;\"; "
        "data_config.label_dim says 5")


def test_a_bad_label_cell_is_a_bad_row_with_file_and_line(tmp_path):
    from mtrec.data.reader import make_reader
    from mtrec.data.schema import column_rules
    pipeline = _load(tmp_path, rank_config(KD_LABELS, KD_MODEL)).pipeline
    rows = tmp_path / "rows.csv"
    write_kd_rows(rows, 6)
    lines = rows.read_text().splitlines()
    good = lines[:]
    lines[2] = '2,"0.1,0.2,0.3,0.4",u1,3'
    rows.write_text("\n".join(lines) + "\n")
    rules = column_rules(pipeline, {"label": 5, "kd_soft": 0})
    reader = make_reader(pipeline.data_config, [str(rows)], rules)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(reader.dataset(4, 1, False))
    assert reader.locate_error() == (
        f"{rows}:3: column 'kd_soft': label 'kd_soft' has 4 value(s) in '0.1,0.2,0.3,0.4' "
        "split by label_sep \",\"; data_config.label_dim says 5")
    good[4] = '4,"0.1,x,0.3,0.4,0.5",u1,3'
    rows.write_text("\n".join(good) + "\n")
    reader = make_reader(pipeline.data_config, [str(rows)], rules)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(reader.dataset(4, 1, False))
    assert reader.locate_error() == (f"{rows}:5: column 'kd_soft': value 'x' of label "
                                      "'kd_soft' in '0.1,x,0.3,0.4,0.5' is not a number")


@pytest.mark.parametrize("old, new, needle, expected", [
    ('input_name: "kd_soft" input_type: STRING', 'input_name: "kd_soft" input_type: FLOAT',
     'input_name: "kd_soft"', "label 'kd_soft' has label_dim 5: its input field must be STRING"),
    ("label_dim: [1, 5]", "label_dim: [1, 5, 2]", "label_dim",
     "data_config.label_dim has 3 entries for 2 label_fields"),
    ("label_dim: [1, 5]", "label_dim: [1, 4]", 'pred_name: "logits"',
     "kd pred_name 'logits' has 5 classes but the soft label 'kd_soft' has 4 value(s) per "
     "row: set its data_config.label_dim to 5"),
    ("num_class: 5", "num_class: 1", 'pred_name: "logits"',
     "kd soft label 'kd_soft' has label_dim 5 values per row but pred_name 'logits' is one "
     "score per row"),
    ("label_dim: [1, 5]", "label_dim: [1, 1]", 'input_name: "kd_soft"',
     "kd soft_label_name 'kd_soft' is a STRING column"),
])
def test_label_dim_config_errors_name_their_line(tmp_path, old, new, needle, expected):
    text = edit(old, new, rank_config(KD_LABELS, KD_MODEL))
    message = _error(tmp_path, text)
    assert f"x.config:{_line(text, needle)}: {expected}" in message, message


def test_a_tower_label_of_several_values_is_refused(tmp_path):
    text = rank_config(KD_LABELS, 'num_class: 5\n  label_name: "kd_soft"')
    message = _error(tmp_path, text)
    assert (f"x.config:{_line(text, 'label_dim')}: tower 'kd_soft' reads label 'kd_soft' of "
            "label_dim 5; a tower's label is one value per row") in message


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_multi_class_kd_terms_match_easyrec_formulas():
    from mtrec.models.losses import distill_loss
    from mtrec.protos import loss_pb2
    rng = np.random.default_rng(3)
    logits, teacher = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    probs_t = _softmax(rng.normal(size=(6, 5)))
    eps, T = 1e-7, 2.0

    def kd(kind, **kw):
        return loss_pb2.KD(loss_type=getattr(loss_pb2, kind), temperature=T, **kw)

    def value(term, pred, label):
        return float(distill_loss(term, tf.constant(pred, tf.float32),
                                  tf.constant(label, tf.float32)))

    p, q = _softmax(logits / T), _softmax(teacher / T)
    ce = np.mean(-q * np.log(p + eps) - (1 - q) * np.log(1 - p + eps))
    assert value(kd("CROSS_ENTROPY_LOSS"), logits, teacher) == pytest.approx(ce, rel=1e-5)
    # Probabilities become log(p + 1e-7) first.
    q2 = _softmax(np.log(probs_t + eps) / T)
    ce2 = np.mean(-q2 * np.log(p + eps) - (1 - q2) * np.log(1 - p + eps))
    assert value(kd("CROSS_ENTROPY_LOSS", label_is_logits=False), logits, probs_t) == \
        pytest.approx(ce2, rel=1e-5)
    qc, pc = np.clip(q, eps, 1), np.clip(p, eps, 1)
    kl = np.mean(np.sum(qc * np.log(qc / pc), axis=1))
    assert value(kd("KL_DIVERGENCE_LOSS"), logits, teacher) == pytest.approx(kl, rel=1e-5)
    s, t = logits / T, 1 / (1 + np.exp(-teacher / T))
    bce = np.mean(np.maximum(s, 0) - s * t + np.log1p(np.exp(-np.abs(s))))
    assert value(kd("BINARY_CROSS_ENTROPY_LOSS"), logits, teacher) == pytest.approx(bce, rel=1e-5)
    assert value(kd("L2_LOSS"), logits, teacher) == pytest.approx(
        np.mean((logits - teacher) ** 2), rel=1e-5)


@pytest.mark.slow
def test_multi_class_kd_trains_on_soft_labels_and_exports(tmp_path):
    import mtrec
    from mtrec.training.job import Job
    data = tmp_path / "kd.csv"
    teacher = write_kd_rows(data, 40)
    text = rank_config(KD_LABELS, KD_MODEL, eval_="  metrics_set { accuracy {} }") + (
        f'train_input_path: "{data}"\neval_input_path: "{data}"\n'
        f'model_dir: "{tmp_path / "model"}"\n')
    loaded = _load(tmp_path, text)
    # The kd term of one batch, recomputed from its logits and the teacher logits read.
    job = Job.create(loaded.pipeline, for_training=True)
    job.build()
    from mtrec.data.reader import make_reader
    from mtrec.data.schema import column_rules
    reader = make_reader(loaded.pipeline.data_config, [str(data)],
                         column_rules(loaded.pipeline, {"label": 5, "kd_soft": 0}))
    columns = next(iter(reader.dataset(8, 1, False)))
    features, side = job.split(columns)
    np.testing.assert_allclose(side["kd_soft"].numpy(), teacher[:8], atol=1e-6)
    outputs = job.model(features, training=False)
    losses = job.model.weighted_losses(outputs, side)
    p = _softmax(outputs["logits_label"].numpy() / 2.0)
    q = _softmax(teacher[:8] / 2.0)
    expected = np.mean(-q * np.log(p + 1e-7) - (1 - q) * np.log(1 - p + 1e-7))
    assert float(losses["kd_loss_logits_kd_soft"]) == pytest.approx(expected, rel=1e-4)
    result = mtrec.train(str(tmp_path / "x.config"))
    assert 0.0 <= result["accuracy_label"] <= 1.0
    assert newest_export(str(tmp_path / "model" / "export" / "final"))


# -- eval_online ----------------------------------------------------------------------------

def test_eval_online_needs_one_process(tmp_path):
    text = rank_config(eval_="  metrics_set { auc {} }\n  eval_online: true")
    _load(tmp_path, text)  # NoStrategy
    text = edit("  log_step_count_steps: 2\n",
                "  log_step_count_steps: 2\n  train_distribute: PSStrategy\n", text)
    message = _error(tmp_path, text)
    assert (f"x.config:{_line(text, 'eval_online')}: eval_config.eval_online (metrics of the "
            "training batches) runs in one process: train_distribute PSStrategy is not "
            "supported with it") in message


def _gauc(groups, labels, scores):
    """Mean per-group rank AUC over groups with both classes, without mtrec."""
    aucs = [exact_auc(labels[groups == g], scores[groups == g]) for g in np.unique(groups)]
    return float(np.mean([a for a in aucs if a is not None]))


@pytest.mark.slow
def test_eval_online_reports_the_metrics_of_the_training_batches(tmp_path, caplog):
    import mtrec
    data = tmp_path / "clk.csv"
    write_clk_rows(data, 48)
    model_dir = tmp_path / "model"
    # Learning rate 0: the weights stay put, so every training batch is scored by the
    # weights the export holds; 48 rows are one epoch of 6 steps of 8.
    text = rank_config(eval_="  metrics_set { auc { num_thresholds: 100000 } }\n"
                             "  metrics_set { gauc { uid_field: \"user\" } }\n"
                             "  eval_online: true", steps=6, lr=0.0) + (
        f'train_input_path: "{data}"\neval_input_path: "{data}"\nmodel_dir: "{model_dir}"\n')
    (tmp_path / "x.config").write_text(text)
    with caplog.at_level("INFO", logger="mtrec"):
        mtrec.train(str(tmp_path / "x.config"))
    lines = (model_dir / "online_eval_result.txt").read_text().splitlines()
    assert len(lines) == 1
    online = json.loads(lines[0])
    assert online["global_step"] == 6 and online["num_examples"] == 48
    scored = tmp_path / "scored.csv"
    mtrec.predict(saved_model=newest_export(str(model_dir / "export" / "final")),
                  input=str(data), output=str(scored), reserved_cols=["clk", "user"])
    frame = pd.read_csv(scored)
    labels, scores = frame["clk"].to_numpy(), frame["probs_clk"].to_numpy()
    # The evaluation at step 6 read the same 48 rows with the same weights.
    evaluated = json.loads((model_dir / "eval_result.txt").read_text().splitlines()[-1])
    assert online["auc_clk"] == pytest.approx(evaluated["auc_clk"], abs=1e-6)
    assert online["auc_clk"] == pytest.approx(exact_auc(labels, scores), abs=0.01)
    assert online["gauc_clk"] == pytest.approx(
        _gauc(frame["user"].to_numpy(), labels, scores), abs=1e-6)
    progress = [r.getMessage() for r in caplog.records if "| online " in r.getMessage()]
    assert progress and progress[-1].startswith("step 6/6")
    assert f"online auc_clk={online['auc_clk']:.5f} gauc_clk={online['gauc_clk']:.5f}" in \
        progress[-1]
    # The train summaries hold the metrics under their eval names.
    tags = set()
    for path in (model_dir / "train").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"auc_clk", "gauc_clk"} <= tags


# One training under MirroredStrategy over 2 logical CPUs (set before TensorFlow starts).
MIRRORED = """
import logging, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import mtrec
mtrec.train(sys.argv[1], sets=["train_config.train_distribute=MirroredStrategy",
                               "data_config.batch_size=4"])
"""


@pytest.mark.slow
def test_eval_online_under_mirrored_strategy_reads_the_first_replica(tmp_path):
    data, first = tmp_path / "clk.csv", tmp_path / "first.csv"
    write_clk_rows(data, 48)
    # Replica 0 takes batches 0, 2, 4, ... of 4 rows; evaluated alone they give the same
    # metrics (the learning rate is 0: the weights stay put).
    rows = data.read_text().splitlines()
    first.write_text("\n".join(r for i, r in enumerate(rows) if (i // 4) % 2 == 0) + "\n")
    model_dir = tmp_path / "model"
    text = rank_config(eval_="  metrics_set { gauc { uid_field: \"user\" } }\n"
                             "  eval_online: true", steps=6, lr=0.0) + (
        f'train_input_path: "{data}"\neval_input_path: "{first}"\nmodel_dir: "{model_dir}"\n')
    (tmp_path / "x.config").write_text(text)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "x.config")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    online = json.loads((model_dir / "online_eval_result.txt").read_text())
    # 2 replicas of 4 rows a step: the first replica's 4 rows of each of the 6 steps.
    assert online["global_step"] == 6 and online["num_examples"] == 24
    evaluated = json.loads((model_dir / "eval_result.txt").read_text().splitlines()[-1])
    assert evaluated["num_examples"] == 24
    assert online["gauc_clk"] == pytest.approx(evaluated["gauc_clk"], abs=1e-6)


# -- multi_value_fields -----------------------------------------------------------------------

LIST_INPUTS = """\
train_config {
  optimizer_config { adam_optimizer { learning_rate { constant_learning_rate {
    learning_rate: 0.05 } } } }
  num_steps: 3
  save_checkpoints_steps: 3
}
data_config {
  batch_size: 8
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "tags" input_type: STRING }
  input_fields { input_name: "ids" input_type: STRING }
  input_fields { input_name: "raw" input_type: STRING }
  input_fields { input_name: "user" input_type: STRING }
}
feature_config {
  features { input_names: "tags" feature_type: TagFeature separator: "|"
             hash_bucket_size: 50 embedding_dim: 4 }
  features { input_names: "ids" feature_type: TagFeature separator: ";" num_buckets: 20
             embedding_dim: 4 }
  features { input_names: "raw" feature_type: RawFeature separator: "," raw_input_dim: 3 }
  features { input_names: "user" hash_bucket_size: 50 embedding_dim: 4 }
}
model_config {
  model_class: "DeepFM"
  feature_groups { group_name: "deep" feature_names: ["tags", "ids", "raw", "user"]
                   wide_deep: DEEP }
  feature_groups { group_name: "wide" feature_names: ["tags", "ids", "user"] wide_deep: WIDE }
  deepfm { dnn { hidden_units: [8] use_bn: false } l2_regularization: 0.0 }
}
export_config {
  multi_value_fields { input_name: ["tags", "ids", "raw"] }
  placeholder_named_by_input: true
}
"""


def _list_rows(n, seed=0):
    """(tags lists, id lists, raw triples, users, clk) of n rows, lists of varying length."""
    rng = np.random.default_rng(seed)
    tags = [[f"t{v}" for v in rng.integers(0, 30, rng.integers(0, 4))] for _ in range(n)]
    ids = [[int(v) for v in rng.integers(0, 20, rng.integers(1, 4))] for _ in range(n)]
    raw = rng.normal(size=(n, 3)).astype(np.float32)
    users = [f"u{v}" for v in rng.integers(0, 5, n)]
    return tags, ids, raw, users, [i % 2 for i in range(n)]


# Runs in a fresh interpreter that never imports mtrec: scores rows through serving_default's
# list inputs and through the `columns` signature's joined cells.
BARE_LISTS = r"""
import json, sys
import tensorflow as tf
assert "mtrec" not in sys.modules
export, rows = json.loads(sys.stdin.read())
loaded = tf.saved_model.load(export)
serve, columns = loaded.signatures["serving_default"], loaded.signatures["columns"]
specs = {k: [list(v.shape), v.dtype.name] for k, v in serve.structured_input_signature[1].items()}
width = lambda lists: max(len(x) for x in lists)
pad = lambda lists, fill: [x + [fill] * (width(lists) - len(x)) for x in lists]
lists = serve(tags=tf.constant(pad(rows["tags"], ""), tf.string),
              ids=tf.constant(pad(rows["ids"], -1), tf.int64),
              raw=tf.constant(rows["raw"], tf.float32), user=tf.constant(rows["users"]))
joined = columns(tags=tf.constant(["|".join(t) for t in rows["tags"]]),
                 ids=tf.constant([";".join(map(str, i)) for i in rows["ids"]]),
                 raw=tf.constant([",".join(repr(v) for v in r) for r in rows["raw"]]),
                 user=tf.constant(rows["users"]))
print(json.dumps({"specs": specs, "lists": lists["probs_clk"].numpy().tolist(),
                  "joined": joined["probs_clk"].numpy().tolist(),
                  "mtrec_imported": "mtrec" in sys.modules}))
"""


@pytest.mark.slow
def test_multi_value_fields_take_lists_and_score_like_joined_cells(tmp_path):
    import mtrec
    tags, ids, raw, users, clk = _list_rows(24)
    data = tmp_path / "lists.csv"
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        for row in zip(clk, tags, ids, raw, users):
            writer.writerow([row[0], "|".join(row[1]), ";".join(map(str, row[2])),
                             ",".join(repr(float(v)) for v in row[3]), row[4]])
    model_dir = tmp_path / "model"
    (tmp_path / "x.config").write_text(
        LIST_INPUTS + f'train_input_path: "{data}"\nmodel_dir: "{model_dir}"\n')
    mtrec.train(str(tmp_path / "x.config"))
    export = newest_export(str(model_dir / "export" / "final"))
    request = {"tags": tags, "ids": ids, "raw": raw.tolist(), "users": users}
    answer = subprocess.run([sys.executable, "-c", BARE_LISTS], input=json.dumps([export, request]),
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
                            cwd=str(tmp_path), timeout=300)
    assert answer.returncode == 0, answer.stderr[-2000:]
    out = json.loads(answer.stdout.strip().splitlines()[-1])
    assert not out["mtrec_imported"]
    assert out["specs"] == {"tags": [[None, None], "string"], "ids": [[None, None], "int64"],
                            "raw": [[None, None], "float32"], "user": [[None], "string"]}
    np.testing.assert_allclose(out["lists"], out["joined"], rtol=1e-6)
    assert len(set(out["lists"])) > 1  # the rows' scores differ


@pytest.mark.parametrize("old, new, needle, expected", [
    ('input_name: ["tags", "ids", "raw"]', 'input_name: ["tags", "user"]', "multi_value_fields",
     "multi_value_fields: input 'user' cannot be a list: IdFeature reads one value per row"),
    ('input_name: ["tags", "ids", "raw"]', 'input_name: ["tags", "nope"]', "multi_value_fields",
     "multi_value_fields: 'nope' is not an input field"),
    ("  placeholder_named_by_input: true\n", "  multi_placeholder: false\n",
     "multi_value_fields", "export_config.multi_value_fields shapes inputs of the "
     "multi_placeholder signature"),
])
def test_multi_value_fields_config_errors(tmp_path, old, new, needle, expected):
    text = edit(old, new, LIST_INPUTS)
    message = _error(tmp_path, text)
    assert f"x.config:{_line(text, needle)}: {expected}" in message, message
