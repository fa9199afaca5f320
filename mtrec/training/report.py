"""What `mtrec check` prints about a built model: parameters per part, embedding memory
(with the optimizer's slots) and FLOPs per example (TensorFlow's graph profiler)."""
import contextlib
import io

import tensorflow as tf

from mtrec.data.schema import field_dtype
from mtrec.protos import train_pb2
from mtrec.training.distribute import num_ps_tasks, ps_memory_lines
from mtrec.training.job import Job
from mtrec.training.optimizers import SLOT_NAMES, optimizer_configs


def _mib(num_floats: int) -> str:
    return f"{num_floats * 4 / 2 ** 20:.1f} MiB"


def _flops_per_example(job: Job) -> int | None:
    """Float operations of one forward pass on a batch of one row (None if unknown)."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    columns = {f.input_name: tf.zeros([1], field_dtype(f))
               for f in job.pipeline.data_config.input_fields}
    features, _ = job.split(columns)
    graph = tf.function(lambda f: job.model(f, training=False)).get_concrete_function(
        features).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    # The v1 profiler prints and logs deprecation notes; keep them out of the report.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            info = model_analyzer.profile(graph=graph, options=options)
    finally:
        logger.setLevel(level)
    return int(info.total_float_ops) or None


def _size(num_bytes: int) -> str:
    return (f"{num_bytes / 2 ** 20:.1f} MiB" if num_bytes >= 2 ** 20
            else f"{num_bytes / 1024:.1f} KiB")


def _dynamic_memory(model, slots: int) -> list[str]:
    """Per dynamic table: its memory at the start and at max_capacity, the optimizer's
    slots and the map's bookkeeping included."""
    from mtrec.config.dynamic_params import state_bytes
    lines = ["  dynamic tables (values + optimizer slots + map), at the start -> at max_capacity:"]
    groups = model.feature_groups
    for space, table in sorted(groups.dynamic.tables.items()):
        dim = sum(int(groups.tables[n].shape[1]) for n in groups.dynamic.bound[space])
        start, most = int(table.capacity()), table.max_capacity
        at = [rows * dim * (1 + slots) * 4 + state_bytes(table.ev, rows) for rows in (start, most)]
        lines.append(f"    {space}: {_size(at[0])} ({start:,} rows) -> {_size(at[1])} "
                     f"({most:,} rows)")
    return lines


def model_report(pipeline) -> list[str]:
    """Lines describing the model the config builds."""
    job = Job.create(pipeline, for_training=False)
    job.build()
    model = job.model
    lines = ["  embedding tables (rows x dim, parameters, float32 memory):"]
    embedding = 0
    # {table: most rows} of the dynamic tables (ev_params), which grow.
    growing = model.feature_groups.dynamic.max_rows()
    for name, table in sorted(model.feature_groups.tables.items()):
        rows, dim = (int(n) for n in tf.shape(table))
        embedding += rows * dim
        lines.append(f"    {name}: {rows} x {dim} = {rows * dim:,} ({_mib(rows * dim)})"
                     + (f", dynamic: up to {growing[name]:,} rows" if name in growing else ""))
    lines.append("  dense parameters per part:")
    dense = 0
    for layer in model.layers:
        count = sum(int(tf.size(w)) for w in layer.weights)
        if count:
            dense += count
            lines.append(f"    {layer.name}: {count:,}")
    own = sum(int(tf.size(w)) for w in model.weights) - dense
    if own:  # weights of the model itself (e.g. uncertainty loss weights)
        dense += own
        lines.append(f"    (model): {own:,}")
    _, embedding_optimizer = optimizer_configs(pipeline.train_config)
    slots = len(SLOT_NAMES[embedding_optimizer.WhichOneof("optimizer")])
    lines.append(f"  parameters: {embedding + dense:,} ({embedding:,} embedding, {dense:,} "
                 "dense)")
    lines.append(f"  embedding memory: {_mib(embedding)} for the tables, "
                 f"{_mib(embedding * (1 + slots))} with the optimizer's {slots} slot(s) per "
                 "parameter")
    if growing:
        lines += _dynamic_memory(model, slots)
    if pipeline.train_config.train_distribute == train_pb2.PSStrategy:
        dense_optimizer, _ = optimizer_configs(pipeline.train_config)
        # A dynamic table is split by id, at most ceil(max_capacity / ps tasks) rows per ps.
        shapes = {name: (growing.get(name) or int(table.shape[0]), int(table.shape[1]))
                  for name, table in model.feature_groups.tables.items()}
        lines += ps_memory_lines(shapes, slots, dense, len(SLOT_NAMES.get(
            dense_optimizer.WhichOneof("optimizer"), ("m", "v"))), num_ps_tasks(),
            dynamic=set(growing),
            dynamic_state=model.feature_groups.dynamic.ps_state_bytes if growing else None)
    flops = _flops_per_example(job)
    lines.append(f"  FLOPs per example (forward): {flops:,}" if flops else
                 "  FLOPs per example: unknown")
    return lines

