#!/usr/bin/env python
"""Speed levers side by side: variants of the speed workload's training step in one process,
over the same batches held in memory, timed in alternation (A B C A B C ...) so that a
change in machine load hits every variant alike.

Variants (--variants, comma-separated):
  limit            speed_limit.py's hand-written step (Keras Adam on every variable)
  limit_bf16       the same, Dense layers under Keras' mixed_bfloat16 policy
  limit_xla_dense  the same, its dense part (after the gathers) a jit_compile tf.function
  limit_sparse     the same, the 20 tables trained by a sparse Adam (speed_limit.SparseAdam:
                   the rows a batch touched, one update per table a step), Keras Adam on
                   the rest
  limit_fused      limit_sparse with the 20 tables as ONE variable of 20 x 10,000 rows
                   (feature j's ids offset by j * 10,000): one gather and one sparse update
                   a step (base: limit_sparse)
  limit_fused_keras  limit with that one fused variable (Keras Adam densifies its gradient;
                   base: limit)
  mtrec            mtrec's train loop (mtrec/training/step.py) on speed.py's config, ids as
                   rows, dense table moments (the defaults), --steps steps per call
  mtrec_spl1       the same, one step per call (steps_per_loop 1: a host round trip a step)
  mtrec_bf16       the same as mtrec with train_config.mixed_precision "bf16"
  mtrec_lazy       the same as mtrec with lazy table moments
  mtrec_rows_2e6   the same as mtrec with num_buckets 2,000,000 per table (20 tables of
                   2e6 x 16; the ids stay below 10,000); with --flush, every mtrec variant's
                   dense-moments flush and checkpoint write are timed once at the end
  mtrec_one_table  the same as mtrec with all 20 id features sharing one table (a speed
                   probe of fused table updates: one unique, one sparse Adam update and one
                   scatter per slot a step instead of 20; the model differs)
  mtrec_fused      the same model as mtrec with its 20 id tables fused into one variable
                   in this script only (fuse_tables: one gather per group, one unique,
                   mask, moment update and scatter per slot a step instead of 20; base: mtrec)
Per variant: the median over --rounds of wall ms and process CPU ms per step (CPU time
counts every thread: the work, whatever else the machine runs), and each round's ratio to
its base (BASES, when that ran too; else the first variant). One JSON line per variant,
then a markdown table and the load averages seen at the rounds' starts.

Usage:
  python scripts/bench/speed_levers.py --data /tmp/mtrec_speed --model mmoe \
      --variants limit,limit_bf16,limit_xla_dense --rounds 5
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_limit  # noqa: E402
import speed_profile  # noqa: E402

MTREC_SETS = {"mtrec": [], "mtrec_spl1": [],
              "mtrec_bf16": ["train_config.mixed_precision=bf16"]}
# A variant's ratios are to its base when that ran in the same process.
BASES = {"limit_fused": "limit_sparse", "limit_fused_keras": "limit",
         "mtrec_fused": "mtrec"}


def fuse_tables(job) -> tuple[tf.Variable, dict]:
    """mtrec_fused, in this script only (mtrec itself keeps a table per feature): the
    single-id features' tables of the DEEP groups become ONE variable (the tables stacked
    in group order, feature f's rows offset by the rows before its table), looked up with
    one gather per group; the sparse optimizer gets slots for it, and the train loop built
    after this trains it in place of those tables. Their values are copied, so the model
    computes what it did. Returns (the fused variable, {feature: (its former table, its
    first row in the fused one)})."""
    groups = job.model.feature_groups
    if groups.dropouts or groups.attention_groups or groups.embedding_regularization:
        raise ValueError("fuse_tables: only for groups without variational dropout, "
                         "sequence_features or embedding_regularization (the speed workload)")
    offsets, parts, start = {}, [], 0
    for names, wide in groups.groups.values():
        for name in names if not wide else []:
            spec = groups._table_spec(name, False)
            if spec is None or groups.feature_set[name].kind != "ids" or spec.dynamic:
                continue
            table = groups.tables[spec.name]
            if any(table is p for p in parts):
                raise ValueError(f"fuse_tables: feature {name!r} shares its table")
            offsets[name] = start
            parts.append(table)
            start += spec.num_rows
    fused = tf.Variable(tf.concat([p.read_value() for p in parts], 0), name="fused_ids")
    groups.tables = {"fused_ids": fused, **{k: t for k, t in groups.tables.items()
                                            if not any(t is p for p in parts)}}

    def call(features, training=None):
        outputs = {}
        for group_name, (names, wide) in groups.groups.items():
            fused_names = [n for n in names if n in offsets and not wide]
            looked_up = {}
            if fused_names:
                ids = tf.stack([tf.cast(features[n]["ids"], tf.int64) for n in fused_names],
                               axis=1)  # (batch, k)
                rows = tf.maximum(ids, 0) + tf.constant([offsets[n] for n in fused_names],
                                                        tf.int64)
                # (batch, k, dim); a missing id (-1) gives zeros, as FeatureGroups.embed.
                vectors = tf.nn.embedding_lookup(fused, rows) * tf.cast(
                    ids >= 0, tf.float32)[..., None]
                looked_up = dict(zip(fused_names, tf.unstack(vectors, axis=1)))
            outputs[group_name] = [
                looked_up[n] if n in looked_up
                else tf.cast(groups.embed(n, features[n], wide), tf.float32) for n in names]
        return outputs

    groups.call = call
    job.sparse_optimizer.build([fused])
    return fused, {name: (table, offsets[name]) for name, table in zip(offsets, parts)}


def limit_runner(args, data, variant):
    ids, dense, labels = data
    model = speed_limit.build_model(args.model, ids, dense, bf16=variant == "limit_bf16",
                                    xla_dense=variant == "limit_xla_dense",
                                    fused=variant in ("limit_fused", "limit_fused_keras"))
    loop = speed_limit.make_loop(model, ids, dense, labels, args.batch_size,
                                 sparse_tables=variant in ("limit_sparse", "limit_fused"))
    n_batches = int(ids.shape[0]) // args.batch_size
    state = {"at": 0}

    def run(k):
        if state["at"] + k > n_batches:
            state["at"] = 0
        loop(tf.constant(state["at"] * args.batch_size), tf.constant(k)).numpy()
        state["at"] += k
    return run


def mtrec_runner(args, variant, work):
    sets = list(MTREC_SETS.get(variant, []))
    lazy = args.lazy or variant == "mtrec_lazy"
    job, train_loop, cached = speed_profile.mtrec_job(
        argparse.Namespace(**{**vars(args), "lazy": lazy,
                              "one_table": variant == "mtrec_one_table",
                              "table_rows": 2_000_000 if variant == "mtrec_rows_2e6"
                              else 10_000}), work, sets)
    if variant == "mtrec_fused":
        from mtrec.training import step as step_lib
        fuse_tables(job)
        train_loop = step_lib.make_train_loop(job, job.pipeline.train_config)
    iterator = iter(cached)
    if variant == "mtrec_spl1":
        def run(k):
            for _ in range(k):
                train_loop(iterator, tf.constant(1))[0].numpy()
    else:
        def run(k):
            train_loop(iterator, tf.constant(k))[0].numpy()
    run.flush = lambda: speed_profile.flush_cost(job, work)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="speed_data.py's directory")
    parser.add_argument("--variants", default="limit,limit_bf16,limit_xla_dense")
    parser.add_argument("--model", default="mmoe", choices=["mmoe", "esmm"])
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=50, help="batches held in memory")
    parser.add_argument("--steps", type=int, default=25, help="steps per timed call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lazy", action="store_true")
    parser.add_argument("--flush", action="store_true",
                        help="time each mtrec variant's flush and checkpoint write once")
    args = parser.parse_args()
    variants = args.variants.split(",")
    work = tempfile.mkdtemp(prefix="mtrec_levers_")
    runners = {}
    try:
        if any(v.startswith("limit") for v in variants):
            ids, dense, labels = speed_limit.load(os.path.join(args.data, "train.csv"))
            n = args.batches * args.batch_size
            data = (ids[:n], dense[:n], labels[:n])
        for v in variants:
            sub = os.path.join(work, v)
            os.makedirs(sub)
            runners[v] = (limit_runner(args, data, v) if v.startswith("limit")
                          else mtrec_runner(args, v, sub))
            runners[v](args.steps)  # trace and warm up
            runners[v](args.steps)
        times = {v: [] for v in variants}
        loads = []
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for v in variants:
                wall, cpu = time.time(), time.process_time()
                runners[v](args.steps)
                times[v].append((1000 * (time.time() - wall) / args.steps,
                                 1000 * (time.process_time() - cpu) / args.steps))
        if args.flush:
            for v in variants:
                if hasattr(runners[v], "flush"):
                    print(json.dumps({"variant": v, **runners[v].flush()}), flush=True)
    finally:
        os.system(f"rm -rf {work}")
    print(f"| variant ({args.model}) | base | wall ms/step | CPU ms/step | wall ratio to "
          f"base (per round) | CPU ratio (per round) |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        base_name = BASES.get(v) if BASES.get(v) in variants else variants[0]
        base = times[base_name]
        wall = [t[0] for t in times[v]]
        cpu = [t[1] for t in times[v]]
        wall_ratio = [t[0] / b[0] for t, b in zip(times[v], base)]
        cpu_ratio = [t[1] / b[1] for t, b in zip(times[v], base)]
        print(json.dumps({"variant": v, "model": args.model, "wall_ms": wall, "cpu_ms": cpu,
                          "load": os.getloadavg()[0]}), file=sys.stderr)
        print(f"| {v} | {base_name} | {np.median(wall):.1f} | {np.median(cpu):.1f} | "
              f"{np.median(wall_ratio):.2f} ({', '.join(f'{r:.2f}' for r in wall_ratio)}) | "
              f"{np.median(cpu_ratio):.2f} ({', '.join(f'{r:.2f}' for r in cpu_ratio)}) |",
              flush=True)
    print(f"1-minute load at the rounds' starts: {', '.join(f'{x:.1f}' for x in loads)}; "
          f"now {os.getloadavg()}")


if __name__ == "__main__":
    main()
