"""The speed benchmark's generated configs stay valid as the schema evolves (parse and
validate only: no training, no data)."""
import os
import sys

import pytest

from mtrec import config as config_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "bench"))
import speed  # noqa: E402


@pytest.mark.parametrize("model", ["mmoe", "esmm"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_speed_config_is_valid(model, fmt, tmp_path):
    path = tmp_path / "speed.config"
    path.write_text(speed.mtrec_config(model, "/data", fmt, hash_buckets=100_000,
                                       batch_size=2048), encoding="utf-8")
    loaded = config_lib.load(str(path))
    pipeline = loaded.pipeline
    assert pipeline.train_input_path == f"/data/train.{fmt if fmt == 'csv' else 'parquet'}"
    assert pipeline.data_config.batch_size == 2048
    assert len(pipeline.feature_configs) == speed.NUM_SPARSE + speed.NUM_DENSE
    assert all(f.hash_bucket_size == 100_000 for f in pipeline.feature_configs
               if f.input_names[0].startswith("c"))
    # No evaluation inside the timed training: the benchmark evaluates afterwards.
    assert not pipeline.eval_input_path
    assert pipeline.model_config.model_class == {"mmoe": "MMoE", "esmm": "ESMM"}[model]


def test_steady_rate_skips_warmup_and_short_last_interval():
    lines = [(0.0, "x INFO training"), (10.0, "t INFO step 50/100 | loss | 1 examples/s"),
             (12.0, "t INFO step 100/100 | loss | 1 examples/s"),
             (14.0, "t INFO step 150/100 | loss | 1 examples/s"),
             (14.5, "t INFO step 160/100 | loss | 1 examples/s")]
    # From step 100 (warm-up) to step 150 (the last full interval): 50 steps in 2 s.
    assert speed.steady_rate(lines, batch_size=10, warmup_steps=100) == pytest.approx(250.0)
