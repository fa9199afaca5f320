"""PSStrategy on one host (loopback): throughput of 1 chief + 2 workers + 2 ps against one
process, and the peak memory of each process as one embedding table grows (the largest
table each layout trains within a memory budget follows from it).

    python scripts/bench/parameter_servers.py --work_dir /tmp/mtrec_ps --runs 3 \
        --steps 400 --table_rows 1000000,4000000,16000000

The model is samples/model_config/mmoe_on_multidomain.config on its sample data, with the
user_id table's hash_bucket_size set to each --table_rows in the memory part. Each
process's peak RSS is VmHWM from /proc/<pid>/status, read until it exits (servers: after
the chief has finished)."""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

from common import REPO, machine_info, outside_repo_work_dir

CONFIG = os.path.join(REPO, "samples", "model_config", "mmoe_on_multidomain.config")
TRAIN = os.path.join(REPO, "samples", "data", "multidomain_train_data")
RATE = re.compile(r"step (\d+)/\d+ \| .*\| ([\d,]+) examples/s")


def _ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _config(work_dir, table_rows):
    text = open(CONFIG).read()
    if table_rows:
        text = text.replace('input_names: "user_id" hash_bucket_size: 4000',
                            f'input_names: "user_id" hash_bucket_size: {table_rows}')
    path = os.path.join(work_dir, f"mmoe_{table_rows or 'sample'}.config")
    with open(path, "w") as f:
        f.write(text)
    return path


def _command(config, model_dir, sets):
    command = [sys.executable, "-m", "mtrec", "train", "--config", config, "--model_dir",
               model_dir, "--skip_memory_check"]
    for s in [f"train_input_path={TRAIN}", "eval_input_path=",
              "train_config.log_step_count_steps=50", *sets]:
        command += ["--set", s]
    return command


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _peak_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _run(command, env, log_path, servers=()):
    """Run to the end; (exit code, output, peak RSS of it, peak RSS of each server pid)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _peak_rss(proc.pid) or 0)
            time.sleep(0.2)
    server_peaks = [_peak_rss(p.pid) for p in servers]
    return proc.returncode, open(log_path).read(), peak, server_peaks


class Cluster:
    def __init__(self, work_dir, config):
        ports = _ports(5)
        self.spec = {"chief": [f"127.0.0.1:{ports[0]}"],
                     "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
                     "ps": [f"127.0.0.1:{p}" for p in ports[3:]]}
        self.procs = {}
        for task in (("ps", 0), ("ps", 1), ("worker", 0), ("worker", 1)):
            log = open(os.path.join(work_dir, f"{task[0]}{task[1]}.log"), "w")
            self.procs[task] = subprocess.Popen(
                _command(config, os.path.join(work_dir, "unused"),
                         ["train_config.train_distribute=PSStrategy",
                          "train_config.num_steps=1"]),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env=_env(TF_CONFIG=self.tf_config(*task)))

    def tf_config(self, task_type, index):
        return json.dumps({"cluster": self.spec, "task": {"type": task_type, "index": index}})

    def stop(self):
        for proc in self.procs.values():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _steady_rate(output, batch, after=100):
    """Examples per second over the logged intervals after step `after` (their median)."""
    rates = [float(m.group(2).replace(",", "")) for m in RATE.finditer(output)
             if int(m.group(1)) > after]
    return statistics.median(rates) if rates else float("nan")


def throughput(work_dir, runs, steps):
    config = _config(work_dir, 0)
    cluster = Cluster(work_dir, config)
    results = {"one process": [], "1 chief + 2 workers + 2 ps": []}
    try:
        for run in range(runs):
            for name in results:  # alternating, so both see the same machine load
                model_dir = os.path.join(work_dir, f"tp_{run}_{len(results[name])}_{name[:3]}")
                sets = [f"train_config.num_steps={steps}"]
                env = _env()
                if name != "one process":
                    sets.append("train_config.train_distribute=PSStrategy")
                    env = _env(TF_CONFIG=cluster.tf_config("chief", 0))
                code, output, _, _ = _run(_command(config, model_dir, sets), env,
                                          model_dir + ".log")
                if code:
                    sys.exit(f"{name} failed:\n{output[-3000:]}")
                results[name].append(_steady_rate(output, 512))
                print(f"run {run} {name}: {results[name][-1]:,.0f} examples/s", flush=True)
    finally:
        cluster.stop()
    return results


def memory(work_dir, table_rows, steps):
    rows = []
    for n in table_rows:
        config = _config(work_dir, n)
        sets = [f"train_config.num_steps={steps}", "train_config.save_checkpoints_steps=1000"]
        model_dir = os.path.join(work_dir, f"mem_one_{n}")
        code, output, one_peak, _ = _run(_command(config, model_dir, sets), _env(),
                                         model_dir + ".log")
        if code:
            sys.exit(f"one process, {n} rows, failed:\n{output[-3000:]}")
        cluster = Cluster(work_dir, config)
        try:
            model_dir = os.path.join(work_dir, f"mem_ps_{n}")
            code, output, chief_peak, server_peaks = _run(
                _command(config, model_dir, sets + ["train_config.train_distribute=PSStrategy"]),
                _env(TF_CONFIG=cluster.tf_config("chief", 0)), model_dir + ".log",
                servers=[cluster.procs[("ps", 0)], cluster.procs[("ps", 1)],
                         cluster.procs[("worker", 0)], cluster.procs[("worker", 1)]])
        finally:
            cluster.stop()
        if code:
            sys.exit(f"PSStrategy, {n} rows, failed:\n{output[-3000:]}")
        row = {"table_rows": n, "table_mib": n * 16 * 4 / 2 ** 20, "one_process": one_peak,
               "chief": chief_peak, "ps": server_peaks[:2], "workers": server_peaks[2:]}
        rows.append(row)
        gib = lambda b: f"{b / 2 ** 30:.2f}"  # noqa: E731
        print(f"user_id {n:,} x 16 ({row['table_mib']:,.0f} MiB): one process "
              f"{gib(one_peak)} GiB | chief {gib(chief_peak)}, ps {gib(server_peaks[0])} / "
              f"{gib(server_peaks[1])}, workers {gib(server_peaks[2])} / "
              f"{gib(server_peaks[3])} GiB (peak RSS)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--table_rows", default="1000000,4000000,16000000")
    parser.add_argument("--memory_steps", type=int, default=30)
    parser.add_argument("--parts", default="throughput,memory")
    args = parser.parse_args()
    work_dir = outside_repo_work_dir(args.work_dir)
    print(json.dumps(machine_info()), flush=True)
    print("load average at start:", os.getloadavg(), flush=True)
    if "throughput" in args.parts:
        results = throughput(work_dir, args.runs, args.steps)
        one = statistics.median(results["one process"])
        ps = statistics.median(results["1 chief + 2 workers + 2 ps"])
        print(f"median steady examples/s: one process {one:,.0f}; 1 chief + 2 workers + 2 ps "
              f"{ps:,.0f} ({ps / one:.2f}x)", flush=True)
    if "memory" in args.parts:
        memory(work_dir, [int(float(n)) for n in args.table_rows.split(",")], args.memory_steps)
    print("load average at end:", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
