"""STAR and HMoE: partitioned normalisation and star-topology maths against plain Keras layers
and per-row numpy, HMoE's row alignment, stop-gradient and hand-computed logits, argument
errors, weight round trips, and the models on a tiny config with a planted domain signal."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import conftest
from conftest import DOMAIN_INPUTS, DOMAIN_TOWERS, sample_config
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.hmoe import HMoE
from mtrec.layers.star import STAR, PartitionedNormalization, StarTopologyDense
from mtrec.models.registry import build_model

X = tf.random.stateless_normal([7, 5], seed=[1, 2]) * 3.0 + 1.0
# Unsorted, and domain 2 of 3 is absent.
DOMAIN = tf.constant([1, 0, 1, 1, 0, 1, 0], tf.int64)
RNG = np.random.default_rng(0)


def _softmax(z):
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _randomise(variable, low=0.5, high=1.5):
    variable.assign(RNG.uniform(low, high, size=variable.shape).astype("float32"))


# ---------------------------------------------------------------------------
# STAR layers


def test_star_with_one_domain_equals_batch_norm_and_dense_stack():
    x, domain = X, tf.zeros([7], tf.int64)
    star = STAR([6, 4], num_domains=1, activation="relu", name="star")
    star(x, domain)  # build
    _randomise(star.norm.gamma)
    _randomise(star.norm.beta, -1.0, 1.0)
    bn = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99,
                                         moving_variance_initializer="zeros")
    denses = [keras.layers.Dense(u, activation="relu") for u in (6, 4)]
    bn.build(x.shape)
    bn.gamma.assign(star.norm.gamma)
    bn.beta.assign(star.norm.beta)
    shape = x.shape
    for dense, layer in zip(denses, star.star_layers):
        dense.build(shape)
        dense.set_weights([layer.kernel.numpy(), layer.bias.numpy()])
        shape = (shape[0], dense.units)

    expected = x
    expected = bn(expected, training=True)
    for dense in denses:
        expected = dense(expected)
    got = star(x, domain, training=True)
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # The moving statistics move like Keras's (both start at zero here).
    np.testing.assert_allclose(star.norm.moving_mean.numpy()[0], bn.moving_mean.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(star.norm.moving_variance.numpy()[0],
                               bn.moving_variance.numpy(), rtol=1e-5, atol=1e-6)
    # After one update the debiased statistics are the batch's: inference = training.
    np.testing.assert_allclose(star(x, domain, training=False).numpy(), expected.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_partitioned_norm_uses_each_rows_own_domain_statistics():
    norm = PartitionedNormalization(num_domains=3, momentum=0.9, epsilon=1e-3)
    norm(X, DOMAIN)  # build
    for variable in (norm.gamma, norm.domain_gamma):
        _randomise(variable)
    for variable in (norm.beta, norm.domain_beta):
        _randomise(variable, -1.0, 1.0)
    # Domain 2 is absent from the batch: its statistics must not move.
    norm.moving_mean[2].assign(tf.fill([5], 7.0))
    norm.moving_variance[2].assign(tf.fill([5], 3.0))
    out = norm(X, DOMAIN, training=True).numpy()

    x, d = X.numpy(), DOMAIN.numpy()
    gamma, beta = norm.gamma.numpy(), norm.beta.numpy()
    domain_gamma, domain_beta = norm.domain_gamma.numpy(), norm.domain_beta.numpy()
    for j in (0, 1):
        rows = x[d == j]
        mean, var = rows.mean(axis=0), rows.var(axis=0)
        expected = ((gamma * domain_gamma[j]) * (rows - mean) / np.sqrt(var + 1e-3)
                    + beta + domain_beta[j])
        np.testing.assert_allclose(out[d == j], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(norm.moving_mean.numpy()[j], 0.1 * mean, rtol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy()[j], 0.1 * var, rtol=1e-5)
    # Domain 1 normalised with domain 0's statistics would differ.
    assert not np.allclose(x[d == 1].mean(axis=0), x[d == 0].mean(axis=0), atol=0.1)
    np.testing.assert_array_equal(norm.moving_mean.numpy()[2], 7.0)
    np.testing.assert_array_equal(norm.moving_variance.numpy()[2], 3.0)
    np.testing.assert_array_equal(norm.num_updates.numpy(), [1.0, 1.0, 0.0])

    # Inference: a seen domain uses its debiased moving statistics (= the batch's after one
    # update); a domain never trained on uses mean 0 / variance 1.
    infer = norm(X, tf.constant([0, 1, 2, 2, 0, 1, 0], tf.int64)).numpy()
    np.testing.assert_allclose(infer[[4, 5, 6]], out[[4, 5, 6]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(infer[2], gamma * domain_gamma[2] * x[2] / np.sqrt(1 + 1e-3)
                               + beta + domain_beta[2], rtol=1e-5)


def test_star_topology_dense_equals_per_row_computation_in_row_order():
    layer = StarTopologyDense(3, num_domains=3, activation="tanh", name="star_dense")
    domain = tf.constant([2, 0, 1, 2, 0], tf.int64)  # unsorted, every domain present
    x = X[:5]
    layer(x, domain)
    _randomise(layer.domain_kernel)
    _randomise(layer.domain_bias, -1.0, 1.0)
    _randomise(layer.bias, -1.0, 1.0)
    got = layer(x, domain).numpy()
    W, b = layer.kernel.numpy(), layer.bias.numpy()
    Wp, bp = layer.domain_kernel.numpy(), layer.domain_bias.numpy()
    expected = np.stack([np.tanh(x.numpy()[r] @ (W * Wp[p]) + b + bp[p])
                         for r, p in enumerate(domain.numpy())])
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # Rows of a domain absent from the batch give its weights exactly zero gradient.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, tf.constant([0, 0, 1, 1, 0], tf.int64)))
    grad_w, grad_b = tape.gradient(loss, [layer.domain_kernel, layer.domain_bias])
    assert np.all(grad_w.numpy()[2] == 0) and np.all(grad_b.numpy()[2] == 0)
    assert np.any(grad_w.numpy()[0] != 0) and np.any(grad_w.numpy()[1] != 0)


def test_star_weight_paths_and_initial_values():
    star = STAR([4, 2], num_domains=3, name="star")
    star(X, DOMAIN)
    paths = [v.path for v in star.weights]
    assert len(set(paths)) == len(paths)
    for path in ("star/partitioned_norm/domain_gamma", "star/partitioned_norm/num_updates",
                 "star/star_0/kernel", "star/star_1/domain_kernel", "star/star_1/domain_bias"):
        assert path in paths
    np.testing.assert_array_equal(star.star_layers[0].domain_kernel.numpy(), 1.0)
    assert star.star_layers[0].domain_kernel.shape == (3, 5, 4)
    no_norm = STAR([4], num_domains=3, partitioned_norm=False, name="star")
    no_norm(X, DOMAIN)
    assert not any("partitioned_norm" in v.path for v in no_norm.weights)
    assert tuple(STAR([4, 2], 3).compute_output_shape((None, 5))) == (None, 2)


@pytest.mark.parametrize("make, message", [
    (lambda: STAR([], 2), "STAR needs hidden_units"),
    (lambda: STAR([4, 0], 2), r"STAR hidden_units must be positive, got \[4, 0\]"),
    (lambda: STAR([4], 0), "num_domains must be at least 1, got 0"),
    (lambda: STAR([4], 2, activation="nope"), "unknown activation 'nope'"),
    (lambda: StarTopologyDense(0, 2), "units must be at least 1, got 0"),
    (lambda: PartitionedNormalization(2, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda: PartitionedNormalization(2, epsilon=0.0), "epsilon must be positive"),
])
def test_star_layers_reject_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_star_weights_save_and_load_round_trip(tmp_path):
    x_in, d_in = keras.Input((5,)), keras.Input((), dtype="int64")
    model = keras.Model([x_in, d_in], STAR([4, 3], 3, name="star")(x_in, d_in))
    model([X, DOMAIN], training=True)  # move the statistics of domains 0 and 1
    for layer in model.get_layer("star").star_layers:
        _randomise(layer.domain_kernel)
    before = model([X, DOMAIN]).numpy()
    path = str(tmp_path / "star.weights.h5")
    model.save_weights(path)
    clone = keras.Model([x_in, d_in], STAR([4, 3], 3, name="star")(x_in, d_in))
    clone.load_weights(path)
    np.testing.assert_allclose(clone([X, DOMAIN]).numpy(), before, rtol=1e-6)
    rebuilt = STAR.from_config(model.get_layer("star").get_config())
    rebuilt(X, DOMAIN)
    assert [v.path for v in rebuilt.weights] == [v.path for v in model.get_layer("star").weights]


# ---------------------------------------------------------------------------
# HMoE layer

TOWERS = [{"hidden_units": [4], "num_class": 1},
          {"hidden_units": [3], "activation": "tanh", "num_class": 3}]


def _hmoe(**kwargs):
    args = dict(num_domains=2, num_expert=3, expert_units=[6, 5], towers=TOWERS, name="hmoe")
    args.update(kwargs)
    return HMoE(**args)


def test_hmoe_shapes_and_weight_paths():
    layer = _hmoe()
    outputs = layer(X, DOMAIN)
    assert [tuple(o.shape) for o in outputs] == [(7, 1), (7, 3)]
    paths = [v.path for v in layer.weights]
    assert len(set(paths)) == len(paths)
    for path in ("hmoe/expert_2/dense_1/kernel", "hmoe/gate_domain1_task0/kernel",
                 "hmoe/tower_domain1_task1/logits/kernel", "hmoe/scenario_weight_task1/bias"):
        assert path in paths


def test_hmoe_equals_hand_computation_from_its_pieces():
    layer = _hmoe()
    domain = tf.constant([1, 0, 0, 1, 1, 0, 1], tf.int64)
    got = [o.numpy() for o in layer(X, domain)]
    experts = np.stack([e(X).numpy() for e in layer.experts], axis=1)  # (7, 3, 5)
    for k in range(2):
        weights = _softmax(layer.scenario_gates[k](X).numpy())  # (7, 2)
        expected = 0.0
        for j in range(2):
            gate = _softmax(layer.gates[j][k](X).numpy())  # (7, 3)
            mixture = np.einsum("be,bed->bd", gate, experts)
            score = layer.domain_towers[j][k](tf.constant(mixture)).numpy()  # (7, num_class)
            # The row's own domain at full weight, the others weighted.
            own = (domain.numpy() == j)[:, None]
            expected = expected + np.where(own, 1.0, weights[:, j:j + 1]) * score
        np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-6)


def test_hmoe_keeps_rows_aligned_with_their_domain():
    layer = _hmoe()
    domain = tf.constant([1, 0, 0, 1, 1, 0, 1], tf.int64)
    before = [o.numpy() for o in layer(X, domain)]
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    after = [o.numpy() for o in layer(tf.gather(X, perm), tf.gather(domain, perm))]
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a[perm], rtol=1e-6, atol=1e-6)


def test_hmoe_other_domains_towers_get_no_gradient():
    layer = _hmoe(expert_use_bn=True)
    domain0 = tf.zeros([7], tf.int64)
    layer(X, domain0)
    with tf.GradientTape() as tape:
        loss = tf.add_n([tf.reduce_sum(tf.square(o)) for o in layer(X, domain0, training=True)])
    variables = layer.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    # 2 tasks x (gate kernel + bias, tower dense kernel + bias, logits kernel + bias)
    assert sum("domain1" in path for path in grads) == 12
    for path, grad in grads.items():
        if "domain1" in path:  # domain 1's gates and towers
            assert grad is not None and np.all(grad.numpy() == 0), path
        elif "domain0" in path and path.endswith("kernel"):
            assert grad is not None and np.any(grad.numpy() != 0), path
    # Domain 1's towers still shape domain-0 predictions (forward), via the scenario weights.
    assert np.any(grads["hmoe/scenario_weight_task0/kernel"].numpy() != 0)
    assert np.any(grads["hmoe/expert_0/dense_0/kernel"].numpy() != 0)
    # A mixed batch trains both domains' towers.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(X, tf.constant([0, 1, 0, 1, 0, 1, 0]), training=True)[0])
    tower = layer.domain_towers[1][0].logits.kernel
    assert np.any(tape.gradient(loss, tower).numpy() != 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_domains": 0}, "HMoE needs num_domains >= 1, got 0"),
    ({"num_expert": 0}, "HMoE needs num_expert >= 1, got 0"),
    ({"expert_units": []}, "HMoE needs expert hidden_units"),
    ({"towers": []}, "HMoE needs at least one tower"),
    ({"towers": [{"hidden_units": [4], "units": 2}]}, r"towers\[0\]: unknown tower arguments "
                                                       r"\['units'\]"),
    ({"towers": [{"num_class": 0}]}, "num_class must be at least 1, got 0"),
    ({"expert_activation": "nope"}, "unknown activation 'nope'"),
])
def test_hmoe_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _hmoe(**kwargs)


def test_hmoe_weights_save_and_load_round_trip(tmp_path):
    x_in, d_in = keras.Input((5,)), keras.Input((), dtype="int64")
    model = keras.Model([x_in, d_in], _hmoe()(x_in, d_in))
    before = [o.numpy() for o in model([X, DOMAIN % 2])]
    path = str(tmp_path / "hmoe.weights.h5")
    model.save_weights(path)
    clone = keras.Model([x_in, d_in], _hmoe()(x_in, d_in))
    clone.load_weights(path)
    for a, b in zip(before, clone([X, DOMAIN % 2])):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-6)
    rebuilt = HMoE.from_config(model.get_layer("hmoe").get_config())
    rebuilt(X, DOMAIN % 2)
    assert [v.path for v in rebuilt.weights] == [v.path for v in model.get_layer("hmoe").weights]


# ---------------------------------------------------------------------------
# Models on a tiny config with a domain feature

STAR_CONFIG = DOMAIN_INPUTS + """\
model_config {
  model_class: "STAR"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  star {
    domain_feature: "dom"
    hidden_units: [16, 8]
    aux_dnn { hidden_units: [4] use_bn: false }
""" + DOMAIN_TOWERS + "  }\n}\n"

HMOE_CONFIG = DOMAIN_INPUTS + """\
model_config {
  model_class: "HMoE"
  feature_groups { group_name: "all" feature_names: ["user", "price", "dom"] }
  hmoe {
    domain_feature: "dom"
    num_expert: 3
    expert_dnn { hidden_units: [16] use_bn: false }
""" + DOMAIN_TOWERS + "  }\n}\n"


def _build(text):
    pipeline = config_lib.parse_text(text, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", text))
    feature_set = FeatureSet(pipeline)
    return build_model(pipeline, feature_set), feature_set


def _planted_batch(n=192, seed=0):
    """clk follows the price in opposite ways in domains 0 and 1 and is always 1 in domain
    2; buy marks the domain-0 rows. Without the domain the best ctr log-loss is
    H(2/3) = 0.64 (each price: 2 of 3 domains agree) and the best cvr log-loss 0.64 too.

    STAR's main group leaves the domain out, so only its domain parameters can tell the
    rows apart. HMoE's forward value reads the domain only through its inputs (the row's
    domain decides which towers its loss trains), so its group includes it, as in the paper.
    """
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, 3, n)
    price = rng.integers(0, 10, n) * 5
    clk = np.where(dom == 2, 1, (price < 25) == (dom == 0)).astype("int32")
    columns = {"clk": clk, "buy": (dom == 0).astype("int32"),
               "user": np.array([f"u{i}" for i in rng.integers(0, 20, n)]),
               "price": price.astype("int32"), "dom": dom.astype("int32")}
    return {k: tf.constant(v) for k, v in columns.items()}


@pytest.mark.parametrize("text", [STAR_CONFIG, HMOE_CONFIG], ids=["star", "hmoe"])
def test_model_learns_a_planted_domain_specific_signal(text):
    keras.utils.set_random_seed(0)
    model, feature_set = _build(text)
    columns = _planted_batch()
    features = feature_set.preprocess(columns)
    labels = {"clk": columns["clk"], "buy": columns["buy"]}
    outputs = model(features)
    assert outputs["probs_ctr"].shape == (192,) and outputs["logits_cvr"].shape == (192,)
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = model.compute_losses(model(features, training=True), labels)
            total = tf.add_n(list(losses.values()))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return losses

    first = step()
    for _ in range(150):
        last = step()
    first, last = ({k: float(v) for k, v in d.items()} for d in (first, last))
    # Well below what any domain-blind predictor can reach (0.64 each).
    assert last["ctr"] < 0.5 and last["cvr"] < 0.1, (first, last)
    assert sum(last.values()) < 0.4 * sum(first.values()), (first, last)


def test_star_model_wiring_and_auxiliary_logits():
    model, feature_set = _build(STAR_CONFIG)
    features = feature_set.preprocess(_planted_batch(8))
    outputs = model(features)
    paths = set(model.checkpoint_variables())
    for path in ("STAR/star/partitioned_norm/domain_gamma", "STAR/star/star_1/domain_kernel",
                 "STAR/aux_dnn/dense_0/kernel", "STAR/aux_logits/kernel",
                 "STAR/tower_ctr/logits/kernel"):
        assert path in paths, sorted(paths)
    assert model.star.num_domains == 3
    # The auxiliary network adds column i of its (batch, 2) logits to tower i.
    groups = model.feature_groups(features)
    groups["__domain_ids__"] = tf.maximum(features["dom"]["ids"], 0)
    aux_in = tf.concat([model.domain_embedding(groups), model.main_tensor(groups)], axis=-1)
    aux = model.aux_logits(model.aux(aux_in)).numpy()
    towers = [t(x).numpy()[:, 0] for t, x in zip(model.task_towers,
                                                 model.tower_inputs(groups, False))]
    for i, name in enumerate(("ctr", "cvr")):
        np.testing.assert_allclose(outputs[f"logits_{name}"].numpy(), towers[i] + aux[:, i],
                                   rtol=1e-5, atol=1e-6)
    plain, feature_set = _build(conftest.edit(
        "    aux_dnn { hidden_units: [4] use_bn: false }\n", "", STAR_CONFIG))
    plain(feature_set.preprocess(_planted_batch(8)))
    assert not any("aux" in p for p in plain.checkpoint_variables())


def test_hmoe_model_replaces_the_task_towers():
    model, feature_set = _build(HMOE_CONFIG)
    outputs = model(feature_set.preprocess(_planted_batch(8)))
    assert outputs["probs_cvr"].shape == (8,)
    paths = set(model.checkpoint_variables())
    assert "HMoE/hmoe/tower_domain2_task1/logits/kernel" in paths
    # The base class's task towers are never called, so they hold no weights.
    assert not any(p.startswith("HMoE/tower_") for p in paths), sorted(paths)
    assert all(not t.weights for t in model.task_towers)


@pytest.mark.parametrize("text, old, new, message", [
    (STAR_CONFIG, "aux_dnn { hidden_units: [4]", 'aux_dnn { activation: "nope" hidden_units: [4]',
     r":\d+: model_config\.star\.aux_dnn\.activation: unknown activation 'nope'"),
    (HMOE_CONFIG, "expert_dnn { hidden_units: [16]",
     'expert_dnn { activation: "nope" hidden_units: [16]', r":\d+: model_config\.hmoe\.expert_dnn\.activation: "
     r"unknown activation 'nope'"),
])
def test_model_config_errors(text, old, new, message):
    with pytest.raises(ConfigError, match=message):
        _build(conftest.edit(old, new, text))


@pytest.mark.parametrize("name", ["star_on_multidomain.config", "hmoe_on_multidomain.config"])
def test_sample_configs_build_and_run(name):
    loaded = config_lib.load(sample_config(name))
    pipeline = loaded.pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    n = 6
    columns = {"clk": [0, 1, 0, 1, 0, 0], "like": [0, 1, 0, 0, 0, 0], "domain": [0, 1, 2, 3, 1, 0],
               "user_id": ["u1", "u2", "u3", "u1", "u9", "u4"],
               "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"], "user_group": [1, 2, 3, 4, 5, 6],
               "gender": [0, 1, 0, 1, 0, 1], "age_bucket": [0, 1, 2, 3, 4, 5],
               "item_cate": [1, 2, 3, 4, 5, 6], "hour": [0, 5, 10, 15, 20, 23],
               "price": [1.0, 7.5, 15.0, 30.0, 60.0, 120.0]}
    columns = {k: tf.constant(v, tf.float64 if k == "price" else None)
               for k, v in columns.items()}
    outputs = model(feature_set.preprocess(columns), training=True)
    assert outputs["probs_ctr"].shape == (n,) and outputs["probs_like"].shape == (n,)
    assert model.num_domains == 4
