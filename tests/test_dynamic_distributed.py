"""Dynamic tables (ev_params) under the distribution strategies (docs/dynamic_tables.md,
Distribution): MirroredStrategy on 2 logical CPUs builds the same map and weights as one
process fed the same global batches, resumes, and exports; two MultiWorkerMirroredStrategy
workers build one map and the same weights; a table split into shards by id (id mod
shards, as under PSStrategy) routes, admits, evicts and checkpoints per shard; PSStrategy
on a loopback cluster (2 ps, 2 workers, a chief) puts each id's map entry and row on ps
(id mod 2), resumes with the same map and exports what `mtrec predict` and plain
TensorFlow both serve.

Trainings under a strategy run in subprocesses (logical devices and clusters must be set up
before TensorFlow starts); processes are ended by PID."""
import json
import os
import re
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
    """What only two processes show (the Mirrored test above covers the rest): both
    workers hold the same map and bit-identical variables."""
    config = _config(str(tmp_path))
    # Two workers on 127.0.0.1, 8 rows each per step; 3 steps read rows 0-47: every user.
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        log = open(tmp_path / f"worker{index}.log", "w+")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "mtrec", "train", "--config", config, "--model_dir",
             str(tmp_path / "model"), "--set", "train_config.train_distribute="
             "MultiWorkerMirroredStrategy", "--set", "data_config.batch_size=8",
             "--set", "train_config.num_steps=3"],
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
    chief = _checkpoint(str(tmp_path / "model" / "ckpt-3"))
    other = _checkpoint(str(tmp_path / "scratch" / "worker_1" / "ckpt-3"))
    rows = _map(chief)
    assert sorted(rows) == _users() and sorted(rows.values()) == list(range(USERS))
    assert _map(other) == rows
    assert set(chief) == set(other)
    for name in chief:
        if "table-" not in name:
            np.testing.assert_array_equal(chief[name], other[name], err_msg=name)


# -- a table split into shards by id (as under PSStrategy), in one process ----------------

def _shard_maps(table) -> list:
    """[{key: row of the shard}] of each shard's own map."""
    maps = []
    for shard in table.shards:
        keys, rows = shard.map.export()
        maps.append(dict(zip(keys.numpy().tolist(), rows.numpy().tolist())))
    return maps


def _assign(table, keys, step, grew=None):
    """Assign keys at step -> [(shard, sorted rows of the shard reset)]; each shard's growth
    goes to `grew` as (shard, new capacity) (none expected without it)."""
    from mtrec.features import dynamic
    fresh = []

    def grow(s, capacity, new):
        if grew is None:
            pytest.fail(f"shard {s} grew from {int(capacity)} to {int(new)}")
        grew.append((s, int(new)))

    table.assign(tf.constant(keys, tf.int64), step, grow,
                 lambda s, rows: fresh.append((s, sorted(rows.numpy().tolist()))))
    assert dynamic.MISSING not in [k for m in _shard_maps(table) for k in m]
    return fresh


def _lookup(table, keys) -> list:
    return table.lookup(tf.constant(keys, tf.int64)).numpy().tolist()


def _counts(table) -> dict:
    from mtrec.features import dynamic
    return dict(zip(dynamic.COUNTERS, table.counters.numpy().tolist()))


def test_routing_by_id_mod_shards_and_each_shard_growing_to_its_share():
    from mtrec.features import dynamic
    EV = dynamic.EV
    # Each shard starts with ceil(init_capacity / shards) rows and grows up to
    # ceil(max_capacity / shards).
    assert [dynamic.shard_capacity(m, n) for m, n in ((4096, 2), (7, 2), (10, 3), (5, 1))] \
        == [2048, 4, 4, 5]
    assert dynamic.capacities(EV(init_capacity=2, max_capacity=7), 2) == (2, 8)
    assert dynamic.capacities(EV(init_capacity=3, max_capacity=7), 2) == (4, 8)
    assert dynamic.capacities(EV(init_capacity=2, max_capacity=7), 1) == (2, 7)
    # Floor mod: negative keys (half of all string fingerprints) too.
    keys = np.concatenate([np.arange(-7, 8), dynamic.keys(tf.constant(
        [f"u{i}" for i in range(20)])).numpy()]).astype(np.int64)
    for n in (1, 2, 3):
        np.testing.assert_array_equal(dynamic.shard_of(tf.constant(keys), n).numpy(),
                                      np.mod(keys, n))
    table = dynamic.DynamicTable("t", EV(init_capacity=2, max_capacity=7), num_shards=2)
    assert table.shard_rows == 1 and int(table.capacity()) == 2
    # Shard 0 (even ids) takes 10, 12, 14; shard 1 (odd) 11, 13, -3, 7: rows in first-seen
    # order within each shard, each shard growing as one table does (to max(2 x its rows,
    # the rows it needs), at most 4). Row r of shard s is table row 2r + s.
    grew = []
    fresh = _assign(table, [10, 11, 12, 13, 10, 14, -3, 7, dynamic.MISSING], 0, grew)
    assert grew == [(0, 3), (1, 4)] and int(table.capacity()) == 7
    assert fresh == [(0, [0, 1, 2]), (1, [0, 1, 2, 3])]
    assert _shard_maps(table) == [{10: 0, 12: 1, 14: 2}, {11: 0, 13: 1, -3: 2, 7: 3}]
    assert _lookup(table, [[10, 11], [12, 13], [14, -3], [7, dynamic.MISSING], [99, 98]]) == \
        [[0, 1], [2, 3], [4, 5], [7, -1], [-1, -1]]
    # Shards of different lengths checkpoint padded to the longest, the padding rows free
    # (table row 6 of shard 0): into two shards or one, the same lookups and rows in use.
    tensors = table._serialize_to_tensors()
    assert tensors["num_free"].numpy().tolist() == [1, 0]
    assert tensors["last_seen"].numpy().tolist() == [0, 0, 0, 0, 0, 0, -1, 0]
    keys = [10, 11, 12, 13, 14, -3, 7, 99]
    for n in (2, 1):
        again = dynamic.DynamicTable("t", EV(init_capacity=2, max_capacity=7), num_shards=n)
        again._restore_from_tensors(tensors)
        assert _lookup(again, keys) == _lookup(table, keys)
        assert (int(again.rows_in_use()), int(again.capacity())) == (7, 8)
    # Shard 1 is full at its 4 rows: a new odd id evicts its least recent row (row 0 among
    # equals, id 11) although shard 0 can still grow; an even id grows shard 0 to 4.
    grew = []
    fresh = _assign(table, [9, 16], 1, grew)
    assert grew == [(0, 4)] and int(table.capacity()) == 8
    assert fresh == [(0, [3]), (1, [0])]
    assert _shard_maps(table) == [{10: 0, 12: 1, 14: 2, 16: 3}, {9: 0, 13: 1, -3: 2, 7: 3}]
    assert _lookup(table, [9, 11, 16]) == [1, -1, 6]
    assert _counts(table) == {"admitted": 9, "evicted": 1, "refused": 0, "filtered": 0}
    assert int(table.rows_in_use()) == 8


def test_admission_and_steps_to_live_per_shard_counted_for_the_whole_table():
    from mtrec.features import dynamic
    table = dynamic.DynamicTable("t", dynamic.EV(filter_freq=2, steps_to_live=2,
                                                 eviction_interval=1, max_capacity=4),
                                 num_shards=2)
    assert _assign(table, [1, 2, 2], 0) == [(0, [0])]  # 2 seen twice: admitted; 1 filtered
    assert _assign(table, [1, 4], 1) == [(1, [0])]  # 1's second time; 4 filtered
    assert _lookup(table, [2, 1, 4]) == [0, 1, -1]
    assert _counts(table) == {"admitted": 2, "evicted": 0, "refused": 0, "filtered": 2}
    _assign(table, [2], 2)
    _assign(table, [2], 3)
    # The sweep of step 4 frees 1 (last seen at step 1, 3 > 2 steps ago), not 2.
    _assign(table, [2], 4)
    assert _lookup(table, [2, 1]) == [0, -1] and _shard_maps(table) == [{2: 0}, {}]
    assert _counts(table) == {"admitted": 2, "evicted": 1, "refused": 0, "filtered": 2}
    assert int(table.rows_in_use()) == 1


def test_a_split_table_checkpoints_as_one_restores_into_as_many_or_one_shard(tmp_path):
    from mtrec.features import dynamic
    ev = dynamic.EV(filter_freq=2, max_capacity=7)

    def made(n):
        return dynamic.DynamicTable("t", ev, num_shards=n)

    table = made(2)
    _assign(table, [10, 11, 12, 13, 10, 11, 12, 13, 14, 15, 16], 0)
    # Shard 0 admits 18; shard 1 admits 15, 17 and 19 into its 2 free rows and the row of
    # 11 (its least recent, lowest row first), freed last: the stack gives it first.
    _assign(table, [15, 17, 17, 18, 18, 19, 19], 1)
    path = tf.train.Checkpoint(t=table).write(str(tmp_path / "ckpt"))
    saved = _checkpoint(path)
    keys = saved["t/.ATTRIBUTES/table-keys"].tolist()
    rows = saved["t/.ATTRIBUTES/table-values"].tolist()
    # One map of table rows: row r of shard s is table row 2r + s.
    assert dict(zip(keys, rows)) == {10: 0, 12: 2, 18: 4, 15: 1, 13: 3, 17: 5, 19: 7}
    assert saved["t/.ATTRIBUTES/num_free"].tolist() == [1, 0]
    keys_all = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    expected = _lookup(table, keys_all)
    # Into as many shards: the same shard maps, and the next step gives the same rows.
    again = made(2)
    tf.train.Checkpoint(t=again).read(path).assert_existing_objects_matched()
    assert _shard_maps(again) == _shard_maps(table) and _counts(again) == _counts(table)
    for t in (table, again):  # both shards full: each evicts (10, 13) by the restored state
        assert _assign(t, [20, 20, 21, 21, 14, 14], 2) == [(0, [0, 3]), (1, [1])]
    assert _lookup(again, keys_all + [21]) == _lookup(table, keys_all + [21])
    # Into one shard (evaluation, export): the rows stay, the counts add up.
    one = made(1)
    tf.train.Checkpoint(t=one).read(path).assert_existing_objects_matched()
    assert _lookup(one, keys_all) == expected
    assert int(one.capacity()) == 8 and int(one.rows_in_use()) == 7
    assert _counts(one) == {"admitted": 8, "evicted": 1, "refused": 0, "filtered": 3}
    # Into another number of shards: one error naming both.
    with pytest.raises(ValueError, match=r"in 2 shard\(s\) .* splits it over 3 ps tasks"):
        tf.train.Checkpoint(t=made(3)).read(path)
    # Traced with shapes unknown until it runs, as TF restores a checkpoint spread over
    # several tasks (parameter servers): the same shard maps, or the error when it runs.
    tensors = table._serialize_to_tensors()
    spec = [{k: tf.TensorSpec(None, v.dtype) for k, v in tensors.items()}]
    for n in (2, 3):
        restored = made(n)
        restore = tf.function(restored._restore_from_tensors, input_signature=spec,
                              autograph=False)
        if n == 2:
            restore(tensors)
            assert _shard_maps(restored) == _shard_maps(table)
            continue
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"holds it in\] \[2\] \[shard\(s\) .* over 3 ps tasks"):
            restore(tensors)


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
def test_parameter_servers_split_each_table_by_id_resume_and_export(tmp_path):
    tmp = str(tmp_path)
    # init_capacity 8, max_capacity 4,095: each ps starts with 4 rows and may grow to 2,048.
    config = _config(tmp, max_capacity=4095, sets="\n  train_distribute: PSStrategy")
    cluster = _Cluster(tmp, config)
    model_dir = os.path.join(tmp, "model")
    try:
        output = cluster.chief(model_dir)
        # Part s of the table (with its slots) is on ps s, 4 rows to start with.
        assert ("table MMoE/feature_groups/user (dynamic, x 4; table row r * 2 + s in part "
                "s): part 0 on ps:0 (4 rows), part 1 on ps:1 (4 rows)") in output, \
            output[-4000:]
        saved = _checkpoint(os.path.join(model_dir, "ckpt-10"))
        rows = _map(saved)
        assert sorted(rows) == _users()
        # Each id's row is on ps (id mod 2) (table row r * 2 + s), and each shard gave its
        # ids rows 0, 1, ...: the map of ps s held only the ids of shard s.
        for s in (0, 1):
            assert all(row % 2 == s for key, row in rows.items() if key % 2 == s)
            mine = [row // 2 for key, row in rows.items() if key % 2 == s]
            assert sorted(mine) == list(range(len(mine))), (s, mine)
        assert {key % 2 for key in rows} == {0, 1}
        # Both workers gave rows at once: 37 admitted in all, none evicted or refused.
        windows = re.findall(r"user: [\d,]+/([\d,]+) rows, \+(\d+) admitted, (\d+) evicted, "
                             r"(\d+) refused, 0 filtered", output)
        assert sum(int(w[1]) for w in windows) == USERS, output[-4000:]
        assert {w[2:] for w in windows} == {("0", "0")}
        # The ps parts grew with the rows in use (from 8 rows in all), not to max_capacity:
        # the log, and the table and its Adam slots in the checkpoint (the longest part
        # twice).
        capacity = int(windows[-1][0].replace(",", ""))
        assert USERS < capacity <= 2 * USERS and f"user: 37/{capacity:,} rows" in output
        table = saved["model/variables_by_path/tables.Suser/.ATTRIBUTES/VARIABLE_VALUE"]
        slots = [v.shape for n, v in saved.items()
                 if n.startswith("sparse_optimizer/slot_variables/") and v.shape != (50, 4)]
        assert USERS < table.shape[0] <= 2 * USERS and slots == [table.shape] * 2, slots
        # The chief restarted resumes with the same map and keeps every id's row.
        output = cluster.chief(model_dir, "train_config.num_steps=12")
        assert "from step 10 to 12" in output, output[-4000:]
        assert _map(_checkpoint(os.path.join(model_dir, "ckpt-12"))) == rows
    finally:
        cluster.stop()
    # The export (compacted to the rows in use of both shards) serves with no cluster and no
    # mtrec.
    export = _export(model_dir)
    shapes = tf.train.load_checkpoint(os.path.join(export, "variables", "variables")) \
        .get_variable_to_shape_map()
    assert shapes["model_variables/tables.Suser/.ATTRIBUTES/VARIABLE_VALUE"] == [USERS, 4]
    predicted, plain = _served(export, tmp)
    np.testing.assert_allclose(plain, predicted, rtol=1e-5, atol=1e-6)
    assert predicted[2] == pytest.approx(predicted[3], abs=1e-7)
    assert predicted[0] != pytest.approx(predicted[3], abs=1e-6)


def test_check_counts_each_ps_tasks_share_of_a_dynamic_table(tmp_path):
    import mtrec
    from mtrec.config.dynamic_params import state_bytes
    from mtrec.features.dynamic import EV
    # max_capacity 8,191: 4,096 rows of each table on each of 2 ps tasks (split by id
    # whatever its size).
    config = _config(str(tmp_path), max_capacity=8191, sets="\n  train_distribute: PSStrategy")
    lines = mtrec.check(config)
    ps = [line for line in lines if line.startswith("    2 ps tasks:")]
    assert len(ps) == 1, lines
    # The user table's part and Adam's two slots; the map's bookkeeping; the price table
    # with its slots and the dense weights with theirs, spread over the two.
    split = 4 * 3 * 4096 * 4
    state = state_bytes(EV(init_capacity=8, max_capacity=8191), 4096)
    dense = int(next(line for line in lines if line.startswith("  parameters:"))
                .split("(")[1].split(" embedding, ")[1].split(" dense")[0].replace(",", ""))
    whole = 4 * 3 * (50 * 4 + dense)
    assert ps[0] == (f"    2 ps tasks: about {(split + whole / 2 + state) / 2 ** 20:,.1f} MiB "
                     f"per task ({split / 2 ** 20:,.1f} MiB of split table parts, "
                     f"{whole / 2 ** 20:,.1f} MiB of whole variables spread over them, "
                     f"{state / 2 ** 20:,.1f} MiB of dynamic tables' maps and bookkeeping)")
