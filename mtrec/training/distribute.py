"""tf.distribute from train_config.train_distribute and the standard TF_CONFIG.

mtrec never runs its own cluster runtime: MirroredStrategy replicates over local
devices, MultiWorkerMirroredStrategy over the workers TF_CONFIG lists (collective
all-reduce), exactly as Kubeflow's TFJob and other schedulers set it. NoStrategy
builds no strategy object at all, so the one-device loop stays as it was.
"""
import contextlib
import dataclasses
import json
import logging
import os
import tempfile

import tensorflow as tf

from mtrec.config import unsupported_strategy
from mtrec.errors import ConfigError, TrainingError
from mtrec.protos import train_pb2

log = logging.getLogger("mtrec")

MULTI_WORKER = (train_pb2.MultiWorkerMirroredStrategy, train_pb2.CollectiveAllReduceStrategy)
# Where a non-chief worker writes its own checkpoints (all workers must save under
# MultiWorkerMirroredStrategy); a temporary directory if unset.
SCRATCH_ENV = "MTREC_SCRATCH_DIR"


@dataclasses.dataclass
class Cluster:
    """The strategy of this process and its role in the job."""
    strategy: tf.distribute.Strategy | None
    is_chief: bool = True
    task_type: str = ""
    task_id: int = 0
    num_workers: int = 1
    # An evaluator task in TF_CONFIG evaluates the checkpoints; the chief does not.
    external_evaluator: bool = False

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def scope(self):
        """The strategy's scope (variables become mirrored), or nothing under NoStrategy."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def scratch_dir(self) -> str:
        """Where this non-chief worker writes what only the chief keeps."""
        root = os.environ.get(SCRATCH_ENV) or os.path.join(tempfile.gettempdir(),
                                                           f"mtrec-{os.getpid()}")
        path = os.path.join(root, f"{self.task_type}_{self.task_id}")
        os.makedirs(path, exist_ok=True)
        return path


NO_STRATEGY = Cluster(None)


def read_tf_config() -> dict:
    """TF_CONFIG as a dict ({} when unset); a malformed one is a clear error."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); expected "
                          '{"cluster": {"worker": ["host:port", ...]}, '
                          '"task": {"type": "worker", "index": 0}}.') from None
    if not isinstance(value, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with \"cluster\" and \"task\".")
    return value


def task_type() -> str:
    """This process's task type in TF_CONFIG ("" when unset)."""
    return str(read_tf_config().get("task", {}).get("type", ""))


def has_evaluator() -> bool:
    """Whether TF_CONFIG lists an evaluator task: then it evaluates, not the chief."""
    return bool(read_tf_config().get("cluster", {}).get("evaluator"))


def _local_devices(num_gpus: int) -> list[str] | None:
    """MirroredStrategy's devices: the first num_gpus GPUs (all if 0); without GPUs every
    logical CPU (one, unless tf.config.set_logical_device_configuration split the CPU)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in (gpus[:num_gpus] if num_gpus else gpus)]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_cluster(train_config) -> Cluster:
    """The strategy train_config asks for; call it before any other TensorFlow work (a
    multi-worker strategy configures the runtime's collectives)."""
    kind = train_config.train_distribute
    name = train_pb2.DistributionStrategy.Name(kind)
    if kind == train_pb2.NoStrategy:
        return Cluster(None, external_evaluator=True) if has_evaluator() else NO_STRATEGY
    if kind == train_pb2.MirroredStrategy:
        devices = _local_devices(train_config.num_gpus_per_worker)
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        log.info("MirroredStrategy over %s", ", ".join(devices))
        return Cluster(strategy, external_evaluator=has_evaluator())
    if kind not in MULTI_WORKER:
        raise ConfigError(unsupported_strategy(name))
    spec = read_tf_config()
    task = spec.get("task", {})
    cluster = spec.get("cluster", {})
    task_type, task_id = task.get("type", ""), int(task.get("index", 0))
    unknown = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unknown or task_type not in ("", "chief", "worker"):
        raise ConfigError(
            f"TF_CONFIG has {', '.join(unknown or [task_type])} tasks, which "
            f"{name} does not run: list \"chief\", \"worker\" and \"evaluator\" tasks.")
    evaluator = "evaluator" in cluster
    if evaluator:
        # The evaluator is no member of the collective group: the workers' strategy
        # must not wait for it.
        cluster = {k: v for k, v in cluster.items() if k != "evaluator"}
        os.environ["TF_CONFIG"] = json.dumps({**spec, "cluster": cluster})
    if not cluster:
        log.warning("%s without TF_CONFIG: training as a single worker.", name)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO))
    has_chief = bool(cluster.get("chief"))
    num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", [])) or 1
    is_chief = (task_type in ("", "chief") or
                (task_type == "worker" and task_id == 0 and not has_chief))
    result = Cluster(strategy, is_chief, task_type or "worker", task_id, num_workers,
                     external_evaluator=evaluator)
    log.info("%s: %s %d of %d workers (%s), %d replicas in sync", name,
             task_type or "worker", task_id, num_workers, "chief" if is_chief else "not chief",
             strategy.num_replicas_in_sync)
    return result


def shard_files(files: list[str], num_shards: int, index: int):
    """(files of this input pipeline, whether rows must be sharded instead): file-level
    sharding when there are at least as many files as pipelines, else every pipeline
    reads all files and keeps every num_shards-th batch of lines."""
    if num_shards <= 1:
        return files, False
    if len(files) >= num_shards:
        return files[index::num_shards], False
    return files, True


# What a collective raises when another worker died or cannot be reached.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


def any_worker(strategy, flag: bool, step: int, model_dir: str) -> bool:
    """Whether flag is true on any worker (a collective: every worker must call it).
    A worker that died meanwhile is the same clear error as in a train step."""
    try:
        value = strategy.experimental_distribute_values_from_function(
            lambda _: tf.constant(1.0 if flag else 0.0))
        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)) > 0
    except PEER_ERRORS as e:
        raise peer_error(e, step, model_dir) from None


def peer_error(error, step: int, model_dir: str) -> TrainingError:
    """A lost or failed worker -> one clear error saying how to resume."""
    first = (str(error).splitlines() or [type(error).__name__])[0][:300]
    return TrainingError(f"distributed training stopped near step {step}: another worker "
                         f"is unreachable or failed ({first}). Restart every worker with the "
                         f"same TF_CONFIG: training resumes from the chief's latest checkpoint "
                         f"in {model_dir}.")
