"""Read Parquet files (the `parquet` extra: pyarrow) into the same batches as CsvReader.

Files are streamed in record batches of about shuffle_buffer_size rows, so memory does
not grow with file size; nulls take the field's default_val.
"""
import numpy as np
import tensorflow as tf

from mtrec.data.schema import field_dtype
from mtrec.errors import DataError, MtrecError


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MtrecError("ParquetInput needs pyarrow: pip install 'mtrec[parquet]'.") from None
    return pq


class ParquetReader:
    """Builds the tf.data pipeline of one split from Parquet files."""

    def __init__(self, data_config, files: list[str]):
        pq = _pyarrow()
        self.data_config = data_config
        self.files = files
        self.fields = list(data_config.input_fields)
        for path in files:
            try:
                names = pq.ParquetFile(path).schema_arrow.names
            except Exception as e:  # pyarrow raises several types for a bad file
                raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
            missing = [f.input_name for f in self.fields if f.input_name not in names]
            if missing:
                raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; "
                                f"it has: {', '.join(names)}.")

    def locate_error(self, label_classes=None) -> str | None:
        return None

    def _column(self, array, field) -> np.ndarray:
        dtype = field_dtype(field)
        default = field.default_val
        if dtype == tf.string:
            values = array.cast("string").to_pylist()
            return np.array([default if v is None or v == "NULL" else v for v in values],
                            dtype=object)
        fill = (default.lower() in ("true", "1")) if dtype == tf.bool else float(default or 0)
        values = array.to_numpy(zero_copy_only=False)
        values = np.where(array.is_null().to_numpy(zero_copy_only=False), fill, values)
        return values.astype(dtype.as_numpy_dtype)

    def _batches(self, block_rows: int, shuffle: bool, seed):
        pq = _pyarrow()
        rng = np.random.default_rng(seed)
        names = [f.input_name for f in self.fields]
        files = list(self.files)
        if shuffle:
            rng.shuffle(files)
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=block_rows, columns=names):
                order = rng.permutation(batch.num_rows) if shuffle else None
                columns = {}
                for field in self.fields:
                    values = self._column(batch.column(field.input_name), field)
                    columns[field.input_name] = values[order] if order is not None else values
                yield columns

    def dataset(self, batch_size: int, num_epochs: int | None, shuffle: bool,
                shuffle_buffer_size: int = 0, seed: int | None = None) -> tf.data.Dataset:
        block = max(batch_size, shuffle_buffer_size if shuffle else batch_size)
        signature = {f.input_name: tf.TensorSpec([None], field_dtype(f)) for f in self.fields}
        ds = tf.data.Dataset.from_generator(lambda: self._batches(block, shuffle, seed),
                                            output_signature=signature)
        if num_epochs != 1:
            ds = ds.repeat(num_epochs)
        return ds.rebatch(batch_size)
