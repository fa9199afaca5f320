"""Dynamic tables (ev_params) under the distribution strategies (docs/dynamic_tables.md,
Distribution): MirroredStrategy on 2 logical CPUs builds the same map and weights as one
process fed the same global batches, resumes, and exports; two MultiWorkerMirroredStrategy
workers build one map and the same weights; PSStrategy on a
loopback cluster (2 ps, 2 workers, a chief) gives every id its own row, resumes with the
same map and exports what `mtrec predict` and plain TensorFlow both serve.

Trainings under a strategy run in subprocesses (logical devices and clusters must be set up
before TensorFlow starts); processes are ended by PID."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY_INPUTS, TINY_MMOE, edit
from test_distribute import STEP_LINE, _env, _free_ports

USERS = 37
STEP = STEP_LINE.pattern.replace("like", "cvr")

# Trains argv[1] into argv[2] under MirroredStrategy on 2 logical CPUs, then resumes a copy
# of it (its last checkpoint removed, as by kill -9) into argv[3].
MIRRORED = """
import logging, os, shutil, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
import mtrec
config, first, resumed = sys.argv[1:4]
sets = ["train_config.train_distribute=MirroredStrategy", "data_config.batch_size=8"]
mtrec.train(config, model_dir=first, sets=sets)
shutil.copytree(first, resumed, ignore=shutil.ignore_patterns("ckpt-10.*", "export"))
with open(os.path.join(resumed, "checkpoint"), "w") as f:
    f.write('model_checkpoint_path: "ckpt-5"\\nall_model_checkpoint_paths: "ckpt-5"\\n')
print("RESUMED")
mtrec.train(config, model_dir=resumed, sets=sets)
"""

# Scores rows with an export in a process that never imports mtrec.
BARE = """
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
cols = json.loads(sys.argv[2])
out = serve(**{k: tf.constant(cols[k]) for k in serve.structured_input_signature[1]})
assert "mtrec" not in sys.modules
print(json.dumps(out["probs_ctr"].numpy().ravel().tolist()))
"""

# Rows to score: two known users, one never seen, one missing.
SCORE = {"user": ["u3", "u20", "never_seen", ""], "price": [5, 7, 9, 9], "clk": [1, 0, 1, 0],
         "buy": [0, 1, 1, 0]}


def _config(tmp, max_capacity=64, sets=""):
    """80 rows of 37 users (in file order): an epoch is 5 steps of 16, so a run resumed
    from its step-5 checkpoint reads what an uninterrupted one reads; 10 steps."""
    data = os.path.join(tmp, "train.csv")
    with open(data, "w") as f:
        f.write("".join(f"{i % 2},{(i // 3) % 2},u{i % USERS},{i % 40}\n" for i in range(80)))
    text = edit('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
                'features { input_names: "user" embedding_dim: 4\n'
                f'    ev_params {{ init_capacity: 8 max_capacity: {max_capacity} }} }}',
                TINY_INPUTS)
    text = edit("batch_size: 4", "batch_size: 16\n  shuffle: false", text)
    text = edit("num_steps: 10", "num_steps: 10\n  save_checkpoints_steps: 5\n"
                f"  log_step_count_steps: 1\n  seed: 5{sets}", text)
    path = os.path.join(tmp, "pipeline.config")
    with open(path, "w") as f:
        f.write(text + TINY_MMOE + f'train_input_path: "{data}"\n')
    return path


def _checkpoint(path) -> dict:
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if not n.startswith("_CHECKPOINTABLE")}


def _map(values: dict) -> dict:
    """The key -> row map of the user table in a checkpoint."""
    keys = [n for n in values if "table-keys" in n]
    assert len(keys) == 1, keys
    return dict(zip(values[keys[0]].tolist(),
                    values[keys[0].replace("table-keys", "table-values")].tolist()))


def _assert_same_weights(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        if "table-" not in name:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _export(model_dir) -> str:
    root = os.path.join(model_dir, "export", "final")
    return os.path.join(root, sorted(os.listdir(root))[-1])


def _served(export, tmp) -> tuple[np.ndarray, np.ndarray]:
    """(mtrec predict's probs_ctr, plain TensorFlow's) of the SCORE rows."""
    import pandas as pd

    import mtrec
    rows = os.path.join(tmp, "rows.csv")
    with open(rows, "w") as f:
        f.write("".join(f"{c},{b},{u},{p}\n" for u, p, c, b in zip(
            SCORE["user"], SCORE["price"], SCORE["clk"], SCORE["buy"])))
    out = os.path.join(tmp, "scores.csv")
    mtrec.predict(export, rows, out)
    predicted = pd.read_csv(out)["probs_ctr"].to_numpy()
    done = subprocess.run([sys.executable, "-c", BARE, export, json.dumps(SCORE)],
                          capture_output=True, text=True, cwd=tmp, timeout=300,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    return predicted, np.array(json.loads(done.stdout.strip().splitlines()[-1]))


def _users():
    from mtrec.features import dynamic
    return sorted(dynamic.keys(tf.constant([f"u{i}" for i in range(USERS)])).numpy().tolist())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """(config, model_dir, its step-10 checkpoint) of a run in one process, whose global
    batches (16 rows) the distributed runs below split 8 + 8."""
    import mtrec
    tmp = str(tmp_path_factory.mktemp("one"))
    config = _config(tmp)
    one = os.path.join(tmp, "one")
    mtrec.train(config, model_dir=one)
    final = _checkpoint(os.path.join(one, "ckpt-10"))
    rows = _map(final)
    assert sorted(rows) == _users() and sorted(rows.values()) == list(range(USERS))
    return config, one, final


@pytest.mark.slow
def test_mirrored_builds_the_map_of_one_process_resumes_and_exports(tmp_path, one_process):
    import re
    tmp = str(tmp_path)
    config, one, final = one_process
    mirrored, resumed = os.path.join(tmp, "mirrored"), os.path.join(tmp, "resumed")
    run = subprocess.run([sys.executable, "-c", MIRRORED, config, mirrored, resumed],
                         capture_output=True, text=True, timeout=900, env=_env(), cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = run.stdout.split("RESUMED")
    assert "MirroredStrategy over /device:CPU:0, /device:CPU:1" in first
    expected = _map(final)
    # The same map (exactly), weights, optimizer slots and table state.
    got = _checkpoint(os.path.join(mirrored, "ckpt-10"))
    assert _map(got) == expected
    _assert_same_weights(got, final)
    # (Equal weights after 10 steps: each replica read the rows the one process read.)
    assert [int(m.group(1)) for m in re.finditer(STEP, first)] == list(range(1, 11))
    # Resumed from its step-5 checkpoint: the same map and weights at step 10.
    assert [int(m.group(1)) for m in re.finditer(STEP, second)] == list(range(6, 11))
    again = _checkpoint(os.path.join(resumed, "ckpt-10"))
    assert _map(again) == expected
    _assert_same_weights(again, final)
    # The export of the mirrored run: plain TensorFlow serves what `mtrec predict` scores,
    # and what the one process's export scores; an unseen id scores as a missing one.
    predicted, plain = _served(_export(mirrored), tmp)
    np.testing.assert_allclose(plain, predicted, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_served(_export(one), tmp)[0], predicted, rtol=1e-5, atol=1e-6)
    assert predicted[2] == pytest.approx(predicted[3], abs=1e-7)


@pytest.mark.slow
def test_multi_worker_mirrored_workers_build_one_map(tmp_path):
    config = _config(str(tmp_path))
    # Two workers on 127.0.0.1, 8 rows each per step.
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        log = open(tmp_path / f"worker{index}.log", "w+")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "mtrec", "train", "--config", config, "--model_dir",
             str(tmp_path / "model"), "--set", "train_config.train_distribute="
             "MultiWorkerMirroredStrategy", "--set", "data_config.batch_size=8"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {
                "type": "worker", "index": index}}), MTREC_SCRATCH_DIR=str(tmp_path / "scratch"))),
            log))
    try:
        for proc, log in procs:
            code = proc.wait(600)
            log.seek(0)
            assert code == 0, log.read()[-4000:]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            log.close()
    # Each worker's own checkpoint (the chief's, and worker 1's in its scratch directory):
    # one row per user, the same map and the same weights on both.
    chief = _checkpoint(str(tmp_path / "model" / "ckpt-10"))
    other = _checkpoint(str(tmp_path / "scratch" / "worker_1" / "ckpt-10"))
    rows = _map(chief)
    assert sorted(rows) == _users() and sorted(rows.values()) == list(range(USERS))
    assert _map(other) == rows
    assert set(chief) == set(other)
    for name in chief:
        if "table-" not in name:
            np.testing.assert_array_equal(chief[name], other[name], err_msg=name)


class _Cluster:
    """2 ps and 2 worker `mtrec train` tasks on 127.0.0.1 that serve until killed."""

    def __init__(self, tmp, config):
        ports = _free_ports(5)
        self.spec = {"chief": [f"127.0.0.1:{ports[0]}"],
                     "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
                     "ps": [f"127.0.0.1:{p}" for p in ports[3:]]}
        self.config, self.tmp, self.procs = config, tmp, []
        for task in (("ps", 0), ("ps", 1), ("worker", 0), ("worker", 1)):
            log = open(os.path.join(tmp, f"{task[0]}{task[1]}-{time.time_ns()}.log"), "w")
            self.procs.append((subprocess.Popen(
                self.command(os.path.join(tmp, "unused")), stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT, env=_env(TF_CONFIG=self.tf_config(*task))),
                log))

    def tf_config(self, task_type, index):
        return json.dumps({"cluster": self.spec, "task": {"type": task_type, "index": index}})

    def command(self, model_dir, *sets):
        command = [sys.executable, "-m", "mtrec", "train", "--config", self.config,
                   "--model_dir", model_dir]
        for s in sets:
            command += ["--set", s]
        return command

    def chief(self, model_dir, *sets) -> str:
        done = subprocess.run(self.command(model_dir, *sets), capture_output=True, text=True,
                              cwd=ROOT, timeout=600,
                              env=_env(TF_CONFIG=self.tf_config("chief", 0)))
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return done.stdout + done.stderr

    def stop(self):
        for proc, log in self.procs:
            proc.kill()
            proc.wait(30)
            log.close()


@pytest.mark.slow
def test_parameter_servers_give_each_id_one_row_resume_and_export(tmp_path):
    tmp = str(tmp_path)
    # 4,096 x 4 floats: 64 KiB, a table TablePartitioner would split; a dynamic one stays
    # whole, allocated at max_capacity (TF's workers cannot use a ps variable that grows).
    config = _config(tmp, max_capacity=4096, sets="\n  train_distribute: PSStrategy")
    cluster = _Cluster(tmp, config)
    model_dir = os.path.join(tmp, "model")
    try:
        output = cluster.chief(model_dir)
        assert "table MMoE/feature_groups/user (4096 x 4): rows 0-4095 on ps:" in output, \
            output[-4000:]
        # Both workers gave rows at once, one at a time: every user has a row of its own.
        first = _checkpoint(os.path.join(model_dir, "ckpt-10"))
        rows = _map(first)
        assert sorted(rows) == _users() and sorted(rows.values()) == list(range(USERS))
        assert "user: 37/4,096 rows" in output
        # The chief restarted resumes with the same map and keeps every id's row.
        output = cluster.chief(model_dir, "train_config.num_steps=14")
        assert "from step 10 to 14" in output, output[-4000:]
        assert _map(_checkpoint(os.path.join(model_dir, "ckpt-14"))) == rows
    finally:
        cluster.stop()
    # The export (compacted to the rows in use) serves with no cluster and no mtrec.
    export = _export(model_dir)
    shapes = tf.train.load_checkpoint(os.path.join(export, "variables", "variables")) \
        .get_variable_to_shape_map()
    assert shapes["model_variables/tables.Suser/.ATTRIBUTES/VARIABLE_VALUE"] == [USERS, 4]
    predicted, plain = _served(export, tmp)
    np.testing.assert_allclose(plain, predicted, rtol=1e-5, atol=1e-6)
    assert predicted[2] == pytest.approx(predicted[3], abs=1e-7)
    assert predicted[0] != pytest.approx(predicted[3], abs=1e-6)


def test_check_counts_a_dynamic_table_whole_at_max_capacity_per_ps_task(tmp_path):
    import mtrec
    # 8,192 x 4 floats (128 KiB): a hashed table this size is split over the ps tasks.
    config = _config(str(tmp_path), max_capacity=8192, sets="\n  train_distribute: PSStrategy")
    lines = mtrec.check(config)
    ps = [line for line in lines if line.startswith("    2 ps tasks:")]
    assert len(ps) == 1 and "(0.0 MiB of split table parts" in ps[0], lines
    # Whole variables (bytes): the user table at max_capacity and the price table with
    # Adam's two slots each, and the dense weights with theirs.
    dense = int(next(line for line in lines if line.startswith("  parameters:"))
                .split("(")[1].split(" embedding, ")[1].split(" dense")[0].replace(",", ""))
    whole = 4 * 3 * (8192 * 4 + 50 * 4 + dense)
    assert f"{whole / 2 ** 20:,.1f} MiB of whole variables spread over them" in ps[0], ps
