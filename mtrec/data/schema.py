"""The columns every reader yields: dtypes of data_config's input fields, the cells that
count as missing, the bad-row counter key, and what a valid classification label is.

CSV and Parquet readers both build on this, and training checks labels with it.
"""
import tensorflow as tf

from mtrec.protos import data_pb2

_DTYPES = {
    data_pb2.DatasetConfig.INT32: tf.int32,
    data_pb2.DatasetConfig.INT64: tf.int64,
    data_pb2.DatasetConfig.STRING: tf.string,
    data_pb2.DatasetConfig.FLOAT: tf.float32,
    data_pb2.DatasetConfig.DOUBLE: tf.float64,
    data_pb2.DatasetConfig.BOOL: tf.bool,
}
MISSING_VALUES = ("", "NULL")
# With ignore_error, each batch also carries the number of rows it dropped under this key.
BAD_ROWS_KEY = "__bad_rows__"


def field_dtype(field) -> tf.DType:
    return _DTYPES[field.input_type]


def label_problem(value: float, num_classes: int) -> str | None:
    """Why a classification label value is invalid (None if it is a class id)."""
    if value == int(value) and 0 <= value < num_classes:
        return None
    allowed = "0 or 1" if num_classes == 2 else f"an integer in [0, {num_classes - 1}]"
    return f"label {value:g} is not a class: the tower expects {allowed}"


def check_labels(columns: dict, label_classes: dict, drop: bool):
    """Classification labels must be class ids (0/1 for a binary tower): drop and count the
    other rows (ignore_error), or fail the batch so the caller can name the row.

    label_classes: {label column: number of classes}. Returns (columns, rows dropped)."""
    if not label_classes:
        return columns, tf.constant(0, tf.int64)
    ok = None
    for name, n in label_classes.items():
        value = tf.cast(columns[name], tf.float64)
        valid = (value >= 0) & (value < n) & tf.equal(value, tf.round(value))
        ok = valid if ok is None else ok & valid
    if drop:
        return ({k: tf.boolean_mask(v, ok) for k, v in columns.items()},
                tf.reduce_sum(tf.cast(~ok, tf.int64)))
    names = ", ".join(f"{k!r} (classes 0..{n - 1})" for k, n in label_classes.items())
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.reduce_all(ok), True, message=f"a label outside its classes in {names}")]):
        return {k: tf.identity(v) for k, v in columns.items()}, tf.constant(0, tf.int64)
