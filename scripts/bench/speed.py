#!/usr/bin/env python
"""Speed suite: mtrec from CSV/Parquet vs a hand-written in-memory limit vs peer libraries.

Workload (scripts/bench/speed_data.py): 1M rows, 20 sparse id columns (vocab 10,000,
embedding_dim 16, hashed from their text by mtrec), 5 dense columns, labels click and
conversion. MMoE: 4 experts [256, 128], towers [64]. ESMM: ctr and cvr towers
[256, 128, 64] over the concatenated embeddings. Adam lr 1e-3, batch 2048, one epoch.

Parts (each a subprocess, run one at a time; run k starts k parts later in their order,
so that no part always runs first):
  mtrec   `mtrec train` on the files; steady-state examples/s from its log lines (all log
          intervals after the first --warmup_steps), wall time of the whole process (start-up,
          reading, training, the final checkpoint; no evaluation) and, as end_to_checkpoint_s,
          up to the final checkpoint (the export the benchmark's exporter "latest" makes
          at the end is left out: the target is CSV -> trained checkpoint), peak RSS; then
          the test AUCs from `mtrec evaluate` (10,000 thresholds, the default: the
          exact AUC to 4 decimals on this workload).
  limit   scripts/bench/speed_limit.py: the same model as a hand-written tf.function step
          over tensors already in memory (XLA off and on), the rows shuffled.
  limit_csv  the same step fed from train.csv by the bare TF ops (speed_limit.py
          --from_csv): what reading CSV costs any TF reader on this machine.
  peers   scripts/bench/peers/run_all.py in the peer virtualenvs (--peers; see
          scripts/bench/peers/make_venvs.py).
  scaling step time over hash_bucket_size, wall time / RSS over rows, ex/s over batch size.
  sequence  (issue #17; --data from speed_data.py --seq_len 50) the MMoE above with, added
          to its 20 ids and 5 dense columns: "id" the 1-id feature `item`; "mean" `item`
          and the 50-long SequenceFeature `hist` mean-pooled (sequence_combiner mean);
          "din" `item` and `hist` under DIN target attention keyed by `item` (a group's
          sequence_features; attention MLP 128, 64, 32, 1, EasyRec's default); "din_small"
          as din with seq_dnn [32, 1]; `item` and `hist` share one table. The variants
          interleaved within each run; steady-state ex/s and steps/s, and the ratio to "id".

Usage:
  python scripts/bench/speed_data.py --out /tmp/mtrec_speed --rows 1000000 --parquet
  python scripts/bench/speed.py --data /tmp/mtrec_speed --parts mtrec,limit --runs 3
  python scripts/bench/speed.py --data /tmp/mtrec_speed --parts mtrec,limit,peers --peers deepctr \
      --mixed_precision ,bf16 --runs 3      # float32 and bf16 side by side, and DeepCTR
  python scripts/bench/speed.py --data /tmp/mtrec_speed --parts mtrec --formats csv,parquet
  python scripts/bench/speed_data.py --out /tmp/mtrec_speed_seq --rows 600000 \
      --test_rows 50000 --seq_len 50
  python scripts/bench/speed.py --data /tmp/mtrec_speed_seq --parts sequence --runs 3
Run k seeds every part with --seed + k (mtrec's train_config.seed, the limit's and the
peers' --seed): their initialisation and shuffle change from run to run, so the AUCs compare
over seeds, not one draw against another.
Results go to --out (JSON, one record per run) and a markdown summary on stdout.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, machine_info  # noqa: E402

NUM_SPARSE, NUM_DENSE = 20, 5


def mtrec_config(model: str, data_dir: str, fmt: str, hash_buckets: int, batch_size: int,
                 rows_file: str = "train", steps_per_loop: int = 0, ids: str = "hash",
                 dense_moments: bool = True, sequence: str = "", seq_len: int = 50,
                 mixed_precision: str = "", seed: int = 0) -> str:
    """The mtrec config of the workload (one epoch, one checkpoint at the end; no
    evaluation and no export during training: run_mtrec evaluates afterwards).
    sequence: "" the workload; "id" plus the 1-id feature item; "mean" / "din" plus item
    and the SequenceFeature hist (seq_len ids, one table with item), mean-pooled / under
    DIN target attention keyed by item (attention MLP 128, 64, 32, 1; "din_small": 32, 1)."""
    ext = "csv" if fmt == "csv" else "parquet"
    fields = ['input_fields { input_name: "click" input_type: INT32 }',
              'input_fields { input_name: "conversion" input_type: INT32 }']
    fields += [f'input_fields {{ input_name: "d{i}" input_type: FLOAT }}'
               for i in range(NUM_DENSE)]
    # ids "hash": the id text hashed into hash_buckets rows (collisions when the buckets
    # are few); "identity": the integer itself is the row (num_buckets), as the peers'
    # label encoding, so both train the same model.
    id_type, id_space = (("STRING", "hash_bucket_size") if ids == "hash"
                         else ("INT64", "num_buckets"))
    fields += [f'input_fields {{ input_name: "c{j}" input_type: {id_type} }}'
               for j in range(NUM_SPARSE)]
    features = [f'feature_configs {{ input_names: "c{j}" feature_type: IdFeature '
                f'{id_space}: {hash_buckets} embedding_dim: 16 }}' for j in range(NUM_SPARSE)]
    features += [f'feature_configs {{ input_names: "d{i}" feature_type: RawFeature }}'
                 for i in range(NUM_DENSE)]
    names = " ".join(f'feature_names: "c{j}"' for j in range(NUM_SPARSE))
    names += " " + " ".join(f'feature_names: "d{i}"' for i in range(NUM_DENSE))
    if sequence:
        if sequence not in ("id", "mean", "din", "din_small"):
            raise ValueError(f"sequence must be id, mean, din or din_small, not {sequence!r}")
        fields.append(f'input_fields {{ input_name: "item" input_type: {id_type} }}')
        features.append(f'feature_configs {{ input_names: "item" feature_type: IdFeature '
                        f'{id_space}: {hash_buckets} embedding_dim: 16 '
                        'embedding_name: "item_table" }')
        names += ' feature_names: "item"'
    if sequence in ("mean", "din", "din_small"):
        fields.append('input_fields { input_name: "hist" input_type: STRING }')
        combiner = "sequence_combiner { mean {} } " if sequence == "mean" else ""
        features.append(f'feature_configs {{ input_names: "hist" feature_type: SequenceFeature '
                        f'separator: "|" max_seq_len: {seq_len} {id_space}: {hash_buckets} '
                        f'embedding_dim: 16 embedding_name: "item_table" {combiner}}}')
        # din: the attention MLP EasyRec uses without seq_dnn (128, 64, 32, 1); din_small
        # a lighter one, seq_dnn [32, 1].
        small = " seq_dnn { hidden_units: [32, 1] }" if sequence == "din_small" else ""
        names += (' feature_names: "hist"' if sequence == "mean" else
                  ' sequence_features { group_name: "seq" seq_att_map { key: "item" '
                  f'hist_seq: "hist" }}{small} }}')
    tower = ('tower_name: "{name}" label_name: "{label}" dnn {{ hidden_units: {units} '
             'use_bn: false }} loss_type: CLASSIFICATION metrics_set {{ auc {{}} }}')
    if model == "mmoe":
        body = ("model_class: \"MMoE\" mmoe { expert_dnn { hidden_units: [256, 128] "
                "use_bn: false } num_expert: 4 "
                + " ".join("task_towers { " + tower.format(name=n, label=n, units="[64]") + " }"
                           for n in ("click", "conversion")) + " }")
        groups = f'feature_groups {{ group_name: "all" {names} wide_deep: DEEP }}'
    else:
        body = ('model_class: "ESMM" esmm { groups { input: "all" } '
                "ctr_tower { " + tower.format(name="ctr", label="click", units="[256, 128, 64]")
                + " } cvr_tower { " + tower.format(name="cvr", label="conversion",
                                                   units="[256, 128, 64]") + " } }")
        groups = f'feature_groups {{ group_name: "all" {names} wide_deep: DEEP }}'
    return f"""
train_input_path: "{os.path.join(data_dir, f'{rows_file}.{ext}')}"
# "latest": training evaluates nothing, so one export at the end (after the checkpoint).
export_config {{ exporter_type: "latest" }}
train_config {{
  optimizer_config {{ adam_optimizer {{ learning_rate {{ constant_learning_rate {{
    learning_rate: 0.001 }} }} dense_moments: {str(dense_moments).lower()} }} }}
  save_checkpoints_steps: 100000000
  log_step_count_steps: 50
  steps_per_loop: {steps_per_loop}
  mixed_precision: "{mixed_precision}"
  seed: {seed}
}}
data_config {{
  batch_size: {batch_size}
  num_epochs: 1
  shuffle: true
  shuffle_buffer_size: 32768
  input_type: {"CSVInput" if fmt == "csv" else "ParquetInput"}
  with_header: true
  separator: ","
  label_fields: "click"
  label_fields: "conversion"
  {" ".join(fields)}
}}
{" ".join(features)}
model_config {{
  {groups}
  {body}
}}
"""


def _run_logged(cmd, env=None):
    """Run cmd; return (stderr lines with arrival times, wall seconds, peak RSS MB, CPU
    seconds of the process: user + system, all threads; unlike wall time it barely moves
    with the machine's load)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines = [(time.time() - start, line.rstrip()) for line in proc.stderr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    if status != 0:
        sys.stderr.write("\n".join(text for _, text in lines[-20:]) + "\n")
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return lines, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def steady_rate(lines, batch_size: int, warmup_steps: int) -> float:
    """Examples/s between the first log line at or after warmup_steps and the last full
    interval, timed by line arrival."""
    points = []
    for t, text in lines:
        if " step " in text and " examples/s" in text:
            step = int(text.split(" step ")[1].split("/")[0].split(" ")[0])
            points.append((step, t))
    points = [p for p in points if p[0] >= warmup_steps]
    if len(points) < 2:
        return float("nan")
    # The last line may end a short interval (the epoch's end): drop it if more remain.
    (s0, t0), (s1, t1) = points[0], points[-2 if len(points) > 2 else -1]
    return (s1 - s0) * batch_size / (t1 - t0)


def checkpoint_time(lines, wall: float) -> float:
    """Seconds from the start to the final checkpoint: the arrival of the first line about
    the export that follows it (wall when there is none)."""
    return next((t for t, text in lines if "exporter_type" in text or " exporting " in text),
                wall)


def run_mtrec(model, fmt, args, work, hash_buckets=10_000, batch_size=2048, rows_file="train",
              evaluate=True, steps_per_loop=0, ids=None, sequence="",
              mixed_precision="", seed=0) -> dict:
    ids = ids or getattr(args, "ids", "hash")
    config = os.path.join(work, f"{model}_{fmt}_{ids}{hash_buckets}_{batch_size}_{rows_file}"
                          f"{'_seq_' + sequence if sequence else ''}"
                          f"{'_' + mixed_precision if mixed_precision else ''}.config")
    dense_moments = not getattr(args, "lazy", False)
    with open(config, "w", encoding="utf-8") as f:
        f.write(mtrec_config(model, args.data, fmt, hash_buckets, batch_size, rows_file,
                             steps_per_loop, ids, dense_moments, sequence,
                             getattr(args, "seq_len", 50), mixed_precision, seed))
    model_dir = tempfile.mkdtemp(prefix="run_", dir=work)
    lines, wall, rss, cpu = _run_logged([sys.executable, "-m", "mtrec", "train", "--config", config,
                                    "--model_dir", model_dir])
    record = {"part": "mtrec", "model": model, "format": fmt, "hash_buckets": hash_buckets,
              "ids": ids, "dense_moments": dense_moments, "seed": seed,
              **({"mixed_precision": mixed_precision} if mixed_precision else {}),
              "batch_size": batch_size, "rows_file": rows_file,
              **({"sequence": sequence} if sequence else {}),
              "steady_ex_per_s": steady_rate(lines, batch_size, args.warmup_steps),
              "end_to_end_s": wall, "end_to_checkpoint_s": checkpoint_time(lines, wall),
              "end_to_end_cpu_s": cpu, "peak_rss_mb": rss}
    if evaluate:
        ext = "csv" if fmt == "csv" else "parquet"
        subprocess.run([sys.executable, "-m", "mtrec", "evaluate", "--config", config,
                        "--model_dir", model_dir,
                        "--eval_input_path", os.path.join(args.data, f"test.{ext}")],
                       cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(model_dir, "eval_result.txt"), encoding="utf-8") as f:
            result = json.loads(f.readlines()[-1])
        record.update({k: v for k, v in result.items() if k.startswith("auc")})
    subprocess.run(["rm", "-rf", model_dir], check=True)
    return record


def run_limit(model, xla, args, batch_size=2048, extra=(), seed=None) -> dict:
    """The hand-written limit; with a seed it shuffles the rows as mtrec and the peers do."""
    seeded = [] if seed is None else ["--shuffle", "--seed", str(seed)]
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts/bench/speed_limit.py"),
                          "--data", args.data, "--model", model, "--batch_size", str(batch_size)]
                         + (["--xla"] if xla else []) + seeded + list(extra),
                         cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_peers(args, name, *options: str) -> list[dict]:
    """The peers' records of one run of scripts/bench/peers/run_all.py on the workload's
    files (options: its further flags), kept in work_dir/peers_{name}.json."""
    out = os.path.join(args.work_dir, f"peers_{name}.json")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts/bench/peers/run_all.py"),
                    "--python_tf", args.peer_python_tf,
                    "--python_torch", args.peer_python_torch,
                    "--train", os.path.join(args.data, "train.csv"),
                    "--test", os.path.join(args.data, "test.csv"),
                    "--runs", "1", "--out", out, *options], check=True, cwd=REPO)
    with open(out, encoding="utf-8") as f:
        return [dict(record, part="peer") for record in json.load(f)]


def rotated(items: list, run: int) -> list:
    """items started at position run (mod their number): run k's order begins k later."""
    k = run % len(items) if items else 0
    return items[k:] + items[:k]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="directory of speed_data.py's files")
    parser.add_argument("--summarize", help="only print the tables of a results.jsonl")
    parser.add_argument("--parts", default="mtrec,limit")
    parser.add_argument("--models", default="mmoe,esmm")
    parser.add_argument("--formats", default="csv")
    parser.add_argument("--ids", choices=["hash", "identity"], default="identity",
                        help="main mtrec runs: ids as rows (the peers' model) or hashed text")
    parser.add_argument("--lazy", action="store_true",
                        help="lazy Adam on the tables (adam_optimizer { dense_moments: false }); "
                             "the default is dense moments, adam_optimizer's default")
    parser.add_argument("--mixed_precision", default="",
                        help="mtrec part: comma-separated train_config.mixed_precision values "
                             "to run side by side, e.g. ',bf16' (float32 and bf16)")
    parser.add_argument("--peers", default="deepctr,deepctr_torch,rechub",
                        help="peers part: which peers (scripts/bench/peers/run_all.py)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1,
                        help="run k seeds mtrec (train_config.seed), the limit and the peers "
                             "with SEED + k: initialisation and shuffle differ between runs "
                             "and match within one, so AUCs compare over seeds")
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--work_dir", default="/tmp/mtrec_bench_speed")
    parser.add_argument("--out", default="/tmp/mtrec_bench_speed/results.jsonl")
    parser.add_argument("--peer_python_tf", default="/tmp/mtrec_peers/tf/bin/python")
    parser.add_argument("--peer_python_torch", default="/tmp/mtrec_peers/torch/bin/python")
    parser.add_argument("--hash_sizes", default="10000,100000,2000000")
    parser.add_argument("--row_files", default="", help="for scaling: train file stems, "
                        "e.g. rows_100k,train,rows_5m (speed_data.py --rows into the same dir)")
    parser.add_argument("--batch_sizes", default="512,1024,2048,4096,8192")
    parser.add_argument("--seq_len", type=int, default=50,
                        help="sequence part: max_seq_len of hist (the length speed_data.py "
                             "--seq_len wrote)")
    parser.add_argument("--sequence_variants", default="id,mean,din",
                        help="sequence part: which of id, mean, din, din_small to run, in "
                             "this order")
    args = parser.parse_args()
    if args.summarize:
        with open(args.summarize, encoding="utf-8") as f:
            summarize([json.loads(line) for line in f if line.strip()])
        return
    if not args.data:
        parser.error("--data is required")
    os.makedirs(args.work_dir, exist_ok=True)
    parts = args.parts.split(",")
    models = args.models.split(",")
    info = machine_info()
    records = []

    def keep(record):
        record.update(run=run, time=time.strftime("%Y-%m-%d %H:%M:%S"),
                      load=os.getloadavg()[0], source=info["mtrec_source_sha256"])
        records.append(record)
        print(json.dumps(record), file=sys.stderr, flush=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    print(json.dumps(info), file=sys.stderr)
    run = None
    # Interleave the parts per run, so that a change in machine load hits all of them alike,
    # and start each run one part later than the one before, so that no part always runs
    # first (on a fresh page cache and a cool CPU) or last.
    for run in range(args.runs):
        seed, jobs = args.seed + run, []  # each job: () -> its records
        for model in models:
            if "limit" in parts:
                jobs.append(lambda model=model: [run_limit(model, False, args, seed=seed)])
            if "limit_csv" in parts:
                jobs.append(lambda model=model: [run_limit(model, False, args, seed=seed,
                                                           extra=["--from_csv"])])
            if "mtrec" in parts:
                for fmt in args.formats.split(","):
                    for precision in args.mixed_precision.split(","):
                        jobs.append(lambda model=model, fmt=fmt, precision=precision: [
                            run_mtrec(model, fmt, args, args.work_dir,
                                      mixed_precision=precision, seed=seed)])
        if "peers" in parts:
            jobs.append(lambda: run_peers(args, run, "--peers", args.peers,
                                          "--models", args.models, "--seed", str(seed)))
        for job in rotated(jobs, run):
            for record in job():
                keep(record)
    if "sequence" in parts:
        # Interleaved per run, so that load changes hit all variants alike.
        for run in range(args.runs):
            for variant in args.sequence_variants.split(","):
                keep(run_mtrec("mmoe", "csv", args, args.work_dir, sequence=variant))
    if "xla" in parts:
        # XLA on CPU measured far slower here: a short run (60 steps) is enough to show it.
        for model in models:
            keep(run_limit(model, True, args, extra=["--max_steps", "60", "--steps_per_call",
                                                     "10", "--warmup_calls", "1"]))
    if "large" in parts:
        # Tables of 1e6 rows x 20 features: the peers on the first 200k rows (their dense
        # table updates make a whole epoch take long), mtrec's hash_bucket_size 1e6.
        keep(dict(run_mtrec("mmoe", "csv", args, args.work_dir, hash_buckets=1_000_000,
                            evaluate=False, ids="hash"), scaling="large"))
        for record in run_peers(args, "large", "--models", "mmoe", "--vocab_size", "1000000",
                                "--nrows", "200000"):
            keep(dict(record, scaling="large"))
    if "scaling" in parts:
        for size in [int(s) for s in args.hash_sizes.split(",") if s]:
            keep(dict(run_mtrec("mmoe", "csv", args, args.work_dir, hash_buckets=size,
                                evaluate=False, ids="hash"), scaling="hash_buckets"))
        for stem in [s for s in args.row_files.split(",") if s]:
            keep(dict(run_mtrec("mmoe", "csv", args, args.work_dir, rows_file=stem,
                                evaluate=False), scaling="rows"))
        for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
            keep(dict(run_mtrec("mmoe", "csv", args, args.work_dir, batch_size=batch,
                                evaluate=False), scaling="batch_size"))
    summarize(records)


def summarize(records):
    # A peer's steady rate is None when it ran too few batches (a smoke-test file).
    records = [dict(r, steady_ex_per_s=np.nan) if r.get("steady_ex_per_s") is None else r
               for r in records]
    groups = {}
    for r in records:
        if "scaling" in r or "sequence" in r:
            continue
        key = (r["model"], r["part"], r.get("format", ""), str(r.get("xla", "")),
               r.get("library", ""), r.get("ids", "hash"), r.get("mixed_precision", ""))
        groups.setdefault(key, []).append(r)
    if groups:
        print_main_table(groups)
        print_ratios([r for r in records if "scaling" not in r and "sequence" not in r])
    sequence = [r for r in records if "sequence" in r]
    if sequence:
        summarize_sequence(sequence)
    scaling = [r for r in records if "scaling" in r]
    if scaling:
        print("\n| scaling | hash_bucket_size | rows file | batch | steady ex/s | step ms | "
              "end-to-end s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in scaling:
            if r["part"] == "peer":
                print(f"| {r['scaling']} ({r['library']}) | {r['vocab_size']:,} | first "
                      f"200k rows | {r.get('batch_size', 2048)} | {r['steady_ex_per_s']:,.0f} | "
                      f"{1000 * 2048 / r['steady_ex_per_s']:.1f} | {r['end_to_end_s']:.1f} | "
                      f"{r['peak_rss_mb']:,.0f} |")
                continue
            step_ms = 1000 * r["batch_size"] / r["steady_ex_per_s"]
            print(f"| {r['scaling']} | {r['hash_buckets']:,} | {r['rows_file']} | "
                  f"{r['batch_size']} | {r['steady_ex_per_s']:,.0f} | {step_ms:.1f} | "
                  f"{r['end_to_end_s']:.1f} | {r['peak_rss_mb']:,.0f} |")


def print_main_table(groups):
    print("| model | what | steady ex/s (median) | end-to-end s | peak RSS MB | AUC click | "
          "AUC conversion | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, part, fmt, xla, lib, _, precision), rs in sorted(groups.items()):
        what = {"mtrec": f"mtrec ({fmt}, ids {rs[0].get('ids', 'hash')}"
                         f"{', ' + precision if precision else ''})",
                "limit": f"in-memory limit (XLA {xla})",
                "limit_csv": "the limit fed from CSV by bare TF ops",
                "peer": lib}.get(part, part)
        med = lambda k: np.nanmedian([r.get(k, np.nan) for r in rs])  # noqa: E731
        auc_click, auc_conv = (med(k) for k in _auc_keys(part, model))
        print(f"| {model} | {what} | {med('steady_ex_per_s'):,.0f} | "
              f"{med('end_to_end_s'):.1f} | {med('peak_rss_mb'):,.0f} | {auc_click:.4f} | "
              f"{auc_conv:.4f} | {len(rs)} |")


def print_ratios(records):
    """Per model, the ratios within each run (mtrec from CSV, float32, against the limit and
    DeepCTR of the same run) and their median: the targets of issue #18."""
    def one(rs, **match):
        found = [r for r in rs if all(r.get(k) == v for k, v in match.items())]
        return found[0] if found else None

    rows = []
    for model in sorted({r["model"] for r in records}):
        for run in sorted({r["run"] for r in records if r.get("run") is not None}):
            rs = [r for r in records if r["model"] == model and r.get("run") == run]
            mine = one(rs, part="mtrec", format="csv")
            if mine is None or mine.get("mixed_precision"):
                continue
            limit, peer = one(rs, part="limit"), one(rs, part="peer", library="deepctr")
            limit_csv = one(rs, part="limit_csv")
            if limit is None and peer is None and limit_csv is None:
                continue
            ckpt = mine.get("end_to_checkpoint_s", mine["end_to_end_s"])
            rows.append((model, run, {
                "ex/s vs DeepCTR": peer and mine["steady_ex_per_s"] / peer["steady_ex_per_s"],
                "ex/s vs limit": limit and mine["steady_ex_per_s"] / limit["steady_ex_per_s"],
                "ex/s vs limit from CSV": limit_csv and (mine["steady_ex_per_s"]
                                                         / limit_csv["steady_ex_per_s"]),
                "limit from CSV vs limit": limit_csv and limit and (
                    limit_csv["steady_ex_per_s"] / limit["steady_ex_per_s"]),
                "to checkpoint vs DeepCTR": peer and ckpt / peer["end_to_end_s"],
                "to checkpoint vs DeepCTR with its imports": peer and ckpt / (
                    peer["end_to_end_s"] + peer.get("import_s", 0.0)),
                "AUC 1 - DeepCTR's": peer and _auc(mine, 0) - _auc(peer, 0),
                "AUC 2 - DeepCTR's": peer and _auc(mine, 1) - _auc(peer, 1)}))
    if not rows:
        return
    keys = list(rows[0][2])
    print("\n| ratio within each run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for model in sorted({m for m, _, _ in rows}):
        ratios = [v for m, _, v in rows if m == model]
        cells = []
        for k in keys:
            values = [v[k] for v in ratios if v[k] is not None]
            if not values:
                cells.append("n/a")
                continue
            fmt = "{:+.4f}" if k.startswith("AUC") else "{:.2f}"
            cells.append(fmt.format(np.median(values)) + " ("
                         + ", ".join(fmt.format(x) for x in values) + ")")
        print(f"| {model} (median; per run) | " + " | ".join(cells) + " |")


def _auc_keys(part: str, model: str) -> tuple[str, str]:
    """The keys of a record's first and second AUC: mtrec's ESMM reports ctr / ctcvr,
    everything else click / conversion."""
    return (("auc_ctr", "auc_ctcvr") if part == "mtrec" and model != "mmoe"
            else ("auc_click", "auc_conversion"))


def _auc(record, which: int) -> float:
    return record.get(_auc_keys(record["part"], record["model"])[which], float("nan"))


def summarize_sequence(records):
    """Sequence part: medians per variant and each run's ratio to the 1-id variant (runs are
    matched by order: the variants of one run ran one after another)."""
    by_variant = {}
    for r in records:
        by_variant.setdefault(r["sequence"], []).append(r)
    base = by_variant.get("id", [])
    print("\n| MMoE + | steady ex/s (median) | steps/s (median) | per run | cost vs 1 id "
          "(step time ratio, median of the runs' ratios) | end-to-end s | peak RSS MB | "
          "AUC click | AUC conversion | runs | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names = {"id": "1-id feature item", "mean": "item + 50-long hist, mean",
             "din": "item + 50-long hist, DIN keyed by item",
             "din_small": "item + 50-long hist, DIN keyed by item, seq_dnn [32, 1]"}
    for variant, rs in by_variant.items():
        rates = [r["steady_ex_per_s"] for r in rs]
        ratios = [b["steady_ex_per_s"] / r["steady_ex_per_s"] for b, r in zip(base, rs)]
        med = lambda k: np.nanmedian([r.get(k, np.nan) for r in rs])  # noqa: E731
        print(f"| {names.get(variant, variant)} | {np.median(rates):,.0f} | "
              f"{np.median(rates) / rs[0]['batch_size']:.2f} | "
              + "; ".join(f"{x:,.0f}" for x in rates) + " | "
              + (f"{np.median(ratios):.2f}x (" + ", ".join(f"{x:.2f}" for x in ratios) + ")"
                 if ratios else "n/a")
              + f" | {med('end_to_end_s'):.1f} | {med('peak_rss_mb'):,.0f} | "
              f"{med('auc_click'):.4f} | {med('auc_conversion'):.4f} | {len(rs)} | "
              + ", ".join(f"{r['load']:.2f}" for r in rs) + " |")


if __name__ == "__main__":
    main()
