"""GateNU, EPNet, PPNet and the PEPNet model: exact values, gradient stops, shapes, ablation
switches, config errors and a weights round trip."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import DOMAIN_INPUTS, edit
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.gate_nu import GateNU
from mtrec.layers.pepnet import EPNet, PPNet
from mtrec.models.registry import build_model

RNG = np.random.default_rng(0)


def _relu(x):
    return np.maximum(x, 0.0)


def _gate_np(gate, x):
    w1, b1 = [np.asarray(v) for v in gate.hidden.weights]
    w2, b2 = [np.asarray(v) for v in gate.gate.weights]
    return gate.gamma / (1 + np.exp(-(_relu(x @ w1 + b1) @ w2 + b2)))


def test_gate_nu_values_lie_in_zero_gamma_and_match_the_formula():
    gate = GateNU(hidden_dim=5, output_dim=3, gamma=2.0)
    x = RNG.normal(scale=10.0, size=(64, 4)).astype("float32")
    out = np.asarray(gate(x))
    assert out.shape == (64, 3)
    assert out.min() >= 0.0 and out.max() <= 2.0
    assert out.max() > 1.5 and out.min() < 0.5  # large inputs reach both ends of the range
    np.testing.assert_allclose(out, _gate_np(gate, x), rtol=1e-5, atol=1e-6)
    # Zero weights: sigmoid(0) = 1/2, so every gate value is gamma / 2.
    gate.gate.kernel.assign(tf.zeros_like(gate.gate.kernel))
    np.testing.assert_allclose(np.asarray(gate(x)), 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_dim": 0, "output_dim": 3}, "hidden_dim >= 1"),
    ({"hidden_dim": 4, "output_dim": 0}, "output_dim >= 1"),
    ({"hidden_dim": 4, "output_dim": 3, "gamma": 0.0}, "gamma must be positive"),
])
def test_gate_nu_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateNU(**kwargs)


def test_epnet_gates_embeddings_and_stops_the_gate_gradient():
    epnet = EPNet(gate_hidden_dim=6, gamma=2.0)
    domain = tf.constant(RNG.normal(size=(3, 2)), tf.float32)
    emb = tf.Variable(RNG.normal(size=(3, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        out = epnet([domain, emb])
        total = tf.reduce_sum(out)
    delta = _gate_np(epnet.gate, np.concatenate([domain.numpy(), emb.numpy()], axis=1))
    np.testing.assert_allclose(out.numpy(), delta * emb.numpy(), rtol=1e-5)
    # The embeddings get gradient only through the product, not through the gate's input.
    np.testing.assert_allclose(tape.gradient(total, emb).numpy(), delta, rtol=1e-5)


def test_ppnet_gates_every_layer_input_split_per_task():
    x = RNG.normal(size=(4, 3)).astype("float32")
    prior = RNG.normal(size=(4, 2)).astype("float32")
    # Two tasks of different depth and width.
    ppnet = PPNet([[5, 2], [4]], activation="relu", gate_hidden_dim=7, gamma=2.0)
    out = [np.asarray(t) for t in ppnet([x, prior])]
    assert [o.shape for o in out] == [(4, 2), (4, 4)]
    assert [g.output_dim for g in ppnet.gates] == [3 + 3, 5]  # layer 0: both tasks; layer 1: task 0
    gate_in = np.concatenate([prior, x], axis=1)
    delta0, delta1 = _gate_np(ppnet.gates[0], gate_in), _gate_np(ppnet.gates[1], gate_in)

    def dense(layer, h):
        kernel, bias = [np.asarray(v) for v in layer.weights]
        return h @ kernel + bias

    h0 = _relu(dense(ppnet.dense[0][0], delta0[:, :3] * x))
    task0 = _relu(dense(ppnet.dense[0][1], delta1 * h0))
    task1 = _relu(dense(ppnet.dense[1][0], delta0[:, 3:] * x))
    np.testing.assert_allclose(out[0], task0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], task1, rtol=1e-5, atol=1e-6)


def test_ppnet_gate_does_not_backpropagate_into_its_input_copy():
    x = tf.Variable(RNG.normal(size=(2, 3)).astype("float32"))
    prior = tf.constant(RNG.normal(size=(2, 2)), tf.float32)
    ppnet = PPNet([[4]], activation="linear", gate_hidden_dim=3)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(ppnet([x, prior])[0])
    kernel = np.asarray(ppnet.dense[0][0].kernel)
    delta = _gate_np(ppnet.gates[0], np.concatenate([prior.numpy(), x.numpy()], axis=1))
    # d/dx sum((delta * x) W) = delta * rowsum(W): delta is a constant to x.
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), delta * kernel.sum(axis=1),
                               rtol=1e-5)


def test_ppnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one task"):
        PPNet([])
    with pytest.raises(ValueError, match="widths must be positive"):
        PPNet([[4, 0]])
    with pytest.raises(ValueError, match="unknown activation"):
        PPNet([[4]], activation="nope")


def test_ppnet_weights_round_trip(tmp_path):
    x = keras.Input((3,))
    prior = keras.Input((2,))
    model = keras.Model([x, prior], PPNet([[4, 2], [3]], name="ppnet")([x, prior]))
    data = [RNG.normal(size=(5, 3)).astype("float32"), RNG.normal(size=(5, 2)).astype("float32")]
    before = [np.asarray(t) for t in model(data)]
    path = str(tmp_path / "ppnet.weights.h5")
    model.save_weights(path)
    clone = keras.Model([x, prior], PPNet([[4, 2], [3]], name="ppnet")([x, prior]))
    clone.load_weights(path)
    for a, b in zip(before, clone(data)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6)


# ---------------------------------------------------------------------------
# The model

MODEL = """
model_config {
  model_class: "PEPNet"
  feature_groups { group_name: "all" feature_names: ["user", "price", "dom"] wide_deep: DEEP }
  feature_groups { group_name: "prior" feature_names: ["user"] wide_deep: DEEP }
  pepnet {
    domain_feature: "dom"
    prior_group_name: "prior"
    gate_hidden_dim: 8
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [8, 4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [6] use_bn: false } }
  }
}
"""
CONFIG = DOMAIN_INPUTS + MODEL


def build(text=CONFIG, domains=(0, 1, 2, 5)):
    """(model, features, columns) of a 4-row batch whose scenario column holds `domains`."""
    pipeline = config_lib.parse_text(text, "pepnet.config")
    config_lib.prepare(pipeline, config_lib.Source("pepnet.config", text))
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    columns = {"clk": tf.constant([1, 0, 1, 0]), "buy": tf.constant([0, 0, 1, 0]),
               "user": tf.constant(["a", "b", "c", "a"]), "price": tf.constant([3, 7, 11, 3]),
               "dom": tf.constant(list(domains))}
    features = feature_set.preprocess(columns)
    return model, features, columns


def test_pepnet_model_wires_epnet_and_ppnet_and_learns_a_batch():
    model, features, columns = build()
    outputs = model(features)
    assert outputs["probs_ctr"].shape == (4,) and outputs["probs_cvr"].shape == (4,)
    paths = {v.path for v in model.weights}
    assert {"PEPNet/epnet/gate_nu/hidden/kernel", "PEPNet/ppnet/gate_nu_0/gate/kernel",
            "PEPNet/ppnet/task_0_dense_1/kernel", "PEPNet/tower_ctr/logits/kernel"} <= paths
    # The towers' hidden layers live in PPNet: a tower keeps only its logit layer.
    assert not any(p.startswith("PEPNet/tower_ctr/dnn/dense") for p in paths)
    # The out-of-range domain 5 has no embedding (zeros), as a missing domain.
    assert model.num_domains == 3
    optimizer = keras.optimizers.Adam(0.05)
    labels = {"clk": columns["clk"], "buy": columns["buy"]}
    losses = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = tf.add_n(list(model.compute_losses(model(features, training=True),
                                                      labels).values()))
        variables = model.trainable_variables + model.feature_groups.table_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("switches, present, absent", [
    ("epnet: false", "ppnet", "epnet"),
    ("ppnet: false", "epnet", "ppnet"),
])
def test_pepnet_ablation_switches(switches, present, absent):
    model, features, _ = build(edit("gate_hidden_dim: 8", f"gate_hidden_dim: 8 {switches}",
                                    CONFIG))
    model(features)
    paths = {v.path for v in model.weights}
    assert any(f"/{present}/" in p for p in paths)
    assert not any(f"/{absent}/" in p for p in paths)
    if absent == "ppnet":  # plain towers again
        assert "PEPNet/tower_ctr/dnn/dense_0/kernel" in paths


@pytest.mark.parametrize("old, new, message", [
    ('prior_group_name: "prior"', "", "pepnet.ppnet needs prior_group_name"),
    ('prior_group_name: "prior"', 'prior_group_name: "nope"',
     "pepnet.prior_group_name 'nope' is not a feature group"),
    ('domain_feature: "dom"', 'domain_feature: "user"',
     "domain_feature 'user' must be an IdFeature with num_buckets"),
    ('domain_feature: "dom"', 'domain_feature: "town"', "domain_feature 'town' is not a feature"),
    ('domain_feature: "dom"', "", "pepnet needs domain_feature"),
])
def test_pepnet_config_errors_name_the_field_and_line(old, new, message):
    text = edit(old, new, CONFIG)
    with pytest.raises(ConfigError, match=message) as info:
        config_lib.prepare(config_lib.parse_text(text, "p.config"),
                            config_lib.Source("p.config", text))
    if new:
        line = next(i for i, l in enumerate(text.splitlines(), 1) if new in l)
        assert f"p.config:{line}" in str(info.value)


def test_ppnet_towers_must_agree_on_activation():
    text = edit('dnn { hidden_units: [6] use_bn: false }',
                'dnn { hidden_units: [6] use_bn: false activation: "tanh" }', CONFIG)
    with pytest.raises(ConfigError, match="same activation, use_bn and dropout_ratio"):
        build(text)


def test_domain_from_a_vocabulary_names_metrics_by_value():
    """A string scenario column with vocab_list: metrics say `domain=search`, not an id."""
    from mtrec.training.metrics import Evaluator
    text = edit('input_fields { input_name: "dom" input_type: INT32 }',
                'input_fields { input_name: "dom" input_type: STRING }', CONFIG)
    text = edit('features { input_names: "dom" num_buckets: 3 embedding_dim: 4 }',
                'features { input_names: "dom" vocab_list: ["home", "search"] embedding_dim: 2 }',
                text)
    model, features, columns = build(text, ["home", "search", "search", "tv"])
    outputs = model(features)
    assert model.domain_names == ["oov", "home", "search"]
    evaluator = Evaluator(model, config_lib.parse_text(text).eval_config, outputs, columns,
                          model.domain_names)
    evaluator.update(outputs, columns, model.domain_ids(features))
    results = evaluator.results()
    assert {"auc_ctr/domain=oov", "auc_ctr/domain=home", "auc_ctr/domain=search"} <= set(results)
    # "search" holds rows 1 and 2 with clk [0, 1]: a defined AUC; "home" has one row: none.
    assert results["auc_ctr/domain=search"] is not None
    assert results["auc_ctr/domain=home"] is None
