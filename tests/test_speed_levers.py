"""Issue #18's speed changes to input code: Parquet STRING fields are read with Arrow's
kernels (mtrec/data/parquet.py) and keep the per-value rules: null and "NULL" take
default_val, "" stays "", non-ASCII text and numbers read as text keep their value."""
import pyarrow as pa
import pyarrow.parquet as pq

from mtrec import config as config_lib
from mtrec.data.reader import make_reader


def test_parquet_string_fields_missing_and_text(tmp_path):
    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({
        "s": pa.array(["x", None, "NULL", "", "é", "12"]),
        "n": pa.array([5, None, 7, 8, None, 10], pa.int64()),  # numbers read as text
    }), path)
    pipeline = config_lib.parse_text("""
      data_config { input_type: ParquetInput
        input_fields { input_name: "s" input_type: STRING default_val: "dflt" }
        input_fields { input_name: "n" input_type: STRING default_val: "-1" } }""")
    batch = next(iter(make_reader(pipeline.data_config, [path]).dataset(8, 1, False)))
    assert [v.decode() for v in batch["s"].numpy()] == ["x", "dflt", "dflt", "", "é", "12"]
    assert batch["n"].numpy().tolist() == [b"5", b"-1", b"7", b"8", b"-1", b"10"]
