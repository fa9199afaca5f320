"""tf.distribute from train_config.train_distribute and the standard TF_CONFIG.

mtrec never runs its own cluster runtime: MirroredStrategy replicates over local
devices, MultiWorkerMirroredStrategy over the workers TF_CONFIG lists (collective
all-reduce), ParameterServerStrategy over its chief, worker and ps tasks (the chief drives
the job through TF's ClusterCoordinator; workers and ps tasks only serve), exactly as
Kubeflow's TFJob and other schedulers set TF_CONFIG. NoStrategy builds no strategy object
at all, so the one-device loop stays as it was.
"""
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import threading

import tensorflow as tf

from mtrec.config import unsupported_strategy
from mtrec.errors import ConfigError, TrainingError, reason_line
from mtrec.features.dynamic import GrowingTable, sharded_table
from mtrec.features.embedding import is_creating_tables
from mtrec.training.optimizers import table_shards
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
    # PSStrategy: the chief's tf.distribute.coordinator.ClusterCoordinator.
    coordinator: object = None
    num_ps: int = 0

    @property
    def collective(self) -> bool:
        """Whether the workers run in lockstep (MultiWorkerMirroredStrategy): then they
        must agree, by a collective, on when to save and stop."""
        return self.num_workers > 1 and self.coordinator is None

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def scope(self):
        """The strategy's scope (variables become mirrored), or nothing under NoStrategy."""
        if self.coordinator is not None:
            return _fixed_shapes(self.strategy.scope())
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


def thread_counts(train_config) -> tuple[int, int]:
    """(inter-op, intra-op) threads for TensorFlow's runtime; an intra-op 0 leaves
    TensorFlow's choice. The inter-op default is one more thread than CPUs: the input
    pipeline's parallel map and the step's independent ops share that pool, and with one
    thread per CPU they wait for each other (measured: docs/benchmarks.md)."""
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on, as TF counts
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    inter = train_config.inter_op_parallelism_threads or cpus + 1
    return inter, train_config.intra_op_parallelism_threads


def configure_threads(train_config) -> None:
    """Give TensorFlow's runtime thread_counts(train_config), which it only takes before
    its first op. A process whose TensorFlow already ran (a notebook, a test) keeps its
    threads: silently for mtrec's default, with a warning for a number the config sets."""
    inter, intra = thread_counts(train_config)
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    except RuntimeError:
        fields = [f for f in ("inter_op_parallelism_threads", "intra_op_parallelism_threads")
                  if getattr(train_config, f)]
        if fields:
            log.warning("train_config.%s is ignored: TensorFlow already runs in this process "
                        "with its threads fixed; start a new process (e.g. `mtrec train`).",
                        " and ".join(fields))


def make_cluster(train_config) -> Cluster:
    """The strategy train_config asks for; call it before any other TensorFlow work (a
    multi-worker strategy configures the runtime's collectives)."""
    kind = train_config.train_distribute
    name = train_pb2.DistributionStrategy.Name(kind)
    if kind == train_pb2.NoStrategy:
        return Cluster(None, external_evaluator=True) if has_evaluator() else NO_STRATEGY
    if kind == train_pb2.PSStrategy:
        return _parameter_server_cluster(name, train_config)
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
            f"{name} does not run: list \"chief\", \"worker\" and \"evaluator\" tasks"
            + (", or set train_distribute: PSStrategy for parameter servers." if "ps" in unknown
               or task_type == "ps" else "."))
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


def peer_error(error, step: int, model_dir: str, parameter_servers: bool = False
               ) -> TrainingError:
    """A lost or failed worker -> one clear error saying how to resume."""
    first = _first_line(error)
    if parameter_servers:
        # The coordinator retries a lost worker's steps on the others itself; what reaches
        # here is a lost ps task (its variables are gone) or a cluster nothing can reach.
        return TrainingError(
            f"parameter-server training stopped near step {step}: a ps task (or every "
            f"worker) is unreachable or failed ({first}). Restart the failed tasks, then the "
            f"chief: training resumes from the latest checkpoint in {model_dir}.")
    return TrainingError(f"distributed training stopped near step {step}: another worker "
                         f"is unreachable or failed ({first}). Restart every worker with the "
                         f"same TF_CONFIG: training resumes from the chief's latest checkpoint "
                         f"in {model_dir}.")


# Tables smaller than this stay whole on one ps (placed round-robin like dense weights).
SPLIT_TABLES_FROM_BYTES = 64 * 1024
# On while _fixed_shapes creates a variable: TablePartitioner keeps it whole.
_WHOLE = threading.local()


@contextlib.contextmanager
def _fixed_shapes(scope):
    """PSStrategy: a variable declared with a dimension of unknown size (a dynamic table's
    rows and state, which grow) is declared with its initial value's shape instead: TF
    2.21 workers abort (tensor_shape.cc "Check failed: size >= 0") on a remote variable
    whose shape has an unknown dimension. It still grows (features/dynamic.py resize). A
    dynamic table's rows are made in one part per ps task, each on the ps of its shard of
    ids (features/dynamic.py sharded_table); its state stays whole."""
    def creator(next_creator, **kwargs):
        shape = kwargs.get("shape")
        if shape is None or tf.TensorShape(shape).is_fully_defined():
            return next_creator(**kwargs)
        table = sharded_table(next_creator, kwargs) if is_creating_tables() else None
        if table is not None:
            return table
        kwargs["shape"] = None
        _WHOLE.on = True
        try:
            return next_creator(**kwargs)
        finally:
            _WHOLE.on = False

    with scope, tf.variable_creator_scope(creator):
        yield


class TablePartitioner:
    """ParameterServerStrategy's variable_partitioner: every embedding table of at least
    SPLIT_TABLES_FROM_BYTES is split row-wise ("div": contiguous blocks of rows) into one
    shard per ps task; every other variable (dense weights, optimizer state) stays whole.
    Tables are told apart by features.embedding.creating_tables()."""

    def __init__(self, num_ps: int, min_bytes: int = SPLIT_TABLES_FROM_BYTES):
        self.num_ps = num_ps
        self.min_bytes = min_bytes

    def __call__(self, shape, dtype, axis=0):
        shape = tf.TensorShape(shape)
        whole = [1] * shape.rank
        if (not is_creating_tables() or getattr(_WHOLE, "on", False) or not shape.rank
                or shape.num_elements() is None):
            return whole
        if shape.num_elements() * tf.as_dtype(dtype).size < self.min_bytes:
            return whole
        return [min(self.num_ps, shape[0])] + whole[1:]


def ps_memory_lines(tables: dict, table_slots: int, dense_floats: int, dense_slots: int,
                    num_ps: int | None = None, unsplit=(), dynamic=(),
                    dynamic_state=None) -> list[str]:
    """`mtrec check`'s lines on PSStrategy: how the tables split over the ps tasks (as
    TablePartitioner splits them) and the memory per task, optimizer slots included.
    tables: {name: (rows, dim)}; num_ps: TF_CONFIG's ps count, else 2, 4 and 8 are shown;
    unsplit: tables never split; dynamic: the dynamic tables (rows: max_capacity), split by
    id into one part of ceil(rows / num_ps) rows per ps task whatever their size;
    dynamic_state(num_ps): bytes of their maps and bookkeeping on each ps task."""
    counts = [num_ps] if num_ps else [2, 4, 8]
    lines = ["  parameter servers (PSStrategy): tables of "
             f"{SPLIT_TABLES_FROM_BYTES // 1024} KiB or more split row-wise, one part per ps; "
             "smaller tables and dense weights placed whole, round-robin"
             + ("; dynamic tables (ev_params) split by id, id mod ps tasks, each part "
                "growing up to ceil(max_capacity / ps tasks) rows (counted at that size)"
                if dynamic else "")
             + ("" if num_ps else " (TF_CONFIG lists no ps tasks: 2, 4 and 8 shown)")]
    for n in counts:
        split = whole = 0
        for name, (rows, dim) in tables.items():
            if name in dynamic or (rows * dim * 4 >= SPLIT_TABLES_FROM_BYTES
                                   and name not in unsplit):
                split += -(-rows // n) * dim * (1 + table_slots)  # the largest part
            else:
                whole += rows * dim * (1 + table_slots)
        whole += dense_floats * (1 + dense_slots)
        state = dynamic_state(n) if dynamic_state else 0
        per_task = 4 * (split + whole / n) + state
        lines.append(f"    {n} ps tasks: about {per_task / 2 ** 20:,.1f} MiB per task "
                     f"({4 * split / 2 ** 20:,.1f} MiB of split table parts, "
                     f"{4 * whole / 2 ** 20:,.1f} MiB of whole variables spread over them"
                     + (f", {state / 2 ** 20:,.1f} MiB of dynamic tables' maps and "
                        "bookkeeping" if dynamic_state else "") + ")")
    return lines


def num_ps_tasks() -> int:
    """The ps tasks TF_CONFIG lists (0 when none)."""
    return len(read_tf_config().get("cluster", {}).get("ps", []))


def ps_task_help() -> str:
    return ('PSStrategy needs TF_CONFIG with "chief", "worker" and "ps" tasks, e.g. '
            '{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"], '
            '"ps": ["host3:2222", "host4:2222"]}, "task": {"type": "chief", "index": 0}} '
            "(docs/distributed.md)")


def _parameter_server_cluster(name: str, train_config) -> Cluster:
    """The chief's ParameterServerStrategy and coordinator; a worker or ps task serves
    until it is stopped and never returns."""
    spec = read_tf_config()
    cluster = spec.get("cluster", {})
    task = spec.get("task", {})
    task_type, task_id = str(task.get("type", "")), int(task.get("index", 0))
    missing = [job for job in ("chief", "worker", "ps") if not cluster.get(job)]
    unknown = sorted(set(cluster) - {"chief", "worker", "ps", "evaluator"})
    if missing or unknown or task_type not in ("chief", "worker", "ps"):
        problem = (f"has no {', '.join(missing)} task" if missing else
                   f"lists {', '.join(unknown)} tasks" if unknown else
                   f"gives this process the task type {task_type!r}")
        raise ConfigError(f"{name}: TF_CONFIG {problem}. {ps_task_help()}.")
    evaluator = "evaluator" in cluster
    if evaluator:
        # The evaluator is no part of the training cluster: the strategy must not wait for it.
        cluster = {k: v for k, v in cluster.items() if k != "evaluator"}
        os.environ["TF_CONFIG"] = json.dumps({**spec, "cluster": cluster})
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    # The coordinator logs every closure it waits for and every reduction at INFO.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if task_type in ("worker", "ps"):
        serve(resolver, task_type, task_id, thread_counts(train_config))
    num_ps, num_workers = len(cluster["ps"]), len(cluster["worker"])
    try:
        strategy = tf.distribute.ParameterServerStrategy(
            resolver, variable_partitioner=TablePartitioner(num_ps))
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    except PEER_ERRORS as e:
        raise TrainingError(f"{name}: the chief cannot reach the cluster in TF_CONFIG "
                            f"({_first_line(e)}); start every worker and ps task first.") from None
    log.info("%s: chief of %d workers and %d ps tasks; embedding tables of %d KiB or more "
             "are split row-wise over the ps tasks; training is asynchronous", name,
             num_workers, num_ps, SPLIT_TABLES_FROM_BYTES // 1024)
    return Cluster(strategy, True, "chief", 0, num_workers, external_evaluator=evaluator,
                   coordinator=coordinator, num_ps=num_ps)


def log_placement(tables, dense) -> None:
    """One line per embedding table: which rows live on which ps task; one line for the
    dense weights: how many are on each ps task."""
    for table in tables:
        parts = table_shards(table)
        name = parts[0].name.split(":")[0].rsplit("/part_", 1)[0]
        if isinstance(table, GrowingTable):  # a dynamic table: split by id, each part grows
            where = []
            for s, part in enumerate(parts):
                task = tf.DeviceSpec.from_string(part.device)
                where.append(f"part {s} on {task.job}:{task.task} "
                             f"({int(tf.shape(part)[0])} rows)")
            log.info("table %s (dynamic, x %d; table row r * %d + s in part s): %s", name,
                     int(parts[0].shape[1]), len(parts), ", ".join(where))
            continue
        start, where = 0, []
        for part in parts:
            rows = int(part.shape[0] if part.shape[0] is not None else tf.shape(part)[0])
            task = tf.DeviceSpec.from_string(part.device)
            where.append(f"rows {start}-{start + rows - 1} on {task.job}:{task.task}")
            start += rows
        log.info("table %s (%d x %d): %s", name, start, int(parts[0].shape[1]),
                 ", ".join(where))
    tasks = {}
    for variable in dense:
        task = tf.DeviceSpec.from_string(getattr(variable, "value", variable).device)
        tasks[f"{task.job}:{task.task}"] = tasks.get(f"{task.job}:{task.task}", 0) + 1
    log.info("dense weights: %s",
             ", ".join(f"{n} on {task}" for task, n in sorted(tasks.items())))


def serve(resolver, task_type: str, task_id: int, threads: tuple[int, int]) -> None:
    """Run this worker or ps task's TensorFlow server, with (inter-op, intra-op) threads,
    until the process is stopped: the chief places variables on the ps tasks and runs steps
    on the workers through it."""
    inter, intra = threads
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=task_type,
                                  task_index=task_id, protocol=resolver.rpc_layer or "grpc",
                                  config=tf.compat.v1.ConfigProto(
                                      inter_op_parallelism_threads=inter,
                                      intra_op_parallelism_threads=intra),
                                  start=True)
    log.info("%s %d serves at %s for the chief; it runs until it is stopped (a scheduler "
             "stops it when the chief ends).", task_type, task_id, server.target)
    server.join()


def _first_line(error) -> str:
    """The line of a TF error that says which peer failed, else its reason line."""
    lines = [line.strip().lstrip("(0123456789) ") for line in str(error).splitlines()]
    for line in lines:
        if "UNAVAILABLE" in line or "Connection refused" in line:
            return line[:300]
    return (reason_line(error) or type(error).__name__)[:300]
