#!/usr/bin/env python
"""Dynamic tables (ev_params, docs/dynamic_tables.md) against hashed ones: step time at the
same number of rows in use, and memory under a stream of more distinct ids than
max_capacity.

Workload: MMoE (2 experts [64], towers [32]) over --features string id columns of
--ids distinct values each (uniform), embedding_dim 16, Adam, batch --batch; the
batches are made in memory (no file reading), so the step itself is timed.
  step    hashed (hash_bucket_size = --ids) against dynamic (every id admitted first:
          the warm-up feeds each id once), the two interleaved --rounds times, --steps
          steps each; ms/step and the ratio dynamic / hashed.
  stream  dynamic with max_capacity --ids on a stream of 10 x --ids distinct ids (each
          new): peak RSS (ru_maxrss) once the table is full and at the end, rows allocated.
          Run it alone (--parts stream): the step part's jobs would count in the RSS.

Usage: python scripts/bench/dynamic_tables.py [--ids 50000 --features 8 --batch 1024]
"""
import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, machine_info  # noqa: E402

sys.path.insert(0, REPO)


def config_text(features: int, ids: int, batch: int, dynamic: bool, max_capacity: int) -> str:
    fields = "".join(f'  input_fields {{ input_name: "f{i}" input_type: STRING }}\n'
                     for i in range(features))
    space = (f"ev_params {{ init_capacity: {min(65536, max_capacity)} "
             f"max_capacity: {max_capacity} }}" if dynamic else f"hash_bucket_size: {ids}")
    feats = "".join(f'  features {{ input_names: "f{i}" embedding_dim: 16 {space} }}\n'
                    for i in range(features))
    names = ", ".join(f'"f{i}"' for i in range(features))
    return f"""
train_config {{ num_steps: 1000000 log_step_count_steps: 100 }}
data_config {{
  batch_size: {batch}
  label_fields: "clk"
  label_fields: "buy"
  input_fields {{ input_name: "clk" input_type: INT32 }}
  input_fields {{ input_name: "buy" input_type: INT32 }}
{fields}}}
feature_config {{
{feats}}}
model_config {{
  model_class: "MMoE"
  feature_groups {{ group_name: "all" feature_names: [{names}] wide_deep: DEEP }}
  mmoe {{
    expert_dnn {{ hidden_units: [64] use_bn: false }}
    num_expert: 2
    task_towers {{ tower_name: "ctr" label_name: "clk" dnn {{ hidden_units: [32] }} }}
    task_towers {{ tower_name: "cvr" label_name: "buy" dnn {{ hidden_units: [32] }} }}
  }}
}}
"""


def make_job(text: str):
    from mtrec import config as config_lib
    from mtrec.training import step as step_lib
    from mtrec.training.job import Job
    path = os.path.join(tempfile.mkdtemp(), "bench.config")
    with open(path, "w") as f:
        f.write(text)
    pipeline = config_lib.load(path, skip_memory_check=True).pipeline
    job = Job.create(pipeline, for_training=True)
    job.build()
    return job, step_lib.make_train_loop(job, pipeline.train_config)


def batches(job, features: int, batch: int, id_batches):
    """A dataset of (features, side, bad rows) from an iterator of (batch, features) int
    arrays of ids."""
    import tensorflow as tf

    def gen():
        for ids in id_batches:
            yield ids

    def to_columns(ids):
        columns = {f"f{i}": tf.strings.as_string(ids[:, i]) for i in range(features)}
        columns["clk"] = tf.cast(ids[:, 0] % 2, tf.int32)
        columns["buy"] = tf.cast(ids[:, 1] % 3 == 0, tf.int32)
        features_, side = job.split(columns)
        return features_, side, tf.constant(0, tf.int64)

    spec = tf.TensorSpec([batch, features], tf.int64)
    return tf.data.Dataset.from_generator(gen, output_signature=spec).map(to_columns).prefetch(2)


def uniform(rng, ids, batch, features, steps):
    for _ in range(steps):
        yield rng.integers(0, ids, size=(batch, features))


def every_id(ids, batch, features):
    """Each id once per feature (the dynamic table's warm-up)."""
    for start in range(0, ids, batch):
        column = np.arange(start, start + batch) % ids
        yield np.repeat(column[:, None], features, axis=1)


def run_steps(loop, dataset, steps: int) -> float:
    """Seconds per step of `steps` steps (one call per 100 steps)."""
    import tensorflow as tf
    iterator = iter(dataset)
    loop(iterator, tf.constant(5))  # tracing and the first batches
    start, done = time.perf_counter(), 0
    while done < steps:
        n = min(100, steps - done)
        loop(iterator, tf.constant(n))
        done += n
    return (time.perf_counter() - start) / steps


def bench_step(args) -> dict:
    rng = np.random.default_rng(0)
    hashed, hashed_loop = make_job(config_text(args.features, args.ids, args.batch, False, 0))
    dynamic, dynamic_loop = make_job(config_text(args.features, args.ids, args.batch, True,
                                                 2 * args.ids))
    warm = every_id(args.ids, args.batch, args.features)
    run_steps(dynamic_loop, batches(dynamic, args.features, args.batch, warm),
              -(-args.ids // args.batch) - 5)
    stats = dynamic.model.feature_groups.dynamic.stats()
    result = {"hashed_ms": [], "dynamic_ms": [], "rows_in_use": stats["f0"]["rows"]}
    for _ in range(args.rounds):
        for name, job, loop in (("hashed", hashed, hashed_loop),
                                ("dynamic", dynamic, dynamic_loop)):
            data = batches(job, args.features, args.batch,
                           uniform(rng, args.ids, args.batch, args.features, args.steps + 10))
            result[f"{name}_ms"].append(1000 * run_steps(loop, data, args.steps))
    result["ratio"] = [d / h for d, h in zip(result["dynamic_ms"], result["hashed_ms"])]
    return result


def bench_stream(args) -> dict:
    """Peak RSS once the table is full (after --ids new ids) and after 10 x --ids."""
    import tensorflow as tf
    job, loop = make_job(config_text(args.features, args.ids, args.batch, True, args.ids))
    total = 10 * args.ids
    fresh = (np.repeat(np.arange(s, s + args.batch)[:, None], args.features, axis=1)
             for s in range(0, total, args.batch))
    iterator = iter(batches(job, args.features, args.batch, fresh))
    full = loop(iterator, tf.constant(args.ids // args.batch))[0]
    rss_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = int(full)
    while done < total // args.batch:
        done += int(loop(iterator, tf.constant(100))[0])
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = job.model.feature_groups.dynamic.stats()["f0"]
    return {"distinct_ids": done * args.batch, "max_capacity": args.ids,
            "capacity": stats["capacity"], "rows": stats["rows"], "evicted": stats["evicted"],
            "peak_rss_mib_table_full": rss_full / 1024, "peak_rss_mib_end": rss_end / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="step,stream")
    args = parser.parse_args()
    print(machine_info())
    if "step" in args.parts:
        print("step", bench_step(args))
    if "stream" in args.parts:
        print("stream", bench_stream(args))


if __name__ == "__main__":
    main()
