"""tf.distribute: MirroredStrategy over 2 logical CPUs matches one device; two
MultiWorkerMirroredStrategy workers on 127.0.0.1 train, agree and resume; a killed worker
fails the job with a clear message; unsupported strategies are config errors.

Every training runs in a subprocess: logical devices and a multi-worker runtime must be set
up before TensorFlow starts, and processes are ended by PID within timeouts."""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, sample_config

CONFIG = sample_config("mmoe_on_multidomain.config")
TRAIN = os.path.join(ROOT, "samples", "data", "multidomain_train_data")
TEST = os.path.join(ROOT, "samples", "data", "multidomain_test_data")
STEP_LINE = re.compile(r"step (\d+)/\d+ \| loss ctr=([\d.]+) like=([\d.]+)")

# One training in a process with 2 logical CPUs (set before TensorFlow starts); prints the
# logged loss lines. argv: config, model_dir, train, test, then --set overrides.
MIRRORED_SCRIPT = """
import logging, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
import mtrec
config, out, train, test = sys.argv[1:5]
mtrec.train(config, model_dir=out, sets=[
    f"train_input_path={train}", f"eval_input_path={test}", "train_config.num_steps=12",
    "train_config.log_step_count_steps=2", "train_config.seed=7", "data_config.shuffle=false",
    "eval_config.num_examples=512", *sys.argv[5:]])
"""


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _trajectories(tmp_path, runs: dict) -> dict:
    """{name: --set overrides} -> {name: (the logged (step, ctr, like) rows, stdout)}; the
    trainings run side by side (each process mostly waits on its own Python start-up)."""
    procs = {name: subprocess.Popen(
        [sys.executable, "-c", MIRRORED_SCRIPT, CONFIG, str(tmp_path / name), TRAIN, TEST,
         *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
        for name, sets in runs.items()}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            steps = [tuple(float(x) for x in m.groups()) for m in STEP_LINE.finditer(out)]
            results[name] = (np.array(steps), out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    return results


@pytest.mark.slow
def test_mirrored_two_cpus_matches_one_device(tmp_path):
    runs = _trajectories(tmp_path, {
        "one": ["data_config.batch_size=256"],
        "mirrored": ["data_config.batch_size=128",
                     "train_config.train_distribute=MirroredStrategy"]})
    (one, _), (mirrored, output) = runs["one"], runs["mirrored"]
    assert "MirroredStrategy over /device:CPU:0, /device:CPU:1" in output
    assert one.shape == mirrored.shape == (6, 3)
    np.testing.assert_array_equal(one[:, 0], mirrored[:, 0])
    # Same global batch, same rows per step: the same losses up to float summation order.
    np.testing.assert_allclose(mirrored[:, 1:], one[:, 1:], rtol=2e-4, atol=2e-5)
    assert mirrored[-1, 1:].sum() < mirrored[0, 1:].sum()  # it learns


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Workers:
    """Two `mtrec train` worker processes on 127.0.0.1, ended by PID; a checkpoint every
    10 steps."""

    def __init__(self, tmp_path, model_dir, num_steps, extra_sets=()):
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        self.logs, self.procs = [], []
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                 "index": index}})
            sets = [f"train_input_path={TRAIN}", f"eval_input_path={TEST}",
                    "train_config.train_distribute=MultiWorkerMirroredStrategy",
                    f"train_config.num_steps={num_steps}", "train_config.save_checkpoints_steps=10",
                    "train_config.log_step_count_steps=10", "data_config.batch_size=128",
                    "eval_config.num_examples=512", *extra_sets]
            command = [sys.executable, "-m", "mtrec", "train", "--config", CONFIG,
                       "--model_dir", str(model_dir)]
            for s in sets:
                command += ["--set", s]
            log = open(tmp_path / f"worker{index}-{time.time_ns()}.log", "w+")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env=_env(TF_CONFIG=tf_config, MTREC_SCRATCH_DIR=str(tmp_path / "scratch"))))

    def output(self, index: int) -> str:
        if not self.logs[index].closed:
            self.logs[index].flush()
        with open(self.logs[index].name) as f:
            return f.read()

    def wait(self, timeout: float) -> list[int]:
        deadline = time.time() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(deadline - time.time(), 1)))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
        for log in self.logs:
            log.close()


def _checkpoint_values(path: str) -> dict:
    import tensorflow as tf
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "save_counter" not in k}


def _last_step(model_dir) -> int:
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(model_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_two_workers_train_agree_export_resume_and_a_killed_one_fails_clearly(tmp_path):
    """One cluster of two workers, launched three times: (1) they train to step 30 and
    agree, the chief alone writes model_dir and its export serves; (2) both resume from
    step 30, and a worker killed after the next checkpoint fails the job with one clear
    message; (3) both resume from the chief's last checkpoint and finish."""
    model_dir = tmp_path / "model"
    workers = Workers(tmp_path, model_dir, 30)
    try:
        codes = workers.wait(240)
        assert codes == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
    finally:
        workers.stop()
    chief, other = workers.output(0), workers.output(1)
    assert "worker 0 of 2 workers (chief)" in chief and "(not chief)" in other
    assert "reads every 2-th row of 1 file(s)" in other  # one file, two workers: rows split
    # Only the chief writes model_dir; the other worker's checkpoint is in its scratch dir.
    assert os.path.isfile(model_dir / "pipeline.config")
    assert len(open(model_dir / "eval_result.txt").read().splitlines()) == 3  # 10, 20, 30
    scratch = tmp_path / "scratch" / "worker_1"
    assert not os.path.exists(scratch / "pipeline.config")
    ours, theirs = (_checkpoint_values(str(d / "ckpt-30")) for d in (model_dir, scratch))
    assert set(ours) == set(theirs) and len(ours) > 20
    for key, value in ours.items():
        np.testing.assert_array_equal(value, theirs[key], err_msg=key)
    assert int(ours["global_step/.ATTRIBUTES/VARIABLE_VALUE"]) == 30

    import tensorflow as tf
    (export,) = glob.glob(str(model_dir / "export" / "final" / "*"))
    serve = tf.saved_model.load(export).signatures["serving_default"]
    rows = [line.rstrip("\n").split(",") for line in open(TEST).readlines()[:4]]
    names = ["clk", "like", "domain", "user_id", "item_id", "user_group", "gender",
             "age_bucket", "item_cate", "hour", "price"]
    inputs = {}
    for name, spec in serve.structured_input_signature[1].items():
        column = [r[names.index(name)] for r in rows]
        inputs[name] = (tf.constant(column) if spec.dtype == tf.string else
                        tf.cast(tf.strings.to_number(column, tf.float64), spec.dtype))
    probs = serve(**inputs)["probs_ctr"].numpy()
    assert probs.shape == (4,) and np.all((probs > 0) & (probs < 1))

    # A restart resumes every worker from the chief's checkpoint at step 30; killing a
    # worker after the next checkpoint stops the chief with one clear error.
    workers = Workers(tmp_path, model_dir, 100000, ["eval_input_path="])
    try:
        deadline = time.time() + 180
        while _last_step(model_dir) <= 30 and time.time() < deadline:
            assert workers.procs[0].poll() is None, workers.output(0)[-3000:]
            time.sleep(0.5)
        assert _last_step(model_dir) > 30, workers.output(0)[-3000:]
        for index in range(2):
            assert "(step 30)" in workers.output(index), workers.output(index)[-3000:]
        os.kill(workers.procs[1].pid, signal.SIGKILL)
        killed_at = time.time()
        code = workers.procs[0].wait(150)
        assert code == 1
        assert time.time() - killed_at < 150
    finally:
        workers.stop()
    output = workers.output(0)
    assert "mtrec: error: distributed training stopped near step" in output, output[-3000:]
    assert "another worker is unreachable or failed" in output
    assert "Traceback" not in output
    # Restarting every worker resumes from the chief's last checkpoint, to num_steps.
    last = _last_step(model_dir)
    workers = Workers(tmp_path, model_dir, last + 10, ["eval_input_path="])
    try:
        codes = workers.wait(240)
        assert codes == [0, 0], workers.output(0)[-3000:] + workers.output(1)[-3000:]
    finally:
        workers.stop()
    for index in range(2):
        assert f"(step {last})" in workers.output(index)
        assert f"step {last + 10}/{last + 10}" in workers.output(index)


def test_unsupported_strategies_are_config_errors(tmp_path):
    from mtrec import config as config_lib
    from mtrec.errors import ConfigError
    for name in ("ExascaleStrategy", "HorovodStrategy"):
        with pytest.raises(ConfigError) as error:
            config_lib.load(CONFIG, sets=[f"train_config.train_distribute={name}"])
        message = str(error.value)
        assert f"{name} is not supported" in message
        assert "MirroredStrategy" in message and "MultiWorkerMirroredStrategy" in message
    for name in ("MirroredStrategy", "MultiWorkerMirroredStrategy",
                 "CollectiveAllReduceStrategy", "PSStrategy"):
        loaded = config_lib.load(CONFIG, sets=[f"train_config.train_distribute={name}"])
        assert loaded.pipeline.train_config.train_distribute != 0


def test_tf_config_with_parameter_servers_is_rejected(monkeypatch):
    from mtrec.errors import ConfigError
    from mtrec.protos import train_pb2
    from mtrec.training import distribute
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]},
        "task": {"type": "ps", "index": 0}}))
    config = train_pb2.TrainConfig(train_distribute=train_pb2.MultiWorkerMirroredStrategy)
    with pytest.raises(ConfigError, match="ps tasks.*PSStrategy"):
        distribute.make_cluster(config)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.make_cluster(config)


def test_file_and_row_sharding():
    from mtrec.training.distribute import shard_files
    files = [f"f{i}" for i in range(5)]
    assert shard_files(files, 2, 0) == (["f0", "f2", "f4"], False)
    assert shard_files(files, 2, 1) == (["f1", "f3"], False)
    assert shard_files(files[:1], 2, 1) == (["f0"], True)
    assert shard_files(files, 1, 0) == (files, False)


@pytest.mark.slow
def test_evaluator_task_evaluates_the_chiefs_checkpoints_as_they_appear(tmp_path):
    """TF_CONFIG with an evaluator: the chief trains without evaluating; `mtrec train` in
    the evaluator task evaluates every new checkpoint, up to num_steps, then exits."""
    model_dir = str(tmp_path / "model")
    cluster = {"chief": ["127.0.0.1:1"], "evaluator": ["127.0.0.1:2"]}
    sets = ["--set", f"train_input_path={TRAIN}", "--set", f"eval_input_path={TEST}",
            "--set", "train_config.num_steps=60", "--set", "train_config.save_checkpoints_steps=20",
            "--set", "eval_config.num_examples=512"]
    command = [sys.executable, "-m", "mtrec", "train", "--config", CONFIG, "--model_dir",
               model_dir, *sets]
    evaluator = subprocess.Popen(command, env=_env(TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "evaluator", "index": 0}})), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        chief = subprocess.run(command, env=_env(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "chief", "index": 0}})), cwd=ROOT,
            capture_output=True, text=True, timeout=300)
        assert chief.returncode == 0, chief.stderr[-3000:]
        assert "evaluating" not in chief.stderr
        out, err = evaluator.communicate(timeout=300)
    finally:
        evaluator.kill()
    assert evaluator.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["global_step"] == 60
    with open(os.path.join(model_dir, "eval_result.txt")) as f:
        steps = [json.loads(line)["global_step"] for line in f]
    assert steps[-1] == 60 and steps == sorted(set(steps))  # each checkpoint at most once


def test_evaluate_continuous_gives_up_after_timeout_without_checkpoints(tmp_path):
    import mtrec
    model_dir = str(tmp_path / "model")
    result = mtrec.evaluate(CONFIG, model_dir=model_dir, continuous=True, timeout=1,
                            sets=[f"eval_input_path={TEST}"])
    assert result == {}  # nothing to evaluate within the timeout


def test_a_worker_lost_during_the_checkpoint_agreement_is_the_same_clear_error():
    # The chief agrees with the others after each checkpoint (early stop, timed saves); a
    # worker killed at that moment must not surface as a collective-op traceback.
    import tensorflow as tf
    from mtrec.errors import TrainingError
    from mtrec.training import distribute

    class LostPeer:
        def experimental_distribute_values_from_function(self, fn):
            return fn(None)

        def reduce(self, *args, **kwargs):
            raise tf.errors.UnavailableError(None, None, "task 1 stopped sending heartbeats")

    with pytest.raises(TrainingError, match="stopped near step 20: another worker is "
                       r"unreachable or failed \(task 1 stopped sending heartbeats\)"):
        distribute.any_worker(LostPeer(), False, 20, "/tmp/model")
