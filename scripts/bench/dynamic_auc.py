#!/usr/bin/env python
"""Held-out AUC of dynamic tables (ev_params) against hashed ones on MovieLens-100K.

The MMoE of scripts/bench/multidomain.py on ml100k (temporal split, first 90% train; tasks
label_like (AUC) and rating (RMSE)), with its user_id and item_id tables (943 users, 1,682
items) hashed into --buckets buckets each, or dynamic (`ev_params {}`: one row per id).
Every run: `mtrec train` with train_config.seed, then the exported SavedModel scores the
test file (multidomain.score).

    python scripts/bench/dynamic_auc.py \
        --data ../shared/data/movielens/ml-100k/ml100k_ratings_joined.csv
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multidomain  # noqa: E402
from common import machine_info, mean_std_text, outside_repo_work_dir  # noqa: E402

ROOT = multidomain.ROOT


def variant_config(path: str, variant: str) -> None:
    """Rewrite user_id and item_id of the config at path: hashed ("hash<N>") or dynamic."""
    from google.protobuf import text_format

    from mtrec import config as config_lib
    with open(path) as f:
        pipeline = config_lib.parse_text(f.read(), path)
    for feature in pipeline.feature_config.features:
        if feature.input_names[0] in ("user_id", "item_id"):
            if variant == "dynamic":
                feature.ClearField("hash_bucket_size")
                feature.ev_params.SetInParent()
            else:
                feature.hash_bucket_size = int(variant[len("hash"):])
    with open(path, "w") as f:
        f.write(text_format.MessageToString(pipeline))


def run(args, variant, seed, train, test, domain, tasks):
    run_dir = os.path.join(args.work_dir, f"{variant}_seed{seed}")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    os.makedirs(run_dir)
    config = os.path.join(run_dir, "pipeline_in.config")
    multidomain.write_config(args, "mmoe", train, test, config)
    variant_config(config, variant)
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "mtrec", "train", "--config", config,
                           "--model_dir", os.path.join(run_dir, "model"),
                           "--set", f"train_config.seed={seed}"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} failed:\n{done.stderr[-3000:]}")
    results = multidomain.score(os.path.join(run_dir, "model", "export", "final"), test,
                                domain, tasks, os.path.join(run_dir, "scored.csv"))
    results["seconds"] = time.time() - start
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ml100k_ratings_joined.csv")
    parser.add_argument("--buckets", default="100,500,2000")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--work_dir", default="/tmp/mtrec_bench_dynamic_auc")
    args = parser.parse_args()
    args.work_dir = outside_repo_work_dir(args.work_dir)
    # What multidomain.prepare / write_config read.
    args.dataset, args.tower_units = "ml100k", ""
    args.sample_dir = os.path.join(ROOT, "samples", "model_config")
    train, test, domain, tasks = multidomain.prepare(args)
    variants = [f"hash{b}" for b in args.buckets.split(",")] + ["dynamic"]
    results = {v: [] for v in variants}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in variants:
            results[variant].append(run(args, variant, seed, train, test, domain, tasks))
            print(json.dumps({"variant": variant, "seed": seed, **results[variant][-1]}),
                  flush=True)
    print(machine_info())
    print("| user_id / item_id | auc_like | rmse_rating | s/run |\n|---|---|---|---|")
    for variant, runs in results.items():
        print(f"| {variant} | {mean_std_text([r['auc_like'] for r in runs])} | "
              f"{mean_std_text([r['rmse_rating'] for r in runs])} | "
              f"{sum(r['seconds'] for r in runs) / len(runs):.0f} |")


if __name__ == "__main__":
    main()
