#!/usr/bin/env python
"""Where a training step's time goes: a TensorFlow profiler trace (tf.profiler.experimental)
of the speed workload's step, read back and summed by kind of op.

Two steps are traced, each over batches already in memory so that only the step is timed:
  limit   scripts/bench/speed_limit.py's hand-written step (Keras Adam on every variable)
  mtrec   mtrec's own train loop (mtrec/training/step.py) on the workload's config
          (speed.py, ids as rows), over --batches batches read from the CSV once and cached
With --parts input_csv / input_parquet: no trace, the input pipeline alone (CPU and wall ms
per batch of --batches batches).
The trace's host plane (xplane.pb; open the same directory in TensorBoard's profile tab)
is summed per op type as *self* time (an op's time minus the ops nested inside it on the
same thread; control flow and function calls, which only wait, are left out), then grouped:
  gather    embedding and slot gathers (ResourceGather, GatherV2, ...)
  scatter   the sparse optimizer's writes (ResourceScatter*, ...)
  sparse    unique / segment sums / masks of the table gradients
  gemm      dense matmuls (MatMul, _FusedMatMul, BatchMatMul)
  other     everything else (elementwise, reductions, concat, assigns, casts, ...)
Per step: each group's milliseconds (summed over threads), its number of ops, and the wall
time per step. Ops shorter than 20 us are counted as "small ops" (their time is mostly
dispatch).

Usage:
  python scripts/bench/speed_profile.py --data /tmp/mtrec_speed --parts limit,mtrec \
      --model mmoe --steps 20 --logdir /tmp/mtrec_profile
"""
import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402
import speed_limit  # noqa: E402

GROUPS = [
    ("scatter", ("Scatter",)),
    ("gather", ("Gather",)),
    ("sparse", ("Unique", "SegmentSum", "BooleanMask", "Where", "SparseSegment")),
    ("gemm", ("MatMul",)),
]
# Ops that only call or wait for other ops.
WAITING = ("While", "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf",
           "StatelessWhile", "IteratorGetNext", "IteratorGetNextAsOptional",
           "OptionalGetValue", "OptionalHasValue", "__inference", "Case", "RemoteCall")
# Executor and thread-pool events that wrap or annotate ops.
WRAPPERS = {"Run", "Process", "Record", "StartRegion", "StopRegion"}


def group_of(op_type: str) -> str:
    for name, keys in GROUPS:
        if any(k in op_type for k in keys):
            return name
    return "other"


def read_trace(logdir: str, steps: int) -> dict:
    """The newest xplane.pb under logdir -> per-step totals by group and by op type."""
    path = sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    by_type = collections.defaultdict(lambda: [0.0, 0])
    small = [0.0, 0]
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            # Ops run on the inter-op threads (tf_Compute, and "python" for eager calls);
            # the intra-op (Eigen) threads' events are the same ops' parallel parts.
            if "Eigen" in line.name:
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name:
                    continue
                op_type = name.rsplit(":", 1)[1]
                if (not op_type or not op_type[0].isalpha() and op_type[0] != "_"
                        or "/" in op_type or " " in op_type or op_type in WRAPPERS
                        or any(w in op_type for w in WAITING)):
                    continue
                ms = event.duration_ps / 1e9
                by_type[op_type][0] += ms
                by_type[op_type][1] += 1
                if ms < 0.02:
                    small[0] += ms
                    small[1] += 1
    groups = collections.defaultdict(lambda: [0.0, 0])
    for op_type, (ms, count) in by_type.items():
        groups[group_of(op_type)][0] += ms
        groups[group_of(op_type)][1] += count
    top = sorted(by_type.items(), key=lambda kv: -kv[1][0])[:15]
    return {"trace": path,
            "ops_ms_per_step": round(sum(v[0] for v in groups.values()) / steps, 1),
            "groups_ms_per_step": {g: round(v[0] / steps, 2) for g, v in groups.items()},
            "groups_ops_per_step": {g: round(v[1] / steps) for g, v in groups.items()},
            "small_ops_per_step": round(small[1] / steps),
            "small_ops_ms_per_step": round(small[0] / steps, 2),
            "top_op_types_ms_per_step": {k: round(v[0] / steps, 2) for k, v in top}}


def traced(run, steps: int, logdir: str, warmup_calls: int = 2) -> dict:
    """run(n) runs n steps; warm up, time untraced, then trace one call of `steps`."""
    for _ in range(warmup_calls):
        run(steps)
    start, cpu = time.time(), time.process_time()
    run(steps)
    wall_ms = 1000 * (time.time() - start) / steps
    cpu_ms = 1000 * (time.process_time() - cpu) / steps
    tf.profiler.experimental.start(logdir)
    run(steps)
    tf.profiler.experimental.stop()
    return {"wall_ms_per_step": round(wall_ms, 1), "cpu_ms_per_step": round(cpu_ms, 1),
            **read_trace(logdir, steps)}


def profile_limit(args, logdir):
    ids, dense, labels = speed_limit.load(os.path.join(args.data, "train.csv"))
    n = args.batches * args.batch_size
    ids, dense, labels = ids[:n], dense[:n], labels[:n]
    model = speed_limit.Model(args.model)
    model(ids[:2], dense[:2])
    loop = speed_limit.make_loop(model, ids, dense, labels, args.batch_size, args.xla)
    steps = min(args.steps, args.batches)
    return traced(lambda k: loop(tf.constant(0), tf.constant(k)).numpy(), steps, logdir)


def input_rate(args, fmt: str) -> dict:
    """The training input pipeline alone (read, parse, type, check, preprocess; no step):
    wall and process CPU ms per batch over --batches batches after 5 warm-up batches."""
    from mtrec import config as config_lib
    from mtrec.training import distribute, loop as loop_lib
    work = tempfile.mkdtemp(prefix="mtrec_input_")
    try:
        path = os.path.join(work, "input.config")
        with open(path, "w", encoding="utf-8") as f:
            f.write(speed.mtrec_config(args.model, args.data, fmt, 10_000, args.batch_size,
                                       ids=args.ids))
        pipeline = config_lib.load(path, model_dir=os.path.join(work, "model")).pipeline
        cluster = distribute.make_cluster(pipeline.train_config)
        _, dataset, _ = loop_lib._build(pipeline, [pipeline.train_input_path], cluster)
        iterator = iter(dataset)
        for _ in range(5):
            next(iterator)
        wall, cpu = time.time(), time.process_time()
        for _ in range(args.batches):
            next(iterator)
        return {"wall_ms_per_batch": round(1000 * (time.time() - wall) / args.batches, 2),
                "cpu_ms_per_batch": round(1000 * (time.process_time() - cpu) / args.batches, 2)}
    finally:
        os.system(f"rm -rf {work}")


def mtrec_job(args, work, sets=()):
    """(job, train_loop, in-memory endless dataset) of the workload's mtrec config."""
    from mtrec import config as config_lib
    from mtrec.training import distribute, loop as loop_lib, step as step_lib
    path = os.path.join(work, "profile.config")
    with open(path, "w", encoding="utf-8") as f:
        text = speed.mtrec_config(args.model, args.data, "csv",
                                  getattr(args, "table_rows", 10_000), args.batch_size,
                                  ids="identity", dense_moments=not args.lazy)
        if getattr(args, "one_table", False):
            # Every id feature looks up one shared table: one sparse update per step (a
            # speed probe of fusing the tables' updates; the model differs).
            text = text.replace("embedding_dim: 16", 'embedding_dim: 16 embedding_name: "ids"')
        f.write(text)
    # The memory check counts a checkpoint's full copy of the tables and slots; the 2e6-row
    # probe measured 9.2 GB at its peak (docs/benchmarks.md).
    loaded = config_lib.load(path, sets=list(sets), model_dir=os.path.join(work, "model"),
                             skip_memory_check=True)
    pipeline = loaded.pipeline
    cluster = distribute.make_cluster(pipeline.train_config)
    job, dataset, _ = loop_lib._build(pipeline, [pipeline.train_input_path], cluster)
    train_loop = step_lib.make_train_loop(job, pipeline.train_config)
    cached = dataset.take(args.batches).cache().repeat()
    return job, train_loop, cached


def flush_cost(job, work) -> dict:
    """Wall and CPU seconds of the dense-moments flush of every table (the work before each
    checkpoint), then of writing the checkpoint."""
    tables = job.model.feature_groups.table_variables
    wall, cpu = time.time(), time.process_time()
    job.sparse_optimizer.flush(tables)
    flush = (time.time() - wall, time.process_time() - cpu)
    wall, cpu = time.time(), time.process_time()
    job.checkpoint.write(os.path.join(work, "flush_probe", "ckpt"))
    save = (time.time() - wall, time.process_time() - cpu)
    os.system(f"rm -rf {os.path.join(work, 'flush_probe')}")
    return {"flush_wall_s": round(flush[0], 2), "flush_cpu_s": round(flush[1], 2),
            "checkpoint_wall_s": round(save[0], 2), "checkpoint_cpu_s": round(save[1], 2)}


def profile_mtrec(args, logdir, sets=()):
    work = tempfile.mkdtemp(prefix="mtrec_profile_")
    try:
        _, train_loop, cached = mtrec_job(args, work, sets)
        iterator = iter(cached)
        return traced(lambda k: train_loop(iterator, tf.constant(k))[0].numpy(), args.steps,
                      logdir)
    finally:
        os.system(f"rm -rf {work}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="speed_data.py's directory")
    parser.add_argument("--parts", default="limit,mtrec")
    parser.add_argument("--model", default="mmoe", choices=["mmoe", "esmm"])
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=20, help="batches held in memory")
    parser.add_argument("--steps", type=int, default=20, help="steps traced (one call)")
    parser.add_argument("--lazy", action="store_true", help="mtrec: lazy table moments")
    parser.add_argument("--ids", default="identity", choices=["identity", "hash"],
                        help="input parts: ids as rows (INT64 fields) or hashed (STRING)")
    parser.add_argument("--xla", action="store_true", help="limit: jit_compile the step")
    parser.add_argument("--set", action="append", default=[],
                        help="mtrec: a --set override of the config (repeatable)")
    parser.add_argument("--logdir", default="/tmp/mtrec_profile")
    args = parser.parse_args()
    for part in args.parts.split(","):
        logdir = os.path.join(args.logdir, part)
        if part.startswith("input_"):  # input_csv, input_parquet: no trace
            result = input_rate(args, part.split("_", 1)[1])
        else:
            result = (profile_limit(args, logdir) if part == "limit"
                      else profile_mtrec(args, logdir, args.set))
        print(json.dumps({"part": part, "model": args.model, "load": os.getloadavg()[0],
                          **result}), flush=True)


if __name__ == "__main__":
    main()
