"""PLE / CGC: exact shapes and values, argument errors, weights round trip, config checks, and a
short train -> export -> serve run of the sample config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import sample_config
from mtrec.layers import CGC, PLE

X = tf.random.stateless_normal([5, 6], seed=[3, 4])


def _np(tensors):
    return [np.asarray(t) for t in tensors]


def test_cgc_and_ple_shapes_and_stable_weight_paths():
    cgc = CGC(num_task=3, expert_num_per_task=2, share_num=1, task_expert_net=[8, 4],
              shared_gate=True, name="cgc")
    outputs = cgc(X)
    assert [tuple(o.shape) for o in outputs] == [(5, 4)] * 4  # 3 tasks + shared
    gates = cgc.gate_weights(X)
    assert [tuple(g.shape) for g in gates] == [(5, 3)] * 3 + [(5, 7)]

    levels = [{"expert_num_per_task": 1, "share_num": 2, "task_expert_net": [8]},
              {"expert_num_per_task": 2, "share_num": 1, "task_expert_net": [3],
               "share_expert_net": {"hidden_units": [5, 3], "activation": "tanh"}}]
    ple = PLE(num_task=2, levels=levels, name="ple")
    outputs = ple(X)
    assert [tuple(o.shape) for o in outputs] == [(5, 3)] * 2
    assert [level.shared_gate for level in ple.levels] == [True, False]
    # Level 1 reads [task0, task1, shared] from level 0: three (5, 8) tensors.
    assert [tuple(o.shape) for o in ple.levels[0](X)] == [(5, 8)] * 3
    # Every sub-layer is named explicitly: a second layer gets the same variable paths.
    again = PLE(num_task=2, levels=levels, name="ple")
    again(X)
    paths = [v.path for v in ple.weights]
    assert paths == [v.path for v in again.weights] and len(set(paths)) == len(paths)
    assert "ple/level1/task1_expert1/dense_0/kernel" in paths
    assert "ple/level0/gate_shared/kernel" in paths and "ple/level1/gate_shared/kernel" not in paths
    assert "ple/level1/shared_expert0/dense_1/bias" in paths


def test_cgc_gates_sum_to_one():
    cgc = CGC(num_task=2, expert_num_per_task=3, share_num=2, task_expert_net=[4],
              shared_gate=True)
    inputs = [X, 2 * X, -X]  # per-task inputs and the shared input
    cgc(inputs)
    for weights in _np(cgc.gate_weights(inputs)):
        assert np.all(weights > 0)
        np.testing.assert_allclose(weights.sum(axis=1), np.ones(5), rtol=1e-6)


def test_cgc_output_is_gate_weighted_sum_of_task_and_shared_experts():
    cgc = CGC(num_task=2, expert_num_per_task=2, share_num=3, task_expert_net=[7, 4],
              share_expert_net=[4], shared_gate=True)
    task_inputs = [X, tf.random.stateless_normal([5, 6], seed=[5, 6])]
    shared_input = tf.random.stateless_normal([5, 6], seed=[7, 8])
    outputs = _np(cgc(task_inputs + [shared_input]))

    def softmax(z):
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    shared = [np.asarray(e(shared_input)) for e in cgc.shared_experts]
    own = [[np.asarray(e(x)) for e in experts]
           for experts, x in zip(cgc.task_experts, task_inputs)]
    for t, x in enumerate(task_inputs):
        experts = np.stack(own[t] + shared, axis=1)  # (5, 2 + 3, 4)
        weights = softmax(np.asarray(cgc.task_gates[t](x)))  # (5, 5)
        np.testing.assert_allclose(outputs[t], np.einsum("be,bed->bd", weights, experts),
                                   rtol=1e-5, atol=1e-6)
    experts = np.stack(own[0] + own[1] + shared, axis=1)  # (5, 2 * 2 + 3, 4)
    weights = softmax(np.asarray(cgc.gate_shared(shared_input)))  # (5, 7)
    np.testing.assert_allclose(outputs[2], np.einsum("be,bed->bd", weights, experts),
                               rtol=1e-5, atol=1e-6)


def test_one_level_ple_equals_cgc_and_two_levels_chain():
    level = {"expert_num_per_task": 2, "share_num": 1, "task_expert_net": [6, 4]}
    ple = PLE(num_task=2, levels=[level])
    cgc = CGC(num_task=2, **level)
    expected = _np(ple(X))
    cgc(X)
    cgc.set_weights(ple.levels[0].get_weights())
    assert len(expected) == 2
    for a, b in zip(expected, _np(cgc(X))):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    two = PLE(num_task=2, levels=[level, {"expert_num_per_task": 1, "share_num": 1,
                                          "task_expert_net": [3]}])
    out = _np(two(X))
    for a, b in zip(out, _np(two.levels[1](two.levels[0](X)))):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_task": 0, "expert_num_per_task": 1, "share_num": 1, "task_expert_net": [4]},
     "CGC needs num_task >= 1, got 0"),
    ({"num_task": 2, "expert_num_per_task": 0, "share_num": 0, "task_expert_net": [4]},
     "CGC needs at least one expert: expert_num_per_task and share_num are both 0"),
    ({"num_task": 2, "expert_num_per_task": -1, "share_num": 1, "task_expert_net": [4]},
     "must not be negative"),
    ({"num_task": 2, "expert_num_per_task": 1, "share_num": 1},
     "CGC needs task_expert_net hidden_units when expert_num_per_task is 1"),
    ({"num_task": 2, "expert_num_per_task": 0, "share_num": 2, "share_expert_net": []},
     "CGC needs share_expert_net hidden_units when share_num is 2"),
    ({"num_task": 2, "expert_num_per_task": 1, "share_num": 1, "task_expert_net": [8, 4],
      "share_expert_net": [8]},
     "same output width, got task_expert_net 4 and share_expert_net 8"),
    ({"num_task": 2, "expert_num_per_task": 1, "share_num": 1,
      "task_expert_net": {"hidden_units": [4], "units": 3}}, r"unknown DNN arguments \['units'\]"),
])
def test_cgc_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CGC(**kwargs)


def test_ple_rejects_bad_arguments():
    with pytest.raises(ValueError, match="PLE needs num_task >= 1, got 0"):
        PLE(num_task=0, levels=[{"expert_num_per_task": 1, "share_num": 1,
                                 "task_expert_net": [4]}])
    with pytest.raises(ValueError, match="PLE needs at least one extraction level"):
        PLE(num_task=2, levels=[])
    with pytest.raises(ValueError, match="level 0: 'shared_gate' is set by PLE"):
        PLE(num_task=2, levels=[{"expert_num_per_task": 1, "share_num": 1,
                                 "task_expert_net": [4], "shared_gate": True}])
    with pytest.raises(ValueError, match="CGC needs at least one expert"):
        PLE(num_task=2, levels=[{"expert_num_per_task": 1, "share_num": 0,
                                 "task_expert_net": [4]},
                                {"expert_num_per_task": 0, "share_num": 0}])
    cgc = CGC(num_task=2, expert_num_per_task=1, share_num=1, task_expert_net=[4])
    with pytest.raises(ValueError, match="a list of num_task \\+ 1 = 3 tensors, got a list of 2"):
        cgc([X, X])


def test_ple_weights_save_and_load_round_trip_and_config(tmp_path):
    levels = [{"expert_num_per_task": 1, "share_num": 2, "task_expert_net": [8, 4]},
              {"expert_num_per_task": 2, "share_num": 1, "task_expert_net": [4]}]
    inputs = keras.Input((6,))
    model = keras.Model(inputs, PLE(num_task=2, levels=levels, name="ple")(inputs))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    before = _np(model(x))
    path = str(tmp_path / "ple.weights.h5")
    model.save_weights(path)
    layer = PLE(num_task=2, levels=levels, name="ple")
    clone = keras.Model(inputs, layer(inputs))
    clone.load_weights(path)
    for a, b in zip(before, _np(clone(x))):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # get_config rebuilds the same structure.
    rebuilt = PLE.from_config(layer.get_config())
    rebuilt(x)
    assert [v.path for v in rebuilt.weights] == [v.path for v in layer.weights]


def _build_model(text):
    from mtrec import config as config_lib
    from mtrec.features.feature import FeatureSet
    from mtrec.models import registry
    pipeline = config_lib.parse_text(text, "ple.config")
    config_lib.prepare(pipeline, config_lib.Source("ple.config", text))
    return registry.build_model(pipeline, FeatureSet(pipeline))


@pytest.mark.parametrize("old, new, message", [
    ("expert_num_per_task: 1\n      share_num: 1", "expert_num_per_task: 0\n      share_num: 0",
     r"ple.extraction_networks\[1\] \('layer2'\) has no experts: set expert_num_per_task or "
     "share_num to at least 1"),
    ("hidden_units: [32]\n        use_bn: false\n      }\n      share_expert_net {\n"
     "        hidden_units: [32]",
     "hidden_units: [32]\n        use_bn: false\n      }\n      share_expert_net {\n"
     "        hidden_units: [16]",
     r"\('layer2'\): task_expert_net and share_expert_net must end with the same width .* "
     "got 32 and 16"),
    ("task_expert_net {\n        hidden_units: [64, 32]",
     'task_expert_net {\n        activation: "nope"\n        hidden_units: [64, 32]',
     r":\d+: model_config\.ple\.extraction_networks\[0\]\.task_expert_net\.activation: "
     r"unknown activation 'nope'"),
])
def test_ple_config_errors(old, new, message):
    from mtrec.errors import ConfigError
    text = open(sample_config("ple_on_taobao.config")).read()
    assert old in text
    with pytest.raises(ConfigError, match=message):
        _build_model(text.replace(old, new, 1))
    extraction = text[text.index("    extraction_networks"):text.index("    task_towers")]
    with pytest.raises(ConfigError, match="ple needs at least one `extraction_networks"):
        _build_model(text.replace(extraction, ""))
