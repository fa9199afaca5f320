"""The benchmarks' generated configs stay valid as the schema evolves, and their report
helpers compute what they claim (parse, validate and tabulate only: no training, no data)."""
import os
import sys

import pytest

from mtrec import config as config_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "bench"))
import mmoe_synthetic  # noqa: E402
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


def test_each_part_runs_first_in_one_run_of_as_many():
    parts = ["limit", "limit_csv", "mtrec", "peers"]
    orders = [speed.rotated(parts, run) for run in range(6)]
    assert [order[0] for order in orders[:4]] == parts
    assert all(sorted(order) == sorted(parts) for order in orders)
    assert orders[4] == orders[0] and orders[1] == ["limit_csv", "mtrec", "peers", "limit"]
    assert speed.rotated([], 3) == []


def test_peers_run_on_the_workload_files_with_the_given_options(tmp_path, monkeypatch):
    args = speed.argparse.Namespace(work_dir=str(tmp_path), data="/d", peer_python_tf="tf",
                                    peer_python_torch="torch")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = cmd[cmd.index("--out") + 1]
        with open(out, "w", encoding="utf-8") as f:
            speed.json.dump([{"library": "deepctr", "model": "mmoe"}], f)

    monkeypatch.setattr(speed.subprocess, "run", fake_run)
    records = speed.run_peers(args, "large", "--models", "mmoe", "--nrows", "200000")
    assert records == [{"library": "deepctr", "model": "mmoe", "part": "peer"}]
    (cmd,) = calls
    assert cmd[cmd.index("--train") + 1] == "/d/train.csv"
    assert cmd[cmd.index("--test") + 1] == "/d/test.csv"
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "peers_large.json")
    assert cmd[-4:] == ["--models", "mmoe", "--nrows", "200000"]


def _optimizer_rate(pipeline):
    adam = pipeline.train_config.optimizer_config[0].adam_optimizer
    return adam.learning_rate.exponential_decay_learning_rate.initial_learning_rate


def test_synthetic_sweep_configs_take_a_rate_per_model(tmp_path):
    args = mmoe_synthetic.parse_args(["--work_dir", str(tmp_path), "--learning_rate", "0.003",
                                      "--model_learning_rates", "MMoE=0.01"])
    rates = {}
    for model in ("SharedBottom", "MMoE", "PLE"):
        path = tmp_path / f"{model}.config"
        mmoe_synthetic.write_config(str(path), args, model, 0.5, 0, "/d/train.csv",
                                    "/d/test.csv", str(tmp_path / model))
        pipeline = config_lib.load(str(path)).pipeline
        assert pipeline.model_config.model_class == model
        assert len(pipeline.feature_config.features) == mmoe_synthetic.DIM
        rates[model] = _optimizer_rate(pipeline)
    assert rates == pytest.approx({"SharedBottom": 0.003, "MMoE": 0.01, "PLE": 0.003})


@pytest.mark.parametrize("bad", ["Foo=0.1", "MMoE:0.1", "MMoE=fast"])
def test_synthetic_sweep_rejects_a_bad_rate_list(bad, tmp_path, capsys):
    with pytest.raises(SystemExit):
        mmoe_synthetic.parse_args(["--work_dir", str(tmp_path), "--model_learning_rates", bad])
    assert "--model_learning_rates" in capsys.readouterr().err


def test_synthetic_sweep_reads_the_last_training_loss(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("16:01 INFO step 1800/2000 | loss y1=0.16 y2=0.08 total=0.24529 | 9 ex/s\n"
                   "16:01 INFO step 2000/2000 | loss y1=0.15 y2=0.07 total=0.22667 | 9 ex/s\n"
                   "16:02 INFO eval at step 2000 on 5000 rows: mean_squared_error_y1=0.15\n")
    assert mmoe_synthetic.last_train_loss(str(log)) == pytest.approx(0.22667)
    log.write_text("16:02 INFO eval at step 2000 on 5000 rows\n")
    assert mmoe_synthetic.last_train_loss(str(log)) is None


def test_synthetic_widening_table_pairs_the_gaps_by_seed():
    # (model, p, seed) -> test MSE; the training loss is missing (an older results file)
    mse = {("SharedBottom", 0.5, 0): 1.0, ("SharedBottom", 1.0, 0): 0.8,
           ("MMoE", 0.5, 0): 0.5, ("MMoE", 1.0, 0): 0.6,
           ("SharedBottom", 0.5, 1): 0.9, ("SharedBottom", 1.0, 1): 0.9,
           ("MMoE", 0.5, 1): 0.7, ("MMoE", 1.0, 1): 0.6}
    results = [{"model": m, "p": p, "seed": s, "mse_sum": v, "train_loss": None}
               for (m, p, s), v in mse.items()]
    rows = mmoe_synthetic.widening_table(results, [0.5, 1.0], ["SharedBottom", "MMoE"])
    rows = rows.splitlines()[2:]
    # gaps: seed 0 -0.5 at p 0.5, -0.2 at p 1 -> -0.3; seed 1 -0.2, -0.3 -> +0.1
    # one-sided sign test, 1 of 2 wider: P(at least 1 head in 2 flips) = 3/4
    assert rows == ["| MMoE | 0.5 | test MSE | -0.1000 ± 0.2000 | -0.1000 | 1/2 (P = 0.75) |"]


def test_synthetic_sign_test_p_is_the_binomial_tail():
    assert mmoe_synthetic.sign_test_p(0, 5) == 1.0
    assert mmoe_synthetic.sign_test_p(5, 5) == 1 / 32
    assert mmoe_synthetic.sign_test_p(4, 5) == 6 / 32  # C(5,4) + C(5,5) = 6
    # the confirmatory sweep's pre-set bar: 54 of 90 is the smallest count with P < 0.05
    assert mmoe_synthetic.sign_test_p(54, 90) < 0.05 <= mmoe_synthetic.sign_test_p(53, 90)
