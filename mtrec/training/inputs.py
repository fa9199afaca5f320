"""The train and eval datasets of a job: batches of (features, side columns, bad rows),
sharded over the workers under a strategy; a read error becomes one DataError naming
the file and line."""
import logging

import tensorflow as tf

from mtrec import config as config_lib
from mtrec.data.reader import expand_paths, input_parts, make_reader
from mtrec.data.records import plain
from mtrec.data.schema import BAD_ROWS_KEY, column_rules
from mtrec.errors import DataError, reason_line
from mtrec.protos import data_pb2
from mtrec.training import distribute
from mtrec.training.job import Job

log = logging.getLogger("mtrec")


def input_files(pipeline, cluster) -> tuple[list[str], list[str] | None]:
    """(train files, eval files or None when this process does not evaluate)."""
    # binary_train_input / binary_eval_input (CriteoInput) name the files instead.
    train_files = (input_parts(pipeline, "train")
                   or expand_paths(pipeline.train_input_path, "train_input_path"))
    # With an evaluator task in TF_CONFIG, it evaluates the checkpoints, not the chief.
    evaluates = cluster.is_chief and not cluster.external_evaluator
    eval_files = (input_parts(pipeline, "eval") if evaluates else None) or (
        expand_paths(pipeline.eval_input_path, "eval_input_path")
        if pipeline.eval_input_path and evaluates else None)
    return train_files, eval_files


def label_columns(job: Job) -> dict:
    """{label column: number of classes, 0 unless a classification tower reads it}: the
    reader requires them (not empty without a default_val, a class id)."""
    labels = {name: 0 for name in config_lib.label_names(job.pipeline)}
    labels.update(job.label_classes())
    return labels


def make_dataset(job: Job, files, training: bool, row_shard=None,
                 endless: bool = False) -> tf.data.Dataset:
    """row_shard: (number of input pipelines, this one's index) to read every n-th row.
    endless: repeat without end, shuffled without a seed (every parameter-server worker
    reads all the files, each in its own order)."""
    data = job.pipeline.data_config
    reader = make_reader(data, files, column_rules(job.pipeline, label_columns(job)))
    if training:
        kwargs = {"shard": row_shard} if row_shard else {}
        ds = reader.dataset(data.batch_size, None if endless else (data.num_epochs or None),
                            data.shuffle, data.shuffle_buffer_size,
                            seed=None if endless else (job.pipeline.train_config.seed or None),
                            drop_remainder=data.drop_remainder, **kwargs)
    else:
        ds = reader.dataset(data.eval_batch_size or data.batch_size, 1, False)

    def split(columns):
        bad = columns.pop(BAD_ROWS_KEY, tf.constant(0, tf.int64))
        features, side = job.split(columns)
        return features, side, bad

    parallel = data.num_parallel_calls or tf.data.AUTOTUNE
    ds = ds.map(plain(split), num_parallel_calls=parallel)
    return ds.prefetch(data.prefetch_size or tf.data.AUTOTUNE), reader


def no_rows_error(path: str, reader) -> DataError:
    """The training data gave no batch: its files hold no rows, or (ignore_error) every
    row was bad and skipped; then say how many were read, and the first bad one."""
    # With ignore_error the reader yields no batch without a good row: rows there were bad.
    rows = reader.num_rows() if reader.data_config.ignore_error else 0
    if rows:
        where = reader.locate_error()
        return DataError(f"all {rows} rows read from train_input_path {path!r} are bad and "
                         "were skipped (data_config.ignore_error: true): there is nothing "
                         "to train on." + (f" The first: {where}." if where else ""))
    return DataError(f"train_input_path {path!r} holds no rows.")


def shard_input(data_config, files: list[str], n: int, i: int):
    """(files of input pipeline i of n, whether it keeps every n-th row of them instead):
    data_config.file_shard true splits by file, false by row (EasyRec's default); unset,
    by file when there are at least as many files as pipelines, else by row."""
    if n <= 1 or not data_config.HasField("file_shard"):
        return distribute.shard_files(files, n, i)
    if not data_config.file_shard:
        return files, True
    if len(files) < n:
        raise DataError(f"data_config.file_shard: true with {len(files)} training file(s) for "
                        f"{n} workers: give at least one file per worker, or set file_shard: "
                        "false to split the rows.")
    return files[i::n], False


def prefetch_to_device(dataset: tf.data.Dataset, device: str | None = None,
                       buffer_size: int = 2) -> tf.data.Dataset:
    """The dataset with its next batches copied to `device` ahead of the step
    (tf.data.experimental.prefetch_to_device); device None means the first GPU, and without
    a GPU the dataset comes back unchanged. Batches holding strings (which cannot live on a
    GPU) stay on the host. Never run on a GPU (docs/training.md); the tests prefetch to the
    CPU."""
    if device is None:
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            return dataset
        device = gpus[0].name
    specs = tf.nest.flatten(dataset.element_spec, expand_composites=True)
    if any(getattr(spec, "dtype", None) == tf.string for spec in specs):
        log.info("training batches hold strings; they are not prefetched to %s.", device)
        return dataset
    return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size))


def train_dataset(job: Job, files, cluster):
    """(dataset, [reader]) of the training data; under a strategy a distributed dataset
    whose input pipelines (one per worker) read their own shard of the files, or of the
    rows when there are fewer files than workers. Each replica takes batch_size rows, so
    a step trains on batch_size x replicas rows."""
    if cluster.strategy is None:
        dataset, reader = make_dataset(job, files, training=True)
        return prefetch_to_device(dataset), [reader]
    readers = []
    if cluster.coordinator is not None:
        # ParameterServerStrategy: TF's coordinator builds this pipeline on every worker
        # and tells it no worker index, so each worker reads all the files, endlessly and
        # in its own order; num_steps ends training.
        def make_endless():
            dataset, reader = make_dataset(job, files, training=True, endless=True)
            readers.append(reader)
            return dataset

        return cluster.coordinator.create_per_worker_dataset(make_endless), readers

    def make(context: tf.distribute.InputContext):
        n, i = context.num_input_pipelines, context.input_pipeline_id
        mine, by_rows = shard_input(job.pipeline.data_config, files, n, i)
        if by_rows and job.pipeline.data_config.input_type == data_pb2.DatasetConfig.ParquetInput:
            raise DataError(f"{len(files)} Parquet file(s) for {n} workers: give at least "
                            "one file per worker (rows are split only in CSV and TFRecord "
                            "input)" + (", and set data_config.file_shard: true."
                                        if len(files) >= n else "."))
        if n > 1:
            log.info("input pipeline %d of %d reads %s", i, n,
                     f"every {n}-th row of {len(files)} file(s)" if by_rows
                     else f"{len(mine)} of {len(files)} files")
        dataset, reader = make_dataset(job, mine, training=True,
                                       row_shard=(n, i) if by_rows else None)
        readers.append(reader)
        return dataset

    # Inputs stay in host memory: string columns cannot live on an accelerator.
    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    dataset = cluster.strategy.distribute_datasets_from_function(make, options)
    return dataset, readers


def data_error(error, reader, files, what, job=None) -> DataError:
    """A tf.data read error -> DataError naming the bad row if the reader finds it."""
    where = reader.locate_error()
    hint = " Fix the row, or set data_config.ignore_error: true to skip bad rows."
    if where:
        return DataError(f"{where}.{hint}")
    message = reason_line(error) or type(error).__name__
    return DataError(f"cannot read {what} data ({', '.join(files[:3])}"
                     f"{'...' if len(files) > 3 else ''}): {message}")

