"""Layer maths with exact values, shapes and argument errors."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mtrec.layers import DNN, MLP, MMoE, TaskTower
from mtrec.layers.dnn import dnn_args
from mtrec.protos import layers_pb2


def test_dnn_shape_and_exact_value():
    layer = DNN([3, 2], activation="relu", use_bn=False)
    x = tf.constant([[1.0, -2.0, 0.5, 3.0]])
    y = layer(x)
    assert y.shape == (1, 2)
    # Recompute by hand from the layer's own weights.
    h = np.maximum(x.numpy() @ layer.dense_layers[0].kernel.numpy()
                   + layer.dense_layers[0].bias.numpy(), 0)
    h = np.maximum(h @ layer.dense_layers[1].kernel.numpy() + layer.dense_layers[1].bias.numpy(), 0)
    np.testing.assert_allclose(y.numpy(), h, rtol=1e-5, atol=1e-6)


def test_dnn_rejects_an_unknown_initializer_without_touching_the_random_stream():
    with pytest.raises(ValueError, match="unknown kernel initializer 'nope'"):
        DNN([4], kernel_initializer="nope")
    # Building a DNN draws exactly the seeds its Dense layers draw: seeded runs stay the same.
    keras.utils.set_random_seed(3)
    a = DNN([4], name="a")
    a.build((None, 3))
    keras.utils.set_random_seed(3)
    b = keras.layers.Dense(4)
    b.build((None, 3))
    np.testing.assert_array_equal(a.dense_layers[0].kernel.numpy(), b.kernel.numpy())


def test_dnn_accepts_easyrec_activation_names_and_rejects_unknown():
    assert DNN([4], activation="tf.nn.relu").activation == "relu"
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        DNN([4], activation="nope")
    with pytest.raises(ValueError, match="hidden_units must be positive"):
        DNN([4, 0])
    with pytest.raises(ValueError, match="dropout_ratio needs 1 or 2 values"):
        DNN([4, 4], dropout_ratio=[0.1, 0.2, 0.3])


def test_dnn_l2_regularization_adds_losses():
    layer = DNN([3], l2_regularization=0.5, use_bn=False)
    layer(tf.ones([2, 4]))
    kernel = layer.dense_layers[0].kernel.numpy()
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * np.sum(kernel ** 2), rtol=1e-5)


def test_mmoe_output_is_gate_weighted_sum_of_experts():
    layer = MMoE(num_task=2, num_expert=3, expert_units=[4])
    x = tf.random.stateless_normal([5, 6], seed=[1, 2])
    outputs = layer(x)
    assert len(outputs) == 2 and outputs[0].shape == (5, 4)
    experts = np.stack([e(x).numpy() for e in layer.experts], axis=1)  # (5, 3, 4)
    for task, gate in enumerate(layer.gates):
        weights = tf.nn.softmax(gate(x)).numpy()  # (5, 3)
        np.testing.assert_allclose(weights.sum(axis=1), np.ones(5), rtol=1e-6)
        expected = np.einsum("be,bed->bd", weights, experts)
        np.testing.assert_allclose(outputs[task].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mmoe_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_expert >= 1"):
        MMoE(num_task=2, num_expert=0, expert_units=[4])
    with pytest.raises(ValueError, match="expert hidden_units"):
        MMoE(num_task=2, num_expert=2, expert_units=[])


def test_task_tower_logits_shape():
    tower = TaskTower([8], num_class=3)
    assert tower(tf.ones([4, 5])).shape == (4, 3)
    with pytest.raises(ValueError, match="num_class must be at least 1"):
        TaskTower([8], num_class=0)


def test_mmoe_weights_save_and_load_round_trip(tmp_path):
    inputs = keras.Input((6,))
    outputs = MMoE(num_task=2, num_expert=2, expert_units=[4], name="mmoe")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    before = [o.numpy() if hasattr(o, "numpy") else o for o in model(x)]
    path = str(tmp_path / "mmoe.weights.h5")
    model.save_weights(path)
    clone_out = MMoE(num_task=2, num_expert=2, expert_units=[4], name="mmoe")(inputs)
    clone = keras.Model(inputs, clone_out)
    clone.load_weights(path)
    after = clone(x)
    for a, b in zip(before, after):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_debiased_batch_norm_serves_the_statistics_it_trained_with():
    from mtrec.layers.dnn import DebiasedBatchNormalization
    layer = DebiasedBatchNormalization()
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 0.1, size=(256, 2)).astype("float32") for _ in range(5)]
    for batch in batches:
        layer(batch, training=True)
    # After only 5 updates the plain moving averages are ~95% their start (0 / 1); the
    # debiased ones are the exponentially weighted batch statistics.
    weights = 0.99 ** np.arange(4, -1, -1) * 0.01
    mean = sum(w * b.mean(axis=0) for w, b in zip(weights, batches)) / weights.sum()
    var = sum(w * b.var(axis=0) for w, b in zip(weights, batches)) / weights.sum()
    x = batches[-1]
    expected = (x - mean) / np.sqrt(var + layer.epsilon)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-3, atol=1e-3)
    fresh = DebiasedBatchNormalization()
    np.testing.assert_allclose(fresh(x, training=False).numpy(), x / np.sqrt(1 + fresh.epsilon),
                               rtol=1e-5)


# ---------------------------------------------------------------------------
# From config messages: one DNN-arguments adapter, one MMoE constructor


def test_dnn_args_reads_dnn_and_mlp_messages():
    dnn = layers_pb2.DNN(hidden_units=[8, 4], dropout_ratio=[0.25], activation="tanh",
                         use_bn=False)
    assert dnn_args(dnn) == {"hidden_units": [8, 4], "activation": "tanh", "use_bn": False,
                             "dropout_ratio": [0.25]}
    layer = DNN.from_config_proto(dnn, 0.5, name="d")
    assert layer.dropout_ratio == [0.25, 0.25] and layer.l2_regularization == 0.5
    # One MLP layer is the "final" layer: its settings are the final ones.
    one = dnn_args(layers_pb2.MLP(hidden_units=[3], use_final_bn=False,
                                  final_activation="linear", use_final_bias=True))
    assert (one["activation"], one["use_bn"], one["use_bias"]) == ("linear", False, True)
    assert one["dropout_ratio"] == [0.0]
    mlp = layers_pb2.MLP(hidden_units=[4, 2], dropout_ratio=[0.5], final_activation="linear")
    layer = MLP.from_config_proto(mlp, name="mlp")
    reference = MLP([4, 2], dropout_ratio=[0.5], final_activation="linear", name="mlp")
    assert layer.get_config() == reference.get_config()
    with pytest.raises(ValueError, match="add_to_outputs"):
        dnn_args(layers_pb2.MLP(hidden_units=[4], add_to_outputs=True))


def test_mmoe_from_config_proto_keeps_the_layer_and_its_paths():
    expert = layers_pb2.DNN(hidden_units=[4], use_bn=False)
    layer = MMoE.from_config_proto(expert, 2, 3, 0.1, name="mmoe")
    reference = MMoE(2, 3, [4], "relu", False, [], 0.1, name="mmoe")
    x = tf.ones([2, 5])
    layer(x), reference(x)
    assert [w.path for w in layer.weights] == [w.path for w in reference.weights]
    assert layer.get_config() == reference.get_config()
    # An MLP message gives the experts its extra settings; None: experts from the inputs.
    mlp = MMoE.from_config_proto(layers_pb2.MLP(hidden_units=[4]), 2, 2, name="m")
    assert mlp.experts[0].kernel_initializer == "he_uniform"
    stacked = MMoE.from_config_proto(None, 2, 2, name="s")
    assert stacked.experts_from_inputs and not stacked.experts

