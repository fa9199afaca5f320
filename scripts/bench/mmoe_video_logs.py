#!/usr/bin/env python
"""Benchmark mtrec's multi-task models on KuaiRand-27K (like/hate subset), temporal split.

Models (--model, several separated by commas, or "all"): mmoe, mmoe_deepfm (MMoE with
use_linear_logits + use_fm_logits), ple, dbmtl, dbmtl_mmoe (DBMTL with expert_dnn +
num_expert), aitm (DBMTL with use_ait_module), shared_bottom, simple_multi_task, esmm.

Steps (all derived files go to --work_dir, never into the repository):
  1. split the TSV by date into train / test files (header kept, TAB-separated);
  2. per model, write an mtrec config (CONFIG_TEMPLATE plus the model's block below) with
     one CLASSIFICATION tower per task: is_click, long_view, label (like=1 / hate=0);
     ESMM has two: ctr = is_click, cvr = long_view (see ESMM below);
  3. run `mtrec train --config CFG --model_dir DIR` once per seed (--seeds, default 1,2,3;
     train_config.seed), which trains, evaluates on the test file and exports a
     SavedModel; read DIR/eval_result.txt;
  4. unless --no_exact_auc, score the test rows with the exported SavedModel (plain
     TensorFlow serving signature) and recompute each AUC exactly (rank formula);
  5. fit the logistic baselines (numpy, one-hot user_id, video_id, hour): L2 picked on the
     last training day ("L2 tuned", the comparison); L2 = 1/n (scikit-learn's C=1
     objective); with --ids hash also C=1 on the ids hashed as in the mtrec config;
     cached in --work_dir;
  6. print markdown tables and write them (and results.json) to --work_dir.

Features. Label leakage is avoided: play_time_ms and comment_stay_time are outcomes of
the impression and every is_* / long_view / label column is a target, so none is a
feature. date, time_ms and timestamp are not features either: under a temporal split
every test value is unseen in training. What remains: user_id, video_id, the hour of
day (hourmin bucketized at 100, 200, ..., 2300, i.e. hour = hourmin // 100, 24 buckets)
and duration_ms (log-spaced buckets; 0, which marks an unknown duration in 18.5% of the
rows, gets its own bucket). Ids: --ids hash (hash_bucket_size = --hash_factor x the train
cardinality), --ids vocab (a vocab_file of the train ids seen at least --min_count
times, written to --work_dir; every other id, e.g. a video first seen on a test day,
is id 0, out of vocabulary) or --ids dynamic (ev_params: a row per id seen in training,
the zero row for any other).

ESMM. ESMM needs a post-click conversion: a label that can only be 1 on clicked rows.
No column of this file is one. long_view comes closest (in the whole file 231 of 19,320
long views, 1.2%, have is_click = 0); label (like/hate) is not post-click (9,535 likes
without a click). So ESMM runs ctr = is_click, cvr = long_view; its long_view figure is
the AUC of probs_ctcvr = p(click) * p(long_view | click) against long_view on all test
rows (mtrec's own auc_ctcvr uses the label is_click * long_view); it has no label task.

Hyper-parameters (MODEL_SETTINGS below; any option given on the command line wins) were
chosen on a validation split only, never on the test days: train date <= 20220417,
validation date 20220418 (--train_max_date 20220417 --test_min_date 20220418
--test_max_date 20220418).

Usage:
  python scripts/bench/mmoe_video_logs.py --model all \\
      --data /work/shared/data/kuairand/kuairand27k_likehate_kcore15.tsv
  # one model on the validation split, 2 seeds, with an evaluation after every epoch
  python scripts/bench/mmoe_video_logs.py --model ple --seeds 1,2 --eval_every_epoch \\
      --train_max_date 20220417 --test_min_date 20220418 --test_max_date 20220418 \\
      --work_dir /tmp/mtrec_bench_kuairand_valid --no_baseline \\
      --data /work/shared/data/kuairand/kuairand27k_likehate_kcore15.tsv
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import string
import subprocess
import sys
import time

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF is imported lazily (exact AUC, hashing)
from common import outside_repo_work_dir, REPO, auc, machine_info, mean_std_text  # noqa: E402
TASKS = ["is_click", "long_view", "label"]
MODELS = ["mmoe", "mmoe_deepfm", "ple", "dbmtl", "dbmtl_mmoe", "aitm", "shared_bottom",
          "simple_multi_task", "esmm"]

# Every column of the file with its type. The reader selects columns by header name.
INPUT_FIELDS = [
    ("user_id", "STRING"), ("video_id", "STRING"), ("date", "INT32"), ("hourmin", "INT32"),
    ("time_ms", "INT64"), ("is_click", "INT32"), ("is_follow", "INT32"),
    ("is_comment", "INT32"), ("is_forward", "INT32"), ("long_view", "INT32"),
    ("play_time_ms", "INT64"), ("duration_ms", "INT64"), ("comment_stay_time", "INT64"),
    ("is_profile_enter", "INT32"), ("label", "INT32"), ("timestamp", "STRING"),
]

# Settings every model starts from; MODEL_SETTINGS overrides them per model and the
# command line overrides both. Chosen on the validation split (docs/benchmarks.md has the
# figures): on MMoE, the vocabulary ids (no collisions) and batch 256 (131 steps per
# epoch) beat hashing into 2x / 20x the ids and batches of 128 / 512 / 1024; the
# embedding L2, learning rates, dropout and embedding_dim left as they were (the
# alternatives tried did no better). The tables' optimizer: Adagrad at 0.2 (validation
# mean AUC 0.8366 on MMoE against 0.8281 for Adam at 0.01; Adagrad 0.1 / 0.4 gave 0.8333 /
# 0.8371). Per model, the epochs with the best mean validation AUC over its tasks (3 for
# every model but simple_multi_task, 4); for dbmtl / dbmtl_mmoe no relation_dnn (with relation_dnn [16]
# their best mean validation AUC was 0.010 / 0.011 lower, most of it on long_view).
DEFAULTS = {
    "batch_size": 256, "epochs": 3.0, "learning_rate": 0.002,
    "embedding_optimizer": "adagrad:0.2", "embedding_dim": 16,
    "ids": "vocab", "hash_factor": 2.0, "min_count": 1,
    "expert_units": "64, 32", "num_expert": 4, "bottom_units": "64, 32",
    "tower_units": "32", "relation_units": "16", "relations": "full", "dropout": 0.1,
    "l2": 1e-6, "embedding_l2": 1e-2, "dense_moments": False, "linear_logits": False,
}
MODEL_SETTINGS = {model: {} for model in MODELS}
MODEL_SETTINGS["simple_multi_task"] = {"epochs": 4.0}
MODEL_SETTINGS["dbmtl"] = {"relation_units": "none"}
MODEL_SETTINGS["dbmtl_mmoe"] = {"relation_units": "none"}

# $-placeholders are filled by write_config(); everything else is the benchmark config.
CONFIG_TEMPLATE = """\
# $model_name on KuaiRand-27K like/hate subset, temporal split.
# Generated by scripts/bench/mmoe_video_logs.py; do not edit by hand.
train_input_path: "$train_path"
eval_input_path: "$test_path"
model_dir: "$model_dir"

train_config {
  optimizer_config {
    adam_optimizer {
      learning_rate {
        constant_learning_rate {
          learning_rate: $learning_rate
        }
      }$dense_moments
    }
    use_moving_average: false
  }
$embedding_optimizer
  num_steps: $num_steps
  save_checkpoints_steps: $save_steps
  keep_checkpoint_max: 1
  log_step_count_steps: $log_steps
  seed: $seed
}

eval_config {
  metrics_set {
    auc {
      num_thresholds: 10000
    }
  }
}

data_config {
  batch_size: $batch_size
  eval_batch_size: 4096
  num_epochs: 0
  shuffle: true
  shuffle_buffer_size: 65536
  input_type: CSVInput
  with_header: true
  separator: "\\t"
$label_fields
$input_fields
}

feature_config {
  features {
    input_names: "user_id"
    feature_type: IdFeature
$user_ids
    embedding_dim: $embedding_dim
  }
  features {
    input_names: "video_id"
    feature_type: IdFeature
$video_ids
    embedding_dim: $embedding_dim
  }
  features {
    # hour of day: hourmin is hour*100, so these edges give hour = hourmin // 100.
    feature_name: "hour"
    input_names: "hourmin"
    feature_type: RawFeature
    boundaries: [$hour_boundaries]
    embedding_dim: $embedding_dim
  }
  features {
    # log-spaced edges in ms; the first edge (1) isolates duration_ms = 0 (unknown).
    input_names: "duration_ms"
    feature_type: RawFeature
    boundaries: [$duration_boundaries]
    embedding_dim: $embedding_dim
  }
}

model_config {
  model_class: "$model_class"
  feature_groups {
    group_name: "all"
    feature_names: "user_id"
    feature_names: "video_id"
    feature_names: "hour"
    feature_names: "duration_ms"
    wide_deep: DEEP
  }
$wide_group$model_block
  embedding_regularization: $embedding_l2
}
"""

# mmoe_deepfm: a per-task linear logit over one-hot ids (a logistic regression inside
# every tower) and an FM logit over the DEEP embeddings, added to each tower's DNN logit.
WIDE_GROUP = """\
  feature_groups {
    group_name: "wide"
    feature_names: "user_id"
    feature_names: "video_id"
    feature_names: "hour"
    wide_deep: WIDE
  }
"""

TOWER_TEMPLATE = """\
    $field {
      tower_name: "$task"
      label_name: "$task"
      dnn {
        hidden_units: [$tower_units]
        dropout_ratio: $dropout
        use_bn: false
      }
$relations      num_class: 1
      weight: 1.0
      loss_type: CLASSIFICATION
      metrics_set {
        auc {
          num_thresholds: 10000
        }
      }
    }"""

# DBMTL: each task sees the relation outputs of the tasks before it. AITM: long_view
# attends to is_click (a long view nearly implies a click; AITM's label constraint
# p(long_view) <= p(is_click) fits); label is no funnel step after a click (80.7% likes
# against 65.7% clicks), so it gets no parent there.
DBMTL_PARENTS = {"full": {"is_click": [], "long_view": ["is_click"],
                           "label": ["is_click", "long_view"]},
                 "chain": {"is_click": [], "long_view": ["is_click"], "label": []}}
AITM_PARENTS = {"is_click": [], "long_view": ["is_click"], "label": []}


def dnn_text(name, units, dropout, indent="    "):
    return (f"{indent}{name} {{\n{indent}  hidden_units: [{units}]\n"
            f"{indent}  dropout_ratio: {dropout}\n{indent}  use_bn: false\n{indent}}}")


def model_tasks(model):
    return ["is_click", "long_view"] if model == "esmm" else TASKS


def tower_text(s, task, field="task_towers", relations=""):
    return string.Template(TOWER_TEMPLATE).substitute(
        field=field, task=task, tower_units=s["tower_units"], dropout=s["dropout"],
        relations=relations)


def model_block(model, s):
    """(model_class, extra feature groups, the model's sub-message) for a model."""
    towers = "\n".join(tower_text(s, t) for t in TASKS)
    l2 = f"    l2_regularization: {s['l2']}"
    if s["linear_logits"] and model != "mmoe_deepfm":
        # Every multi-task model takes use_linear_logits: a per-task logistic regression
        # on the one-hot ids (WIDE_GROUP), added to each tower's logit.
        l2 = "    use_linear_logits: true\n" + l2
    wide = WIDE_GROUP if s["linear_logits"] or model == "mmoe_deepfm" else ""
    experts = (dnn_text("expert_dnn", s["expert_units"], s["dropout"])
               + f"\n    num_expert: {s['num_expert']}")
    bottom = dnn_text("bottom_dnn", s["bottom_units"], s["dropout"])
    if model in ("mmoe", "mmoe_deepfm"):
        logits = ("\n    use_linear_logits: true\n    use_fm_logits: true"
                  if model == "mmoe_deepfm" else "")
        return "MMoE", wide, f"  mmoe {{\n{experts}{logits}\n{towers}\n{l2}\n  }}"
    if model == "ple":
        # Two levels: 1 task expert per task + 2 shared experts, then 1 + 1 of width 32.
        last = s["expert_units"].split(",")[-1].strip()
        levels = []
        for name, per_task, shared, units in (("level1", 1, 2, s["expert_units"]),
                                              ("level2", 1, 1, last)):
            levels.append(
                f"    extraction_networks {{\n      network_name: \"{name}\"\n"
                f"      expert_num_per_task: {per_task}\n      share_num: {shared}\n"
                + dnn_text("task_expert_net", units, s["dropout"], "      ") + "\n"
                + dnn_text("share_expert_net", units, s["dropout"], "      ") + "\n    }")
        return "PLE", wide, "  ple {\n" + "\n".join(levels) + f"\n{towers}\n{l2}\n  }}"
    if model in ("dbmtl", "dbmtl_mmoe", "aitm"):
        parents = AITM_PARENTS if model == "aitm" else DBMTL_PARENTS[s["relations"]]
        parts = []
        for task in TASKS:
            rel = ""
            if parents[task]:
                rel += "      relation_tower_names: [" + ", ".join(
                    f'"{p}"' for p in parents[task]) + "]\n"
            if model == "aitm":
                if parents[task]:
                    rel += "      use_ait_module: true\n      ait_project_dim: 32\n"
            elif s["relation_units"] != "none":
                rel += dnn_text("relation_dnn", s["relation_units"], s["dropout"],
                                "      ") + "\n"
            parts.append(tower_text(s, task, relations=rel))
        inner = experts if model == "dbmtl_mmoe" else bottom
        return "DBMTL", wide, (f"  dbmtl {{\n{inner}\n" + "\n".join(parts) + f"\n{l2}\n  }}")
    if model == "shared_bottom":
        return "SharedBottom", wide, f"  shared_bottom {{\n{bottom}\n{towers}\n{l2}\n  }}"
    if model == "simple_multi_task":
        return "SimpleMultiTask", wide, f"  simple_multi_task {{\n{towers}\n{l2}\n  }}"
    if model == "esmm":
        group = ("    groups {\n      input: \"all\"\n"
                 + dnn_text("dnn", s["bottom_units"], s["dropout"], "      ") + "\n    }")
        ctr = tower_text(s, "is_click", "ctr_tower")
        cvr = tower_text(s, "long_view", "cvr_tower")
        return "ESMM", wide, f"  esmm {{\n{group}\n{ctr}\n{cvr}\n{l2}\n  }}"
    raise ValueError(f"unknown model {model!r}")


# ---------------------------------------------------------------------------------------
# data

def split_data(data_path, work_dir, train_max_date, test_min_date, test_max_date=None):
    """Write the train and test files to work_dir; return (paths, train_df, test_df)."""
    df = pd.read_csv(data_path, sep="\t", dtype=str, keep_default_na=False)
    missing = [name for name, _ in INPUT_FIELDS if name not in df.columns]
    if missing:
        sys.exit(f"{data_path}: missing columns {missing}")
    date = df["date"].astype(int)
    test_max_date = test_max_date or int(date.max())
    train = df[date <= train_max_date]
    test = df[(date >= test_min_date) & (date <= test_max_date)]
    paths = {"train": os.path.join(work_dir, f"train_to{train_max_date}.tsv"),
             "test": os.path.join(work_dir, f"test_{test_min_date}_{test_max_date}.tsv")}
    for name, part in (("train", train), ("test", test)):
        part.to_csv(paths[name], sep="\t", index=False, lineterminator="\n")
    return paths, train, test


def id_space(column, train, s, run_dir):
    """The IdFeature lines of user_id / video_id, and the number of ids it has."""
    if s["ids"] == "hash":
        buckets = round(s["hash_factor"] * train[column].nunique())
        return f"    hash_bucket_size: {buckets}", buckets
    if s["ids"] == "dynamic":  # a row per id (ev_params, docs/dynamic_tables.md)
        return "    ev_params { }", train[column].nunique()
    counts = train[column].value_counts()
    kept = sorted(counts[counts >= s["min_count"]].index, key=int)
    path = os.path.join(run_dir, f"vocab_{column}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{v}\n" for v in kept))
    return f"    vocab_file: \"{path}\"", len(kept) + 1  # + the out-of-vocabulary id 0


# ---------------------------------------------------------------------------------------
# mtrec config and runs

def write_config(path, model, s, paths, train, num_steps, save_steps, seed):
    run_dir = os.path.dirname(path)
    fields = "\n".join(
        f"  input_fields {{\n    input_name: \"{name}\"\n    input_type: {kind}\n  }}"
        for name, kind in INPUT_FIELDS)
    labels = "\n".join(f"  label_fields: \"{t}\"" for t in model_tasks(model))
    embedding_optimizer = ""
    # Written out, not left to the default (dense since 2026-11-23): the figures in
    # docs/benchmarks.md were measured with lazy tables. It only matters for the tables' Adam.
    dense_moments = f"\n      dense_moments: {str(s['dense_moments']).lower()}"
    if s["embedding_optimizer"]:
        # A second optimizer_config applies to the embedding tables (EasyRec's two-optimizer form).
        kind, lr = s["embedding_optimizer"].split(":")
        if s["dense_moments"] and kind != "adam":
            sys.exit("--dense_moments needs an adam embedding optimizer")
        embedding_optimizer = (
            f"  optimizer_config {{\n    {kind}_optimizer {{\n      learning_rate {{\n"
            f"        constant_learning_rate {{\n          learning_rate: {float(lr)}\n"
            f"        }}\n      }}{dense_moments if kind == 'adam' else ''}\n    }}\n"
            f"    use_moving_average: false\n  }}")
    user_ids, n_users = id_space("user_id", train, s, run_dir)
    video_ids, n_videos = id_space("video_id", train, s, run_dir)
    hour_edges = ", ".join(str(100 * h) for h in range(1, 24))
    duration_edges = [1.0] + [float(round(v, -2)) for v in np.geomspace(2000, 600000, 15)]
    model_class, wide_group, block = model_block(model, s)
    text = string.Template(CONFIG_TEMPLATE).substitute(
        model_name=model, train_path=paths["train"], test_path=paths["test"],
        model_dir=os.path.join(run_dir, "model_unused"),
        learning_rate=s["learning_rate"], embedding_optimizer=embedding_optimizer,
        dense_moments=dense_moments,
        num_steps=num_steps, save_steps=save_steps, seed=seed,
        log_steps=max(1, num_steps // 5), batch_size=s["batch_size"],
        label_fields=labels, input_fields=fields, user_ids=user_ids, video_ids=video_ids,
        embedding_dim=s["embedding_dim"], hour_boundaries=hour_edges,
        duration_boundaries=", ".join(f"{v:g}" for v in duration_edges),
        model_class=model_class, wide_group=wide_group, model_block=block,
        embedding_l2=s["embedding_l2"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return {"user_id": n_users, "video_id": n_videos}


def mtrec_command():
    exe = shutil.which("mtrec")
    return [exe] if exe else [sys.executable, "-m", "mtrec.cli"]


def run_mtrec_train(config_path, model_dir, log_path):
    """One `mtrec train`; return (every eval record, wall seconds)."""
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)  # mtrec resumes from model_dir; start fresh
    command = mtrec_command() + ["train", "--config", config_path, "--model_dir", model_dir]
    print("$ " + " ".join(command), flush=True)
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = f.read()[-3000:]
        sys.exit(f"mtrec train failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    with open(os.path.join(model_dir, "eval_result.txt"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return records, seconds


def table_metric(model, task):
    """The key of mtrec's metric reported for a table task (ESMM: long_view -> ctcvr)."""
    return "auc_ctcvr" if model == "esmm" and task == "long_view" else f"auc_{task}"


def exact_mtrec_auc(model, model_dir, test_df):
    """Score the test rows with the exported SavedModel's serving_default signature (plain
    TensorFlow, as a server would) and compute each task's AUC exactly (rank formula).
    ESMM's long_view is scored by probs_ctcvr = p(click) * p(long_view | click)."""
    import tensorflow as tf
    export_root = os.path.join(model_dir, "export", "final")
    versions = sorted(d for d in os.listdir(export_root) if d.isdigit())
    serve = tf.saved_model.load(os.path.join(export_root, versions[-1])) \
        .signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    tasks = model_tasks(model)
    outputs_of = {t: ("probs_ctcvr" if model == "esmm" and t == "long_view" else f"probs_{t}")
                  for t in tasks}
    probs = {t: [] for t in tasks}
    for start in range(0, len(test_df), 4096):
        chunk = test_df.iloc[start:start + 4096]
        inputs = {}
        for name, spec in specs.items():
            column = chunk[name].to_numpy()
            if spec.dtype == tf.string:
                inputs[name] = tf.constant(column.astype(str))
            else:
                inputs[name] = tf.constant(column.astype(np.float64), dtype=tf.float64)
                inputs[name] = tf.cast(inputs[name], spec.dtype)
        outputs = serve(**inputs)
        for t in tasks:
            probs[t].append(outputs[outputs_of[t]].numpy().reshape(-1))
    return {t: auc(test_df[t].astype(int).to_numpy(), np.concatenate(probs[t])) for t in tasks}


# ---------------------------------------------------------------------------------------
# baseline: logistic regression on one-hot ids, numpy only


class OneHot:
    """Column values -> column indices of a one-hot design; unseen values get none."""

    def __init__(self, df, columns):
        self.columns = columns
        self.maps, offset = [], 0
        for column in columns:
            values = pd.unique(df[column])
            self.maps.append(pd.Series(np.arange(offset, offset + len(values)), index=values))
            offset += len(values)
        self.size = offset

    def indices(self, df):
        """(rows, len(columns)) int array; -1 where the value was not seen in fitting."""
        cols = [m.reindex(df[c].to_numpy()).fillna(-1).to_numpy().astype(np.int64)
                for c, m in zip(self.columns, self.maps)]
        return np.stack(cols, axis=1)


def fit_logistic(idx, y, size, l2, iterations=1500, lr=0.05):
    """Minimise mean log loss + l2/2 * |w|^2 (bias unpenalised) by full-batch Adam.

    idx: (n, k) active one-hot columns per row (-1 = none); returns (w, b).
    """
    n = len(y)
    valid = idx >= 0
    flat = idx[valid]
    row_of = np.nonzero(valid)[0]
    w, b = np.zeros(size), 0.0
    m, v = np.zeros(size + 1), np.zeros(size + 1)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, iterations + 1):
        logit = b + np.bincount(row_of, weights=w[flat], minlength=n)
        p = 1.0 / (1.0 + np.exp(-logit))
        r = (p - y) / n
        grad = np.empty(size + 1)
        grad[:size] = np.bincount(flat, weights=r[row_of], minlength=size) + l2 * w
        grad[size] = r.sum()
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        step = lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
        w -= step[:size]
        b -= step[size]
    return w, b


def predict_logistic(w, b, idx):
    logit = b + np.where(idx >= 0, w[np.maximum(idx, 0)], 0.0).sum(axis=1)
    return 1.0 / (1.0 + np.exp(-logit))


def hashed_ids(values, buckets):
    """The bucket mtrec's IdFeature(hash_bucket_size=buckets) gives each string id."""
    import tensorflow as tf
    return tf.strings.to_hash_bucket_fast(np.asarray(values, dtype=str), buckets).numpy()


def logistic_baseline(train, test, l2_grid, buckets=None):
    """Test AUC per task of two L2-regularised logistic regressions on one-hot
    user_id, video_id, hour (= hourmin // 100), both fit on the whole train split:
      "auc":    L2 strength picked from l2_grid on the last training day (fit on the
                days before it);
      "auc_c1": L2 = 1 / train rows, i.e. the objective of scikit-learn's default
                LogisticRegression(C=1.0) (the data README's sanity baseline);
      "auc_c1_hashed" (when buckets = {"user_id": n, "video_id": m} is given): as "auc_c1"
                but on user_id / video_id hashed into the buckets the mtrec config uses,
                so it sees the same id collisions as the MMoE.
    """
    train = train.assign(hour=train["hourmin"].astype(int) // 100)
    test = test.assign(hour=test["hourmin"].astype(int) // 100)
    columns = ["user_id", "video_id", "hour"]
    dates = train["date"].astype(int)
    inner, valid = train[dates < dates.max()], train[dates == dates.max()]
    inner_enc, full_enc = OneHot(inner, columns), OneHot(train, columns)
    inner_idx, valid_idx = inner_enc.indices(inner), inner_enc.indices(valid)
    train_idx, test_idx = full_enc.indices(train), full_enc.indices(test)
    results = {}
    for task in TASKS:
        y_inner = inner[task].astype(float).to_numpy()
        y_train = train[task].astype(float).to_numpy()
        y_test = test[task].astype(int).to_numpy()
        scores = {}
        for l2 in l2_grid:
            w, b = fit_logistic(inner_idx, y_inner, inner_enc.size, l2)
            scores[l2] = auc(valid[task].astype(int), predict_logistic(w, b, valid_idx))
        best = max(scores, key=scores.get)
        w, b = fit_logistic(train_idx, y_train, full_enc.size, best)
        tuned = auc(y_test, predict_logistic(w, b, test_idx))
        w, b = fit_logistic(train_idx, y_train, full_enc.size, 1.0 / len(train))
        c1 = auc(y_test, predict_logistic(w, b, test_idx))
        results[task] = {"auc": tuned, "l2": best, "valid_auc": scores[best], "auc_c1": c1}
        print(f"baseline {task}: l2={best:g} (valid AUC {scores[best]:.4f}) test AUC "
              f"{tuned:.4f}; l2=1/n (C=1) test AUC {c1:.4f}", flush=True)
    if buckets:
        hashed = {name: {c: hashed_ids(part[c], n) for c, n in buckets.items()}
                  for name, part in (("train", train), ("test", test))}
        h_train = train.assign(**hashed["train"])
        h_test = test.assign(**hashed["test"])
        enc = OneHot(h_train, columns)
        h_train_idx, h_test_idx = enc.indices(h_train), enc.indices(h_test)
        for task in TASKS:
            w, b = fit_logistic(h_train_idx, h_train[task].astype(float).to_numpy(), enc.size,
                                1.0 / len(train))
            results[task]["auc_c1_hashed"] = auc(h_test[task].astype(int),
                                                 predict_logistic(w, b, h_test_idx))
            print(f"baseline {task}: l2=1/n on hashed ids test AUC "
                  f"{results[task]['auc_c1_hashed']:.4f}", flush=True)
    return results


def cached_baseline(args, work_dir, train, test, buckets):
    """logistic_baseline(), cached in work_dir by data file, split, grid and buckets."""
    l2_grid = [float(x) for x in args.l2_grid.split(",")]
    stat = os.stat(args.data)
    key = json.dumps([os.path.abspath(args.data), stat.st_size, int(stat.st_mtime),
                      args.train_max_date, args.test_min_date, args.test_max_date, l2_grid,
                      buckets], sort_keys=True)
    path = os.path.join(work_dir, f"baseline_{hashlib.sha1(key.encode()).hexdigest()[:12]}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        print(f"baseline: cached {path}", flush=True)
        for task in TASKS:
            print(f"baseline {task}: L2 {result[task]['l2']:g} (valid AUC "
                  f"{result[task]['valid_auc']:.4f}) test AUC {result[task]['auc']:.4f}; "
                  f"C=1 {result[task]['auc_c1']:.4f}", flush=True)
        return result
    start = time.time()
    result = logistic_baseline(train, test, l2_grid, buckets)
    result["_seconds"] = time.time() - start
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


# ---------------------------------------------------------------------------------------
# report


def baseline_cells(baseline, task, hashed):
    if not baseline:
        return ""
    cells = f" {baseline[task]['auc']:.4f} | {baseline[task]['auc_c1']:.4f} |"
    if hashed:
        cells += f" {baseline[task]['auc_c1_hashed']:.4f} |"
    return cells


def report(model, runs, baseline, info, s, rows, hashed):
    n = len(runs)
    tasks = model_tasks(model)
    exact = all("exact" in r for r in runs)
    header = f"| task | mtrec {model} AUC, mean ± std ({n} seed{'s' if n > 1 else ''}) |"
    rule = "|---|---|"
    if exact:
        header += " same models, exact rank AUC |"
        rule += "---|"
    if baseline:
        header += " logistic baseline AUC (L2 tuned) | logistic, C=1 |"
        rule += "---|---|"
        if hashed:
            header += " logistic, C=1, ids hashed as in the mtrec config |"
            rule += "---|"
    lines = [header, rule]
    for task in tasks:
        key = table_metric(model, task)
        line = f"| {task} | {mean_std_text([r['eval'][key] for r in runs])} |"
        if exact:
            line += f" {mean_std_text([r['exact'][task] for r in runs])} |"
        lines.append(line + baseline_cells(baseline, task, hashed))
    lines.append(f"| wall time per run (s) | {mean_std_text([r['seconds'] for r in runs], 1)} |")
    lines.append("")
    lines.append("Per seed (mtrec AUC from the last line of eval_result.txt"
                 + ("; ESMM's long_view column is mtrec's auc_ctcvr, label is_click * long_view"
                    if model == "esmm" else "")
                 + "; wall time of the whole `mtrec train` process: start-up, training, "
                 "evaluation, export):")
    lines.append("")
    lines.append("| seed | " + " | ".join(tasks) + " | global_step | wall time (s) |")
    lines.append("|---|" + "---|" * (len(tasks) + 2))
    for r in runs:
        lines.append(f"| {r['seed']} | " + " | ".join(
            f"{r['eval'][table_metric(model, t)]:.4f}" for t in tasks)
            + f" | {r['eval']['global_step']} | {r['seconds']:.1f} |")
    lines.append("")
    lines.append(f"Configs: {rows['config']} (one per seed).")
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in s.items()) + ".")
    lines.append(f"Rows: train {rows['train']:,}, test {rows['test']:,}; "
                 f"{rows['num_steps']} steps; ids: user_id {rows['ids']['user_id']}, "
                 f"video_id {rows['ids']['video_id']}.")
    if baseline:
        lines.append("Logistic baseline (numpy, one-hot user_id, video_id, hour; full-batch "
                     "Adam on mean log loss + L2/2 |w|^2): L2 tuned = picked on the last "
                     "training day, "
                     + ", ".join(f"{t} {baseline[t]['l2']:g}" for t in TASKS)
                     + f"; C=1 = L2 1/{rows['train']} (scikit-learn's default objective)"
                     + ("; hashed = user_id / video_id hashed with "
                        "tf.strings.to_hash_bucket_fast into the buckets the mtrec config uses"
                        if hashed else "") + ".")
    lines.append(machine_text(info))
    return "\n".join(lines)


def machine_text(info):
    return (f"Machine: nproc {info['nproc']}, {info['cpu']}, tensorflow {info['tensorflow']}, "
            f"mtrec {info['mtrec']} (sha256 of mtrec/**/*.py {info['mtrec_source_sha256']}), "
            f"python {info['python']}; date {info['date']}; load average (1 min) "
            f"{info['load_start']:.2f} at start, {info['load_end']:.2f} at end.")


def summary(results, baseline, info):
    """One table: model x task, mean ± std of the exact AUCs (mtrec's if not computed)."""
    lines = ["| model | " + " | ".join(TASKS) + " | wall time per run (s) |",
             "|---|" + "---|" * (len(TASKS) + 1)]
    for model, runs in results.items():
        cells = []
        for task in TASKS:
            if task not in model_tasks(model):
                cells.append("—")
                continue
            values = [r["exact"][task] if "exact" in r else r["eval"][table_metric(model, task)]
                      for r in runs]
            cells.append(mean_std_text(values))
        lines.append(f"| {model} | " + " | ".join(cells)
                     + f" | {mean_std_text([r['seconds'] for r in runs], 1)} |")
    if baseline:
        lines.append("| logistic, L2 tuned | "
                     + " | ".join(f"{baseline[t]['auc']:.4f}" for t in TASKS) + " | |")
        lines.append("| logistic, C=1 | "
                     + " | ".join(f"{baseline[t]['auc_c1']:.4f}" for t in TASKS) + " | |")
    lines.append("")
    lines.append(machine_text(info))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="kuairand27k_likehate_kcore15.tsv")
    p.add_argument("--model", default="mmoe",
                   help=f"one of {', '.join(MODELS)}; several separated by commas; or all")
    p.add_argument("--work_dir", default="/tmp/mtrec_bench_kuairand",
                   help="derived files: splits, baseline cache; <model>[_<tag>]/ per model "
                        "with configs, vocabularies, model dirs, logs, results")
    p.add_argument("--tag", default="", help="suffix of the per-model directory")
    p.add_argument("--seeds", default="1,2,3", help="train_config.seed of each run")
    p.add_argument("--train_max_date", type=int, default=20220418)
    p.add_argument("--test_min_date", type=int, default=20220419)
    p.add_argument("--test_max_date", type=int, default=None,
                   help="last test date (default: the last date of the file); with "
                        "--train_max_date 20220417 --test_min_date 20220418 --test_max_date "
                        "20220418 the 'test' split is the validation day used for tuning")
    p.add_argument("--eval_every_epoch", action="store_true",
                   help="evaluate after every epoch too (eval_result.txt gets one line each)")
    # Settings: None = MODEL_SETTINGS[model], else DEFAULTS.
    p.add_argument("--batch_size", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning_rate", type=float, help="Adam, dense weights")
    p.add_argument("--embedding_optimizer",
                   help="KIND:LR (KIND adam or adagrad) for the embedding tables; "
                        "\"\" = the dense weights' optimizer")
    p.add_argument("--dense_moments", action="store_const", const=True,
                   help="the tables' Adam keeps dense moments (adam_optimizer.dense_moments; "
                        "the benchmark's figures are lazy)")
    p.add_argument("--linear_logits", action="store_const", const=True,
                   help="add use_linear_logits (a WIDE group: user_id, video_id, hour) to "
                        "every model")
    p.add_argument("--embedding_dim", type=int)
    p.add_argument("--ids", choices=["hash", "vocab", "dynamic"])
    p.add_argument("--hash_factor", type=float,
                   help="--ids hash: hash_bucket_size of user_id / video_id = this x their "
                        "train cardinality")
    p.add_argument("--min_count", type=int,
                   help="--ids vocab: ids seen fewer times in train are out of vocabulary")
    p.add_argument("--expert_units", help="experts of mmoe, mmoe_deepfm, dbmtl_mmoe, ple")
    p.add_argument("--num_expert", type=int)
    p.add_argument("--bottom_units", help="shared DNN of shared_bottom, dbmtl, aitm, esmm")
    p.add_argument("--tower_units")
    p.add_argument("--relation_units",
                   help="relation_dnn of dbmtl, dbmtl_mmoe (none: no relation_dnn)")
    p.add_argument("--relations", choices=sorted(DBMTL_PARENTS),
                   help="dbmtl, dbmtl_mmoe: full = long_view <- is_click, label <- is_click, "
                        "long_view; chain = long_view <- is_click only")
    p.add_argument("--dropout", type=float)
    p.add_argument("--l2", type=float, help="l2_regularization of the dense kernels")
    p.add_argument("--embedding_l2", type=float, help="embedding_regularization")
    p.add_argument("--no_exact_auc", dest="exact_auc", action="store_false",
                   help="skip the SavedModel cross-check of the AUCs")
    p.add_argument("--no_baseline", dest="baseline", action="store_false")
    p.add_argument("--l2_grid", default="1e-6,1e-5,3e-5,1e-4,3e-4,1e-3",
                   help="L2 strengths tried for the logistic baseline")
    args = p.parse_args(argv)

    models = MODELS if args.model == "all" else args.model.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown --model {unknown}; choose from {MODELS} or all")
    seeds = [int(x) for x in args.seeds.split(",")]
    if not seeds or min(seeds) < 1:
        p.error("--seeds must be positive integers (0 would mean unseeded)")
    work_dir = outside_repo_work_dir(args.work_dir)
    load_start = os.getloadavg()[0]
    source_start = machine_info()["mtrec_source_sha256"]

    paths, train, test = split_data(args.data, work_dir, args.train_max_date, args.test_min_date,
                                     args.test_max_date)
    print(f"train {len(train)} rows -> {paths['train']}; test {len(test)} rows -> "
          f"{paths['test']}", flush=True)

    results, per_model = {}, {}
    for model in models:
        s = dict(DEFAULTS, **MODEL_SETTINGS[model])
        s.update({k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None})
        run_dir = os.path.join(work_dir, model + (f"_{args.tag}" if args.tag else ""))
        os.makedirs(run_dir, exist_ok=True)
        steps_per_epoch = len(train) / s["batch_size"]
        num_steps = max(1, math.ceil(s["epochs"] * steps_per_epoch))
        save_steps = min(num_steps, math.ceil(steps_per_epoch)) if args.eval_every_epoch \
            else num_steps
        print(f"== {model}: {num_steps} steps ({s['epochs']} epochs of {steps_per_epoch:.1f}); "
              + ", ".join(f"{k}={v}" for k, v in s.items()), flush=True)
        runs = []
        for seed in seeds:
            config_path = os.path.join(run_dir, f"{model}_seed{seed}.config")
            ids = write_config(config_path, model, s, paths, train, num_steps, save_steps, seed)
            model_dir = os.path.join(run_dir, f"model_seed{seed}")
            records, seconds = run_mtrec_train(config_path, model_dir,
                                               os.path.join(run_dir, f"train_seed{seed}.log"))
            result = {"seed": seed, "model_dir": model_dir, "eval": records[-1],
                      "curve": records, "seconds": seconds}
            if args.exact_auc:
                result["exact"] = exact_mtrec_auc(model, model_dir, test)
            runs.append(result)
            tasks = model_tasks(model)
            if len(records) > 1:
                for r in records:
                    print(f"  step {r['global_step']}: " + " ".join(
                        f"{t}={r[table_metric(model, t)]:.4f}" for t in tasks), flush=True)
            print(f"{model} seed {seed}: " + " ".join(
                f"{t}={records[-1][table_metric(model, t)]:.4f}" for t in tasks)
                + (" | exact " + " ".join(f"{t}={result['exact'][t]:.4f}" for t in tasks)
                   if args.exact_auc else "") + f" | {seconds:.1f} s", flush=True)
        results[model] = runs
        per_model[model] = {"settings": s, "run_dir": run_dir, "ids": ids,
                            "num_steps": num_steps,
                            "config": os.path.join(run_dir, f"{model}_seed<seed>.config")}

    hashed = all(per_model[m]["settings"]["ids"] == "hash" for m in models) and \
        len({json.dumps(per_model[m]["ids"]) for m in models}) == 1
    baseline = None
    if args.baseline:
        buckets = per_model[models[0]]["ids"] if hashed else None
        baseline = cached_baseline(args, work_dir, train, test, buckets)

    info = machine_info()
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    info["load_start"], info["load_end"] = load_start, os.getloadavg()[0]
    if info["mtrec_source_sha256"] != source_start:
        print(f"WARNING: mtrec's source changed during the benchmark (sha256 {source_start} "
              f"at start, {info['mtrec_source_sha256']} at end); rerun it.", flush=True)
        info["mtrec_source_sha256"] = f"{source_start} -> {info['mtrec_source_sha256']} (CHANGED)"
    for model, runs in results.items():
        m = per_model[model]
        rows = {"train": len(train), "test": len(test), "num_steps": m["num_steps"],
                "config": m["config"], "ids": m["ids"]}
        table = report(model, runs, baseline, info, m["settings"], rows, hashed)
        print(f"\n### {model}\n\n{table}", flush=True)
        with open(os.path.join(m["run_dir"], "results.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        with open(os.path.join(m["run_dir"], "results.json"), "w", encoding="utf-8") as f:
            json.dump({"model": model, "settings": m["settings"], "rows": rows,
                       "machine": info, "runs": runs, "baseline": baseline,
                       "command": " ".join(sys.argv)}, f, indent=2)
    if len(results) > 1:
        table = summary(results, baseline, info)
        print(f"\n### all models\n\n{table}", flush=True)
        with open(os.path.join(work_dir, "summary" + (f"_{args.tag}" if args.tag else "")
                               + ".md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
