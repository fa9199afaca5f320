"""train_config.inter_op_parallelism_threads / intra_op_parallelism_threads: what a new
process gives TensorFlow's runtime, mtrec's inter-op default (one more than the CPUs), the
warning when TensorFlow already runs, and the training log line that reports them.

Each check runs in a subprocess: TensorFlow takes its threads only before its first op."""
import os
import subprocess
import sys

from conftest import ROOT, fast_overrides, sample_config
from mtrec.protos import train_pb2
from mtrec.training.distribute import thread_counts

CPUS = len(os.sched_getaffinity(0))

SCRIPT = """
import logging, sys
import tensorflow as tf
from mtrec.protos import train_pb2
from mtrec.training.distribute import configure_threads
logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
threading = tf.config.threading

def show(what):
    print(what, threading.get_inter_op_parallelism_threads(),
          threading.get_intra_op_parallelism_threads(), flush=True)

configure_threads(train_pb2.TrainConfig())
show("default")
configure_threads(train_pb2.TrainConfig(inter_op_parallelism_threads=5,
                                        intra_op_parallelism_threads=1))
show("set")
tf.constant(1.0) + 1.0  # the runtime starts: its threads are fixed from here on
configure_threads(train_pb2.TrainConfig())  # mtrec's default: kept silently
show("started, default")
configure_threads(train_pb2.TrainConfig(inter_op_parallelism_threads=7))
show("started, set")
"""


def test_thread_counts_default_to_one_more_inter_op_thread_than_cpus():
    assert thread_counts(train_pb2.TrainConfig()) == (CPUS + 1, 0)
    assert thread_counts(train_pb2.TrainConfig(inter_op_parallelism_threads=2,
                                               intra_op_parallelism_threads=3)) == (2, 3)


def test_a_new_process_takes_the_threads_and_a_started_one_warns():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines == [
        f"default {CPUS + 1} 0",
        "set 5 1",
        "started, default 5 1",
        "WARNING train_config.inter_op_parallelism_threads is ignored: TensorFlow already "
        "runs in this process with its threads fixed; start a new process (e.g. `mtrec "
        "train`).",
        "started, set 5 1",
    ], result.stdout


def test_training_log_reports_the_threads(tmp_path, small_taobao):
    train_path, _ = small_taobao
    sets = [a for s in fast_overrides(train_path, "", steps=2) for a in ("--set", s)]
    result = subprocess.run(
        [sys.executable, "-m", "mtrec.cli", "train", "--config",
         sample_config("simple_multi_task_on_taobao.config"), "--model_dir",
         str(tmp_path / "m"), *sets, "--set", "train_config.inter_op_parallelism_threads=4",
         "--set", "train_config.intra_op_parallelism_threads=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "to 2 (TensorFlow threads: 4 inter-op, 1 intra-op)" in result.stderr, \
        result.stderr[-2000:]
