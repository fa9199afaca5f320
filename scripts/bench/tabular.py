#!/usr/bin/env python
"""Issue #21: mtrec's multi-task models, configured as a user would by hand, against a tuned
logistic regression on real tabular data.

Data sets (paths are arguments; nothing derived is written inside the repository):
  kuairand  KuaiRand-27K like/hate subset (--kuairand .../kuairand27k_likehate_kcore15.tsv):
            split by date, train date <= 20220418, test date >= 20220419; string ids
            user_id, video_id; dense hourmin, duration_ms; tasks is_click, long_view, label.
  ml100k    MovieLens-100K joined ratings (--ml100k .../ml100k_ratings_joined.csv): rows in
            time order, first 90% train, last 10% test; string categoricals user_id, item_id,
            gender, occupation, zip_code, genres (|-separated, a TagFeature); dense age,
            release_year; tasks label_like (rating >= 4, the file's column) and label_five
            (rating == 5, derived here).
--max_train_rows keeps the last N train rows in time order (default: all).

The configs are what a user writes by hand: every string categorical hashed with a round
hash_bucket_size, every dense column bucketized by `boundaries` at the train deciles,
embedding_dim 8, one DEEP group, Adam at a constant 1e-3, batch 512; each model block is the
sample's (samples/model_config/{mmoe,ple,shared_bottom,dbmtl}_on_taobao.config: the same
experts, levels, bottoms, towers, relation_dnn, l2_regularization 1e-6 and
embedding_regularization 5e-5) with one CLASSIFICATION tower per task. --dropout, --l2 and
--embedding_l2 change the regularisers, --embedding_lr gives the embedding tables their own
Adam, --linear_logits adds use_linear_logits (an extra row, named by --tag); --validation
trains on train's first 90% and evaluates on its last 10%, to choose such settings without
the test split.

Every run trains --epochs epochs with a checkpoint and an evaluation on the test split
every 1/--evals_per_epoch epoch (save_checkpoints_steps); mtrec appends each evaluation to
model_dir/eval_result.txt, which this script reads: "best" is the largest AUC of each task
over the evaluations, "last" the final evaluation. Training runs in this process with
mtrec's own loop (mtrec.config.load + mtrec.training.loop.train, i.e. `mtrec train` without
the export), so TensorFlow and mtrec are imported once.

The logistic regression (Keras, one per task; tasks share nothing): one weight per hashed
categorical bucket (the same buckets as the mtrec config, so the same collisions) and per
dense bucket, plus a bias; Adam, batch 512, L2 on the weights. The grid (--lr_l2,
--lr_rates, 1..--lr_epochs epochs) is searched on a validation split carved from train (its
last 10% in time order, fit on the first 90%); the chosen setting per task is refit on the
whole train split and scored on the test split, with the same 10,000-threshold AUC mtrec
uses (and exactly, by ranks).

Usage (from the repository root):
  python scripts/bench/tabular.py \\
      --kuairand /work/shared/data/kuairand/kuairand27k_likehate_kcore15.tsv \\
      --ml100k /work/shared/data/movielens/ml-100k/ml100k_ratings_joined.csv
  # the extra row (uses the <dataset>_lr.json of --work_dir if present)
  python scripts/bench/tabular.py --datasets kuairand --kuairand ... --no_lr \\
      --dropout 0.3 --embedding_lr 0.01 --tag drop03_elr01 --work_dir /tmp/mtrec_bench_tabular_x1
  # tables of several work dirs: scripts/bench/tabular_report.py DIR ...
"""
import argparse
import json
import os
import shutil
import string
import sys
import time

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import outside_repo_work_dir, REPO, auc, machine_info, mean_std, mean_std_text  # noqa: E402

MODELS = {"mmoe": "MMoE", "ple": "PLE", "shared_bottom": "SharedBottom", "dbmtl": "DBMTL"}

# Per data set: categorical columns -> hash_bucket_size (round numbers, as a user picks them:
# ids like the samples' 100000), multi-valued columns, dense columns, tasks, time column.
DATASETS = {
    "kuairand": {
        "categorical": {"user_id": 100000, "video_id": 100000},
        "tags": {},
        "dense": ["hourmin", "duration_ms"],
        "tasks": ["is_click", "long_view", "label"],
        "time": "time_ms",
        "epochs": 8,
    },
    "ml100k": {
        "categorical": {"user_id": 100000, "item_id": 100000, "gender": 10,
                        "occupation": 100, "zip_code": 10000},
        "tags": {"genres": 100},
        "dense": ["age", "release_year"],
        "tasks": ["label_like", "label_five"],
        "time": "timestamp",
        "epochs": 6,
    },
}

CONFIG = """\
# $model_class on $dataset, written as a user would (scripts/bench/tabular.py).
train_input_path: "$train_path"
eval_input_path: "$test_path"
model_dir: "$model_dir"

train_config {
  optimizer_config {
    adam_optimizer {
      learning_rate {
        constant_learning_rate {
          learning_rate: 0.001
        }
      }
    }
    use_moving_average: false
  }
$embedding_optimizer  num_steps: $num_steps
  save_checkpoints_steps: $save_steps
  keep_checkpoint_max: 1
  log_step_count_steps: $save_steps
  seed: $seed
}

eval_config {
  metrics_set {
    auc {}
  }
}

data_config {
  batch_size: 512
  eval_batch_size: 4096
  num_epochs: 0
  shuffle: true
  input_type: CSVInput
  with_header: true
$label_fields
$input_fields
}

$feature_configs
model_config {
  model_class: "$model_class"
  feature_groups {
    group_name: "all"
$feature_names
    wide_deep: DEEP
  }
$wide_group$block
  embedding_regularization: $embedding_l2
}
"""


def dnn(name, units, dropout, indent):
    drop = f"{indent}  dropout_ratio: {dropout}\n" if dropout else ""
    return (f"{indent}{name} {{\n{indent}  hidden_units: [{units}]\n{drop}"
            f"{indent}  use_bn: false\n{indent}}}\n")


def tower(task, units, dropout, relation=""):
    return ("    task_towers {\n"
            f"      tower_name: \"{task}\"\n      label_name: \"{task}\"\n"
            + dnn("dnn", units, dropout, "      ") + relation
            + "      num_class: 1\n      weight: 1.0\n      loss_type: CLASSIFICATION\n"
            "      metrics_set {\n        auc {}\n      }\n    }\n")


def model_block(model, tasks, dropout, l2, linear_logits=False):
    """The sample config's model block (samples/model_config/<model>_on_taobao.config) with
    one tower per task; dropout_ratio added to every DNN when dropout > 0; with
    linear_logits, use_linear_logits (a per-task logit over the WIDE group)."""
    tail = f"    l2_regularization: {l2}\n"
    if linear_logits:
        tail = "    use_linear_logits: true\n" + tail
    if model == "mmoe":
        body = (dnn("expert_dnn", "128, 64", dropout, "    ") + "    num_expert: 4\n"
                + "".join(tower(t, "64, 32", dropout) for t in tasks))
    elif model == "shared_bottom":
        body = (dnn("bottom_dnn", "128, 64", dropout, "    ")
                + "".join(tower(t, "64, 32", dropout) for t in tasks))
    elif model == "ple":
        body = ""
        for name, per_task, shared, units in (("layer1", 2, 2, "64, 32"),
                                              ("layer2", 1, 1, "32")):
            body += (f"    extraction_networks {{\n      network_name: \"{name}\"\n"
                     f"      expert_num_per_task: {per_task}\n      share_num: {shared}\n"
                     + dnn("task_expert_net", units, dropout, "      ")
                     + dnn("share_expert_net", units, dropout, "      ") + "    }\n")
        body += "".join(tower(t, "32, 16", dropout) for t in tasks)
    elif model == "dbmtl":
        # As the sample: every task has relation_dnn [16]; a later task relates to the
        # first one (the sample's cvr <- ctr).
        body = dnn("bottom_dnn", "128, 64", dropout, "    ")
        for i, t in enumerate(tasks):
            rel = (f"      relation_tower_names: [\"{tasks[0]}\"]\n" if i else "") \
                + dnn("relation_dnn", "16", dropout, "      ")
            body += tower(t, "32", dropout, rel)
    else:
        raise ValueError(f"unknown model {model!r}")
    return f"  {model} {{\n{body}{tail}  }}"


# ---------------------------------------------------------------------------------------
# data


def load_dataset(name, path, work_dir, max_train_rows, validation=False):
    """Train / test DataFrames (strings for categoricals, numbers for the rest) and their
    CSV files in work_dir. validation: the "test" split is train's last 10% in time order
    and "train" its first 90% (for choosing settings without the test split)."""
    spec = DATASETS[name]
    if name == "kuairand":
        df = pd.read_csv(path, sep="\t", dtype={"user_id": str, "video_id": str})
        train, test = df[df["date"] <= 20220418], df[df["date"] >= 20220419]
    else:
        df = pd.read_csv(path, dtype={c: str for c in ("user_id", "item_id", "gender",
                                                       "occupation", "zip_code", "genres")},
                         keep_default_na=False)
        df["label_five"] = (df["rating"] == 5).astype(int)
        df = df.sort_values(spec["time"], kind="mergesort")
        cut = int(len(df) * 0.9)
        train, test = df.iloc[:cut], df.iloc[cut:]
    columns = (list(spec["categorical"]) + list(spec["tags"]) + spec["dense"] + spec["tasks"]
               + [spec["time"]])
    missing = [c for c in columns if c not in df.columns]
    if missing:
        sys.exit(f"{path}: missing columns {missing}")
    train = train.sort_values(spec["time"], kind="mergesort")[columns]
    if max_train_rows and len(train) > max_train_rows:
        train = train.iloc[-max_train_rows:]
    test = test[columns]
    if validation:
        cut = int(len(train) * 0.9)
        train, test = train.iloc[:cut], train.iloc[cut:]
    paths = {}
    for part, frame in (("train", train), ("test", test)):
        paths[part] = os.path.join(work_dir, f"{name}_{part}{'_valid' if validation else ''}.csv")
        # atomically: a run of another process may be reading the previous copy
        tmp = f"{paths[part]}.{os.getpid()}.tmp"
        frame.drop(columns=[spec["time"]]).to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, paths[part])
    return train.reset_index(drop=True), test.reset_index(drop=True), paths


def decile_boundaries(values):
    """Bucket edges at the train deciles (distinct values only), as a user would set them."""
    edges = np.unique(np.quantile(np.asarray(values, dtype=np.float64),
                                  np.linspace(0.1, 0.9, 9)))
    return [float(e) for e in edges]


def write_config(path, dataset, model, train, paths, model_dir, seed, num_steps, save_steps,
                 boundaries, s):
    spec = DATASETS[dataset]
    fields = []
    for c in list(spec["categorical"]) + list(spec["tags"]):
        fields.append((c, "STRING"))
    fields += [(c, "DOUBLE") for c in spec["dense"]] + [(t, "INT32") for t in spec["tasks"]]
    input_fields = "\n".join(f"  input_fields {{\n    input_name: \"{n}\"\n"
                             f"    input_type: {k}\n  }}" for n, k in fields)
    features = []
    for c, buckets in spec["categorical"].items():
        features.append(f"  features {{\n    input_names: \"{c}\"\n    feature_type: IdFeature\n"
                        f"    hash_bucket_size: {buckets}\n    embedding_dim: 8\n  }}")
    for c, buckets in spec["tags"].items():
        features.append(f"  features {{\n    input_names: \"{c}\"\n    feature_type: TagFeature\n"
                        f"    separator: \"|\"\n    hash_bucket_size: {buckets}\n"
                        f"    embedding_dim: 8\n  }}")
    for c in spec["dense"]:
        edges = ", ".join(f"{e:g}" for e in boundaries[c])
        features.append(f"  features {{\n    input_names: \"{c}\"\n    feature_type: RawFeature\n"
                         f"    boundaries: [{edges}]\n    embedding_dim: 8\n  }}")
    names = list(spec["categorical"]) + list(spec["tags"]) + spec["dense"]
    wide_group = ""
    if s["linear_logits"]:
        # the same features once more as a WIDE group: one weight per bucket, as the LR has
        wide_group = ("  feature_groups {\n    group_name: \"wide\"\n"
                      + "".join(f"    feature_names: \"{n}\"\n" for n in names)
                      + "    wide_deep: WIDE\n  }\n")
    embedding_optimizer = ""
    if s["embedding_lr"]:
        # a second optimizer_config: the embedding tables' own Adam
        embedding_optimizer = (
            "  optimizer_config {\n    adam_optimizer {\n      learning_rate {\n"
            "        constant_learning_rate {\n"
            f"          learning_rate: {s['embedding_lr']}\n        }}\n      }}\n    }}\n"
            "    use_moving_average: false\n  }\n")
    text = string.Template(CONFIG).substitute(
        wide_group=wide_group, embedding_optimizer=embedding_optimizer,
        dataset=dataset, model_class=MODELS[model], train_path=paths["train"],
        test_path=paths["test"], model_dir=model_dir, num_steps=num_steps,
        save_steps=save_steps, seed=seed,
        label_fields="\n".join(f"  label_fields: \"{t}\"" for t in spec["tasks"]),
        input_fields=input_fields,
        feature_configs="feature_config {\n" + "\n".join(features) + "\n}\n",
        feature_names="\n".join(f"    feature_names: \"{n}\"" for n in names),
        block=model_block(model, spec["tasks"], s["dropout"], s["l2"], s["linear_logits"]),
        embedding_l2=s["embedding_l2"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def train_in_process(config_path, model_dir, log_path):
    """`mtrec train` minus the export: load the config, run mtrec's training loop (which
    evaluates every save_checkpoints_steps); return (eval records, seconds)."""
    import logging
    import traceback

    import keras
    from mtrec import config as config_lib
    from mtrec.training import loop
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)  # mtrec resumes from model_dir; start fresh
    logger = logging.getLogger("mtrec")
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    old = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    start = time.time()
    try:
        loop.train(config_lib.load(config_path, model_dir=model_dir))
    except Exception:  # noqa: BLE001  (reported with the run's log, then the sweep stops)
        logger.error("training failed:\n%s", traceback.format_exc())
        with open(log_path, encoding="utf-8") as f:
            sys.exit(f"mtrec training failed for {config_path}:\n{f.read()[-3000:]}")
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old[0])
        logger.propagate = old[1]
        keras.backend.clear_session()
    seconds = time.time() - start
    with open(os.path.join(model_dir, "eval_result.txt"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return records, seconds


# ---------------------------------------------------------------------------------------
# logistic regression (Keras)


class Design:
    """Each row as the one-hot columns it activates: (rows, slots) indices into one weight
    table, with a 0/1 mask for the padding of multi-valued columns. Categoricals are hashed
    exactly as mtrec's IdFeature / TagFeature hash them; dense columns are bucketized at the
    config's boundaries (tf Bucketize, i.e. searchsorted right)."""

    def __init__(self, dataset, boundaries):
        self.spec, self.boundaries = DATASETS[dataset], boundaries
        self.offsets, offset = {}, 0
        for c, buckets in list(self.spec["categorical"].items()) + list(self.spec["tags"].items()):
            self.offsets[c], offset = offset, offset + buckets
        for c in self.spec["dense"]:
            self.offsets[c], offset = offset, offset + len(boundaries[c]) + 1
        self.size = offset

    def __call__(self, df):
        import tensorflow as tf
        cols, masks = [], []
        for c, buckets in self.spec["categorical"].items():
            ids = tf.strings.to_hash_bucket_fast(df[c].astype(str).to_numpy(), buckets).numpy()
            cols.append(ids[:, None] + self.offsets[c])
            masks.append(np.ones((len(df), 1)))
        for c, buckets in self.spec["tags"].items():
            parts = tf.strings.split(df[c].astype(str).to_numpy(), "|")
            ids = tf.strings.to_hash_bucket_fast(parts, buckets).to_tensor(default_value=-1)
            ids = ids.numpy()
            # empty tokens ("" from an empty cell) are no value
            empty = (parts.to_tensor(default_value="") == b"").numpy()
            ids[empty] = -1
            masks.append((ids >= 0).astype(np.float64))
            cols.append(np.maximum(ids, 0) + self.offsets[c])
        for c in self.spec["dense"]:
            b = np.searchsorted(self.boundaries[c], df[c].to_numpy(np.float64), side="right")
            cols.append(b[:, None] + self.offsets[c])
            masks.append(np.ones((len(df), 1)))
        return (np.concatenate(cols, axis=1).astype(np.int64),
                np.concatenate(masks, axis=1).astype(np.float32))


def histogram_auc(labels, scores):
    """The AUC mtrec reports: keras.metrics.AUC with 10,000 thresholds."""
    import keras
    metric = keras.metrics.AUC(num_thresholds=10000)
    metric.update_state(np.asarray(labels, np.float32), np.asarray(scores, np.float32))
    return float(metric.result())


def lr_layer_class():
    import keras

    class SparseLogistic(keras.layers.Layer):
        """logit[:, t] = b[t] + sum over the row's active columns of w[column, t]."""

        def __init__(self, size, n_tasks, l2, **kwargs):
            super().__init__(**kwargs)
            self.size, self.n_tasks, self.l2 = size, n_tasks, l2

        def build(self, input_shape):
            reg = keras.regularizers.L2(self.l2) if self.l2 else None
            self.w = self.add_weight(shape=(self.size, self.n_tasks), initializer="zeros",
                                     regularizer=reg, name="w")
            self.b = self.add_weight(shape=(self.n_tasks,), initializer="zeros", name="b")

        def call(self, inputs):
            idx, mask = inputs  # (batch, slots) each
            w = keras.ops.take(self.w, idx, axis=0)  # (batch, slots, tasks)
            return keras.ops.sum(w * keras.ops.expand_dims(mask, -1), axis=1) + self.b

    return SparseLogistic


def fit_lr(x, y, size, l2, rate, epochs, seed, eval_sets):
    """One logistic regression per task (a weight column each; the loss is the sum of the
    tasks' mean log losses, so under Adam the tasks do not interact), L2 l2 * |w|^2 added to
    every batch's loss; Adam, batch 512. Returns {eval set: [(rows, tasks) probabilities
    after each epoch]}."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    n_tasks = y.shape[1]
    idx_in = keras.Input((x[0].shape[1],), dtype="int64")
    mask_in = keras.Input((x[0].shape[1],), dtype="float32")
    logits = lr_layer_class()(size, n_tasks, l2)([idx_in, mask_in])  # (batch, tasks)
    model = keras.Model([idx_in, mask_in], logits)

    def loss(y_true, y_pred):  # (batch, tasks)
        per = keras.ops.binary_crossentropy(y_true, y_pred, from_logits=True)
        return keras.ops.sum(keras.ops.mean(per, axis=0))

    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, steps_per_execution=64)
    out = {name: [] for name in eval_sets}
    data = tf.data.Dataset.from_tensor_slices(((x[0], x[1]), y.astype(np.float32)))
    data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(512)
    for _ in range(epochs):
        model.fit(data, epochs=1, verbose=0)
        for name, (xi, xm) in eval_sets.items():
            logit = model.predict([xi, xm], batch_size=8192, verbose=0)
            out[name].append(1.0 / (1.0 + np.exp(-logit)))
    keras.backend.clear_session()
    return out


def tuned_lr(dataset, train, test, boundaries, grid_l2, grid_rates, max_epochs, seed=1):
    """Grid over (L2, learning rate, epochs) per task on train's last 10% (fit on the first
    90%); refit the chosen setting per task on all of train; test AUC (histogram and exact)."""
    spec = DATASETS[dataset]
    tasks = spec["tasks"]
    design = Design(dataset, boundaries)
    cut = int(len(train) * 0.9)
    fit_part, valid = train.iloc[:cut], train.iloc[cut:]
    x_fit, x_valid = design(fit_part), design(valid)
    y_fit, y_valid = fit_part[tasks].to_numpy(), valid[tasks].to_numpy()
    scores = {}  # (l2, rate, epoch) -> per-task valid AUC
    start = time.time()
    for l2 in grid_l2:
        for rate in grid_rates:
            probs = fit_lr(x_fit, y_fit, design.size, l2, rate, max_epochs, seed,
                           {"valid": x_valid})["valid"]
            for e, p in enumerate(probs, 1):
                scores[(l2, rate, e)] = [auc(y_valid[:, k], p[:, k]) for k in range(len(tasks))]
            best = [max(scores[(l2, rate, e)][k] for e in range(1, max_epochs + 1))
                    for k in range(len(tasks))]
            print(f"  LR {dataset} l2={l2:g} lr={rate:g}: best valid AUC per task "
                  + " ".join(f"{t}={b:.4f}" for t, b in zip(tasks, best)), flush=True)
    chosen = {}
    for k, t in enumerate(tasks):
        key = max(scores, key=lambda kk: scores[kk][k])
        chosen[t] = {"l2": key[0], "rate": key[1], "epochs": key[2], "valid_auc": scores[key][k]}
    x_train, x_test = design(train), design(test)
    y_train = train[tasks].to_numpy()
    result = {}
    for l2, rate in sorted({(c["l2"], c["rate"]) for c in chosen.values()}):
        need = max(c["epochs"] for c in chosen.values() if (c["l2"], c["rate"]) == (l2, rate))
        probs = fit_lr(x_train, y_train, design.size, l2, rate, need, seed,
                       {"test": x_test})["test"]
        for k, t in enumerate(tasks):
            c = chosen[t]
            if (c["l2"], c["rate"]) == (l2, rate):
                p = probs[c["epochs"] - 1][:, k]
                y = test[t].to_numpy()
                result[t] = dict(c, auc=histogram_auc(y, p), auc_exact=auc(y, p))
    result["_seconds"] = time.time() - start
    result["_weights"] = design.size
    for t in tasks:
        r = result[t]
        print(f"LR {dataset} {t}: l2={r['l2']:g} lr={r['rate']:g} epochs={r['epochs']} "
              f"(valid {r['valid_auc']:.4f}) test AUC {r['auc']:.4f} (exact {r['auc_exact']:.4f})",
              flush=True)
    return result


# ---------------------------------------------------------------------------------------
# report


def summarise(runs, tasks):
    """Per task: best / last AUC mean ± std over seeds, and the mean step of the best."""
    out = {}
    for t in tasks:
        key = f"auc_{t}"
        best = [max(r[key] for r in run["curve"]) for run in runs]
        best_step = [max(run["curve"], key=lambda r: r[key])["global_step"] for run in runs]
        last = [run["curve"][-1][key] for run in runs]
        out[t] = {"best": best, "last": last, "best_step": best_step}
    return out


def tables(dataset, results, lr, steps_per_epoch):
    tasks = DATASETS[dataset]["tasks"]
    lines = [f"| model | " + " | ".join(f"{t} best | {t} last" for t in tasks)
             + " | best at epoch (mean) | s/run |",
             "|---|" + "---|---|" * len(tasks) + "---|---|"]
    for name, runs in results.items():
        s = summarise(runs, tasks)
        cells = []
        for t in tasks:
            mark = ""
            if lr:
                mean_best, std_best = mean_std(s[t]["best"])
                mark = "" if mean_best >= lr[t]["auc"] else " ✗"
            cells.append(mean_std_text(s[t]["best"]) + mark)
            cells.append(mean_std_text(s[t]["last"]))
        epochs = ", ".join(f"{np.mean(s[t]['best_step']) / steps_per_epoch:.1f}" for t in tasks)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {epochs} | "
                     f"{mean_std([r['seconds'] for r in runs])[0]:.0f} |")
    if lr:
        lines.append("| logistic regression, tuned | " + " | ".join(
            f"{lr[t]['auc']:.4f} | " for t in tasks) + " | | |")
    return "\n".join(lines)


def curve_table(dataset, results, steps_per_epoch):
    """Mean AUC over seeds at each evaluation, per model and task (the curve)."""
    tasks = DATASETS[dataset]["tasks"]
    lines = []
    for name, runs in results.items():
        steps = [r["global_step"] for r in runs[0]["curve"]]
        lines.append(f"{name} (mean over seeds; epochs " + ", ".join(
            f"{st / steps_per_epoch:.1f}" for st in steps) + "):")
        for t in tasks:
            values = np.mean([[r[f"auc_{t}"] for r in run["curve"]] for run in runs], axis=0)
            lines.append(f"  {t}: " + " ".join(f"{v:.4f}" for v in values))
    return "\n".join(lines)


def source_digest(package_dir):
    """sha256 (12 hex digits) of the *.py files under package_dir."""
    import hashlib
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(package_dir)):
        for name in sorted(f for f in files if f.endswith(".py") and not f.endswith("_pb2.py")):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()[:12]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kuairand", help="kuairand27k_likehate_kcore15.tsv")
    p.add_argument("--ml100k", help="ml100k_ratings_joined.csv")
    p.add_argument("--datasets", default="kuairand,ml100k")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", default="1,2,3", help="train_config.seed of each run")
    p.add_argument("--epochs", type=float, help="default: per data set (kuairand 8, ml100k 6)")
    p.add_argument("--evals_per_epoch", type=int, default=2)
    p.add_argument("--max_train_rows", type=int, default=0,
                   help="keep only the last N train rows in time order (0: all)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout_ratio of every DNN")
    p.add_argument("--l2", type=float, default=1e-6, help="l2_regularization (sample: 1e-6)")
    p.add_argument("--embedding_l2", type=float, default=5e-5,
                   help="embedding_regularization (sample: 5e-5)")
    p.add_argument("--linear_logits", action="store_true",
                   help="use_linear_logits with every feature in a WIDE group too")
    p.add_argument("--embedding_lr", type=float, default=0.0,
                   help="a second optimizer_config (Adam at this constant rate) for the "
                        "embedding tables; 0: the tables share the dense weights' Adam")
    p.add_argument("--validation", action="store_true",
                   help="evaluate on train's last 10%% (trained on its first 90%%), not on "
                        "the test split; for choosing settings (use with --no_lr)")
    p.add_argument("--tag", default="", help="name of this setting in the tables")
    p.add_argument("--no_lr", dest="lr", action="store_false", help="skip the logistic grid")
    p.add_argument("--no_models", dest="models_on", action="store_false")
    p.add_argument("--lr_l2", default="0,1e-7,1e-6,1e-5")
    p.add_argument("--lr_rates", default="0.01,0.03")
    p.add_argument("--lr_epochs", type=int, default=8)
    p.add_argument("--work_dir", default="/tmp/mtrec_bench_tabular")
    args = p.parse_args(argv)

    work_dir = outside_repo_work_dir(args.work_dir)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown --models {bad}; choose from {list(MODELS)}")
    seeds = [int(x) for x in args.seeds.split(",")]
    settings = {"dropout": args.dropout, "l2": args.l2, "embedding_l2": args.embedding_l2,
                "linear_logits": args.linear_logits, "embedding_lr": args.embedding_lr}
    sample = {"dropout": 0.0, "l2": 1e-6, "embedding_l2": 5e-5, "linear_logits": False,
              "embedding_lr": 0.0}
    tag = args.tag or ("sample" if settings == sample else "_".join(
        f"{k}{v:g}" if not isinstance(v, bool) else k for k, v in settings.items()
        if v != sample[k]))
    info = machine_info()
    import mtrec
    info["mtrec_imported_from"] = os.path.dirname(mtrec.__file__)
    info["mtrec_imported_sha256"] = source_digest(info["mtrec_imported_from"])
    print(f"mtrec imported from {info['mtrec_imported_from']} "
          f"(sha256 of its *.py {info['mtrec_imported_sha256']})", flush=True)
    info["start"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["load_start"] = os.getloadavg()
    report = [f"command: {' '.join(sys.argv)}"]
    for dataset in args.datasets.split(","):
        path = getattr(args, dataset)
        if not path:
            p.error(f"--{dataset} PATH is needed for --datasets {dataset}")
        spec = DATASETS[dataset]
        train, test, paths = load_dataset(dataset, path, work_dir, args.max_train_rows,
                                          args.validation)
        boundaries = {c: decile_boundaries(train[c]) for c in spec["dense"]}
        steps_per_epoch = len(train) / 512
        epochs = args.epochs or spec["epochs"]
        num_steps = int(round(epochs * steps_per_epoch))
        save_steps = max(1, int(round(steps_per_epoch / args.evals_per_epoch)))
        head = (f"{dataset}: train {len(train):,} rows, test {len(test):,} rows; positives "
                + ", ".join(f"{t} {train[t].mean():.3f}/{test[t].mean():.3f}"
                            for t in spec["tasks"])
                + f"; {num_steps} steps ({epochs:g} epochs of {steps_per_epoch:.1f}), "
                f"eval every {save_steps}; boundaries "
                + "; ".join(f"{c}: {boundaries[c]}" for c in spec["dense"]))
        print(head, flush=True)
        report.append(head)
        lr = None
        if args.lr:
            if args.validation:
                p.error("--validation is for the models' settings; pass --no_lr")
            lr_path = os.path.join(work_dir, f"{dataset}_lr.json")
            lr = tuned_lr(dataset, train, test, boundaries,
                          [float(v) for v in args.lr_l2.split(",")],
                          [float(v) for v in args.lr_rates.split(",")], args.lr_epochs)
            with open(lr_path, "w", encoding="utf-8") as f:
                json.dump(lr, f, indent=2)
        elif not args.validation:
            lr_path = os.path.join(work_dir, f"{dataset}_lr.json")
            if os.path.exists(lr_path):
                with open(lr_path, encoding="utf-8") as f:
                    lr = json.load(f)
        results = {}
        if args.models_on:
            for model in models:
                runs = []
                for seed in seeds:
                    part = dataset + ("_valid" if args.validation else "")
                    run_dir = os.path.join(work_dir, part, f"{model}_{tag}_seed{seed}")
                    os.makedirs(run_dir, exist_ok=True)
                    config_path = os.path.join(run_dir, "pipeline.config")
                    model_dir = os.path.join(run_dir, "model")
                    write_config(config_path, dataset, model, train, paths, model_dir, seed,
                                 num_steps, save_steps, boundaries, settings)
                    curve, seconds = train_in_process(config_path, model_dir,
                                                      os.path.join(run_dir, "train.log"))
                    runs.append({"seed": seed, "curve": curve, "seconds": seconds,
                                 "load": os.getloadavg()[0]})
                    print(f"{dataset} {model} [{tag}] seed {seed}: {seconds:.0f} s; best "
                          + " ".join(f"{t}={max(r['auc_' + t] for r in curve):.4f}"
                                     for t in spec["tasks"]) + "; last "
                          + " ".join(f"{t}={curve[-1]['auc_' + t]:.4f}" for t in spec["tasks"])
                          + f"; load {os.getloadavg()[0]:.2f}", flush=True)
                results[f"{model} ({tag})"] = runs
            with open(os.path.join(work_dir, f"{dataset}{'_valid' if args.validation else ''}"
                                   f"_{tag}_runs.json"), "w",
                      encoding="utf-8") as f:
                json.dump({"settings": settings, "runs": results, "lr": lr,
                           "steps_per_epoch": steps_per_epoch, "rows": [len(train), len(test)]},
                          f, indent=2)
            report.append(tables(dataset, results, lr, steps_per_epoch))
            report.append(curve_table(dataset, results, steps_per_epoch))
        elif lr:
            report.append(tables(dataset, {}, lr, steps_per_epoch))
        if lr:
            report.append("LR chosen: " + "; ".join(
                f"{t}: l2 {lr[t]['l2']:g}, lr {lr[t]['rate']:g}, {lr[t]['epochs']} epochs, "
                f"valid {lr[t]['valid_auc']:.4f}, test {lr[t]['auc']:.4f} (exact "
                f"{lr[t]['auc_exact']:.4f})" for t in spec["tasks"])
                + f"; {lr['_weights']:,} weights per task; grid {lr['_seconds']:.0f} s")
    info["end"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["load_end"] = os.getloadavg()
    now = source_digest(info["mtrec_imported_from"])
    if now != info["mtrec_imported_sha256"]:
        print("NOTE: the imported mtrec source changed during the run (sha256 "
              f"{info['mtrec_imported_sha256']} at start, {now} at end).", flush=True)
    report.append(json.dumps(info))
    text = "\n\n".join(report)
    print("\n" + text, flush=True)
    with open(os.path.join(work_dir, f"report_{tag}_{int(time.time())}.md"), "w",
              encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
