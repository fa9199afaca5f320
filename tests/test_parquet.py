"""ParquetInput: the same batches as CSV, nulls take default_val, training runs on it."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import fast_overrides, sample_config
from mtrec import config as config_lib
from mtrec.data.reader import make_reader
from mtrec.errors import DataError

COLUMNS = ("clk,buy,pid,adgroup_id,cate_id,campaign_id,customer,brand,user_id,cms_segid,"
           "cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
           "new_user_class_level,tag_category_list,tag_brand_list,price").split(",")


def to_parquet(csv_path, parquet_path):
    frame = pd.read_csv(csv_path, header=None, names=COLUMNS, dtype=str, keep_default_na=False)
    for name in ("clk", "buy", "price"):
        frame[name] = frame[name].astype("int32")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet_path,
                   row_group_size=500)
    return frame


def test_parquet_reader_matches_csv_reader(small_taobao, tmp_path):
    train_path, _ = small_taobao
    parquet_path = str(tmp_path / "train.parquet")
    to_parquet(train_path, parquet_path)
    loaded = config_lib.load(sample_config("mmoe_on_taobao.config"))
    data = loaded.pipeline.data_config
    csv_batches = list(make_reader(data, [train_path]).dataset(300, 1, False))
    data.input_type = data.ParquetInput
    parquet_batches = list(make_reader(data, [parquet_path]).dataset(300, 1, False))
    assert len(csv_batches) == len(parquet_batches) == 7
    for a, b in zip(csv_batches, parquet_batches):
        for name in COLUMNS:
            assert a[name].dtype == b[name].dtype
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy(), err_msg=name)


def test_parquet_nulls_take_defaults_and_missing_column_is_named(tmp_path):
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"a": pa.array([1, None], pa.int64()),
                             "s": pa.array(["x", None])}), path)
    pipeline = config_lib.parse_text("""
      data_config { input_type: ParquetInput
        input_fields { input_name: "a" input_type: INT64 default_val: "7" }
        input_fields { input_name: "s" input_type: STRING default_val: "none" } }""")
    batch = next(iter(make_reader(pipeline.data_config, [path]).dataset(8, 1, False)))
    assert batch["a"].numpy().tolist() == [1, 7]
    assert batch["s"].numpy().tolist() == [b"x", b"none"]
    pipeline.data_config.input_fields.add(input_name="zzz")
    with pytest.raises(DataError, match=r"x.parquet: no column 'zzz'"):
        make_reader(pipeline.data_config, [path])


@pytest.mark.slow
def test_training_on_parquet(small_taobao, tmp_path):
    import mtrec
    train_path, test_path = small_taobao
    train_pq, test_pq = str(tmp_path / "train.parquet"), str(tmp_path / "test.parquet")
    to_parquet(train_path, train_pq)
    to_parquet(test_path, test_pq)
    sets = fast_overrides(train_pq, test_pq, steps=10) + ["data_config.input_type=ParquetInput",
                                                         "export_config.exporter_type=latest"]
    result = mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=str(tmp_path / "m"),
                         sets=sets)
    assert result["global_step"] == 10 and result["num_examples"] == 400


def test_parquet_training_keeps_freed_heap_before_the_model_is_built(small_taobao, tmp_path,
                                                                     monkeypatch):
    """glibc's M_TOP_PAD is raised to hold a record block's arrays (~64 bytes a cell, 64 MiB
    to 1 GiB) before TensorFlow starts its threads (set later, it had no effect); CSV input
    leaves it alone."""
    import ctypes
    import types

    import mtrec
    from mtrec.data import parquet
    from mtrec.training.job import Job
    events = []

    class Libc:
        def mallopt(self, option, value):
            events.append(("mallopt", option, value.value))
            return 1

    monkeypatch.setattr(parquet, "ctypes", types.SimpleNamespace(
        CDLL=lambda name: Libc(), c_int=ctypes.c_int))
    create = Job.create.__func__
    monkeypatch.setattr(Job, "create", classmethod(
        lambda cls, *args, **kwargs: events.append(("model",)) or create(cls, *args, **kwargs)))
    train_path, test_path = small_taobao
    train_pq = str(tmp_path / "train.parquet")
    to_parquet(train_path, train_pq)
    base = fast_overrides(train_pq, train_pq, steps=2) + ["eval_input_path=",
                                                         "export_config.exporter_type=latest"]
    for shuffle_rows, pad in ((100, 64 << 20), (600_000, 600_000 * 20 * 64),
                              (2_000_000, 1 << 30)):
        events.clear()
        mtrec.train(sample_config("mmoe_on_taobao.config"),
                    model_dir=str(tmp_path / f"m{shuffle_rows}"),
                    sets=base + ["data_config.input_type=ParquetInput",
                                 f"data_config.shuffle_buffer_size={shuffle_rows}"])
        assert events[:2] == [("mallopt", -2, pad), ("model",)], shuffle_rows
    events.clear()
    mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=str(tmp_path / "csv"),
                sets=fast_overrides(train_path, test_path, steps=2) + [
                    "eval_input_path=", "export_config.exporter_type=latest"])
    assert events[0] == ("model",) and ("mallopt", -2, 64 << 20) not in events
