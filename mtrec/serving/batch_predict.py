"""Score a file with an exported SavedModel, batch by batch (memory stays flat).

The input rows have the format of the training data (the data_config saved in the
SavedModel's assets/pipeline.config); label columns may be absent from the
signature but are read as columns.
"""
import contextlib
import csv
import logging
import os
import stat
import tempfile

import numpy as np
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.data.reader import expand_paths, make_reader
from mtrec.data.schema import column_rules
from mtrec.errors import DataError, MtrecError
from mtrec.training import storage

log = logging.getLogger("mtrec")


def _format(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return "|".join(_format(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


@contextlib.contextmanager
def _output_file(path: str):
    """Open `path` for writing so that it is complete or untouched: rows go to a temporary
    file in the same directory, renamed over `path` only once all are written; on any
    failure the temporary file is removed. A path that exists and is not a regular file
    (/dev/stdout, a pipe) is written directly: it cannot be renamed over. An OSError of
    the writing names `path`."""
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    try:
        if mode is not None and not stat.S_ISREG(mode):
            with open(target, "w", newline="", encoding="utf-8") as out:
                yield out
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            # A new file gets the usual permissions, not mkstemp's 0600.
            os.chmod(tmp, stat.S_IMODE(mode) if mode is not None
                     else 0o666 & ~storage.current_umask())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from e
        raise


def predict(saved_model: str, input_path: str, output_path: str, reserved_cols=None,
            output_cols=None, batch_size: int = 1024) -> int:
    """Write reserved_cols + output_cols of every row to output_path; return the row count."""
    if batch_size < 1:
        raise MtrecError(f"--batch_size must be at least 1, got {batch_size}.")
    directory = os.path.dirname(os.path.realpath(output_path))
    if not os.path.isdir(directory):
        raise MtrecError(f"--output {output_path}: the directory {directory} does not exist.")
    if os.path.isdir(output_path):
        raise MtrecError(f"--output {output_path} is a directory; name a file to write.")
    config_path = os.path.join(saved_model, "assets", "pipeline.config")
    if not os.path.isfile(config_path):
        raise MtrecError(f"{saved_model} is not an mtrec SavedModel (no assets/pipeline.config).")
    with open(config_path, encoding="utf-8") as f:
        pipeline = config_lib.parse_text(f.read(), config_path)
    loaded = tf.saved_model.load(saved_model)
    # `columns` takes one input per column by name, whatever shape export_config gave
    # serving_default (exports before it existed have only serving_default).
    serve = loaded.signatures.get("columns") or loaded.signatures["serving_default"]
    signature_inputs = serve.structured_input_signature[1]
    names = sorted(serve.structured_outputs)
    output_cols = list(output_cols or names)
    unknown = [c for c in output_cols if c not in names]
    if unknown:
        raise MtrecError(f"--output_cols {', '.join(unknown)} not among the model outputs: "
                         f"{', '.join(names)}.")
    files = expand_paths(input_path, "--input")
    reader = make_reader(pipeline.data_config, files, column_rules(pipeline))
    reserved_cols = list(reserved_cols or [])
    known = [f.input_name for f in pipeline.data_config.input_fields]
    missing = [c for c in reserved_cols if c not in known]
    if missing:
        raise MtrecError(f"--reserved_cols {', '.join(missing)} are not input fields: "
                         f"{', '.join(known)}.")
    rows = 0
    try:
        with _output_file(output_path) as out:
            writer = csv.writer(out)
            writer.writerow(reserved_cols + output_cols)
            for columns in reader.dataset(batch_size, 1, False):
                outputs = serve(**{k: columns[k] for k in signature_inputs})
                table = [columns[c].numpy() for c in reserved_cols] + [
                    outputs[c].numpy() for c in output_cols]
                for i in range(len(table[0])):
                    writer.writerow([_format(col[i]) for col in table])
                rows += len(table[0])
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError) as e:
        where = reader.locate_error()
        raise DataError(where or f"cannot read {input_path}: {str(e).splitlines()[0]}") from None
    log.info("wrote %d predictions to %s", rows, output_path)
    return rows
