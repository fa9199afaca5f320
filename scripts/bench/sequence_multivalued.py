#!/usr/bin/env python
"""Multi-valued features train (issue #17): MMoE with and without a bag / sequence feature on
MovieLens-100K's genres and on Ali-CCP's raw multi-valued `field:id` tokens.

Datasets (--dataset; derived files go to --work_dir, never into the repository):
  ml100k   ml100k_ratings_joined.csv (--data). Rows sorted by (timestamp, user_id,
           item_id), the first 90% train, the rest test (as scripts/bench/multidomain.py).
           Tasks: like = label_like (AUC) and rating (L2 regression, RMSE). Features:
           user_id, item_id, gender, age_group, occupation, release_year; the
           multi-valued one is genres ("|"-separated, 1-6 names per movie).
           --drop_item_id leaves item_id out (then genres are the only item feature).
  ali_ccp  PaddleRec's raw Ali-CCP sample (--data: the directory with train_small.txt and
           test_small.txt; 10 rows each). Each line is: sample index, click, click AND
           buy, then ~880 `field:id` tokens; a field repeated in a line is multi-valued.
           The script writes one column per field (f<field>): single-valued fields as one id, the
           multi-valued ones (109_14, 110_14, 127_14, 150_14 (user behaviour histories, up
           to 342 ids), 210, 853) as "|"-joined ids. Tasks: click and conversion (=
           click AND buy), both AUC. 10 test rows with 1 click and no conversion, and
           their tokens are the training rows' tokens line for line (only the labels
           differ): this shows that the features train (the loss falls), the AUC means
           nothing.

Variants (--variants): none (no multi-valued feature), tag (each multi-valued column a
TagFeature, combiner mean), seq (a SequenceFeature, sequence_combiner mean {}).
Per variant and seed (--seeds): `mtrec train` (evaluates on the test file and exports),
then the exported SavedModel scores the test rows (serving_default signature) and the
AUC / RMSE are computed here exactly.

Usage:
  python scripts/bench/sequence_multivalued.py --dataset ml100k \\
      --data /work/shared/data/movielens/ml-100k/ml100k_ratings_joined.csv
  python scripts/bench/sequence_multivalued.py --dataset ali_ccp \\
      --data /work/shared/data/ali_ccp/paddlerec_esmm
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import REPO, auc, outside_repo_work_dir, machine_info, mean_std_text  # noqa: E402

VARIANTS = ["none", "tag", "seq"]
# Column names: "f" + the field id (f109_14, ...).
ALI_MULTI = ["f109_14", "f110_14", "f127_14", "f150_14", "f210", "f853"]


# ---------------------------------------------------------------------------------------
# data


def prepare_ml100k(args, work_dir):
    frame = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    frame = frame.iloc[np.lexsort((frame["item_id"].astype(int), frame["user_id"].astype(int),
                                   frame["timestamp"].astype(int)))]
    cut = int(len(frame) * 0.9)
    paths = {s: os.path.join(work_dir, f"ml100k_{s}.csv") for s in ("train", "test")}
    frame.iloc[:cut].to_csv(paths["train"], index=False)
    frame.iloc[cut:].to_csv(paths["test"], index=False)
    single = ["user_id", "gender", "age_group", "occupation", "release_year"]
    if not args.drop_item_id:
        single.insert(1, "item_id")
    spec = {
        "fields": [(c, "STRING") for c in frame.columns if c not in ("rating", "label_like")]
                  + [("rating", "FLOAT"), ("label_like", "INT32")],
        "separator": ",",
        "single": single, "multi": ["genres"],
        "buckets": {"user_id": 4000, "item_id": 8000, "gender": 10, "age_group": 10,
                    "occupation": 100, "release_year": 200, "genres": 100},
        "tasks": [("like", "label_like", "auc"), ("rating", "rating", "rmse")],
        "batch_size": 512, "steps": args.steps or 500,
    }
    return paths, frame.iloc[:cut], frame.iloc[cut:], spec


def read_ali_ccp(path):
    """One row per line: click, conversion, and per field f<field id> its ids ("|"-joined)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.strip().split(",")
            if len(parts) < 4:
                sys.exit(f"{path}:{number}: expected index, click, conversion and tokens")
            row = {"click": parts[1], "conversion": parts[2]}
            for token in parts[3:]:
                field, sep, value = token.partition(":")
                if not sep:
                    sys.exit(f"{path}:{number}: token {token!r} is not field:id")
                row.setdefault("f" + field, []).append(value)
            rows.append({k: "|".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return pd.DataFrame(rows).fillna("")


def prepare_ali_ccp(args, work_dir):
    train = read_ali_ccp(os.path.join(args.data, "train_small.txt"))
    test = read_ali_ccp(os.path.join(args.data, "test_small.txt"))
    columns = ["click", "conversion"] + sorted(
        (set(train.columns) | set(test.columns)) - {"click", "conversion"})
    train, test = train.reindex(columns=columns, fill_value=""), \
        test.reindex(columns=columns, fill_value="")
    paths = {s: os.path.join(work_dir, f"ali_ccp_{s}.csv") for s in ("train", "test")}
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    fields = [c for c in columns[2:]]
    spec = {
        "fields": [(c, "STRING") for c in fields] + [("click", "INT32"),
                                                     ("conversion", "INT32")],
        "separator": ",",
        "single": [c for c in fields if c not in ALI_MULTI],
        "multi": [c for c in ALI_MULTI if c in fields],
        "buckets": {c: 10000 for c in fields},
        "tasks": [("click", "click", "auc"), ("conversion", "conversion", "auc")],
        "batch_size": 5, "steps": args.steps or 40,
    }
    return paths, train, test, spec


# ---------------------------------------------------------------------------------------
# config


def feature_name(column):
    return f"f{column}" if column[0].isdigit() else column


def write_config(path, spec, variant, paths, seed):
    fields = "\n".join(f'  input_fields {{ input_name: "{n}" input_type: {t} }}'
                       for n, t in spec["fields"])
    labels = "\n".join(f'  label_fields: "{label}"' for _, label, _ in spec["tasks"])
    features, names = [], []
    for column in spec["single"]:
        features.append(f'  features {{ feature_name: "{feature_name(column)}" '
                        f'input_names: "{column}" feature_type: IdFeature '
                        f'hash_bucket_size: {spec["buckets"][column]} embedding_dim: 16 }}')
        names.append(feature_name(column))
    if variant != "none":
        for column in spec["multi"]:
            kind = ('feature_type: TagFeature combiner: "mean"' if variant == "tag" else
                    "feature_type: SequenceFeature sequence_combiner { mean {} }")
            features.append(f'  features {{ feature_name: "{feature_name(column)}" '
                            f'input_names: "{column}" {kind} separator: "|" '
                            f'hash_bucket_size: {spec["buckets"][column]} embedding_dim: 16 }}')
            names.append(feature_name(column))
    towers = []
    for task, label, kind in spec["tasks"]:
        loss, metric = (("CLASSIFICATION", "auc {}") if kind == "auc"
                        else ("L2_LOSS", "mean_squared_error {}"))
        towers.append(f'    task_towers {{ tower_name: "{task}" label_name: "{label}" '
                      f'dnn {{ hidden_units: [32] use_bn: false }} loss_type: {loss} '
                      f'metrics_set {{ {metric} }} }}')
    text = f"""# MMoE, multi-valued features: {variant}.
# Generated by scripts/bench/sequence_multivalued.py.
train_input_path: "{paths['train']}"
eval_input_path: "{paths['test']}"
train_config {{
  optimizer_config {{ adam_optimizer {{ learning_rate {{ constant_learning_rate {{
    learning_rate: 0.002 }} }} }} }}
  num_steps: {spec['steps']}
  save_checkpoints_steps: {spec['steps']}
  log_step_count_steps: {max(1, spec['steps'] // 5)}
  seed: {seed}
}}
data_config {{
  batch_size: {spec['batch_size']}
  num_epochs: 0
  shuffle: true
  input_type: CSVInput
  with_header: true
  separator: "{spec['separator']}"
{labels}
{fields}
}}
feature_config {{
{chr(10).join(features)}
}}
model_config {{
  model_class: "MMoE"
  feature_groups {{ group_name: "all" wide_deep: DEEP
{chr(10).join(f'    feature_names: "{n}"' for n in names)}
  }}
  mmoe {{
    expert_dnn {{ hidden_units: [64, 32] use_bn: false }}
    num_expert: 4
{chr(10).join(towers)}
  }}
}}
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------
# runs


def score(model_dir, test, tasks):
    """Exact AUC / RMSE of the exported SavedModel's serving_default on the test rows."""
    import tensorflow as tf
    root = os.path.join(model_dir, "export", "final")
    version = sorted(d for d in os.listdir(root) if d.isdigit())[-1]
    serve = tf.saved_model.load(os.path.join(root, version)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    outputs = {}
    for start in range(0, len(test), 4096):
        chunk = test.iloc[start:start + 4096]
        inputs = {name: (tf.constant(chunk[name].to_numpy().astype(str))
                         if spec.dtype == tf.string else
                         tf.cast(tf.constant(chunk[name].to_numpy().astype(np.float64)),
                                 spec.dtype)) for name, spec in specs.items()}
        for key, value in serve(**inputs).items():
            outputs.setdefault(key, []).append(value.numpy().reshape(-1))
    result = {}
    for task, label, kind in tasks:
        y = test[label].astype(float).to_numpy()
        if kind == "auc":
            result[f"auc_{task}"] = auc(y, np.concatenate(outputs[f"probs_{task}"]))
        else:
            pred = np.concatenate(outputs[f"y_{task}"])
            result[f"rmse_{task}"] = float(np.sqrt(np.mean((y - pred) ** 2)))
    return result


def run(config, model_dir, log_path):
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-m", "mtrec", "train", "--config", config,
                               "--model_dir", model_dir], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            sys.exit(f"mtrec train failed; log {log_path}:\n{f.read()[-3000:]}")
    return time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["ml100k", "ali_ccp"], required=True)
    p.add_argument("--data", required=True,
                   help="ml100k: ml100k_ratings_joined.csv; ali_ccp: the paddlerec_esmm dir")
    p.add_argument("--variants", default="none,tag,seq")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, help="default: ml100k 500 (2.8 epochs), ali_ccp 40")
    p.add_argument("--drop_item_id", action="store_true", help="ml100k: no item_id feature")
    p.add_argument("--work_dir", default="/tmp/mtrec_bench_multivalued")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants):
        p.error(f"--variants: choose from {VARIANTS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work_dir = outside_repo_work_dir(os.path.join(
        args.work_dir, args.dataset + ("_no_item_id" if args.drop_item_id else "")))
    load_start = os.getloadavg()[0]
    prepare = prepare_ml100k if args.dataset == "ml100k" else prepare_ali_ccp
    paths, train, test, spec = prepare(args, work_dir)
    print(f"{args.dataset}: train {len(train)} rows, test {len(test)} rows; multi-valued "
          f"{spec['multi']}", flush=True)
    results = {}
    for variant in variants:
        for seed in seeds:
            config = os.path.join(work_dir, f"mmoe_{variant}_seed{seed}.config")
            write_config(config, spec, variant, paths, seed)
            model_dir = os.path.join(work_dir, f"model_{variant}_seed{seed}")
            seconds = run(config, model_dir, os.path.join(work_dir, f"{variant}_seed{seed}.log"))
            r = dict(score(model_dir, test, spec["tasks"]), seconds=seconds, seed=seed)
            results.setdefault(variant, []).append(r)
            print(variant, json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)
    keys = [k for k in next(iter(results.values()))[0] if k not in ("seconds", "seed")]
    lines = [f"| MMoE, multi-valued {', '.join(spec['multi'])} | " + " | ".join(keys)
             + " | wall time per run (s) |", "|---|" + "---|" * (len(keys) + 1)]
    for variant, runs in results.items():
        lines.append(f"| {variant} | " + " | ".join(mean_std_text([r[k] for r in runs])
                                                    for k in keys)
                     + f" | {mean_std_text([r['seconds'] for r in runs], 1)} |")
    info = machine_info()
    lines += ["", f"{args.dataset}{' without item_id' if args.drop_item_id else ''}: train "
              f"{len(train):,} rows, test {len(test):,}; {spec['steps']} steps of "
              f"{spec['batch_size']}; seeds {args.seeds}; nproc {info['nproc']}, {info['cpu']}, "
              f"tensorflow {info['tensorflow']}, mtrec source {info['mtrec_source_sha256']}; "
              f"load average (1 min) {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}."]
    text = "\n".join(lines)
    print("\n" + text)
    with open(os.path.join(work_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(work_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"results": results, "spec": spec, "command": " ".join(sys.argv)}, f,
                  indent=1)


if __name__ == "__main__":
    main()
