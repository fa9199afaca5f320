"""PSStrategy on 127.0.0.1: 2 ps + 2 worker `mtrec train` processes and a chief. The
large tables are split over both ps tasks, the loss falls, a checkpoint resumes, the
export serves with no cluster and no mtrec (equal to `mtrec predict`), a killed worker
leaves training running, and a killed ps stops the chief with one clear message; after
restarting it, training resumes from the last checkpoint."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, sample_config
from test_distribute import TEST, TRAIN, _env, _free_ports

CONFIG = sample_config("mmoe_on_multidomain.config")
TOTAL_LINE = re.compile(r"step (\d+)/\d+ \| loss .* total=([\d.]+)")
SETS = ["train_config.train_distribute=PSStrategy", "data_config.batch_size=128",
        "train_config.log_step_count_steps=5", "eval_config.num_examples=512"]


def _command(model_dir, sets):
    command = [sys.executable, "-m", "mtrec", "train", "--config", CONFIG,
               "--model_dir", str(model_dir)]
    for s in [f"train_input_path={TRAIN}", f"eval_input_path={TEST}", *SETS, *sets]:
        command += ["--set", s]
    return command


class Cluster:
    """ps and worker tasks, each an `mtrec train` process that serves until killed."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        ports = _free_ports(5)
        self.spec = {"chief": [f"127.0.0.1:{ports[0]}"],
                     "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
                     "ps": [f"127.0.0.1:{p}" for p in ports[3:]]}
        self.tasks = {}
        for task in (("ps", 0), ("ps", 1), ("worker", 0), ("worker", 1)):
            self.start(*task)

    def tf_config(self, task_type, index):
        return json.dumps({"cluster": self.spec, "task": {"type": task_type, "index": index}})

    def start(self, task_type, index):
        log = open(self.tmp_path / f"{task_type}{index}-{time.time_ns()}.log", "w")
        proc = subprocess.Popen(_command(self.tmp_path / "unused", ["train_config.num_steps=1"]),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=_env(TF_CONFIG=self.tf_config(task_type, index)))
        self.tasks[(task_type, index)] = (proc, log)

    def kill(self, task_type, index):
        proc, log = self.tasks.pop((task_type, index))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()

    def chief(self, model_dir, *sets) -> subprocess.Popen:
        return subprocess.Popen(_command(model_dir, sets), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env=_env(TF_CONFIG=self.tf_config("chief", 0)))

    def stop(self):
        for key in list(self.tasks):
            self.kill(*key)


def _finish(chief, timeout=300) -> tuple[int, str]:
    try:
        output, _ = chief.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        chief.kill()
        output, _ = chief.communicate()
        return -9, output
    return chief.returncode, output


# Started early (its TensorFlow import overlaps the training); reads the SavedModel path,
# the rows' file and the JSON column names from stdin, one line each.
BARE_PREDICT = """
import csv, json, sys
import numpy as np
import tensorflow as tf
saved_model, data = sys.stdin.readline().strip(), sys.stdin.readline().strip()
names = json.loads(sys.stdin.readline())
rows = list(csv.reader(open(data)))
fn = tf.saved_model.load(saved_model).signatures["serving_default"]
inputs = {}
for name, spec in fn.structured_input_signature[1].items():
    column = [r[names.index(name)] for r in rows]
    inputs[name] = (tf.constant(column) if spec.dtype == tf.string else
                    tf.cast(tf.strings.to_number(column, tf.float64), spec.dtype))
assert "mtrec" not in sys.modules
print(json.dumps({k: v.numpy().reshape(-1).tolist() for k, v in fn(**inputs).items()}))
"""


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


@pytest.fixture
def bare_predict(tmp_path):
    """Start() -> the BARE_PREDICT process, killed at the end of the test if still running."""
    procs = []

    def start():
        procs.append(subprocess.Popen([sys.executable, "-c", BARE_PREDICT],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=_env(),
                                      cwd=str(tmp_path)))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _run_until_killed(cluster, model_dir, lines):
    """Train past the second checkpoint, kill worker 1, train 30 more steps, kill ps 1;
    -> (the chief's exit code, all its output)."""
    chief = cluster.chief(model_dir, "train_config.num_steps=100000",
                          "train_config.save_checkpoints_steps=10", "eval_input_path=")
    try:
        deadline = time.time() + 240
        first = None
        while time.time() < deadline:
            line = chief.stdout.readline()
            lines.append(line)
            assert line or chief.poll() is None, "".join(lines)[-4000:]
            match = TOTAL_LINE.search(line)
            if match and first is None and int(match.group(1)) > 20:  # saved at 10, 20
                first = int(match.group(1))
                cluster.kill("worker", 1)  # the coordinator goes on with worker 0
            elif match and first is not None and int(match.group(1)) >= first + 30:
                break
        else:
            pytest.fail("no 30 steps after a worker was killed:\n" + "".join(lines)[-4000:])
        # A lost ps loses its variables: one clear error, and the checkpoints stay.
        cluster.kill("ps", 1)
        code, rest = _finish(chief, timeout=180)
    finally:
        if chief.poll() is None:
            chief.kill()
    return code, "".join(lines) + rest


@pytest.mark.slow
def test_parameter_servers_split_train_survive_resume_and_export(cluster, bare_predict,
                                                                   tmp_path):
    model_dir = tmp_path / "model"
    # Train; kill a worker: training goes on; then kill a ps: one clear error.
    code, output = _run_until_killed(cluster, model_dir, [])
    # Each large table has a part on each ps task; small ones stay whole on one.
    for table, rows in (("item_id", 2000), ("user_id", 4000)):
        half = rows // 2
        assert (f"{table} ({rows} x 16): rows 0-{half - 1} on ps:0, rows {half}-{rows - 1} "
                "on ps:1") in output, output[-4000:]
    assert re.search(r"gender \(2 x 8\): rows 0-1 on ps:[01]\n", output)
    # Dense weights live on the ps tasks too, spread over both.
    assert re.search(r"dense weights: \d+ on ps:0, \d+ on ps:1\n", output), output[-4000:]
    totals = [float(m.group(2)) for m in TOTAL_LINE.finditer(output)]
    assert len(totals) >= 10 and max(totals[-3:]) < totals[0]
    assert code == 1, output[-4000:]
    error = [line for line in output.splitlines() if line.startswith("mtrec: error:")]
    assert len(error) == 1 and "parameter-server training stopped near step" in error[0] \
        and "a ps task" in error[0], output[-4000:]
    # The reason is the lost connection, whichever way gRPC words it.
    assert re.search(r"UNAVAILABLE|Connection refused|Connection reset|failed to connect",
                     error[0]), error[0]
    assert "Traceback" not in output
    import tensorflow as tf
    step = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
    assert step >= 50  # checkpoints every 10 steps, and 30 steps past the one at 20

    # Restart the lost tasks and the chief: training resumes from the last checkpoint.
    bare = bare_predict()
    cluster.start("ps", 1)
    cluster.start("worker", 1)
    code, output = _finish(cluster.chief(model_dir, f"train_config.num_steps={step + 10}"))
    assert code == 0, output[-4000:]
    assert f"from step {step} to {step + 10}" in output and f"step {step + 10}/" in output

    # The chief's checkpoint holds each split table whole (saved as slices of it).
    shapes = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir))) \
        .get_variable_to_shape_map()
    tables = {k: v for k, v in shapes.items() if "item_id" in k and "VARIABLE_VALUE" in k}
    assert [2000, 16] in tables.values(), tables

    # The export serves with no cluster and no mtrec, as `mtrec predict` scores.
    export_root = model_dir / "export" / "final"
    saved_model = str(export_root / sorted(os.listdir(export_root))[-1])
    rows = list(csv.reader(open(TEST)))[:32]
    data = tmp_path / "rows.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    names = [line.split('"')[1] for line in open(CONFIG) if "input_name:" in line]
    predicted = tmp_path / "predicted.csv"
    # `mtrec predict` runs beside the bare process.
    result = subprocess.Popen([sys.executable, "-m", "mtrec", "predict", "--saved_model",
                               saved_model, "--input", str(data), "--output", str(predicted)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(), cwd=ROOT)
    try:
        out, err = bare.communicate(f"{saved_model}\n{data}\n{json.dumps(names)}\n",
                                    timeout=120)
        assert bare.returncode == 0, err[-3000:]
        served = json.loads(out.strip().splitlines()[-1])
        _, err = result.communicate(timeout=120)
        assert result.returncode == 0, err[-3000:]
    finally:
        if result.poll() is None:
            result.kill()
            result.wait(30)
    with open(predicted) as f:
        scored = list(csv.DictReader(f))
    for key in ("probs_ctr", "probs_like"):
        np.testing.assert_allclose([float(r[key]) for r in scored], served[key], rtol=1e-5)


# ---------------------------------------------------------------------------
# Fast checks: which variables split, the memory report, the config and TF_CONFIG errors


def test_only_large_tables_split_one_part_per_ps():
    import tensorflow as tf
    from mtrec.features.embedding import creating_tables
    from mtrec.training.distribute import TablePartitioner
    split = TablePartitioner(num_ps=3)
    large, small = tf.TensorShape([2000, 16]), tf.TensorShape([10, 8])
    assert split(large, tf.float32) == [1, 1]  # a dense weight: never split
    with creating_tables():
        assert split(large, tf.float32) == [3, 1]
        assert split(small, tf.float32) == [1, 1]  # under 64 KiB: whole
        assert TablePartitioner(num_ps=8, min_bytes=0)(tf.TensorShape([5, 4]),
                                                       tf.float32) == [5, 1]
    assert split(large, tf.float32) == [1, 1]


def test_check_reports_memory_per_ps_task():
    from mtrec.training.distribute import ps_memory_lines
    # One table split (3001 x 16, parts of 1001 rows for 3 ps), one whole (10 x 8), and
    # 1,000 dense weights; Adam: 2 slots each.
    lines = ps_memory_lines({"big": (3001, 16), "small": (10, 8)}, 2, 1000, 2, num_ps=3)
    assert len(lines) == 2
    split, whole = 1001 * 16 * 3, 10 * 8 * 3 + 1000 * 3
    assert f"about {4 * (split + whole / 3) / 2 ** 20:,.1f} MiB per task" in lines[1]
    assert f"{4 * split / 2 ** 20:,.1f} MiB of split table parts" in lines[1]


def test_ps_strategy_needs_num_steps_and_a_full_tf_config(tmp_path, monkeypatch):
    from mtrec import config as config_lib
    from mtrec.errors import ConfigError
    from mtrec.protos import train_pb2
    from mtrec.training import distribute
    text = open(CONFIG).read().replace("train_config {", "train_config {\n  train_distribute: "
                                       "PSStrategy", 1)
    text = re.sub(r"\n\s*num_steps: \d+", "", text)
    path = tmp_path / "ps.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_lib.load(str(path))
    # At the train_distribute line this test inserted, line 8.
    assert f"{path}:8: PSStrategy needs train_config.num_steps" in str(e.value)
    config = train_pb2.TrainConfig(train_distribute=train_pb2.PSStrategy, num_steps=10)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["127.0.0.1:1"],
                                                            "worker": ["127.0.0.1:2"]},
                                                "task": {"type": "chief", "index": 0}}))
    with pytest.raises(ConfigError, match='TF_CONFIG has no ps task.*"ps": \\['):
        distribute.make_cluster(config)


@pytest.mark.parametrize("kind", ["adam_optimizer", "dense_moments", "lazy_adam_optimizer",
                                  "adagrad_optimizer"])
def test_a_split_table_trains_as_the_whole_table(kind):
    """The sparse optimizer on a table split in two parts (as a ps strategy splits it, and
    trained part by part as the train step does) gives the whole table's values and slots."""
    import tensorflow as tf
    from tensorflow.python.distribute.sharded_variable import ShardedVariable
    from mtrec.protos import optimizer_pb2
    from mtrec.training.optimizers import SparseOptimizer, table_shards
    config = optimizer_pb2.Optimizer()
    which = "adam_optimizer" if kind == "dense_moments" else kind
    getattr(config, which).learning_rate.constant_learning_rate.learning_rate = 0.1
    if kind == "dense_moments":
        config.adam_optimizer.dense_moments = True
    start = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    whole = tf.Variable(start)
    split = ShardedVariable([tf.Variable(start[:4], name="t/part_0"),
                             tf.Variable(start[4:], name="t/part_1")])
    whole_opt, split_opt = SparseOptimizer(config), SparseOptimizer(config)
    whole_opt.build([whole])
    split_opt.build([split])
    # Rows of both parts, a repeated id, and idle rows (dense moments move them at flush).
    for ids in ([0, 5, 5, 2], [6, 1], [3, 4, 0], [2]):
        ids = tf.constant(ids, tf.int64)
        for opt, table in ((whole_opt, whole), (split_opt, split)):
            parts = table_shards(table)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids) - 1.0))
            grads = tape.gradient(loss, parts)
            assert all(isinstance(g, tf.IndexedSlices) for g in grads if g is not None)
            opt.apply(zip(grads, parts))
    whole_opt.flush([whole])
    split_opt.flush([split])
    joined = tf.concat(split.variables, axis=0).numpy()
    np.testing.assert_allclose(joined, whole.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(joined, start)
    for name, slot in whole_opt.slot_variables[0].items():
        parts = split_opt.slot_variables[0][name]
        np.testing.assert_allclose(tf.concat(parts.variables, axis=0).numpy(), slot.numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=name)


def test_mtrec_check_prints_the_split_per_ps_task(monkeypatch):
    import mtrec
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {
        "chief": ["h0:1"], "worker": ["h1:1"], "ps": ["h2:1", "h3:1", "h4:1"]},
        "task": {"type": "chief", "index": 0}}))
    lines = mtrec.check(CONFIG, sets=["train_config.train_distribute=PSStrategy",
                                      "train_config.num_steps=10"], skip_data_check=True)
    text = "\n".join(lines)
    assert "parameter servers (PSStrategy): tables of 64 KiB or more split" in text
    # TF_CONFIG's 3 ps tasks: item_id and user_id (2000 and 4000 x 16, Adam: 3 floats a
    # parameter) split in 3: parts of 667 and 1334 rows, 0.37 MiB.
    assert re.search(r"\n\s+3 ps tasks: about [\d.]+ MiB per task \(0\.4 MiB of split table "
                     r"parts", text), text
