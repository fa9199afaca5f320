"""Shared fixtures: sample configs and small data, fast settings for tests."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples", "model_config")
DATA = os.path.join(ROOT, "samples", "data")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

# TensorFlow start-up noise is not useful in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def sample_config(name: str) -> str:
    return os.path.join(SAMPLES, name)


@pytest.fixture(scope="session")
def small_taobao(tmp_path_factory):
    """(train_path, test_path) of a small Taobao-schema data set (2000 / 400 rows)."""
    import make_sample_data
    out = tmp_path_factory.mktemp("taobao")
    return make_sample_data.write_taobao(str(out), 2000, 400, 7)


@pytest.fixture(scope="session")
def small_multidomain(tmp_path_factory):
    """(train_path, test_path) of a small multi-domain data set (2000 / 400 rows)."""
    import make_sample_data
    out = tmp_path_factory.mktemp("multidomain")
    return make_sample_data.write_multidomain(str(out), 2000, 400, 7)


def fast_overrides(train_path, test_path, steps=20):
    """--set overrides that make a sample config train in seconds."""
    return [f"train_input_path={train_path}", f"eval_input_path={test_path}",
            f"train_config.num_steps={steps}", "train_config.save_checkpoints_steps=10",
            "train_config.log_step_count_steps=10", "data_config.batch_size=128",
            "data_config.eval_batch_size=256"]


def exact_auc(labels, scores):
    """Rank AUC (ties share their average rank), computed without mtrec or Keras, to check
    the reported metrics against; None without both classes."""
    import numpy as np
    labels, scores = np.asarray(labels) > 0, np.asarray(scores, dtype=float)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# Train, data and feature blocks of the tiny configs unit tests build (a user id and a
# price, labels clk and buy); tests append a model_config.
TINY_INPUTS = """\
train_config {
  optimizer_config {
    adam_optimizer {
      learning_rate {
        constant_learning_rate { learning_rate: 0.01 }
      }
    }
  }
  num_steps: 10
}
data_config {
  batch_size: 4
  label_fields: "clk"
  label_fields: "buy"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "buy" input_type: INT32 }
  input_fields { input_name: "user" input_type: STRING }
  input_fields { input_name: "price" input_type: INT32 }
}
feature_config {
  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }
  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }
}
"""


# A two-expert MMoE over TINY_INPUTS' user and price, towers ctr (clk) and cvr (buy).
TINY_MMOE = """
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: ["user", "price"] wide_deep: DEEP }
  mmoe {
    expert_dnn { hidden_units: [8] use_bn: false }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
  }
}
"""


def edit(old: str, new: str, text: str) -> str:
    """Replace the single occurrence of `old` in a config text."""
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


# TINY_INPUTS plus a scenario column `dom` (ids 0..2) for multi-scenario models, and two
# towers to put in their model block.
DOMAIN_INPUTS = edit(
    '  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n',
    '  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n'
    '  features { input_names: "dom" num_buckets: 3 embedding_dim: 4 }\n',
    edit('  input_fields { input_name: "price" input_type: INT32 }\n',
         '  input_fields { input_name: "price" input_type: INT32 }\n'
         '  input_fields { input_name: "dom" input_type: INT32 }\n', TINY_INPUTS))
DOMAIN_TOWERS = """\
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [8] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [8] use_bn: false } }
    l2_regularization: 0.0
"""
