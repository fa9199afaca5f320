"""Score a file with an exported SavedModel, batch by batch (memory stays flat).

The input rows have the format of the training data (the data_config saved in the
SavedModel's assets/pipeline.config); label columns may be absent from the
signature but are read as columns.
"""
import csv
import logging
import os

import numpy as np
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.data.reader import expand_paths, make_reader
from mtrec.errors import DataError, MtrecError

log = logging.getLogger("mtrec")


def _format(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return "|".join(_format(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def predict(saved_model: str, input_path: str, output_path: str, reserved_cols=None,
            output_cols=None, batch_size: int = 1024) -> int:
    """Write reserved_cols + output_cols of every row to output_path; return the row count."""
    config_path = os.path.join(saved_model, "assets", "pipeline.config")
    if not os.path.isfile(config_path):
        raise MtrecError(f"{saved_model} is not an mtrec SavedModel (no assets/pipeline.config).")
    with open(config_path, encoding="utf-8") as f:
        pipeline = config_lib.parse_text(f.read(), config_path)
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    signature_inputs = serve.structured_input_signature[1]
    names = sorted(serve.structured_outputs)
    output_cols = list(output_cols or names)
    unknown = [c for c in output_cols if c not in names]
    if unknown:
        raise MtrecError(f"--output_cols {', '.join(unknown)} not among the model outputs: "
                         f"{', '.join(names)}.")
    files = expand_paths(input_path, "--input")
    reader = make_reader(pipeline.data_config, files)
    reserved_cols = list(reserved_cols or [])
    known = [f.input_name for f in pipeline.data_config.input_fields]
    missing = [c for c in reserved_cols if c not in known]
    if missing:
        raise MtrecError(f"--reserved_cols {', '.join(missing)} are not input fields: "
                         f"{', '.join(known)}.")
    rows = 0
    tmp = output_path + ".tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(reserved_cols + output_cols)
            for columns in reader.dataset(batch_size, 1, False):
                outputs = serve(**{k: columns[k] for k in signature_inputs})
                table = [columns[c].numpy() for c in reserved_cols] + [
                    outputs[c].numpy() for c in output_cols]
                for i in range(len(table[0])):
                    writer.writerow([_format(col[i]) for col in table])
                rows += len(table[0])
        os.replace(tmp, output_path)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        where = reader.locate_error()
        raise DataError(where or f"cannot read {input_path}: {str(e).splitlines()[0]}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("wrote %d predictions to %s", rows, output_path)
    return rows
