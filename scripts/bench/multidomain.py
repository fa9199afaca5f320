#!/usr/bin/env python
"""Multi-scenario models vs MMoE: overall and per-domain test metrics, several seeds.

Datasets (derived files go to --work_dir, never into the repository):
  generated  scripts/make_sample_data.py's multi-domain world (4 scenarios with their own
             feature->label relations), --train_rows / --test_rows fresh rows;
  ml100k     MovieLens-100K (../shared/data/movielens/ml-100k/ml100k_ratings_joined.csv,
             pass it with --data): domain age_group (3), tasks label_like (binary, AUC)
             and rating (regression, RMSE); rows sorted by time, the first 90% train.

Each model is its sample config samples/model_config/<model>_on_multidomain.config (or
--sample_dir/<model>_on_multidomain.config, to screen variants); for
ml100k its data, features, groups and towers are swapped for MovieLens ones (same group
names: "all" and "prior" = user and item ids; the domain feature is called "domain").
Every run: `mtrec train` with train_config.seed, then the exported SavedModel scores the
test file and the metrics are computed here, overall and per domain, from those scores
(MMoE has no domain feature, so mtrec itself reports no per-domain metrics for it).

    python scripts/bench/multidomain.py --dataset generated
    python scripts/bench/multidomain.py --dataset ml100k \
        --data ../shared/data/movielens/ml-100k/ml100k_ratings_joined.csv
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from common import auc, machine_info, mean_std_text  # noqa: E402
MODELS = ["mmoe", "pepnet", "apg", "m2m", "star", "hmoe"]

ML_INPUTS = """
data_config {
  batch_size: 512
  label_fields: ["label_like", "rating"]
  shuffle: true
  input_type: CSVInput
  with_header: true
  input_fields { input_name: "user_id" input_type: STRING }
  input_fields { input_name: "item_id" input_type: STRING }
  input_fields { input_name: "gender" input_type: STRING }
  input_fields { input_name: "age" input_type: INT32 }
  input_fields { input_name: "age_group" input_type: INT32 }
  input_fields { input_name: "occupation" input_type: STRING }
  input_fields { input_name: "zip_code" input_type: STRING }
  input_fields { input_name: "genres" input_type: STRING }
  input_fields { input_name: "release_year" input_type: INT32 }
  input_fields { input_name: "timestamp" input_type: INT64 }
  input_fields { input_name: "rating" input_type: FLOAT }
  input_fields { input_name: "label_like" input_type: INT32 }
}
feature_config {
  features { feature_name: "domain" input_names: "age_group" num_buckets: 3 embedding_dim: 8 }
  features { input_names: "user_id" hash_bucket_size: 4000 embedding_dim: 16 }
  features { input_names: "item_id" hash_bucket_size: 8000 embedding_dim: 16 }
  features { input_names: "gender" vocab_list: ["M", "F"] embedding_dim: 4 }
  features { input_names: "occupation" hash_bucket_size: 100 embedding_dim: 8 }
  features { input_names: "genres" feature_type: TagFeature separator: "|"
             hash_bucket_size: 100 embedding_dim: 8 combiner: "mean" }
  features { input_names: "release_year" hash_bucket_size: 200 embedding_dim: 8 }
}
"""
ML_GROUPS = """
feature_groups { group_name: "all" wide_deep: DEEP
  feature_names: ["domain", "user_id", "item_id", "gender", "occupation", "genres", "release_year"] }
feature_groups { group_name: "prior" feature_names: ["user_id", "item_id"] wide_deep: DEEP }
"""


def prepare(args):
    """-> (train_path, test_path, domain column, [(task, label column, kind)])."""
    os.makedirs(args.work_dir, exist_ok=True)
    if args.dataset == "generated":
        import make_sample_data
        train, test = make_sample_data.write_multidomain(args.work_dir, args.train_rows,
                                                         args.test_rows, args.data_seed)
        return train, test, "domain", [("ctr", "clk", "auc"), ("like", "like", "auc")]
    import pandas as pd
    frame = pd.read_csv(args.data).sort_values(["timestamp", "user_id", "item_id"],
                                               kind="mergesort")
    cut = int(len(frame) * 0.9)
    train, test = (os.path.join(args.work_dir, f"ml100k_{s}.csv") for s in ("train", "test"))
    frame.iloc[:cut].to_csv(train, index=False)
    frame.iloc[cut:].to_csv(test, index=False)
    return train, test, "age_group", [("like", "label_like", "auc"), ("rating", "rating", "rmse")]


def write_config(args, model, train, test, path):
    from google.protobuf import text_format

    from mtrec import config as config_lib
    from mtrec.protos import loss_pb2
    sample = os.path.join(args.sample_dir, f"{model}_on_multidomain.config")
    with open(sample) as f:
        pipeline = config_lib.parse_text(f.read(), sample)
    pipeline.train_input_path, pipeline.eval_input_path = train, test
    if args.dataset == "ml100k":
        inputs = config_lib.parse_text(ML_INPUTS, "ml100k inputs")
        pipeline.data_config.CopyFrom(inputs.data_config)
        pipeline.feature_config.CopyFrom(inputs.feature_config)
        model_config = pipeline.model_config
        del model_config.feature_groups[:]
        text_format.Parse(ML_GROUPS, model_config)
        if model == "mmoe":  # MMoE's groups have no prior group
            del model_config.feature_groups[1:]
        like, rating = config_lib.task_towers(model_config)
        like.tower_name, like.label_name = "like", "label_like"
        rating.tower_name, rating.label_name = "rating", "rating"
        rating.loss_type = loss_pb2.L2_LOSS
        del rating.metrics_set[:]
        rating.metrics_set.add().mean_squared_error.SetInParent()
    if args.tower_units:  # the same towers for every model (a capacity-matched comparison)
        for tower in config_lib.task_towers(pipeline.model_config):
            del tower.dnn.hidden_units[:]
            tower.dnn.hidden_units.extend(int(u) for u in args.tower_units.split(","))
    pipeline.train_config.num_steps = args.steps
    # --evals N: N held-out evaluations during training (the curves of --plot).
    pipeline.train_config.save_checkpoints_steps = max(1, args.steps // args.evals)
    with open(path, "w") as f:
        f.write(text_format.MessageToString(pipeline))


def score(export_root, test, domain_column, tasks, out_path):
    from mtrec import api
    export_dir = os.path.join(export_root, sorted(os.listdir(export_root))[-1])
    reserved = [domain_column] + [label for _, label, _ in tasks]
    api.predict(export_dir, test, out_path, reserved_cols=reserved)
    with open(out_path, newline="") as f:
        rows = list(csv.DictReader(f))
    domains = np.array([int(float(r[domain_column])) for r in rows])
    results = {}
    for task, label, kind in tasks:
        y = np.array([float(r[label]) for r in rows])
        pred = np.array([float(r[f"probs_{task}" if kind == "auc" else f"y_{task}"])
                         for r in rows])
        for d in [None] + sorted(set(domains.tolist())):
            mask = np.ones(len(y), bool) if d is None else domains == d
            key = f"{kind}_{task}" + ("" if d is None else f"/domain={d}")
            results[key] = (auc(y[mask], pred[mask]) if kind == "auc"
                            else float(np.sqrt(np.mean((y[mask] - pred[mask]) ** 2))))
    return results


def run(args, model, seed, train, test, domain_column, tasks):
    run_dir = os.path.join(args.work_dir, f"{model}_seed{seed}")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    os.makedirs(run_dir)
    config = os.path.join(run_dir, "pipeline_in.config")
    write_config(args, model, train, test, config)
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "mtrec", "train", "--config", config,
                           "--model_dir", os.path.join(run_dir, "model"),
                           "--set", f"train_config.seed={seed}"], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{model} seed {seed} failed:\n{done.stderr[-3000:]}")
    results = score(os.path.join(run_dir, "model", "export", "final"), test, domain_column,
                    tasks, os.path.join(run_dir, "scored.csv"))
    results["seconds"] = seconds
    return results


def table(results, tasks):
    keys = [k for k in next(iter(results.values()))[0] if k != "seconds"]
    overall = [k for k in keys if "/" not in k]
    lines = []
    for key in overall:
        per_domain = [k for k in keys if k.startswith(key + "/")]
        lines.append(f"\n**{key}** (mean ± std over seeds; overall, then per domain)\n")
        lines.append("| model | overall | " + " | ".join(k.split("/")[1] for k in per_domain)
                     + " |")
        lines.append("|---" * (2 + len(per_domain)) + "|")
        for model, runs in results.items():
            cells = [mean_std_text([r[k] for r in runs]) for k in [key] + per_domain]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    seconds = {m: np.mean([r["seconds"] for r in runs]) for m, runs in results.items()}
    lines.append("\nMean wall time per run (s): " +
                 ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["generated", "ml100k"], default="generated")
    parser.add_argument("--data", help="ml100k_ratings_joined.csv for --dataset ml100k")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--train_rows", type=int, default=200000)
    parser.add_argument("--test_rows", type=int, default=50000)
    parser.add_argument("--data_seed", type=int, default=2026)
    parser.add_argument("--tower_units", default="",
                        help="e.g. 256,128,64: replace every task tower's hidden_units")
    parser.add_argument("--work_dir", default="/tmp/mtrec_bench_multidomain")
    parser.add_argument("--evals", type=int, default=1,
                        help="held-out evaluations during each run (the curves of --plot)")
    parser.add_argument("--plot", action="store_true",
                        help="also write domains_<metric>.png and curves_<metric>.png to "
                             "work_dir (needs the bench extra: matplotlib)")
    parser.add_argument("--sample_dir", default=os.path.join(ROOT, "samples", "model_config"),
                        help="where <model>_on_multidomain.config are read (to screen variants)")
    args = parser.parse_args(argv)
    if args.dataset == "ml100k" and not args.data:
        parser.error("--dataset ml100k needs --data PATH/ml100k_ratings_joined.csv")
    args.work_dir = os.path.join(args.work_dir, args.dataset +
                                 (f"_towers{args.tower_units.replace(',', '-')}"
                                  if args.tower_units else ""))
    train, test, domain_column, tasks = prepare(args)
    results = {}
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            r = run(args, model, seed, train, test, domain_column, tasks)
            results.setdefault(model, []).append(r)
            print(model, seed, json.dumps({k: round(v, 4) if v is not None else None
                                           for k, v in r.items()}), flush=True)
    info = machine_info()
    report = (f"{args.dataset}: {args.steps} steps, batch 512, seeds {args.seeds}"
              f"{'; task towers ' + args.tower_units if args.tower_units else ''}; "
              f"{info['cpu']}, {info['nproc']} cores, tensorflow {info['tensorflow']}, "
              f"mtrec source {info['mtrec_source_sha256']}\n"
              + table(results, tasks))
    print(report)
    with open(os.path.join(args.work_dir, "report.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(args.work_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if args.plot:
        import plots
        first_seed = args.seeds.split(",")[0]
        for metric in (k for k in next(iter(results.values()))[0] if k.startswith("auc_")
                       and "/" not in k):
            what = f"{args.dataset}, {args.steps} steps"
            plots.domains(results, metric, os.path.join(args.work_dir, f"domains_{metric}.png"),
                          title=f"{metric} per domain ({what}, seeds {args.seeds})")
            plots.curves({m: os.path.join(args.work_dir, f"{m}_seed{first_seed}", "model")
                          for m in results}, metric,
                         os.path.join(args.work_dir, f"curves_{metric}.png"),
                         title=f"held-out {metric} ({what}, seed {first_seed})")


if __name__ == "__main__":
    main()
