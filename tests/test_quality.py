"""Regression guard (not a timing test): the sample configs, trained as shipped with a
fixed seed, reach the AUCs measured with train_config.seed 1 (docs/benchmarks.md, "Every
sample config on the generated Taobao-schema data") within a tolerance.
A change that breaks learning (features, losses, optimizers, batch norm) fails here."""
import pytest

from conftest import DATA, sample_config

# (config, {metric: value measured with train_config.seed=1}); tolerance 0.02. Measured
# 2026-11-23 with adam_optimizer's dense moments and 10,000 AUC thresholds (both defaults
# since commit 33fcfac).
PINNED = [
    ("mmoe_on_taobao.config", {"auc_ctr": 0.7106, "auc_cvr": 0.7453}),
    ("esmm_on_taobao.config", {"auc_ctr": 0.7034, "auc_ctcvr": 0.7251}),
    ("mmoe_deepfm_on_taobao.config", {"auc_ctr": 0.7166, "auc_cvr": 0.7451}),
    ("ple_on_taobao.config", {"auc_ctr": 0.7193, "auc_cvr": 0.7627}),
    ("dbmtl_on_taobao.config", {"auc_ctr": 0.7224, "auc_cvr": 0.7636}),
    ("dbmtl_mmoe_on_taobao.config", {"auc_ctr": 0.7160, "auc_cvr": 0.7438}),
    ("aitm_on_taobao.config", {"auc_ctr": 0.7172, "auc_cvr": 0.7496}),
    ("shared_bottom_on_taobao.config", {"auc_ctr": 0.7136, "auc_cvr": 0.7495}),
    ("simple_multi_task_on_taobao.config", {"auc_ctr": 0.7139, "auc_cvr": 0.7640}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, pinned", PINNED)
def test_sample_config_reaches_pinned_auc(name, pinned, tmp_path):
    import mtrec
    sets = [f"train_input_path={DATA}/taobao_train_data",
            f"eval_input_path={DATA}/taobao_test_data", "train_config.seed=1"]
    result = mtrec.train(sample_config(name), model_dir=str(tmp_path / "m"), sets=sets)
    assert result["global_step"] == 160
    for metric, value in pinned.items():
        assert result[metric] == pytest.approx(value, abs=0.02), metric
