"""EasyRec config surface (issue #22): options mtrec now runs (adam_async_optimizer,
momentumw_optimizer, freeze_gradient, dead_line, enable_oss_stop_signal, parquet_*_input,
chief_redundant, a oneof given twice) and the one clear error of those it does not."""
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS, TINY_MMOE, edit
from mtrec.config import loader
from mtrec.errors import ConfigError
from mtrec.protos import data_pb2, optimizer_pb2, train_pb2
from mtrec.training.optimizers import SparseOptimizer, build_dense_optimizer, trained

CONFIG = TINY_INPUTS + TINY_MMOE


def _load(tmp_path, text, name="x.config"):
    path = tmp_path / name
    path.write_text(text)
    return loader.load(str(path))


def _error(tmp_path, text) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(tmp_path / "x.config"), str(info.value)


def _line(text, needle) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# -- one clear error per unsupported EasyRec option ----------------------------------

@pytest.mark.parametrize("block, needle, expected", [
    ("model_config {\n  model_class: 'DSSM'\n  dssm { }\n}\n", "dssm {",
     "dssm: DSSM is a retrieval (match) model: mtrec trains ranking and multi-task models"),
    ("model_config {\n  mind { }\n}\n", "mind {", "MIND is a retrieval (match) model"),
    ("model_config {\n  metric_learning { }\n}\n", "metric_learning {",
     "CoMetricLearningI2I is a retrieval (match) model"),
    ("kafka_train_input { server: 'k:9092' }\n", "kafka_train_input",
     "kafka_train_input: Kafka input is streaming"),
    ("fg_json_path: 'fg.json'\n", "fg_json_path", "fg_json_path: RTP feature generation "
     "(FG) JSON is cloud-only"),
])
def test_unsupported_easyrec_blocks_give_one_error_with_file_and_line(tmp_path, block,
                                                                      needle, expected):
    text = block + TINY_INPUTS
    path, message = _error(tmp_path, text)
    assert message.startswith(f"{path}:{_line(text, needle)}:")
    assert expected in message
    assert "\n" not in message  # one error


def test_negative_sampler_names_the_retrieval_model(tmp_path):
    text = edit("  batch_size: 4\n", "  batch_size: 4\n  negative_sampler {\n"
                "    input_path: 'items'\n  }\n", TINY_INPUTS) + (
        "model_config {\n  model_name: 'DSSM'\n  model_class: 'MatchModel'\n}\n")
    path, message = _error(tmp_path, text)
    assert message == (
        f"{path}:{_line(text, 'negative_sampler')}:3: negative_sampler: the negative "
        "sampler of the retrieval model DSSM: mtrec trains ranking and multi-task models; "
        "retrieval (match) models and their negative samplers are not supported.")


@pytest.mark.parametrize("old, new, expected", [
    ('input_name: "user" input_type: STRING }',
     'input_name: "user" input_type: STRING user_define_fn: "f" }',
     "user_define_fn: user_define_fn names Python code"),
    ("  batch_size: 4\n", "  batch_size: 4\n  input_type: RTPInput\n",
     "RTPInput (RTP feature-generation rows) is cloud-only"),
    ("  num_steps: 10\n", "  num_steps: 10\n  train_distribute: EmbeddingParallelStrategy\n",
     "EmbeddingParallelStrategy (EasyRec's embedding parallelism through NVIDIA's "
     "SparseOperationKit, GPU-only) is not supported; use MirroredStrategy"),
])
def test_unsupported_easyrec_values_and_fields(tmp_path, old, new, expected):
    text = edit(old, new, CONFIG)
    path, message = _error(tmp_path, text)
    needle = next(w for w in ("user_define_fn", "RTPInput", "EmbeddingParallel") if w in new)
    assert message.startswith(f"{path}:{_line(text, needle)}:")
    assert expected in message


@pytest.mark.parametrize("old, new, field, expected", [
    ("  num_steps: 10\n", "  num_steps: 10\n  dead_line: '2022-05-08'\n", "dead_line",
     "dead_line '2022-05-08' is not a time: write \"YYYYmmdd HH:MM:SS\""),
    ("  num_steps: 10\n", "  num_steps: 10\n  freeze_gradient: 'user['\n", "freeze_gradient",
     "freeze_gradient 'user[' is not a regular expression"),
    ("  num_steps: 10\n", "  num_steps: 10\n  inter_op_parallelism_threads: -1\n",
     "inter_op_parallelism_threads", "inter_op_parallelism_threads must be 0 (the default "
     "choice) or a number of threads, got -1."),
    ("  num_steps: 10\n", "  num_steps: 10\n  intra_op_parallelism_threads: -2\n",
     "intra_op_parallelism_threads", "intra_op_parallelism_threads must be 0"),
    ("  batch_size: 4\n", "  batch_size: 4\n", None, None),
])
def test_train_config_stop_and_freeze_checks(tmp_path, old, new, field, expected):
    text = edit(old, new, CONFIG)
    if field is None:
        _load(tmp_path, text)
        return
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, field)}: {expected}" in message


def test_eval_online_and_early_stop_func_are_one_error_each(tmp_path):
    text = edit("  num_steps: 10\n", "  num_steps: 10\n  train_distribute: PSStrategy\n",
                CONFIG) + "eval_config {\n  eval_online: true\n}\n"
    path, message = _error(tmp_path, text)
    assert message.endswith(f"1 problem:\n  {path}:{_line(text, 'eval_online')}: "
                            "eval_config.eval_online (metrics of the training batches) runs "
                            "in one process: train_distribute PSStrategy is not supported "
                            "with it; use NoStrategy or MirroredStrategy, or remove "
                            "eval_online (eval_input_path is still evaluated after every "
                            "checkpoint).")
    text = CONFIG + ("export_config {\n  early_stop_func: 'my.stop'\n"
                     "  early_stop_params: '{}'\n}\n")
    path, message = _error(tmp_path, text)
    assert "1 problem:" in message
    assert (f"{path}:{_line(text, 'early_stop_func')}: export_config.early_stop_func names "
            "Python code ('my.stop'; EasyRec has no built-in one)") in message


def test_chief_redundant_is_a_warning(tmp_path):
    text = edit("  batch_size: 4\n", "  batch_size: 4\n  chief_redundant: true\n", CONFIG)
    warnings = _load(tmp_path, text).warnings
    assert [w for w in warnings if "chief_redundant" in w] == [
        f"{tmp_path / 'x.config'}:{_line(text, 'chief_redundant')}: chief_redundant is "
        "ignored: it only matters for EasyRec's parameter-server jobs; every worker of "
        "mtrec's strategies trains."]


# -- accepted as EasyRec accepts them -------------------------------------------------

def test_a_second_oneof_member_wins_with_a_warning_as_in_easyrec(tmp_path, caplog):
    text = CONFIG + ("eval_config {\n  metrics_set {\n    auc {}\n"
                     "    gauc { uid_field: 'user' }\n  }\n}\n")
    with caplog.at_level(logging.WARNING, logger="mtrec"):
        pipeline = _load(tmp_path, text).pipeline
    metrics = pipeline.eval_config.metrics_set
    assert len(metrics) == 1 and metrics[0].WhichOneof("metric") == "gauc"
    assert metrics[0].gauc.uid_field == "user"
    assert (f"x.config:{_line(text, 'gauc')}: auc and gauc are both in one metrics_set (a "
            "oneof): only the last, gauc, counts") in caplog.text


def test_parquet_inputs_are_the_input_paths(tmp_path):
    parquet = edit("  batch_size: 4\n", "  batch_size: 4\n  input_type: ParquetInputV2\n",
                   CONFIG)
    text = "parquet_train_input: 'a.parquet'\nparquet_eval_input: 'b.parquet'\n" + parquet
    pipeline = _load(tmp_path, text).pipeline
    assert (pipeline.train_input_path, pipeline.eval_input_path) == ("a.parquet", "b.parquet")
    assert not pipeline.HasField("parquet_train_input")
    assert pipeline.data_config.input_type == data_pb2.DatasetConfig.ParquetInput
    path, message = _error(tmp_path, "parquet_train_input: 'a'\n" + CONFIG)
    assert message == (f"{path}:1: parquet_train_input names Parquet files: set data_config "
                       "input_type: ParquetInput (EasyRec's ParquetInputV2).")
    path, message = _error(tmp_path, "train_input_path: 'b'\nparquet_train_input: 'a'\n"
                           + parquet)
    assert message == (f"{path}:2: parquet_train_input and train_input_path both name the "
                       "train files; keep one.")


# -- optimizers ------------------------------------------------------------------------

def _optimizer(kind, lr, **fields):
    config = optimizer_pb2.Optimizer()
    params = getattr(config, kind)
    params.learning_rate.constant_learning_rate.learning_rate = lr
    for name, value in fields.items():
        setattr(params, name, value)
    return config


def _sparse_steps(config, init, ids, steps):
    table = tf.Variable(init)
    optimizer = SparseOptimizer(config)
    optimizer.build([table])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids)))
        optimizer.apply([(tape.gradient(loss, table), table)])
    optimizer.flush([table])
    return table.numpy()


def test_adam_async_optimizer_trains_as_adam():
    init = np.arange(8, dtype="float32").reshape(4, 2) / 10
    ids = tf.constant([0, 2], tf.int64)
    adam = _sparse_steps(_optimizer("adam_optimizer", 0.1, beta1=0.8), init, ids, 3)
    async_ = _sparse_steps(_optimizer("adam_async_optimizer", 0.1, beta1=0.8), init, ids, 3)
    np.testing.assert_array_equal(adam, async_)
    assert not np.allclose(adam, init)
    dense = build_dense_optimizer(_optimizer("adam_async_optimizer", 0.1, beta1=0.8))
    assert type(dense).__name__ == "Adam" and dense.beta_1 == pytest.approx(0.8)


def _momentumw_numpy(w, lr, wd, momentum, steps):
    """Keras' SGD with weight_decay, for loss sum(w^2): decay, then the momentum step."""
    w, velocity = w.astype("float64"), np.zeros_like(w, dtype="float64")
    for _ in range(steps):
        grad = 2 * w
        w = w - lr * wd * w
        velocity = momentum * velocity - lr * grad
        w = w + velocity
    return w


def test_momentumw_optimizer_dense_and_sparse_match_the_formula():
    init = np.array([[1.0, -2.0], [0.5, 3.0], [4.0, 1.0]], "float32")
    config = _optimizer("momentumw_optimizer", 0.05, weight_decay=0.2,
                        momentum_optimizer_value=0.5)
    expected = _momentumw_numpy(init, 0.05, 0.2, 0.5, 3)
    sparse = _sparse_steps(config, init, tf.constant([0, 1, 2], tf.int64), 3)
    np.testing.assert_allclose(sparse, expected, rtol=1e-5)
    variable = tf.Variable(init)
    dense = build_dense_optimizer(config)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(variable))
        dense.apply_gradients([(tape.gradient(loss, variable), variable)])
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)
    # Without decay it is momentum_optimizer's update: the decay changed the result.
    assert not np.allclose(expected, _momentumw_numpy(init, 0.05, 0.0, 0.5, 3))


def test_freeze_gradient_leaves_out_matching_variables(caplog):
    import keras
    tables = [tf.Variable(tf.zeros([2, 2]), name="MMoE/feature_groups/user"),
              tf.Variable(tf.zeros([2, 2]), name="MMoE/feature_groups/price")]
    layer = keras.layers.Dense(1, name="logits")
    layer.build((None, 2))
    train = train_pb2.TrainConfig(freeze_gradient=["feature_groups/user", "logits/bias",
                                                   "no_such"])
    with caplog.at_level(logging.WARNING, logger="mtrec"):
        kept_tables, kept_dense = trained(tables, layer.trainable_variables, train)
    assert [v.name for v in kept_tables] == ["MMoE/feature_groups/price:0"]
    assert [v.path for v in kept_dense] == ["logits/kernel"]
    assert "freeze_gradient 'no_such' matches no variable" in caplog.text
    everything = trained(tables, layer.trainable_variables, train_pb2.TrainConfig())
    assert [len(part) for part in everything] == [2, 2]


# -- stopping: dead_line and the stop signal (and freeze_gradient end to end) -------------

class _OneProcess:
    collective = False


def test_stop_signal_and_dead_line_decide_when_to_stop(tmp_path, monkeypatch):
    from mtrec.training import loop
    signal = tmp_path / "OSS_STOP_SIGNAL"
    train = train_pb2.TrainConfig(enable_oss_stop_signal=True)
    stop = loop._StopSignal(train, _OneProcess(), str(tmp_path))
    assert not stop.stop(1)
    signal.touch()
    assert not stop.stop(2)  # looked less than EVERY_SECS ago
    monkeypatch.setattr(loop._StopSignal, "EVERY_SECS", 0)
    assert stop.stop(3)
    now = 1_700_000_000.0
    monkeypatch.setattr(loop.time, "time", lambda: now)
    for dead_line, expected in ((str(int(now) + 5), False), (str(int(now) - 5), True)):
        stop = loop._StopSignal(train_pb2.TrainConfig(dead_line=dead_line), _OneProcess(),
                                str(tmp_path / "none"))
        assert stop.stop(1) == expected, dead_line
    local = loop._StopSignal(train_pb2.TrainConfig(dead_line="20231114 22:13:20"),
                             _OneProcess(), str(tmp_path))
    import datetime
    assert local.dead_line == datetime.datetime(2023, 11, 14, 22, 13, 20).timestamp()


def _write_rows(path, n=64):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"{rng.integers(2)},{rng.integers(2)},u{i % 7},{rng.integers(50)}\n")


@pytest.mark.slow
def test_dead_line_stops_training_and_freeze_gradient_keeps_a_table(tmp_path):
    from mtrec.training import loop
    data = str(tmp_path / "train.csv")
    _write_rows(data)
    text = edit("  num_steps: 10\n", "  num_steps: 200\n  save_checkpoints_steps: 100\n"
                "  dead_line: '20200101 00:00:00'\n  freeze_gradient: 'feature_groups/user'\n",
                CONFIG)
    path = tmp_path / "x.config"
    path.write_text(f"train_input_path: '{data}'\n" + text)
    model_dir = str(tmp_path / "model")
    loop.train(loader.load(str(path), model_dir=model_dir))  # (no export: not needed here)
    # The dead line had passed: one step, then the final checkpoint.
    checkpoint = tf.train.latest_checkpoint(model_dir)
    assert checkpoint.endswith("ckpt-1")
    reader = tf.train.load_checkpoint(checkpoint)
    slot = "sparse_optimizer/slot_variables/{}/m/.ATTRIBUTES/VARIABLE_VALUE"
    # Tables in name order: price (0) was trained, user (1) frozen: Adam never touched it.
    assert np.any(reader.get_tensor(slot.format(0)) != 0)
    assert not np.any(reader.get_tensor(slot.format(1)))
