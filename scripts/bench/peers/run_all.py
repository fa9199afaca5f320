#!/usr/bin/env python
"""Run every peer library x model of the speed benchmark, --runs times, one at a time.

  python scripts/bench/peers/run_all.py \
      --python_tf /tmp/mtrec_peers/tf/bin/python \
      --python_torch /tmp/mtrec_peers/torch/bin/python \
      --train /tmp/mtrec_speed/train.csv --test /tmp/mtrec_speed/test.csv \
      --runs 3 --out /tmp/mtrec_bench_speed/peers.json

Peers: deepctr (run_deepctr.py, TF venv), deepctr_torch (run_deepctr_torch.py) and rechub
(run_rechub.py), both in the torch venv; make the venvs with make_venvs.py. Each run is a
subprocess (never two at once); its one JSON stdout line becomes a record, with `run`
(0-based), `wall_s` (the whole subprocess: start-up, imports, training, evaluation) and the
1-minute load average at its start added. Order: for each run, every peer, every model, so
a change in machine load hits all of them alike.

A run that fails or times out is kept as a record with `error` (and the tail of its stderr)
and the others go on; the exit status is 0 unless --strict. --out gets the JSON list of all
records, rewritten after every run; the list is printed on stdout at the end. The peers'
own output (progress bars, Keras lines) goes to --log_dir, one file per run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = {  # name: (runner script, which venv, library name in the records)
    "deepctr": ("run_deepctr.py", "tf", "deepctr"),
    "deepctr_torch": ("run_deepctr_torch.py", "torch", "deepctr-torch"),
    "rechub": ("run_rechub.py", "torch", "torch-rechub"),
}


def run_one(python, script, model, args, log_path, seed) -> dict:
    cmd = [python, os.path.join(HERE, script), "--model", model, "--train", args.train,
           "--test", args.test, "--batch_size", str(args.batch_size),
           "--threads", str(args.threads), "--warmup_batches", str(args.warmup_batches),
           "--seed", str(seed)]
    if args.nrows:
        cmd += ["--nrows", str(args.nrows)]
    if args.vocab_size:
        cmd += ["--vocab_size", str(args.vocab_size)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                  timeout=args.timeout)
            status, stdout = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            status, stdout = f"timeout after {args.timeout} s", exc.stdout or ""
    wall = time.perf_counter() - start
    lines = [line for line in (stdout or "").splitlines() if line.strip().startswith("{")]
    if status == 0 and lines:
        record = json.loads(lines[-1])
    else:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = log.read()[-2000:]
        record = {"error": f"exit status {status}", "stderr_tail": tail}
    record.update(wall_s=wall, load_at_start=load, log=log_path, vocab_size=args.vocab_size)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python_tf", required=True, help="the TF peer venv's python")
    parser.add_argument("--python_torch", required=True, help="the torch peer venv's python")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="/tmp/mtrec_bench_speed/peers.json")
    parser.add_argument("--log_dir", default=None, help="default: OUT's folder/peer_logs")
    parser.add_argument("--peers", default=",".join(PEERS), help=",".join(PEERS))
    parser.add_argument("--models", default="mmoe,esmm")
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=0,
                        help="rows of every embedding table (large-table runs)")
    parser.add_argument("--warmup_batches", type=int, default=20)
    parser.add_argument("--nrows", type=int, default=0, help="smoke tests: first N rows only")
    parser.add_argument("--seed", type=int, default=1024,
                        help="run k seeds the peers with SEED + k (initialisation and the "
                             "fit's shuffle); 1024 is DeepCTR's default")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any run failed")
    args = parser.parse_args()

    out_dir = os.path.dirname(os.path.abspath(args.out))
    log_dir = args.log_dir or os.path.join(out_dir, "peer_logs")
    os.makedirs(log_dir, exist_ok=True)
    pythons = {"tf": args.python_tf, "torch": args.python_torch}
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {list(PEERS)}")

    records = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for run in range(args.runs):
        for peer in peers:
            script, venv, library = PEERS[peer]
            for model in args.models.split(","):
                log_path = os.path.join(log_dir, f"{stamp}_{peer}_{model}_run{run}.log")
                print(f"[run_all] run {run} {peer} {model} ...", file=sys.stderr, flush=True)
                record = run_one(pythons[venv], script, model, args, log_path,
                                 args.seed + run)
                record.setdefault("library", library)
                record.setdefault("model", model)
                record.update(peer=peer, run=run, seed=args.seed + run)
                records.append(record)
                print(f"[run_all] {json.dumps(record)}", file=sys.stderr, flush=True)
                with open(args.out + ".tmp", "w", encoding="utf-8") as f:
                    json.dump(records, f, indent=1)
                os.replace(args.out + ".tmp", args.out)
    print(json.dumps(records, indent=1))
    failed = [r for r in records if "error" in r]
    if failed:
        print(f"[run_all] {len(failed)} of {len(records)} runs failed", file=sys.stderr)
    sys.exit(1 if failed and args.strict else 0)


if __name__ == "__main__":
    main()
