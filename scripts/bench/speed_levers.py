#!/usr/bin/env python
"""Speed levers side by side: variants of the speed workload's training step in one process,
over the same batches held in memory, timed in alternation (A B C A B C ...) so that a
change in machine load hits every variant alike.

Variants (--variants, comma-separated):
  limit            speed_limit.py's hand-written step (Keras Adam on every variable)
  limit_bf16       the same, Dense layers under Keras' mixed_bfloat16 policy
  limit_xla_dense  the same, its dense part (after the gathers) a jit_compile tf.function
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
Per variant: the median over --rounds of wall ms and process CPU ms per step (CPU time
counts every thread: the work, whatever else the machine runs), and each round's ratio to
the first variant. One JSON line per variant, then a markdown table.

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


def limit_runner(args, data, variant):
    ids, dense, labels = data
    model = speed_limit.build_model(args.model, ids, dense, bf16=variant == "limit_bf16",
                                    xla_dense=variant == "limit_xla_dense")
    loop = speed_limit.make_loop(model, ids, dense, labels, args.batch_size)
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
        for _ in range(args.rounds):
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
    base = times[variants[0]]
    print(f"| variant ({args.model}) | wall ms/step | CPU ms/step | wall ratio to "
          f"{variants[0]} (per round) | CPU ratio |")
    print("|---|---|---|---|---|")
    for v in variants:
        wall = [t[0] for t in times[v]]
        cpu = [t[1] for t in times[v]]
        wall_ratio = [t[0] / b[0] for t, b in zip(times[v], base)]
        cpu_ratio = [t[1] / b[1] for t, b in zip(times[v], base)]
        print(json.dumps({"variant": v, "model": args.model, "wall_ms": wall, "cpu_ms": cpu,
                          "load": os.getloadavg()[0]}), file=sys.stderr)
        print(f"| {v} | {np.median(wall):.1f} | {np.median(cpu):.1f} | "
              f"{np.median(wall_ratio):.2f} ({', '.join(f'{r:.2f}' for r in wall_ratio)}) | "
              f"{np.median(cpu_ratio):.2f} |", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
