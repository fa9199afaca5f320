"""APG and M2M: the factorised APG layer against the explicit per-sample weight product, the
meta unit against per-row numpy, M2M's attention and tower meta networks, argument errors,
weights round trips, and both models training on a tiny multi-domain config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import DOMAIN_INPUTS, DOMAIN_TOWERS, edit, sample_config
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.apg import APGDense
from mtrec.layers.m2m import M2M
from mtrec.layers.meta_unit import MetaUnit
from mtrec.models.registry import build_model

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 10)).astype("float32")
COND = RNG.normal(size=(5, 3)).astype("float32")
COND[4] = COND[0]  # rows 0 and 4: same condition, different x

MODES = {"shared_mf_p": {}, "shared": {"use_mf_p": False}, "unshared": {"use_uv_shared": False}}


def _np(t):
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


@pytest.fixture(autouse=True)
def _seeded():
    """Fixed initial weights: every test sees the same numbers on every run."""
    keras.utils.set_random_seed(0)


def _dense(layer, x):
    return x @ _np(layer.kernel) + _np(layer.bias)


# ---------------------------------------------------------------------------
# APGDense


def _explicit_apg(layer, cond):
    """Per-row effective (W (batch, N, units), b (batch, units)) from the layer's weights,
    by multiplying the factors out: W = V S U, b = ((b_V S) + s) U + b_U, with
    V = V_l V_r and U = U_l U_r over-parameterised (biases carried through)."""
    k, n, units = layer.k_dim, layer.input_dim, layer.units
    core = _dense(layer.core_generator, cond).reshape(-1, k, k)  # (batch, K, K)
    core_bias = _dense(layer.core_bias_generator, cond)  # (batch, K)
    if layer.use_uv_shared:
        if layer.use_mf_p:
            (vl, vlb), (vr, vrb) = [(_np(a), _np(b)) for a, b in (layer.v_left, layer.v_right)]
            (ul, ulb), (ur, urb) = [(_np(a), _np(b)) for a, b in (layer.u_left, layer.u_right)]
            v, v_bias = vl @ vr, vlb @ vr + vrb
            u, u_bias = ul @ ur, ulb @ ur + urb
        else:
            (v, v_bias), (u, u_bias) = [(_np(a), _np(b)) for a, b in (layer.v, layer.u)]
        batch = len(cond)
        v, v_bias = np.broadcast_to(v, (batch, n, k)), np.broadcast_to(v_bias, (batch, k))
        u, u_bias = np.broadcast_to(u, (batch, k, units)), np.broadcast_to(u_bias, (batch, units))
    else:
        v = _dense(layer.v_generator, cond).reshape(-1, n, k)
        v_bias = _dense(layer.v_bias_generator, cond)
        u = _dense(layer.u_generator, cond).reshape(-1, k, units)
        u_bias = _dense(layer.u_bias_generator, cond)
    w = v @ core @ u  # (batch, N, units): what the layer never builds
    b = np.einsum("bk,bkj->bj", np.einsum("bk,bkj->bj", v_bias, core) + core_bias, u) + u_bias
    return w, b


@pytest.mark.parametrize("mode", list(MODES))
def test_apg_factorised_output_equals_explicit_weight_product(mode):
    layer = APGDense(7, activation="relu", mf_k=3, mf_p=2, name="apg", **MODES[mode])
    y = _np(layer(X, COND))
    assert y.shape == (5, 7)
    # min(N, units) = 7: K = ceil(7 / 3) = 3, P = ceil(7 / 2) = 4 (only with shared U, V).
    assert layer.k_dim == 3
    assert layer.p_dim == (4 if mode == "shared_mf_p" else None)
    # Move the generated core off the identity start so the test sees a real S_i.
    for weight in layer.weights:
        weight.assign(weight + RNG.normal(0, 0.3, weight.shape).astype("float32"))
    y = _np(layer(X, COND))
    w, b = _explicit_apg(layer, COND)
    expected = np.maximum(np.einsum("bn,bnu->bu", X, w) + b, 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert (y > 0).any() and (y == 0).any()  # relu is active on both sides
    # Rows with different conditions get different weights; equal conditions, equal weights.
    assert not np.allclose(w[0], w[1], atol=1e-3)
    np.testing.assert_allclose(w[0], w[4], rtol=1e-6)
    np.testing.assert_allclose(b[0], b[4], rtol=1e-6)


def _relu(a):
    return np.maximum(a, 0.0)


def _chain_apg(layer, x, cond, inner=_relu, generate=_relu, act=_relu):
    """The layer's chain in numpy, factor by factor and row by row: inner after every factor
    but the last, generate on every generator output, act at the end."""
    k, n, units = layer.k_dim, layer.input_dim, layer.units

    def gen(dense, shape):
        return generate(_dense(dense, cond)).reshape((-1,) + shape)

    def shared(h, kernel_bias):
        return h @ _np(kernel_bias[0]) + _np(kernel_bias[1])

    def per_row(h, matrices, bias):
        return np.stack([h[i] @ matrices[i] for i in range(len(h))]) + bias

    core = gen(layer.core_generator, (k, k))
    core_bias = gen(layer.core_bias_generator, (k,))
    if layer.use_uv_shared and layer.use_mf_p:
        h = inner(shared(inner(shared(x, layer.v_left)), layer.v_right))
        h = inner(per_row(h, core, core_bias))
        y = shared(inner(shared(h, layer.u_left)), layer.u_right)
    elif layer.use_uv_shared:
        h = inner(per_row(inner(shared(x, layer.v)), core, core_bias))
        y = shared(h, layer.u)
    else:
        h = inner(per_row(x, gen(layer.v_generator, (n, k)), gen(layer.v_bias_generator, (k,))))
        h = inner(per_row(h, core, core_bias))
        y = per_row(h, gen(layer.u_generator, (k, units)), gen(layer.u_bias_generator, (units,)))
    return act(y)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_apg_inner_and_generate_activation_exact(mode, grouped):
    """Small integer weights and inputs: every product and sum is exact in float32, so the
    layer must give exactly the numpy chain with relu after each inner factor and on the
    generators' outputs, and differ from the chain without them."""
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, size=(6, 4)).astype("float32")
    cond = rng.integers(-1, 2, size=(6, 2)).astype("float32")
    cond[3:] = cond[:3]  # three distinct conditions, each twice
    layer = APGDense(3, activation="relu", mf_k=1, mf_p=2, inner_activation="relu",
                     generate_activation="relu", grouped_condition=grouped, name="apg",
                     **MODES[mode])
    layer(x, cond)
    for weight in layer.weights:
        weight.assign(rng.integers(-2, 3, size=weight.shape).astype("float32"))
    y = _np(layer(x, cond))
    expected = _chain_apg(layer, x, cond)
    np.testing.assert_array_equal(y, expected)
    assert (y > 0).any()
    # The activations change the result: the same weights without them give another y.
    plain = _chain_apg(layer, x, cond, inner=lambda a: a, generate=lambda a: a)
    assert not np.array_equal(expected, plain)
    layer.inner_activation = layer.generate_activation = None
    for dense in (layer.core_generator, layer.core_bias_generator):
        dense.activation = keras.activations.get(None)
    if mode == "unshared":
        for dense in (layer.v_generator, layer.v_bias_generator, layer.u_generator,
                      layer.u_bias_generator):
            dense.activation = keras.activations.get(None)
    np.testing.assert_array_equal(_np(layer(x, cond)), plain)


@pytest.mark.parametrize("distinct", [4, 12])
@pytest.mark.parametrize("mode", list(MODES))
def test_apg_grouped_condition_equals_per_row_generation(mode, distinct):
    """grouped_condition (generate once per distinct condition) gives the per-row layer's
    outputs and gradients, with inner and generate activations; with few distinct
    conditions (4) every row meets every condition's matrices in one matmul, with many
    (12 > MAX_GROUPED_SCENARIOS) each row gathers its own."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 10)).astype("float32")
    which = rng.permutation(12) if distinct == 12 else rng.integers(0, 4, 12)
    cond = rng.normal(size=(distinct, 3)).astype("float32")[which]
    kwargs = dict(mf_k=2, mf_p=3, inner_activation="relu", generate_activation="tanh",
                  **MODES[mode])
    per_row = APGDense(7, name="apg", **kwargs)
    grouped = APGDense(7, grouped_condition=True, name="apg", **kwargs)
    per_row(x, cond), grouped(x, cond)
    for a, b in zip(per_row.weights, grouped.weights):
        a.assign(a + rng.normal(0, 0.3, a.shape).astype("float32"))
        b.assign(a)
    results = []
    for layer in (per_row, grouped):
        xt, ct = tf.constant(x), tf.constant(cond)
        with tf.GradientTape() as tape:
            tape.watch([xt, ct])
            y = layer(xt, ct)
            loss = tf.reduce_sum(y * np.arange(7, dtype="float32"))
        grads = tape.gradient(loss, [xt, ct] + layer.trainable_weights)
        results.append([y] + [tf.convert_to_tensor(g) for g in grads])  # gather: slices
    assert (_np(results[0][0]) > 0).any()
    # The condition's gradient reaches the first row of each distinct value: the same sum
    # over rows of equal condition (what an embedding table of domains receives).
    for i in (0, 1):
        results[i][2] = np.stack([_np(results[i][2])[which == d].sum(0)
                                  for d in range(distinct)])
    for a, b in zip(*results):
        np.testing.assert_allclose(_np(b), _np(a), rtol=1e-5, atol=1e-5)
    # Against the numpy chain, and a batch with a single distinct condition.
    np.testing.assert_allclose(_np(results[1][0]), _chain_apg(grouped, x, cond, generate=np.tanh),
                               rtol=1e-5, atol=1e-6)
    same = np.repeat(cond[:1], 12, axis=0)
    np.testing.assert_allclose(_np(grouped(x, same)), _np(per_row(x, same)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("mode", list(MODES))
def test_apg_shapes_and_named_weights(mode):
    layer = APGDense(6, mf_k=2, mf_p=3, name="apg", **MODES[mode])
    layer(X, COND)
    # min(10, 6) = 6: K = 3, P = 2.
    g = {key: tuple(value.shape) for key, value in layer.generated(COND).items()}
    expected = {"core": (5, 3, 3), "core_bias": (5, 3)}
    if mode == "unshared":
        expected.update(v=(5, 10, 3), v_bias=(5, 3), u=(5, 3, 6), u_bias=(5, 6))
    assert g == expected
    shapes = {w.path: tuple(w.shape) for w in layer.weights}
    assert shapes["apg/core_generator/kernel"] == (3, 9)
    assert shapes["apg/core_bias_generator/kernel"] == (3, 3)
    if mode == "shared_mf_p":
        assert [shapes[f"apg/{n}_kernel"] for n in ("v_left", "v_right", "u_left", "u_right")] \
            == [(10, 2), (2, 3), (3, 2), (2, 6)]
    elif mode == "shared":
        assert shapes["apg/v_kernel"] == (10, 3) and shapes["apg/u_kernel"] == (3, 6)
    else:
        assert shapes["apg/v_generator/kernel"] == (3, 30)
        assert shapes["apg/u_generator/kernel"] == (3, 18)
    assert len(shapes) == len(layer.weights)  # unique paths
    # The core starts as the identity: S_i = I whatever the condition.
    np.testing.assert_allclose(_np(layer.core_generator.bias), np.eye(3).reshape(-1))
    # Wider input than output: K from the output width; batch of one; SELF (condition = x).
    narrow = APGDense(4, mf_k=4, activation=None)
    assert narrow(X[:1], X[:1]).shape == (1, 4) and narrow.k_dim == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 0}, "APGDense units must be a positive integer, got 0"),
    ({"units": 2.5}, "APGDense units must be a positive integer, got 2.5"),
    ({"units": 4, "mf_k": 0}, "APGDense mf_k must be a positive integer, got 0"),
    ({"units": 4, "mf_p": -1}, "APGDense mf_p must be a positive integer, got -1"),
    ({"units": 4, "activation": "nope"}, "unknown activation 'nope'"),
    ({"units": 4, "inner_activation": "nope"}, "unknown activation 'nope'"),
    ({"units": 4, "generate_activation": "nope"}, "unknown activation 'nope'"),
    ({"units": 4, "l2_regularization": -1.0}, "l2_regularization must not be negative"),
])
def test_apg_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        APGDense(**kwargs)


@pytest.mark.parametrize("extra", [{}, {"inner_activation": "relu",
                                        "generate_activation": "tanh",
                                        "grouped_condition": True}])
@pytest.mark.parametrize("mode", list(MODES))
def test_apg_weights_round_trip_and_config(mode, extra, tmp_path):
    def model():
        x, c = keras.Input((10,)), keras.Input((3,))
        h = APGDense(8, mf_k=2, name="apg_0", **MODES[mode], **extra)(x, c)
        return keras.Model([x, c], APGDense(4, name="apg_1", **MODES[mode], **extra)(h, c))

    first = model()
    for weight in first.weights:  # off the initial values, so loading must restore them
        weight.assign(weight + 0.1)
    before = _np(first([X, COND]))
    path = str(tmp_path / "apg.weights.h5")
    first.save_weights(path)
    second = model()
    second.load_weights(path)
    np.testing.assert_allclose(_np(second([X, COND])), before, rtol=1e-6)
    layer = first.get_layer("apg_1")
    rebuilt = APGDense.from_config(layer.get_config())
    rebuilt(np.zeros((2, 8), "float32"), COND[:2])
    assert [w.path for w in rebuilt.weights] == [w.path for w in layer.weights]
    assert rebuilt.get_config() == layer.get_config()
    assert layer.inner_activation == extra.get("inner_activation")


# ---------------------------------------------------------------------------
# MetaUnit

H = RNG.normal(size=(5, 6)).astype("float32")
SCEN = RNG.normal(size=(5, 4)).astype("float32")


@pytest.mark.parametrize("units, widths", [(None, [6, 6, 6, 6]), (3, [6, 3, 3, 3])])
def test_meta_unit_generated_shapes_and_per_row_value(units, widths):
    meta = MetaUnit(3, activation="tanh", units=units, name="meta")
    out = _np(meta(H, SCEN))
    assert out.shape == (5, widths[-1])
    generated = meta.generate(SCEN)
    assert [(tuple(w.shape), tuple(b.shape)) for w, b in generated] == [
        ((5, widths[i], widths[i + 1]), (5, widths[i + 1])) for i in range(3)]
    assert [w.path for w in meta.weights][:2] == ["meta/kernel_generator_0/kernel",
                                                   "meta/kernel_generator_0/bias"]
    # Row by row: W_l = reshape(V_w s + v_w), b_l = V_b s + v_b, h = tanh(h W_l + b_l).
    for r in range(5):
        h = H[r]
        for i, (kernel, bias) in enumerate(zip(meta.kernel_generators, meta.bias_generators)):
            w = _dense(kernel, SCEN[r:r + 1]).reshape(widths[i], widths[i + 1])
            np.testing.assert_allclose(_np(generated[i][0])[r], w, rtol=1e-5, atol=1e-6)
            h = np.tanh(h @ w + _dense(bias, SCEN[r:r + 1])[0])
        np.testing.assert_allclose(out[r], h, rtol=1e-4, atol=1e-5)
    # A 3-D input runs each of its vectors through its row's weights.
    stacked = np.stack([H, 2 * H], axis=1)  # (5, 2, 6)
    out3 = _np(meta(stacked, SCEN))
    assert out3.shape == (5, 2, widths[-1])
    np.testing.assert_allclose(out3[:, 0], out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out3[:, 1], _np(meta(2 * H, SCEN)), rtol=1e-5, atol=1e-6)


def test_meta_unit_shares_weights_of_repeated_scenarios_exactly():
    """Rows with the same scenario (one per domain) get weights generated once: outputs and
    gradients equal generating them for every row."""
    unit = MetaUnit(depth=2, activation="relu", name="meta")
    table = tf.constant(np.random.default_rng(1).normal(size=(3, 4)), tf.float32)
    scenario = tf.gather(table, [2, 0, 2, 1, 0, 2])  # 6 rows, 3 distinct scenarios
    h = tf.constant(np.random.default_rng(2).normal(size=(6, 5)), tf.float32)

    def per_row(h, scenario):
        for w, b in unit.generate(scenario):
            h = tf.nn.relu(tf.einsum("bi,bij->bj", h, w) + b)
        return h

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(table)
        scenario = tf.gather(table, [2, 0, 2, 1, 0, 2])
        shared, expected = unit(h, scenario), per_row(h, scenario)
        loss_shared, loss_expected = tf.reduce_sum(shared ** 2), tf.reduce_sum(expected ** 2)
    np.testing.assert_allclose(shared.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(tape.gradient(loss_shared, unit.trainable_variables + [table]),
                    tape.gradient(loss_expected, unit.trainable_variables + [table])):
        np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(),
                                   tf.convert_to_tensor(b).numpy(), rtol=1e-4, atol=1e-5)


def test_meta_unit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="MetaUnit depth must be a positive integer, got 0"):
        MetaUnit(0)
    with pytest.raises(ValueError, match="MetaUnit units must be a positive integer or None"):
        MetaUnit(1, units=0)
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        MetaUnit(1, activation="nope")
    with pytest.raises(ValueError, match="rank 2 or 3"):
        MetaUnit(1)(np.zeros((2, 3, 4, 5), "float32"), SCEN[:2])


# ---------------------------------------------------------------------------
# M2M layer

XM = RNG.normal(size=(4, 7)).astype("float32")
SM = RNG.normal(size=(4, 5)).astype("float32")


def _m2m(**kwargs):
    args = dict(num_task=2, num_expert=3, expert_units=[8], view_dim=4, meta_unit_depth=2,
                tower_depth=2, name="m2m")
    args.update(kwargs)
    layer = M2M(**args)
    layer(XM, SM)
    return layer


def test_m2m_shapes_attention_and_composition():
    layer = _m2m()
    outputs = [_np(o) for o in layer(XM, SM)]
    assert [o.shape for o in outputs] == [(4, 4)] * 2
    experts = layer.expert_outputs(XM)
    assert tuple(experts.shape) == (4, 3, 4)
    assert tuple(layer.task_representations().shape) == (2, 4)
    weights = [_np(a) for a in layer.attention_weights(experts, SM)]
    assert [a.shape for a in weights] == [(4, 3)] * 2
    for a in weights:
        assert (a > 0).all()
        np.testing.assert_allclose(a.sum(axis=1), np.ones(4), rtol=1e-6)
    assert not np.allclose(weights[0], weights[1])  # each task has its own attention
    # a_ti = v_t . Meta_t([E_i || T_t]); T_t = relu(Dense(task_embedding[t])).
    tasks = np.maximum(_dense(layer.task_dense, _np(layer.task_embedding)), 0)
    np.testing.assert_allclose(_np(layer.task_representations()), tasks, rtol=1e-5,
                               atol=1e-7)
    e = _np(experts)
    for t in range(2):
        h = np.concatenate([e, np.broadcast_to(tasks[t], e.shape)], axis=-1)
        scores = _np(layer.attention_v[t](layer.attention_meta[t](h, SM)))[..., 0]
        alpha = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(weights[t], alpha, rtol=1e-5)
        r = (e * alpha[:, :, None]).sum(axis=1)
        # Tower meta network: L_j = relu(Meta_j(L_{j-1}) + L_{j-1}).
        for meta in layer.tower_meta[t]:
            r = np.maximum(_np(meta(r, SM)) + r, 0)
        np.testing.assert_allclose(outputs[t], r, rtol=1e-4, atol=1e-5)
    paths = [w.path for w in layer.weights]
    assert len(set(paths)) == len(paths)
    assert "m2m/tower_meta_1_1/kernel_generator_0/kernel" in paths
    assert "m2m/attention_meta_0/kernel_generator_1/bias" in paths
    assert "m2m/expert_2/dense_1/kernel" in paths  # expert_units [8] + view layer
    assert "m2m/task_embedding" in paths


def test_m2m_tower_meta_residual_with_zeroed_weights():
    layer = _m2m(tower_depth=3)
    experts = layer.expert_outputs(XM)
    reps = [_np(tf.reduce_sum(experts * a[:, :, None], axis=1))
            for a in layer.attention_weights(experts, SM)]
    for metas in layer.tower_meta:
        for meta in metas:
            for w in meta.weights:
                w.assign(tf.zeros_like(w))
    # Meta_j(L) = 0: L_j = relu(L_{j-1}), so three layers give relu(R_t) exactly.
    for r, out in zip(reps, layer(XM, SM)):
        np.testing.assert_array_equal(_np(out), np.maximum(r, 0))
    # R_t mixes relu experts, so R_t >= 0; shift it so relu clips, which checks that the
    # activation comes after the residual sum.
    shifted = _np(layer.tower(0, tf.constant(reps[0] - 0.5), SM))
    np.testing.assert_array_equal(shifted, np.maximum(reps[0] - 0.5, 0))
    assert (shifted == 0).any()

    # Without the residual and with the kernel generators zeroed: act(0 + b_j(s)).
    plain = _m2m(tower_depth=3, residual=False)
    for metas in plain.tower_meta:
        for meta in metas:
            for gen in meta.kernel_generators:
                for w in gen.weights:
                    w.assign(tf.zeros_like(w))
    last = plain.tower_meta[1][-1].bias_generators[0]
    expected = np.maximum(_dense(last, SM), 0)
    assert (expected > 0).any()
    np.testing.assert_allclose(_np(plain(XM, SM)[1]), expected, rtol=1e-5, atol=1e-7)


def test_m2m_scenario_changes_outputs_and_rejects_bad_arguments():
    layer = _m2m()
    same_x = np.repeat(XM[:1], 4, axis=0)
    outputs = [_np(o) for o in layer(same_x, SM)]
    for o in outputs:
        assert not np.allclose(o[0], o[1])
    again = [_np(o) for o in layer(same_x, np.repeat(SM[:1], 4, axis=0))]
    for o in again:
        np.testing.assert_allclose(o, np.repeat(o[:1], 4, axis=0), rtol=1e-6)
    for kwargs, message in [({"num_task": 0}, "M2M num_task must be an integer >= 1, got 0"),
                            ({"num_expert": 0}, "M2M num_expert must be an integer >= 1"),
                            ({"view_dim": 0}, "M2M view_dim must be an integer >= 1"),
                            ({"meta_unit_depth": 0}, "M2M meta_unit_depth must be"),
                            ({"tower_depth": -1}, "M2M tower_depth must be an integer >= 0"),
                            ({"expert_dropout": [0.1, 0.2]}, "expert_dropout needs 1 or 1"),
                            ({"activation": "nope"}, "unknown activation 'nope'")]:
        with pytest.raises(ValueError, match=message):
            _m2m(**kwargs)
    assert [tuple(o.shape) for o in _m2m(tower_depth=0)(XM, SM)] == [(4, 4)] * 2


def test_m2m_weights_round_trip(tmp_path):
    def model():
        x, s = keras.Input((7,)), keras.Input((5,))
        return keras.Model([x, s], M2M(2, 3, [8], 4, 2, 2, expert_dropout=[0.1],
                                       name="m2m")(x, s))

    first = model()
    for weight in first.weights:
        weight.assign(weight + 0.05)
    before = [_np(o) for o in first([XM, SM])]
    path = str(tmp_path / "m2m.weights.h5")
    first.save_weights(path)
    second = model()
    second.load_weights(path)
    for a, b in zip(before, second([XM, SM])):
        np.testing.assert_allclose(_np(b), a, rtol=1e-6)
    layer = first.get_layer("m2m")
    rebuilt = M2M.from_config(layer.get_config())
    rebuilt(XM, SM)
    assert [w.path for w in rebuilt.weights] == [w.path for w in layer.weights]


# ---------------------------------------------------------------------------
# Models on a tiny multi-domain config

APG_CONFIG = DOMAIN_INPUTS + """\
model_config {
  model_class: "APG"
  feature_groups { group_name: "all" feature_names: ["price", "dom"] }
  feature_groups { group_name: "ids" feature_names: "user" }
  apg {
    domain_feature: "dom"
    hidden_units: [16, 16]
    mf_k: 2
    mf_p: 2
    condition: GROUP
    condition_group_name: "ids"
""" + DOMAIN_TOWERS + "  }\n}\n"

M2M_CONFIG = DOMAIN_INPUTS + """\
model_config {
  model_class: "M2M"
  feature_groups { group_name: "all" feature_names: ["price", "dom"] }
  feature_groups { group_name: "ids" feature_names: "user" }
  m2m {
    domain_feature: "dom"
    num_expert: 3
    expert_dnn { hidden_units: [12] use_bn: false }
    view_dim: 6
    scenario_dim: 4
    meta_unit_depth: 2
    tower_depth: 2
    scenario_group_name: "ids"
""" + DOMAIN_TOWERS + "  }\n}\n"


def _columns(n=240, seed=1):
    """A planted domain-specific signal: clk = price >= 25 in domain 0, price < 25 in
    domain 1, price >= 40 in domain 2; buy = clk outside domain 2."""
    rng = np.random.default_rng(seed)
    dom, price = rng.integers(0, 3, n), rng.integers(0, 50, n)
    clk = np.where(dom == 0, price >= 25, np.where(dom == 1, price < 25, price >= 40))
    buy = clk & (dom != 2)
    return {"clk": tf.constant(clk.astype("int32")), "buy": tf.constant(buy.astype("int32")),
            "user": tf.constant([f"u{i}" for i in rng.integers(0, 20, n)]),
            "price": tf.constant(price.astype("int32")), "dom": tf.constant(dom.astype("int32"))}


def _build(text, seed=None):
    if seed is not None:  # initial weights; the training tests pass for seeds 0-7 (checked by hand)
        keras.utils.set_random_seed(seed)
    pipeline = config_lib.parse_text(text, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", text))
    feature_set = FeatureSet(pipeline)
    return build_model(pipeline, feature_set), feature_set


def _train(model, features, labels, steps):
    """Adam on every dense weight and embedding table; returns the losses per step."""
    model(features)
    variables = model.feature_groups.table_variables + model.trainable_variables
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.add_n(list(model.compute_losses(model(features, training=True),
                                                      labels).values()))
        grads = tape.gradient(loss, variables)
        # GROUP and SELF leave the MIX-only "ids" group unread: no gradient for its table.
        optimizer.apply_gradients([(tf.convert_to_tensor(g), v)
                                   for g, v in zip(grads, variables) if g is not None])
        return loss

    return [float(step()) for _ in range(steps)]


def _accuracy(model, features, columns, dom):
    probs = model(features)["probs_ctr"].numpy()
    rows = columns["dom"].numpy() == dom
    return np.mean((probs[rows] > 0.5) == (columns["clk"].numpy()[rows] == 1))


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["GROUP", "MIX", "SELF"])
def test_apg_model_learns_a_domain_specific_signal(condition):
    text = edit("condition: GROUP", f"condition: {condition}", APG_CONFIG)
    model, feature_set = _build(text, seed=0)
    columns = _columns()
    features = feature_set.preprocess(columns)
    outputs = model(features)
    assert outputs["probs_ctr"].shape == (240,) and outputs["logits_cvr"].shape == (240,)
    groups = model.feature_groups(features)
    condition_dim = {"GROUP": 4, "MIX": 8, "SELF": None}[condition]
    assert (None if model.condition(groups) is None
            else model.condition(groups).shape[-1]) == condition_dim
    # The main input leaves out the MIX condition group: price and dom embeddings only.
    assert model.main_tensor(groups).shape == (240, 8)
    assert [layer.units for layer in model.apg_layers] == [16, 16]
    # Only GROUP's condition (the domain embedding) is deduplicated per batch.
    assert [layer.grouped_condition for layer in model.apg_layers] == [condition == "GROUP"] * 2
    losses = _train(model, features, {"clk": columns["clk"], "buy": columns["buy"]}, 100)
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    # Each domain's opposite rule on price is learnt.
    for dom in (0, 1):
        assert _accuracy(model, features, columns, dom) > 0.8


@pytest.mark.slow
def test_m2m_model_learns_a_domain_specific_signal():
    model, feature_set = _build(M2M_CONFIG, seed=0)
    columns = _columns()
    features = feature_set.preprocess(columns)
    outputs = model(features)
    assert outputs["probs_ctr"].shape == (240,) and outputs["probs_cvr"].shape == (240,)
    groups = model.feature_groups(features)
    assert model.scenario_representation(groups).shape == (240, 4)
    assert model.main_tensor(groups).shape == (240, 8)
    paths = set(model.checkpoint_variables())
    assert "M2M/m2m/attention_meta_1/kernel_generator_0/kernel" in paths
    assert "M2M/scenario/dense_0/kernel" in paths and "M2M/tower_cvr/logits/kernel" in paths
    losses = _train(model, features, {"clk": columns["clk"], "buy": columns["buy"]}, 100)
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    for dom in (0, 1):
        assert _accuracy(model, features, columns, dom) > 0.8


def test_model_config_errors():
    with pytest.raises(ConfigError, match=r":\d+: model_config\.apg\.activation: unknown activation 'nope'"):
        _build(edit("mf_k: 2", 'mf_k: 2\n    activation: "nope"', APG_CONFIG))
    for field in ("inner_activation", "generate_activation"):
        with pytest.raises(ConfigError, match=rf":\d+: model_config\.apg\.{field}: unknown activation 'nope'"):
            _build(edit("mf_k: 2", f'mf_k: 2\n    {field}: "nope"', APG_CONFIG))
    # Set and valid: the layers get them (EasyRec's tf.nn names are accepted).
    model, _ = _build(edit("mf_k: 2", 'mf_k: 2\n    inner_activation: "tf.nn.relu"\n'
                           '    generate_activation: "tanh"', APG_CONFIG))
    assert [(layer.inner_activation, layer.generate_activation)
            for layer in model.apg_layers] == [("relu", "tanh")] * 2
    with pytest.raises(ConfigError, match=r":\d+: model_config\.m2m\.expert_dnn\.activation: unknown activation 'nope'"):
        _build(edit("expert_dnn { hidden_units: [12] use_bn: false }",
                    'expert_dnn { hidden_units: [12] use_bn: false activation: "nope" }',
                    M2M_CONFIG))


@pytest.mark.parametrize("name", ["apg_on_multidomain.config", "m2m_on_multidomain.config"])
def test_sample_configs_build(name):
    text = open(sample_config(name)).read()
    model, feature_set = _build(text)
    columns = {"clk": tf.constant([0, 1]), "like": tf.constant([0, 1]),
               "domain": tf.constant([0, 3]), "user_id": tf.constant(["u1", "u2"]),
               "item_id": tf.constant(["i1", "i2"]), "user_group": tf.constant([1, 9]),
               "gender": tf.constant([0, 1]), "age_bucket": tf.constant([0, 6]),
               "item_cate": tf.constant([3, 19]), "hour": tf.constant([0, 23]),
               "price": tf.constant([3.5, 99.0], tf.float64)}
    outputs = model(feature_set.preprocess(columns))
    assert outputs["probs_ctr"].shape == (2,) and outputs["probs_like"].shape == (2,)
    assert model.num_domains == 4


@pytest.mark.parametrize("num_scenarios", [3, 10])  # either side of MAX_GROUPED_SCENARIOS
@pytest.mark.parametrize("three_d", [False, True])
def test_grouped_affine_equals_each_row_with_its_own_kernel(three_d, num_scenarios):
    from mtrec.layers.generated import grouped_affine, per_row_affine, scenario_affine
    rng = np.random.default_rng(7)
    kernels = rng.normal(size=(num_scenarios, 4, 2)).astype("float32")
    biases = rng.normal(size=(num_scenarios, 2)).astype("float32")
    row_of = rng.integers(0, num_scenarios, 12).astype("int32")
    h = rng.normal(size=(12, 3, 4) if three_d else (12, 4)).astype("float32")
    # Row r: h[r] @ kernels[row_of[r]] + biases[row_of[r]], by hand.
    expected = np.stack([h[r] @ kernels[row_of[r]] + biases[row_of[r]] for r in range(12)])
    for got in (grouped_affine(h, kernels, biases, row_of),
                per_row_affine(h, kernels[row_of], biases[row_of]),
                scenario_affine(h, kernels, biases, row_of)):
        assert tuple(got.shape) == expected.shape
        np.testing.assert_allclose(_np(got), expected, rtol=1e-5, atol=1e-6)
